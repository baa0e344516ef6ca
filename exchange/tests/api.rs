//! The member HTTP API over real PostgreSQL (a fresh database per test), served on an
//! ephemeral port and called through `coinhub_exchange::api::client`: request signing and
//! its refusals, balances, withdrawals, API keys (library and CLI). The trading routes are
//! in `api_trading.rs`.

mod api_support;
mod common;

use std::num::NonZeroU32;
use std::process::Command;
use std::time::Duration;

use api_support::{SKEW_SECS, TestApi, btc_fee_25, fund, rows, snapshot};
use coinhub_exchange::api::client::{ApiClient, ClientError, Prepared, RawResponse};
use coinhub_exchange::api::limits::RateLimits;
use coinhub_exchange::api::{WithdrawalRequestBody, auth, keys};
use coinhub_exchange::config::AssetsConfig;
use common::TestDb;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

const DESTINATION: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

fn withdrawal_body(id: Uuid, amount: &str) -> Vec<u8> {
    serde_json::to_vec(&WithdrawalRequestBody {
        id: Some(id),
        asset: "BTC".into(),
        amount: amount.into(),
        destination: DESTINATION.into(),
    })
    .expect("serialize")
}

/// The error code of a raw answer (asserting it is a typed error body).
fn code_of(body: &[u8]) -> String {
    let body: coinhub_exchange::api::ErrorBody =
        serde_json::from_slice(body).expect("typed error body");
    assert!(!body.error.message.is_empty());
    body.error.code
}

/// Proves: a withdrawal request that is not properly signed is refused with 401 and its
/// typed code, and changes nothing (balances, withdrawals, outbox, journal): bad signature,
/// replayed nonce, stale timestamp (both directions), unknown key, revoked key, missing
/// header; and a request signed by one member can never act for another.
///
/// Steps: fund alice 100000 sat; prepare a signed `POST /v1/withdrawals` of 1000 sat; send
/// it with the last signature digit changed, with a timestamp 31 s old and 31 s ahead
/// (skew 30 s), with a random key id, without the nonce header — each 401 with the expected
/// code and an unchanged snapshot. Then send a valid request (201, funds locked), and the
/// very same request again: 401 `replayed_nonce`, snapshot as after the first. Revoke the
/// key; a fresh, well-signed request is refused as `unknown_key`.
#[tokio::test]
async fn unauthenticated_requests_are_refused_and_change_nothing() {
    let db = TestDb::new().await;
    fund(&db.pool, "alice", "BTC", "100000", 8).await;
    let api = TestApi::start(db.pool.clone(), btc_fee_25(), None).await;
    let alice = api.client("alice").await;
    let before = snapshot(&db.pool).await;

    let refused = |prepared: Prepared, expected: &'static str| {
        let alice = alice.clone();
        let pool = db.pool.clone();
        let before = before.clone();
        async move {
            let answer = alice.send(&prepared).await.expect("answer");
            assert_eq!(answer.status, 401, "{expected}");
            assert_eq!(code_of(&answer.body), expected);
            assert_eq!(snapshot(&pool).await, before, "{expected} changed nothing");
        }
    };

    // Bad signature: one hex digit changed.
    let mut tampered = alice
        .prepare(
            Method::POST,
            "/v1/withdrawals",
            withdrawal_body(Uuid::new_v4(), "1000"),
        )
        .expect("sign");
    let headers = tampered.headers.as_mut().expect("signed");
    let last = if headers.signature.ends_with('0') {
        "1"
    } else {
        "0"
    };
    headers.signature.replace_range(63.., last);
    refused(tampered, "bad_signature").await;

    // Signed body, other body sent.
    let mut swapped = alice
        .prepare(
            Method::POST,
            "/v1/withdrawals",
            withdrawal_body(Uuid::new_v4(), "1000"),
        )
        .expect("sign");
    swapped.body = withdrawal_body(Uuid::new_v4(), "90000");
    refused(swapped, "bad_signature").await;

    // Stale timestamps, both directions (a minute past the allowed skew: a loaded machine
    // can take seconds between signing and the server's check).
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let skew = i64::try_from(SKEW_SECS).expect("small");
    for timestamp in [now - skew - 60, now + skew + 60] {
        let stale = alice
            .prepare_at(
                Method::POST,
                "/v1/withdrawals",
                withdrawal_body(Uuid::new_v4(), "1000"),
                timestamp,
                &Uuid::new_v4().simple().to_string(),
            )
            .expect("sign");
        refused(stale, "stale_timestamp").await;
    }

    // Unknown key (well formed, never issued), signed with some secret.
    let stranger = ApiClient::new(
        &api.base_url,
        "ck_00000000000000000000000000000000"
            .parse()
            .expect("key id"),
        SecretString::from("f".repeat(64)),
    )
    .expect("client");
    let unknown = stranger
        .prepare(
            Method::POST,
            "/v1/withdrawals",
            withdrawal_body(Uuid::new_v4(), "1000"),
        )
        .expect("sign");
    refused(unknown, "unknown_key").await;

    // Missing and malformed headers.
    let mut missing = alice
        .prepare(
            Method::POST,
            "/v1/withdrawals",
            withdrawal_body(Uuid::new_v4(), "1000"),
        )
        .expect("sign");
    missing.headers.as_mut().expect("signed").nonce = "short".into();
    refused(missing.clone(), "malformed_header").await;
    missing.headers = None;
    refused(missing, "missing_header").await;

    // A valid request goes through once; the same bytes again are a replay.
    let valid = alice
        .prepare(
            Method::POST,
            "/v1/withdrawals",
            withdrawal_body(Uuid::new_v4(), "1000"),
        )
        .expect("sign");
    let first = alice.send(&valid).await.expect("answer");
    assert_eq!(
        first.status,
        201,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let after_first = snapshot(&db.pool).await;
    assert_ne!(after_first, before, "the valid withdrawal locked funds");
    let replay = alice.send(&valid).await.expect("answer");
    assert_eq!(replay.status, 401);
    assert_eq!(code_of(&replay.body), "replayed_nonce");
    assert_eq!(
        snapshot(&db.pool).await,
        after_first,
        "the replay changed nothing"
    );
    let balances = alice.balances().await.expect("balances");
    assert_eq!(
        rows(&balances.balances),
        [("BTC".into(), 8, "98975".into(), "1025".into())]
    );

    // A revoked key is refused like an unknown one.
    let key_id = alice.key_id().expect("key").clone();
    assert!(keys::revoke(&db.pool, &key_id).await.expect("revoke"));
    assert!(!keys::revoke(&db.pool, &key_id).await.expect("revoke again"));
    let error = alice.balances().await.expect_err("revoked");
    assert_eq!(error.code(), Some("unknown_key"));
    assert_eq!(error.status(), Some(401));
    assert_eq!(snapshot(&db.pool).await, after_first);
}

/// Proves: `GET /v1/balances` shows exactly the key's member's accounts, per asset, in base
/// units (also beyond 2^64), available and locked; another member's key sees only theirs.
///
/// Steps: fund alice 1.5 ETH + 2^128 + 1 wei and 123456789 sat, bob 7 sat; lock 1000 sat of
/// alice's in a withdrawal (fee 25); read both members' balances over HTTP.
#[tokio::test]
async fn balances_are_exact_and_per_member() {
    let db = TestDb::new().await;
    fund(&db.pool, "alice", "ETH", "1500000000000000000", 18).await;
    fund(
        &db.pool,
        "alice",
        "ETH",
        "340282366920938463463374607431768211457",
        18,
    )
    .await;
    fund(&db.pool, "alice", "BTC", "123456789", 8).await;
    fund(&db.pool, "bob", "BTC", "7", 8).await;
    let api = TestApi::start(db.pool.clone(), btc_fee_25(), None).await;
    let alice = api.client("alice").await;
    let bob = api.client("bob").await;
    let carol = api.client("carol").await;

    alice
        .request_withdrawal(&WithdrawalRequestBody {
            id: None,
            asset: "btc".into(),
            amount: "1000".into(),
            destination: DESTINATION.into(),
        })
        .await
        .expect("withdrawal accepted");

    let balances = alice.balances().await.expect("alice's balances");
    assert_eq!(balances.member, "alice");
    assert_eq!(
        rows(&balances.balances),
        [
            ("BTC".into(), 8, "123455764".into(), "1025".into()),
            (
                "ETH".into(),
                18,
                "340282366920938463464874607431768211457".into(),
                "0".into()
            ),
        ]
    );
    let balances = bob.balances().await.expect("bob's balances");
    assert_eq!(balances.member, "bob");
    assert_eq!(
        rows(&balances.balances),
        [("BTC".into(), 8, "7".into(), "0".into())]
    );
    let balances = carol.balances().await.expect("carol's balances");
    assert!(balances.balances.is_empty());
}

/// Proves: `POST /v1/withdrawals` locks `amount + fee` and queues `withdrawal.request` in
/// the outbox in one step; the same id again answers the stored withdrawal (200) and
/// changes nothing; bad input is refused with its code and changes nothing.
///
/// Steps: fund alice 10000 sat (fee 25); request 1000 → 201, available 8975, locked 1025,
/// one outbox row; repeat → 200, same snapshot; same id with another amount → 409
/// `id_reused`; 9000 → 422 `insufficient_funds`; amount 0 → 400 `invalid_amount`; asset
/// DOGE → 400 `unknown_asset`; a body that is not JSON → 400 `invalid_body`; a member
/// without accounts → 422 `insufficient_funds`; `GET /v1/withdrawals` lists the one.
#[tokio::test]
async fn withdrawal_over_http_locks_funds() {
    let db = TestDb::new().await;
    fund(&db.pool, "alice", "BTC", "10000", 8).await;
    let api = TestApi::start(db.pool.clone(), btc_fee_25(), None).await;
    let alice = api.client("alice").await;
    let id = Uuid::new_v4();
    let body = |amount: &str| WithdrawalRequestBody {
        id: Some(id),
        asset: "BTC".into(),
        amount: amount.into(),
        destination: DESTINATION.into(),
    };

    let outbox_before = db.count("outbox").await;
    let withdrawal = alice
        .request_withdrawal(&body("1000"))
        .await
        .expect("accepted");
    assert_eq!(withdrawal.id, id);
    assert_eq!(withdrawal.status, "requested");
    assert_eq!(
        (withdrawal.amount.as_str(), withdrawal.fee.as_str()),
        ("1000", "25")
    );
    assert_eq!(db.count("outbox").await, outbox_before + 1);
    let routing_key: String = sqlx::query_scalar("SELECT routing_key FROM outbox WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .expect("outbox row for the withdrawal");
    assert_eq!(routing_key, "withdrawal.request");
    let balances = alice.balances().await.expect("balances");
    assert_eq!(
        rows(&balances.balances),
        [("BTC".into(), 8, "8975".into(), "1025".into())]
    );
    let after = snapshot(&db.pool).await;

    let again = alice
        .prepare(
            Method::POST,
            "/v1/withdrawals",
            serde_json::to_vec(&body("1000")).expect("json"),
        )
        .expect("sign");
    let answer = alice.send(&again).await.expect("answer");
    assert_eq!(answer.status, 200, "a repeated id is not created again");
    assert_eq!(snapshot(&db.pool).await, after);

    let expect_refusal = |result: Result<_, ClientError>, status: u16, code: &str| {
        let error = result.expect_err("refused");
        assert_eq!(
            (error.status(), error.code()),
            (Some(status), Some(code)),
            "{error}"
        );
    };
    expect_refusal(
        alice.request_withdrawal(&body("2000")).await,
        409,
        "id_reused",
    );
    let fresh = |amount: &str, asset: &str| WithdrawalRequestBody {
        id: None,
        asset: asset.into(),
        amount: amount.into(),
        destination: DESTINATION.into(),
    };
    expect_refusal(
        alice.request_withdrawal(&fresh("9000", "BTC")).await,
        422,
        "insufficient_funds",
    );
    expect_refusal(
        alice.request_withdrawal(&fresh("0", "BTC")).await,
        400,
        "invalid_amount",
    );
    expect_refusal(
        alice.request_withdrawal(&fresh("-5", "BTC")).await,
        400,
        "invalid_amount",
    );
    expect_refusal(
        alice.request_withdrawal(&fresh("5", "DOGE")).await,
        400,
        "unknown_asset",
    );
    let not_json = alice
        .prepare(Method::POST, "/v1/withdrawals", b"{\"asset\":".to_vec())
        .expect("sign");
    let answer = alice.send(&not_json).await.expect("answer");
    assert_eq!(
        (answer.status, code_of(&answer.body).as_str()),
        (400, "invalid_body")
    );
    let dave = api.client("dave").await;
    expect_refusal(
        dave.request_withdrawal(&fresh("5", "BTC")).await,
        422,
        "insufficient_funds",
    );
    assert_eq!(
        snapshot(&db.pool).await,
        after,
        "no refusal changed anything"
    );

    let list = alice.withdrawals().await.expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, id);
}

/// Proves: `/healthz` answers without a key; unknown routes and methods get typed 404/405
/// bodies; without a trading engine the trading routes answer 503 `unavailable`; a private
/// route called without a key is refused (`missing_header`); a query changed after signing
/// is `bad_signature`; a body over the limit is `413 body_too_large`.
#[tokio::test]
async fn public_routes_and_typed_fallbacks() {
    let db = TestDb::new().await;
    let api = TestApi::start(db.pool.clone(), AssetsConfig::default(), None).await;
    let public = api.public();
    assert!(public.healthy().await.expect("healthz"));
    let get = |target: &str| Prepared {
        method: Method::GET,
        target: target.to_owned(),
        body: Vec::new(),
        headers: None,
    };
    let answer = public.send(&get("/v2/nothing")).await.expect("answer");
    assert_eq!(
        (answer.status, code_of(&answer.body).as_str()),
        (404, "not_found")
    );
    let answer = public
        .send(&Prepared {
            method: Method::PUT,
            ..get("/v1/balances")
        })
        .await
        .expect("answer");
    assert_eq!(
        (answer.status, code_of(&answer.body).as_str()),
        (405, "method_not_allowed")
    );
    let answer = public.send(&get("/v1/balances")).await.expect("answer");
    assert_eq!(
        (answer.status, code_of(&answer.body).as_str()),
        (401, "missing_header")
    );
    let error = public.markets().await.expect_err("no engine");
    assert_eq!(
        (error.status(), error.code()),
        (Some(503), Some("unavailable"))
    );
    let alice = api.client("alice").await;
    let error = alice.open_orders(None).await.expect_err("no engine");
    assert_eq!(
        (error.status(), error.code()),
        (Some(503), Some("unavailable"))
    );

    // The query is signed: changing it after signing breaks the signature.
    let mut query = alice
        .prepare(Method::GET, "/v1/orders/open?market=btc_usdt", Vec::new())
        .expect("sign");
    query.target = "/v1/orders/open?market=eth_usdt".into();
    let answer = alice.send(&query).await.expect("answer");
    assert_eq!(
        (answer.status, code_of(&answer.body).as_str()),
        (401, "bad_signature")
    );
    // Bodies are bounded before they are read for the signature check.
    let huge = alice
        .prepare(
            Method::POST,
            "/v1/withdrawals",
            vec![b' '; coinhub_exchange::api::BODY_MAX_BYTES + 1],
        )
        .expect("sign");
    let answer = alice.send(&huge).await.expect("answer");
    assert_eq!(
        (answer.status, code_of(&answer.body).as_str()),
        (413, "body_too_large")
    );
}

/// Proves: an API key's secret is stored only sealed by Vault transit (no plaintext, the
/// envelope does not contain it, its data key is wrapped) and requests signed with it
/// verify (the first one opens it through Vault); one key's envelope copied into another
/// key's row does not open (a member who knows their own secret cannot sign as another:
/// `500 internal`, nothing answered); a key stored in plaintext before migration 0011 works
/// and `seal_stored` seals it exactly once; with Vault sealed, an opened key still works, a
/// key not opened yet gets `500 internal`, and a new key is not created (no row written).
#[tokio::test]
async fn api_key_secrets_are_stored_sealed() {
    let db = TestDb::new().await;
    for member in ["alice", "carol", "dave"] {
        fund(&db.pool, member, "BTC", "5", 8).await;
    }
    let api = TestApi::start(db.pool.clone(), btc_fee_25(), None).await;
    let stored = |key_id: String| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (Option<String>, Option<serde_json::Value>)>(
                "SELECT secret, secret_sealed FROM api_keys WHERE key_id = $1",
            )
            .bind(key_id)
            .fetch_one(&pool)
            .await
            .expect("read key row")
        }
    };
    let create = |member: &'static str| {
        let (pool, secrets) = (db.pool.clone(), api.secrets.clone());
        async move {
            keys::create(&pool, &secrets, &member.parse().expect("member"), None)
                .await
                .expect("create key")
        }
    };
    let client = |key_id: &keys::KeyId, secret: &SecretString| {
        ApiClient::new(&api.base_url, key_id.clone(), secret.clone()).expect("client")
    };

    // Sealed at rest; opened through Vault on first use.
    let alice = create("alice").await;
    let (plaintext, sealed) = stored(alice.key_id.to_string()).await;
    assert_eq!(plaintext, None);
    let sealed = sealed.expect("sealed secret");
    let wrapped = sealed["wrapped_data_key"]
        .as_str()
        .expect("wrapped data key");
    assert!(wrapped.starts_with("vault:v1:"), "{sealed}");
    assert_eq!(sealed["transit_key"], "coinhub-a");
    assert!(!sealed.to_string().contains(alice.secret.expose_secret()));
    let alice_client = client(&alice.key_id, &alice.secret);
    assert_eq!(
        alice_client.balances().await.expect("balances").member,
        "alice"
    );

    // Mallory's envelope under alice's key id does not open.
    let mallory = create("mallory").await;
    let (_, mallory_sealed) = stored(mallory.key_id.to_string()).await;
    let dave = create("dave").await;
    sqlx::query("UPDATE api_keys SET secret_sealed = $2 WHERE key_id = $1")
        .bind(dave.key_id.as_str())
        .bind(&mallory_sealed)
        .execute(&db.pool)
        .await
        .expect("swap envelope");
    let error = client(&dave.key_id, &mallory.secret)
        .balances()
        .await
        .expect_err("a copied envelope does not open");
    assert_eq!(error.code(), Some("internal"), "{error}");

    // A key stored in plaintext before 0011: works, then is sealed once.
    let carol_id: keys::KeyId = "ck_0123456789abcdef0123456789abcdef".parse().expect("id");
    let carol_secret = SecretString::from("c".repeat(64));
    sqlx::query("INSERT INTO api_keys (key_id, member_id, secret) VALUES ($1, 'carol', $2)")
        .bind(carol_id.as_str())
        .bind(carol_secret.expose_secret())
        .execute(&db.pool)
        .await
        .expect("insert a plaintext key");
    let carol_client = client(&carol_id, &carol_secret);
    assert_eq!(
        carol_client.balances().await.expect("balances").member,
        "carol"
    );
    assert_eq!(
        keys::seal_stored(&db.pool, &api.secrets)
            .await
            .expect("seal"),
        1
    );
    assert_eq!(
        keys::seal_stored(&db.pool, &api.secrets)
            .await
            .expect("seal"),
        0
    );
    let (plaintext, sealed) = stored(carol_id.to_string()).await;
    assert_eq!(plaintext, None);
    assert!(sealed.is_some());
    assert_eq!(
        carol_client.balances().await.expect("balances").member,
        "carol"
    );

    // Vault sealed: what was opened still verifies; nothing new opens or is created.
    let bob = create("bob").await;
    api.bao.seal().await.expect("seal openbao");
    assert_eq!(
        alice_client.balances().await.expect("balances").member,
        "alice"
    );
    let error = client(&bob.key_id, &bob.secret)
        .balances()
        .await
        .expect_err("vault sealed");
    assert_eq!(error.code(), Some("internal"), "{error}");
    let keys_before: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    let refused = keys::create(
        &db.pool,
        &api.secrets,
        &"erin".parse().expect("member"),
        None,
    )
    .await
    .expect_err("vault sealed");
    assert!(refused.to_string().contains("sealed"), "{refused}");
    let keys_after: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(keys_after, keys_before);
}

/// Proves: stored nonces older than twice the skew are pruned, newer ones kept.
#[tokio::test]
async fn old_nonces_are_pruned() {
    let db = TestDb::new().await;
    // No API server: its own prune loop would race this test's prune (its first round
    // runs as it starts, and on a loaded machine that was after the inserts below).
    let bao = coinhub_custody::testing::BaoDevServer::start()
        .await
        .expect("openbao dev server");
    let secrets = coinhub_exchange::api::secrets::ApiSecrets::with_vault(
        bao.root_vault(),
        bao.transit_key_a(),
    );
    let key = keys::create(
        &db.pool,
        &secrets,
        &"alice".parse().expect("member"),
        Some("test"),
    )
    .await
    .expect("key");
    // Ages well away from the 60 s cut-off: a loaded machine may take a second or more
    // between these inserts and the prune.
    for (nonce, age_secs) in [("old-nonce-000000001", 90_i64), ("new-nonce-000000001", 30)] {
        sqlx::query(
            "INSERT INTO api_nonces (key_id, nonce, request_time, seen_at)
             VALUES ($1, $2, now(), now() - $3::bigint * interval '1 second')",
        )
        .bind(key.key_id.as_str())
        .bind(nonce)
        .bind(age_secs)
        .execute(&db.pool)
        .await
        .expect("insert nonce");
    }
    assert_eq!(auth::prune_nonces(&db.pool, 30).await.expect("prune"), 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT nonce FROM api_nonces")
        .fetch_all(&db.pool)
        .await
        .expect("read nonces");
    assert_eq!(left, ["new-nonce-000000001"]);
    let listed = keys::list(&db.pool, &key.member).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].label.as_deref(), Some("test"));
}

/// Proves: `coinhub-exchange api-key create --member M` prints a key id and a secret that
/// sign requests for M; `api-key list` shows the key without its secret; `api-key revoke`
/// makes the key unusable; no log line contains the secret.
///
/// Steps: run `api-key create --member alice --json` against a fresh database; use the
/// printed key with the client (balances answer for alice); `api-key list --member alice`;
/// `api-key revoke --key-id`; the client is refused with `unknown_key`.
#[tokio::test]
async fn cli_creates_lists_and_revokes_keys() {
    let db = TestDb::new().await;
    fund(&db.pool, "alice", "BTC", "5", 8).await;
    let api = TestApi::start(db.pool.clone(), AssetsConfig::default(), None).await;
    let binary = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_coinhub-exchange"));
        for (key, _) in std::env::vars() {
            if key.starts_with("COINHUB_EXCHANGE") {
                command.env_remove(key);
            }
        }
        command
            .env("COINHUB_EXCHANGE__DATABASE__URL", &db.url)
            .envs(common::vault_env(&api.bao))
            .env("RUST_LOG", "debug");
        command
    };
    let output = binary()
        .args(["api-key", "create", "--member", "alice", "--json"])
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let key_id = created["key_id"].as_str().expect("key_id").to_owned();
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert_eq!(created["member"], "alice");
    assert_eq!(secret.len(), 64);
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains(&secret),
        "secret logged"
    );

    let client = ApiClient::new(
        &api.base_url,
        key_id.parse().expect("key id"),
        SecretString::from(secret.clone()),
    )
    .expect("client");
    let balances = client.balances().await.expect("the printed key works");
    assert_eq!(balances.member, "alice");
    assert_eq!(
        rows(&balances.balances),
        [("BTC".into(), 8, "5".into(), "0".into())]
    );

    let output = binary()
        .args(["api-key", "list", "--member", "alice"])
        .output()
        .expect("runs");
    assert!(output.status.success());
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(
        listed.starts_with(&format!("{key_id} alice created ")),
        "{listed}"
    );
    assert!(!listed.contains(&secret));

    let output = binary()
        .args(["api-key", "revoke", "--key-id", &key_id])
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let error = client.balances().await.expect_err("revoked");
    assert_eq!(error.code(), Some("unknown_key"));
    let output = binary()
        .args([
            "api-key",
            "revoke",
            "--key-id",
            "ck_ffffffffffffffffffffffffffffffff",
        ])
        .output()
        .expect("runs");
    assert!(!output.status.success(), "revoking an unknown key fails");
}

fn nonzero(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value).expect("not zero")
}

/// Asserts `answer` is `429 rate_limited` with a `Retry-After` of at least 1 s and a
/// message naming `limit_words`; returns the wait.
fn assert_rate_limited(answer: &RawResponse, limit_words: &str) -> Duration {
    assert_eq!(
        answer.status,
        429,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let body: coinhub_exchange::api::ErrorBody =
        serde_json::from_slice(&answer.body).expect("typed error body");
    assert_eq!(body.error.code, "rate_limited");
    assert!(
        body.error.message.contains(limit_words),
        "{}",
        body.error.message
    );
    let secs = answer.retry_after_secs.expect("Retry-After header");
    assert!(secs >= 1, "Retry-After rounds up to whole seconds");
    Duration::from_secs(secs)
}

/// Proves: an API key that spent its burst is refused with `429 rate_limited` and a
/// `Retry-After` header; the refused request changes nothing and does not spend its nonce
/// (the very same signed request succeeds after the wait); a replay of a request that ran
/// is refused as `replayed_nonce` without being charged to the key; another member's key
/// is unaffected.
///
/// Steps: limits 1 request per second, burst 2, per key; fund alice 100000 sat. Send signed
/// withdrawals of 1000 sat as alice until one is answered 429 (the first two pass: the
/// burst; a refill may let a few more through on a slow machine), comparing the snapshot
/// (balances, withdrawals, outbox, journal) before and after the refused one. Bob's
/// balances answer 200 at once. Wait `Retry-After`, send the refused request again
/// unchanged: 201, funds locked. Send it once more: 401 `replayed_nonce`.
#[tokio::test]
async fn api_key_over_its_limit_gets_429_and_changes_nothing() {
    let db = TestDb::new().await;
    fund(&db.pool, "alice", "BTC", "100000", 8).await;
    fund(&db.pool, "bob", "BTC", "7", 8).await;
    let limits = RateLimits::new(nonzero(1), nonzero(2), nonzero(100), nonzero(100));
    let api = TestApi::with_limits(db.pool.clone(), btc_fee_25(), None, limits).await;
    let alice = api.client("alice").await;
    let bob = api.client("bob").await;

    let mut accepted = 0_u32;
    let (refused, wait) = loop {
        assert!(accepted < 50, "the key was never limited");
        let prepared = alice
            .prepare(
                Method::POST,
                "/v1/withdrawals",
                withdrawal_body(Uuid::new_v4(), "1000"),
            )
            .expect("sign");
        let before = snapshot(&db.pool).await;
        let answer = alice.send(&prepared).await.expect("answer");
        if answer.status == 429 {
            let wait = assert_rate_limited(&answer, "requests per second");
            assert_eq!(
                snapshot(&db.pool).await,
                before,
                "the refused request changed nothing"
            );
            break (prepared, wait);
        }
        assert_eq!(
            answer.status,
            201,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        accepted += 1;
    };
    assert!(accepted >= 2, "the burst passes: {accepted}");

    let bob_balances = bob.balances().await.expect("bob is not limited");
    assert_eq!(
        rows(&bob_balances.balances),
        [("BTC".into(), 8, "7".into(), "0".into())]
    );

    tokio::time::sleep(wait).await;
    let before_retry = snapshot(&db.pool).await;
    let retried = alice.send(&refused).await.expect("answer");
    assert_eq!(
        retried.status,
        201,
        "the same nonce is accepted after the wait: {}",
        String::from_utf8_lossy(&retried.body)
    );
    assert_ne!(
        snapshot(&db.pool).await,
        before_retry,
        "the retry locked funds"
    );
    let locked = (accepted + 1) * 1025;
    let balances = alice.balances().await;
    // The balances call itself may be limited now; the ledger tells the same.
    if let Ok(balances) = balances {
        assert_eq!(
            rows(&balances.balances),
            [(
                "BTC".into(),
                8,
                (100_000 - locked).to_string(),
                locked.to_string()
            )]
        );
    }
    let replay = alice.send(&refused).await.expect("answer");
    assert_eq!(
        replay.status,
        401,
        "{}",
        String::from_utf8_lossy(&replay.body)
    );
    assert_eq!(code_of(&replay.body), "replayed_nonce");
}

/// Proves: requests that fail authentication (unsigned, bad signature, unknown key) from
/// one address are limited: after the burst they get `429 rate_limited` with `Retry-After`
/// instead of `401`; correctly signed requests from the same address are not charged to
/// that budget; a signed request refused while the address waits changes nothing and
/// succeeds unchanged after `Retry-After`.
///
/// Steps: limits 1 failure per second, burst 3, per address (1000 per second per key);
/// fund alice. Ten signed balances requests: all 200. Then alternate unsigned and
/// badly signed withdrawals until one is answered 429 (at most 50; the first three are
/// 401). Send a signed withdrawal: 201, or 429 with nothing changed and then, after the
/// wait, 201 for the same request.
#[tokio::test]
async fn failed_authentications_from_one_address_get_429() {
    let db = TestDb::new().await;
    fund(&db.pool, "alice", "BTC", "100000", 8).await;
    let limits = RateLimits::new(nonzero(1000), nonzero(1000), nonzero(1), nonzero(3));
    let api = TestApi::with_limits(db.pool.clone(), btc_fee_25(), None, limits).await;
    let alice = api.client("alice").await;

    for _ in 0..10 {
        alice
            .balances()
            .await
            .expect("valid requests are not charged to the address");
    }

    let before = snapshot(&db.pool).await;
    let mut unauthorized = 0_u32;
    loop {
        assert!(unauthorized < 50, "the address was never limited");
        let mut bad = alice
            .prepare(
                Method::POST,
                "/v1/withdrawals",
                withdrawal_body(Uuid::new_v4(), "1000"),
            )
            .expect("sign");
        if unauthorized.is_multiple_of(2) {
            bad.headers = None;
        } else {
            bad.body = withdrawal_body(Uuid::new_v4(), "2000");
        }
        let answer = alice.send(&bad).await.expect("answer");
        if answer.status == 429 {
            assert_rate_limited(&answer, "failing authentication");
            break;
        }
        assert_eq!(
            answer.status,
            401,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        unauthorized += 1;
    }
    assert!(
        unauthorized >= 3,
        "the burst is answered 401: {unauthorized}"
    );
    assert_eq!(
        snapshot(&db.pool).await,
        before,
        "the flood changed nothing"
    );

    let valid = alice
        .prepare(
            Method::POST,
            "/v1/withdrawals",
            withdrawal_body(Uuid::new_v4(), "1000"),
        )
        .expect("sign");
    let mut answer = alice.send(&valid).await.expect("answer");
    if answer.status == 429 {
        let wait = assert_rate_limited(&answer, "failing authentication");
        assert_eq!(snapshot(&db.pool).await, before, "refused, nothing changed");
        tokio::time::sleep(wait).await;
        answer = alice.send(&valid).await.expect("answer");
    }
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_ne!(snapshot(&db.pool).await, before);
}
