//! The ledger account ids of a batch's changes, opening the accounts that do not exist yet,
//! with the ids seen before kept in memory ([`AccountIds`]).
//!
//! Without the memory every batch paid two statements (open with `INSERT … ON CONFLICT DO
//! NOTHING`, then read the ids) on its critical path, ~1 ms each for 50 legs, although a
//! market's members rarely change. Keeping ids is safe because an account is never deleted
//! and its id never changes (`0009_ledger_statement_triggers.sql`, trigger `accounts_kept`).
//!
//! Missing accounts are opened in their own statement, committed at once, **before** the
//! batch's transaction begins: a batch's transaction writes its entries before the batch
//! ahead of it commits (migration 0016), and if both opened the same new account inside
//! their transactions, the earlier batch could wait for the later one's uncommitted row while
//! the later one waits for the earlier one's commit, a wait PostgreSQL cannot see as a
//! deadlock. An account opened for a batch that then rolls back stays open, empty (zero
//! balance, no entries), as if `journal::ensure_account` had opened it.

use std::collections::HashMap;
use std::sync::RwLock;

use sqlx::{PgConnection, PgPool};

use crate::ledger::AccountKey;

/// Most ids kept (about 150 bytes each). Past it the memory is emptied and refills with the
/// accounts batches use: bounded memory for exchanges with millions of member accounts, at
/// the price of one slower batch per refill.
const KNOWN_MAX: usize = 1_000_000;

/// Ids of ledger accounts known to be committed, by key, at most [`KNOWN_MAX`]. Shared by
/// every market's writers.
#[derive(Debug, Default)]
pub(crate) struct AccountIds {
    known: RwLock<HashMap<AccountKey, i64>>,
}

impl AccountIds {
    /// The id of each account of `keys`, opening those that do not exist yet. Known ids
    /// come from memory; the others are opened and looked up on a connection of `pool`, in
    /// two statements committed at once (not in any batch's transaction), then kept.
    ///
    /// Errors: the database's.
    pub(crate) async fn resolve<'k>(
        &self,
        pool: &PgPool,
        keys: impl Iterator<Item = &'k AccountKey>,
    ) -> Result<HashMap<&'k AccountKey, i64>, sqlx::Error> {
        let mut ids = HashMap::new();
        let mut missing = Vec::new();
        {
            let known = self
                .known
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for key in keys {
                match known.get(key) {
                    Some(id) => {
                        ids.insert(key, *id);
                    }
                    None => missing.push(key),
                }
            }
        }
        if missing.is_empty() {
            return Ok(ids);
        }
        let mut conn = pool.acquire().await?;
        let found = open_and_look_up(&mut conn, &missing).await?;
        drop(conn);
        let mut known = self
            .known
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.len() + missing.len() > KNOWN_MAX {
            known.clear();
        }
        for (key, id) in missing.into_iter().zip(found) {
            known.insert(key.clone(), id);
            ids.insert(key, id);
        }
        Ok(ids)
    }
}

/// Opens the accounts of `keys` that do not exist (`INSERT … ON CONFLICT DO NOTHING`; a
/// concurrent insert of the same key is waited for) and returns each id, in `keys` order.
async fn open_and_look_up(
    conn: &mut PgConnection,
    keys: &[&AccountKey],
) -> Result<Vec<i64>, sqlx::Error> {
    let members: Vec<Option<&str>> = keys
        .iter()
        .map(|key| key.owner().member().map(|member| member.as_str()))
        .collect();
    let assets: Vec<&str> = keys.iter().map(|key| key.asset().as_str()).collect();
    let kinds: Vec<&str> = keys.iter().map(|key| key.kind().as_str()).collect();
    let sides: Vec<&str> = keys
        .iter()
        .map(|key| key.kind().normal_side().as_str())
        .collect();
    let owners: Vec<&str> = keys
        .iter()
        .map(|key| {
            if key.kind().is_member_owned() {
                "member"
            } else {
                "platform"
            }
        })
        .collect();
    sqlx::query(
        "INSERT INTO accounts (member_id, asset, kind, normal_side, owner_type)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
         ORDER BY 1, 2, 3
         ON CONFLICT ON CONSTRAINT accounts_key DO NOTHING",
    )
    .bind(&members)
    .bind(&assets)
    .bind(&kinds)
    .bind(&sides)
    .bind(&owners)
    .execute(&mut *conn)
    .await?;
    // Member and platform accounts are looked up apart: `IS NOT DISTINCT FROM` cannot use
    // the `accounts_key` index (~35 µs a leg on a small table, growing with it).
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "WITH k AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])
                                  WITH ORDINALITY AS k(member, asset, kind, ord))
         SELECT k.ord, a.id FROM k JOIN accounts a
             ON a.member_id = k.member AND a.asset = k.asset AND a.kind = k.kind
          WHERE k.member IS NOT NULL
         UNION ALL
         SELECT k.ord, a.id FROM k JOIN accounts a
             ON a.member_id IS NULL AND a.asset = k.asset AND a.kind = k.kind
          WHERE k.member IS NULL",
    )
    .bind(&members)
    .bind(&assets)
    .bind(&kinds)
    .fetch_all(&mut *conn)
    .await?;
    assert_eq!(
        rows.len(),
        keys.len(),
        "every leg's account exists after opening"
    );
    let mut ids = vec![0_i64; keys.len()];
    for (ord, id) in rows {
        ids[usize::try_from(ord - 1).expect("ordinality starts at 1")] = id;
    }
    Ok(ids)
}
