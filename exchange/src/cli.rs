//! The command line of the `coinhub-exchange` binary and the formatting of its output.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use coinhub_events::MemberId;
use serde::Serialize;

use crate::journal::Balance;

/// coinhub-exchange: the exchange's ledger, credited from coinhubd's deposit events.
#[derive(Debug, Parser)]
#[command(name = "coinhub-exchange", version, about)]
pub struct Cli {
    /// TOML configuration file; `COINHUB_EXCHANGE__SECTION__KEY` variables override it.
    #[arg(
        long,
        global = true,
        env = "COINHUB_EXCHANGE_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Write logs as JSON lines (for production log shippers). Filter with `RUST_LOG`.
    #[arg(long, global = true, env = "COINHUB_EXCHANGE_LOG_JSON")]
    pub log_json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending database migrations and exit.
    Migrate,
    /// Migrate, then consume deposit events until SIGINT or SIGTERM.
    Run,
    /// Print balances: one line per asset and account kind, base units and whole units.
    Balances(BalancesArgs),
}

/// `balances` options.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("owner").required(true).args(["member", "platform"]))]
pub struct BalancesArgs {
    /// The member whose accounts to print.
    #[arg(long, value_parser = parse_member)]
    pub member: Option<MemberId>,
    /// Print the platform's accounts (hot wallets, fee revenue) instead.
    #[arg(long)]
    pub platform: bool,
    /// Print JSON (one object) instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_member(value: &str) -> Result<MemberId, String> {
    value.parse()
}

/// One balance line of `balances --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalanceJson {
    /// Asset symbol, e.g. `"ETH"`.
    pub asset: String,
    /// Account kind, e.g. `"available"`.
    pub kind: String,
    /// Balance in base units, decimal digits (a string: may exceed 2^64).
    pub base_units: String,
    /// The asset's decimals.
    pub decimals: u8,
    /// Balance in whole units, exact, e.g. `"1.5"`.
    pub amount: String,
}

/// The object printed by `balances --json`: `{"owner": "alice" | "platform", "balances": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalancesJson {
    /// The member id, or `"platform"` for `--platform`.
    pub owner: String,
    /// One item per account.
    pub balances: Vec<BalanceJson>,
}

/// Text lines, e.g. `ETH available 1500000000000000000 (1.5)`.
pub fn balances_text(balances: &[Balance]) -> String {
    balances
        .iter()
        .map(|b| {
            format!(
                "{} {} {} ({})\n",
                b.account.asset(),
                b.account.kind(),
                b.amount,
                b.decimal_amount()
            )
        })
        .collect()
}

/// The `--json` object for `owner`.
pub fn balances_json(owner: &str, balances: &[Balance]) -> BalancesJson {
    BalancesJson {
        owner: owner.to_owned(),
        balances: balances
            .iter()
            .map(|b| BalanceJson {
                asset: b.account.asset().to_string(),
                kind: b.account.kind().to_string(),
                base_units: b.amount.to_string(),
                decimals: b.decimals,
                amount: b.decimal_amount(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::AccountKey;

    #[test]
    fn text_shows_base_units_and_decimals() {
        let balance = Balance {
            account: AccountKey::available(
                "alice".parse().expect("member"),
                "ETH".parse().expect("asset"),
            ),
            decimals: 18,
            amount: "1500000000000000000".parse().expect("amount"),
        };
        assert_eq!(
            balances_text(std::slice::from_ref(&balance)),
            "ETH available 1500000000000000000 (1.5)\n"
        );
        let json = serde_json::to_value(balances_json("alice", &[balance])).expect("serializes");
        assert_eq!(json["balances"][0]["base_units"], "1500000000000000000");
        assert_eq!(json["balances"][0]["amount"], "1.5");
    }

    #[test]
    fn parses_commands() {
        let cli = Cli::try_parse_from([
            "coinhub-exchange",
            "--config",
            "x.toml",
            "balances",
            "--member",
            "bob",
            "--json",
        ])
        .expect("parses");
        assert!(matches!(
            cli.command,
            Command::Balances(BalancesArgs { json: true, .. })
        ));
        assert!(Cli::try_parse_from(["coinhub-exchange", "balances"]).is_err());
        assert!(Cli::try_parse_from(["coinhub-exchange", "balances", "--member", "a b"]).is_err());
    }
}
