//! `coinhub`: the admin CLI of coinhubd (talks to its admin API).

use clap::{Parser, Subcommand};
use coinhub_daemon::client::AdminClient;
use coinhub_events::BaseUnits;
use secrecy::SecretString;
use serde_json::Value;

#[derive(Parser)]
#[command(name = "coinhub", about = "Admin CLI of coinhubd", version)]
struct Cli {
    /// Base URL of coinhubd's admin API.
    #[arg(long, env = "COINHUB_API_URL", default_value = "http://127.0.0.1:8780")]
    api: String,
    /// Admin bearer token (`[admin] token` of coinhubd).
    #[arg(long, env = "COINHUB_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chains: node height, scanned height, lag, node reachability, last error.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Deposit addresses.
    Address {
        #[command(subcommand)]
        command: AddressCommand,
    },
    /// Deposits.
    Deposits {
        #[command(subcommand)]
        command: DepositsCommand,
    },
    /// Withdrawals.
    Withdrawals {
        #[command(subcommand)]
        command: WithdrawalsCommand,
    },
}

#[derive(Subcommand)]
enum WithdrawalsCommand {
    /// Lists withdrawals, newest first.
    List {
        /// Only this member's.
        #[arg(long)]
        member: Option<String>,
        /// Only this status (requested, signed, broadcast, confirmed, failed).
        #[arg(long)]
        status: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one withdrawal with its signed transactions (JSON).
    Show {
        /// The withdrawal id (UUID).
        id: String,
    },
    /// Cancels a withdrawal that is not signed yet; the exchange unlocks the member's funds.
    Cancel {
        /// The withdrawal id (UUID).
        id: String,
        /// Why (stored with the withdrawal and sent in `withdrawal.failed`).
        #[arg(long)]
        reason: String,
        /// Who cancels it (default: $USER).
        #[arg(long, env = "USER", default_value = "admin")]
        operator: String,
    },
}

#[derive(Subcommand)]
enum AddressCommand {
    /// Prints the member's deposit address on the chain (the same one every time).
    New {
        /// Member id.
        #[arg(long)]
        member: String,
        /// Configured chain name.
        #[arg(long)]
        chain: String,
    },
}

#[derive(Subcommand)]
enum DepositsCommand {
    /// Lists deposits, newest first.
    List {
        /// Only this member's.
        #[arg(long)]
        member: Option<String>,
        /// Only this chain's.
        #[arg(long)]
        chain: Option<String>,
        /// Only this status (detected, confirmed, orphaned, ignored).
        #[arg(long)]
        status: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("coinhub: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = AdminClient::new(&cli.api, SecretString::from(cli.token))?;
    match cli.command {
        Command::Status { json } => {
            let status = client.status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
        }
        Command::Address {
            command: AddressCommand::New { member, chain },
        } => {
            let address = client.new_address(&member, &chain).await?;
            println!("{}", address["address"].as_str().unwrap_or_default());
        }
        Command::Deposits {
            command:
                DepositsCommand::List {
                    member,
                    chain,
                    status,
                    json,
                },
        } => {
            let deposits = client
                .deposits(member.as_deref(), chain.as_deref(), status.as_deref())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&deposits)?);
            } else {
                print_deposits(&deposits);
            }
        }
        Command::Withdrawals { command } => withdrawals(&client, command).await?,
    }
    Ok(())
}

async fn withdrawals(client: &AdminClient, command: WithdrawalsCommand) -> anyhow::Result<()> {
    match command {
        WithdrawalsCommand::List {
            member,
            status,
            json,
        } => {
            let rows = client
                .withdrawals(member.as_deref(), status.as_deref())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_withdrawals(&rows);
            }
        }
        WithdrawalsCommand::Show { id } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&client.withdrawal(&id).await?)?
            );
        }
        WithdrawalsCommand::Cancel {
            id,
            reason,
            operator,
        } => {
            let row = client.cancel_withdrawal(&id, &reason, &operator).await?;
            println!(
                "{} {}: {}",
                text(&row["withdrawal_id"]),
                text(&row["status"]),
                text(&row["failure_reason"])
            );
        }
    }
    Ok(())
}

fn print_withdrawals(rows: &[Value]) {
    println!(
        "{:<36} {:<10} {:<6} {:<14} {:>28}  destination / reason",
        "id", "status", "asset", "member", "amount"
    );
    for row in rows {
        let decimals = row["decimals"]
            .as_u64()
            .and_then(|d| u8::try_from(d).ok())
            .unwrap_or(0);
        let amount = row["amount"]
            .as_str()
            .and_then(|a| a.parse::<BaseUnits>().ok())
            .map_or_else(
                || text(&row["amount_text"]),
                |a| a.to_decimal_string(decimals),
            );
        let tail = match row["failure_reason"].as_str() {
            Some(reason) => reason.to_owned(),
            None => text(&row["destination"]),
        };
        println!(
            "{:<36} {:<10} {:<6} {:<14} {:>28}  {}",
            text(&row["withdrawal_id"]),
            text(&row["status"]),
            text(&row["asset"]),
            text(&row["member_id"]),
            amount,
            tail,
        );
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_status(status: &Value) {
    println!(
        "{:<12} {:>12} {:>12} {:>6} {:<5} last error",
        "chain", "node", "scanned", "lag", "node"
    );
    for chain in status["chains"].as_array().into_iter().flatten() {
        let reachable = if chain["node_reachable"].as_bool() == Some(true) {
            "up"
        } else {
            "DOWN"
        };
        println!(
            "{:<12} {:>12} {:>12} {:>6} {:<5} {}",
            text(&chain["chain"]),
            text(&chain["node_height"]),
            text(&chain["scanned_height"]),
            text(&chain["lag_blocks"]),
            reachable,
            text(&chain["last_error"]),
        );
    }
}

fn print_deposits(deposits: &[Value]) {
    println!(
        "{:<10} {:<6} {:<14} {:>28} {:>8} {:>6}  txid:index",
        "status", "asset", "member", "amount", "height", "conf"
    );
    for deposit in deposits {
        let amount = deposit["amount"]
            .as_str()
            .and_then(|a| a.parse::<BaseUnits>().ok());
        let decimals = deposit["decimals"]
            .as_u64()
            .and_then(|d| u8::try_from(d).ok())
            .unwrap_or(0);
        let amount = amount.map_or_else(|| "?".to_owned(), |a| a.to_decimal_string(decimals));
        println!(
            "{:<10} {:<6} {:<14} {:>28} {:>8} {:>6}  {}:{}",
            text(&deposit["status"]),
            text(&deposit["asset"]),
            text(&deposit["member"]),
            amount,
            text(&deposit["block_height"]),
            text(&deposit["confirmations"]),
            text(&deposit["txid"]),
            text(&deposit["index"]),
        );
    }
}
