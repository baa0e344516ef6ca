//! Names and declarations of the AMQP exchanges and queues (DESIGN.md, "Events").
//!
//! - `coinhub.events` (topic, durable): everything coinhubd reports.
//! - `coinhub.commands` (direct, durable): requests to coinhubd, answered via `reply_to`.
//! - `coinhub.dead-letter` (topic, durable) with the queue `coinhub.dead-letter` bound to
//!   `#`: poison messages with the reason in the `x-coinhub-reason` header.
//!
//! Declarations are idempotent; every process declares what it uses at start.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};

/// Topic exchange of coinhubd's events.
pub const EVENTS_EXCHANGE: &str = "coinhub.events";
/// Direct exchange of commands to coinhubd.
pub const COMMANDS_EXCHANGE: &str = "coinhub.commands";
/// Topic exchange that receives poison messages, keyed by their original routing key.
pub const DEAD_LETTER_EXCHANGE: &str = "coinhub.dead-letter";
/// Durable queue that keeps every dead-lettered message for an operator.
pub const DEAD_LETTER_QUEUE: &str = "coinhub.dead-letter";
/// coinhubd's queue for `address.request` commands.
pub const ADDRESS_REQUEST_QUEUE: &str = "coinhubd.address.request";
/// coinhubd's queue for `withdrawal.request` commands.
pub const WITHDRAWAL_REQUEST_QUEUE: &str = "coinhubd.withdrawal.request";
/// The cosigner's own copy of every `withdrawal.request` (bound to the same routing key),
/// so it knows the requests without trusting coinhubd.
pub const COSIGNER_WITHDRAWAL_REQUEST_QUEUE: &str = "coinhub-cosigner.withdrawal.request";

/// Routing keys (DESIGN.md, "Events").
pub mod routing {
    /// A deposit was seen in the best chain, not yet final.
    pub const DEPOSIT_DETECTED: &str = "deposit.detected";
    /// A deposit reached its asset's `confirmations_min`.
    pub const DEPOSIT_CONFIRMED: &str = "deposit.confirmed";
    /// A deposit's block left the best chain.
    pub const DEPOSIT_ORPHANED: &str = "deposit.orphaned";
    /// Command: hand out a member's deposit address.
    pub const ADDRESS_REQUEST: &str = "address.request";
    /// Command: pay a withdrawal the exchange has locked.
    pub const WITHDRAWAL_REQUEST: &str = "withdrawal.request";
    /// A withdrawal's transaction is fully signed and stored.
    pub const WITHDRAWAL_SIGNED: &str = "withdrawal.signed";
    /// A withdrawal's transaction was sent to the node.
    pub const WITHDRAWAL_BROADCAST: &str = "withdrawal.broadcast";
    /// A withdrawal's transaction reached the asset's `confirmations_min`.
    pub const WITHDRAWAL_CONFIRMED: &str = "withdrawal.confirmed";
    /// A withdrawal was refused or cancelled before signing.
    pub const WITHDRAWAL_FAILED: &str = "withdrawal.failed";

    /// Whether losing a message with this routing key would lose money, so the publisher
    /// must see it routed to at least one queue (AMQP `mandatory`) before it counts as sent.
    /// `deposit.detected` is informational and may have no consumer; a `withdrawal.request`
    /// published before coinhubd declared its queue would leave the member's funds locked.
    pub fn requires_consumer(routing_key: &str) -> bool {
        matches!(
            routing_key,
            DEPOSIT_CONFIRMED
                | DEPOSIT_ORPHANED
                | WITHDRAWAL_REQUEST
                | WITHDRAWAL_CONFIRMED
                | WITHDRAWAL_FAILED
        )
    }
}

/// Header names coinhub sets on dead-lettered messages.
pub mod headers {
    /// Why the message was refused (the consumer's error text).
    pub const REASON: &str = "x-coinhub-reason";
    /// The queue the message was refused from.
    pub const QUEUE: &str = "x-coinhub-queue";
    /// The exchange the message was first published to.
    pub const ORIGINAL_EXCHANGE: &str = "x-coinhub-original-exchange";
}

/// Declares the three exchanges and the dead-letter queue. Idempotent.
///
/// Errors: the broker's, e.g. an exchange already declared with another type.
pub async fn declare_exchanges(channel: &Channel) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    for (name, kind) in [
        (EVENTS_EXCHANGE, ExchangeKind::Topic),
        (COMMANDS_EXCHANGE, ExchangeKind::Direct),
        (DEAD_LETTER_EXCHANGE, ExchangeKind::Topic),
    ] {
        channel
            .exchange_declare(name.into(), kind, durable, FieldTable::default())
            .await?;
    }
    declare_queue(channel, DEAD_LETTER_QUEUE, DEAD_LETTER_EXCHANGE, &["#"]).await
}

/// Declares BOTH queues that receive `withdrawal.request` (coinhubd's and the cosigner's),
/// bound to `coinhub.commands`. coinhubd and the cosigner each declare both at start, so a
/// request published while one of them has never run yet still reaches it: `mandatory` only
/// proves that *some* queue took the message. Idempotent.
///
/// Errors: the broker's.
pub async fn declare_withdrawal_request_queues(channel: &Channel) -> Result<(), lapin::Error> {
    for queue in [WITHDRAWAL_REQUEST_QUEUE, COSIGNER_WITHDRAWAL_REQUEST_QUEUE] {
        declare_queue(
            channel,
            queue,
            COMMANDS_EXCHANGE,
            &[routing::WITHDRAWAL_REQUEST],
        )
        .await?;
    }
    Ok(())
}

/// Declares a durable queue and binds it to `exchange` with each of `routing_keys`.
/// Idempotent.
///
/// Errors: the broker's, e.g. the queue exists with other arguments.
pub async fn declare_queue(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    routing_keys: &[&str],
) -> Result<(), lapin::Error> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await?;
    for key in routing_keys {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                (*key).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}
