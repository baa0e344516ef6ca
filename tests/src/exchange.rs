//! `coinhub-exchange run` as a child process, its balances, and its withdrawals.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use coinhub_custody::testing::{BaoDevServer, TRANSIT_MOUNT};
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::amqp::{Amqp, EXCHANGE_DEPOSITS_QUEUE};
use crate::coinhubd::{VaultSection, run_once, rust_log};
use crate::env::TestEnv;
use crate::paths;
use crate::process::ChildProcess;
use crate::wait::wait_until;

/// `coinhub-exchange`'s configuration file (see `exchange/src/config.rs`).
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeConfig {
    /// `[database]`.
    pub database: ExchangeDatabase,
    /// `[amqp]`.
    pub amqp: ExchangeAmqp,
    /// `[assets.<SYMBOL>]`: per-asset settings (omitted when empty).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub assets: BTreeMap<String, ExchangeAsset>,
    /// `[api]`: the member API on a free port, so tests running at once do not collide.
    pub api: ExchangeApi,
    /// `[metrics]`: `/metrics` on a free port, for the same reason.
    pub metrics: ExchangeMetrics,
    /// `[vault]`: the transit key that seals the API key secrets.
    pub vault: VaultSection,
}

/// The transit key that seals the exchange's API key secrets in tests (as in
/// `deploy/openbao/coinhub-exchange.hcl`).
pub const EXCHANGE_TRANSIT_KEY: &str = "coinhub-exchange";

/// Creates the transit key [`EXCHANGE_TRANSIT_KEY`] on `bao` and a token holding only the
/// policy `deploy/openbao/coinhub-exchange.hcl`; returns the exchange's `[vault]`.
///
/// Errors: the policy file cannot be read; OpenBao refuses a step.
pub async fn exchange_vault(bao: &BaoDevServer) -> anyhow::Result<VaultSection> {
    bao.create_transit_key(EXCHANGE_TRANSIT_KEY).await?;
    let policy = std::fs::read_to_string(
        paths::workspace_root().join("deploy/openbao/coinhub-exchange.hcl"),
    )?;
    let token = bao.create_token("coinhub-exchange", &policy).await?;
    Ok(VaultSection {
        address: bao.address.clone(),
        token: token.expose_secret().to_owned(),
        transit_mount: TRANSIT_MOUNT.to_owned(),
        transit_key: EXCHANGE_TRANSIT_KEY.to_owned(),
    })
}

/// `[api]`.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeApi {
    /// `127.0.0.1:<port>`.
    pub listen: String,
}

/// `[metrics]`.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeMetrics {
    /// `127.0.0.1:<port>`.
    pub listen: String,
}

/// `[assets.<SYMBOL>]`.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeAsset {
    /// Base units locked on top of each withdrawal and earned as fee revenue (decimal string).
    pub withdraw_fee: String,
}

/// One withdrawal as `coinhub-exchange withdraw --json` and `withdrawals --json` print it
/// (see `exchange/src/withdrawals.rs`, `Withdrawal`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ExchangeWithdrawal {
    /// The withdrawal id (UUID).
    pub id: String,
    /// The member.
    pub member: String,
    /// Asset symbol.
    pub asset: String,
    /// What the destination receives, base units.
    pub amount: String,
    /// The exchange's withdrawal fee, base units.
    pub fee: String,
    /// The asset's decimals.
    pub decimals: u8,
    /// The destination.
    pub destination: String,
    /// `requested`, `confirmed` or `failed`.
    pub status: String,
    /// The paying transaction, once confirmed.
    pub txid: Option<String>,
    /// Why it failed.
    pub reason: Option<String>,
}

/// `[database]`.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeDatabase {
    /// PostgreSQL URL of the ledger.
    pub url: String,
}

/// `[amqp]`.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeAmqp {
    /// AMQP URL with the vhost.
    pub url: String,
    /// Longest pause between reconnects (kept short so tests recover fast).
    pub reconnect_delay_max_ms: u64,
}

impl ExchangeConfig {
    /// A config for `database_url`, `amqp_url` and `vault` (see [`exchange_vault`]).
    pub fn new(database_url: &str, amqp_url: &str, vault: VaultSection) -> Self {
        Self {
            database: ExchangeDatabase {
                url: database_url.to_owned(),
            },
            amqp: ExchangeAmqp {
                url: amqp_url.to_owned(),
                reconnect_delay_max_ms: 2_000,
            },
            assets: BTreeMap::new(),
            api: ExchangeApi {
                listen: local_address(),
            },
            metrics: ExchangeMetrics {
                listen: local_address(),
            },
            vault,
        }
    }

    /// Sets `asset`'s withdrawal fee in base units.
    pub fn with_withdraw_fee(mut self, asset: &str, withdraw_fee: &str) -> Self {
        self.assets.insert(
            asset.to_owned(),
            ExchangeAsset {
                withdraw_fee: withdraw_fee.to_owned(),
            },
        );
        self
    }
}

/// `127.0.0.1:<a free port>`.
fn local_address() -> String {
    format!(
        "127.0.0.1:{}",
        crate::wait::free_port().expect("a free local port")
    )
}

/// A member's balance of one asset as `coinhub-exchange balances --json` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// Asset symbol.
    pub asset: String,
    /// Available balance in base units (decimal string).
    pub available: String,
}

/// A `coinhub-exchange run` child process.
pub struct ExchangeProcess {
    process: ChildProcess,
    config_path: PathBuf,
    amqp_url: String,
    metrics_url: String,
    env: TestEnv,
}

impl ExchangeProcess {
    /// Writes the config and starts `coinhub-exchange --config <file> run`; waits until its
    /// deposit queue has a consumer.
    pub async fn start(env: &TestEnv, config: &ExchangeConfig) -> anyhow::Result<Self> {
        let config_path = env.path("coinhub-exchange.toml");
        std::fs::write(&config_path, toml::to_string(config)?)?;
        let binary = paths::binary("coinhub-exchange")?;
        let args = [
            "--config".into(),
            config_path.clone().into_os_string(),
            "run".into(),
        ];
        let process =
            ChildProcess::new(env, "coinhub-exchange", &binary, args).env("RUST_LOG", rust_log());
        let mut exchange = Self {
            process,
            config_path,
            amqp_url: config.amqp.url.clone(),
            metrics_url: format!("http://{}/metrics", config.metrics.listen),
            env: env.clone(),
        };
        exchange.process.spawn()?;
        exchange.wait_consuming().await?;
        Ok(exchange)
    }

    async fn wait_consuming(&mut self) -> anyhow::Result<()> {
        let amqp = Amqp::connect(&self.amqp_url).await?;
        let process = &mut self.process;
        wait_until(
            "coinhub-exchange consumes its deposit queue",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                let exited = process.ensure_running();
                let amqp = &amqp;
                async move {
                    if let Err(error) = exited {
                        return Err(error.context("coinhub-exchange died while starting"));
                    }
                    let counts = amqp.queue_counts(EXCHANGE_DEPOSITS_QUEUE).await?;
                    Ok(counts.filter(|(_, consumers)| *consumers > 0).map(|_| ()))
                }
            },
        )
        .await
    }

    /// SIGKILLs the exchange (a crash; unacked deliveries go back to the queue).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again and waits until it consumes.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.restart()?;
        self.wait_consuming().await
    }

    /// Starts it again without waiting for it to consume.
    pub fn restart_nowait(&mut self) -> anyhow::Result<()> {
        self.process.restart()
    }

    /// An error with the log tail if it has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.process.ensure_running()
    }

    /// `GET /metrics` on `[metrics] listen`: the Prometheus text.
    ///
    /// Errors: unreachable, or a status other than 200.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let response = reqwest::get(&self.metrics_url).await?;
        let status = response.status();
        let body = response.text().await?;
        anyhow::ensure!(
            status.is_success(),
            "GET {}: {status}: {body}",
            self.metrics_url
        );
        Ok(body)
    }

    /// `coinhub-exchange --config <file> balances --member <member> --json`, as
    /// asset → available base units.
    pub async fn balances(&self, member: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let binary = paths::binary("coinhub-exchange")?;
        let config = self.config_path.to_string_lossy().into_owned();
        let output = run_once(
            &self.env,
            "coinhub-exchange-balances",
            &binary,
            &[
                "--config", &config, "balances", "--member", member, "--json",
            ],
        )
        .await?;
        anyhow::ensure!(
            output.status.success(),
            "coinhub-exchange balances failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let balances = parse_balances_json(&String::from_utf8_lossy(&output.stdout))?;
        Ok(balances
            .into_iter()
            .map(|b| (b.asset, b.available))
            .collect())
    }

    /// Requests a withdrawal of `amount` base units of `asset` from `member` to
    /// `destination` with a fresh id (see [`ExchangeProcess::withdraw_with`]); returns the
    /// withdrawal id, the `id` of coinhubd's `withdrawal.*` events and API.
    pub async fn withdraw(
        &self,
        member: &str,
        asset: &str,
        amount: &str,
        destination: &str,
    ) -> anyhow::Result<String> {
        Ok(self
            .withdraw_with(member, asset, amount, destination, None)
            .await?
            .id)
    }

    /// `coinhub-exchange --config <file> withdraw --member .. --asset .. --amount ..
    /// --destination .. [--id ..] --json`: locks the member's funds (amount plus the asset's
    /// `withdraw_fee`) and queues `withdrawal.request` (the running exchange relays it to
    /// coinhubd). The same `id` again returns the existing withdrawal. Errors: the command
    /// failed (its stderr names the refused field, e.g. `amount: insufficient funds ...`).
    pub async fn withdraw_with(
        &self,
        member: &str,
        asset: &str,
        amount: &str,
        destination: &str,
        id: Option<&str>,
    ) -> anyhow::Result<ExchangeWithdrawal> {
        let binary = paths::binary("coinhub-exchange")?;
        let config = self.config_path.to_string_lossy().into_owned();
        let mut args = vec![
            "--config",
            config.as_str(),
            "withdraw",
            "--member",
            member,
            "--asset",
            asset,
            "--amount",
            amount,
            "--destination",
            destination,
            "--json",
        ];
        if let Some(id) = id {
            args.extend(["--id", id]);
        }
        let output = run_once(&self.env, "coinhub-exchange-withdraw", &binary, &args).await?;
        anyhow::ensure!(
            output.status.success(),
            "coinhub-exchange withdraw failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(text.trim())
            .with_context(|| format!("unexpected withdraw output: {text}"))
    }

    /// `coinhub-exchange --config <file> withdrawals --member <member> --json`, oldest first.
    pub async fn withdrawals(&self, member: &str) -> anyhow::Result<Vec<ExchangeWithdrawal>> {
        #[derive(serde::Deserialize)]
        struct Output {
            withdrawals: Vec<ExchangeWithdrawal>,
        }
        let binary = paths::binary("coinhub-exchange")?;
        let config = self.config_path.to_string_lossy().into_owned();
        let output = run_once(
            &self.env,
            "coinhub-exchange-withdrawals",
            &binary,
            &[
                "--config",
                &config,
                "withdrawals",
                "--member",
                member,
                "--json",
            ],
        )
        .await?;
        anyhow::ensure!(
            output.status.success(),
            "coinhub-exchange withdrawals failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        let parsed: Output = serde_json::from_str(text.trim())
            .with_context(|| format!("unexpected withdrawals output: {text}"))?;
        Ok(parsed.withdrawals)
    }

    /// Waits until `member`'s balances are exactly `expected` (asset → base units; assets
    /// not listed must be absent or zero).
    pub async fn wait_balances(
        &self,
        member: &str,
        expected: &[(&str, &str)],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let what = format!("{member}'s balances are {expected:?}");
        let last = std::sync::Mutex::new(BTreeMap::new());
        let result = wait_until(&what, timeout, Duration::from_millis(300), || {
            let fetch = self.balances(member);
            let last = &last;
            async move {
                let balances = fetch.await?;
                let matches = balances_equal(&balances, expected);
                *last.lock().expect("not poisoned") = balances;
                Ok(matches.then_some(()))
            }
        })
        .await;
        result.with_context(|| {
            format!(
                "last balances seen: {:?}",
                last.lock().expect("not poisoned")
            )
        })
    }
}

/// How many deposits the exchange's ledger has credited to `member` (rows of
/// `deposit_credits`, at most one per deposit id by its primary key).
pub async fn credited_deposit_count(ledger: &crate::Database, member: &str) -> anyhow::Result<i64> {
    let mut connection = ledger.connect().await?;
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM deposit_credits WHERE member_id = $1")
            .bind(member)
            .fetch_one(&mut connection)
            .await?,
    )
}

/// Whether `balances` equal `expected`, zero balances counting as absent.
pub fn balances_equal(balances: &BTreeMap<String, String>, expected: &[(&str, &str)]) -> bool {
    let non_zero: BTreeMap<&str, &str> = balances
        .iter()
        .filter(|(_, amount)| !amount.trim_start_matches('0').is_empty())
        .map(|(asset, amount)| (asset.as_str(), amount.as_str()))
        .collect();
    let wanted: BTreeMap<&str, &str> = expected
        .iter()
        .filter(|(_, amount)| !amount.trim_start_matches('0').is_empty())
        .copied()
        .collect();
    non_zero == wanted
}

/// Parses `coinhub-exchange balances --json` (`{"owner", "balances": [{"asset", "kind",
/// "base_units", "decimals", "amount"}]}`, see `exchange/src/cli.rs`): the `available`
/// accounts, with their base units.
pub fn parse_balances_json(text: &str) -> anyhow::Result<Vec<Balance>> {
    #[derive(serde::Deserialize)]
    struct Output {
        balances: Vec<Row>,
    }
    #[derive(serde::Deserialize)]
    struct Row {
        asset: String,
        kind: String,
        base_units: String,
    }
    let output: Output = serde_json::from_str(text.trim())
        .with_context(|| format!("unexpected balances output: {text}"))?;
    Ok(output
        .balances
        .into_iter()
        .filter(|row| row.kind == "available")
        .map(|row| Balance {
            asset: row.asset,
            available: row.base_units,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_available_base_units() {
        let text = r#"{"owner": "alice", "balances": [
            {"asset": "ETH", "kind": "available", "base_units": "1500000000000000000", "decimals": 18, "amount": "1.5"},
            {"asset": "ETH", "kind": "locked", "base_units": "7", "decimals": 18, "amount": "0.000000000000000007"}
        ]}"#;
        let balances = parse_balances_json(text).expect("parses");
        assert_eq!(
            balances,
            vec![Balance {
                asset: "ETH".into(),
                available: "1500000000000000000".into()
            }]
        );
        let map = balances
            .into_iter()
            .map(|b| (b.asset, b.available))
            .collect();
        assert!(balances_equal(&map, &[("ETH", "1500000000000000000")]));
        assert!(!balances_equal(
            &map,
            &[("ETH", "1500000000000000000"), ("TST", "1")]
        ));
        assert!(balances_equal(
            &map,
            &[("ETH", "1500000000000000000"), ("TST", "0")]
        ));
    }

    #[test]
    fn config_writes_assets_only_when_set() {
        let vault = VaultSection {
            address: "http://127.0.0.1:8200".to_owned(),
            token: "t".to_owned(),
            transit_mount: "transit".to_owned(),
            transit_key: EXCHANGE_TRANSIT_KEY.to_owned(),
        };
        let plain = ExchangeConfig::new("postgres://h/x", "amqp://h/%2f", vault);
        assert!(!toml::to_string(&plain).expect("toml").contains("assets"));
        let with_fee = plain.with_withdraw_fee("BTC", "1000");
        let text = toml::to_string(&with_fee).expect("toml");
        assert!(text.contains("[assets.BTC]"), "{text}");
        assert!(text.contains("withdraw_fee = \"1000\""), "{text}");
        let parsed: ExchangeWithdrawal = serde_json::from_str(
            r#"{"created": true, "id": "6f1c0d9e-8f7a-4b5c-8a7c-0bd5b1a24f6f", "member": "alice",
                "asset": "BTC", "amount": "1000", "fee": "25", "decimals": 8,
                "destination": "bcrt1qxyz", "status": "requested", "txid": null,
                "network_fee": null, "network_fee_asset": null, "block_height": null,
                "reason": null, "requested_at": "2026-11-22T10:00:00Z", "settled_at": null}"#,
        )
        .expect("parses");
        assert_eq!(parsed.fee, "25");
    }
}
