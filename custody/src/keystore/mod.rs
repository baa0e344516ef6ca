//! Seeds at rest: envelope encryption with OpenBao/Vault transit.
//!
//! Transit has no secp256k1, so Vault cannot sign for us; instead it guards the seed:
//!
//! 1. [`encrypt_seed`] asks transit for a fresh 256-bit data key
//!    (`POST {mount}/datakey/plaintext/{key}`, `bits = 256`), encrypts the mnemonic's BIP39
//!    entropy locally with AES-256-GCM (random 96-bit nonce, associated data naming the hot key,
//!    e.g. `coinhub:key:a`), zeroizes the plaintext data key and returns an [`EncryptedSeed`]
//!    holding only the transit-wrapped data key, nonce and ciphertext.
//! 2. [`decrypt_seed`] unwraps the data key with `POST {mount}/decrypt/{key}` (which lands in
//!    Vault's audit log and needs a token allowed to decrypt with that key), then decrypts and
//!    authenticates the entropy and rebuilds the [`Mnemonic`] in zeroizing memory.
//!
//! Each process's token should be allowed `update` on `{mount}/decrypt/{its key}` only (and
//! `{mount}/datakey/plaintext/{its key}` at init time).

mod envelope;
mod error;
mod record;
mod vault;

pub use error::KeystoreError;
pub use record::{ENCRYPTED_SEED_VERSION, EncryptedSeed};
pub use vault::{DEFAULT_TIMEOUT, Vault};

use crate::mnemonic::Mnemonic;

/// Which hot key a seed belongs to (DESIGN: key A for `coinhubd`, key B for the cosigner; key
/// C is offline and never stored). Bound into the ciphertext as associated data, so a record
/// stored for one key cannot be decrypted as the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HotKey {
    /// Key A, used by `coinhubd`.
    A,
    /// Key B, used only by the cosigner.
    B,
}

impl HotKey {
    /// The AES-GCM associated data for this key: `b"coinhub:key:a"` or `b"coinhub:key:b"`.
    pub fn associated_data(self) -> &'static [u8] {
        match self {
            Self::A => b"coinhub:key:a",
            Self::B => b"coinhub:key:b",
        }
    }
}

/// A named transit key: `mount` is the transit engine's path (e.g. `transit`), `name` the key
/// (e.g. `coinhub-a`, type `aes256-gcm96`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitKey {
    /// Mount path of the transit secrets engine, without slashes.
    pub mount: String,
    /// Name of the encryption key under that mount.
    pub name: String,
}

/// Envelope-encrypts `mnemonic`'s BIP39 entropy for hot key `key` under a fresh data key from
/// `transit`. Writes nothing; the caller stores the result.
///
/// # Errors
/// [`KeystoreError::Unreachable`], [`KeystoreError::Sealed`],
/// [`KeystoreError::PermissionDenied`] (token may not use `datakey/plaintext` on that key),
/// [`KeystoreError::TransitKeyMissing`], [`KeystoreError::Other`].
pub async fn encrypt_seed(
    vault: &Vault,
    transit: &TransitKey,
    key: HotKey,
    mnemonic: &Mnemonic,
) -> Result<EncryptedSeed, KeystoreError> {
    let (data_key, wrapped_data_key) = vault
        .generate_data_key(&transit.mount, &transit.name)
        .await?;
    let entropy = mnemonic.entropy();
    let (nonce, ciphertext) = envelope::seal(&data_key, key.associated_data(), &entropy)?;
    // Check before the caller writes: the record opens to the same entropy.
    let reopened = envelope::open(&data_key, key.associated_data(), &nonce, &ciphertext)?;
    assert!(
        reopened.as_slice() == entropy.as_slice(),
        "aes-gcm round trip"
    );
    drop(data_key);
    tracing::debug!(
        transit_mount = %transit.mount,
        transit_key = %transit.name,
        hot_key = ?key,
        "seed encrypted under a new transit data key"
    );
    Ok(EncryptedSeed {
        version: ENCRYPTED_SEED_VERSION,
        transit_mount: transit.mount.clone(),
        transit_key: transit.name.clone(),
        wrapped_data_key,
        nonce,
        ciphertext,
    })
}

/// Decrypts a stored [`EncryptedSeed`] of hot key `key`: unwraps its data key with the transit
/// key named in the record, then authenticates and decrypts the entropy. The mnemonic is
/// zeroized when dropped; keep it only while signing.
///
/// # Errors
/// [`KeystoreError::UnsupportedVersion`]; [`KeystoreError::Corrupt`] if the record was
/// tampered with, belongs to the other hot key, or its data key is not the one that encrypted
/// it; and the Vault errors of [`encrypt_seed`] (`PermissionDenied` if the token may not use
/// `decrypt` on that key).
pub async fn decrypt_seed(
    vault: &Vault,
    key: HotKey,
    encrypted: &EncryptedSeed,
) -> Result<Mnemonic, KeystoreError> {
    if encrypted.version != ENCRYPTED_SEED_VERSION {
        return Err(KeystoreError::UnsupportedVersion {
            version: encrypted.version,
        });
    }
    let data_key = vault
        .unwrap_data_key(
            &encrypted.transit_mount,
            &encrypted.transit_key,
            &encrypted.wrapped_data_key,
        )
        .await?;
    let entropy = envelope::open(
        &data_key,
        key.associated_data(),
        &encrypted.nonce,
        &encrypted.ciphertext,
    )?;
    drop(data_key);
    // Authenticated, so only a record written by a different format could fail here.
    let mnemonic = Mnemonic::from_entropy(&entropy).map_err(|_| KeystoreError::Corrupt)?;
    tracing::debug!(
        transit_mount = %encrypted.transit_mount,
        transit_key = %encrypted.transit_key,
        hot_key = ?key,
        "seed decrypted"
    );
    Ok(mnemonic)
}
