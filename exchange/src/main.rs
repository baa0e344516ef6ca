//! `coinhub-exchange`: migrate the ledger, run the consumers, the outbox relay, the member
//! API, `/metrics` and the retention of published messages, print
//! balances and account statements, request and list withdrawals.
//! See `coinhub-exchange --help`.

use anyhow::Context;
use clap::Parser;
use coinhub_exchange::api::{self, ApiState, keys, secrets::ApiSecrets};
use coinhub_exchange::cli::{
    self, ApiKeyCommand, AuditArgs, BalancesArgs, Cli, Command, StatementArgs, TradingStatusArgs,
    WithdrawArgs, WithdrawalsArgs,
};
use coinhub_exchange::config::Config;
use coinhub_exchange::ledger::{AccountKey, Owner};
use coinhub_exchange::metrics::Metrics;
use coinhub_exchange::service::{self, ConsumerSettings};
use coinhub_exchange::withdrawals::{self, NewWithdrawal};
use coinhub_exchange::{db, journal, memory, outbox, retention, statement};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's `malloc`: settling a batch allocates and frees many small
/// strings and rows, and with the read models off the settlement transaction this process
/// is about as busy as PostgreSQL (docs/benchmarks.md, exchange settlement, 2026-12-07).
///
/// Without transparent huge pages (mimalloc's `no_thp` feature and
/// [`memory::disable_transparent_huge_pages`]): with them, zeroing the 2 MiB pages of memory
/// the allocator took back cost ~25 % of this process's CPU at peak.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    if let Err(error) = memory::disable_transparent_huge_pages() {
        tracing::warn!(%error, "transparent huge pages stay on; settlement peaks cost more CPU");
    }
    let config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    match cli.command {
        Command::Migrate => migrate(&config).await,
        Command::Run => run(&config).await,
        Command::Balances(args) => balances(&config, &args).await,
        Command::Statement(args) => statement(&config, &args).await,
        Command::Audit(args) => audit(&config, &args).await,
        Command::Withdraw(args) => withdraw(&config, args).await,
        Command::Withdrawals(args) => list_withdrawals(&config, &args).await,
        Command::ApiKey(command) => api_key(&config, command).await,
        Command::TradingStatus(args) => trading_status(&config, &args).await,
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`).
fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let pool = db::connect(&config.database)
        .await
        .context("connecting to the database")?;
    db::migrate(&pool).await.context("migrating the database")?;
    tracing::info!("database migrated");
    pool.close().await;
    Ok(())
}

async fn run(config: &Config) -> anyhow::Result<()> {
    // Before anything else: without it no API key could be opened.
    let secrets = ApiSecrets::new(config.vault()?).context("invalid [vault]")?;
    let pool = db::connect_lazy(&config.database).context("configuring the database pool")?;
    let settings = ConsumerSettings::from(&config.amqp);
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
    if service::migrate_with_retry(&pool, &settings, &shutdown).await {
        tracing::info!("database migrated; starting the consumers and the outbox relay");
        // `/metrics` and the member HTTP API (exchange/src/api): bind both, then serve until
        // shutdown; either failing to start stops the process.
        let metrics = Metrics::new();
        let servers = async {
            let metrics_server = start_metrics_server(config, &pool, &metrics, &shutdown).await?;
            let api_server =
                start_api_server(config, &pool, secrets, &metrics, shutdown.clone()).await?;
            anyhow::Ok((metrics_server, api_server))
        };
        let (metrics_server, api_server) = match servers.await {
            Ok(servers) => servers,
            Err(error) => {
                shutdown.cancel();
                signals.abort();
                pool.close().await;
                return Err(error);
            }
        };
        tokio::join!(
            service::run_deposit_consumer(pool.clone(), settings.clone(), shutdown.clone()),
            service::run_withdrawal_consumer(pool.clone(), settings.clone(), shutdown.clone()),
            outbox::run_relay(pool.clone(), settings, shutdown.clone()),
            retention::run(
                pool.clone(),
                config.retention.keep_published(),
                metrics,
                shutdown.clone()
            ),
            api_server,
            metrics_server,
        );
    }
    signals.abort();
    pool.close().await;
    tracing::info!("coinhub-exchange stopped");
    Ok(())
}

/// Checks Vault, seals API key secrets still stored in plaintext, binds `[api] listen`, starts
/// the trading engine (counting its batches in `metrics`) and returns the member API server,
/// which runs until `shutdown`; if it fails while running it cancels `shutdown` (a critical
/// task: the process stops).
///
/// Errors: Vault unreachable, sealed or refusing the token; the address cannot be bound.
async fn start_api_server(
    config: &Config,
    pool: &sqlx::PgPool,
    secrets: ApiSecrets,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<impl std::future::Future<Output = ()> + use<>> {
    secrets.check().await.context("checking [vault]")?;
    keys::seal_stored(pool, &secrets)
        .await
        .context("sealing api key secrets stored in plaintext")?;
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding the member api to {}", config.api.listen))?;
    // The trading engine: rebuilds every market's book from its command log first.
    let trading = if config.markets.0.is_empty() {
        tracing::warn!("no [markets.*] configured; the trading routes answer 503");
        None
    } else {
        let options = coinhub_exchange::trading::EngineOptions::new(
            coinhub_exchange::trading::EventsSink::Outbox,
        )
        .with_metrics(metrics.clone());
        let engine = coinhub_exchange::trading::TradingEngine::start_with(
            pool.clone(),
            config.markets.clone(),
            options,
        )
        .await
        .context("starting the trading engine")?;
        Some(engine)
    };
    let limits = coinhub_exchange::api::limits::RateLimits::try_from(&config.api)
        .context("invalid [api] rate limits")?;
    let state = ApiState::with_limits(
        pool.clone(),
        secrets,
        config.assets.clone(),
        config.api.max_clock_skew_secs,
        limits,
        trading,
    );
    Ok(async move {
        if let Err(error) = api::serve(listener, state, shutdown.clone()).await {
            tracing::error!(%error, "member api stopped; shutting down");
            shutdown.cancel();
        }
    })
}

/// Binds `[metrics] listen` and returns the `/metrics` server, which runs until `shutdown`;
/// if it fails while running it cancels `shutdown`, like the member API.
///
/// Errors: the address cannot be bound.
async fn start_metrics_server(
    config: &Config,
    pool: &sqlx::PgPool,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> anyhow::Result<impl std::future::Future<Output = ()> + use<>> {
    let listener = tokio::net::TcpListener::bind(config.metrics.listen)
        .await
        .with_context(|| format!("binding the metrics endpoint to {}", config.metrics.listen))?;
    let (pool, metrics, shutdown) = (pool.clone(), metrics.clone(), shutdown.clone());
    Ok(async move {
        if let Err(error) =
            coinhub_exchange::metrics::serve(listener, pool, metrics, shutdown.clone()).await
        {
            tracing::error!(%error, "metrics endpoint stopped; shutting down");
            shutdown.cancel();
        }
    })
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; only SIGINT stops the service");
                let _ = tokio::signal::ctrl_c().await;
                shutdown.cancel();
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
    }
    shutdown.cancel();
}

async fn balances(config: &Config, args: &BalancesArgs) -> anyhow::Result<()> {
    let pool = db::connect(&config.database)
        .await
        .context("connecting to the database")?;
    let (owner, balances) = match &args.member {
        Some(member) => (
            member.to_string(),
            journal::member_balances(&pool, member).await,
        ),
        None => (
            "platform".to_owned(),
            journal::platform_balances(&pool).await,
        ),
    };
    let balances = balances.context("reading balances")?;
    pool.close().await;
    if args.json {
        let json = serde_json::to_string_pretty(&cli::balances_json(&owner, &balances))
            .context("serializing balances")?;
        println!("{json}");
    } else if balances.is_empty() {
        eprintln!("no accounts for {owner}");
    } else {
        print!("{}", cli::balances_text(&balances));
    }
    Ok(())
}

async fn trading_status(config: &Config, args: &TradingStatusArgs) -> anyhow::Result<()> {
    let pool = db::connect(&config.database)
        .await
        .context("connecting to the database")?;
    let markets = coinhub_exchange::trading::status::market_status(&pool)
        .await
        .context("reading the markets' status")?;
    pool.close().await;
    if args.json {
        let json = serde_json::to_string_pretty(&markets).context("serializing the status")?;
        println!("{json}");
    } else if markets.is_empty() {
        eprintln!("no market recorded yet (the trading engine records its markets when it starts)");
    } else {
        print!("{}", cli::trading_status_text(&markets));
    }
    Ok(())
}

async fn statement(config: &Config, args: &StatementArgs) -> anyhow::Result<()> {
    let owner = match &args.member {
        Some(member) => Owner::Member(member.clone()),
        None => Owner::Platform,
    };
    let account = AccountKey::new(owner, args.asset.clone(), args.kind)
        .context("--kind does not fit the owner")?;
    let pool = db::connect(&config.database)
        .await
        .context("connecting to the database")?;
    let statement = statement::read(&pool, &account, args.before, args.limit).await;
    pool.close().await;
    let Some(statement) = statement.context("reading the statement")? else {
        anyhow::bail!("no account {account}: it has never been opened");
    };
    if args.json {
        let json = serde_json::to_string_pretty(&cli::statement_json(&statement))
            .context("serializing the statement")?;
        println!("{json}");
    } else {
        print!("{}", cli::statement_text(&statement));
    }
    Ok(())
}

async fn audit(config: &Config, args: &AuditArgs) -> anyhow::Result<()> {
    let pool = db::connect(&config.database)
        .await
        .context("connecting to the database")?;
    let report = journal::audit_snapshot(&pool).await;
    pool.close().await;
    let report = report.context("auditing the journal")?;
    if args.json {
        let json = serde_json::to_string_pretty(&cli::audit_json(&report))
            .context("serializing the audit")?;
        println!("{json}");
    } else {
        print!("{}", cli::audit_text(&report));
    }
    // Non-zero for monitoring and scripts: a disagreement is what the audit exists to catch.
    anyhow::ensure!(
        report.findings.is_empty(),
        "the journal audit found {} disagreement(s)",
        report.findings.len()
    );
    Ok(())
}

async fn withdraw(config: &Config, args: WithdrawArgs) -> anyhow::Result<()> {
    let pool = db::connect(&config.database)
        .await
        .context("connecting to the database")?;
    let new = NewWithdrawal {
        id: args.id,
        member: args.member,
        asset: args.asset,
        amount: args.amount,
        destination: args.destination,
    };
    let result = withdrawals::request(&pool, &config.assets, &new).await;
    pool.close().await;
    let requested = result.context("withdrawal refused")?;
    let withdrawal = &requested.withdrawal;
    if args.json {
        let json = serde_json::to_string_pretty(&cli::WithdrawJson {
            created: requested.created,
            withdrawal,
        })
        .context("serializing the withdrawal")?;
        println!("{json}");
    } else {
        if !requested.created {
            eprintln!(
                "withdrawal {} already exists; nothing changed",
                withdrawal.id
            );
        }
        print!("{}", cli::withdrawal_text(withdrawal));
    }
    Ok(())
}

async fn list_withdrawals(config: &Config, args: &WithdrawalsArgs) -> anyhow::Result<()> {
    let pool = db::connect(&config.database)
        .await
        .context("connecting to the database")?;
    let result = withdrawals::list(&pool, &args.member).await;
    pool.close().await;
    let list = result.context("reading withdrawals")?;
    if args.json {
        let json = serde_json::to_string_pretty(&cli::WithdrawalsJson {
            member: args.member.as_str(),
            withdrawals: &list,
        })
        .context("serializing withdrawals")?;
        println!("{json}");
    } else if list.is_empty() {
        eprintln!("no withdrawals for {}", args.member);
    } else {
        for withdrawal in &list {
            print!("{}", cli::withdrawal_text(withdrawal));
        }
    }
    Ok(())
}

async fn api_key(config: &Config, command: ApiKeyCommand) -> anyhow::Result<()> {
    let pool = db::connect(&config.database)
        .await
        .context("connecting to the database")?;
    let result = api_key_command(config, &pool, command).await;
    pool.close().await;
    result
}

async fn api_key_command(
    config: &Config,
    pool: &sqlx::PgPool,
    command: ApiKeyCommand,
) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    match command {
        ApiKeyCommand::Create(args) => {
            let secrets = ApiSecrets::new(config.vault()?).context("invalid [vault]")?;
            let key = keys::create(pool, &secrets, &args.member, args.label.as_deref())
                .await
                .context("creating the api key")?;
            // The only place the secret is ever shown: stdout of this command.
            if args.json {
                let json = serde_json::json!({
                    "key_id": key.key_id,
                    "member": key.member.as_str(),
                    "secret": key.secret.expose_secret(),
                });
                println!("{json}");
            } else {
                println!("key_id {}", key.key_id);
                println!("member {}", key.member);
                println!("secret {}", key.secret.expose_secret());
                eprintln!("the secret is shown only this once; store it now");
            }
        }
        ApiKeyCommand::Revoke(args) => {
            let revoked_now = keys::revoke(pool, &args.key_id)
                .await
                .context("revoking the api key")?;
            if revoked_now {
                println!("revoked {}", args.key_id);
            } else {
                eprintln!("{} was already revoked; nothing changed", args.key_id);
            }
        }
        ApiKeyCommand::List(args) => {
            let list = keys::list(pool, &args.member)
                .await
                .context("listing api keys")?;
            if args.json {
                let json = serde_json::to_string_pretty(&serde_json::json!({
                    "member": args.member.as_str(),
                    "keys": list,
                }))
                .context("serializing api keys")?;
                println!("{json}");
            } else if list.is_empty() {
                eprintln!("no api keys for {}", args.member);
            } else {
                for key in &list {
                    print!("{}", cli::api_key_text(key));
                }
            }
        }
    }
    Ok(())
}
