//! `coinhubd init`: custody key A is created once, and only when OpenBao wraps its seed.

use coinhub_tests::stack::coinhubd_config;
use coinhub_tests::{BaoDevServer, Coinhubd, Database, StackOptions, free_port, run_test};

/// Rows of `custody_keys` and their `encrypted_seed` JSON texts.
async fn stored_keys(database: &Database) -> anyhow::Result<Vec<String>> {
    let mut connection = database.connect().await?;
    // `init` migrates before it talks to OpenBao, but do not depend on that order.
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('custody_keys') IS NOT NULL")
        .fetch_one(&mut connection)
        .await?;
    if !migrated {
        return Ok(Vec::new());
    }
    let rows = sqlx::query_scalar("SELECT encrypted_seed::text FROM custody_keys")
        .fetch_all(&mut connection)
        .await?;
    Ok(rows)
}

/// Whether `text` holds a run of twelve or more lower-case words separated by single
/// spaces: what a BIP39 mnemonic in plaintext would look like.
fn looks_like_a_mnemonic(text: &str) -> bool {
    let mut run = 0;
    for word in text.split(' ') {
        let is_word = !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase());
        run = if is_word { run + 1 } else { 0 };
        if run >= 12 {
            return true;
        }
    }
    false
}

/// Proves: `coinhubd init` fails with a clear error and writes nothing when OpenBao is
/// unreachable, refuses the token or is sealed; succeeds once OpenBao is usable, storing
/// only ciphertext (the wrapped data key and the encrypted seed, no plaintext mnemonic)
/// and printing the account xpub; and refuses to run a second time, keeping the key.
///
/// Steps: start OpenBao (transit key `coinhub-a`) and a fresh database; run `init` against
/// a closed port, then with a wrong token, and check each fails naming the problem and
/// `custody_keys` stays empty; run it with the right settings and check the xpub and the
/// stored row; run it again and check it fails and the row is unchanged; seal OpenBao and
/// run `init` on a second fresh database: it fails as sealed and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_creates_key_a_once_and_only_through_openbao() {
    run_test(
        "init_creates_key_a_once_and_only_through_openbao",
        |env| async move {
            let bao = BaoDevServer::start().await?;
            let database = Database::create("coinhub_e2e_init").await?;
            let options = StackOptions {
                with_token: false,
                ..StackOptions::default()
            };
            let rpc_url = format!("http://127.0.0.1:{}", free_port()?);
            let amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2f";
            let config =
                coinhubd_config(&options, &database.url(), amqp_url, &rpc_url, &bao, None)?;

            let mut unreachable = config.clone();
            let closed_port = free_port()?;
            unreachable.vault.address = format!("http://127.0.0.1:{closed_port}");
            let output = Coinhubd::try_init(&env, &unreachable).await?;
            let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
            assert!(!output.status.success(), "init must fail without OpenBao");
            assert!(
                stderr.contains(&closed_port.to_string()),
                "the error names OpenBao's address: {stderr}"
            );
            assert!(stored_keys(&database).await?.is_empty(), "nothing written");

            let mut wrong_token = config.clone();
            wrong_token.vault.token = "not-a-token".to_owned();
            let output = Coinhubd::try_init(&env, &wrong_token).await?;
            let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
            assert!(
                !output.status.success(),
                "init must fail with a refused token"
            );
            assert!(
                stderr.contains("denied") || stderr.contains("permission"),
                "{stderr}"
            );
            assert!(stored_keys(&database).await?.is_empty(), "nothing written");

            let xpub = Coinhubd::init(&env, &config).await?;
            assert!(
                xpub.starts_with("xpub") && xpub.len() == 111,
                "an account xpub: {xpub}"
            );
            let stored = stored_keys(&database).await?;
            assert_eq!(stored.len(), 1);
            assert!(
                stored[0].contains("vault:v"),
                "the data key is wrapped by transit: {}",
                stored[0]
            );
            assert!(
                !looks_like_a_mnemonic(&stored[0]),
                "no plaintext seed: {}",
                stored[0]
            );

            let output = Coinhubd::try_init(&env, &config).await?;
            assert!(!output.status.success(), "a second init must refuse");
            let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
            assert!(stderr.contains("exists"), "{stderr}");
            assert_eq!(
                stored_keys(&database).await?,
                stored,
                "the key is unchanged"
            );

            let fresh = Database::create("coinhub_e2e_init").await?;
            let mut sealed =
                coinhubd_config(&options, &fresh.url(), amqp_url, &rpc_url, &bao, None)?;
            sealed.admin = config.admin.clone();
            bao.seal().await?;
            let output = Coinhubd::try_init(&env, &sealed).await?;
            let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
            assert!(
                !output.status.success(),
                "init must fail while OpenBao is sealed"
            );
            assert!(stderr.contains("sealed"), "{stderr}");
            assert!(stored_keys(&fresh).await?.is_empty(), "nothing written");
            Ok(())
        },
    )
    .await;
}

#[test]
fn mnemonic_detector() {
    let words = "abandon ".repeat(11) + "about";
    assert!(looks_like_a_mnemonic(&words));
    assert!(!looks_like_a_mnemonic(
        "{\"ciphertext\": \"vault:v1:abc\", \"nonce\": \"x y\"}"
    ));
}
