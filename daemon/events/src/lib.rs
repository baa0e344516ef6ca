//! The AMQP contract between `coinhubd` and the exchange services.
//!
//! Everything that crosses RabbitMQ is defined here, once, so producer and consumer cannot
//! drift apart: the exchange and queue names ([`topology`]), the JSON messages
//! ([`message`]), amounts in integer base units ([`amount`]), and the consumer loop that acks
//! only after the handler's own commit and dead-letters poison messages with their reason
//! ([`consumer`]); with feature `numeric`, amounts to and from PostgreSQL `NUMERIC(78,0)`
//! ([`numeric`]). The field-by-field reference with examples is `docs/events.md`.

pub mod amount;
pub mod consumer;
pub mod message;
#[cfg(feature = "numeric")]
pub mod numeric;
#[cfg(feature = "outbox")]
pub mod outbox;
pub mod publisher;
pub mod topology;
pub mod withdrawal;

pub use amount::{BaseUnits, BaseUnitsError};
pub use message::{
    AddressReply, AddressRequest, DepositEvent, DepositEventKind, MemberId, MessageError,
    SCHEMA_VERSION,
};
pub use withdrawal::{WithdrawalEvent, WithdrawalEventKind, WithdrawalRequest};
