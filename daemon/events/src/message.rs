//! The JSON messages on `coinhub.events` and `coinhub.commands`.
//!
//! Every message carries `"version": 1`, an `id` (UUID) that consumers use as the
//! idempotency key, and `occurred_at` (RFC 3339, UTC). Amounts are [`BaseUnits`] strings with
//! the asset's `decimals` beside them. Parsing validates all of that, so a consumer either
//! gets a well-formed message or a [`MessageError`] it can put on the dead-letter queue.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::amount::BaseUnits;
use crate::topology::routing;

/// The message schema version this crate writes and accepts.
pub const SCHEMA_VERSION: u32 = 1;

/// Why bytes from the broker are not a message this crate accepts. The `Display` text is
/// what goes into the dead-letter queue's `x-coinhub-reason` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Not JSON, or JSON with missing, extra-typed or invalid fields.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A `version` other than [`SCHEMA_VERSION`].
    #[error("unsupported message version {found} (this consumer reads version {SCHEMA_VERSION})")]
    UnsupportedVersion {
        /// The version the message declared.
        found: u32,
    },
    /// The message's `event` does not match the routing key it arrived with.
    #[error("event {event:?} arrived with routing key {routing_key:?}")]
    RoutingKeyMismatch {
        /// The routing key of the delivery.
        routing_key: String,
        /// The `event` field of the body.
        event: String,
    },
    /// A routing key this consumer has no handler for.
    #[error("unknown routing key {0:?}")]
    UnknownRoutingKey(String),
}

/// Parses a versioned JSON message, refusing any version but [`SCHEMA_VERSION`].
pub(crate) fn parse_versioned<T: for<'de> Deserialize<'de>>(
    body: &[u8],
) -> Result<T, MessageError> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let version: Version =
        serde_json::from_slice(body).map_err(|e| MessageError::Malformed(e.to_string()))?;
    if version.version != SCHEMA_VERSION {
        return Err(MessageError::UnsupportedVersion {
            found: version.version,
        });
    }
    serde_json::from_slice(body).map_err(|e| MessageError::Malformed(e.to_string()))
}

/// An exchange member's id as the exchange knows it (Peatio's UID): 1 to 64 characters of
/// ASCII letters, digits, `_`, `-` and `.`. Serialized as that text.
///
/// Shared text: a clone is a reference count, not a copy. The exchange's settlement clones a
/// member's id into every ledger account key and order it touches, many times per trade.
/// Equality, order and hash are the text's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(Arc<str>);

impl MemberId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A map keyed by member ids can be searched with the id's text (equality and hash are the
/// text's), without parsing it into a `MemberId`.
impl std::borrow::Borrow<str> for MemberId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for MemberId {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if value.is_empty() || value.len() > 64 || !value.chars().all(valid_char) {
            return Err(format!(
                "member id {value:?} must be 1-64 characters of letters, digits, '_', '-' or '.'"
            ));
        }
        Ok(Self(Arc::from(value)))
    }
}

impl Serialize for MemberId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MemberId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which step of a deposit's life an event reports; it is also the routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DepositEventKind {
    /// Seen in a block (or the mempool) of the best chain, not yet final.
    #[serde(rename = "deposit.detected")]
    Detected,
    /// Reached the asset's `confirmations_min`: the exchange may credit it.
    #[serde(rename = "deposit.confirmed")]
    Confirmed,
    /// Its block left the best chain. If `was_confirmed` is true it may already have been
    /// credited and needs an operator's attention.
    #[serde(rename = "deposit.orphaned")]
    Orphaned,
}

impl DepositEventKind {
    /// The routing key on `coinhub.events`, e.g. `"deposit.confirmed"`.
    pub fn routing_key(self) -> &'static str {
        match self {
            Self::Detected => routing::DEPOSIT_DETECTED,
            Self::Confirmed => routing::DEPOSIT_CONFIRMED,
            Self::Orphaned => routing::DEPOSIT_ORPHANED,
        }
    }
}

/// `deposit.detected`, `deposit.confirmed` and `deposit.orphaned` on `coinhub.events`.
///
/// A deposit is one transfer to one of our deposit addresses, identified by `deposit_id`,
/// which is stable across its events and derived from `(chain, txid, index)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositEvent {
    /// Always [`SCHEMA_VERSION`].
    pub version: u32,
    /// This message's id: the consumer's idempotency key. A republished message keeps it.
    pub id: Uuid,
    /// Which event this is; equals the routing key.
    pub event: DepositEventKind,
    /// When coinhubd recorded the state change (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// The deposit's stable id: UUID v5 of `"{chain}/{txid}/{index}"` (see
    /// [`DepositEvent::deposit_id_for`]).
    pub deposit_id: Uuid,
    /// The configured chain name, e.g. `"ethereum"`.
    pub chain: String,
    /// The configured asset symbol, e.g. `"ETH"` or `"USDT"`.
    pub asset: String,
    /// The member whose deposit address received the transfer.
    pub member: MemberId,
    /// The deposit address, as the chain writes it (EIP-55 for EVM).
    pub address: String,
    /// Transaction id (EVM: `0x`-prefixed 32-byte hash, lower case).
    pub txid: String,
    /// Which transfer of the transaction: the log index in its block for ERC-20 `Transfer`
    /// logs, 0 for a native EVM transfer, the output index (vout) for UTXO chains.
    pub index: u32,
    /// Amount in the asset's base units (wei, token units, satoshi).
    pub amount: BaseUnits,
    /// The asset's number of decimals: `amount / 10^decimals` is the amount in whole units.
    pub decimals: u8,
    /// Height of the block that holds the transaction.
    pub block_height: u64,
    /// Hash of that block (`0x`-prefixed hex for EVM).
    pub block_hash: String,
    /// Confirmations when the event was written: `tip_height - block_height + 1`.
    pub confirmations: u64,
    /// For `deposit.orphaned`: whether the deposit had been `confirmed` (and so may have
    /// been credited) before its block left the best chain. Always false for other events.
    pub was_confirmed: bool,
}

impl DepositEvent {
    /// Namespace of [`DepositEvent::deposit_id_for`]'s UUID v5 (fixed forever).
    pub const DEPOSIT_ID_NAMESPACE: Uuid =
        Uuid::from_u128(0x6c0b_4f1e_9f3a_4d2b_8a57_c01a_1b2c_3d4e);

    /// The stable deposit id of transfer `index` of `txid` on `chain`.
    pub fn deposit_id_for(chain: &str, txid: &str, index: u32) -> Uuid {
        Uuid::new_v5(
            &Self::DEPOSIT_ID_NAMESPACE,
            format!("{chain}/{txid}/{index}").as_bytes(),
        )
    }

    /// Parses a delivery's body and checks it against the routing key it came with.
    ///
    /// Errors: [`MessageError::Malformed`], [`MessageError::UnsupportedVersion`],
    /// [`MessageError::RoutingKeyMismatch`].
    pub fn parse(body: &[u8], routing_key: &str) -> Result<Self, MessageError> {
        let event: Self = parse_versioned(body)?;
        if event.event.routing_key() != routing_key {
            return Err(MessageError::RoutingKeyMismatch {
                routing_key: routing_key.to_owned(),
                event: event.event.routing_key().to_owned(),
            });
        }
        Ok(event)
    }
}

/// `address.request` on `coinhub.commands`: asks coinhubd for `member`'s deposit address on
/// `chain`. The reply ([`AddressReply`]) goes to the AMQP `reply_to` queue with the request's
/// `correlation_id`. The same member and chain always get the same address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    /// Always [`SCHEMA_VERSION`].
    pub version: u32,
    /// The request's id (idempotency key).
    pub id: Uuid,
    /// The member who needs an address.
    pub member: MemberId,
    /// The configured chain name, e.g. `"ethereum"`.
    pub chain: String,
}

impl AddressRequest {
    /// Parses a request body. Errors: [`MessageError::Malformed`],
    /// [`MessageError::UnsupportedVersion`].
    pub fn parse(body: &[u8]) -> Result<Self, MessageError> {
        parse_versioned(body)
    }
}

/// The reply to an [`AddressRequest`]: either `address` or `error` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressReply {
    /// Always [`SCHEMA_VERSION`].
    pub version: u32,
    /// This reply's id.
    pub id: Uuid,
    /// The id of the request answered.
    pub request_id: Uuid,
    /// When the reply was written (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// The member of the request.
    pub member: MemberId,
    /// The chain of the request.
    pub chain: String,
    /// The deposit address (EIP-55 for EVM), when the request succeeded.
    pub address: Option<String>,
    /// Why the request was refused (e.g. an unknown chain), when it failed.
    pub error: Option<String>,
}

impl AddressReply {
    /// Parses a reply body. Errors: [`MessageError::Malformed`],
    /// [`MessageError::UnsupportedVersion`].
    pub fn parse(body: &[u8]) -> Result<Self, MessageError> {
        parse_versioned(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_event() -> DepositEvent {
        DepositEvent {
            version: SCHEMA_VERSION,
            id: Uuid::from_u128(1),
            event: DepositEventKind::Confirmed,
            occurred_at: time::macros::datetime!(2026-11-22 10:00:00 UTC),
            deposit_id: DepositEvent::deposit_id_for("ethereum", "0xab", 0),
            chain: "ethereum".into(),
            asset: "ETH".into(),
            member: "alice".parse().expect("valid member"),
            address: "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".into(),
            txid: "0xab".into(),
            index: 0,
            amount: BaseUnits::from(1_500_000_000_000_000_000u128),
            decimals: 18,
            block_height: 12,
            block_hash: "0xcd".into(),
            confirmations: 3,
            was_confirmed: false,
        }
    }

    #[test]
    fn deposit_event_round_trips_and_checks_routing_key() {
        let event = sample_event();
        let json = serde_json::to_vec(&event).expect("serializes");
        let text = String::from_utf8(json.clone()).expect("utf-8");
        assert!(text.contains("\"event\":\"deposit.confirmed\""), "{text}");
        assert!(
            text.contains("\"amount\":\"1500000000000000000\""),
            "{text}"
        );
        assert!(
            text.contains("\"occurred_at\":\"2026-11-22T10:00:00Z\""),
            "{text}"
        );
        assert_eq!(DepositEvent::parse(&json, "deposit.confirmed"), Ok(event));
        assert!(matches!(
            DepositEvent::parse(&json, "deposit.detected"),
            Err(MessageError::RoutingKeyMismatch { .. })
        ));
    }

    #[test]
    fn refuses_garbage_other_versions_and_bad_fields() {
        assert!(matches!(
            DepositEvent::parse(b"not json", "deposit.confirmed"),
            Err(MessageError::Malformed(_))
        ));
        let mut value = serde_json::to_value(sample_event()).expect("serializes");
        value["version"] = 2.into();
        let body = serde_json::to_vec(&value).expect("serializes");
        assert_eq!(
            DepositEvent::parse(&body, "deposit.confirmed"),
            Err(MessageError::UnsupportedVersion { found: 2 })
        );
        value["version"] = 1.into();
        value["amount"] = "1.5".into();
        let body = serde_json::to_vec(&value).expect("serializes");
        assert!(matches!(
            DepositEvent::parse(&body, "deposit.confirmed"),
            Err(MessageError::Malformed(reason)) if reason.contains("amount")
        ));
    }

    #[test]
    fn deposit_id_is_stable_and_distinct() {
        let a = DepositEvent::deposit_id_for("ethereum", "0xab", 0);
        assert_eq!(a, DepositEvent::deposit_id_for("ethereum", "0xab", 0));
        assert_ne!(a, DepositEvent::deposit_id_for("ethereum", "0xab", 1));
        assert_ne!(a, DepositEvent::deposit_id_for("sepolia", "0xab", 0));
    }

    #[test]
    fn member_ids_are_validated() {
        assert!("ID7F3A2B91C0".parse::<MemberId>().is_ok());
        assert!("".parse::<MemberId>().is_err());
        assert!("a b".parse::<MemberId>().is_err());
        assert!("x".repeat(65).parse::<MemberId>().is_err());
    }

    /// A member id is its text on the wire, and compares and orders as its text; a clone
    /// shares it.
    #[test]
    fn member_ids_are_text_on_the_wire_and_in_order() {
        let alice: MemberId = "alice".parse().expect("member");
        assert_eq!(serde_json::to_string(&alice).expect("json"), r#""alice""#);
        let back: MemberId = serde_json::from_str(r#""alice""#).expect("json");
        assert_eq!(back, alice);
        assert!(serde_json::from_str::<MemberId>(r#""a b""#).is_err());
        let bob: MemberId = "bob".parse().expect("member");
        assert!(alice < bob && "alice" < "bob");
        let copy = alice.clone();
        assert!(
            std::ptr::eq(copy.as_str(), alice.as_str()),
            "a clone shares the text"
        );
    }
}
