//! The stored form of an envelope-encrypted secret (a seed, an API key secret).

use serde::{Deserialize, Serialize};

use super::envelope::NONCE_LEN_BYTES;

/// Format version written by this build.
pub const ENVELOPE_VERSION: u8 = 1;

/// A secret (a BIP39 seed's entropy, an API key's secret), envelope-encrypted: AES-256-GCM
/// under a data key that only Vault transit can unwrap, with associated data naming what the
/// secret belongs to. Holds no secret in the clear; the caller stores it (PostgreSQL, as
/// JSON). Serialized as:
///
/// ```json
/// {"version":1,"transit_mount":"transit","transit_key":"coinhub-a",
///  "wrapped_data_key":"vault:v1:…","nonce":"<24 hex>","ciphertext":"<hex>"}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version, [`ENVELOPE_VERSION`].
    pub version: u8,
    /// Transit mount path that wrapped the data key, e.g. `transit`.
    pub transit_mount: String,
    /// Transit key name that wrapped the data key, e.g. `coinhub-a`.
    pub transit_key: String,
    /// The data key encrypted by transit (`vault:v<key version>:<base64>`).
    pub wrapped_data_key: String,
    /// AES-GCM nonce, 96 bits, random per encryption (hex in JSON).
    #[serde(with = "hex_array")]
    pub nonce: [u8; NONCE_LEN_BYTES],
    /// AES-256-GCM ciphertext of the secret followed by the 16-byte tag (hex in JSON; 48
    /// bytes for the entropy of a 24-word mnemonic).
    #[serde(with = "hex_vec")]
    pub ciphertext: Vec<u8>,
}

/// `[u8; N]` as a hex string.
mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut bytes = [0u8; N];
        hex::decode_to_slice(&text, &mut bytes).map_err(D::Error::custom)?;
        Ok(bytes)
    }
}

/// `Vec<u8>` as a hex string.
mod hex_vec {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        hex::decode(text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the JSON shape and that it round-trips; a wrong-length nonce is refused.
    #[test]
    fn json_round_trip() {
        let record = Envelope {
            version: ENVELOPE_VERSION,
            transit_mount: "transit".to_owned(),
            transit_key: "coinhub-a".to_owned(),
            wrapped_data_key: "vault:v1:abc".to_owned(),
            nonce: [0xab; NONCE_LEN_BYTES],
            ciphertext: vec![1, 2, 255],
        };
        let json = serde_json::to_string(&record).expect("serialize");
        assert!(
            json.contains(r#""nonce":"abababababababababababab""#),
            "{json}"
        );
        assert!(json.contains(r#""ciphertext":"0102ff""#), "{json}");
        let back: Envelope = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, record);
        let short = json.replace("abababababababababababab", "abab");
        assert!(serde_json::from_str::<Envelope>(&short).is_err());
    }
}
