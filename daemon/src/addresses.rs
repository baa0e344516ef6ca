//! Deposit addresses: one per (chain, member), derived from key A's account xpub at the
//! next free index, stable across restarts and concurrent requests.

use coinhub_events::MemberId;
use serde::Serialize;
use sqlx::PgPool;

use crate::custody::AccountKeys;

/// A member's deposit address on one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DepositAddress {
    /// The member.
    pub member: String,
    /// Configured chain name.
    pub chain: String,
    /// The address (EIP-55 for EVM).
    pub address: String,
    /// BIP32 index `i` of the address (EVM: `m/44'/60'/0'/0/i`).
    pub index: u32,
}

/// Why no address was handed out. Nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The chain is not in `[chains]`.
    #[error("unknown chain {0:?}")]
    UnknownChain(String),
    /// Every non-hardened index (2^31) is used.
    #[error("chain {0:?} has no free derivation index left")]
    Exhausted(String),
    /// Derivation failed.
    #[error("address derivation: {0}")]
    Derivation(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl AddressError {
    /// Whether the caller's input was at fault (and retrying cannot help).
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::UnknownChain(_))
    }
}

/// Returns `member`'s address on `chain`, creating it at the next free index if needed.
///
/// Concurrent calls for the same chain are serialised by a transaction-scoped advisory
/// lock, so two requests for one member get the same address and two members never share
/// an index.
///
/// Errors: see [`AddressError`].
pub async fn deposit_address(
    pool: &PgPool,
    keys: &AccountKeys,
    known_chains: &[String],
    chain: &str,
    member: &MemberId,
) -> Result<DepositAddress, AddressError> {
    if !known_chains.iter().any(|known| known == chain) {
        return Err(AddressError::UnknownChain(chain.to_owned()));
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('coinhub.deposit_addresses:' || $1))")
        .bind(chain)
        .execute(&mut *tx)
        .await?;
    let existing: Option<(String, i32)> = sqlx::query_as(
        "SELECT address, derivation_index FROM deposit_addresses WHERE chain = $1 AND member_id = $2",
    )
    .bind(chain)
    .bind(member.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let (address, index) = match existing {
        Some((address, index)) => (address, index),
        None => {
            let next: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(derivation_index) + 1, 0)::BIGINT FROM deposit_addresses WHERE chain = $1",
            )
            .bind(chain)
            .fetch_one(&mut *tx)
            .await?;
            let index =
                i32::try_from(next).map_err(|_| AddressError::Exhausted(chain.to_owned()))?;
            let derivation_index = u32::try_from(index).expect("index from a non-negative column");
            let address = keys
                .evm_deposit_address(derivation_index)
                .map_err(|e| AddressError::Derivation(e.to_string()))?;
            sqlx::query(
                "INSERT INTO deposit_addresses (chain, member_id, derivation_index, address)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(chain)
            .bind(member.as_str())
            .bind(index)
            .bind(&address)
            .execute(&mut *tx)
            .await?;
            tracing::info!(%chain, member = %member, index, %address, "deposit address issued");
            (address, index)
        }
    };
    tx.commit().await?;
    Ok(DepositAddress {
        member: member.to_string(),
        chain: chain.to_owned(),
        address,
        index: u32::try_from(index).expect("index from a non-negative column"),
    })
}
