//! The `[vault]` table shared by every process that seals or opens secrets with transit
//! (coinhubd, the cosigner, coinhub-exchange).

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::{KeystoreError, TransitKey, Vault};

/// `[vault]`: the OpenBao/Vault server and the transit key that envelope-encrypts this
/// process's secrets.
///
/// ```toml
/// [vault]
/// address = "http://127.0.0.1:8200"
/// token = "s.xxxx"            # secret: never logged
/// transit_mount = "transit"   # default
/// transit_key = "coinhub-a"
/// timeout_ms = 10000          # default
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Base URL, e.g. `http://127.0.0.1:8200`.
    pub address: String,
    /// Token allowed to use `transit_key` (and nothing else).
    pub token: SecretString,
    /// Mount path of the transit engine (default `transit`).
    #[serde(default = "default_transit_mount")]
    pub transit_mount: String,
    /// Name of the transit key.
    pub transit_key: String,
    /// Timeout of one Vault request, in milliseconds (default 10,000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl VaultConfig {
    /// A client for `address` with `token` and `timeout_ms`. Makes no request.
    ///
    /// # Errors
    /// [`KeystoreError::InvalidAddress`] for a malformed address.
    pub fn client(&self) -> Result<Vault, KeystoreError> {
        Vault::new(
            &self.address,
            self.token.clone(),
            Duration::from_millis(self.timeout_ms),
        )
    }

    /// The transit key `transit_mount`/`transit_key`.
    pub fn transit_key(&self) -> TransitKey {
        TransitKey {
            mount: self.transit_mount.clone(),
            name: self.transit_key.clone(),
        }
    }
}

fn default_transit_mount() -> String {
    "transit".to_owned()
}

fn default_timeout_ms() -> u64 {
    10_000
}
