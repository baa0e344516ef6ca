//! What an operator checks about each market's pipeline: how far its read models
//! (`orders`, `trades`) and its `exchange.events` messages are behind what has settled.

use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;

/// One market's state, from `trading_command_batches`, `trading_projection` and
/// `trading_event_batches`. Sequence numbers are the market's command numbers (1, 2, … in
/// command-log order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MarketStatus {
    /// Market name.
    pub market: String,
    /// The last command of the last settled batch (0: none yet).
    pub settled_seq: u64,
    /// Every batch ending at or before this command is in `orders` and `trades`.
    pub projected_seq: u64,
    /// Settled batches not yet in `orders` and `trades`.
    pub unprojected_batches: u64,
    /// `exchange.events` messages stored and not yet confirmed by the broker.
    pub unpublished_messages: u64,
    /// When the projection last advanced (or the market was recorded), RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    pub projected_at: OffsetDateTime,
}

/// The status of every market the engine has recorded, by name.
///
/// Errors: the database's, or a negative count (a corrupt row).
pub async fn market_status(pool: &PgPool) -> Result<Vec<MarketStatus>, sqlx::Error> {
    let rows: Vec<(String, i64, i64, i64, i64, OffsetDateTime)> = sqlx::query_as(
        "SELECT p.market,
                coalesce((SELECT max(c.last_seq) FROM trading_command_batches c
                           WHERE c.market = p.market), 0),
                p.projected_seq,
                (SELECT count(*) FROM trading_event_batches e
                  WHERE e.market = p.market AND e.first_seq > p.projected_seq),
                (SELECT coalesce(sum(e.event_count - e.published), 0)::bigint
                   FROM trading_event_batches e
                  WHERE e.market = p.market AND e.published_at IS NULL),
                p.updated_at
           FROM trading_projection p ORDER BY p.market",
    )
    .fetch_all(pool)
    .await?;
    let count = |value: i64| {
        u64::try_from(value).map_err(|_| sqlx::Error::Decode(format!("negative {value}").into()))
    };
    rows.into_iter()
        .map(|(market, settled, projected, batches, messages, at)| {
            Ok(MarketStatus {
                market,
                settled_seq: count(settled)?,
                projected_seq: count(projected)?,
                unprojected_batches: count(batches)?,
                unpublished_messages: count(messages)?,
                projected_at: at,
            })
        })
        .collect()
}
