//! AES-256-GCM under a transit data key: the local half of envelope encryption (no I/O).

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use super::KeystoreError;

/// Length of an AES-256 data key in bytes (transit `bits = 256`).
pub(crate) const DATA_KEY_LEN_BYTES: usize = 32;

/// Length of an AES-GCM nonce in bytes (96 bits).
pub(crate) const NONCE_LEN_BYTES: usize = 12;

/// Length of the AES-GCM authentication tag appended to the ciphertext.
pub(crate) const TAG_LEN_BYTES: usize = 16;

/// A plaintext AES-256 data key, zeroized on drop.
pub(crate) struct DataKey(Zeroizing<[u8; DATA_KEY_LEN_BYTES]>);

impl DataKey {
    /// Takes ownership of key bytes (the caller's buffer should itself be zeroizing).
    pub(crate) fn new(bytes: Zeroizing<[u8; DATA_KEY_LEN_BYTES]>) -> Self {
        Self(bytes)
    }

    fn cipher(&self) -> Aes256Gcm {
        // The `zeroize` feature of aes-gcm erases the expanded key when the cipher drops.
        Aes256Gcm::new_from_slice(self.0.as_slice()).expect("data key is exactly 32 bytes")
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

/// Encrypts `plaintext` with a fresh random 96-bit nonce; returns `(nonce, ciphertext ‖ tag)`.
pub(crate) fn seal(
    key: &DataKey,
    associated_data: &[u8],
    plaintext: &[u8],
) -> Result<([u8; NONCE_LEN_BYTES], Vec<u8>), KeystoreError> {
    let mut nonce = [0u8; NONCE_LEN_BYTES];
    OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(|_| KeystoreError::Other("os random number generator failed".to_owned()))?;
    let payload = Payload {
        msg: plaintext,
        aad: associated_data,
    };
    let ciphertext = key
        .cipher()
        .encrypt(Nonce::from_slice(&nonce), payload)
        .map_err(|_| KeystoreError::Other("aes-gcm encryption failed".to_owned()))?;
    assert_eq!(ciphertext.len(), plaintext.len() + TAG_LEN_BYTES);
    Ok((nonce, ciphertext))
}

/// Decrypts and authenticates `ciphertext ‖ tag`.
///
/// # Errors
/// [`KeystoreError::Corrupt`] if authentication fails (wrong key, wrong associated data,
/// tampered nonce or ciphertext).
pub(crate) fn open(
    key: &DataKey,
    associated_data: &[u8],
    nonce: &[u8; NONCE_LEN_BYTES],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    let payload = Payload {
        msg: ciphertext,
        aad: associated_data,
    };
    key.cipher()
        .decrypt(Nonce::from_slice(nonce), payload)
        .map(Zeroizing::new)
        .map_err(|_| KeystoreError::Corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> DataKey {
        DataKey::new(Zeroizing::new([byte; DATA_KEY_LEN_BYTES]))
    }

    /// Proves the round trip, that nonces differ between calls, and that a wrong key, wrong
    /// associated data, a flipped ciphertext bit and a flipped nonce bit all give `Corrupt`.
    #[test]
    fn seal_open_and_tamper() {
        let plaintext = [7u8; 32];
        let (nonce, ciphertext) = seal(&key(1), b"coinhub:key:a", &plaintext).expect("seal");
        let (nonce_2, _) = seal(&key(1), b"coinhub:key:a", &plaintext).expect("seal");
        assert_ne!(nonce, nonce_2);
        let opened = open(&key(1), b"coinhub:key:a", &nonce, &ciphertext).expect("open");
        assert_eq!(opened.as_slice(), plaintext);

        let corrupt = |result: Result<Zeroizing<Vec<u8>>, KeystoreError>| {
            matches!(result, Err(KeystoreError::Corrupt))
        };
        assert!(corrupt(open(
            &key(2),
            b"coinhub:key:a",
            &nonce,
            &ciphertext
        )));
        assert!(corrupt(open(
            &key(1),
            b"coinhub:key:b",
            &nonce,
            &ciphertext
        )));
        let mut flipped = ciphertext.clone();
        flipped[0] ^= 1;
        assert!(corrupt(open(&key(1), b"coinhub:key:a", &nonce, &flipped)));
        let mut bad_nonce = nonce;
        bad_nonce[11] ^= 1;
        assert!(corrupt(open(
            &key(1),
            b"coinhub:key:a",
            &bad_nonce,
            &ciphertext
        )));
    }
}
