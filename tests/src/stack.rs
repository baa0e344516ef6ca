//! The whole system on real services for one test: anvil with a test ERC-20, an OpenBao dev
//! server with the transit key, two fresh databases, a RabbitMQ vhost, `coinhubd` (after
//! `init`) and `coinhub-exchange`.

use coinhub_custody::derivation::MasterKey;
use coinhub_custody::mnemonic::Mnemonic;
use coinhub_custody::utxo::{Bip48ScriptType, UtxoNetwork};
use std::collections::BTreeMap;
use std::time::Duration;

use alloy::primitives::{Address, U256};

use crate::amqp::Amqp;
use crate::anvil::{ANVIL_CHAIN_ID, AnvilNode, ChainClient};
use crate::coinhubd::{
    AdminSection, AmqpSection, AssetSection, ChainSection, Coinhubd, CoinhubdConfig,
    CosignerLinkSection, DatabaseSection, VaultSection, WithdrawalsSection,
};
use crate::cosigner::{
    ApiSection, Cosigner, CosignerAssetSection, CosignerChainSection, CosignerConfig, HMAC_SECRET,
    KeyB,
};
use crate::database::Database;
use crate::env::TestEnv;
use crate::erc20::deploy_erc20;
use crate::exchange::{ExchangeConfig, ExchangeProcess, exchange_vault};
use crate::paths;
use crate::safe::deploy_safe;
use crate::vhost::Vhost;
use crate::wait::free_port;
use anyhow::Context;
use bitcoin::bip32::Xpub;
use coinhub_custody::derivation::{self, EXECUTOR_BRANCH, SAFE_OWNER_BRANCH};
use coinhub_custody::testing::{BaoDevServer, TRANSIT_KEY_A, TRANSIT_MOUNT};

/// Name of the transit key wrapping key B's seed (the cosigner's).
pub const TRANSIT_KEY_B: &str = "coinhub-b";
use secrecy::ExposeSecret;

/// The chain's name in the tests' configuration.
pub const CHAIN: &str = "ethereum";
/// Symbol of the native asset.
pub const ETH: &str = "ETH";
/// Symbol of the test ERC-20.
pub const TOKEN: &str = "TST";
/// Decimals of both assets.
pub const DECIMALS: u8 = 18;
/// Name of the transit key wrapping key A's seed (created by [`BaoDevServer::start`]).
pub const TRANSIT_KEY: &str = TRANSIT_KEY_A;
/// Admin API token of the tests.
pub const ADMIN_TOKEN: &str = "e2e-admin-token";

/// `amount` (a decimal like `"1.5"`) in base units with `decimals`.
///
/// Panics on more fractional digits than `decimals` or a non-number (test constants only).
pub fn to_base_units(amount: &str, decimals: u8) -> U256 {
    let (whole, fraction) = amount.split_once('.').unwrap_or((amount, ""));
    let decimals = usize::from(decimals);
    assert!(
        fraction.len() <= decimals,
        "{amount} has more than {decimals} decimals"
    );
    let digits = format!("{whole}{fraction:0<decimals$}");
    U256::from_str_radix(&digits, 10).expect("a decimal amount")
}

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// `confirmations_min` of ETH.
    pub eth_confirmations_min: u32,
    /// `confirmations_min` of the test token.
    pub token_confirmations_min: u32,
    /// `reorg_depth_max` of the chain.
    pub reorg_depth_max: u32,
    /// Deploy the test ERC-20 and configure it as an asset.
    pub with_token: bool,
    /// Start `coinhub-exchange`.
    pub with_exchange: bool,
    /// RPC timeout of coinhubd's watcher, in milliseconds.
    pub rpc_timeout_ms: u64,
    /// A UTXO chain to follow as well.
    pub utxo: Option<UtxoChainOptions>,
    /// Start a cosigner (key B) and let coinhubd pay withdrawals (with a Safe on anvil).
    pub cosigner: Option<CosignerOptions>,
}

/// The cosigner's policy per asset and the withdrawal engines' settings.
#[derive(Debug, Clone)]
pub struct CosignerOptions {
    /// Policy by asset symbol (upper case); assets not listed get [`AssetLimits::generous`].
    pub limits: BTreeMap<String, AssetLimits>,
    /// EVM: seconds before a stuck transaction is replaced.
    pub replace_after_secs: u64,
    /// UTXO: blocks before a BIP125 replacement.
    pub rbf_after_blocks: u32,
}

impl Default for CosignerOptions {
    fn default() -> Self {
        Self {
            limits: BTreeMap::new(),
            replace_after_secs: 600,
            rbf_after_blocks: 1_000,
        }
    }
}

/// One asset's cosigner policy, in base units.
#[derive(Debug, Clone)]
pub struct AssetLimits {
    /// Largest single withdrawal.
    pub max_per_withdrawal: U256,
    /// Largest rolling 24 h total.
    pub max_24h: U256,
    /// Largest fee of one spend.
    pub fee_cap: U256,
    /// Denied destinations.
    pub deny: Vec<String>,
}

impl AssetLimits {
    /// Limits no test withdrawal reaches (fee cap 1,000,000 base units).
    pub fn generous() -> Self {
        Self {
            max_per_withdrawal: U256::from(10u8).pow(U256::from(30u8)),
            max_24h: U256::from(10u8).pow(U256::from(31u8)),
            fee_cap: U256::from(1_000_000u64),
            deny: Vec::new(),
        }
    }
}

/// The withdrawal side of a stack: the cosigner, its database, and the Safe.
pub struct CosignerParts {
    /// `coinhubd cosigner run`.
    pub process: Cosigner,
    /// Its own database.
    pub database: Database,
    /// The hot wallet Safe on anvil.
    pub safe: Address,
    /// The executor EOA (key A's `m/44'/60'/0'/2/0`), funded with ETH for gas.
    pub executor: Address,
    /// Key B's public keys.
    pub key_b: KeyB,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            eth_confirmations_min: 3,
            token_confirmations_min: 5,
            reorg_depth_max: 32,
            with_token: true,
            with_exchange: true,
            rpc_timeout_ms: 2_000,
            utxo: None,
            cosigner: None,
        }
    }
}

/// Public BIP39 test vector standing in for the cosigner's key B (never for real funds).
pub const KEY_B_WORDS: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
/// Public BIP39 test vector standing in for the offline key C (never for real funds).
pub const KEY_C_WORDS: &str =
    "legal winner thank year wave sausage worth useful legal winner thank yellow";

/// The BIP48 account xpub, with origin, of test mnemonic `words` on `network` (`/2'` keys,
/// as for both the Bitcoin `wsh` and the Dash `sh` wallet).
pub fn test_account_xpub(words: &str, network: UtxoNetwork) -> anyhow::Result<String> {
    let master = MasterKey::from_seed(&Mnemonic::parse(words)?.to_seed())?;
    Ok(master
        .bip48_account_xpub(network, Bip48ScriptType::P2wsh)?
        .to_string())
}

impl UtxoChainOptions {
    /// Chain `chain` following a regtest node double at `rpc_url` on `network` (Bitcoin or
    /// Dash regtest), keys B and C from [`KEY_B_WORDS`] and [`KEY_C_WORDS`], asset `asset`
    /// with 8 decimals and `confirmations_min`.
    pub fn regtest_double(
        chain: &str,
        network: UtxoNetwork,
        rpc: (&str, &str, &str),
        asset: &str,
        confirmations_min: u32,
    ) -> anyhow::Result<Self> {
        let (rpc_url, rpc_user, rpc_password) = rpc;
        Ok(Self {
            chain: chain.to_owned(),
            kind: if network.is_dash() { "dash" } else { "bitcoin" }.to_owned(),
            network: network.name().to_owned(),
            rpc_url: rpc_url.to_owned(),
            rpc_user: rpc_user.to_owned(),
            rpc_password: rpc_password.to_owned(),
            cosigner_xpub: test_account_xpub(KEY_B_WORDS, network)?,
            backup_xpub: test_account_xpub(KEY_C_WORDS, network)?,
            asset: asset.to_owned(),
            confirmations_min,
        })
    }
}

/// A Bitcoin or Dash chain (usually the regtest node double) to configure beside the EVM one.
#[derive(Debug, Clone)]
pub struct UtxoChainOptions {
    /// Chain name, e.g. `"bitcoin"`.
    pub chain: String,
    /// `"bitcoin"` or `"dash"`.
    pub kind: String,
    /// Network name, e.g. `"bitcoin-regtest"`.
    pub network: String,
    /// Node RPC URL.
    pub rpc_url: String,
    /// RPC user.
    pub rpc_user: String,
    /// RPC password.
    pub rpc_password: String,
    /// Key B's BIP48 account xpub with origin.
    pub cosigner_xpub: String,
    /// Key C's BIP48 account xpub with origin.
    pub backup_xpub: String,
    /// Asset symbol, e.g. `"BTC"` (8 decimals).
    pub asset: String,
    /// `confirmations_min` of the asset.
    pub confirmations_min: u32,
}

/// Everything one end-to-end test runs against. Dropping it stops the processes first,
/// then the nodes, then removes the databases and the vhost.
pub struct Stack {
    /// `coinhubd run`.
    pub coinhubd: Coinhubd,
    /// `coinhub-exchange run`, if started.
    pub exchange: Option<ExchangeProcess>,
    /// Client of the node, signing with anvil's funded accounts.
    pub chain: ChainClient,
    /// The node.
    pub anvil: AnvilNode,
    /// OpenBao.
    pub bao: BaoDevServer,
    /// coinhubd's database.
    pub daemon_db: Database,
    /// The exchange's database.
    pub exchange_db: Database,
    /// The vhost both use.
    pub vhost: Vhost,
    /// The test ERC-20's address, if deployed.
    pub token: Option<Address>,
    /// The account xpub `coinhubd init` printed.
    pub xpub: String,
    /// The cosigner, when started.
    pub cosigner: Option<CosignerParts>,
    /// The options it was started with.
    pub options: StackOptions,
    /// The test's folder and logs.
    pub env: TestEnv,
}

impl Stack {
    /// Starts everything and waits until each part is ready.
    pub async fn start(env: &TestEnv, options: StackOptions) -> anyhow::Result<Self> {
        let vhost = Vhost::create()?;
        let daemon_db = Database::create("coinhub_e2e").await?;
        let exchange_db = Database::create("coinhub_exchange_e2e").await?;
        let anvil = AnvilNode::start(env).await?;
        let chain = anvil.client()?;
        let token = if options.with_token {
            let supply = to_base_units("1000000", DECIMALS);
            Some(
                deploy_erc20(
                    chain.provider(),
                    "Test Token",
                    TOKEN,
                    supply,
                    chain.account(0),
                )
                .await?,
            )
        } else {
            None
        };
        let bao = BaoDevServer::start().await?;

        let config = coinhubd_config(
            &options,
            &daemon_db.url(),
            &vhost.amqp_url(),
            &anvil.rpc_url(),
            &bao,
            token,
        )?;
        let key_a = Coinhubd::init_keys(env, &config).await?;
        let xpub = key_a.evm_account_xpub.clone();
        let (config, cosigner) = match &options.cosigner {
            Some(cosigner_options) => {
                let (config, parts) = start_cosigner(
                    env,
                    &options,
                    cosigner_options,
                    config,
                    &key_a,
                    &bao,
                    &chain,
                    token,
                )
                .await?;
                (config, Some(parts))
            }
            None => (config, None),
        };
        let exchange = if options.with_exchange {
            Some(
                ExchangeProcess::start(
                    env,
                    &ExchangeConfig::new(
                        &exchange_db.url(),
                        &vhost.amqp_url(),
                        exchange_vault(&bao).await?,
                    ),
                )
                .await?,
            )
        } else {
            None
        };
        let coinhubd = Coinhubd::start(env, config).await?;
        Ok(Self {
            coinhubd,
            exchange,
            chain,
            anvil,
            bao,
            daemon_db,
            exchange_db,
            vhost,
            token,
            xpub,
            cosigner,
            options,
            env: env.clone(),
        })
    }

    /// The cosigner parts (panics if the stack was started without a cosigner).
    pub fn cosigner(&self) -> &CosignerParts {
        self.cosigner
            .as_ref()
            .expect("stack started without a cosigner")
    }

    /// The exchange process (panics if the stack was started without it).
    pub fn exchange(&self) -> &ExchangeProcess {
        self.exchange
            .as_ref()
            .expect("stack started without coinhub-exchange")
    }

    /// The exchange process, mutably.
    pub fn exchange_mut(&mut self) -> &mut ExchangeProcess {
        self.exchange
            .as_mut()
            .expect("stack started without coinhub-exchange")
    }

    /// The test ERC-20 (panics if the stack was started without it).
    pub fn token(&self) -> Address {
        self.token.expect("stack started without the test token")
    }

    /// `member`'s deposit address on [`CHAIN`], from the admin API.
    pub async fn deposit_address(&self, member: &str) -> anyhow::Result<Address> {
        let answer = self.coinhubd.api().new_address(member, CHAIN).await?;
        anyhow::ensure!(
            answer.member == member && answer.chain == CHAIN,
            "unexpected answer {answer:?}"
        );
        Ok(answer.address.parse()?)
    }

    /// A connection to the test's vhost.
    pub async fn amqp(&self) -> anyhow::Result<Amqp> {
        Amqp::connect(&self.vhost.amqp_url()).await
    }

    /// Waits until `member`'s exchange balances are exactly `expected` (asset → base
    /// units).
    pub async fn wait_balances(
        &self,
        member: &str,
        expected: &[(&str, U256)],
    ) -> anyhow::Result<()> {
        let expected: Vec<(&str, String)> =
            expected.iter().map(|(a, v)| (*a, v.to_string())).collect();
        let expected: Vec<(&str, &str)> = expected.iter().map(|(a, v)| (*a, v.as_str())).collect();
        self.exchange()
            .wait_balances(member, &expected, Duration::from_secs(90))
            .await
    }

    /// Mines `blocks` blocks and waits until coinhubd's watcher has connected the new tip.
    pub async fn mine_and_scan(&self, blocks: u64) -> anyhow::Result<u64> {
        self.chain.mine(blocks).await?;
        let tip = self.chain.block_number().await?;
        self.coinhubd
            .api()
            .wait_scanned(CHAIN, tip, Duration::from_secs(60))
            .await?;
        Ok(tip)
    }
}

/// coinhubd's config for these services (the admin API on a free port).
pub fn coinhubd_config(
    options: &StackOptions,
    database_url: &str,
    amqp_url: &str,
    rpc_url: &str,
    bao: &BaoDevServer,
    token: Option<Address>,
) -> anyhow::Result<CoinhubdConfig> {
    let mut chains = BTreeMap::new();
    chains.insert(
        CHAIN.to_owned(),
        ChainSection {
            kind: "evm".to_owned(),
            rpc_urls: vec![rpc_url.to_owned()],
            chain_id: Some(ANVIL_CHAIN_ID),
            reorg_depth_max: options.reorg_depth_max,
            poll_interval_ms: 100,
            start_height: Some(0),
            rpc_timeout_ms: Some(options.rpc_timeout_ms),
            ..ChainSection::default()
        },
    );
    if let Some(utxo) = &options.utxo {
        chains.insert(
            utxo.chain.clone(),
            ChainSection {
                kind: utxo.kind.clone(),
                rpc_urls: vec![utxo.rpc_url.clone()],
                network: Some(utxo.network.clone()),
                rpc_user: Some(utxo.rpc_user.clone()),
                rpc_password: Some(utxo.rpc_password.clone()),
                cosigner_xpub: Some(utxo.cosigner_xpub.clone()),
                backup_xpub: Some(utxo.backup_xpub.clone()),
                reorg_depth_max: options.reorg_depth_max,
                poll_interval_ms: 100,
                start_height: Some(0),
                rpc_timeout_ms: Some(options.rpc_timeout_ms),
                ..ChainSection::default()
            },
        );
    }
    let mut assets = BTreeMap::new();
    assets.insert(
        ETH.to_lowercase(),
        AssetSection {
            chain: CHAIN.to_owned(),
            contract: None,
            decimals: DECIMALS,
            confirmations_min: options.eth_confirmations_min,
            deposit_min: "1000".to_owned(),
            withdrawal_min: None,
        },
    );
    if let Some(utxo) = &options.utxo {
        assets.insert(
            utxo.asset.to_lowercase(),
            AssetSection {
                chain: utxo.chain.clone(),
                contract: None,
                decimals: 8,
                confirmations_min: utxo.confirmations_min,
                deposit_min: "1000".to_owned(),
                withdrawal_min: None,
            },
        );
    }
    if let Some(token) = token {
        assets.insert(
            TOKEN.to_lowercase(),
            AssetSection {
                chain: CHAIN.to_owned(),
                contract: Some(token.to_checksum(None)),
                decimals: DECIMALS,
                confirmations_min: options.token_confirmations_min,
                deposit_min: "1000".to_owned(),
                withdrawal_min: None,
            },
        );
    }
    Ok(CoinhubdConfig {
        database: DatabaseSection {
            url: database_url.to_owned(),
        },
        amqp: AmqpSection {
            url: amqp_url.to_owned(),
        },
        vault: VaultSection {
            address: bao.address.clone(),
            token: bao.root_token.expose_secret().to_owned(),
            transit_mount: TRANSIT_MOUNT.to_owned(),
            transit_key: TRANSIT_KEY.to_owned(),
        },
        admin: AdminSection {
            listen: format!("127.0.0.1:{}", free_port()?),
            token: ADMIN_TOKEN.to_owned(),
        },
        chains,
        assets,
        cosigner: None,
    })
}

/// The Safe owner address (`account/1/0`) of an EVM account xpub.
pub fn safe_owner(evm_account_xpub: &str) -> anyhow::Result<Address> {
    let xpub: Xpub = evm_account_xpub.parse()?;
    Ok(derivation::evm_address_at(&xpub, SAFE_OWNER_BRANCH, 0)?)
}

/// Creates the cosigner's database and key B, deploys the 2-of-3 Safe (owners from keys A, B
/// and C) and funds the executor, starts the cosigner, and returns coinhubd's configuration
/// with `[cosigner]`, the Safe and key B's real xpub.
#[allow(clippy::too_many_arguments)]
async fn start_cosigner(
    env: &TestEnv,
    options: &StackOptions,
    cosigner_options: &CosignerOptions,
    mut config: CoinhubdConfig,
    key_a: &KeyB,
    bao: &BaoDevServer,
    chain: &ChainClient,
    token: Option<Address>,
) -> anyhow::Result<(CoinhubdConfig, CosignerParts)> {
    let database = Database::create("coinhub_cosigner_e2e").await?;
    bao.create_transit_key(TRANSIT_KEY_B).await?;
    // Each process gets a token that can use its own transit key only (deploy/openbao).
    let policy = |file: &str| {
        std::fs::read_to_string(paths::workspace_root().join("deploy/openbao").join(file))
    };
    let daemon_token = bao
        .create_token("coinhubd", &policy("coinhubd.hcl")?)
        .await?;
    let cosigner_token = bao
        .create_token("coinhub-cosigner", &policy("cosigner.hcl")?)
        .await?;
    config.vault.token = daemon_token.expose_secret().to_owned();

    let listen = format!("127.0.0.1:{}", free_port()?);
    let mut chains = BTreeMap::new();
    chains.insert(
        CHAIN.to_owned(),
        CosignerChainSection {
            kind: "evm".to_owned(),
            chain_id: Some(ANVIL_CHAIN_ID),
            // Replaced by the real Safe once key B exists (its owner is one of the Safe's).
            safe_address: Some(Address::repeat_byte(1).to_checksum(None)),
            ..CosignerChainSection::default()
        },
    );
    if let Some(utxo) = &options.utxo {
        let hot_xpub = key_a
            .bip48
            .get(&utxo.network)
            .with_context(|| format!("key a has no BIP48 xpub for {}", utxo.network))?;
        chains.insert(
            utxo.chain.clone(),
            CosignerChainSection {
                kind: utxo.kind.clone(),
                network: Some(utxo.network.clone()),
                hot_xpub: Some(hot_xpub.clone()),
                backup_xpub: Some(utxo.backup_xpub.clone()),
                // The same node as coinhubd's here; in production the cosigner's own.
                rpc_urls: vec![utxo.rpc_url.clone()],
                rpc_user: Some(utxo.rpc_user.clone()),
                rpc_password: Some(utxo.rpc_password.clone()),
                ..CosignerChainSection::default()
            },
        );
    }
    let mut assets = BTreeMap::new();
    for (symbol, asset) in &config.assets {
        let limits = cosigner_options
            .limits
            .get(&symbol.to_uppercase())
            .cloned()
            .unwrap_or_else(AssetLimits::generous);
        assets.insert(
            symbol.clone(),
            CosignerAssetSection {
                chain: asset.chain.clone(),
                contract: asset.contract.clone(),
                decimals: asset.decimals,
                max_per_withdrawal: limits.max_per_withdrawal.to_string(),
                max_24h: limits.max_24h.to_string(),
                fee_cap: limits.fee_cap.to_string(),
                deny: limits.deny.clone(),
                allow: None,
            },
        );
    }
    let mut cosigner_config = CosignerConfig {
        database: DatabaseSection {
            url: database.url(),
        },
        amqp: config.amqp.clone(),
        vault: VaultSection {
            address: bao.address.clone(),
            token: cosigner_token.expose_secret().to_owned(),
            transit_mount: TRANSIT_MOUNT.to_owned(),
            transit_key: TRANSIT_KEY_B.to_owned(),
        },
        api: ApiSection {
            listen,
            hmac_secret: HMAC_SECRET.to_owned(),
        },
        chains,
        assets,
    };
    let key_b = Cosigner::init(env, &cosigner_config).await?;

    let key_c = MasterKey::from_seed(&Mnemonic::parse(KEY_C_WORDS)?.to_seed())?
        .evm_account_xpub()?
        .to_string();
    let owners = [
        safe_owner(&key_a.evm_account_xpub)?,
        safe_owner(&key_b.evm_account_xpub)?,
        safe_owner(&key_c)?,
    ];
    let safe = deploy_safe(chain.provider(), owners).await?;
    let executor_xpub: Xpub = key_a.evm_account_xpub.parse()?;
    let executor = derivation::evm_address_at(&executor_xpub, EXECUTOR_BRANCH, 0)?;
    chain
        .send_eth(0, executor, to_base_units("10", DECIMALS))
        .await?;
    if let Some(section) = cosigner_config.chains.get_mut(CHAIN) {
        section.safe_address = Some(safe.to_checksum(None));
    }
    let process = Cosigner::start(env, &cosigner_config).await?;

    config.cosigner = Some(CosignerLinkSection {
        url: process.url().to_owned(),
        hmac_secret: HMAC_SECRET.to_owned(),
    });
    for (name, section) in &mut config.chains {
        let mut withdrawals = WithdrawalsSection {
            poll_interval_ms: Some(200),
            ..WithdrawalsSection::default()
        };
        if name == CHAIN {
            withdrawals.safe_address = Some(safe.to_checksum(None));
            withdrawals.replace_after_secs = Some(cosigner_options.replace_after_secs);
        } else if let Some(network) = &section.network {
            section.cosigner_xpub = key_b.bip48.get(network).cloned();
            withdrawals.rbf_after_blocks = Some(cosigner_options.rbf_after_blocks);
        }
        section.withdrawals = Some(withdrawals);
    }
    let _ = token;
    Ok((
        config,
        CosignerParts {
            process,
            database,
            safe,
            executor,
            key_b,
        },
    ))
}
