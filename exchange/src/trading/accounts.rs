//! The ledger account ids of a settlement's legs, opening the accounts that do not exist yet,
//! with the ids seen before kept in memory ([`AccountIds`]).
//!
//! Without the memory every batch paid two statements (open with `INSERT … ON CONFLICT DO
//! NOTHING`, then read the ids) on its critical path, ~1 ms each for 50 legs, although a
//! market's members rarely change. Keeping ids is safe because an account is never deleted
//! and its id never changes (`0009_ledger_statement_triggers.sql`, trigger `accounts_kept`).
//! Only ids of accounts that existed before the batch's own `INSERT` are kept: an account
//! opened by a batch that then rolls back never existed, and the next batch opens it again
//! (`exchange/tests/trading.rs`, `a_batch_that_loses_a_deadlock_runs_again`: the rolled-back
//! batch opens bob's first BTC account; it fails if such ids are kept).

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use sqlx::PgConnection;

use crate::ledger::{AccountKey, Leg};

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
    /// The id of each leg's account, in `legs` order. Accounts not known yet are opened if
    /// missing (in `conn`'s transaction) and looked up, in two statements for all of them.
    ///
    /// Errors: the database's.
    pub(crate) async fn resolve(
        &self,
        conn: &mut PgConnection,
        legs: &[Leg],
    ) -> Result<Vec<i64>, sqlx::Error> {
        let mut ids: Vec<Option<i64>> = {
            let known = self
                .known
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            legs.iter()
                .map(|leg| known.get(&leg.account).copied())
                .collect()
        };
        let missing: Vec<&AccountKey> = legs
            .iter()
            .zip(&ids)
            .filter(|(_, id)| id.is_none())
            .map(|(leg, _)| &leg.account)
            .collect();
        if missing.is_empty() {
            return Ok(ids.into_iter().flatten().collect());
        }
        let found = open_and_look_up(conn, &missing).await?;
        let mut known = self
            .known
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.len() + missing.len() > KNOWN_MAX {
            known.clear();
        }
        for (key, (id, opened_now)) in missing.iter().zip(&found) {
            if !opened_now {
                known.insert((*key).clone(), *id);
            }
        }
        drop(known);
        let mut found = found.into_iter();
        for id in ids.iter_mut().filter(|id| id.is_none()) {
            *id = found.next().map(|(id, _)| id);
        }
        Ok(ids
            .into_iter()
            .map(|id| id.expect("every missing leg was looked up"))
            .collect())
    }
}

/// Opens the accounts of `keys` that do not exist (`INSERT … ON CONFLICT DO NOTHING`; a
/// concurrent insert of the same key is waited for) and returns, in `keys` order, each id and
/// whether this statement opened it.
async fn open_and_look_up(
    conn: &mut PgConnection,
    keys: &[&AccountKey],
) -> Result<Vec<(i64, bool)>, sqlx::Error> {
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
    let opened: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO accounts (member_id, asset, kind, normal_side, owner_type)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
         ORDER BY 1, 2, 3
         ON CONFLICT ON CONSTRAINT accounts_key DO NOTHING
         RETURNING id",
    )
    .bind(&members)
    .bind(&assets)
    .bind(&kinds)
    .bind(&sides)
    .bind(&owners)
    .fetch_all(&mut *conn)
    .await?;
    let opened: HashSet<i64> = opened.into_iter().collect();
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
    Ok(ids
        .into_iter()
        .map(|id| (id, opened.contains(&id)))
        .collect())
}
