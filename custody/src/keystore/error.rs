//! Keystore errors.

/// Why a secret (seed, API key secret) could not be encrypted or decrypted, or Vault could
/// not be used.
///
/// Messages are lower-case and never contain the Vault token, a data key, a seed or a
/// mnemonic; fields name what an operator can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// Vault did not answer: connection refused, DNS or TLS failure, or no response within the
    /// client timeout.
    #[error("vault at {address} is unreachable")]
    Unreachable {
        /// Vault address, e.g. `http://127.0.0.1:8200`.
        address: String,
    },
    /// Vault is sealed (HTTP 503 / "Vault is sealed"): an operator must unseal it.
    #[error("vault at {address} is sealed")]
    Sealed {
        /// Vault address.
        address: String,
    },
    /// Vault refused the request (HTTP 403): the token is unknown, expired, or its policy does
    /// not allow `path`.
    #[error("vault at {address} denied access to {path}: token is invalid or lacks permission")]
    PermissionDenied {
        /// Vault address.
        address: String,
        /// API path that was refused, e.g. `transit/decrypt/coinhub-a`.
        path: String,
    },
    /// The transit key (or its mount) does not exist.
    #[error("transit key {key} not found")]
    TransitKeyMissing {
        /// `mount/name`, e.g. `transit/coinhub-a`.
        key: String,
    },
    /// AES-GCM authentication failed, or the stored record is malformed: wrong data key, wrong
    /// owner (associated data: another hot key, another API key), tampered nonce/ciphertext,
    /// or a wrapped data key that transit rejects as altered or malformed.
    #[error("encrypted secret is corrupt or does not belong to this key")]
    Corrupt,
    /// The stored record has a format version this build does not know.
    #[error("encrypted secret has unsupported format version {version}")]
    UnsupportedVersion {
        /// Version found in the record.
        version: u8,
    },
    /// The Vault address is not an `http(s)://host[:port]` URL without credentials.
    #[error("invalid vault address {address}: {reason}")]
    InvalidAddress {
        /// The rejected address.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Anything else (unexpected HTTP status or response shape, OS randomness failure). The
    /// text is Vault's error list or a description, never secret material.
    #[error("{0}")]
    Other(String),
}
