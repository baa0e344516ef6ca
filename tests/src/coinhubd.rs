//! `coinhubd` as a child process, its admin API and the `coinhub` CLI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::env::TestEnv;
use crate::paths;
use crate::process::ChildProcess;
use crate::wait::wait_until;

/// `RUST_LOG` of the processes under test, unless `COINHUB_TEST_RUST_LOG` says otherwise.
pub fn rust_log() -> String {
    std::env::var("COINHUB_TEST_RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            "info,coinhub_daemon=debug,coinhub_chains=debug,coinhub_custody=debug,\
         coinhub_events=debug,coinhub_exchange=debug,lapin=warn,sqlx=warn"
                .to_owned()
        })
}

/// coinhubd's configuration file (see `daemon/src/config.rs`), written as TOML.
#[derive(Debug, Clone, Serialize)]
pub struct CoinhubdConfig {
    /// `[database]`.
    pub database: DatabaseSection,
    /// `[amqp]`.
    pub amqp: AmqpSection,
    /// `[vault]`.
    pub vault: VaultSection,
    /// `[admin]`.
    pub admin: AdminSection,
    /// `[chains.<name>]`.
    pub chains: BTreeMap<String, ChainSection>,
    /// `[assets.<symbol>]`.
    pub assets: BTreeMap<String, AssetSection>,
    /// `[cosigner]`, when withdrawals are signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosigner: Option<CosignerLinkSection>,
}

/// `[cosigner]` of coinhubd.
#[derive(Debug, Clone, Serialize)]
pub struct CosignerLinkSection {
    /// The cosigner's base URL.
    pub url: String,
    /// Shared HMAC secret.
    pub hmac_secret: String,
}

/// `[chains.<name>.withdrawals]`; `None` fields keep coinhubd's defaults.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WithdrawalsSection {
    /// UTXO: lowest fee rate, sat/vB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee_rate_floor: Option<u64>,
    /// UTXO: blocks before a BIP125 replacement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rbf_after_blocks: Option<u32>,
    /// Engine round interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_interval_ms: Option<u64>,
    /// EVM: the Safe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe_address: Option<String>,
    /// EVM: seconds before a same-nonce replacement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace_after_secs: Option<u64>,
    /// EVM: cap of `maxFeePerGas`, wei.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_fee_per_gas_cap: Option<String>,
}

/// `[database]`.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseSection {
    /// PostgreSQL URL.
    pub url: String,
}

/// `[amqp]`.
#[derive(Debug, Clone, Serialize)]
pub struct AmqpSection {
    /// AMQP URL with the vhost.
    pub url: String,
}

/// `[vault]`.
#[derive(Debug, Clone, Serialize)]
pub struct VaultSection {
    /// OpenBao base URL.
    pub address: String,
    /// Token.
    pub token: String,
    /// Transit mount.
    pub transit_mount: String,
    /// Transit key wrapping key A's seed.
    pub transit_key: String,
}

/// `[admin]`.
#[derive(Debug, Clone, Serialize)]
pub struct AdminSection {
    /// `127.0.0.1:<port>`.
    pub listen: String,
    /// Bearer token.
    pub token: String,
}

/// `[chains.<name>]`; the `Option` fields belong to one kind and are left out when `None`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChainSection {
    /// `"evm"`, `"bitcoin"` or `"dash"`.
    pub kind: String,
    /// Node URLs.
    pub rpc_urls: Vec<String>,
    /// EVM chain id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<u64>,
    /// UTXO network name, e.g. `bitcoin-regtest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// UTXO RPC user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc_user: Option<String>,
    /// UTXO RPC password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc_password: Option<String>,
    /// UTXO: key B's BIP48 account xpub with origin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosigner_xpub: Option<String>,
    /// UTXO: key C's BIP48 account xpub with origin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_xpub: Option<String>,
    /// Blocks kept to find a fork point.
    pub reorg_depth_max: u32,
    /// Head poll interval.
    pub poll_interval_ms: u64,
    /// First block to scan on a fresh database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_height: Option<u64>,
    /// Timeout of one RPC call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc_timeout_ms: Option<u64>,
    /// `[chains.<name>.withdrawals]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withdrawals: Option<WithdrawalsSection>,
}

/// `[assets.<symbol>]`.
#[derive(Debug, Clone, Serialize)]
pub struct AssetSection {
    /// Chain name.
    pub chain: String,
    /// ERC-20 contract (EIP-55 or lower-case hex); `None` for the native coin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract: Option<String>,
    /// Decimals.
    pub decimals: u8,
    /// Confirmations before `confirmed`.
    pub confirmations_min: u32,
    /// Smallest credited deposit, base units.
    pub deposit_min: String,
    /// Smallest withdrawal, base units (coinhubd's default when `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withdrawal_min: Option<String>,
}

impl CoinhubdConfig {
    /// The TOML text.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string(self)?)
    }

    /// The admin API's base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin.listen)
    }
}

fn write_config(env: &TestEnv, file: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = env.path(file);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Runs a one-shot command of a binary under test, logging its output to
/// `<test dir>/<label>.log`, with a deadline.
pub async fn run_once(
    env: &TestEnv,
    label: &str,
    program: &Path,
    args: &[&str],
) -> anyhow::Result<Output> {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(program)
            .args(args)
            .env("RUST_LOG", rust_log())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{label} did not finish within 120 s"))?
    .with_context(|| format!("running {}", program.display()))?;
    let log = env.path(&format!("{label}.log"));
    let text = format!(
        "$ {} {}\nexit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n",
        program.display(),
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Several runs with one label append.
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?
        .write_all(text.as_bytes())?;
    env.register_log(label, &log);
    Ok(output)
}

/// A `coinhubd run` child process.
pub struct Coinhubd {
    process: ChildProcess,
    config: CoinhubdConfig,
    config_path: PathBuf,
    api: AdminApi,
    env: TestEnv,
}

impl Coinhubd {
    /// Runs `coinhubd --config <file> init` once and returns the printed account xpub.
    ///
    /// Errors: the command fails (the error holds its output) or prints no `xpub` line.
    pub async fn init(env: &TestEnv, config: &CoinhubdConfig) -> anyhow::Result<String> {
        let output = Self::try_init(env, config).await?;
        anyhow::ensure!(
            output.status.success(),
            "coinhubd init failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout
            .split_whitespace()
            .find(|word| word.starts_with("xpub") && word.len() > 100)
            .map(str::to_owned)
            .with_context(|| format!("coinhubd init printed no xpub:\n{stdout}"))
    }

    /// Runs `coinhubd --config <file> init` once and returns key A's public keys (EVM and
    /// BIP48 account xpubs).
    ///
    /// Errors: the command fails (the error holds its output).
    pub async fn init_keys(
        env: &TestEnv,
        config: &CoinhubdConfig,
    ) -> anyhow::Result<crate::cosigner::KeyB> {
        let output = Self::try_init(env, config).await?;
        anyhow::ensure!(
            output.status.success(),
            "coinhubd init failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        crate::cosigner::parse_init_output(&String::from_utf8_lossy(&output.stdout))
    }

    /// Runs `coinhubd --config <file> init` and returns its output, whatever the outcome.
    pub async fn try_init(env: &TestEnv, config: &CoinhubdConfig) -> anyhow::Result<Output> {
        let path = write_config(env, "coinhubd.toml", &config.to_toml()?)?;
        let binary = paths::binary("coinhubd")?;
        let path = path.to_string_lossy().into_owned();
        run_once(env, "coinhubd-init", &binary, &["--config", &path, "init"]).await
    }

    /// Writes the config, starts `coinhubd --config <file> run` and waits until `/healthz`
    /// answers.
    pub async fn start(env: &TestEnv, config: CoinhubdConfig) -> anyhow::Result<Self> {
        let config_path = write_config(env, "coinhubd.toml", &config.to_toml()?)?;
        let binary = paths::binary("coinhubd")?;
        let args = [
            "--config".into(),
            config_path.clone().into_os_string(),
            "run".into(),
        ];
        let process = ChildProcess::new(env, "coinhubd", &binary, args).env("RUST_LOG", rust_log());
        let api = AdminApi::new(&config.admin_url(), &config.admin.token)?;
        let mut daemon = Self {
            process,
            config,
            config_path,
            api,
            env: env.clone(),
        };
        daemon.process.spawn()?;
        daemon.wait_healthy().await?;
        Ok(daemon)
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let api = self.api.clone();
        let process = &mut self.process;
        wait_until(
            "coinhubd answers /healthz",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                let exited = process.ensure_running();
                let api = api.clone();
                async move {
                    if let Err(error) = exited {
                        return Err(error.context("coinhubd died while starting"));
                    }
                    Ok(api.healthz().await?.then_some(()))
                }
            },
        )
        .await
    }

    /// SIGKILLs coinhubd: a crash, no shutdown code runs.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Sets (or with `None` removes) the fault injection point
    /// (`COINHUB_FAULT_CRASH_AT`, see `daemon/src/withdrawals/faults.rs`) for the next start.
    pub fn set_crash_point(&mut self, point: Option<&str>) {
        self.process.set_env("COINHUB_FAULT_CRASH_AT", point);
    }

    /// Waits until coinhubd has exited on its own (e.g. at a crash point).
    pub async fn wait_exited(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let process = &mut self.process;
        wait_until(
            "coinhubd exits",
            timeout,
            Duration::from_millis(100),
            || {
                let exited = process.exited().is_some();
                async move { Ok(exited.then_some(())) }
            },
        )
        .await
    }

    /// Starts a killed (or running: it is killed first) coinhubd again and waits until it
    /// is healthy.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.restart()?;
        self.wait_healthy().await
    }

    /// An error with the log tail if coinhubd has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.process.ensure_running()
    }

    /// The admin API client.
    pub fn api(&self) -> &AdminApi {
        &self.api
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &CoinhubdConfig {
        &self.config
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Runs `coinhub --api <url> --token <token> <args...>` (the admin CLI).
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        let binary = paths::binary("coinhub")?;
        let url = self.config.admin_url();
        let mut all = vec![
            "--api",
            url.as_str(),
            "--token",
            self.config.admin.token.as_str(),
        ];
        all.extend_from_slice(args);
        run_once(&self.env, "coinhub-cli", &binary, &all).await
    }
}

/// A deposit as `GET /v1/deposits` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DepositView {
    /// Stable id (UUID v5 of chain/txid/index).
    pub deposit_id: uuid::Uuid,
    /// Chain name.
    pub chain: String,
    /// Asset symbol (upper case).
    pub asset: String,
    /// Member.
    pub member: String,
    /// Deposit address.
    pub address: String,
    /// Transaction hash.
    pub txid: String,
    /// Log index (ERC-20) or 0 (native).
    pub index: u32,
    /// Base units, decimal string.
    pub amount: String,
    /// Decimals of the asset.
    pub decimals: u8,
    /// Block height.
    pub block_height: u64,
    /// Block hash.
    pub block_hash: String,
    /// `detected`, `confirmed`, `orphaned` or `ignored`.
    pub status: String,
    /// Confirmations by coinhubd's view of the tip.
    pub confirmations: u64,
}

/// One chain of `GET /v1/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChainStatus {
    /// Chain name.
    pub chain: String,
    /// Node's best height at the last successful call.
    pub node_height: Option<u64>,
    /// Highest block the watcher connected.
    pub scanned_height: Option<u64>,
    /// Whether the last poll reached the node.
    pub node_reachable: bool,
    /// Last poll's error.
    pub last_error: Option<String>,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    /// Every chain.
    pub chains: Vec<ChainStatus>,
}

impl Status {
    /// The status of `chain`, if listed.
    pub fn chain(&self, chain: &str) -> Option<&ChainStatus> {
        self.chains.iter().find(|status| status.chain == chain)
    }
}

/// `POST /v1/addresses`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DepositAddress {
    /// Member.
    pub member: String,
    /// Chain name.
    pub chain: String,
    /// EIP-55 address.
    pub address: String,
    /// Derivation index.
    pub index: u32,
}

/// Client of coinhubd's admin API.
#[derive(Clone)]
pub struct AdminApi {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminApi {
    /// A client of `base` (e.g. `http://127.0.0.1:8780`) with the bearer `token`.
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http,
        })
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request.bearer_auth(&self.token).send().await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "admin API answered {status}: {text}");
        serde_json::from_str(&text).with_context(|| format!("unexpected admin API answer: {text}"))
    }

    /// `GET /healthz` answered 200.
    pub async fn healthz(&self) -> anyhow::Result<bool> {
        Ok(self
            .http
            .get(format!("{}/healthz", self.base))
            .send()
            .await?
            .status()
            .is_success())
    }

    /// `GET /metrics` (Prometheus text).
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?)
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> anyhow::Result<Status> {
        self.json(self.http.get(format!("{}/v1/status", self.base)))
            .await
    }

    /// `POST /v1/addresses`.
    pub async fn new_address(&self, member: &str, chain: &str) -> anyhow::Result<DepositAddress> {
        let body = serde_json::json!({"member": member, "chain": chain});
        self.json(
            self.http
                .post(format!("{}/v1/addresses", self.base))
                .json(&body),
        )
        .await
    }

    /// `GET /v1/withdrawals/{id}`: the withdrawal with its payout's signed transactions, or
    /// `None` if coinhubd does not know it (yet).
    pub async fn withdrawal(&self, id: &str) -> anyhow::Result<Option<serde_json::Value>> {
        let response = self
            .http
            .get(format!("{}/v1/withdrawals/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "admin API answered {status}: {text}");
        Ok(Some(serde_json::from_str(&text)?))
    }

    /// Waits until withdrawal `id` has `status` (`requested`, `signed`, `broadcast`,
    /// `confirmed`, `failed`) and returns it; fails early if it reaches `failed` or
    /// `confirmed` when another status was expected.
    pub async fn wait_withdrawal_status(
        &self,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        wait_until(
            &format!("withdrawal {id} is {status}"),
            timeout,
            Duration::from_millis(100),
            || async {
                let Some(withdrawal) = self.withdrawal(id).await? else {
                    return Ok(None);
                };
                let current = withdrawal["status"].as_str().unwrap_or_default().to_owned();
                if current == status {
                    return Ok(Some(withdrawal));
                }
                if matches!(current.as_str(), "failed" | "confirmed") {
                    anyhow::bail!(
                        "withdrawal {id} ended {current} instead of {status}: {withdrawal}"
                    );
                }
                Ok(None)
            },
        )
        .await
    }

    /// `GET /v1/deposits?member=<member>`.
    pub async fn deposits(&self, member: &str) -> anyhow::Result<Vec<DepositView>> {
        self.json(
            self.http
                .get(format!("{}/v1/deposits", self.base))
                .query(&[("member", member)]),
        )
        .await
    }

    /// The deposit of transaction `txid` (any index) for `member`, if coinhubd has it.
    pub async fn deposit_by_txid(
        &self,
        member: &str,
        txid: &str,
    ) -> anyhow::Result<Option<DepositView>> {
        let txid = txid.to_lowercase();
        Ok(self
            .deposits(member)
            .await?
            .into_iter()
            .find(|d| d.txid.to_lowercase() == txid))
    }

    /// Waits until the deposit of `txid` has `status`; returns it.
    pub async fn wait_deposit_status(
        &self,
        member: &str,
        txid: &str,
        status: &str,
        timeout: Duration,
    ) -> anyhow::Result<DepositView> {
        let what = format!("deposit {txid} of {member} is {status}");
        wait_until(&what, timeout, Duration::from_millis(200), || async {
            let deposit = self.deposit_by_txid(member, txid).await?;
            Ok(deposit.filter(|d| d.status == status))
        })
        .await
    }

    /// Waits until coinhubd's watcher of `chain` has connected block `height` (or higher).
    pub async fn wait_scanned(
        &self,
        chain: &str,
        height: u64,
        timeout: Duration,
    ) -> anyhow::Result<u64> {
        let what = format!("coinhubd has scanned {chain} up to height {height}");
        wait_until(&what, timeout, Duration::from_millis(100), || async {
            let status = self.status().await?;
            let scanned = status.chain(chain).and_then(|c| c.scanned_height);
            Ok(scanned.filter(|scanned| *scanned >= height))
        })
        .await
    }
}
