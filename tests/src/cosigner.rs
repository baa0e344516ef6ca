//! `coinhubd cosigner` (key B) as a child process: its own configuration, database and
//! OpenBao transit key, `init` to create key B, and `run`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::coinhubd::{AmqpSection, DatabaseSection, VaultSection, run_once, rust_log};
use crate::env::TestEnv;
use crate::paths;
use crate::process::ChildProcess;
use crate::wait::wait_until;

/// The shared HMAC secret of the tests' coinhubd and cosigner (test value only).
pub const HMAC_SECRET: &str = "e2e-cosigner-hmac-secret-of-at-least-32-bytes";

/// The cosigner's configuration file (see `daemon/src/cosigner/config.rs`), written as TOML.
#[derive(Debug, Clone, Serialize)]
pub struct CosignerConfig {
    /// `[database]`: the cosigner's own database.
    pub database: DatabaseSection,
    /// `[amqp]`.
    pub amqp: AmqpSection,
    /// `[vault]`: key B's transit key.
    pub vault: VaultSection,
    /// `[api]`.
    pub api: ApiSection,
    /// `[chains.<name>]`.
    pub chains: BTreeMap<String, CosignerChainSection>,
    /// `[assets.<symbol>]` with the policy.
    pub assets: BTreeMap<String, CosignerAssetSection>,
}

/// `[api]`.
#[derive(Debug, Clone, Serialize)]
pub struct ApiSection {
    /// `127.0.0.1:<port>`.
    pub listen: String,
    /// Shared HMAC secret.
    pub hmac_secret: String,
}

/// `[chains.<name>]` of the cosigner.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CosignerChainSection {
    /// `evm`, `bitcoin` or `dash`.
    pub kind: String,
    /// UTXO network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// UTXO: key A's BIP48 xpub with origin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hot_xpub: Option<String>,
    /// UTXO: key C's BIP48 xpub with origin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_xpub: Option<String>,
    /// EVM chain id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<u64>,
    /// EVM Safe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe_address: Option<String>,
    /// UTXO: the node(s) the cosigner checks every input against (`gettxout`); required for
    /// Dash.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rpc_urls: Vec<String>,
    /// UTXO node RPC user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc_user: Option<String>,
    /// UTXO node RPC password (test value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc_password: Option<String>,
}

/// `[assets.<symbol>]` of the cosigner: the asset and its policy (base units).
#[derive(Debug, Clone, Serialize)]
pub struct CosignerAssetSection {
    /// Chain name.
    pub chain: String,
    /// ERC-20 contract.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract: Option<String>,
    /// Decimals.
    pub decimals: u8,
    /// Largest single withdrawal.
    pub max_per_withdrawal: String,
    /// Largest rolling 24 h total.
    pub max_24h: String,
    /// Largest fee of one spend.
    pub fee_cap: String,
    /// Denied destinations.
    pub deny: Vec<String>,
    /// Allowed destinations, if restricted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
}

/// What `coinhubd cosigner init` printed: key B's public keys.
#[derive(Debug, Clone)]
pub struct KeyB {
    /// EVM account xpub (`m/44'/60'/0'`).
    pub evm_account_xpub: String,
    /// BIP48 account xpub with origin, by UTXO network name.
    pub bip48: BTreeMap<String, String>,
}

/// Parses `xpub <x>` and `bip48 <network> <xpub>` lines (what `init` prints).
pub fn parse_init_output(stdout: &str) -> anyhow::Result<KeyB> {
    let mut evm = None;
    let mut bip48 = BTreeMap::new();
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["xpub", xpub] => evm = Some((*xpub).to_owned()),
            ["bip48", network, xpub] => {
                bip48.insert((*network).to_owned(), (*xpub).to_owned());
            }
            _ => {}
        }
    }
    Ok(KeyB {
        evm_account_xpub: evm.with_context(|| format!("init printed no xpub:\n{stdout}"))?,
        bip48,
    })
}

fn write_config(env: &TestEnv, config: &CosignerConfig) -> anyhow::Result<PathBuf> {
    let path = env.path("cosigner.toml");
    std::fs::write(&path, toml::to_string(config)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A `coinhubd cosigner run` child process.
pub struct Cosigner {
    process: ChildProcess,
    url: String,
}

impl Cosigner {
    /// Runs `coinhubd cosigner --config <file> init` and returns key B's public keys.
    ///
    /// Errors: the command fails (the error holds its output).
    pub async fn init(env: &TestEnv, config: &CosignerConfig) -> anyhow::Result<KeyB> {
        let path = write_config(env, config)?;
        let binary = paths::binary("coinhubd")?;
        let path = path.to_string_lossy().into_owned();
        let output = run_once(
            env,
            "cosigner-init",
            &binary,
            &["cosigner", "--config", &path, "init"],
        )
        .await?;
        anyhow::ensure!(
            output.status.success(),
            "coinhubd cosigner init failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        parse_init_output(&String::from_utf8_lossy(&output.stdout))
    }

    /// Writes the config, starts `coinhubd cosigner --config <file> run` and waits until
    /// `/healthz` answers.
    pub async fn start(env: &TestEnv, config: &CosignerConfig) -> anyhow::Result<Self> {
        let path = write_config(env, config)?;
        let binary = paths::binary("coinhubd")?;
        let args = [
            "cosigner".into(),
            "--config".into(),
            path.into_os_string(),
            "run".into(),
        ];
        let process = ChildProcess::new(env, "cosigner", &binary, args).env("RUST_LOG", rust_log());
        let mut cosigner = Self {
            process,
            url: format!("http://{}", config.api.listen),
        };
        cosigner.process.spawn()?;
        cosigner.wait_healthy().await?;
        Ok(cosigner)
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let url = format!("{}/healthz", self.url);
        let process = &mut self.process;
        let http = reqwest::Client::new();
        wait_until(
            "the cosigner answers /healthz",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                let exited = process.ensure_running();
                let request = http.get(&url).send();
                async move {
                    if let Err(error) = exited {
                        return Err(error.context("the cosigner died while starting"));
                    }
                    Ok(request
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                        .map(|_| ()))
                }
            },
        )
        .await
    }

    /// The base URL of its API.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// SIGKILLs the cosigner.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again and waits until it is healthy.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.restart()?;
        self.wait_healthy().await
    }
}
