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
//! Dash mode uses Dash regtest genesis fields, no segwit and Dash address version bytes, but
//! hashes blocks with double SHA-256: it does not compute X11 block hashes.

mod json;
mod node;
mod rpc;
mod server;

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
    /// Dash regtest: no segwit, legacy sighash, base58 addresses with versions 140 / 19.
    /// Block hashes are double SHA-256, not X11 as on a real Dash node.
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
