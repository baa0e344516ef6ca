//! The journal and the deposit rules against a real PostgreSQL (a fresh database per test;
//! see `common/mod.rs` for the environment). No broker involved: events are applied with
//! `deposits::apply`, as the consumer does.

mod common;

use coinhub_exchange::deposits::{self, Outcome};
use coinhub_exchange::journal::{self, JournalError, Posted};
use coinhub_exchange::ledger::{AccountKey, Leg, Transfer};
use coinhub_exchange::statement;
use common::{TestDb, asset_symbol, confirmed, orphaned};
use uuid::Uuid;

fn units(value: &str) -> coinhub_events::BaseUnits {
    value.parse().expect("valid amount")
}

/// Credits `member` `amount` base units of `asset` by a confirmed deposit.
async fn credit(db: &TestDb, member: &str, asset: &str, amount: &str, decimals: u8) {
    let deposit = confirmed(member, asset, amount, decimals);
    assert!(matches!(
        deposits::apply(&db.pool, &deposit).await,
        Ok(Outcome::Credited { .. })
    ));
}

/// The constraint a database error names, if any.
fn constraint_of(error: &sqlx::Error) -> Option<&str> {
    error.as_database_error().and_then(|e| e.constraint())
}

/// Proves: a transfer that would take an account below zero is refused by the database and
/// nothing of it is applied — through the API, and with raw SQL that skips every check in
/// Rust.
///
/// Steps: credit alice 100 by a deposit; try to move 150 from her `available` to `locked`
/// via `journal::post` (expect `InsufficientBalance`, roll back); insert the same transfer
/// with raw SQL (expect a check violation); try to set a balance directly; then check that
/// balances, transfers and entries are exactly as after the deposit.
#[tokio::test]
async fn overdraw_is_refused_by_the_database_and_nothing_is_applied() {
    let db = TestDb::new().await;
    credit(&db, "alice", "BTC", "100", 8).await;
    let available = AccountKey::available("alice".parse().expect("member"), asset_symbol("BTC"));
    let locked = AccountKey::locked("alice".parse().expect("member"), asset_symbol("BTC"));

    // Through the API: the code check passes (it is balanced), the database refuses.
    let lock = Transfer::new(
        Uuid::new_v4(),
        "lock",
        "order-1",
        vec![
            Leg::debit(available.clone(), units("150")),
            Leg::credit(locked.clone(), units("150")),
        ],
    )
    .expect("balanced transfer");
    let mut tx = db.pool.begin().await.expect("begin");
    let refused = journal::post(&mut tx, &lock).await;
    match refused {
        Err(JournalError::InsufficientBalance { account }) => {
            assert!(
                account.contains("alice") && account.contains("available"),
                "{account}"
            );
        }
        other => panic!("expected InsufficientBalance, got {other:?}"),
    }
    tx.rollback().await.expect("rollback");

    // Raw SQL, bypassing Rust: debit available by 150, credit locked by 150.
    let mut tx = db.pool.begin().await.expect("begin");
    let account_id = |key: &AccountKey| {
        let key = key.clone();
        let pool = db.pool.clone();
        async move {
            let mut conn = pool.acquire().await.expect("connection");
            journal::ensure_account(&mut conn, &key)
                .await
                .expect("account")
        }
    };
    let available_id = account_id(&available).await;
    let locked_id = account_id(&locked).await;
    let raw = async {
        let id = Uuid::new_v4();
        sqlx::query("INSERT INTO transfers (id, kind, reference) VALUES ($1, 'lock', 'raw')")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO entries (transfer_id, account_id, amount) VALUES ($1, $2, 150), ($1, $3, -150)")
            .bind(id)
            .bind(available_id)
            .bind(locked_id)
            .execute(&mut *tx)
            .await
    }
    .await;
    let error = raw.expect_err("database refuses the overdraw");
    let db_error = error.as_database_error().expect("a database error");
    assert_eq!(db_error.code().as_deref(), Some("23514"), "{db_error}");
    assert_eq!(db_error.constraint(), Some("accounts_balance_non_negative"));
    tx.rollback().await.expect("rollback");

    // A direct balance edit is refused too.
    let edit = sqlx::query("UPDATE accounts SET balance = 1000 WHERE id = $1")
        .bind(available_id)
        .execute(&db.pool)
        .await;
    assert!(edit.is_err(), "balances change only through entries");

    assert_eq!(db.available("alice", "BTC").await, "100");
    assert_eq!(
        journal::balance(&db.pool, &locked)
            .await
            .expect("balance")
            .to_string(),
        "0"
    );
    assert_eq!(db.hot_wallet("BTC").await, "100");
    assert_eq!(db.count("transfers").await, 1);
    assert_eq!(db.count("entries").await, 2);
    db.assert_consistent().await;
}

/// Proves: the database itself refuses transfers that do not sum to zero per asset, with a
/// single entry, or with entries added later, and refuses editing the journal.
///
/// Steps: fund the hot wallet via a deposit; with raw SQL commit a transfer whose entries
/// are +5/-4 (expect the deferred `transfers_balanced` check to fail at commit); a transfer
/// with one entry; a balanced pair appended to the deposit's transfer; a balanced pair
/// checked at once (`SET CONSTRAINTS ALL IMMEDIATE`), then one more entry (checked again at
/// commit); an entry for an account that does not exist; deleting an account; an UPDATE and
/// a DELETE of an entry. Afterwards only the deposit is in the journal and no balance check
/// is left queued.
#[tokio::test]
async fn database_refuses_unbalanced_and_edited_transfers() {
    let db = TestDb::new().await;
    let deposit = confirmed("bob", "ETH", "1000", 18);
    let Ok(Outcome::Credited {
        transfer_id: deposit_transfer,
    }) = deposits::apply(&db.pool, &deposit).await
    else {
        panic!("deposit credited");
    };
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM accounts ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .expect("accounts");
    let (hot, bob) = (ids[0], ids[1]);

    let try_commit = |entries: Vec<(i64, i64)>, transfer: Option<Uuid>| {
        let pool = db.pool.clone();
        async move {
            let mut tx = pool.begin().await?;
            let id = match transfer {
                Some(id) => id,
                None => {
                    let id = Uuid::new_v4();
                    sqlx::query(
                        "INSERT INTO transfers (id, kind, reference) VALUES ($1, 'test', $2)",
                    )
                    .bind(id)
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                    id
                }
            };
            for (account, amount) in entries {
                // Bind NUMERIC: sqlx caches this statement text, prepared by `journal::post`
                // with a NUMERIC parameter, per connection.
                sqlx::query(
                    "INSERT INTO entries (transfer_id, account_id, amount) VALUES ($1, $2, $3)",
                )
                .bind(id)
                .bind(account)
                .bind(bigdecimal::BigDecimal::from(amount))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        }
    };

    // Hot wallet -5 (credit, allowed: it holds 1000), bob +4 available... sums to -1.
    let unbalanced = try_commit(vec![(hot, -5), (bob, 4)], None)
        .await
        .expect_err("unbalanced");
    assert_eq!(constraint_of(&unbalanced), Some("transfers_balanced"));
    let single = try_commit(vec![(hot, 5)], None)
        .await
        .expect_err("single entry");
    assert_eq!(constraint_of(&single), Some("transfers_balanced"));
    let appended = try_commit(vec![(hot, 5), (bob, -5)], Some(deposit_transfer))
        .await
        .expect_err("appended");
    assert_eq!(constraint_of(&appended), Some("entries_same_transaction"));
    // 0009/0010: entries are checked per statement. An entry added after an immediate
    // check is checked again at commit; an unknown account is refused; accounts stay.
    let late = async {
        let mut tx = db.pool.begin().await?;
        let id = Uuid::new_v4();
        sqlx::query("INSERT INTO transfers (id, kind, reference) VALUES ($1, 'test', $2)")
            .bind(id)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let insert = "INSERT INTO entries (transfer_id, account_id, amount)
                      SELECT $1, a, m FROM UNNEST($2::bigint[], $3::numeric[]) AS t(a, m)";
        let amounts = |values: &[i64]| -> Vec<bigdecimal::BigDecimal> {
            values
                .iter()
                .map(|v| bigdecimal::BigDecimal::from(*v))
                .collect()
        };
        sqlx::query(insert)
            .bind(id)
            .bind(vec![hot, bob])
            .bind(amounts(&[-5, 5]))
            .execute(&mut *tx)
            .await?;
        sqlx::query("SET CONSTRAINTS ALL IMMEDIATE")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SET CONSTRAINTS ALL DEFERRED")
            .execute(&mut *tx)
            .await?;
        sqlx::query(insert)
            .bind(id)
            .bind(vec![hot])
            .bind(amounts(&[-1]))
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
    .await
    .expect_err("an entry after the immediate check unbalances the transfer");
    assert_eq!(constraint_of(&late), Some("transfers_balanced"));
    let unknown_account = try_commit(vec![(hot, -5), (i64::MAX, 5)], None)
        .await
        .expect_err("unknown account");
    assert_eq!(
        unknown_account
            .as_database_error()
            .and_then(|e| e.constraint()),
        Some("entries_account_id_fkey")
    );
    let deleted = sqlx::query("DELETE FROM accounts WHERE id = $1")
        .bind(bob)
        .execute(&db.pool)
        .await
        .expect_err("accounts are kept");
    assert_eq!(constraint_of(&deleted), Some("accounts_kept"));
    assert_eq!(db.count("ledger_pending_checks").await, 0);
    let update = sqlx::query("UPDATE entries SET amount = amount * 2")
        .execute(&db.pool)
        .await;
    assert!(update.is_err(), "entries are append-only");
    let delete = sqlx::query("DELETE FROM transfers").execute(&db.pool).await;
    assert!(delete.is_err(), "transfers are append-only");

    assert_eq!(db.count("transfers").await, 1);
    assert_eq!(db.count("entries").await, 2);
    assert_eq!(db.available("bob", "ETH").await, "1000");
    db.assert_consistent().await;
}

/// Proves: the balance check sums per asset (migration 0021 records each statement's sums):
/// a transfer balanced in total but not per asset is refused, one whose two statements each
/// leave an asset unbalanced but together balance it passes, and the recorded sums cannot be
/// removed or written by hand to skip a check.
///
/// Steps: credit bob ETH and BTC; commit −5 ETH hot wallet / +5 BTC bob (balanced in total,
/// not per asset); commit −5 / +5 ETH (5 ETH from bob back to the hot wallet) as two
/// statements of one entry each (the first alone sums to −5); in a transaction with an
/// unbalanced statement, delete its pending sums, then insert a pending sum by hand; check
/// the journal after each.
#[tokio::test]
async fn balance_checks_sum_per_asset_and_their_sums_are_guarded() {
    let db = TestDb::new().await;
    credit(&db, "bob", "ETH", "1000", 18).await;
    credit(&db, "bob", "BTC", "1000", 8).await;
    let account = |asset: &'static str, kind: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT id FROM accounts WHERE asset = $1 AND kind = $2")
                .bind(asset)
                .bind(kind)
                .fetch_one(&pool)
                .await
                .expect("account")
        }
    };
    let eth_hot = account("ETH", "hot_wallet").await;
    let eth_bob = account("ETH", "available").await;
    let btc_bob = account("BTC", "available").await;
    // Each inner vector is one statement.
    let commit = |statements: Vec<Vec<(i64, i64)>>| {
        let pool = db.pool.clone();
        async move {
            let mut tx = pool.begin().await?;
            let id = Uuid::new_v4();
            sqlx::query("INSERT INTO transfers (id, kind, reference) VALUES ($1, 'test', $2)")
                .bind(id)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            for entries in statements {
                let (accounts, amounts): (Vec<i64>, Vec<i64>) = entries.into_iter().unzip();
                sqlx::query(
                    "INSERT INTO entries (transfer_id, account_id, amount)
                     SELECT $1, a, m FROM UNNEST($2::bigint[], $3::bigint[]) AS t(a, m)",
                )
                .bind(id)
                .bind(accounts)
                .bind(amounts)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        }
    };

    let across_assets = commit(vec![vec![(eth_hot, -5), (btc_bob, 5)]])
        .await
        .expect_err("balanced in total only");
    let error = across_assets.as_database_error().expect("database error");
    assert_eq!(error.constraint(), Some("transfers_balanced"));
    assert!(error.message().contains("not zero"), "{}", error.message());
    assert_eq!(db.count("transfers").await, 2);

    commit(vec![vec![(eth_hot, -5)], vec![(eth_bob, 5)]])
        .await
        .expect("two statements that balance together");
    assert_eq!(db.count("transfers").await, 3);
    assert_eq!(db.available("bob", "ETH").await, "995");
    assert_eq!(db.count("ledger_pending_checks").await, 0);

    let mut tx = db.pool.begin().await.expect("begin");
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO transfers (id, kind, reference) VALUES ($1, 'test', $2)")
        .bind(id)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .expect("transfer");
    sqlx::query("INSERT INTO entries (transfer_id, account_id, amount) VALUES ($1, $2, 7)")
        .bind(id)
        .bind(eth_bob)
        .execute(&mut *tx)
        .await
        .expect("one unbalanced entry");
    sqlx::query("SAVEPOINT before_tampering")
        .execute(&mut *tx)
        .await
        .expect("savepoint");
    let removed = sqlx::query("DELETE FROM ledger_pending_checks")
        .execute(&mut *tx)
        .await
        .expect_err("pending sums are removed by the check only");
    assert_eq!(constraint_of(&removed), Some("ledger_pending_checks_guard"));
    sqlx::query("ROLLBACK TO SAVEPOINT before_tampering")
        .execute(&mut *tx)
        .await
        .expect("rollback to savepoint");
    let forged = sqlx::query(
        "INSERT INTO ledger_pending_checks (transfer_id, asset, amount, entries)
         VALUES ($1, 'ETH', -7, 1)",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .expect_err("pending sums are written by the entries' trigger only");
    assert_eq!(constraint_of(&forged), Some("ledger_pending_checks_guard"));
    drop(tx);
    assert_eq!(db.count("transfers").await, 3);
    assert_eq!(db.available("bob", "ETH").await, "995");
    db.assert_consistent().await;
}

/// Proves: posting is idempotent on (kind, reference), and two concurrent applications of
/// the same event, or of two events of one deposit, credit once.
///
/// Steps: apply one event twice concurrently (expect one `Credited`, one
/// `DuplicateMessage`); apply two different ids of another deposit concurrently (expect one
/// `Credited`, one `DepositAlreadyCredited`); post the deposit transfer again directly
/// (expect `AlreadyPosted`); check balances and row counts.
#[tokio::test]
async fn concurrent_duplicates_credit_once() {
    let db = TestDb::new().await;
    let first = confirmed("carol", "ETH", "7", 18);
    let (a, b) = tokio::join!(
        deposits::apply(&db.pool, &first),
        deposits::apply(&db.pool, &first)
    );
    let mut outcomes = [a.expect("applies"), b.expect("applies")].map(|o| o.as_str());
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["credited", "duplicate_message"]);

    let second = confirmed("carol", "ETH", "11", 18);
    let second_again = coinhub_events::DepositEvent {
        id: Uuid::new_v4(),
        ..second.clone()
    };
    let (a, b) = tokio::join!(
        deposits::apply(&db.pool, &second),
        deposits::apply(&db.pool, &second_again)
    );
    let mut outcomes = [a.expect("applies"), b.expect("applies")].map(|o| o.as_str());
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["credited", "deposit_already_credited"]);

    let again = Transfer::deposit(
        second.deposit_id,
        second.member.clone(),
        asset_symbol("ETH"),
        units("11"),
    )
    .expect("transfer");
    let mut tx = db.pool.begin().await.expect("begin");
    assert_eq!(
        journal::post(&mut tx, &again).await.expect("post"),
        Posted::AlreadyPosted {
            transfer_id: Transfer::deposit_transfer_id(second.deposit_id)
        }
    );
    tx.commit().await.expect("commit");

    assert_eq!(db.available("carol", "ETH").await, "18");
    assert_eq!(db.hot_wallet("ETH").await, "18");
    assert_eq!(db.count("transfers").await, 2);
    assert_eq!(db.count("processed_messages").await, 3);
    db.assert_consistent().await;
}

/// Proves: an orphaned credited deposit raises a reversal alert and debits nothing; an
/// orphan of an uncredited deposit is only recorded; a confirmation older than an applied
/// orphan credits nothing; a re-confirmation after it does.
///
/// Steps: credit deposit A, apply its orphan (was_confirmed) → alert, balance unchanged;
/// apply the orphan of uncredited deposit B, then B's (older) confirmation → nothing
/// credited; then a newer confirmation of B → credited.
#[tokio::test]
async fn orphans_alert_on_credited_deposits_and_never_debit() {
    let db = TestDb::new().await;
    let a = confirmed("dave", "BTC", "5000", 8);
    deposits::apply(&db.pool, &a).await.expect("credit A");
    let outcome = deposits::apply(&db.pool, &orphaned(&a, true))
        .await
        .expect("orphan A");
    assert!(
        matches!(outcome, Outcome::ReversalAlert { .. }),
        "{outcome:?}"
    );
    let (member, amount, was_confirmed): (String, String, bool) = sqlx::query_as(
        "SELECT member_id, amount::text, was_confirmed FROM credit_reversal_alerts WHERE deposit_id = $1",
    )
    .bind(a.deposit_id)
    .fetch_one(&db.pool)
    .await
    .expect("alert row");
    assert_eq!(
        (member.as_str(), amount.as_str(), was_confirmed),
        ("dave", "5000", true)
    );
    assert_eq!(db.available("dave", "BTC").await, "5000");

    let b = confirmed("dave", "BTC", "300", 8);
    let b_orphan = orphaned(&b, true);
    assert_eq!(
        deposits::apply(&db.pool, &b_orphan)
            .await
            .expect("orphan B"),
        Outcome::OrphanRecorded
    );
    assert_eq!(
        deposits::apply(&db.pool, &b).await.expect("stale B"),
        Outcome::SupersededByOrphan
    );
    assert_eq!(db.available("dave", "BTC").await, "5000");
    let reconfirmed = coinhub_events::DepositEvent {
        id: Uuid::new_v4(),
        occurred_at: b_orphan.occurred_at + time::Duration::seconds(60),
        block_hash: "0xnew".into(),
        ..b.clone()
    };
    assert!(matches!(
        deposits::apply(&db.pool, &reconfirmed).await,
        Ok(Outcome::Credited { .. })
    ));
    assert_eq!(db.available("dave", "BTC").await, "5300");
    assert_eq!(db.count("credit_reversal_alerts").await, 1);
    assert_eq!(db.count("deposit_orphans").await, 2);
    db.assert_consistent().await;
}

/// Proves: an event whose decimals contradict the recorded asset is refused as a rule
/// violation (dead-letter, not retry), and a zero amount is recorded without a transfer.
///
/// Steps: credit ETH with 18 decimals; apply an ETH event with 6 decimals (expect
/// `Refused`, mapped to `HandlerError::Reject`); apply a zero-amount event (expect
/// `ZeroAmount`, no new transfer).
#[tokio::test]
async fn contradicting_decimals_are_refused_and_zero_amounts_recorded() {
    let db = TestDb::new().await;
    deposits::apply(&db.pool, &confirmed("erin", "ETH", "1", 18))
        .await
        .expect("credit");
    let error = deposits::apply(&db.pool, &confirmed("erin", "ETH", "1", 6))
        .await
        .expect_err("mismatch");
    assert!(error.to_string().contains("decimals"), "{error}");
    assert!(matches!(
        error.into_handler_error(),
        coinhub_events::consumer::HandlerError::Reject(_)
    ));
    let zero = confirmed("erin", "ETH", "0", 18);
    assert_eq!(
        deposits::apply(&db.pool, &zero).await.expect("zero"),
        Outcome::ZeroAmount
    );
    assert_eq!(db.count("transfers").await, 1);
    assert_eq!(db.outcome(zero.id).await.as_deref(), Some("zero_amount"));
}

/// Proves: entries written under `coinhub.ledger_apply = 'deferred'` (migration 0016, how a
/// trade settlement writes them before the batch ahead commits) change no balance until their
/// `ledger_unapplied` row is deleted, are applied exactly once, are checked against zero when
/// applied, and cannot be committed unapplied; the queue cannot be forged, edited or
/// truncated, and the apply function cannot be called directly.
///
/// Steps: credit alice 100 by a deposit. (1) Write a 40 lock deferred and commit without
/// applying: refused with `entries_applied`. (2) Write it again, see the balances unchanged,
/// apply (100 → 60 available, 40 locked), a second delete applies nothing; edit the queue
/// while a row exists (refused); commit. (3) A deferred 150 lock: applying it is refused with
/// `accounts_balance_non_negative` and the account id, read by `JournalError` as insufficient
/// balance. (4) A deferred entry for an account that does not exist: refused when written
/// (`entries_account_id_fkey`). (5) Insert a queue row for (2)'s entries by hand, truncate
/// the queue, call `ledger_apply_deltas`: each refused. Afterwards: balances 60 / 40, two transfers, the
/// journal consistent.
#[tokio::test]
async fn deferred_entries_are_applied_once_or_the_commit_is_refused() {
    let db = TestDb::new().await;
    credit(&db, "alice", "BTC", "100", 8).await;
    let member = || "alice".parse().expect("member");
    let available = AccountKey::available(member(), asset_symbol("BTC"));
    let locked = AccountKey::locked(member(), asset_symbol("BTC"));
    let mut conn = db.pool.acquire().await.expect("connection");
    let available_id = journal::ensure_account(&mut conn, &available)
        .await
        .expect("account");
    let locked_id = journal::ensure_account(&mut conn, &locked)
        .await
        .expect("account");
    drop(conn);
    let balance = |key: AccountKey| {
        let pool = db.pool.clone();
        async move {
            journal::balance(&pool, &key)
                .await
                .expect("balance")
                .to_string()
        }
    };
    let constraint = |error: &sqlx::Error| {
        error
            .as_database_error()
            .and_then(|e| e.constraint().map(str::to_owned))
    };

    // (1) Never applied: the commit is refused.
    let mut tx = db.pool.begin().await.expect("begin");
    write_deferred(&mut tx, (available_id, locked_id), 40)
        .await
        .expect("written");
    let error = tx
        .commit()
        .await
        .expect_err("unapplied entries cannot commit");
    assert_eq!(
        constraint(&error).as_deref(),
        Some("entries_applied"),
        "{error}"
    );

    // (2) Applied once.
    let mut tx = db.pool.begin().await.expect("begin");
    let id = write_deferred(&mut tx, (available_id, locked_id), 40)
        .await
        .expect("written");
    let in_tx: String = sqlx::query_scalar("SELECT balance::text FROM accounts WHERE id = $1")
        .bind(available_id)
        .fetch_one(&mut *tx)
        .await
        .expect("balance");
    assert_eq!(in_tx, "100", "nothing applied before the delete");
    let mut savepoint = sqlx::Connection::begin(&mut *tx).await.expect("savepoint");
    let edit = sqlx::query("UPDATE ledger_unapplied SET last_entry = last_entry + 1")
        .execute(&mut *savepoint)
        .await
        .expect_err("the queue cannot be edited");
    assert_eq!(constraint(&edit).as_deref(), Some("ledger_unapplied_guard"));
    savepoint.rollback().await.expect("rollback to savepoint");
    assert_eq!(apply_deferred(&mut tx, id).await.expect("applied"), 1);
    assert_eq!(apply_deferred(&mut tx, id).await.expect("nothing left"), 0);
    tx.commit().await.expect("applied entries commit");
    assert_eq!(balance(available.clone()).await, "60");
    assert_eq!(balance(locked.clone()).await, "40");

    // (3) Below zero when applied.
    let mut tx = db.pool.begin().await.expect("begin");
    let id_3 = write_deferred(&mut tx, (available_id, locked_id), 150)
        .await
        .expect("written");
    let error = apply_deferred(&mut tx, id_3)
        .await
        .expect_err("overdraw refused");
    assert_eq!(
        constraint(&error).as_deref(),
        Some("accounts_balance_non_negative")
    );
    match JournalError::from_db(error) {
        JournalError::InsufficientBalance { account } => {
            assert_eq!(account, format!("account id {available_id}"));
        }
        other => panic!("expected InsufficientBalance, got {other:?}"),
    }
    tx.rollback().await.expect("rollback");

    // (4) An account that does not exist: refused when written, by the reference check.
    let mut tx = db.pool.begin().await.expect("begin");
    let error = write_deferred(&mut tx, (available_id, locked_id + 1_000), 1)
        .await
        .expect_err("no such account");
    assert_eq!(
        constraint(&error).as_deref(),
        Some("entries_account_id_fkey"),
        "{error}"
    );
    tx.rollback().await.expect("rollback");

    // (5) Forging, truncating, calling the apply function directly.
    let (first, last): (i64, i64) =
        sqlx::query_as("SELECT min(id), max(id) FROM entries WHERE transfer_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .expect("(2)'s entries");
    let forged = sqlx::query(
        "INSERT INTO ledger_unapplied (transfer_id, first_entry, last_entry) VALUES ($1, $2, $3)",
    )
    .bind(id)
    .bind(first)
    .bind(last)
    .execute(&db.pool)
    .await
    .expect_err("only the entries trigger queues");
    assert_eq!(
        constraint(&forged).as_deref(),
        Some("ledger_unapplied_guard")
    );
    let truncate = sqlx::query("TRUNCATE ledger_unapplied")
        .execute(&db.pool)
        .await
        .expect_err("no truncate");
    assert_eq!(
        constraint(&truncate).as_deref(),
        Some("ledger_unapplied_guard")
    );
    let direct =
        sqlx::query("SELECT ledger_apply_deltas(ARRAY[$1]::bigint[], ARRAY[1]::numeric[])")
            .bind(available_id)
            .execute(&db.pool)
            .await
            .expect_err("balances change only through entries");
    assert_eq!(
        constraint(&direct).as_deref(),
        Some("accounts_balance_from_entries")
    );

    assert_eq!(balance(available).await, "60");
    assert_eq!(balance(locked).await, "40");
    assert_eq!(db.count("transfers").await, 2);
    assert_eq!(db.count("entries").await, 4);
    assert_eq!(db.count("ledger_unapplied").await, 0);
    db.assert_consistent().await;
}

/// Writes a transfer of `amount` from account `from` to `to` (debit, credit) with its entries
/// deferred (`coinhub.ledger_apply`); returns its id.
async fn write_deferred(
    tx: &mut sqlx::PgConnection,
    (from, to): (i64, i64),
    amount: i64,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO transfers (id, kind, reference) VALUES ($1, 'lock', $2)")
        .bind(id)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL coinhub.ledger_apply = 'deferred'")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO entries (transfer_id, account_id, amount)
         VALUES ($1, $2, $4::numeric), ($1, $3, -$4::numeric)",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .bind(amount)
    .execute(&mut *tx)
    .await?;
    Ok(id)
}

/// Credits alice `amount` satoshi by a deposit and returns the ids of her BTC `available`
/// and `locked` accounts (opening `locked`).
async fn alice_with_btc(db: &TestDb, amount: &str) -> (i64, i64) {
    credit(db, "alice", "BTC", amount, 8).await;
    let member = || "alice".parse().expect("member");
    let mut conn = db.pool.acquire().await.expect("connection");
    let mut open = async |key: AccountKey| {
        journal::ensure_account(&mut conn, &key)
            .await
            .expect("account")
    };
    (
        open(AccountKey::available(member(), asset_symbol("BTC"))).await,
        open(AccountKey::locked(member(), asset_symbol("BTC"))).await,
    )
}

/// Applies transfer `id`'s deferred entries; returns how many queued rows it applied.
async fn apply_deferred(tx: &mut sqlx::PgConnection, id: Uuid) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM ledger_unapplied WHERE transfer_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    Ok(done.rows_affected())
}

/// Proves: a deferred statement's per-account deltas, too large for a row uncompressed, are
/// stored compressed with LZ4 (migration 0028) and applied exactly.
///
/// Steps: credit alice 5 BTC by a deposit (the asset is recorded, the hot wallet holds 5);
/// open 240 other members' BTC `available` accounts; in one
/// transaction write a deferred transfer crediting each member 1 and debiting the hot wallet
/// 240 (241 entries, ~4 KB of deltas); read the compression method of the queued row's
/// arrays; apply it and commit; then every member has 1, the hot wallet 245, and the journal
/// is consistent.
#[tokio::test]
async fn large_deferred_deltas_are_stored_with_lz4_and_applied_exactly() {
    const MEMBERS: usize = 240;
    let db = TestDb::new().await;
    credit(&db, "alice", "BTC", "5", 8).await;
    let mut conn = db.pool.acquire().await.expect("connection");
    let hot_wallet = AccountKey::hot_wallet(asset_symbol("BTC"));
    let mut ids = vec![
        journal::ensure_account(&mut conn, &hot_wallet)
            .await
            .expect("account"),
    ];
    let mut members = Vec::with_capacity(MEMBERS);
    for n in 0..MEMBERS {
        let key = AccountKey::available(
            format!("member-{n}").parse().expect("member id"),
            asset_symbol("BTC"),
        );
        ids.push(
            journal::ensure_account(&mut conn, &key)
                .await
                .expect("account"),
        );
        members.push(key);
    }
    drop(conn);
    // The hot wallet is debit-normal (+ raises it), a member's account credit-normal.
    let mut amounts = vec![i64::try_from(MEMBERS).expect("small")];
    amounts.extend(std::iter::repeat_n(-1_i64, MEMBERS));

    let mut tx = db.pool.begin().await.expect("begin");
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO transfers (id, kind, reference) VALUES ($1, 'deposit', 'lz4')")
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("transfer");
    sqlx::query("SET LOCAL coinhub.ledger_apply = 'deferred'")
        .execute(&mut *tx)
        .await
        .expect("deferred");
    sqlx::query(
        "INSERT INTO entries (transfer_id, account_id, amount)
         SELECT $1, a, m FROM UNNEST($2::bigint[], $3::bigint[]) AS u(a, m)",
    )
    .bind(id)
    .bind(&ids)
    .bind(&amounts)
    .execute(&mut *tx)
    .await
    .expect("entries");
    let methods: (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT pg_column_compression(account_ids), pg_column_compression(amounts)
           FROM ledger_unapplied WHERE transfer_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .expect("queued row");
    assert_eq!(methods, (Some("lz4".into()), Some("lz4".into())));
    assert_eq!(apply_deferred(&mut tx, id).await.expect("applied"), 1);
    tx.commit().await.expect("commit");

    for key in &members {
        let balance = journal::balance(&db.pool, key).await.expect("balance");
        assert_eq!(balance.to_string(), "1", "{key:?}");
    }
    let hot = journal::balance(&db.pool, &hot_wallet)
        .await
        .expect("balance");
    assert_eq!(hot.to_string(), (MEMBERS + 5).to_string());
    db.assert_consistent().await;
}

/// Proves: balance updates of busy accounts stay heap-only (no new index entries) while
/// another transaction keeps their old versions from being pruned, as the read models'
/// projector does during settlement (migration 0017's fill factor).
///
/// Steps: 20 members get a deposit, `VACUUM`, then 130 more accounts are opened after theirs
/// (at the default fill factor, enough to fill the 20 accounts' page); another connection takes a
/// transaction id and stays open; 10 transfers move 1 unit from each even member to the next
/// odd one and 10 move it back (40 balance updates, two new versions per account); then the
/// statistics of `accounts` must count all 40 as heap-only, and the balances are back at 100.
#[tokio::test]
async fn busy_balances_are_updated_in_place_while_old_versions_are_held() {
    let db = TestDb::new().await;
    let available = |n: u32| {
        AccountKey::available(
            format!("m{n:03}").parse().expect("member"),
            asset_symbol("BTC"),
        )
    };
    for n in 0..20 {
        let deposit = confirmed(&format!("m{n:03}"), "BTC", "100", 8);
        assert!(matches!(
            deposits::apply(&db.pool, &deposit).await,
            Ok(Outcome::Credited { .. })
        ));
    }
    let mut conn = db.pool.acquire().await.expect("connection");
    // The deposits' old versions of the hot wallet account would leave room on the page.
    sqlx::query("VACUUM accounts")
        .execute(&mut *conn)
        .await
        .expect("vacuum");
    for n in 20..150 {
        journal::ensure_account(&mut conn, &available(n))
            .await
            .expect("account");
    }
    // A transaction with an id holds back pruning of every version it might still see.
    let mut holder = db.pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *holder)
        .await
        .expect("transaction id");

    let (updated_before, hot_before) = update_counts(&mut conn).await;
    let pairs = (0..10).map(|k| (2 * k, 2 * k + 1));
    for (round, (from, to)) in pairs.clone().chain(pairs.map(|(a, b)| (b, a))).enumerate() {
        let transfer = Transfer::new(
            Uuid::new_v4(),
            "internal",
            &format!("round-{round}"),
            vec![
                Leg::debit(available(from), units("1")),
                Leg::credit(available(to), units("1")),
            ],
        )
        .expect("balanced transfer");
        let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("begin");
        assert!(matches!(
            journal::post(&mut tx, &transfer).await,
            Ok(Posted::New { .. })
        ));
        tx.commit().await.expect("commit");
    }
    let (updated, hot) = update_counts(&mut conn).await;
    holder.commit().await.expect("commit");
    assert_eq!(updated - updated_before, 40, "two balances per transfer");
    assert_eq!(hot - hot_before, 40, "every balance update heap-only");
    for n in 0..20 {
        let balance = journal::balance(&db.pool, &available(n))
            .await
            .expect("balance");
        assert_eq!(balance, units("100"), "m{n:03}");
    }
}

/// `accounts`' row updates and heap-only updates so far, this connection's included: it
/// reports its pending counts first (PostgreSQL 15 otherwise reports them up to a second
/// later, when the backend goes idle).
async fn update_counts(conn: &mut sqlx::PgConnection) -> (i64, i64) {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .expect("flush");
    sqlx::query_as(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'accounts'",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("statistics")
}

/// A member id's format is checked when an account is opened (migration 0018's domain), and
/// no `CHECK` on `accounts` mentions the member id: PostgreSQL evaluates a table's `CHECK`s
/// at every row update, and balances are updated by every settlement.
#[tokio::test]
async fn member_ids_are_checked_when_accounts_open_not_at_each_balance_update() {
    let db = TestDb::new().await;
    sqlx::query("INSERT INTO assets (symbol, decimals) VALUES ('BTC', 8)")
        .execute(&db.pool)
        .await
        .expect("asset");
    for bad in ["bad member", "", "semi;colon", &"x".repeat(65)] {
        let error = open_account(&db.pool, bad)
            .await
            .expect_err("a malformed member id is refused");
        let db_error = error.as_database_error().expect("a database error");
        assert_eq!(
            db_error.code().as_deref(),
            Some("23514"),
            "{bad:?}: {db_error}"
        );
        assert_eq!(
            db_error.constraint(),
            Some("ledger_member_id_check"),
            "{bad:?}"
        );
    }
    open_account(&db.pool, "alice.1_x-2")
        .await
        .expect("a well-formed member id opens an account");
    assert_eq!(
        db.count("accounts").await,
        1,
        "only the good account opened"
    );

    let checks_on_member: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint
          WHERE conrelid = 'accounts'::regclass AND contype = 'c'
            AND pg_get_constraintdef(oid) LIKE '%member_id%~%'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("constraints");
    assert_eq!(
        checks_on_member, 0,
        "no per-update regular expression on accounts"
    );
}

/// Opens a BTC `available` account for `member` by a raw `INSERT`, bypassing Rust's checks.
async fn open_account(
    pool: &sqlx::PgPool,
    member: &str,
) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
    sqlx::query(
        "INSERT INTO accounts (member_id, asset, kind, normal_side, owner_type)
         VALUES ($1, 'BTC', 'available', 'credit', 'member')",
    )
    .bind(member)
    .execute(pool)
    .await
}

/// The ledger's trigger functions are planned with key lookups whatever the tables'
/// statistics (migration 0022): each carries `enable_seqscan`, `enable_hashjoin` and
/// `enable_mergejoin` off. PL/pgSQL keeps a session's plans, so a plan made while the tables
/// were small (a sequential scan of `entries`) would otherwise outlive their growth. They also
/// carry `jit` off (0029): a scan they cannot avoid would otherwise be priced past the JIT
/// threshold and compiled at every call. A later `CREATE OR REPLACE FUNCTION` that forgets
/// the settings fails here.
#[tokio::test]
async fn ledger_functions_look_rows_up_by_key() {
    let db = TestDb::new().await;
    let functions = [
        "ledger_apply_deltas",
        "ledger_apply_entries",
        "ledger_apply_unapplied",
        "ledger_check_transfer",
        "ledger_run_pending_check",
        "ledger_check_applied",
    ];
    for function in functions {
        let settings: Vec<String> =
            sqlx::query_scalar("SELECT coalesce(proconfig, '{}') FROM pg_proc WHERE proname = $1")
                .bind(function)
                .fetch_one(&db.pool)
                .await
                .expect("function exists");
        for setting in [
            "enable_seqscan=off",
            "enable_hashjoin=off",
            "enable_mergejoin=off",
            "jit=off",
        ] {
            assert!(
                settings.iter().any(|s| s == setting),
                "{function} lacks {setting}: {settings:?}"
            );
        }
    }
}

/// Proves: an account's id, owner, asset and kind never change, it opens at zero, and its
/// balance changes only through entries (migration 0023's column triggers, which replaced
/// the PL/pgSQL row trigger); an update that sets a key column to its own value passes.
///
/// Steps: credit alice by a deposit; update her account's asset, kind, owner and id, its
/// balance directly, and its asset to the same value; open an account with a balance; check
/// her balance after each.
#[tokio::test]
async fn account_keys_are_fixed_and_balances_move_only_by_entries() {
    let db = TestDb::new().await;
    credit(&db, "alice", "BTC", "100", 8).await;
    let id: i64 = sqlx::query_scalar(
        "SELECT id FROM accounts WHERE member_id = 'alice' AND kind = 'available'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("alice's account");
    let refused = |statement: &'static str| {
        let pool = db.pool.clone();
        async move {
            let error = sqlx::query(statement)
                .bind(id)
                .execute(&pool)
                .await
                .expect_err(statement);
            error
                .as_database_error()
                .and_then(|e| e.constraint())
                .map(str::to_owned)
        }
    };
    for statement in [
        "UPDATE accounts SET asset = 'ETH' WHERE id = $1",
        "UPDATE accounts SET kind = 'locked' WHERE id = $1",
        "UPDATE accounts SET member_id = 'bob' WHERE id = $1",
        "UPDATE accounts SET id = DEFAULT WHERE id = $1",
    ] {
        assert_eq!(
            refused(statement).await.as_deref(),
            Some("accounts_key_fixed"),
            "{statement}"
        );
    }
    assert_eq!(
        refused("UPDATE accounts SET balance = balance + 1 WHERE id = $1")
            .await
            .as_deref(),
        Some("accounts_balance_from_entries")
    );
    sqlx::query("UPDATE accounts SET asset = asset, balance = balance WHERE id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .expect("setting a key column or the balance to its own value changes nothing");
    let opened = sqlx::query(
        "INSERT INTO accounts (member_id, asset, kind, normal_side, owner_type, balance)
         VALUES ('carol', 'BTC', 'available', 'credit', 'member', 5)",
    )
    .execute(&db.pool)
    .await
    .expect_err("accounts open at zero");
    assert_eq!(
        constraint_of(&opened),
        Some("accounts_balance_from_entries")
    );
    assert_eq!(db.available("alice", "BTC").await, "100");
    db.assert_consistent().await;
}

/// Proves: two transactions that each take 60 of the same 100 cannot both commit: the second
/// waits for the first's row lock, re-checks the balance the first left (40) and is refused
/// with `accounts_balance_non_negative` naming the account (migration 0026 applies a change
/// only where the new balance is not below zero, in the one `UPDATE` that locks the row).
///
/// Steps: credit alice 100; in one transaction write and apply a deferred 60 from available to
/// locked, uncommitted; start the same in a second transaction (it blocks); commit the first;
/// the second fails; balances are 40 / 60.
#[tokio::test]
async fn concurrent_overdraws_are_refused_after_the_wait() {
    let db = TestDb::new().await;
    let accounts = alice_with_btc(&db, "100").await;
    let available = AccountKey::available("alice".parse().expect("member"), asset_symbol("BTC"));
    let locked = AccountKey::locked("alice".parse().expect("member"), asset_symbol("BTC"));

    let mut first = db.pool.begin().await.expect("begin");
    let id = write_deferred(&mut first, accounts, 60)
        .await
        .expect("written");
    assert_eq!(apply_deferred(&mut first, id).await.expect("applied"), 1);
    let pool = db.pool.clone();
    let second = tokio::spawn(async move {
        let mut tx = pool.begin().await?;
        let id = write_deferred(&mut tx, accounts, 60).await?;
        apply_deferred(&mut tx, id).await?;
        tx.commit().await
    });
    // The second transaction's update waits for the first's row lock.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second waits for the first");
    first.commit().await.expect("the first commits");
    let error = second
        .await
        .expect("task")
        .expect_err("the second would take the balance below zero");
    let db_error = error.as_database_error().expect("database error");
    assert_eq!(db_error.constraint(), Some("accounts_balance_non_negative"));
    let detail = db_error
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(sqlx::postgres::PgDatabaseError::detail)
        .map(str::to_owned);
    assert_eq!(detail, Some(accounts.0.to_string()));
    assert_eq!(
        journal::balance(&db.pool, &available)
            .await
            .expect("balance")
            .to_string(),
        "40"
    );
    assert_eq!(
        journal::balance(&db.pool, &locked)
            .await
            .expect("balance")
            .to_string(),
        "60"
    );
    db.assert_consistent().await;
}

/// Proves: an account's statement refuses a cached balance its entries do not explain,
/// naming the account and its first entry, whether the balance worked back from it ends
/// above or below zero before the first entry; a page that does not reach the first entry
/// cannot tell and is listed.
///
/// Steps: credit alice 10000 then 500; with the triggers off for one session
/// (`session_replication_role = replica`, what only a superuser can do) set her balance to
/// 10501, read her statement (refused), read its newest page of one entry (listed); set it to
/// 400, read it again (refused); the journal audit reports the drift.
#[tokio::test]
async fn a_statement_refuses_a_balance_its_entries_do_not_explain() {
    let db = TestDb::new().await;
    credit(&db, "alice", "BTC", "10000", 8).await;
    credit(&db, "alice", "BTC", "500", 8).await;
    let key = AccountKey::available("alice".parse().expect("member"), asset_symbol("BTC"));
    let listed = statement::read(&db.pool, &key, None, 10)
        .await
        .expect("a consistent account reads")
        .expect("alice's account exists");
    assert_eq!(listed.balance.to_string(), "10500");
    let first_entry = listed.lines.last().expect("two entries").entry_id;
    let refusal = |result: Result<Option<statement::Statement>, JournalError>| match result {
        Err(JournalError::Corrupt(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    };

    db.set_alice_btc_balance_behind_the_ledger("10501").await;
    let message = refusal(statement::read(&db.pool, &key, None, 10).await);
    assert!(
        message.contains("member alice/BTC/available")
            && message.contains(&format!(
                "worked back to 1 before its first entry {first_entry}"
            )),
        "{message}"
    );
    let newest = statement::read(&db.pool, &key, None, 1)
        .await
        .expect("a page short of the first entry cannot tell")
        .expect("alice's account exists");
    assert_eq!(newest.lines[0].balance_after.to_string(), "10501");
    assert!(newest.more);

    db.set_alice_btc_balance_behind_the_ledger("400").await;
    let message = refusal(statement::read(&db.pool, &key, None, 10).await);
    assert!(
        message.contains(&format!(
            "worked back to -10100 before its first entry {first_entry}"
        )),
        "{message}"
    );
    let mut conn = db.pool.acquire().await.expect("connection");
    let findings = journal::audit(&mut conn).await.expect("audit runs");
    assert!(
        matches!(&findings[..], [journal::AuditFinding::BalanceDrift { cached, from_entries, .. }]
            if cached == "400" && from_entries == "10500"),
        "{findings:?}"
    );
}

/// Proves: a statement lists entries in journal order even where two transfers committed in
/// the other order, so the running balance between them is one the account never had (here
/// below zero), while the newest is the balance and the account still works back to zero.
///
/// Steps: credit alice 100; transaction 1 writes a deferred unlock of 100 (locked → available;
/// lower entry ids) and waits; transaction 2 writes a deferred lock of 100 (available →
/// locked), applies it and commits; transaction 1 applies (locked now holds 100) and
/// commits; read the statement of alice's locked account.
#[tokio::test]
async fn a_statement_keeps_journal_order_when_commits_went_the_other_way() {
    let db = TestDb::new().await;
    let (available_id, locked_id) = alice_with_btc(&db, "100").await;
    let locked = AccountKey::locked("alice".parse().expect("member"), asset_symbol("BTC"));

    let mut unlock = db.pool.begin().await.expect("transaction 1");
    let unlock_id = write_deferred(&mut unlock, (locked_id, available_id), 100)
        .await
        .expect("unlock written first");
    let mut lock = db.pool.begin().await.expect("transaction 2");
    let lock_id = write_deferred(&mut lock, (available_id, locked_id), 100)
        .await
        .expect("lock written second");
    assert_eq!(
        apply_deferred(&mut lock, lock_id)
            .await
            .expect("lock applies"),
        1
    );
    lock.commit().await.expect("lock commits first");
    assert_eq!(
        apply_deferred(&mut unlock, unlock_id)
            .await
            .expect("unlock applies on the locked 100"),
        1
    );
    unlock.commit().await.expect("unlock commits second");

    let statement = statement::read(&db.pool, &locked, None, 10)
        .await
        .expect("the account works back to zero")
        .expect("alice's locked account exists");
    assert_eq!(statement.balance.to_string(), "0");
    let lines: Vec<(Uuid, &str, String)> = statement
        .lines
        .iter()
        .map(|line| {
            (
                line.transfer_id,
                line.side.as_str(),
                line.balance_after.to_string(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            (lock_id, "credit", "0".to_owned()),
            (unlock_id, "debit", "-100".to_owned()),
        ]
    );
    db.assert_consistent().await;
}

/// Proves: the entries' check that a statement's transfers were written in its own
/// transaction looks each transfer up by its key however long the journal is (migration
/// 0031). Before it, for a statement of a few hundred entries PostgreSQL planned the check as
/// a read of all of `transfers_pkey`, each row's heap tuple included (docs/benchmarks.md,
/// 2026-12-08), so every settlement read every transfer ever written.
///
/// Steps: credit alice; write 2,000 small balanced transfers, each in its own transaction as
/// settlements are (so that `ANALYZE` sees as many transaction ids as transfers, which is
/// what made the planner expect one row per transaction and prefer the read), then `ANALYZE`;
/// on a new connection (no plan cached) write one transfer with 600 entries and count the
/// heap blocks of `transfers` that transaction fetched: one for the key probe, not one per
/// transfer.
#[tokio::test]
async fn the_same_transaction_check_probes_transfers_by_key_on_a_long_journal() {
    let db = TestDb::new().await;
    credit(&db, "alice", "BTC", "10000", 8).await;
    let (hot, alice): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT id FROM accounts WHERE member_id IS NULL AND asset = 'BTC'
                   AND kind = 'hot_wallet'),
                (SELECT id FROM accounts WHERE member_id = 'alice' AND asset = 'BTC'
                   AND kind = 'available')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("account ids");
    // One transaction per transfer, without waiting for the WAL flush (this test does not
    // need it). Ids sort before the probe's, as a UUID v7 of an earlier time would.
    // Each a query of its own: a DO block may commit only outside a transaction block, which
    // several statements in one query would open.
    let mut writer = db.pool.acquire().await.expect("connection");
    sqlx::raw_sql("SET synchronous_commit = off")
        .execute(&mut *writer)
        .await
        .expect("no waiting for the WAL flush");
    sqlx::raw_sql(&format!(
        "DO $$ BEGIN
           FOR g IN 1..2000 LOOP
             INSERT INTO transfers (id, kind, reference)
             VALUES (('00000000-0000-7000-8000-' || lpad(g::text, 12, '0'))::uuid, 'history',
                     'h' || g);
             INSERT INTO entries (transfer_id, account_id, amount)
             VALUES (('00000000-0000-7000-8000-' || lpad(g::text, 12, '0'))::uuid, {hot}, 1),
                    (('00000000-0000-7000-8000-' || lpad(g::text, 12, '0'))::uuid, {alice}, -1);
             COMMIT;
           END LOOP;
         END $$"
    ))
    .execute(&mut *writer)
    .await
    .expect("2,000 transfers, one transaction each");
    sqlx::raw_sql("RESET synchronous_commit; ANALYZE transfers")
        .execute(&mut *writer)
        .await
        .expect("analyze");
    drop(writer);

    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .expect("a new connection");
    let mut tx = sqlx::Connection::begin(&mut conn).await.expect("begin");
    sqlx::query(
        "INSERT INTO transfers (id, kind, reference)
         VALUES ('ffffffff-ffff-7fff-bfff-ffffffffffff', 'history', 'probe')",
    )
    .execute(&mut *tx)
    .await
    .expect("probe transfer");
    let before: i64 =
        sqlx::query_scalar("SELECT pg_stat_get_xact_blocks_fetched('transfers'::regclass)")
            .fetch_one(&mut *tx)
            .await
            .expect("blocks fetched");
    sqlx::query(
        "INSERT INTO entries (transfer_id, account_id, amount)
         SELECT 'ffffffff-ffff-7fff-bfff-ffffffffffff', a, m
           FROM generate_series(1, 300) g, (VALUES ($1::bigint, 1), ($2::bigint, -1)) l(a, m)",
    )
    .bind(hot)
    .bind(alice)
    .execute(&mut *tx)
    .await
    .expect("600 entries");
    let fetched: i64 =
        sqlx::query_scalar("SELECT pg_stat_get_xact_blocks_fetched('transfers'::regclass)")
            .fetch_one(&mut *tx)
            .await
            .expect("blocks fetched");
    tx.commit().await.expect("the probe commits");
    let by_the_entries = fetched - before;
    assert!(
        by_the_entries <= 5,
        "writing the entries fetched {by_the_entries} heap blocks of transfers: a scan"
    );
    // The audit only: `assert_consistent` would also page through alice's 2,301 entries.
    let mut conn = db.pool.acquire().await.expect("connection");
    let findings = journal::audit(&mut conn).await.expect("audit runs");
    assert!(findings.is_empty(), "{findings:?}");
}
