//! API key secrets at rest: envelope-encrypted with the `[vault]` transit key
//! ([`coinhub_custody::keystore::seal`]), so a copy of the database alone cannot sign as a
//! member.
//!
//! A secret is sealed with associated data `coinhub:api-key:{key_id}`: a sealed secret
//! copied to another key's row does not open. Opening costs one Vault `transit/decrypt`
//! (audited by Vault), so an opened secret is kept in memory, zeroized on drop, for as long
//! as its key is active and its stored envelope is unchanged; a key found revoked or unknown
//! is forgotten at once ([`ApiSecrets::forget`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use coinhub_custody::keystore::{self, Envelope, KeystoreError, TransitKey, Vault, VaultConfig};
use secrecy::{ExposeSecret, SecretString};

use super::keys::KeyId;

/// Seals and opens API key secrets with one Vault transit key. Cheap to clone (shared cache).
#[derive(Clone)]
pub struct ApiSecrets {
    inner: Arc<Inner>,
}

struct Inner {
    vault: Vault,
    transit: TransitKey,
    /// Secrets opened so far, by key id, with the envelope they came from.
    opened: Mutex<HashMap<KeyId, Opened>>,
}

struct Opened {
    sealed: Envelope,
    secret: SecretString,
}

impl ApiSecrets {
    /// Secrets sealed with `config`'s transit key (`[vault]`). Makes no request; call
    /// [`ApiSecrets::check`] at start.
    ///
    /// # Errors
    /// [`KeystoreError::InvalidAddress`] for a malformed `[vault] address`.
    pub fn new(config: &VaultConfig) -> Result<Self, KeystoreError> {
        Ok(Self::with_vault(config.client()?, config.transit_key()))
    }

    /// Secrets sealed with `transit` on `vault`.
    pub fn with_vault(vault: Vault, transit: TransitKey) -> Self {
        Self {
            inner: Arc::new(Inner {
                vault,
                transit,
                opened: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether Vault answers and is unsealed (`GET /v1/sys/health`).
    ///
    /// # Errors
    /// [`KeystoreError::Unreachable`], [`KeystoreError::Sealed`], [`KeystoreError::Other`].
    pub async fn check(&self) -> Result<(), KeystoreError> {
        self.inner.vault.check().await
    }

    /// Seals `secret` (the 64 hex digits as issued) for `key_id` under a new transit data key.
    ///
    /// # Errors
    /// Those of [`keystore::seal`], e.g. [`KeystoreError::PermissionDenied`] when the token
    /// may not use `datakey/plaintext` on the transit key.
    pub async fn seal(
        &self,
        key_id: &KeyId,
        secret: &SecretString,
    ) -> Result<Envelope, KeystoreError> {
        keystore::seal(
            &self.inner.vault,
            &self.inner.transit,
            &associated_data(key_id),
            secret.expose_secret().as_bytes(),
        )
        .await
    }

    /// The secret of `key_id` sealed in `sealed`: from memory if this envelope was opened
    /// before, else from Vault.
    ///
    /// # Errors
    /// Those of [`keystore::open`]; [`KeystoreError::Corrupt`] also when the envelope was
    /// sealed for another key or does not hold text.
    pub async fn open(
        &self,
        key_id: &KeyId,
        sealed: &Envelope,
    ) -> Result<SecretString, KeystoreError> {
        if let Some(secret) = self.cached(key_id, sealed) {
            return Ok(secret);
        }
        let plaintext = keystore::open(&self.inner.vault, &associated_data(key_id), sealed).await?;
        let text = std::str::from_utf8(&plaintext).map_err(|_| KeystoreError::Corrupt)?;
        let secret = SecretString::from(text);
        self.lock().insert(
            key_id.clone(),
            Opened {
                sealed: sealed.clone(),
                secret: secret.clone(),
            },
        );
        Ok(secret)
    }

    /// Drops the opened secret of `key_id`, if any (its key is revoked or gone).
    pub fn forget(&self, key_id: &KeyId) {
        self.lock().remove(key_id);
    }

    fn cached(&self, key_id: &KeyId, sealed: &Envelope) -> Option<SecretString> {
        self.lock()
            .get(key_id)
            .filter(|opened| opened.sealed == *sealed)
            .map(|opened| opened.secret.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, Opened>> {
        // A panic while holding the lock leaves a map of whole entries: still usable.
        self.inner
            .opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `coinhub:api-key:{key_id}`: binds a sealed secret to its key.
fn associated_data(key_id: &KeyId) -> Vec<u8> {
    format!("coinhub:api-key:{key_id}").into_bytes()
}
