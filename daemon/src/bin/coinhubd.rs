//! `coinhubd`: the Coinhub gateway and custody daemon.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use coinhub_custody::keystore::HotKey;
use coinhub_daemon::config::Config;
use coinhub_daemon::cosigner::config::CosignerConfig;

#[derive(Parser)]
#[command(
    name = "coinhubd",
    about = "Coinhub blockchain gateway and custody daemon",
    version
)]
struct Cli {
    /// Configuration file (TOML); `COINHUB__SECTION__KEY` environment variables override it.
    #[arg(long, env = "COINHUB_CONFIG", default_value = "coinhub.toml")]
    config: PathBuf,
    /// Log as JSON lines (production).
    #[arg(long)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates a custody key (24-word BIP39 seed, envelope-encrypted with the Vault transit
    /// key) and prints its account xpubs. Refuses if the key exists.
    Init {
        /// `a` for coinhubd's key; `b` for the cosigner's (run with the cosigner's config,
        /// then put the printed BIP48 xpub into coinhubd's `cosigner_xpub`).
        #[arg(long, default_value = "a", value_parser = ["a", "b"])]
        key: String,
    },
    /// Applies database migrations and exits.
    Migrate,
    /// Runs the watchers, outbox relay, command consumers and admin API.
    Run,
    /// Validates the configuration and exits.
    CheckConfig,
    /// Runs the cosigner (key B) with its own configuration, database and Vault token; with
    /// a subcommand, creates key B or checks the configuration instead.
    Cosigner {
        /// The cosigner's configuration file (TOML); `COINHUB_COSIGNER__SECTION__KEY`
        /// environment variables override it. coinhubd's own `--config` is not read.
        #[arg(long, env = "COINHUB_COSIGNER_CONFIG", default_value = "cosigner.toml")]
        config: PathBuf,
        #[command(subcommand)]
        action: Option<CosignerAction>,
    },
}

#[derive(Subcommand)]
enum CosignerAction {
    /// Runs the cosigner: request consumer and signing API (the default).
    Run,
    /// Creates key B (24-word BIP39 seed, envelope-encrypted with the cosigner's transit key)
    /// in the cosigner's database and prints its xpubs (put the BIP48 one into coinhubd's
    /// `cosigner_xpub`). Refuses if key B exists.
    Init,
    /// Validates the cosigner's configuration and exits.
    CheckConfig,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("coinhubd: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Cosigner { config, action } = &cli.command {
        return run_cosigner(config, action.as_ref().unwrap_or(&CosignerAction::Run)).await;
    }
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::CheckConfig => {
            println!(
                "configuration ok: {} chain(s), {} asset(s)",
                config.chains.len(),
                config.assets.len()
            );
            Ok(())
        }
        Command::Migrate => {
            coinhub_daemon::db::connect_and_migrate(&config.database).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Init { key } => {
            let pool = coinhub_daemon::db::connect_and_migrate(&config.database).await?;
            let key = if key == "b" { HotKey::B } else { HotKey::A };
            let created = coinhub_daemon::custody::init_key(&pool, &config.vault, key).await?;
            // First line: the EVM account xpub (scripts read it); then one per UTXO network.
            println!("xpub {}", created.evm_account_xpub);
            for (network, xpub) in &created.utxo_account_xpubs {
                println!("bip48 {network} {xpub}");
            }
            Ok(())
        }
        Command::Run => coinhub_daemon::daemon::run(config).await,
        Command::Cosigner { .. } => unreachable!("handled before coinhubd's config is read"),
    }
}

async fn run_cosigner(path: &std::path::Path, action: &CosignerAction) -> anyhow::Result<()> {
    let config = CosignerConfig::load(path)?;
    match action {
        CosignerAction::CheckConfig => {
            println!(
                "cosigner configuration ok: {} chain(s), {} asset(s)",
                config.chains.len(),
                config.assets.len()
            );
            Ok(())
        }
        CosignerAction::Init => {
            let created = coinhub_daemon::cosigner::init(&config).await?;
            println!("xpub {}", created.evm_account_xpub);
            for (network, xpub) in &created.utxo_account_xpubs {
                println!("bip48 {network} {xpub}");
            }
            Ok(())
        }
        CosignerAction::Run => coinhub_daemon::cosigner::run(config).await,
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // lapin logs every returned (unroutable) message with its whole body at warn; the
        // outbox relay reports those itself, once, in a readable line.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,lapin::returned_messages=error")
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
