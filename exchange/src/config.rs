//! Configuration: a TOML file plus `COINHUB_EXCHANGE__SECTION__KEY` environment overrides,
//! checked at start.
//!
//! ```toml
//! [database]
//! url = "postgres://coinhub@127.0.0.1:5432/coinhub_exchange"   # required
//! max_connections = 5
//! acquire_timeout_ms = 5000
//!
//! [amqp]
//! url = "amqp://guest:guest@127.0.0.1:5672/%2f"
//! prefetch = 16
//! retry_delay_ms = 1000
//! reconnect_delay_max_ms = 30000
//! connect_timeout_ms = 10000
//!
//! [api]                         # the member HTTP API (`crate::api`)
//! listen = "127.0.0.1:8781"
//! max_clock_skew_secs = 30      # request timestamps may differ this much from our clock
//! requests_per_second = 15      # per API key, sustained (signed requests that verified)
//! burst = 30                    # per API key, requests at once after being idle
//! unauthenticated_requests_per_second = 5   # failed authentications per client address
//! unauthenticated_burst = 20
//!
//! [vault]                       # required by `run` and `api-key create`
//! address = "http://127.0.0.1:8200"
//! token = "s.xxxx"              # secret: never logged
//! transit_mount = "transit"
//! transit_key = "coinhub-exchange"  # seals the member API keys' secrets
//!
//! [assets.BTC]                  # optional, one table per asset symbol (case-insensitive)
//! withdraw_fee = "10000"        # base units charged per withdrawal, default "0"
//!
//! [markets.btc_usdt]           # optional, one table per market; see `crate::markets`
//! base = "BTC"
//! quote = "USDT"
//! tick_size = "100"             # quote base units per lot, per price step
//! lot_size = "1000"             # base units per lot
//! min_quantity = "1000"         # base units, default one lot
//! maker_fee_bps = 10
//! taker_fee_bps = 20
//!
//! [retention]                   # `crate::retention`
//! keep_published_hours = 168    # published messages kept this long; 0 keeps them forever
//!
//! [metrics]                     # `GET /metrics`, Prometheus text, unauthenticated
//! listen = "127.0.0.1:8782"
//! ```
//!
//! `COINHUB_EXCHANGE__DATABASE__URL=...` overrides `[database] url`;
//! `COINHUB_EXCHANGE__ASSETS__BTC__WITHDRAW_FEE=...` sets BTC's withdrawal fee;
//! `COINHUB_EXCHANGE__MARKETS__BTC_USDT__TAKER_FEE_BPS=...` a market's taker fee.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use coinhub_events::BaseUnits;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Prefix of environment overrides: `COINHUB_EXCHANGE__DATABASE__URL` sets `database.url`.
pub const ENV_PREFIX: &str = "COINHUB_EXCHANGE__";

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[amqp]`.
    #[serde(default)]
    pub amqp: AmqpConfig,
    /// `[api]`: the member HTTP API.
    #[serde(default)]
    pub api: ApiConfig,
    /// `[vault]`: the OpenBao/Vault transit key that seals the API keys' secrets
    /// (`crate::api::secrets`). Required by `run` and `api-key create` ([`Config::vault`]).
    #[serde(default)]
    pub vault: Option<coinhub_custody::keystore::VaultConfig>,
    /// `[assets.<SYMBOL>]`: per-asset settings; an asset without a table gets the defaults.
    #[serde(default)]
    pub assets: AssetsConfig,
    /// `[markets.<name>]`: the markets the trading engine runs (see [`crate::markets`]).
    #[serde(default)]
    pub markets: crate::markets::MarketsConfig,
    /// `[retention]`: how long published messages are kept ([`crate::retention`]).
    #[serde(default)]
    pub retention: RetentionConfig,
    /// `[metrics]`: the Prometheus endpoint ([`crate::metrics`]).
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// `[retention]`: what [`crate::retention`] deletes, and when.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Hours a published message is kept after the broker confirmed it, 0 to 87600: withdrawal
    /// requests in `outbox`, and batch outcomes in `trading_event_batches` once their orders
    /// and trades are also projected. 0 keeps them forever. Default 168 (7 days).
    #[serde(default = "default_keep_published_hours")]
    pub keep_published_hours: u32,
}

impl RetentionConfig {
    /// How long published messages are kept; `None`: forever.
    pub fn keep_published(&self) -> Option<Duration> {
        (self.keep_published_hours > 0)
            .then(|| Duration::from_secs(u64::from(self.keep_published_hours) * 3_600))
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            keep_published_hours: default_keep_published_hours(),
        }
    }
}

/// `[metrics]`: where `GET /metrics` (Prometheus text) is served; unauthenticated, so bind
/// it to an address only the monitoring network reaches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listen address. Default `127.0.0.1:8782`.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
        }
    }
}

/// `[assets.<SYMBOL>]` tables, keyed by upper-case asset symbol. Symbols ignore case:
/// `[assets.btc]` is BTC. Environment overrides arrive with lower-case keys
/// (`COINHUB_EXCHANGE__ASSETS__BTC__WITHDRAW_FEE` is `assets.btc.withdraw_fee`), so when two
/// spellings of one symbol set the same key, the all-lower-case one (the environment's) wins.
#[derive(Debug, Clone, Default)]
pub struct AssetsConfig(pub BTreeMap<String, AssetConfig>);

impl<'de> Deserialize<'de> for AssetsConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default, deserialize_with = "optional_base_units")]
            withdraw_fee: Option<BaseUnits>,
        }
        let raw: BTreeMap<String, Raw> = BTreeMap::deserialize(deserializer)?;
        // Lower-case spellings last, so they override.
        let mut spellings: Vec<(String, Raw)> = raw.into_iter().collect();
        spellings.sort_by_key(|(name, _)| name.chars().all(|c| !c.is_ascii_uppercase()));
        let mut merged: BTreeMap<String, AssetConfig> = BTreeMap::new();
        for (name, raw) in spellings {
            let entry = merged.entry(name.to_ascii_uppercase()).or_default();
            if let Some(fee) = raw.withdraw_fee {
                entry.withdraw_fee = fee;
            }
        }
        Ok(Self(merged))
    }
}

impl AssetsConfig {
    /// The settings of `symbol` (case-insensitive), if configured.
    pub fn get(&self, symbol: &str) -> Option<&AssetConfig> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(symbol))
            .map(|(_, config)| config)
    }

    /// The fee charged per withdrawal of `symbol`, in its base units (0 when not configured).
    pub fn withdraw_fee(&self, symbol: &str) -> BaseUnits {
        self.get(symbol)
            .map_or_else(BaseUnits::zero, |config| config.withdraw_fee.clone())
    }
}

/// One `[assets.<SYMBOL>]` table.
#[derive(Debug, Clone)]
pub struct AssetConfig {
    /// Fee charged per withdrawal on top of its amount, in the asset's base units (a decimal
    /// integer string, e.g. `"10000"`); it goes to the platform's `fee_revenue` when the
    /// withdrawal is confirmed. Default `"0"`.
    pub withdraw_fee: BaseUnits,
}

impl Default for AssetConfig {
    fn default() -> Self {
        Self {
            withdraw_fee: BaseUnits::zero(),
        }
    }
}

/// Base units from a string (`"10000"`) or, for environment overrides, an integer.
fn optional_base_units<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BaseUnits>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Integer(u64),
    }
    let text = match Raw::deserialize(deserializer)? {
        Raw::Text(text) => text,
        Raw::Integer(value) => value.to_string(),
    };
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// `[database]`: the ledger's PostgreSQL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/database` (secret: may hold a password).
    pub url: SecretString,
    /// Pool size, 1 to 100.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long a query waits for a pooled connection before failing, in milliseconds.
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
}

/// `[amqp]`: the RabbitMQ broker that carries coinhubd's events.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// `amqp://user:password@host:port/vhost` (secret: holds a password); the default vhost
    /// `/` is written `%2f`.
    #[serde(default = "default_amqp_url")]
    pub url: SecretString,
    /// Unacked deliveries the broker may send ahead, 1 to 1000.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Pause before a message that failed on a transient error (database down) is requeued,
    /// in milliseconds; consecutive failures back off from here up to
    /// `reconnect_delay_max_ms`.
    #[serde(default = "default_retry_delay_ms")]
    pub retry_delay_ms: u64,
    /// Longest pause between reconnect attempts to the broker, in milliseconds.
    #[serde(default = "default_reconnect_delay_max_ms")]
    pub reconnect_delay_max_ms: u64,
    /// Timeout of one connection attempt, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: default_amqp_url(),
            prefetch: default_prefetch(),
            retry_delay_ms: default_retry_delay_ms(),
            reconnect_delay_max_ms: default_reconnect_delay_max_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
        }
    }
}

/// `[api]`: the member HTTP API ([`crate::api`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address. Default `127.0.0.1:8781`.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// Largest accepted difference between a request's `x-coinhub-timestamp` and our clock,
    /// in seconds (either direction), 1 to 3600. Default 30. Nonces are kept twice as long.
    #[serde(default = "default_max_clock_skew_secs")]
    pub max_clock_skew_secs: u64,
    /// Sustained rate each API key may sign, in requests per second, 1 to 100000. Default
    /// 15. Counted only for requests whose signature verified (`crate::api::limits`); over
    /// it: `429 rate_limited` with `Retry-After`, nonce not spent.
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: u32,
    /// Requests one API key may send at once after being idle, in requests, 1 to 100000.
    /// Default 30.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Sustained rate of requests failing authentication (`401`) per client address (IPv6:
    /// per /64), in requests per second, 1 to 100000. Default 5. Over it the address gets
    /// `429` on signed routes, before the key lookup and HMAC.
    #[serde(default = "default_unauthenticated_requests_per_second")]
    pub unauthenticated_requests_per_second: u32,
    /// Requests failing authentication one client address may send at once, in requests,
    /// 1 to 100000. Default 20.
    #[serde(default = "default_unauthenticated_burst")]
    pub unauthenticated_burst: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_api_listen(),
            max_clock_skew_secs: default_max_clock_skew_secs(),
            requests_per_second: default_requests_per_second(),
            burst: default_burst(),
            unauthenticated_requests_per_second: default_unauthenticated_requests_per_second(),
            unauthenticated_burst: default_unauthenticated_burst(),
        }
    }
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8781))
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8782))
}
fn default_keep_published_hours() -> u32 {
    168
}
fn default_max_clock_skew_secs() -> u64 {
    30
}
fn default_requests_per_second() -> u32 {
    crate::api::limits::REQUESTS_PER_SECOND_DEFAULT
}
fn default_burst() -> u32 {
    crate::api::limits::BURST_DEFAULT
}
fn default_unauthenticated_requests_per_second() -> u32 {
    crate::api::limits::UNAUTHENTICATED_REQUESTS_PER_SECOND_DEFAULT
}
fn default_unauthenticated_burst() -> u32 {
    crate::api::limits::UNAUTHENTICATED_BURST_DEFAULT
}
fn default_max_connections() -> u32 {
    5
}
fn default_acquire_timeout_ms() -> u64 {
    5_000
}
fn default_amqp_url() -> SecretString {
    SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f")
}
fn default_prefetch() -> u16 {
    16
}
fn default_retry_delay_ms() -> u64 {
    1_000
}
fn default_reconnect_delay_max_ms() -> u64 {
    30_000
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}

/// Why the configuration was refused. The message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The `--config` file does not exist.
    #[error("config file {path} does not exist")]
    FileMissing {
        /// The path given.
        path: String,
    },
    /// A key is missing, unknown, of the wrong type or out of range.
    #[error("invalid config key `{key}`: {reason}")]
    Invalid {
        /// Dotted key, e.g. `database.url`.
        key: String,
        /// What is wrong, and where the value came from when known.
        reason: String,
    },
}

impl Config {
    /// Reads `path` (if given) and the `COINHUB_EXCHANGE__*` environment, then checks values.
    ///
    /// Errors: [`ConfigError`], naming the offending key.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.is_file() {
                return Err(ConfigError::FileMissing {
                    path: path.display().to_string(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::from_figment(figment.merge(Env::prefixed(ENV_PREFIX).split("__")))
    }

    /// Extracts and checks a configuration from any figment (tests build one from strings).
    ///
    /// Errors: [`ConfigError::Invalid`], naming the offending key.
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Self = figment.extract().map_err(first_error)?;
        config.validate()?;
        Ok(config)
    }

    /// `[vault]`, which the member API needs to seal and open API key secrets.
    ///
    /// Errors: [`ConfigError::Invalid`] naming `vault` when the table is absent.
    pub fn vault(&self) -> Result<&coinhub_custody::keystore::VaultConfig, ConfigError> {
        self.vault.as_ref().ok_or_else(|| ConfigError::Invalid {
            key: "vault".to_owned(),
            reason: "missing: the member api seals its api key secrets with a vault transit key \
                     (address, token, transit_key)"
                .to_owned(),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.to_owned(),
            reason,
        };
        sqlx::postgres::PgConnectOptions::from_str(self.database.url.expose_secret())
            .map_err(|e| invalid("database.url", format!("not a PostgreSQL URL: {e}")))?;
        let scheme_ok = ["postgres://", "postgresql://"]
            .iter()
            .any(|scheme| self.database.url.expose_secret().starts_with(scheme));
        if !scheme_ok {
            return Err(invalid(
                "database.url",
                "must start with postgres://".into(),
            ));
        }
        if !(1..=100).contains(&self.database.max_connections) {
            return Err(invalid(
                "database.max_connections",
                "must be 1 to 100".into(),
            ));
        }
        if !(100..=600_000).contains(&self.database.acquire_timeout_ms) {
            return Err(invalid(
                "database.acquire_timeout_ms",
                "must be 100 to 600000".into(),
            ));
        }
        lapin::uri::AMQPUri::from_str(self.amqp.url.expose_secret())
            .map_err(|e| invalid("amqp.url", format!("not an AMQP URL: {e}")))?;
        if !(1..=1000).contains(&self.amqp.prefetch) {
            return Err(invalid("amqp.prefetch", "must be 1 to 1000".into()));
        }
        if !(1..=600_000).contains(&self.amqp.retry_delay_ms) {
            return Err(invalid("amqp.retry_delay_ms", "must be 1 to 600000".into()));
        }
        if !(self.amqp.retry_delay_ms..=3_600_000).contains(&self.amqp.reconnect_delay_max_ms) {
            return Err(invalid(
                "amqp.reconnect_delay_max_ms",
                "must be at least amqp.retry_delay_ms and at most 3600000".into(),
            ));
        }
        if !(100..=600_000).contains(&self.amqp.connect_timeout_ms) {
            return Err(invalid(
                "amqp.connect_timeout_ms",
                "must be 100 to 600000".into(),
            ));
        }
        if self.retention.keep_published_hours > 87_600 {
            return Err(invalid(
                "retention.keep_published_hours",
                "must be 0 (forever) to 87600".into(),
            ));
        }
        if self.metrics.listen == self.api.listen {
            return Err(invalid(
                "metrics.listen",
                format!("must differ from api.listen ({})", self.api.listen),
            ));
        }
        if !(1..=3_600).contains(&self.api.max_clock_skew_secs) {
            return Err(invalid(
                "api.max_clock_skew_secs",
                "must be 1 to 3600".into(),
            ));
        }
        for (key, value) in [
            ("api.requests_per_second", self.api.requests_per_second),
            ("api.burst", self.api.burst),
            (
                "api.unauthenticated_requests_per_second",
                self.api.unauthenticated_requests_per_second,
            ),
            ("api.unauthenticated_burst", self.api.unauthenticated_burst),
        ] {
            if !(1..=100_000).contains(&value) {
                return Err(invalid(key, "must be 1 to 100000".into()));
            }
        }
        if let Some(vault) = &self.vault {
            vault
                .client()
                .map_err(|e| invalid("vault.address", e.to_string()))?;
            if vault.transit_mount.is_empty() || vault.transit_key.is_empty() {
                return Err(invalid(
                    "vault.transit_key",
                    "transit_mount and transit_key must not be empty".into(),
                ));
            }
            if !(100..=600_000).contains(&vault.timeout_ms) {
                return Err(invalid("vault.timeout_ms", "must be 100 to 600000".into()));
            }
        }
        self.markets
            .checked()
            .map_err(|e| invalid(&e.key, e.reason))?;
        for symbol in self.assets.0.keys() {
            symbol
                .parse::<crate::ledger::AssetSymbol>()
                .map_err(|e| invalid(&format!("assets.{symbol}"), e.to_string()))?;
        }
        Ok(())
    }
}

/// The first figment error as [`ConfigError::Invalid`] with its dotted key.
fn first_error(error: figment::Error) -> ConfigError {
    let error = error
        .into_iter()
        .next()
        .expect("a figment error holds at least one error");
    let mut path = error.path.clone();
    if let figment::error::Kind::MissingField(field) = &error.kind {
        path.push(field.to_string());
    }
    let mut reason = error.kind.to_string();
    if let Some(metadata) = &error.metadata {
        match &metadata.source {
            Some(source) => reason.push_str(&format!(" (from {} {source})", metadata.name)),
            None => reason.push_str(&format!(" (from {})", metadata.name)),
        }
    }
    ConfigError::Invalid {
        key: if path.is_empty() {
            "(root)".into()
        } else {
            path.join(".")
        },
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_figment(Figment::from(Toml::string(text)))
    }

    /// The shipped example (`config/coinhub-exchange.example.toml`) loads, with its vault,
    /// market and asset settings.
    #[test]
    fn example_loads() {
        let config = from_toml(include_str!("../../config/coinhub-exchange.example.toml"))
            .expect("example config is valid");
        let vault = config.vault().expect("[vault]");
        assert_eq!(vault.transit_key, "coinhub-exchange");
        assert_eq!(vault.timeout_ms, 10_000);
        assert_eq!(config.assets.withdraw_fee("btc").to_string(), "10000");
        assert_eq!(config.markets.0.len(), 1);
        assert_eq!(config.api.burst, 30);
    }

    #[test]
    fn defaults_fill_everything_but_the_database_url() {
        let config = from_toml("[database]\nurl = \"postgres://postgres@127.0.0.1/x\"\n")
            .expect("valid config");
        assert_eq!(
            config.amqp.url.expose_secret(),
            "amqp://guest:guest@127.0.0.1:5672/%2f"
        );
        assert_eq!(config.amqp.prefetch, 16);
        assert_eq!(config.database.max_connections, 5);
        assert_eq!(config.api.listen.to_string(), "127.0.0.1:8781");
        assert_eq!(config.api.max_clock_skew_secs, 30);
        assert_eq!(config.api.requests_per_second, 15);
        assert_eq!(config.api.burst, 30);
        assert_eq!(config.api.unauthenticated_requests_per_second, 5);
        assert_eq!(config.api.unauthenticated_burst, 20);
        assert_eq!(
            config.retention.keep_published(),
            Some(Duration::from_secs(7 * 24 * 3_600))
        );
        assert_eq!(config.metrics.listen.to_string(), "127.0.0.1:8782");
    }

    /// `keep_published_hours = 0` keeps published messages forever; out of range, or a
    /// metrics address equal to the API's, is refused naming the key.
    #[test]
    fn retention_and_metrics_are_checked() {
        let base = "[database]\nurl = \"postgres://postgres@127.0.0.1/x\"\n";
        let forever = from_toml(&format!("{base}[retention]\nkeep_published_hours = 0\n"))
            .expect("0 is valid");
        assert_eq!(forever.retention.keep_published(), None);
        let error = from_toml(&format!(
            "{base}[retention]\nkeep_published_hours = 87601\n"
        ))
        .expect_err("out of range");
        assert!(
            error
                .to_string()
                .contains("`retention.keep_published_hours`"),
            "{error}"
        );
        let error = from_toml(&format!(
            "{base}[api]\nlisten = \"127.0.0.1:9000\"\n[metrics]\nlisten = \"127.0.0.1:9000\"\n"
        ))
        .expect_err("same address");
        assert!(error.to_string().contains("`metrics.listen`"), "{error}");
    }

    /// A market table is checked at load; its errors name the dotted key.
    #[test]
    fn markets_are_checked_naming_the_key() {
        let base = "[database]\nurl = \"postgres://h/x\"\n[markets.btc_usdt]\nbase = \"BTC\"\nquote = \"USDT\"\n";
        let config = from_toml(&format!(
            "{base}tick_size = \"100\"\nlot_size = 1000\ntaker_fee_bps = 20\n"
        ))
        .expect("valid market");
        assert_eq!(
            config.markets.checked().expect("checked")["btc_usdt"].lot_size,
            1000
        );
        let off = from_toml(&format!(
            "{base}tick_size = \"100\"\nlot_size = \"1000\"\nmin_quantity = \"1500\"\n"
        ))
        .expect_err("min off lot");
        assert!(
            off.to_string().contains("`markets.btc_usdt.min_quantity`"),
            "{off}"
        );
        let zero = from_toml(&format!("{base}tick_size = \"0\"\nlot_size = \"1000\"\n"))
            .expect_err("zero tick");
        assert!(
            zero.to_string().contains("`markets.btc_usdt.tick_size`"),
            "{zero}"
        );
        let unknown = from_toml(&format!(
            "{base}tick_size = \"1\"\nlot_size = \"1\"\nprice_step = 1\n"
        ))
        .expect_err("unknown key");
        assert!(
            unknown.to_string().contains("markets.btc_usdt"),
            "{unknown}"
        );
    }

    #[test]
    fn api_section_is_checked() {
        let config = from_toml(
            "[database]\nurl = \"postgres://h/x\"\n[api]\nlisten = \"0.0.0.0:9000\"\nmax_clock_skew_secs = 5\n",
        )
        .expect("valid");
        assert_eq!(config.api.listen.port(), 9000);
        assert_eq!(config.api.max_clock_skew_secs, 5);
        let zero =
            from_toml("[database]\nurl = \"postgres://h/x\"\n[api]\nmax_clock_skew_secs = 0\n")
                .expect_err("zero skew");
        assert!(
            zero.to_string().contains("`api.max_clock_skew_secs`"),
            "{zero}"
        );
        let limits = from_toml(
            "[database]\nurl = \"postgres://h/x\"\n[api]\nrequests_per_second = 2\nburst = 3\nunauthenticated_requests_per_second = 4\nunauthenticated_burst = 5\n",
        )
        .expect("valid limits");
        assert_eq!(
            (
                limits.api.requests_per_second,
                limits.api.burst,
                limits.api.unauthenticated_requests_per_second,
                limits.api.unauthenticated_burst
            ),
            (2, 3, 4, 5)
        );
        for key in [
            "requests_per_second",
            "burst",
            "unauthenticated_requests_per_second",
            "unauthenticated_burst",
        ] {
            let zero = from_toml(&format!(
                "[database]\nurl = \"postgres://h/x\"\n[api]\n{key} = 0\n"
            ))
            .expect_err("zero limit");
            assert!(zero.to_string().contains(&format!("`api.{key}`")), "{zero}");
        }
        let bad = from_toml("[database]\nurl = \"postgres://h/x\"\n[api]\nlisten = \"nowhere\"\n")
            .expect_err("bad address");
        assert!(bad.to_string().contains("`api.listen`"), "{bad}");
    }

    #[test]
    fn errors_name_the_key() {
        let missing = from_toml("[amqp]\nprefetch = 4\n").expect_err("no database");
        assert!(missing.to_string().contains("database"), "{missing}");
        let missing_url = from_toml("[database]\nmax_connections = 3\n").expect_err("no url");
        assert!(
            missing_url.to_string().contains("`database.url`"),
            "{missing_url}"
        );
        let wrong_type =
            from_toml("[database]\nurl = \"postgres://h/x\"\n[amqp]\nprefetch = \"many\"\n")
                .expect_err("bad type");
        assert!(
            wrong_type.to_string().contains("`amqp.prefetch`"),
            "{wrong_type}"
        );
        let bad_url = from_toml("[database]\nurl = \"mysql://h/x\"\n").expect_err("bad scheme");
        assert!(bad_url.to_string().contains("`database.url`"), "{bad_url}");
        let unknown =
            from_toml("[database]\nurl = \"postgres://h/x\"\nport = 1\n").expect_err("typo");
        assert!(unknown.to_string().contains("`database.port`"), "{unknown}");
        let zero = from_toml("[database]\nurl = \"postgres://h/x\"\n[amqp]\nprefetch = 0\n")
            .expect_err("zero prefetch");
        assert!(zero.to_string().contains("`amqp.prefetch`"), "{zero}");
    }

    #[test]
    fn asset_withdraw_fees_default_to_zero_and_ignore_case() {
        let config = from_toml(
            "[database]\nurl = \"postgres://h/x\"\n[assets.BTC]\nwithdraw_fee = \"1000\"\n[assets.eth]\n",
        )
        .expect("valid");
        assert_eq!(config.assets.withdraw_fee("btc").as_str(), "1000");
        assert_eq!(config.assets.withdraw_fee("ETH").as_str(), "0");
        assert_eq!(config.assets.withdraw_fee("DASH").as_str(), "0");
        let bad = from_toml(
            "[database]\nurl = \"postgres://h/x\"\n[assets.BTC]\nwithdraw_fee = \"-1\"\n",
        )
        .expect_err("negative fee");
        assert!(bad.to_string().contains("withdraw_fee"), "{bad}");
        let overridden = from_toml(
            "[database]\nurl = \"postgres://h/x\"\n[assets.btc]\nwithdraw_fee = 7\n[assets.BTC]\nwithdraw_fee = \"5\"\n",
        )
        .expect("two spellings merge");
        assert_eq!(overridden.assets.withdraw_fee("BTC").as_str(), "7");
        let bad_symbol = from_toml("[database]\nurl = \"postgres://h/x\"\n[assets.\"B TC\"]\n")
            .expect_err("bad symbol");
        assert!(
            bad_symbol.to_string().contains("`assets.B TC`"),
            "{bad_symbol}"
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let config = from_toml("[database]\nurl = \"postgres://u:hunter2@h/x\"\n").expect("valid");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
