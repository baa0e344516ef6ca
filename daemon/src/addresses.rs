//! Deposit addresses: one per (chain, member), derived at the chain's next free index (see
//! [`crate::addressing`]), stable across restarts and concurrent requests.

use coinhub_events::MemberId;
use serde::Serialize;
use sqlx::PgPool;

use std::collections::BTreeMap;

use crate::addressing::ChainAddressing;
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
    /// BIP32 index `i` of the address (EVM: `m/44'/60'/0'/0/i`; UTXO: `<account>/0/i` of
    /// each multisig key).
    pub index: u32,
    /// Whether this call derived the address (false: the member already had it).
    #[serde(skip)]
    pub newly_issued: bool,
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
    chains: &BTreeMap<String, ChainAddressing>,
    chain: &str,
    member: &MemberId,
) -> Result<DepositAddress, AddressError> {
    let Some(addressing) = chains.get(chain) else {
        return Err(AddressError::UnknownChain(chain.to_owned()));
    };
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
    let (address, index, newly_issued) = match existing {
        Some((address, index)) => (address, index, false),
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
            let derived = addressing
                .derive(keys, derivation_index)
                .map_err(|e| AddressError::Derivation(e.to_string()))?;
            let address = derived.address;
            sqlx::query(
                "INSERT INTO deposit_addresses (chain, member_id, derivation_index, address, script_pubkey)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(chain)
            .bind(member.as_str())
            .bind(index)
            .bind(&address)
            .bind(derived.script_pubkey)
            .execute(&mut *tx)
            .await?;
            tracing::info!(%chain, member = %member, index, %address, "deposit address issued");
            (address, index, true)
        }
    };
    tx.commit().await?;
    Ok(DepositAddress {
        member: member.to_string(),
        chain: chain.to_owned(),
        address,
        index: u32::try_from(index).expect("index from a non-negative column"),
        newly_issued,
    })
}
