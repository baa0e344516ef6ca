//! A regtest node double for Coinhub's tests: an HTTP server that speaks the subset of
//! Bitcoin Core's JSON-RPC and REST that Coinhub uses, with replies shaped like the
//! recordings in `shared/fixtures/bitcoin-core/`.
//!
//! It keeps a real chain of rust-bitcoin blocks from the regtest genesis block, mines with
//! regtest proof of work on `generatetoaddress`, accepts `sendrawtransaction` only when every
//! input spends an unspent output and verifies under libbitcoinconsensus, and reorganises on
//! `invalidateblock` / `reconsiderblock`.
//!
//! ```no_run
//! use coinhub_bitcoind_double::{BitcoindDouble, Params};
//! let node = BitcoindDouble::start(Params::bitcoin()).expect("the double starts");
//! println!("{} as {}:{}", node.rpc_url, node.user, node.password);
//! // stopped when `node` is dropped
//! ```
//!
//! [`wallet::TestWallet`] makes deposits against a running double: it mines coinbases to a
//! fixed test key and spends them with signed transactions sent over JSON-RPC.
//!
//! Dash mode uses the Dash regtest genesis block, no segwit and Dash address version bytes,
//! and hashes block headers with X11 as a Dash node does (block ids, `previousblockhash`
//! links and proof of work). Its coinbases carry no DIP4 `CbTx` payload.

mod json;
mod node;
mod rpc;
mod server;
pub mod wallet;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Which chain's regtest rules the double follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Flavor {
    /// Bitcoin Core regtest: segwit, taproot, bech32 `bcrt` addresses.
    #[default]
    Bitcoin,
    /// Dash regtest: no segwit, legacy sighash, base58 addresses with versions 140 / 19,
    /// X11 block hashes.
    Dash,
}

/// How to start a [`BitcoindDouble`].
#[derive(Clone, Debug)]
pub struct Params {
    /// Chain rules.
    pub flavor: Flavor,
    /// RPC user name (HTTP basic auth).
    pub user: String,
    /// RPC password (HTTP basic auth).
    pub password: String,
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// When set, a Bitcoin Core style cookie is written to `<datadir>/regtest/.cookie` and
    /// accepted as credentials; it is removed when the double stops.
    pub datadir: Option<PathBuf>,
}

impl Params {
    /// Bitcoin regtest on a free port, user `coinhub`, password `coinhub`, no cookie.
    pub fn bitcoin() -> Self {
        Self {
            flavor: Flavor::Bitcoin,
            user: "coinhub".to_owned(),
            password: "coinhub".to_owned(),
            port: 0,
            datadir: None,
        }
    }

    /// Dash regtest on a free port, user `coinhub`, password `coinhub`, no cookie.
    pub fn dash() -> Self {
        Self {
            flavor: Flavor::Dash,
            ..Self::bitcoin()
        }
    }
}

impl Default for Params {
    fn default() -> Self {
        Self::bitcoin()
    }
}

/// Why the double could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Binding 127.0.0.1 on the requested port failed.
    #[error("cannot bind 127.0.0.1:{port}: {source}")]
    Bind {
        /// The requested port.
        port: u16,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Writing the cookie file failed.
    #[error("cannot write cookie file {path}: {source}")]
    Cookie {
        /// Where the cookie was to be written.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The server thread or its runtime could not be created.
    #[error("cannot start the server thread: {0}")]
    Runtime(std::io::Error),
}

/// A running double; the server stops when this is dropped.
pub struct BitcoindDouble {
    /// JSON-RPC endpoint, e.g. `http://127.0.0.1:18443/`. REST is under `<rpc_url>rest/`.
    pub rpc_url: String,
    /// RPC user name.
    pub user: String,
    /// RPC password.
    pub password: String,
    /// Cookie file, when a datadir was given.
    pub cookie_path: Option<PathBuf>,
    /// Address the server listens on.
    pub addr: SocketAddr,
    /// Chain rules in use.
    pub flavor: Flavor,
    shared: Arc<server::Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BitcoindDouble {
    /// Starts a double holding only the genesis block, serving on its own thread.
    pub fn start(params: Params) -> Result<Self, StartError> {
        let listener =
            TcpListener::bind(("127.0.0.1", params.port)).map_err(|source| StartError::Bind {
                port: params.port,
                source,
            })?;
        listener
            .set_nonblocking(true)
            .map_err(StartError::Runtime)?;
        let addr = listener.local_addr().map_err(StartError::Runtime)?;

        let mut credentials = vec![format!("{}:{}", params.user, params.password)];
        let cookie_path = match &params.datadir {
            Some(dir) => {
                let path = dir.join("regtest").join(".cookie");
                let secret: [u8; 32] = bitcoin::secp256k1::rand::random();
                let cookie = format!("__cookie__:{}", hex::encode(secret));
                std::fs::create_dir_all(dir.join("regtest"))
                    .and_then(|()| std::fs::write(&path, &cookie))
                    .map_err(|source| StartError::Cookie {
                        path: path.clone(),
                        source,
                    })?;
                credentials.push(cookie);
                Some(path)
            }
            None => None,
        };

        let shared = Arc::new(server::Shared {
            node: Mutex::new(node::Node::new(params.flavor)),
            credentials,
            warmup_calls: AtomicU32::new(0),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("bitcoind-double-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "bitcoind double cannot listen");
                            return;
                        }
                    };
                    let app = server::router(served);
                    tokio::select! {
                        result = axum::serve(listener, app) => {
                            if let Err(e) = result {
                                tracing::error!(error = %e, "bitcoind double server failed");
                            }
                        }
                        _ = rx => {}
                    }
                });
                // Dropping the runtime here cancels every open connection.
            })
            .map_err(StartError::Runtime)?;

        Ok(Self {
            rpc_url: format!("http://{addr}/"),
            user: params.user,
            password: params.password,
            cookie_path,
            addr,
            flavor: params.flavor,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// Base URL of the REST interface, e.g. `http://127.0.0.1:18443/rest/`.
    pub fn rest_url(&self) -> String {
        format!("{}rest/", self.rpc_url)
    }

    /// Answers the next `calls` JSON-RPC calls with error -28 `Loading block index…`
    /// (HTTP 500), as a node that is still starting does.
    pub fn set_warmup(&self, calls: u32) {
        self.shared.warmup_calls.store(calls, Ordering::SeqCst);
    }

    /// Drops the data of block `hash` as a pruned node would: its header stays, `getblock`
    /// answers -1 `Block not available (pruned data)` and REST 404
    /// `<hash> not available (pruned data)`. Returns false for an unknown block.
    pub fn prune_block(&self, hash: &bitcoin::BlockHash) -> bool {
        let mut node = self
            .shared
            .node
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !node.blocks.contains_key(hash) {
            return false;
        }
        node.pruned.insert(*hash);
        true
    }

    /// **Benchmarks only; not a Bitcoin Core call.** Appends the consensus-serialized block
    /// `raw` — typically a real mainnet block — on top of the active tip *without any
    /// validation*, so that the node client can be measured on real-sized blocks (the double
    /// has no `submitblock`, and a mainnet block cannot be mined or validated on regtest).
    ///
    /// The transactions are kept byte for byte; only the 80-byte header is rewritten:
    /// parent = the current tip, regtest `bits`, time raised to one second past the tip's
    /// median time past if lower, nonce ground for regtest proof of work (merkle root
    /// unchanged). The
    /// returned hash is the rewritten header's; `getblockhash`, `getblock` and REST
    /// `/rest/block/<hash>.bin` then serve the block like any other. Its inputs are not
    /// checked and the UTXO set is not updated (its outputs cannot be spent through the
    /// double); a reorg that disconnects it cannot connect it again (it is then marked
    /// invalid). Bitcoin serialization only. Errors: `raw` is not a block.
    pub fn append_block_unchecked(
        &self,
        raw: &[u8],
    ) -> Result<bitcoin::BlockHash, bitcoin::consensus::encode::Error> {
        let block: bitcoin::Block = bitcoin::consensus::deserialize(raw)?;
        let mut node = self
            .shared
            .node
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(node.append_unchecked(block))
    }
}

impl std::fmt::Debug for BitcoindDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitcoindDouble")
            .field("rpc_url", &self.rpc_url)
            .field("user", &self.user)
            .field("cookie_path", &self.cookie_path)
            .field("flavor", &self.flavor)
            .finish_non_exhaustive()
    }
}

impl Drop for BitcoindDouble {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(path) = &self.cookie_path {
            let _ = std::fs::remove_file(path);
        }
    }
}
