//! `bitcoind-double`: runs the regtest node double until Ctrl-C or SIGTERM.
//!
//! Prints one JSON line with the RPC URL and credentials once it listens.

use clap::{Parser, ValueEnum};
use coinhub_bitcoind_double::{BitcoindDouble, Flavor, Params};

/// Chain rules on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Chain {
    /// Bitcoin Core regtest.
    Bitcoin,
    /// Dash regtest (X11 block hashes, no segwit).
    Dash,
}

/// A regtest node double speaking Bitcoin Core's JSON-RPC and REST.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Chain rules.
    #[arg(long, value_enum, default_value = "bitcoin")]
    chain: Chain,
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 18443)]
    port: u16,
    /// RPC user.
    #[arg(long, default_value = "coinhub")]
    rpcuser: String,
    /// RPC password.
    #[arg(long, default_value = "coinhub")]
    rpcpassword: String,
    /// Data directory; a cookie is written to `<datadir>/regtest/.cookie`.
    #[arg(long)]
    datadir: Option<std::path::PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let flavor = match args.chain {
        Chain::Bitcoin => Flavor::Bitcoin,
        Chain::Dash => Flavor::Dash,
    };
    let node = BitcoindDouble::start(Params {
        flavor,
        user: args.rpcuser,
        password: args.rpcpassword,
        port: args.port,
        datadir: args.datadir,
    })?;
    println!(
        "{}",
        serde_json::json!({
            "rpc_url": node.rpc_url,
            "rest_url": node.rest_url(),
            "user": node.user,
            "password": node.password,
            "cookie": node.cookie_path,
        })
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    drop(node);
    Ok(())
}
