//! The withdrawal messages: the `withdrawal.request` command the exchange sends to
//! `coinhubd` (and that the cosigner mirrors into its own queue), and the `withdrawal.*`
//! events `coinhubd` publishes as a withdrawal moves through
//! `requested → signed → broadcast → confirmed | failed` (DESIGN.md, "Withdrawals").

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::amount::BaseUnits;
use crate::message::{MemberId, MessageError, parse_versioned};
use crate::topology::routing;

/// `withdrawal.request` on `coinhub.commands`: the exchange has locked `amount` of `member`'s
/// `asset` and asks coinhubd to pay it to `destination`.
///
/// `id` is the withdrawal's id and its idempotency key: a request whose id coinhubd already
/// knows is acknowledged and changes nothing, so one id is at most one payout.
///
/// `amount` and `destination` are kept as the sender wrote them: a malformed amount (zero,
/// negative, not an integer) or destination is not a malformed *message* but a refused
/// *withdrawal*, answered with `withdrawal.failed` and its reason so the exchange can unlock
/// the member's funds. Only a body that lacks the id or member (nothing could be answered)
/// goes to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalRequest {
    /// Always [`crate::SCHEMA_VERSION`].
    pub version: u32,
    /// The withdrawal's id (idempotency key), chosen by the exchange.
    pub id: Uuid,
    /// When the exchange locked the funds (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// The member whose locked funds pay the withdrawal.
    pub member: MemberId,
    /// The configured asset symbol, e.g. `"BTC"`, `"ETH"`, `"USDT"`; it names the chain.
    pub asset: String,
    /// Amount to deliver, in the asset's base units, as a decimal integer string (validated
    /// by coinhubd: a positive integer of at most 78 digits).
    pub amount: String,
    /// The asset's decimals as the exchange knows them; must equal coinhubd's.
    pub decimals: u8,
    /// Where to pay, written as the chain writes addresses (EIP-55 for EVM, Base58 or
    /// bech32 for Bitcoin, Base58 for Dash).
    pub destination: String,
}

impl WithdrawalRequest {
    /// Parses a request body. Errors: [`MessageError::Malformed`],
    /// [`MessageError::UnsupportedVersion`].
    pub fn parse(body: &[u8]) -> Result<Self, MessageError> {
        parse_versioned(body)
    }
}

/// Which step of a withdrawal's life an event reports; it is also the routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WithdrawalEventKind {
    /// Fully signed (A and the cosigner's B); the raw transaction is stored and will be
    /// broadcast (or re-broadcast after a restart), never rebuilt.
    #[serde(rename = "withdrawal.signed")]
    Signed,
    /// Sent to the node; `txid` is known.
    #[serde(rename = "withdrawal.broadcast")]
    Broadcast,
    /// The paying transaction has the asset's `confirmations_min`: the exchange settles
    /// (debits the member's locked funds).
    #[serde(rename = "withdrawal.confirmed")]
    Confirmed,
    /// Refused or cancelled before anything was signed (`reason` says why): the exchange
    /// unlocks the member's funds. Nothing was or will be paid for this id.
    #[serde(rename = "withdrawal.failed")]
    Failed,
}

impl WithdrawalEventKind {
    /// The routing key on `coinhub.events`, e.g. `"withdrawal.confirmed"`.
    pub fn routing_key(self) -> &'static str {
        match self {
            Self::Signed => routing::WITHDRAWAL_SIGNED,
            Self::Broadcast => routing::WITHDRAWAL_BROADCAST,
            Self::Confirmed => routing::WITHDRAWAL_CONFIRMED,
            Self::Failed => routing::WITHDRAWAL_FAILED,
        }
    }
}

/// `withdrawal.signed`, `withdrawal.broadcast`, `withdrawal.confirmed` and
/// `withdrawal.failed` on `coinhub.events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalEvent {
    /// Always [`crate::SCHEMA_VERSION`].
    pub version: u32,
    /// This message's id: the consumer's idempotency key. A republished message keeps it.
    pub id: Uuid,
    /// Which event this is; equals the routing key.
    pub event: WithdrawalEventKind,
    /// When coinhubd recorded the state change (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// The withdrawal's id (the request's `id`).
    pub withdrawal_id: Uuid,
    /// The member of the request.
    pub member: MemberId,
    /// The configured chain name, e.g. `"bitcoin"`; empty when the request named an unknown
    /// asset.
    pub chain: String,
    /// The asset symbol of the request (upper case when known).
    pub asset: String,
    /// The requested amount in base units, as the request wrote it (it may be the invalid
    /// value a `withdrawal.failed` refuses).
    pub amount: String,
    /// The asset's decimals.
    pub decimals: u8,
    /// The destination of the request, as written.
    pub destination: String,
    /// The paying transaction's id (UTXO txid in RPC byte order; EVM `0x` hash of the
    /// executor's `execTransaction`), from `withdrawal.signed` on. After a fee bump the id of
    /// the replacement that is current (for `confirmed`: the one that was mined).
    pub txid: Option<String>,
    /// This withdrawal's share of the network fee, in base units of `fee_asset` (a batched
    /// UTXO transaction's fee is split evenly, the remainder to the first request; EVM: the
    /// executor's gas × effective gas price, known only at `confirmed`).
    pub fee: Option<BaseUnits>,
    /// The asset the network fee is paid in (the chain's native coin).
    pub fee_asset: Option<String>,
    /// Height of the block holding `txid` (`confirmed` only).
    pub block_height: Option<u64>,
    /// Why the withdrawal failed (`failed` only): names the rule or field, e.g.
    /// `"destination: bc1q... is a bitcoin address, expected bitcoin-regtest"`.
    pub reason: Option<String>,
}

impl WithdrawalEvent {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request_json(amount: &str) -> String {
        format!(
            r#"{{"version":1,"id":"00000000-0000-0000-0000-000000000007","occurred_at":"2026-11-22T10:00:00Z","member":"alice","asset":"BTC","amount":"{amount}","decimals":8,"destination":"bcrt1qxyz"}}"#
        )
    }

    #[test]
    fn a_request_keeps_an_invalid_amount_for_coinhubd_to_refuse() {
        let request = WithdrawalRequest::parse(request_json("-5").as_bytes()).expect("parses");
        assert_eq!(request.amount, "-5");
        assert_eq!(request.member.as_str(), "alice");
    }

    #[test]
    fn a_request_without_member_is_malformed() {
        let body = request_json("5").replace(r#""member":"alice","#, "");
        let error = WithdrawalRequest::parse(body.as_bytes()).expect_err("refused");
        assert!(
            matches!(&error, MessageError::Malformed(text) if text.contains("member")),
            "{error}"
        );
    }

    #[test]
    fn an_event_must_match_its_routing_key() {
        let event = WithdrawalEvent {
            version: 1,
            id: Uuid::from_u128(1),
            event: WithdrawalEventKind::Confirmed,
            occurred_at: time::macros::datetime!(2026-11-22 10:00:00 UTC),
            withdrawal_id: Uuid::from_u128(7),
            member: "alice".parse().expect("member"),
            chain: "bitcoin".into(),
            asset: "BTC".into(),
            amount: "1000".into(),
            decimals: 8,
            destination: "bcrt1qxyz".into(),
            txid: Some("ab".repeat(32)),
            fee: Some(BaseUnits::from(141u128)),
            fee_asset: Some("BTC".into()),
            block_height: Some(7),
            reason: None,
        };
        let body = serde_json::to_vec(&event).expect("json");
        assert_eq!(
            WithdrawalEvent::parse(&body, "withdrawal.confirmed").expect("parses"),
            event
        );
        assert!(matches!(
            WithdrawalEvent::parse(&body, "withdrawal.failed"),
            Err(MessageError::RoutingKeyMismatch { .. })
        ));
    }
}
