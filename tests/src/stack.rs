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
    DatabaseSection, VaultSection,
};
use crate::database::Database;
use crate::env::TestEnv;
use crate::erc20::deploy_erc20;
use crate::exchange::{ExchangeConfig, ExchangeProcess};
use crate::vhost::Vhost;
use crate::wait::free_port;
use coinhub_custody::testing::{BaoDevServer, TRANSIT_KEY_A, TRANSIT_MOUNT};
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
        let xpub = Coinhubd::init(env, &config).await?;
        let exchange = if options.with_exchange {
            Some(
                ExchangeProcess::start(
                    env,
                    &ExchangeConfig::new(&exchange_db.url(), &vhost.amqp_url()),
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
            options,
            env: env.clone(),
        })
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
    })
}
