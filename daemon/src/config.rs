//! coinhubd's configuration: one TOML file plus `COINHUB__SECTION__KEY` environment
//! overrides (e.g. `COINHUB__DATABASE__URL`, `COINHUB__CHAINS__ETHEREUM__RPC_URLS`),
//! validated at start. An invalid file fails with a message that names the key.
//!
//! ```toml
//! [database]
//! url = "postgres://postgres@127.0.0.1:5432/coinhub"
//!
//! [amqp]
//! url = "amqp://guest:guest@127.0.0.1:5672/%2f"
//!
//! [vault]
//! address = "http://127.0.0.1:8200"
//! token = "s.xxxx"                # secret: never logged
//! transit_mount = "transit"
//! transit_key = "coinhub-a"       # encrypts key A's seed
//!
//! [admin]
//! listen = "127.0.0.1:8780"
//! token = "change-me"             # secret: bearer token of the admin API
//!
//! [chains.ethereum]               # the chain's name in messages and the CLI
//! kind = "evm"
//! rpc_urls = ["http://127.0.0.1:8545"]
//! chain_id = 31337
//! reorg_depth_max = 64            # blocks kept to find a fork point
//! poll_interval_ms = 1000
//! start_height = 0                # optional: first block to scan on a fresh database
//!
//! [assets.eth]                    # symbol, case-insensitive; written upper case
//! chain = "ethereum"
//! decimals = 18
//! confirmations_min = 12
//! deposit_min = "1000000000000000" # base units (wei)
//!
//! [assets.usdt]
//! chain = "ethereum"
//! contract = "0xdAC17F958D2ee523a2206206994597C13D831ec7" # ERC-20; omit for the native coin
//! decimals = 6
//! confirmations_min = 12
//! deposit_min = "1000000"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;

/// Prefix of environment overrides; `__` separates nested keys.
pub const ENV_PREFIX: &str = "COINHUB__";

/// The whole configuration of `coinhubd`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// PostgreSQL.
    pub database: DatabaseConfig,
    /// RabbitMQ.
    pub amqp: AmqpConfig,
    /// OpenBao/Vault transit, which wraps the custody seeds.
    pub vault: VaultConfig,
    /// The admin HTTP API (also serves `/metrics`).
    pub admin: AdminConfig,
    /// Chains by name (`[chains.<name>]`).
    #[serde(default)]
    pub chains: BTreeMap<String, ChainConfig>,
    /// Assets by symbol (`[assets.<symbol>]`, case-insensitive).
    #[serde(default)]
    pub assets: BTreeMap<String, AssetConfig>,
    /// The cosigner that holds key B; without it coinhubd accepts and validates withdrawal
    /// requests but cannot sign them.
    #[serde(default)]
    pub cosigner: Option<CosignerLink>,
}

/// `[cosigner]`: how coinhubd reaches `coinhubd cosigner` (HTTP, HMAC-SHA256 signed requests).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosignerLink {
    /// Base URL, e.g. `http://10.0.0.7:8790`.
    pub url: String,
    /// The shared HMAC secret (the cosigner's `[api] hmac_secret`); never logged.
    pub hmac_secret: SecretString,
    /// Timeout of one signing request, in milliseconds.
    #[serde(default = "default_vault_timeout_ms")]
    pub timeout_ms: u64,
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user@host:port/database`.
    pub url: SecretString,
    /// Largest number of pooled connections.
    #[serde(default = "default_db_connections_max")]
    pub connections_max: u32,
}

/// `[amqp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// `amqp://user:password@host:port/vhost` (vhost `/` is `%2f`).
    pub url: SecretString,
}

/// `[vault]`: the OpenBao/Vault transit key that envelope-encrypts key A's seed (the cosigner's
/// config: key B's). Shared with coinhub-exchange, which seals its API key secrets with it.
pub use coinhub_custody::keystore::VaultConfig;

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address of the admin API and `/metrics`.
    pub listen: SocketAddr,
    /// Bearer token the `coinhub` CLI sends.
    pub token: SecretString,
}

/// The kind of node a chain is followed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    /// An EVM chain (Ethereum or any EIP-155 chain id), JSON-RPC.
    Evm,
    /// Bitcoin through Bitcoin Core's JSON-RPC and REST; 2-of-3 `wsh(sortedmulti)` wallet.
    Bitcoin,
    /// Dash through Dash Core's JSON-RPC and REST; 2-of-3 `sh(sortedmulti)` wallet.
    Dash,
}

impl ChainKind {
    /// Whether the chain is a UTXO chain (Bitcoin, Dash).
    pub fn is_utxo(self) -> bool {
        matches!(self, Self::Bitcoin | Self::Dash)
    }
}

/// `[chains.<name>]`: a chain coinhubd follows. A plain struct (not a tagged enum) so that a
/// bad value's error names its full key, e.g. `chains.ethereum.chain_id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// Which node protocol.
    pub kind: ChainKind,
    /// JSON-RPC endpoints, tried in order (failover; UTXO chains use the first).
    pub rpc_urls: Vec<String>,
    /// EIP-155 chain id (EVM only, required there); checked against `eth_chainId` at start.
    #[serde(default)]
    pub chain_id: Option<u64>,
    /// UTXO only, required there: `bitcoin`, `bitcoin-testnet`, `bitcoin-testnet4`,
    /// `bitcoin-signet`, `bitcoin-regtest`, `dash`, `dash-testnet`, `dash-regtest`; checked
    /// against `getblockchaininfo.chain` at start.
    #[serde(default)]
    pub network: Option<String>,
    /// UTXO: RPC user (with `rpc_password`); or use `rpc_cookie_file`.
    #[serde(default)]
    pub rpc_user: Option<String>,
    /// UTXO: RPC password (secret).
    #[serde(default)]
    pub rpc_password: Option<SecretString>,
    /// UTXO: path of the node's `.cookie` file, re-read when the node restarts.
    #[serde(default)]
    pub rpc_cookie_file: Option<std::path::PathBuf>,
    /// UTXO: key B's BIP48 account xpub with origin, `[fingerprint/48h/1h/0h/2h]tpub...`
    /// (printed by the cosigner's `coinhubd init --key b`).
    #[serde(default)]
    pub cosigner_xpub: Option<String>,
    /// UTXO: key C's (offline backup) BIP48 account xpub with origin.
    #[serde(default)]
    pub backup_xpub: Option<String>,
    /// UTXO: receive addresses watched past the highest one handed out, so a payment to an
    /// address derived elsewhere (or lost with a database restore) is still seen.
    #[serde(default = "default_address_lookahead")]
    pub address_lookahead: u32,
    /// How many recent blocks are kept to find a fork point; a deeper reorg stops the watcher.
    #[serde(default = "default_reorg_depth_max")]
    pub reorg_depth_max: u32,
    /// Pause between polls of the node's head, in milliseconds.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// First block to scan on a fresh database; default: the node's head at first start.
    #[serde(default)]
    pub start_height: Option<u64>,
    /// Timeout of one RPC call, in milliseconds.
    #[serde(default = "default_rpc_timeout_ms")]
    pub rpc_timeout_ms: u64,
    /// Most blocks connected per poll, so a long catch-up still reports progress.
    #[serde(default = "default_blocks_per_poll_max")]
    pub blocks_per_poll_max: u32,
    /// Withdrawals: fee rates, batching, fee bumping, the EVM Safe.
    #[serde(default)]
    pub withdrawals: WithdrawalConfig,
}

/// `[chains.<name>.withdrawals]`: how the chain's hot wallet pays withdrawals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalConfig {
    /// UTXO: lowest fee rate in sat/vB (used when `estimatesmartfee` has no estimate, as on
    /// regtest).
    #[serde(default = "default_fee_rate_floor")]
    pub fee_rate_floor: u64,
    /// UTXO: highest fee rate in sat/vB, whatever the node estimates.
    #[serde(default = "default_fee_rate_cap")]
    pub fee_rate_cap: u64,
    /// UTXO: `estimatesmartfee` confirmation target, in blocks.
    #[serde(default = "default_fee_target_blocks")]
    pub fee_target_blocks: u16,
    /// UTXO (Bitcoin): blocks without confirmation before the transaction is replaced with a
    /// higher fee (BIP125). Dash has no RBF.
    #[serde(default = "default_rbf_after_blocks")]
    pub rbf_after_blocks: u32,
    /// Most withdrawals paid by one transaction.
    #[serde(default = "default_batch_max")]
    pub batch_max: u32,
    /// Pause between rounds of the payout engine, in milliseconds.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// EVM: the hot wallet, a Safe 2-of-3 whose owners are keys A, B and C (account/1/0).
    #[serde(default)]
    pub safe_address: Option<Address>,
    /// EVM: highest `maxFeePerGas` in wei (decimal string), whatever the node suggests.
    #[serde(
        default = "default_max_fee_per_gas_cap",
        deserialize_with = "base_units"
    )]
    pub max_fee_per_gas_cap: U256,
    /// EVM: seconds without being mined before the executor's transaction is replaced with
    /// the same nonce and at least 10 % more fee.
    #[serde(default = "default_replace_after_secs")]
    pub replace_after_secs: u64,
}

impl Default for WithdrawalConfig {
    fn default() -> Self {
        Self {
            fee_rate_floor: default_fee_rate_floor(),
            fee_rate_cap: default_fee_rate_cap(),
            fee_target_blocks: default_fee_target_blocks(),
            rbf_after_blocks: default_rbf_after_blocks(),
            batch_max: default_batch_max(),
            poll_interval_ms: default_poll_interval_ms(),
            safe_address: None,
            max_fee_per_gas_cap: default_max_fee_per_gas_cap(),
            replace_after_secs: default_replace_after_secs(),
        }
    }
}

/// `[assets.<symbol>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    /// Name of the chain in `[chains]`.
    pub chain: String,
    /// ERC-20 contract; absent for the chain's native coin.
    #[serde(default)]
    pub contract: Option<Address>,
    /// Decimals: one whole unit is `10^decimals` base units.
    pub decimals: u8,
    /// Confirmations (blocks including the deposit's own) before `confirmed`.
    pub confirmations_min: u32,
    /// Smallest deposit credited, in base units (decimal string); smaller ones are recorded
    /// as `ignored`.
    #[serde(default, deserialize_with = "base_units")]
    pub deposit_min: U256,
    /// Smallest withdrawal paid, in base units (decimal string); smaller requests fail.
    #[serde(default = "default_withdrawal_min", deserialize_with = "base_units")]
    pub withdrawal_min: U256,
}

fn base_units<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<U256, D::Error> {
    let text = String::deserialize(deserializer)?;
    let parsed: coinhub_events::BaseUnits = text.parse().map_err(serde::de::Error::custom)?;
    U256::from_str_radix(parsed.as_str(), 10).map_err(serde::de::Error::custom)
}

fn default_fee_rate_floor() -> u64 {
    1
}
fn default_fee_rate_cap() -> u64 {
    500
}
fn default_fee_target_blocks() -> u16 {
    6
}
fn default_rbf_after_blocks() -> u32 {
    3
}
fn default_batch_max() -> u32 {
    50
}
fn default_max_fee_per_gas_cap() -> U256 {
    U256::from(500_000_000_000u64) // 500 gwei
}
fn default_replace_after_secs() -> u64 {
    120
}
fn default_withdrawal_min() -> U256 {
    U256::from(1u8)
}
fn default_db_connections_max() -> u32 {
    10
}
fn default_vault_timeout_ms() -> u64 {
    10_000
}
fn default_address_lookahead() -> u32 {
    100
}
fn default_reorg_depth_max() -> u32 {
    64
}
fn default_poll_interval_ms() -> u64 {
    1_000
}
fn default_rpc_timeout_ms() -> u64 {
    10_000
}
fn default_blocks_per_poll_max() -> u32 {
    100
}

/// A configuration that cannot be used; the text names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// Reads the TOML file at `path` with `<prefix>SECTION__KEY` environment overrides (`__`
/// separates nested keys) into `T`; used for coinhubd's and the cosigner's configuration.
///
/// Errors (as text naming the file or the key): a missing file, TOML syntax, a missing,
/// unknown or mistyped key.
pub fn read_toml_with_env<T: serde::de::DeserializeOwned>(
    path: &Path,
    prefix: &str,
) -> Result<T, String> {
    if !path.is_file() {
        return Err(format!("config file {} does not exist", path.display()));
    }
    Figment::new()
        .merge(Toml::file(path))
        .merge(Env::prefixed(prefix).split("__"))
        .extract()
        .map_err(|e| e.to_string())
}

impl Config {
    /// Reads `path` and the `COINHUB__*` environment, then validates.
    ///
    /// Errors: a missing file, TOML syntax, a missing or mistyped key (figment names it,
    /// e.g. "invalid type: found string \"x\", expected u64 for key
    /// `default.chains.ethereum.chain_id`"), or a failed [`Config::validate`] rule.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config: Self = read_toml_with_env(path, ENV_PREFIX).map_err(ConfigError)?;
        config.validate()?;
        Ok(config)
    }

    /// Cross-field rules serde cannot express: every asset names a configured chain, one
    /// native asset per chain, no contract configured twice, sane limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: String, what: &str| Err(ConfigError(format!("{key}: {what}")));
        for (name, evm) in &self.chains {
            let key = |field: &str| format!("chains.{name}.{field}");
            let required: &[(&str, bool)] = match evm.kind {
                ChainKind::Evm => &[("chain_id", evm.chain_id.is_some())],
                ChainKind::Bitcoin | ChainKind::Dash => &[
                    ("network", evm.network.is_some()),
                    ("cosigner_xpub", evm.cosigner_xpub.is_some()),
                    ("backup_xpub", evm.backup_xpub.is_some()),
                    (
                        "rpc_user",
                        evm.rpc_user.is_some() || evm.rpc_cookie_file.is_some(),
                    ),
                    (
                        "rpc_password",
                        evm.rpc_password.is_some() || evm.rpc_cookie_file.is_some(),
                    ),
                ],
            };
            if let Some((field, _)) = required.iter().find(|(_, present)| !present) {
                return fail(
                    key(field),
                    &format!("is required for kind = {:?}", evm.kind),
                );
            }
            if let Some(network) = &evm.network {
                let parsed: Result<coinhub_custody::utxo::UtxoNetwork, _> = network.parse();
                match parsed {
                    Err(error) => return fail(key("network"), &error.to_string()),
                    Ok(parsed) if parsed.is_dash() != (evm.kind == ChainKind::Dash) => {
                        return fail(
                            key("network"),
                            &format!("{network} is not a {:?} network", evm.kind),
                        );
                    }
                    Ok(_) => {}
                }
            }
            if evm.rpc_urls.is_empty() {
                return fail(format!("chains.{name}.rpc_urls"), "needs at least one URL");
            }
            if evm.reorg_depth_max == 0 {
                return fail(
                    format!("chains.{name}.reorg_depth_max"),
                    "must be at least 1",
                );
            }
            let withdrawals = &evm.withdrawals;
            if withdrawals.fee_rate_floor == 0
                || withdrawals.fee_rate_floor > withdrawals.fee_rate_cap
            {
                return fail(
                    format!("chains.{name}.withdrawals.fee_rate_floor"),
                    "must be at least 1 and at most fee_rate_cap",
                );
            }
            if withdrawals.batch_max == 0 {
                return fail(
                    format!("chains.{name}.withdrawals.batch_max"),
                    "must be at least 1",
                );
            }
            if withdrawals.safe_address.is_some() && evm.kind != ChainKind::Evm {
                return fail(
                    format!("chains.{name}.withdrawals.safe_address"),
                    "only EVM chains have a Safe",
                );
            }
            if evm.blocks_per_poll_max == 0 {
                return fail(
                    format!("chains.{name}.blocks_per_poll_max"),
                    "must be at least 1",
                );
            }
        }
        let mut natives = BTreeMap::new();
        let mut contracts = BTreeMap::new();
        for (symbol, asset) in &self.assets {
            let key = format!("assets.{symbol}");
            if !self.chains.contains_key(&asset.chain) {
                return fail(
                    format!("{key}.chain"),
                    &format!("unknown chain {:?}", asset.chain),
                );
            }
            if asset.contract.is_some() && self.chains[&asset.chain].kind != ChainKind::Evm {
                return fail(
                    format!("{key}.contract"),
                    "only EVM chains have token contracts",
                );
            }
            if asset.confirmations_min == 0 {
                return fail(format!("{key}.confirmations_min"), "must be at least 1");
            }
            let reorg_depth_max = self.chains[&asset.chain].reorg_depth_max;
            if asset.confirmations_min > reorg_depth_max {
                return fail(
                    format!("{key}.confirmations_min"),
                    &format!("must not exceed the chain's reorg_depth_max ({reorg_depth_max})"),
                );
            }
            let previous = match asset.contract {
                None => natives.insert(asset.chain.clone(), symbol.clone()),
                Some(contract) => contracts.insert((asset.chain.clone(), contract), symbol.clone()),
            };
            if let Some(other) = previous {
                return fail(key, &format!("same chain and contract as assets.{other}"));
            }
        }
        Ok(())
    }

    /// The assets of `chain`, with their symbols upper-cased.
    pub fn assets_of<'a>(
        &'a self,
        chain: &'a str,
    ) -> impl Iterator<Item = (String, &'a AssetConfig)> {
        self.assets
            .iter()
            .filter(move |(_, asset)| asset.chain == chain)
            .map(|(symbol, asset)| (symbol.to_uppercase(), asset))
    }
}

impl ChainConfig {
    /// [`ChainConfig::poll_interval_ms`] as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// [`ChainConfig::rpc_timeout_ms`] as a duration.
    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.rpc_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../config/coinhubd.example.toml");

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("coinhub-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("coinhubd.toml");
        std::fs::write(&path, text).expect("write config");
        let loaded = Config::load(&path);
        std::fs::remove_dir_all(&dir).expect("clean temp dir");
        loaded
    }

    /// The shipped example loads, with the asset rules it spells out.
    #[test]
    fn example_loads() {
        let config = load_text(EXAMPLE).expect("example config is valid");
        let assets: Vec<_> = config
            .assets_of("ethereum")
            .map(|(symbol, _)| symbol)
            .collect();
        assert_eq!(assets, vec!["ETH".to_owned(), "USDT".to_owned()]);
        assert_eq!(config.assets["usdt"].deposit_min, U256::from(1_000_000u64));
        let bitcoin = &config.chains["bitcoin"];
        assert_eq!(bitcoin.kind, ChainKind::Bitcoin);
        for xpub in [&bitcoin.cosigner_xpub, &bitcoin.backup_xpub] {
            let xpub = xpub.as_deref().expect("example sets both keys");
            let parsed: Result<coinhub_custody::utxo::AccountXpub, _> = xpub.parse();
            assert!(parsed.is_ok(), "{xpub}: {parsed:?}");
        }
    }

    /// A UTXO chain without its keys, or with an EVM network, names the missing key.
    #[test]
    fn utxo_chains_need_their_keys() {
        let text = EXAMPLE.replace("backup_xpub =", "# backup_xpub =");
        let error = load_text(&text).expect_err("must fail").to_string();
        assert!(error.contains("chains.bitcoin.backup_xpub"), "{error}");
        let text = EXAMPLE.replace("network = \"bitcoin\"", "network = \"dash\"");
        let error = load_text(&text).expect_err("must fail").to_string();
        assert!(error.contains("chains.bitcoin.network"), "{error}");
    }

    /// A mistyped value names its key.
    #[test]
    fn wrong_type_names_the_key() {
        let text = EXAMPLE.replace("chain_id = 1", "chain_id = \"one\"");
        let error = load_text(&text).expect_err("must fail").to_string();
        assert!(
            error.contains("chains.ethereum") && error.contains("chain_id"),
            "{error}"
        );
    }

    /// A float or negative deposit_min is refused with the key named.
    #[test]
    fn non_integer_amount_is_refused() {
        let text = EXAMPLE.replace("deposit_min = \"1000000\"", "deposit_min = \"1.5\"");
        let error = load_text(&text).expect_err("must fail").to_string();
        assert!(
            error.contains("deposit_min") && error.contains("base units"),
            "{error}"
        );
    }

    /// An unknown key (a typo) is refused, not silently ignored.
    #[test]
    fn unknown_key_is_refused() {
        let text = EXAMPLE.replace("poll_interval_ms = 2000", "poll_interval = 2000");
        let error = load_text(&text).expect_err("must fail").to_string();
        assert!(error.contains("poll_interval"), "{error}");
    }

    /// Cross-field rules name the key: an asset on an unknown chain, a missing section.
    #[test]
    fn validation_names_the_key() {
        let text = EXAMPLE.replace(
            "chain = \"ethereum\"\ncontract",
            "chain = \"etherium\"\ncontract",
        );
        let error = load_text(&text).expect_err("must fail").to_string();
        assert!(
            error.contains("assets.usdt.chain") && error.contains("etherium"),
            "{error}"
        );
        let text = EXAMPLE.replace("[admin]", "[not_admin]");
        let error = load_text(&text).expect_err("must fail").to_string();
        assert!(
            error.contains("admin") || error.contains("not_admin"),
            "{error}"
        );
    }
}
