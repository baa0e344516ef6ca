//! `devnet-tool`: the chain-side steps of `scripts/devnet` (deploy a test ERC-20, send ETH
//! and tokens, mine blocks) and waiting for the exchange's balances, so the script needs
//! no `cast` or `jq`.
//!
//! ```text
//! devnet-tool --rpc http://127.0.0.1:28545 deploy-erc20 --name "Test Token" --symbol TST --supply 1000000
//! devnet-tool --rpc ... send-eth --to 0x... --amount 1.5
//! devnet-tool --rpc ... send-erc20 --token 0x... --to 0x... --amount 250
//! devnet-tool --rpc ... mine --blocks 12
//! devnet-tool --rpc ... height
//! devnet-tool wait-balances --exchange-bin target/debug/coinhub-exchange --config x.toml \
//!     --member alice --expect ETH=1.5 --expect TST=250 --timeout-s 120
//! ```
//!
//! Amounts are decimals in whole units (18 decimals); transactions are signed with anvil's
//! account 0 unless `--key` says otherwise.

use std::time::Duration;

use alloy::primitives::{Address, B256};
use anyhow::Context;
use clap::{Parser, Subcommand};
use coinhub_tests::anvil::{ANVIL_KEY_0, ChainClient};
use coinhub_tests::exchange::{balances_equal, parse_balances_json};
use coinhub_tests::stack::to_base_units;
use coinhub_tests::{deploy_erc20, wait_until};

/// Decimals of every amount this tool handles (ETH and the test token).
const DECIMALS: u8 = 18;

#[derive(Parser)]
#[command(
    about = "Devnet helper: deploy a test ERC-20, send ETH and tokens, mine, wait for balances"
)]
struct Cli {
    /// The node's JSON-RPC URL.
    #[arg(long, env = "DEVNET_RPC_URL", default_value = "http://127.0.0.1:28545")]
    rpc: String,
    /// Signing key (hex); default: anvil's account 0.
    #[arg(long, env = "DEVNET_KEY", default_value = ANVIL_KEY_0, hide_default_value = true)]
    key: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Deploys OpenZeppelin's ERC20PresetFixedSupply (18 decimals) and prints its address.
    DeployErc20(DeployArgs),
    /// Sends ETH and prints the transaction hash.
    SendEth {
        /// Recipient.
        #[arg(long)]
        to: Address,
        /// Amount in ETH, e.g. 1.5.
        #[arg(long)]
        amount: String,
    },
    /// Sends ERC-20 tokens and prints the transaction hash.
    SendErc20 {
        /// The token contract.
        #[arg(long)]
        token: Address,
        /// Recipient.
        #[arg(long)]
        to: Address,
        /// Amount in whole tokens, e.g. 250.
        #[arg(long)]
        amount: String,
    },
    /// Prints the node's best height (fails while the node is unreachable).
    Height,
    /// Mines blocks and prints the new height.
    Mine {
        /// How many.
        #[arg(long)]
        blocks: u64,
    },
    /// Waits until `coinhub-exchange balances --member M --json` shows exactly the
    /// expected amounts.
    WaitBalances {
        /// Path of the coinhub-exchange binary.
        #[arg(long)]
        exchange_bin: String,
        /// The exchange's config file.
        #[arg(long)]
        config: String,
        /// The member.
        #[arg(long)]
        member: String,
        /// `SYMBOL=AMOUNT` in whole units (18 decimals); repeat per asset.
        #[arg(long = "expect", required = true)]
        expect: Vec<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
}

#[derive(clap::Args)]
struct DeployArgs {
    /// Token name.
    #[arg(long, default_value = "Test Token")]
    name: String,
    /// Token symbol.
    #[arg(long, default_value = "TST")]
    symbol: String,
    /// Supply in whole tokens, minted to the deployer.
    #[arg(long, default_value = "1000000")]
    supply: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::WaitBalances {
            exchange_bin,
            config,
            member,
            expect,
            timeout_s,
        } => {
            wait_balances(
                &exchange_bin,
                &config,
                &member,
                &expect,
                Duration::from_secs(timeout_s),
            )
            .await
        }
        command => {
            let key: B256 = cli.key.parse().context("--key is not a 32-byte hex key")?;
            let chain = ChainClient::connect(&cli.rpc, &[key])?;
            chain_command(&chain, command).await
        }
    }
}

async fn chain_command(chain: &ChainClient, command: Command) -> anyhow::Result<()> {
    match command {
        Command::DeployErc20(args) => {
            let supply = to_base_units(&args.supply, DECIMALS);
            let token = deploy_erc20(
                chain.provider(),
                &args.name,
                &args.symbol,
                supply,
                chain.account(0),
            )
            .await?;
            println!("{}", token.to_checksum(None));
        }
        Command::SendEth { to, amount } => {
            let receipt = chain
                .send_eth(0, to, to_base_units(&amount, DECIMALS))
                .await?;
            println!("{}", receipt.transaction_hash);
        }
        Command::SendErc20 { token, to, amount } => {
            let receipt = chain
                .send_erc20(token, 0, to, to_base_units(&amount, DECIMALS))
                .await?;
            println!("{}", receipt.transaction_hash);
        }
        Command::Height => println!("{}", chain.block_number().await?),
        Command::Mine { blocks } => {
            chain.mine(blocks).await?;
            println!("{}", chain.block_number().await?);
        }
        Command::WaitBalances { .. } => unreachable!("handled in main"),
    }
    Ok(())
}

async fn wait_balances(
    exchange_bin: &str,
    config: &str,
    member: &str,
    expect: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut expected = Vec::new();
    for item in expect {
        let (asset, amount) = item
            .split_once('=')
            .with_context(|| format!("--expect {item}: want SYMBOL=AMOUNT"))?;
        expected.push((
            asset.to_owned(),
            to_base_units(amount, DECIMALS).to_string(),
        ));
    }
    let expected: Vec<(&str, &str)> = expected
        .iter()
        .map(|(a, v)| (a.as_str(), v.as_str()))
        .collect();
    let last = std::sync::Mutex::new(String::new());
    let outcome = wait_until(
        &format!("{member}'s balances are {expected:?}"),
        timeout,
        Duration::from_secs(1),
        || {
            let command = tokio::process::Command::new(exchange_bin)
                .args(["--config", config, "balances", "--member", member, "--json"])
                .output();
            let last = &last;
            let expected = &expected;
            async move {
                let output = command.await?;
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                *last.lock().expect("not poisoned") = text.clone();
                anyhow::ensure!(
                    output.status.success(),
                    "coinhub-exchange balances failed: {text}"
                );
                let balances = parse_balances_json(&String::from_utf8_lossy(&output.stdout))?
                    .into_iter()
                    .map(|b| (b.asset, b.available))
                    .collect();
                Ok(balances_equal(&balances, expected).then_some(()))
            }
        },
    )
    .await;
    outcome.with_context(|| {
        format!(
            "last output of coinhub-exchange balances:\n{}",
            last.lock().expect("not poisoned")
        )
    })
}
