//! Secrets at rest (custody seeds, the exchange's API key secrets): envelope encryption with
//! OpenBao/Vault transit. [`seal`] and [`open`] take any secret and the associated data that
//! names its owner; [`encrypt_seed`] and [`decrypt_seed`] apply them to a hot key's seed.
//!
//! Transit has no secp256k1, so Vault cannot sign for us; instead it guards the seed:
//!
//! 1. [`encrypt_seed`] asks transit for a fresh 256-bit data key
//!    (`POST {mount}/datakey/plaintext/{key}`, `bits = 256`), encrypts the mnemonic's BIP39
//!    entropy locally with AES-256-GCM (random 96-bit nonce, associated data naming the hot key,
//!    e.g. `coinhub:key:a`), zeroizes the plaintext data key and returns an [`Envelope`]
//!    holding only the transit-wrapped data key, nonce and ciphertext.
//! 2. [`decrypt_seed`] unwraps the data key with `POST {mount}/decrypt/{key}` (which lands in
//!    Vault's audit log and needs a token allowed to decrypt with that key), then decrypts and
//!    authenticates the entropy and rebuilds the [`Mnemonic`] in zeroizing memory.
//!
//! Each process's token should be allowed `update` on `{mount}/decrypt/{its key}` only (and
//! `{mount}/datakey/plaintext/{its key}` at init time).

mod config;
mod envelope;
mod error;
mod record;
mod vault;

pub use config::VaultConfig;
pub use error::KeystoreError;
pub use record::{ENVELOPE_VERSION, Envelope};
pub use vault::{DEFAULT_TIMEOUT, Vault};
use zeroize::Zeroizing;

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

/// Envelope-encrypts `plaintext` under a fresh data key from `transit`, binding it to
/// `associated_data` (what the secret belongs to, e.g. `coinhub:key:a` or
/// `coinhub:api-key:ck_…`): only the same associated data opens it. Writes nothing; the caller
/// stores the result.
///
/// # Errors
/// [`KeystoreError::Unreachable`], [`KeystoreError::Sealed`],
/// [`KeystoreError::PermissionDenied`] (token may not use `datakey/plaintext` on that key),
/// [`KeystoreError::TransitKeyMissing`], [`KeystoreError::Other`].
pub async fn seal(
    vault: &Vault,
    transit: &TransitKey,
    associated_data: &[u8],
    plaintext: &[u8],
) -> Result<Envelope, KeystoreError> {
    let (data_key, wrapped_data_key) = vault
        .generate_data_key(&transit.mount, &transit.name)
        .await?;
    let (nonce, ciphertext) = envelope::seal(&data_key, associated_data, plaintext)?;
    // Check before the caller writes: the record opens to the same plaintext.
    let reopened = envelope::open(&data_key, associated_data, &nonce, &ciphertext)?;
    assert!(reopened.as_slice() == plaintext, "aes-gcm round trip");
    drop(data_key);
    Ok(Envelope {
        version: ENVELOPE_VERSION,
        transit_mount: transit.mount.clone(),
        transit_key: transit.name.clone(),
        wrapped_data_key,
        nonce,
        ciphertext,
    })
}

/// Opens an [`Envelope`] sealed with `associated_data`: unwraps its data key with the transit
/// key named in the record (`POST {mount}/decrypt/{key}`, one Vault request), then
/// authenticates and decrypts. The plaintext is zeroized when dropped.
///
/// # Errors
/// [`KeystoreError::UnsupportedVersion`]; [`KeystoreError::Corrupt`] if the record was
/// tampered with, was sealed with other associated data, or its data key is not the one that
/// encrypted it; and the Vault errors of [`seal`] (`PermissionDenied` if the token may not
/// use `decrypt` on that key).
pub async fn open(
    vault: &Vault,
    associated_data: &[u8],
    sealed: &Envelope,
) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    if sealed.version != ENVELOPE_VERSION {
        return Err(KeystoreError::UnsupportedVersion {
            version: sealed.version,
        });
    }
    let data_key = vault
        .unwrap_data_key(
            &sealed.transit_mount,
            &sealed.transit_key,
            &sealed.wrapped_data_key,
        )
        .await?;
    envelope::open(
        &data_key,
        associated_data,
        &sealed.nonce,
        &sealed.ciphertext,
    )
}

/// Envelope-encrypts `mnemonic`'s BIP39 entropy for hot key `key` ([`seal`] with
/// [`HotKey::associated_data`]). Writes nothing; the caller stores the result.
///
/// # Errors
/// Those of [`seal`].
pub async fn encrypt_seed(
    vault: &Vault,
    transit: &TransitKey,
    key: HotKey,
    mnemonic: &Mnemonic,
) -> Result<Envelope, KeystoreError> {
    let sealed = seal(vault, transit, key.associated_data(), &mnemonic.entropy()).await?;
    tracing::debug!(
        transit_mount = %transit.mount,
        transit_key = %transit.name,
        hot_key = ?key,
        "seed encrypted under a new transit data key"
    );
    Ok(sealed)
}

/// Decrypts a stored [`Envelope`] of hot key `key` ([`open`] with
/// [`HotKey::associated_data`]) into its mnemonic, which is zeroized when dropped; keep it
/// only while signing.
///
/// # Errors
/// Those of [`open`] ([`KeystoreError::Corrupt`] also if the record belongs to the other hot
/// key).
pub async fn decrypt_seed(
    vault: &Vault,
    key: HotKey,
    encrypted: &Envelope,
) -> Result<Mnemonic, KeystoreError> {
    let entropy = open(vault, key.associated_data(), encrypted).await?;
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
