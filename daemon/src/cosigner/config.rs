//! The cosigner's own configuration: one TOML file plus `COINHUB_COSIGNER__SECTION__KEY`
//! environment overrides (e.g. `COINHUB_COSIGNER__API__HMAC_SECRET`), validated at start. It
//! shares no file with coinhubd: its database, AMQP user and Vault token are its own. An
//! invalid file fails with a message that names the key. See `config/cosigner.example.toml`.
//!
//! ```toml
//! [database]
//! url = "postgres://postgres@127.0.0.1:5432/coinhub_cosigner"
//! [amqp]
//! url = "amqp://guest:guest@127.0.0.1:5672/%2f"
//! [vault]
//! address = "http://127.0.0.1:8200"
//! token = "s.xxxx"               # may decrypt key B only (deploy/openbao/cosigner.hcl)
//! transit_key = "coinhub-b"
//! [api]
//! listen = "127.0.0.1:8790"
//! hmac_secret = "…at least 32 bytes…"
//! max_clock_skew_secs = 300
//! [chains.bitcoin]
//! kind = "bitcoin"
//! network = "bitcoin-regtest"
//! hot_xpub = "[fingerprint/48h/1h/0h/2h]tpub…"     # key A
//! backup_xpub = "[fingerprint/48h/1h/0h/2h]tpub…"  # key C
//! rpc_urls = ["http://127.0.0.1:18443"]  # the cosigner's OWN node (required for dash)
//! rpc_cookie_file = "/var/lib/bitcoind/regtest/.cookie"  # or rpc_user + rpc_password
//! rpc_timeout_ms = 10000
//! [chains.ethereum]
//! kind = "evm"
//! chain_id = 31337
//! safe_address = "0x…"
//! [assets.btc]
//! chain = "bitcoin"
//! decimals = 8
//! max_per_withdrawal = "100000000"   # base units (decimal strings)
//! max_24h = "500000000"
//! fee_cap = "100000"
//! deny = ["bcrt1q…"]
//! allow = ["bcrt1q…"]                # optional: when set, only these are paid
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use coinhub_chains::bitcoin::rpc::{Auth, BitcoinRpc, RpcConfig};
use coinhub_chains::destination::{self, DestinationNetwork};
use coinhub_custody::policy::{AssetPolicy, Policy};
use coinhub_custody::utxo::{AccountXpub, UtxoNetwork};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::{AmqpConfig, ChainKind, DatabaseConfig, VaultConfig};

/// Prefix of environment overrides; `__` separates nested keys.
pub const ENV_PREFIX: &str = "COINHUB_COSIGNER__";

/// Shortest accepted `[api] hmac_secret`, in bytes (256 bits, the HMAC-SHA256 block security).
pub const HMAC_SECRET_LEN_MIN_BYTES: usize = 32;

/// The whole configuration of `coinhubd cosigner`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosignerConfig {
    /// The cosigner's own PostgreSQL database (never coinhubd's).
    pub database: DatabaseConfig,
    /// RabbitMQ, where the cosigner's own queue receives `withdrawal.request`.
    pub amqp: AmqpConfig,
    /// OpenBao/Vault transit key that wraps key B's seed; the token may decrypt nothing else.
    pub vault: VaultConfig,
    /// The HTTP API coinhubd calls.
    pub api: ApiConfig,
    /// Chains by name (`[chains.<name>]`); names are the ones coinhubd uses.
    #[serde(default)]
    pub chains: BTreeMap<String, CosignerChainConfig>,
    /// Assets by symbol (`[assets.<symbol>]`, case-insensitive), with their policy.
    #[serde(default)]
    pub assets: BTreeMap<String, CosignerAssetConfig>,
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address, e.g. `127.0.0.1:8790`.
    pub listen: SocketAddr,
    /// Shared HMAC-SHA256 secret (coinhubd's `[cosigner] hmac_secret`), at least
    /// [`HMAC_SECRET_LEN_MIN_BYTES`] bytes; never logged.
    pub hmac_secret: SecretString,
    /// Largest accepted difference between a request's `x-coinhub-timestamp` and the
    /// cosigner's clock, in seconds (either direction).
    #[serde(default = "default_max_clock_skew_secs")]
    pub max_clock_skew_secs: u64,
    /// Largest accepted request body, in bytes.
    #[serde(default = "default_body_max_bytes")]
    pub body_max_bytes: usize,
}

/// `[chains.<name>]`: a plain struct (not a tagged enum) so a bad value's error names its
/// full key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosignerChainConfig {
    /// `evm`, `bitcoin` or `dash`.
    pub kind: ChainKind,
    /// UTXO only, required there: `bitcoin`, `bitcoin-regtest`, `dash`, … (as coinhubd's).
    #[serde(default)]
    pub network: Option<String>,
    /// UTXO: key A's BIP48 account xpub with origin, `[fingerprint/48h/1h/0h/2h]tpub…`.
    #[serde(default)]
    pub hot_xpub: Option<String>,
    /// UTXO: key C's (offline backup) BIP48 account xpub with origin.
    #[serde(default)]
    pub backup_xpub: Option<String>,
    /// EVM only, required there: the EIP-155 chain id signed into every SafeTx hash.
    #[serde(default)]
    pub chain_id: Option<u64>,
    /// EVM only, required there: the hot wallet Safe signed for.
    #[serde(default)]
    pub safe_address: Option<Address>,
    /// UTXO: JSON-RPC URLs of the cosigner's **own** Bitcoin/Dash Core node(s), tried in
    /// order (the next one when a node cannot be reached). Every input of a spend is checked
    /// there with `gettxout` before signing. Required for `dash` (its legacy sighash does not
    /// commit to input amounts); optional but recommended for `bitcoin` (BIP143 commits to
    /// them, so a wrong amount only yields invalid signatures). Not for EVM chains.
    #[serde(default)]
    pub rpc_urls: Vec<String>,
    /// UTXO node: RPC user (with `rpc_password`); or use `rpc_cookie_file`.
    #[serde(default)]
    pub rpc_user: Option<String>,
    /// UTXO node: RPC password; never logged.
    #[serde(default)]
    pub rpc_password: Option<SecretString>,
    /// UTXO node: the node's cookie file, re-read when the node answers 401.
    #[serde(default)]
    pub rpc_cookie_file: Option<PathBuf>,
    /// UTXO node: limit of one call, milliseconds.
    #[serde(default = "default_rpc_timeout_ms")]
    pub rpc_timeout_ms: u64,
}

/// `[assets.<symbol>]`: an asset and its policy. Amounts are decimal strings of base units.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosignerAssetConfig {
    /// Name of the chain in `[chains]`.
    pub chain: String,
    /// ERC-20 contract; absent for the chain's native coin.
    #[serde(default)]
    pub contract: Option<Address>,
    /// One whole unit is `10^decimals` base units; a request must agree.
    pub decimals: u8,
    /// Largest single withdrawal, base units (inclusive).
    #[serde(deserialize_with = "base_units")]
    pub max_per_withdrawal: u128,
    /// Largest total of withdrawals approved within a rolling 24 h, base units (inclusive).
    #[serde(deserialize_with = "base_units")]
    pub max_24h: u128,
    /// Largest fee of one spend, base units of this asset (UTXO: inputs − outputs; EVM: the
    /// executor pays gas, so the fee is 0).
    #[serde(deserialize_with = "base_units")]
    pub fee_cap: u128,
    /// Destinations never paid.
    #[serde(default)]
    pub deny: Vec<String>,
    /// When set, the only destinations that may be paid.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
}

fn base_units<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
    let text = String::deserialize(deserializer)?;
    let parsed: coinhub_events::BaseUnits = text.parse().map_err(serde::de::Error::custom)?;
    parsed
        .as_str()
        .parse()
        .map_err(|_| serde::de::Error::custom(format!("{text} base units do not fit in 128 bits")))
}

fn default_rpc_timeout_ms() -> u64 {
    10_000
}
fn default_max_clock_skew_secs() -> u64 {
    300
}
fn default_body_max_bytes() -> usize {
    1024 * 1024
}

/// A configuration that cannot be used; the text names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid cosigner configuration: {0}")]
pub struct CosignerConfigError(String);

impl CosignerConfig {
    /// Reads `path` and the `COINHUB_COSIGNER__*` environment, then validates.
    ///
    /// Errors: a missing file, TOML syntax, a missing, unknown or mistyped key (figment names
    /// it), or a failed [`CosignerConfig::validate`] rule.
    pub fn load(path: &Path) -> Result<Self, CosignerConfigError> {
        let config: Self =
            crate::config::read_toml_with_env(path, ENV_PREFIX).map_err(CosignerConfigError)?;
        config.validate()?;
        Ok(config)
    }

    /// Rules serde cannot express: the secret's length, each chain's required keys, each
    /// asset on a configured chain with a parsable deny/allow list, one native asset per chain.
    ///
    /// Errors: the first broken rule, naming its key (never the secret's value).
    pub fn validate(&self) -> Result<(), CosignerConfigError> {
        let fail = |key: String, what: &str| Err(CosignerConfigError(format!("{key}: {what}")));
        if self.api.hmac_secret.expose_secret().len() < HMAC_SECRET_LEN_MIN_BYTES {
            return fail(
                "api.hmac_secret".to_owned(),
                &format!("must be at least {HMAC_SECRET_LEN_MIN_BYTES} bytes"),
            );
        }
        if self.api.max_clock_skew_secs == 0 {
            return fail("api.max_clock_skew_secs".to_owned(), "must be at least 1");
        }
        for (name, chain) in &self.chains {
            let key = |field: &str| format!("chains.{name}.{field}");
            let required: &[(&str, bool)] = match chain.kind {
                ChainKind::Evm => &[
                    ("chain_id", chain.chain_id.is_some()),
                    ("safe_address", chain.safe_address.is_some()),
                ],
                ChainKind::Bitcoin | ChainKind::Dash => &[
                    ("network", chain.network.is_some()),
                    ("hot_xpub", chain.hot_xpub.is_some()),
                    ("backup_xpub", chain.backup_xpub.is_some()),
                ],
            };
            if let Some((field, _)) = required.iter().find(|(_, present)| !present) {
                return fail(
                    key(field),
                    &format!("is required for kind = {:?}", chain.kind),
                );
            }
            if chain.kind.is_utxo() {
                let network = chain
                    .utxo_network()
                    .map_err(|e| CosignerConfigError(format!("{}: {e}", key("network"))))?;
                if network.is_dash() != (chain.kind == ChainKind::Dash) {
                    return fail(
                        key("network"),
                        &format!("{network} is not a {:?} network", chain.kind),
                    );
                }
                for (field, value) in [
                    ("hot_xpub", &chain.hot_xpub),
                    ("backup_xpub", &chain.backup_xpub),
                ] {
                    let text = value.as_deref().unwrap_or_default();
                    if let Err(error) = text.parse::<AccountXpub>() {
                        return fail(key(field), &error.to_string());
                    }
                }
                chain.validate_node(name)?;
            } else {
                let node_keys = [
                    ("rpc_urls", !chain.rpc_urls.is_empty()),
                    ("rpc_user", chain.rpc_user.is_some()),
                    ("rpc_password", chain.rpc_password.is_some()),
                    ("rpc_cookie_file", chain.rpc_cookie_file.is_some()),
                ];
                if let Some((field, _)) = node_keys.iter().find(|(_, present)| *present) {
                    return fail(
                        key(field),
                        "only UTXO chains have a node (the cosigner reads no EVM node)",
                    );
                }
            }
        }
        let mut natives = BTreeMap::new();
        let mut symbols = BTreeSet::new();
        for (symbol, asset) in &self.assets {
            let key = |field: &str| format!("assets.{symbol}.{field}");
            if !symbols.insert(symbol.to_uppercase()) {
                return fail(format!("assets.{symbol}"), "symbol configured twice");
            }
            let Some(chain) = self.chains.get(&asset.chain) else {
                return fail(key("chain"), &format!("unknown chain {:?}", asset.chain));
            };
            if asset.contract.is_some() && chain.kind != ChainKind::Evm {
                return fail(key("contract"), "only EVM chains have token contracts");
            }
            if asset.contract.is_none()
                && let Some(other) = natives.insert(asset.chain.clone(), symbol.clone())
            {
                return fail(
                    format!("assets.{symbol}"),
                    &format!("a second native asset of {} (assets.{other})", asset.chain),
                );
            }
            let network = self
                .destination_network(&asset.chain)
                .map_err(|e| CosignerConfigError(format!("{}: {e}", key("chain"))))?;
            let lists = asset
                .deny
                .iter()
                .enumerate()
                .map(|(i, text)| (format!("deny[{i}]"), text))
                .chain(
                    asset
                        .allow
                        .iter()
                        .flatten()
                        .enumerate()
                        .map(|(i, text)| (format!("allow[{i}]"), text)),
                );
            for (field, text) in lists {
                if let Err(error) = destination::parse_destination(network, text) {
                    return fail(key(&field), &error.to_string());
                }
            }
        }
        Ok(())
    }

    /// The destination network of chain `name`, for parsing request and list addresses.
    ///
    /// Errors: an unknown chain, or a UTXO chain without a valid `network`.
    pub fn destination_network(&self, name: &str) -> anyhow::Result<DestinationNetwork> {
        let chain = self
            .chains
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("unknown chain {name:?}"))?;
        if chain.kind == ChainKind::Evm {
            return Ok(DestinationNetwork::Evm);
        }
        let network = chain.utxo_network()?;
        Ok(match network.bitcoin_network() {
            Some(bitcoin) => DestinationNetwork::Bitcoin(bitcoin),
            None => DestinationNetwork::Dash {
                testnet: network != UtxoNetwork::Dash,
            },
        })
    }

    /// The asset with `symbol` (case-insensitive) and its upper-cased symbol.
    pub fn asset(&self, symbol: &str) -> Option<(String, &CosignerAssetConfig)> {
        let upper = symbol.to_uppercase();
        self.assets
            .iter()
            .find(|(name, _)| name.to_uppercase() == upper)
            .map(|(_, asset)| (upper, asset))
    }

    /// The policy engine's view of `[assets]`: per upper-cased symbol, the limits (base
    /// units) and the deny/allow lists in canonical address text (EIP-55, lowercase bech32,
    /// Base58Check), the spelling requests and outputs are compared in.
    ///
    /// Errors: a list entry that does not parse (refused by [`CosignerConfig::validate`]
    /// before).
    pub fn policy(&self) -> anyhow::Result<Policy> {
        let mut assets = BTreeMap::new();
        for (symbol, asset) in &self.assets {
            let network = self.destination_network(&asset.chain)?;
            let canonical = |text: &String| -> anyhow::Result<String> {
                Ok(destination::parse_destination(network, text)
                    .map_err(|e| anyhow::anyhow!("assets.{symbol}: {e}"))?
                    .canonical_text())
            };
            let deny = asset
                .deny
                .iter()
                .map(canonical)
                .collect::<anyhow::Result<_>>()?;
            let allow = asset
                .allow
                .as_ref()
                .map(|list| list.iter().map(canonical).collect::<anyhow::Result<_>>())
                .transpose()?;
            assets.insert(
                symbol.to_uppercase(),
                AssetPolicy {
                    max_per_withdrawal: asset.max_per_withdrawal,
                    max_24h: asset.max_24h,
                    fee_cap: asset.fee_cap,
                    deny,
                    allow,
                },
            );
        }
        Ok(Policy { assets })
    }
}

impl CosignerChainConfig {
    /// The node keys of UTXO chain `name`: `rpc_urls` required for `dash`; with URLs, the
    /// credentials (`rpc_cookie_file`, or `rpc_user` and `rpc_password`) and a non-zero
    /// `rpc_timeout_ms`; every URL usable by the client.
    fn validate_node(&self, name: &str) -> Result<(), CosignerConfigError> {
        let fail = |field: &str, what: &str| {
            Err(CosignerConfigError(format!(
                "chains.{name}.{field}: {what}"
            )))
        };
        if self.rpc_urls.is_empty() {
            if self.kind == ChainKind::Dash {
                return fail(
                    "rpc_urls",
                    "is required for kind = Dash: the cosigner checks every input's amount \
                     with its own node (gettxout), since Dash signatures do not commit to it",
                );
            }
            for (field, present) in [
                ("rpc_user", self.rpc_user.is_some()),
                ("rpc_password", self.rpc_password.is_some()),
                ("rpc_cookie_file", self.rpc_cookie_file.is_some()),
            ] {
                if present {
                    return fail(field, "is set but rpc_urls is empty");
                }
            }
            return Ok(());
        }
        match (&self.rpc_cookie_file, &self.rpc_user, &self.rpc_password) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => {}
            (Some(_), _, _) => {
                return fail(
                    "rpc_cookie_file",
                    "use either rpc_cookie_file or rpc_user and rpc_password, not both",
                );
            }
            (None, None, _) => {
                return fail(
                    "rpc_user",
                    "the node needs rpc_cookie_file or rpc_user and rpc_password",
                );
            }
            (None, Some(_), None) => return fail("rpc_password", "is required with rpc_user"),
        }
        if self.rpc_timeout_ms == 0 {
            return fail("rpc_timeout_ms", "must be at least 1");
        }
        for (index, url) in self.rpc_urls.iter().enumerate() {
            if let Err(error) = self.node_client(url) {
                return fail(&format!("rpc_urls[{index}]"), &error.to_string());
            }
        }
        Ok(())
    }

    /// A client of the node at `url` with this chain's credentials and timeout.
    fn node_client(&self, url: &str) -> anyhow::Result<BitcoinRpc> {
        let auth = match (&self.rpc_cookie_file, &self.rpc_user, &self.rpc_password) {
            (Some(cookie), _, _) => Auth::CookieFile(cookie.clone()),
            (None, Some(user), Some(password)) => Auth::UserPass {
                user: user.clone(),
                password: password.clone(),
            },
            _ => anyhow::bail!("needs rpc_cookie_file or rpc_user and rpc_password"),
        };
        let mut rpc_config = RpcConfig::new(url, auth);
        rpc_config.timeout_ms = self.rpc_timeout_ms;
        // The cosigner answers coinhubd synchronously: give up on a starting node quickly
        // (coinhubd retries the 503) instead of waiting out the default warm-up.
        rpc_config.warmup_attempts_max = 3;
        Ok(BitcoinRpc::new(rpc_config)?)
    }

    /// Clients of the cosigner's own node(s) of UTXO chain `name`, in `rpc_urls` order
    /// (empty when none is configured).
    ///
    /// Errors: an unusable URL or missing credentials (names `chains.<name>.rpc_urls`).
    pub fn node_clients(&self, name: &str) -> anyhow::Result<Vec<BitcoinRpc>> {
        self.rpc_urls
            .iter()
            .enumerate()
            .map(|(index, url)| {
                self.node_client(url)
                    .map_err(|e| anyhow::anyhow!("chains.{name}.rpc_urls[{index}]: {e}"))
            })
            .collect()
    }

    /// The parsed `network` of a UTXO chain.
    ///
    /// Errors: absent (EVM) or not a known network name.
    pub fn utxo_network(&self) -> anyhow::Result<UtxoNetwork> {
        let text = self
            .network
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("a UTXO chain needs a network"))?;
        Ok(text.parse()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../config/cosigner.example.toml");

    fn load_text(text: &str) -> Result<CosignerConfig, CosignerConfigError> {
        let dir = std::env::temp_dir().join(format!("coinhub-cosigner-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("cosigner.toml");
        std::fs::write(&path, text).expect("write config");
        let loaded = CosignerConfig::load(&path);
        std::fs::remove_dir_all(&dir).expect("clean temp dir");
        loaded
    }

    /// The shipped example loads and maps onto the policy engine's [`Policy`].
    #[test]
    fn example_loads() {
        let config = load_text(EXAMPLE).expect("example config is valid");
        assert_eq!(config.api.max_clock_skew_secs, 300);
        let policy = config.policy().expect("policy");
        let btc = &policy.assets["BTC"];
        assert_eq!(btc.max_per_withdrawal, 100_000_000);
        assert_eq!(btc.fee_cap, 100_000);
        assert_eq!(btc.deny.len(), 1);
        assert!(btc.allow.is_none());
        let bitcoin = &config.chains["bitcoin"];
        assert_eq!(bitcoin.rpc_urls, ["http://127.0.0.1:8332"]);
        assert_eq!(bitcoin.rpc_timeout_ms, 10_000);
        assert_eq!(
            bitcoin.node_clients("bitcoin").expect("node client").len(),
            1
        );
        let usdt = &policy.assets["USDT"];
        assert!(usdt.allow.as_ref().is_some_and(|allow| allow.len() == 1));
        assert_eq!(
            config.asset("usdt").map(|(s, _)| s),
            Some("USDT".to_owned())
        );
    }

    /// A short secret is refused, naming the key but not the value.
    #[test]
    fn short_secret_is_refused() {
        let text = EXAMPLE.replace(
            "hmac_secret = \"change-me-to-32-or-more-random-bytes!!\"",
            "hmac_secret = \"short-secret\"",
        );
        let error = load_text(&text).expect_err("must fail").to_string();
        assert!(error.contains("api.hmac_secret"), "{error}");
        assert!(!error.contains("short-secret"), "{error}");
    }

    /// An unknown key, a non-integer amount and a bad deny entry each name their key.
    #[test]
    fn errors_name_the_key() {
        let text = EXAMPLE.replace("max_clock_skew_secs = 300", "max_clock_skew = 300");
        let error = load_text(&text).expect_err("must fail").to_string();
        assert!(error.contains("max_clock_skew"), "{error}");
        let text = EXAMPLE.replace("fee_cap = \"100000\"", "fee_cap = \"0.5\"");
        let error = load_text(&text).expect_err("must fail").to_string();
        assert!(error.contains("fee_cap"), "{error}");
        let text = EXAMPLE.replace("deny = [\"bc1q", "deny = [\"xbc1q");
        let error = load_text(&text).expect_err("must fail").to_string();
        assert!(error.contains("assets.btc.deny[0]"), "{error}");
        let text = EXAMPLE.replace("safe_address =", "# safe_address =");
        let error = load_text(&text).expect_err("must fail").to_string();
        assert!(error.contains("chains.ethereum.safe_address"), "{error}");
    }

    /// The node keys: a Dash chain without `rpc_urls` is refused (its signatures do not
    /// commit to input amounts), a Bitcoin chain without them is accepted; URLs without
    /// credentials, a password without a user, a bad URL and node keys on an EVM chain are
    /// refused, each naming its key.
    #[test]
    fn node_keys_are_checked() {
        let dash = |extra: &str| {
            let xpubs: Vec<&str> = EXAMPLE
                .lines()
                .filter(|line| line.starts_with("hot_xpub") || line.starts_with("backup_xpub"))
                .collect();
            format!(
                "{EXAMPLE}\n[chains.dash]\nkind = \"dash\"\nnetwork = \"dash-regtest\"\n{}\n{}\n{extra}",
                xpubs[0], xpubs[1]
            )
        };
        let error = load_text(&dash("")).expect_err("must fail").to_string();
        assert!(error.contains("chains.dash.rpc_urls"), "{error}");
        let with_user = "rpc_urls = [\"http://127.0.0.1:19998\"]\nrpc_user = \"u\"\n\
                         rpc_password = \"p\"\n";
        let config = load_text(&dash(with_user)).expect("dash with a node is valid");
        assert_eq!(
            config.chains["dash"]
                .node_clients("dash")
                .expect("client")
                .len(),
            1
        );

        let text: String = EXAMPLE
            .lines()
            .filter(|line| !line.starts_with("rpc_"))
            .map(|line| format!("{line}\n"))
            .collect();
        let config = load_text(&text).expect("bitcoin without a node is valid");
        assert!(config.chains["bitcoin"].rpc_urls.is_empty());

        let text = EXAMPLE.replace(
            "rpc_cookie_file = \"/var/lib/bitcoind/.cookie\"",
            "# no credentials",
        );
        let error = load_text(&text).expect_err("must fail").to_string();
        assert!(error.contains("chains.bitcoin.rpc_user"), "{error}");
        let error = load_text(&dash("rpc_urls = [\"http://h:1\"]\nrpc_user = \"u\"\n"))
            .expect_err("must fail")
            .to_string();
        assert!(error.contains("chains.dash.rpc_password"), "{error}");
        let text = EXAMPLE.replace("http://127.0.0.1:8332", "ftp://127.0.0.1:8332");
        let error = load_text(&text).expect_err("must fail").to_string();
        assert!(error.contains("chains.bitcoin.rpc_urls[0]"), "{error}");
        let text = EXAMPLE.replace(
            "chain_id = 1\n",
            "chain_id = 1\nrpc_urls = [\"http://127.0.0.1:8545\"]\n",
        );
        let error = load_text(&text).expect_err("must fail").to_string();
        assert!(error.contains("chains.ethereum.rpc_urls"), "{error}");
    }
}
