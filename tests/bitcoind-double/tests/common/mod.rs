//! Helpers shared by the double's integration tests: an RPC/REST client and a P2WPKH wallet.

#![allow(dead_code, clippy::unwrap_used)]

use bitcoin::consensus::encode::{deserialize, serialize_hex};
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{All, Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    Address, Amount, Block, CompressedPublicKey, Network, OutPoint, PrivateKey, ScriptBuf,
    Sequence, Transaction, TxIn, TxOut, Witness, absolute, transaction,
};
use coinhub_bitcoind_double::BitcoindDouble;
use serde_json::{Value, json};

/// A JSON-RPC and REST client for one double.
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub user: String,
    pub password: String,
}

impl Client {
    pub fn new(node: &BitcoindDouble) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: node.rpc_url.clone(),
            user: node.user.clone(),
            password: node.password.clone(),
        }
    }

    /// Posts a raw JSON body with the given credentials; returns status and body text.
    pub async fn post_as(&self, user: &str, password: &str, body: &Value) -> (u16, String) {
        let r = self
            .http
            .post(&self.url)
            .basic_auth(user, Some(password))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    /// Posts a raw JSON body; returns status and parsed body.
    pub async fn post(&self, body: &Value) -> (u16, Value) {
        let (status, text) = self.post_as(&self.user, &self.password, body).await;
        (status, serde_json::from_str(&text).unwrap())
    }

    /// JSON-RPC 1.0 call; returns status and the whole reply.
    pub async fn call(&self, method: &str, params: Value) -> (u16, Value) {
        self.post(&json!({"jsonrpc": "1.0", "id": 1, "method": method, "params": params}))
            .await
    }

    /// JSON-RPC 1.0 call that must succeed; returns `result`.
    pub async fn ok(&self, method: &str, params: Value) -> Value {
        let (status, reply) = self.call(method, params.clone()).await;
        assert_eq!(status, 200, "{method} {params}: {reply}");
        assert!(reply["error"].is_null(), "{method} {params}: {reply}");
        reply["result"].clone()
    }

    /// GET under the RPC URL (REST); returns status and body bytes.
    pub async fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let r = self
            .http
            .get(format!("{}{}", self.url, path.trim_start_matches('/')))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.bytes().await.unwrap().to_vec())
    }

    /// Raw block by hash via `getblock <hash> 0`.
    pub async fn block(&self, hash: &str) -> Block {
        let hex = self.ok("getblock", json!([hash, 0])).await;
        deserialize(&hex::decode(hex.as_str().unwrap()).unwrap()).unwrap()
    }

    /// Raw block at `height` on the active chain.
    pub async fn block_at(&self, height: u64) -> Block {
        let hash = self.ok("getblockhash", json!([height])).await;
        self.block(hash.as_str().unwrap()).await
    }
}

/// One P2WPKH key on regtest.
pub struct Wallet {
    pub secp: Secp256k1<All>,
    pub sk: SecretKey,
    pub pk: CompressedPublicKey,
    pub address: Address,
}

impl Wallet {
    /// A deterministic key from a one-byte seed.
    pub fn new(seed: u8) -> Self {
        let secp = Secp256k1::new();
        let sk = SecretKey::from_slice(&[seed; 32]).unwrap();
        let pk =
            CompressedPublicKey::from_private_key(&secp, &PrivateKey::new(sk, Network::Regtest))
                .unwrap();
        let address = Address::p2wpkh(&pk, Network::Regtest);
        Self {
            secp,
            sk,
            pk,
            address,
        }
    }

    pub fn script(&self) -> ScriptBuf {
        self.address.script_pubkey()
    }

    /// Spends one P2WPKH output of this wallet to `outputs`, signed with SIGHASH_ALL.
    pub fn spend(&self, prev: OutPoint, value: Amount, outputs: Vec<TxOut>) -> Transaction {
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: prev,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            }],
            output: outputs,
        };
        let sighash = SighashCache::new(&tx)
            .p2wpkh_signature_hash(0, &self.script(), value, EcdsaSighashType::All)
            .unwrap();
        let sig = self
            .secp
            .sign_ecdsa(&Message::from_digest(sighash.to_byte_array()), &self.sk);
        let sig = bitcoin::ecdsa::Signature {
            signature: sig,
            sighash_type: EcdsaSighashType::All,
        };
        tx.input[0].witness = Witness::p2wpkh(&sig, &self.pk.0);
        tx
    }
}

/// Hex of a transaction.
pub fn tx_hex(tx: &Transaction) -> String {
    serialize_hex(tx)
}

/// The same transaction with one byte of input 0's signature flipped (inside `r`, so the
/// DER encoding stays valid and only the ECDSA check fails).
pub fn flip_signature_byte(tx: &Transaction) -> Transaction {
    let mut bad = tx.clone();
    let mut items: Vec<Vec<u8>> = bad.input[0].witness.iter().map(<[u8]>::to_vec).collect();
    items[0][10] ^= 0x01;
    bad.input[0].witness = Witness::from_slice(&items);
    bad
}

/// The regtest taproot address Bitcoin Core's wallet used for change in the recordings.
pub const TAPROOT_ADDRESS: &str =
    "bcrt1ph6acq5csy8f2dt2n3c32lxe5upr2dv0qq7r0g9qd5eqsaksy7jhq94m04u";
/// A 2-of-3 `wsh(sortedmulti)` deposit address from the recordings.
pub const WSH_ADDRESS: &str = "bcrt1q2upsjqzaxarkhlaj68nwwn43jt2mw2l5r8u3fkkn6ehm5gjde9gsd34ayj";

/// Output script of a regtest address.
pub fn script_of(address: &str) -> ScriptBuf {
    address
        .parse::<Address<_>>()
        .unwrap()
        .require_network(Network::Regtest)
        .unwrap()
        .script_pubkey()
}

/// A spend of `coinbase`'s output 0 (held by `wallet`) paying `deposit` to the recorded
/// wsh address and the rest, minus `fee`, to the recorded taproot address.
pub fn deposit_spend(
    wallet: &Wallet,
    coinbase: &Transaction,
    deposit: Amount,
    fee: Amount,
) -> Transaction {
    let value = coinbase.output[0].value;
    let change = value - deposit - fee;
    wallet.spend(
        OutPoint {
            txid: coinbase.compute_txid(),
            vout: 0,
        },
        value,
        vec![
            TxOut {
                value: change,
                script_pubkey: script_of(TAPROOT_ADDRESS),
            },
            TxOut {
                value: deposit,
                script_pubkey: script_of(WSH_ADDRESS),
            },
        ],
    )
}
