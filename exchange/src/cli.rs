//! The command line of the `coinhub-exchange` binary and the formatting of its output.

use std::path::PathBuf;

use bigdecimal::num_bigint::{BigInt, Sign};
use clap::{Args, Parser, Subcommand};
use coinhub_events::{BaseUnits, MemberId};
use serde::Serialize;
use uuid::Uuid;

use crate::api::keys::{ApiKeyInfo, KeyId};
use crate::journal::{AuditFinding, AuditReport, Balance};
use crate::ledger::{AccountKind, AssetSymbol};
use crate::statement::{self, Statement};
use crate::trading::status::MarketStatus;
use crate::withdrawals::Withdrawal;

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
    /// Migrate, then consume deposit and withdrawal events and relay withdrawal requests
    /// until SIGINT or SIGTERM.
    Run,
    /// Print balances: one line per asset and account kind, base units and whole units.
    Balances(BalancesArgs),
    /// Print an account's journal entries, newest first, each with its transfer and the
    /// running balance after it.
    Statement(StatementArgs),
    /// Check the journal in one snapshot: every transfer sums to zero per asset and every
    /// account's balance is the sum of its entries. Exits non-zero if anything disagrees.
    Audit(AuditArgs),
    /// Lock a member's funds and request a withdrawal from coinhubd (sent by `run`).
    Withdraw(WithdrawArgs),
    /// List a member's withdrawals and their status.
    Withdrawals(WithdrawalsArgs),
    /// Create, revoke or list members' API keys (the HTTP API's HMAC keys).
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Per market: the last settled command, how far `orders`/`trades` and the
    /// `exchange.events` messages are behind it.
    TradingStatus(TradingStatusArgs),
}

/// `trading-status` options.
#[derive(Debug, Args)]
pub struct TradingStatusArgs {
    /// Print JSON (an array of [`crate::trading::status::MarketStatus`]) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `trading-status` as text: one line per market, e.g. `btc_usdt settled 1200 projected 1100
/// (3 batches behind, since 2026-12-07T05:00:00Z) unpublished 0 messages`.
pub fn trading_status_text(markets: &[MarketStatus]) -> String {
    markets
        .iter()
        .map(|m| {
            let at = m
                .projected_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| m.projected_at.to_string());
            format!(
                "{} settled {} projected {} ({} batches behind, since {at}) unpublished {} messages\n",
                m.market, m.settled_seq, m.projected_seq, m.unprojected_batches, m.unpublished_messages
            )
        })
        .collect()
}

/// `audit` options.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Print JSON ([`AuditJson`]) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `audit` as text: a line per disagreement (none when consistent), then what was checked,
/// e.g. `journal consistent: 12 transfers, 30 entries, 8 accounts checked`.
pub fn audit_text(report: &AuditReport) -> String {
    let mut text: String = report
        .findings
        .iter()
        .map(|finding| match finding {
            AuditFinding::Unbalanced {
                transfer_id,
                asset,
                sum,
            } => format!(
                "transfer {transfer_id} does not balance in {asset}: its entries sum to {sum} \
                 (debits minus credits, base units)\n"
            ),
            AuditFinding::BalanceDrift {
                account_id,
                account,
                cached,
                from_entries,
            } => format!(
                "account {account} (id {account_id}) has balance {cached}, its entries give \
                 {from_entries} (base units)\n"
            ),
        })
        .collect();
    let checked = format!(
        "{} transfers, {} entries, {} accounts checked",
        report.transfers, report.entries, report.accounts
    );
    text += &match report.findings.len() {
        0 => format!("journal consistent: {checked}\n"),
        n => format!("journal audit found {n} disagreement(s): {checked}\n"),
    };
    text
}

/// The `--json` object of `audit`.
#[derive(Debug, Serialize)]
pub struct AuditJson {
    /// True when nothing disagrees.
    pub consistent: bool,
    /// Transfers checked.
    pub transfers: i64,
    /// Entries summed.
    pub entries: i64,
    /// Accounts recomputed.
    pub accounts: i64,
    /// The disagreements.
    pub findings: Vec<AuditFindingJson>,
}

/// One disagreement of `audit --json`, tagged by `"finding"`; amounts are base units
/// (decimal digits, signed).
#[derive(Debug, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum AuditFindingJson {
    /// A transfer whose entries do not sum to zero in `asset`: `sum` is debits minus credits.
    Unbalanced {
        /// The transfer.
        transfer_id: Uuid,
        /// The asset.
        asset: String,
        /// Debits minus credits.
        sum: String,
    },
    /// An account whose balance is not the sum of its entries.
    BalanceDrift {
        /// The account's id.
        account_id: i64,
        /// The account, e.g. `member alice/BTC/available`.
        account: String,
        /// Its stored balance.
        balance: String,
        /// The balance its entries give.
        from_entries: String,
    },
}

/// The `--json` object of `audit`.
pub fn audit_json(report: &AuditReport) -> AuditJson {
    AuditJson {
        consistent: report.findings.is_empty(),
        transfers: report.transfers,
        entries: report.entries,
        accounts: report.accounts,
        findings: report
            .findings
            .iter()
            .map(|finding| match finding {
                AuditFinding::Unbalanced {
                    transfer_id,
                    asset,
                    sum,
                } => AuditFindingJson::Unbalanced {
                    transfer_id: *transfer_id,
                    asset: asset.clone(),
                    sum: sum.clone(),
                },
                AuditFinding::BalanceDrift {
                    account_id,
                    account,
                    cached,
                    from_entries,
                } => AuditFindingJson::BalanceDrift {
                    account_id: *account_id,
                    account: account.to_string(),
                    balance: cached.clone(),
                    from_entries: from_entries.clone(),
                },
            })
            .collect(),
    }
}

/// `api-key` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key for a member and print its id and secret. The secret is shown only
    /// this once; give it to the member over a secure channel.
    Create(ApiKeyCreateArgs),
    /// Revoke a key: requests signed with it are refused from now on.
    Revoke(ApiKeyRevokeArgs),
    /// List a member's keys (ids, labels, dates; never secrets).
    List(ApiKeyListArgs),
}

/// `api-key create` options.
#[derive(Debug, Args)]
pub struct ApiKeyCreateArgs {
    /// The member the key acts for.
    #[arg(long, value_parser = parse_member)]
    pub member: MemberId,
    /// A label for operators, e.g. `trading bot` (1-100 characters).
    #[arg(long)]
    pub label: Option<String>,
    /// Print JSON (`{"key_id":…,"member":…,"secret":…}`) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `api-key revoke` options.
#[derive(Debug, Args)]
pub struct ApiKeyRevokeArgs {
    /// The key id (`ck_…`).
    #[arg(long, value_parser = parse_key_id)]
    pub key_id: KeyId,
}

/// `api-key list` options.
#[derive(Debug, Args)]
pub struct ApiKeyListArgs {
    /// The member whose keys to print.
    #[arg(long, value_parser = parse_member)]
    pub member: MemberId,
    /// Print JSON (one object) instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_key_id(value: &str) -> Result<KeyId, String> {
    value.parse()
}

/// `withdraw` options. The amount is in base units; the asset's `withdraw_fee` is locked
/// on top of it.
#[derive(Debug, Args)]
pub struct WithdrawArgs {
    /// The member who withdraws.
    #[arg(long)]
    pub member: String,
    /// Asset symbol, e.g. `BTC` (case-insensitive).
    #[arg(long)]
    pub asset: String,
    /// What the destination receives, in base units (satoshi, wei, token units).
    #[arg(long, value_name = "BASE_UNITS")]
    pub amount: String,
    /// Where to pay (checked by coinhubd; a bad one comes back as `withdrawal.failed`).
    #[arg(long)]
    pub destination: String,
    /// The withdrawal's id (idempotency key): the same id again changes nothing. Default: a
    /// fresh UUID.
    #[arg(long)]
    pub id: Option<Uuid>,
    /// Print JSON (one object) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `withdrawals` options.
#[derive(Debug, Args)]
pub struct WithdrawalsArgs {
    /// The member whose withdrawals to print.
    #[arg(long, value_parser = parse_member)]
    pub member: MemberId,
    /// Print JSON (one object) instead of text.
    #[arg(long)]
    pub json: bool,
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

/// `statement` options: the account is (`--member` or `--platform`, `--asset`, `--kind`).
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("owner").required(true).args(["member", "platform"]))]
pub struct StatementArgs {
    /// The member whose account to print.
    #[arg(long, value_parser = parse_member)]
    pub member: Option<MemberId>,
    /// Print a platform account (`hot_wallet`, `fee_revenue`, `network_fees`) instead.
    #[arg(long)]
    pub platform: bool,
    /// Asset symbol as the ledger records it, e.g. `BTC`.
    #[arg(long, value_parser = parse_asset)]
    pub asset: AssetSymbol,
    /// Account kind: `available` or `locked` for a member; `hot_wallet`, `fee_revenue` or
    /// `network_fees` for the platform.
    #[arg(long, value_parser = parse_kind)]
    pub kind: AccountKind,
    /// Entries to print (1-1000).
    #[arg(
        long,
        default_value_t = 20,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(statement::LIMIT_MAX))
    )]
    pub limit: u32,
    /// Print entries older than this entry id (the next page: the `more` hint names it).
    #[arg(long, value_name = "ENTRY_ID")]
    pub before: Option<i64>,
    /// Print JSON (one object) instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_asset(value: &str) -> Result<AssetSymbol, String> {
    value
        .parse()
        .map_err(|e: crate::ledger::LedgerError| e.to_string())
}

fn parse_kind(value: &str) -> Result<AccountKind, String> {
    value
        .parse()
        .map_err(|e: crate::ledger::LedgerError| e.to_string())
}

/// `statement` as text: a heading line with the account and its balance, then one line per
/// entry with the running balance after it, e.g. `2026-12-08T00:51:02.123456Z entry 7
/// credit 10000 (0.0001) balance 10000 (0.0001) deposit 5d4c…`, then `more: --before 7`
/// when older entries exist.
pub fn statement_text(statement: &Statement) -> String {
    let decimals = statement.decimals;
    let mut text = format!(
        "{} balance {} ({})\n",
        statement.account,
        statement.balance,
        statement.balance.to_decimal_string(decimals)
    );
    for line in &statement.lines {
        text.push_str(&format!(
            "{} entry {} {} {} ({}) balance {} ({}) {} {}\n",
            rfc3339(line.posted_at),
            line.entry_id,
            line.side.as_str(),
            line.amount,
            line.amount.to_decimal_string(decimals),
            line.balance_after,
            signed_decimal(&line.balance_after, decimals),
            line.transfer_kind,
            line.reference
        ));
    }
    if let (true, Some(oldest)) = (statement.more, statement.lines.last()) {
        text.push_str(&format!("more: --before {}\n", oldest.entry_id));
    }
    text
}

/// The object printed by `statement --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementJson {
    /// The member id, or `"platform"`.
    pub owner: String,
    /// Asset symbol, e.g. `"BTC"`.
    pub asset: String,
    /// Account kind, e.g. `"available"`.
    pub kind: String,
    /// The asset's decimals.
    pub decimals: u8,
    /// The balance now, base units (decimal digits).
    pub balance: String,
    /// Newest first.
    pub entries: Vec<StatementEntryJson>,
    /// The `--before` value for the next page, when older entries exist.
    pub next_before: Option<i64>,
}

/// One entry of `statement --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementEntryJson {
    /// The entry's id (journal order).
    pub entry_id: i64,
    /// Its transfer's id.
    pub transfer_id: Uuid,
    /// The transfer's kind, e.g. `"deposit"`.
    pub transfer_kind: String,
    /// The transfer's reference.
    pub reference: String,
    /// When the transfer was written, RFC 3339.
    pub posted_at: String,
    /// `"debit"` or `"credit"`.
    pub side: &'static str,
    /// The entry's amount, base units (decimal digits).
    pub base_units: String,
    /// The entry's amount in whole units, exact, e.g. `"1.5"`.
    pub amount: String,
    /// The running balance right after the entry in journal order, base units (decimal
    /// digits, with a leading `-` where concurrent transfers committed out of that order).
    pub balance_after: String,
}

/// The `--json` object of `statement`.
pub fn statement_json(statement: &Statement) -> StatementJson {
    let account = &statement.account;
    StatementJson {
        owner: account
            .owner()
            .member()
            .map_or_else(|| "platform".to_owned(), |member| member.to_string()),
        asset: account.asset().to_string(),
        kind: account.kind().to_string(),
        decimals: statement.decimals,
        balance: statement.balance.to_string(),
        entries: statement
            .lines
            .iter()
            .map(|line| StatementEntryJson {
                entry_id: line.entry_id,
                transfer_id: line.transfer_id,
                transfer_kind: line.transfer_kind.clone(),
                reference: line.reference.clone(),
                posted_at: rfc3339(line.posted_at),
                side: line.side.as_str(),
                base_units: line.amount.to_string(),
                amount: line.amount.to_decimal_string(statement.decimals),
                balance_after: line.balance_after.to_string(),
            })
            .collect(),
        next_before: statement
            .lines
            .last()
            .filter(|_| statement.more)
            .map(|line| line.entry_id),
    }
}

/// `value` base units in whole units, exact, with a leading `-` when below zero (in base
/// units when wider than [`BaseUnits`] holds, which only a corrupt journal could give).
fn signed_decimal(value: &BigInt, decimals: u8) -> String {
    let Ok(magnitude) = value.magnitude().to_string().parse::<BaseUnits>() else {
        return value.to_string();
    };
    let whole = magnitude.to_decimal_string(decimals);
    if value.sign() == Sign::Minus {
        format!("-{whole}")
    } else {
        whole
    }
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
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

/// The object printed by `withdraw --json`: the withdrawal's fields plus `created` (false
/// when the id already existed and nothing changed).
#[derive(Debug, Clone, Serialize)]
pub struct WithdrawJson<'a> {
    /// Whether this call created the withdrawal.
    pub created: bool,
    /// The withdrawal.
    #[serde(flatten)]
    pub withdrawal: &'a Withdrawal,
}

/// The object printed by `withdrawals --json`.
#[derive(Debug, Clone, Serialize)]
pub struct WithdrawalsJson<'a> {
    /// The member.
    pub member: &'a str,
    /// Oldest first.
    pub withdrawals: &'a [Withdrawal],
}

/// One text line per API key: `<key id> <member> created <time> [revoked <time>] [label]`.
pub fn api_key_text(key: &ApiKeyInfo) -> String {
    let mut line = format!(
        "{} {} created {}",
        key.key_id,
        key.member,
        rfc3339(key.created_at)
    );
    if let Some(revoked_at) = key.revoked_at {
        line.push_str(&format!(" revoked {}", rfc3339(revoked_at)));
    }
    if let Some(label) = &key.label {
        line.push_str(&format!(" label {label:?}"));
    }
    line.push('\n');
    line
}

/// One text line per withdrawal, e.g.
/// `<id> requested BTC 100000 (0.001) fee 1000 to bcrt1q... ` plus `txid ...` or
/// `reason ...` once settled.
pub fn withdrawal_text(withdrawal: &Withdrawal) -> String {
    let mut line = format!(
        "{} {} {} {} ({}) fee {} to {}",
        withdrawal.id,
        withdrawal.status.as_str(),
        withdrawal.asset,
        withdrawal.amount,
        withdrawal.amount.to_decimal_string(withdrawal.decimals),
        withdrawal.fee,
        withdrawal.destination
    );
    if let Some(txid) = &withdrawal.txid {
        line.push_str(&format!(" txid {txid}"));
    }
    if let Some(reason) = &withdrawal.reason {
        line.push_str(&format!(" reason {reason:?}"));
    }
    line.push('\n');
    line
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
        let withdraw = Cli::try_parse_from([
            "coinhub-exchange",
            "withdraw",
            "--member",
            "alice",
            "--asset",
            "BTC",
            "--amount",
            "1000",
            "--destination",
            "bcrt1qxyz",
            "--id",
            "00000000-0000-0000-0000-000000000007",
        ])
        .expect("parses");
        assert!(matches!(
            withdraw.command,
            Command::Withdraw(WithdrawArgs { id: Some(id), json: false, .. }) if id == Uuid::from_u128(7)
        ));
        assert!(
            Cli::try_parse_from(["coinhub-exchange", "withdraw", "--member", "alice"]).is_err()
        );
        assert!(
            Cli::try_parse_from([
                "coinhub-exchange",
                "withdrawals",
                "--member",
                "bob",
                "--json"
            ])
            .is_ok()
        );
    }

    #[test]
    fn running_balances_below_zero_keep_their_sign_in_whole_units() {
        assert_eq!(signed_decimal(&BigInt::from(-1025), 8), "-0.00001025");
        assert_eq!(signed_decimal(&BigInt::from(150), 2), "1.5");
        assert_eq!(signed_decimal(&BigInt::ZERO, 8), "0");
    }

    /// An unbalanced transfer cannot be written through the ledger (its checks refuse it), so
    /// its line is checked here; the drift's line is also checked end to end in `tests/cli.rs`.
    #[test]
    fn audit_text_names_each_finding_and_what_was_checked() {
        let transfer_id = Uuid::from_u128(7);
        let report = AuditReport {
            transfers: 3,
            entries: 6,
            accounts: 4,
            findings: vec![AuditFinding::Unbalanced {
                transfer_id,
                asset: "BTC".into(),
                sum: "-5".into(),
            }],
        };
        assert_eq!(
            audit_text(&report),
            format!(
                "transfer {transfer_id} does not balance in BTC: its entries sum to -5 (debits \
                 minus credits, base units)\njournal audit found 1 disagreement(s): 3 transfers, \
                 6 entries, 4 accounts checked\n"
            )
        );
        let json = serde_json::to_value(audit_json(&report)).expect("serializes");
        assert_eq!(json["consistent"], false);
        assert_eq!(json["findings"][0]["finding"], "unbalanced");
        assert_eq!(json["findings"][0]["transfer_id"], transfer_id.to_string());
        assert_eq!(json["findings"][0]["sum"], "-5");
        assert!(Cli::try_parse_from(["coinhub-exchange", "audit", "--json"]).is_ok());
    }

    #[test]
    fn parses_statement_commands() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from([&["coinhub-exchange", "statement"][..], args].concat())
        };
        let platform =
            parse(&["--platform", "--asset", "BTC", "--kind", "hot_wallet"]).expect("parses");
        assert!(matches!(
            platform.command,
            Command::Statement(StatementArgs {
                member: None,
                platform: true,
                kind: AccountKind::HotWallet,
                limit: 20,
                before: None,
                ..
            })
        ));
        let paged = parse(&[
            "--member", "bob", "--asset", "ETH", "--kind", "locked", "--limit", "1000", "--before",
            "42",
        ])
        .expect("parses");
        assert!(matches!(
            paged.command,
            Command::Statement(StatementArgs {
                member: Some(_),
                limit: 1000,
                before: Some(42),
                ..
            })
        ));
        for refused in [
            &["--asset", "BTC", "--kind", "available"][..],
            &[
                "--member",
                "bob",
                "--platform",
                "--asset",
                "BTC",
                "--kind",
                "available",
            ],
            &["--member", "bob", "--asset", "BTC", "--kind", "savings"],
            &["--member", "bob", "--asset", "B TC", "--kind", "available"],
            &[
                "--member",
                "bob",
                "--asset",
                "BTC",
                "--kind",
                "available",
                "--limit",
                "1001",
            ],
        ] {
            assert!(parse(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn parses_api_key_commands() {
        let create = Cli::try_parse_from([
            "coinhub-exchange",
            "api-key",
            "create",
            "--member",
            "alice",
            "--label",
            "bot",
        ])
        .expect("parses");
        assert!(matches!(
            create.command,
            Command::ApiKey(ApiKeyCommand::Create(ApiKeyCreateArgs { ref member, .. }))
                if member.as_str() == "alice"
        ));
        let revoke = Cli::try_parse_from([
            "coinhub-exchange",
            "api-key",
            "revoke",
            "--key-id",
            "ck_0123456789abcdef0123456789abcdef",
        ])
        .expect("parses");
        assert!(matches!(
            revoke.command,
            Command::ApiKey(ApiKeyCommand::Revoke(_))
        ));
        assert!(
            Cli::try_parse_from(["coinhub-exchange", "api-key", "revoke", "--key-id", "nope"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["coinhub-exchange", "api-key", "create"]).is_err());
    }
}
