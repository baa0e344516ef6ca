//! BIP39 mnemonics and seeds.
//!
//! Follows [BIP39](https://github.com/bitcoin/bips/blob/master/bip-0039.mediawiki): entropy of
//! 128–256 bits plus a SHA-256 checksum is written as 12–24 words of the English word list; the
//! 64-byte seed is `PBKDF2-HMAC-SHA512(password = words, salt = "mnemonic" || passphrase,
//! 2048 rounds)`. Coinhub generates 24-word mnemonics (256 bits of entropy) and uses the empty
//! passphrase unless told otherwise.

use std::fmt;

use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::{Zeroize, Zeroizing};

/// Number of entropy bytes in a mnemonic Coinhub generates (256 bits, 24 words).
pub const GENERATED_ENTROPY_LEN_BYTES: usize = 32;

/// Number of words in a mnemonic Coinhub generates.
pub const GENERATED_WORD_COUNT: usize = 24;

/// Length of a BIP39 seed in bytes.
pub const SEED_LEN_BYTES: usize = 64;

/// Why a mnemonic could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MnemonicError {
    /// The words or entropy are not a valid English BIP39 mnemonic (unknown word, bad word
    /// count, bad checksum, bad entropy length). The message names the rule, never a word.
    #[error("invalid bip39 mnemonic: {0}")]
    Invalid(bip39::Error),
    /// The operating system's random number generator failed.
    #[error("os random number generator failed")]
    EntropyUnavailable(#[source] rand::Error),
}

/// A BIP39 mnemonic (English word list). Zeroized on drop; `Debug` is redacted and there is
/// no `Display`: use [`Mnemonic::phrase`] to show the words deliberately.
#[derive(Clone, PartialEq, Eq)]
pub struct Mnemonic(bip39::Mnemonic);

impl Mnemonic {
    /// Generates a new 24-word mnemonic from 256 bits of operating-system randomness.
    ///
    /// # Errors
    /// [`MnemonicError::EntropyUnavailable`] if the OS random number generator fails.
    pub fn generate() -> Result<Self, MnemonicError> {
        let mut entropy = Zeroizing::new([0u8; GENERATED_ENTROPY_LEN_BYTES]);
        OsRng
            .try_fill_bytes(entropy.as_mut_slice())
            .map_err(MnemonicError::EntropyUnavailable)?;
        let mnemonic = Self::from_entropy(entropy.as_slice())?;
        assert_eq!(mnemonic.word_count(), GENERATED_WORD_COUNT);
        Ok(mnemonic)
    }

    /// Builds the mnemonic whose BIP39 entropy is `entropy` (16, 20, 24, 28 or 32 bytes,
    /// giving 12, 15, 18, 21 or 24 words).
    ///
    /// # Errors
    /// [`MnemonicError::Invalid`] if the length is not one of those.
    pub fn from_entropy(entropy: &[u8]) -> Result<Self, MnemonicError> {
        bip39::Mnemonic::from_entropy(entropy)
            .map(Self)
            .map_err(MnemonicError::Invalid)
    }

    /// Parses English words separated by whitespace (12, 15, 18, 21 or 24 words; the input is
    /// NFKD-normalized first, as BIP39 requires).
    ///
    /// # Errors
    /// [`MnemonicError::Invalid`] for an unknown word, a wrong word count or a bad checksum.
    pub fn parse(words: &str) -> Result<Self, MnemonicError> {
        bip39::Mnemonic::parse_in(bip39::Language::English, words)
            .map(Self)
            .map_err(MnemonicError::Invalid)
    }

    /// Number of words (12, 15, 18, 21 or 24).
    pub fn word_count(&self) -> usize {
        self.0.word_count()
    }

    /// The words separated by single spaces, for showing to an operator once (backup). The
    /// returned buffer is zeroized on drop.
    pub fn phrase(&self) -> Zeroizing<String> {
        // Sized up front so no reallocation leaves a stray copy of the words behind.
        let len = self.0.words().map(|w| w.len() + 1).sum::<usize>();
        let mut phrase = Zeroizing::new(String::with_capacity(len));
        for (i, word) in self.0.words().enumerate() {
            if i > 0 {
                phrase.push(' ');
            }
            phrase.push_str(word);
        }
        assert_eq!(phrase.len() + 1, len, "capacity covers the phrase");
        phrase
    }

    /// The BIP39 entropy (16–32 bytes; 32 for generated mnemonics), zeroized on drop. This is
    /// what the keystore encrypts: the words and the seed are both derived from it.
    pub fn entropy(&self) -> Zeroizing<Vec<u8>> {
        let (mut array, len) = self.0.to_entropy_array();
        let entropy = Zeroizing::new(array[..len].to_vec());
        array.zeroize();
        entropy
    }

    /// The 64-byte BIP39 seed with the empty passphrase.
    pub fn to_seed(&self) -> Seed {
        self.to_seed_with_passphrase("")
    }

    /// The 64-byte BIP39 seed with `passphrase` (NFKD-normalized, as BIP39 requires).
    pub fn to_seed_with_passphrase(&self, passphrase: &str) -> Seed {
        Seed(Zeroizing::new(self.0.to_seed(passphrase)))
    }
}

impl fmt::Debug for Mnemonic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mnemonic")
            .field("word_count", &self.word_count())
            .field("words", &"[redacted]")
            .finish()
    }
}

/// A 64-byte BIP39 seed, the input to a BIP32 master key. Zeroized on drop; `Debug` is
/// redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed(Zeroizing<[u8; SEED_LEN_BYTES]>);

impl Seed {
    /// Wraps raw seed bytes (e.g. a BIP32 test vector seed). BIP32 accepts 16–64 bytes; this
    /// type holds exactly the 64 bytes BIP39 produces.
    pub fn from_bytes(bytes: [u8; SEED_LEN_BYTES]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The seed bytes. Do not copy them into memory that is not zeroized.
    pub fn as_bytes(&self) -> &[u8; SEED_LEN_BYTES] {
        &self.0
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seed([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves that generated mnemonics have 24 words, 32 bytes of entropy, differ between
    /// calls, and re-parse to themselves.
    #[test]
    fn generate_makes_distinct_24_word_mnemonics() {
        let a = Mnemonic::generate().expect("os rng");
        let b = Mnemonic::generate().expect("os rng");
        assert_eq!(a.word_count(), 24);
        assert_eq!(a.entropy().len(), 32);
        assert_ne!(a, b);
        assert_eq!(Mnemonic::parse(&a.phrase()).expect("own phrase parses"), a);
    }

    /// Proves that `Debug` of a mnemonic and of a seed shows no words and no bytes.
    #[test]
    fn debug_is_redacted() {
        let m = Mnemonic::from_entropy(&[0u8; 16]).expect("valid entropy");
        let text = format!("{m:?} {:?}", m.to_seed());
        assert!(!text.contains("abandon"), "{text}");
        assert!(!text.contains("about"), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }

    /// Proves that a bad checksum and an unknown word are rejected without echoing words.
    #[test]
    fn parse_rejects_bad_input() {
        let bad_checksum = "abandon ".repeat(11) + "abandon";
        let err = Mnemonic::parse(&bad_checksum).expect_err("checksum is wrong");
        assert!(matches!(err, MnemonicError::Invalid(_)));
        let err = Mnemonic::parse("notaword ".repeat(12).trim()).expect_err("unknown word");
        assert!(!err.to_string().contains("notaword"), "{err}");
    }
}
