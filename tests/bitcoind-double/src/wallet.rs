//! A minimal single-key wallet for end-to-end tests: it mines coinbases to its own output
//! script on a running [`BitcoindDouble`] and pays deposits with signed transactions sent
//! through the double's JSON-RPC over HTTP, as an external payer would.
//!
//! The key is the fixed test secret key [`TEST_SECRET_KEY`] (`0x01` repeated 32 times). It is
//! public knowledge: **use it on regtest doubles only.** Its output script is
//!
//! - P2WPKH (`bcrt1q…`), signed with the BIP143 sighash, for [`Flavor::Bitcoin`];
//! - P2PKH (Dash regtest base58 address, version byte 140), signed with the legacy sighash,
//!   for [`Flavor::Dash`], which has no segwit.
//!
//! The wallet tracks its own unspent outputs: the coinbases it mined (spendable once they
//! have [`COINBASE_MATURITY`] confirmations) and the change of its own payments (spendable
//! at once, even unconfirmed). It does not follow reorganisations: after `invalidateblock`
//! its view may include outputs the chain no longer has.
//!
//! ```no_run
//! # async fn demo() -> Result<(), coinhub_bitcoind_double::wallet::WalletError> {
//! use bitcoin::{Amount, ScriptBuf};
//! use coinhub_bitcoind_double::{BitcoindDouble, Params, wallet::TestWallet};
//! let node = BitcoindDouble::start(Params::bitcoin()).expect("the double starts");
//! let wallet = TestWallet::new(&node);
//! wallet.fund(1).await?; // 101 blocks: at least one mature 50 BTC coinbase
//! let deposit_script: ScriptBuf = wallet.script_pubkey().clone(); // e.g. a deposit address
//! let txid = wallet.pay(&[(deposit_script, Amount::from_sat(1_000_000))]).await?;
//! wallet.mine(1).await?; // confirms `txid`
//! # let _ = txid; Ok(()) }
//! ```

use std::sync::{Mutex, MutexGuard};

use bitcoin::consensus::encode::{deserialize, serialize_hex};
use bitcoin::hashes::Hash;
use bitcoin::opcodes::{Class, ClassifyContext};
use bitcoin::script::{Builder, Instruction};
use bitcoin::secp256k1::{All, Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    Address, Amount, Block, BlockHash, CompressedPublicKey, Network, OutPoint, PublicKey,
    ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness, absolute, transaction,
};
use serde_json::{Value, json};

use crate::{BitcoindDouble, Flavor};

/// The wallet's secret key: 32 bytes of `0x01`. A well-known test key; never fund it on a
/// real network.
pub const TEST_SECRET_KEY: [u8; 32] = [0x01; 32];

/// Fee of every transaction [`TestWallet::pay`] builds.
pub const FEE: Amount = Amount::from_sat(1_000);

/// Confirmations a coinbase needs before it can be spent (the next block's height minus the
/// coinbase's height must be at least this).
pub const COINBASE_MATURITY: u32 = 100;

/// Why a wallet operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalletError {
    /// The HTTP request did not complete or its body could not be read.
    #[error("HTTP request for {method} failed: {source}")]
    Http {
        /// The JSON-RPC method.
        method: String,
        /// The client's error.
        source: reqwest::Error,
    },
    /// The double answered with a JSON-RPC error (e.g. -26 for a rejected transaction).
    #[error("{method} failed with code {code}: {message}")]
    Rpc {
        /// The JSON-RPC method.
        method: String,
        /// The JSON-RPC error code.
        code: i64,
        /// The error message.
        message: String,
    },
    /// The reply was not what the wallet expected.
    #[error("unexpected reply to {method}: {detail}")]
    Reply {
        /// The JSON-RPC method.
        method: String,
        /// What was wrong.
        detail: String,
    },
    /// No single tracked, spendable output covers the payment plus [`FEE`].
    #[error("no spendable output of at least {needed} (spendable: {spendable})")]
    InsufficientFunds {
        /// Sum of the requested outputs plus the fee.
        needed: Amount,
        /// Sum of all spendable outputs the wallet tracks.
        spendable: Amount,
    },
    /// The requested amounts overflow when added up.
    #[error("the requested amounts overflow")]
    Overflow,
}

/// An unspent output the wallet holds.
#[derive(Clone, Debug)]
struct Coin {
    outpoint: OutPoint,
    value: Amount,
    /// Height of the block holding it, when it is a coinbase output.
    coinbase_height: Option<u32>,
}

impl Coin {
    fn spendable_in_block(&self, height: u32) -> bool {
        self.coinbase_height
            .is_none_or(|h| height.saturating_sub(h) >= COINBASE_MATURITY)
    }
}

/// A single-key test wallet bound to one [`BitcoindDouble`]; see the [module docs](self).
///
/// Methods take `&self`; the tracked outputs sit behind a mutex, so one wallet may be shared
/// between tasks.
pub struct TestWallet {
    http: reqwest::Client,
    rpc_url: String,
    user: String,
    password: String,
    flavor: Flavor,
    secp: Secp256k1<All>,
    secret_key: SecretKey,
    public_key: PublicKey,
    script_pubkey: ScriptBuf,
    address: String,
    coins: Mutex<Vec<Coin>>,
}

impl TestWallet {
    /// A wallet holding [`TEST_SECRET_KEY`] that talks to `double` over its JSON-RPC URL
    /// with its credentials. It tracks no outputs until [`fund`](Self::fund) or
    /// [`mine`](Self::mine).
    pub fn new(double: &BitcoindDouble) -> Self {
        let secp = Secp256k1::new();
        let secret_key =
            SecretKey::from_slice(&TEST_SECRET_KEY).expect("0x01..01 is a valid secret key");
        let public_key = PublicKey::new(secret_key.public_key(&secp));
        let (script_pubkey, address) = match double.flavor {
            Flavor::Bitcoin => {
                let address =
                    Address::p2wpkh(&CompressedPublicKey(public_key.inner), Network::Regtest);
                (address.script_pubkey(), address.to_string())
            }
            Flavor::Dash => {
                let hash = public_key.pubkey_hash();
                let mut data = vec![DASH_REGTEST_P2PKH_VERSION];
                data.extend_from_slice(hash.as_byte_array());
                (
                    ScriptBuf::new_p2pkh(&hash),
                    bitcoin::base58::encode_check(&data),
                )
            }
        };
        Self {
            http: reqwest::Client::new(),
            rpc_url: double.rpc_url.clone(),
            user: double.user.clone(),
            password: double.password.clone(),
            flavor: double.flavor,
            secp,
            secret_key,
            public_key,
            script_pubkey,
            address,
            coins: Mutex::new(Vec::new()),
        }
    }

    /// The wallet's output script (P2WPKH on Bitcoin, P2PKH on Dash).
    pub fn script_pubkey(&self) -> &ScriptBuf {
        &self.script_pubkey
    }

    /// The wallet's regtest address string, as passed to `generatetoaddress`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The compressed public key of [`TEST_SECRET_KEY`].
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Sum of the outputs the wallet tracks, immature coinbases included.
    pub fn balance(&self) -> Amount {
        self.coins().iter().map(|c| c.value).sum()
    }

    /// Mines `blocks` blocks to the wallet and then 100 more, so that at least `blocks`
    /// coinbases are mature for the next block (`fund(1)` mines 101 blocks, as in Bitcoin
    /// Core's regtest recipes). Returns all mined block hashes in order.
    pub async fn fund(&self, blocks: u64) -> Result<Vec<BlockHash>, WalletError> {
        self.mine(blocks.saturating_add(u64::from(COINBASE_MATURITY)))
            .await
    }

    /// Mines `n` blocks paying the wallet with `generatetoaddress` (confirming what is in the
    /// mempool) and tracks their coinbase outputs. Returns the block hashes in order.
    pub async fn mine(&self, n: u64) -> Result<Vec<BlockHash>, WalletError> {
        const METHOD: &str = "generatetoaddress";
        let reply = self.rpc(METHOD, json!([n, self.address])).await?;
        let hashes: Vec<BlockHash> = reply
            .as_array()
            .and_then(|list| {
                list.iter()
                    .map(|h| h.as_str().and_then(|h| h.parse().ok()))
                    .collect::<Option<_>>()
            })
            .ok_or_else(|| reply_error(METHOD, format!("not a list of block hashes: {reply}")))?;
        for hash in &hashes {
            let raw = self.rpc("getblock", json!([hash.to_string(), 0])).await?;
            let block: Block = raw
                .as_str()
                .and_then(|h| hex::decode(h).ok())
                .and_then(|bytes| deserialize(&bytes).ok())
                .ok_or_else(|| reply_error("getblock", "not a raw block in hex"))?;
            let coinbase = block
                .txdata
                .first()
                .ok_or_else(|| reply_error("getblock", "block without transactions"))?;
            let height = coinbase_height(coinbase)
                .ok_or_else(|| reply_error("getblock", "no BIP34 height in the coinbase"))?;
            let txid = coinbase.compute_txid();
            let mut coins = self.coins();
            for (vout, out) in coinbase.output.iter().enumerate() {
                if out.script_pubkey == self.script_pubkey {
                    coins.push(Coin {
                        outpoint: OutPoint {
                            txid,
                            vout: vout as u32,
                        },
                        value: out.value,
                        coinbase_height: Some(height),
                    });
                }
            }
        }
        Ok(hashes)
    }

    /// Pays `outputs` (in this order; a script may appear more than once) plus change back
    /// to the wallet (last output, omitted when zero) in one transaction with fee [`FEE`],
    /// spending the first tracked output — oldest first — that is spendable in the next
    /// block and covers the outputs plus the fee. Signs it, sends it with
    /// `sendrawtransaction` and returns its txid; it is then in the mempool, not mined.
    ///
    /// On failure the spent output stays tracked, so the call may be retried.
    pub async fn pay(&self, outputs: &[(ScriptBuf, Amount)]) -> Result<Txid, WalletError> {
        let needed = outputs
            .iter()
            .try_fold(FEE, |sum, (_, amount)| sum.checked_add(*amount))
            .ok_or(WalletError::Overflow)?;
        let tip = self.rpc("getblockcount", json!([])).await?;
        let tip = tip
            .as_u64()
            .and_then(|t| u32::try_from(t).ok())
            .ok_or_else(|| reply_error("getblockcount", "not a block height"))?;
        let next_height = tip.saturating_add(1);

        let coin = {
            let mut coins = self.coins();
            let found = coins
                .iter()
                .position(|c| c.spendable_in_block(next_height) && c.value >= needed);
            match found {
                Some(index) => coins.remove(index),
                None => {
                    let spendable = coins
                        .iter()
                        .filter(|c| c.spendable_in_block(next_height))
                        .map(|c| c.value)
                        .sum();
                    return Err(WalletError::InsufficientFunds { needed, spendable });
                }
            }
        };

        let change = coin.value - needed;
        let mut tx_outputs: Vec<TxOut> = outputs
            .iter()
            .map(|(script, amount)| TxOut {
                value: *amount,
                script_pubkey: script.clone(),
            })
            .collect();
        if change > Amount::ZERO {
            tx_outputs.push(TxOut {
                value: change,
                script_pubkey: self.script_pubkey.clone(),
            });
        }
        let tx = self.sign(coin.outpoint, coin.value, tx_outputs);
        let txid = tx.compute_txid();

        match self
            .rpc("sendrawtransaction", json!([serialize_hex(&tx)]))
            .await
        {
            Ok(reply) if reply.as_str() == Some(txid.to_string().as_str()) => {}
            Ok(reply) => {
                self.coins().push(coin);
                return Err(reply_error(
                    "sendrawtransaction",
                    format!("expected txid {txid}, got {reply}"),
                ));
            }
            Err(e) => {
                self.coins().push(coin);
                return Err(e);
            }
        }
        if change > Amount::ZERO {
            self.coins().push(Coin {
                outpoint: OutPoint {
                    txid,
                    vout: outputs.len() as u32,
                },
                value: change,
                coinbase_height: None,
            });
        }
        Ok(txid)
    }

    /// One JSON-RPC 1.0 call to the double; returns `result`, or the JSON-RPC error as
    /// [`WalletError::Rpc`].
    pub async fn rpc(&self, method: &str, params: Value) -> Result<Value, WalletError> {
        let http_error = |source| WalletError::Http {
            method: method.to_owned(),
            source,
        };
        let response = self
            .http
            .post(&self.rpc_url)
            .basic_auth(&self.user, Some(&self.password))
            .json(
                &json!({"jsonrpc": "1.0", "id": "test-wallet", "method": method, "params": params}),
            )
            .send()
            .await
            .map_err(http_error)?;
        let status = response.status();
        let text = response.text().await.map_err(http_error)?;
        let mut reply: Value = serde_json::from_str(&text)
            .map_err(|_| reply_error(method, format!("HTTP {status}: {text:?}")))?;
        let error = reply["error"].take();
        if !error.is_null() {
            return Err(WalletError::Rpc {
                method: method.to_owned(),
                code: error["code"].as_i64().unwrap_or_default(),
                message: error["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(reply["result"].take())
    }

    /// A version 2 transaction spending `prev` (worth `value`, paying the wallet's script)
    /// to `outputs`, signed with SIGHASH_ALL for the wallet's flavor.
    fn sign(&self, prev: OutPoint, value: Amount, outputs: Vec<TxOut>) -> Transaction {
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
        let mut cache = SighashCache::new(&tx);
        let digest = match self.flavor {
            Flavor::Bitcoin => cache
                .p2wpkh_signature_hash(0, &self.script_pubkey, value, EcdsaSighashType::All)
                .expect("input 0 exists and the script is P2WPKH")
                .to_byte_array(),
            Flavor::Dash => cache
                .legacy_signature_hash(0, &self.script_pubkey, EcdsaSighashType::All.to_u32())
                .expect("input 0 exists")
                .to_byte_array(),
        };
        let signature = bitcoin::ecdsa::Signature {
            signature: self
                .secp
                .sign_ecdsa(&Message::from_digest(digest), &self.secret_key),
            sighash_type: EcdsaSighashType::All,
        };
        match self.flavor {
            Flavor::Bitcoin => {
                tx.input[0].witness = Witness::p2wpkh(&signature, &self.public_key.inner);
            }
            Flavor::Dash => {
                tx.input[0].script_sig = Builder::new()
                    .push_slice(signature.serialize())
                    .push_key(&self.public_key)
                    .into_script();
            }
        }
        tx
    }

    fn coins(&self) -> MutexGuard<'_, Vec<Coin>> {
        self.coins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for TestWallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestWallet")
            .field("rpc_url", &self.rpc_url)
            .field("flavor", &self.flavor)
            .field("address", &self.address)
            .field("coins", &*self.coins())
            .finish_non_exhaustive()
    }
}

impl BitcoindDouble {
    /// A [`TestWallet`] for this double; same as [`TestWallet::new`].
    pub fn wallet(&self) -> TestWallet {
        TestWallet::new(self)
    }
}

/// Base58 version byte of Dash regtest P2PKH addresses.
const DASH_REGTEST_P2PKH_VERSION: u8 = 140;

fn reply_error(method: &str, detail: impl std::fmt::Display) -> WalletError {
    WalletError::Reply {
        method: method.to_owned(),
        detail: detail.to_string(),
    }
}

/// The BIP34 height a coinbase's scriptSig starts with (`OP_1`..`OP_16` or a number push).
fn coinbase_height(coinbase: &Transaction) -> Option<u32> {
    let first = coinbase
        .input
        .first()?
        .script_sig
        .instructions()
        .next()?
        .ok()?;
    let height = match first {
        Instruction::Op(op) => match op.classify(ClassifyContext::Legacy) {
            Class::PushNum(n) => i64::from(n),
            _ => return None,
        },
        Instruction::PushBytes(bytes) => bitcoin::script::read_scriptint(bytes.as_bytes()).ok()?,
    };
    u32::try_from(height).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the BIP34 height is read from both coinbase encodings the double writes.
    #[test]
    fn coinbase_height_reads_small_and_large_heights() {
        for height in [1_i64, 16, 17, 300, 70_000] {
            let coinbase = Transaction {
                version: transaction::Version::TWO,
                lock_time: absolute::LockTime::ZERO,
                input: vec![TxIn {
                    script_sig: Builder::new().push_int(height).push_int(0).into_script(),
                    ..TxIn::default()
                }],
                output: vec![],
            };
            assert_eq!(coinbase_height(&coinbase), Some(height as u32));
        }
    }
}
