//! `PgChainStore` against a real PostgreSQL: each follower step writes deposits and their
//! outbox events in one transaction, confirmations follow `confirmations_min`, a reorg
//! orphans (and reports) deposits above the fork point, and a re-mined deposit comes back
//! under the same deposit id.

use std::collections::BTreeMap;
use std::sync::Arc;

use alloy::primitives::U256;
use coinhub_chains::evm::Watchlist;
use coinhub_chains::follower::FollowerStore;
use coinhub_chains::{BlockHash, BlockRef, Recipient, Transfer};
use coinhub_daemon::store::{AssetRules, ChainWatchlist, PgChainStore};
use coinhub_events::DepositEvent;
use sqlx::{Connection, PgConnection, PgPool};

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const ALICE: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

/// A fresh database, dropped at the end of the test.
struct TestDatabase {
    name: String,
    pool: PgPool,
}

impl TestDatabase {
    async fn create() -> Self {
        let name = format!("coinhub_store_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(ADMIN_URL)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create db");
        let config = coinhub_daemon::config::DatabaseConfig {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}").into(),
            connections_max: 4,
        };
        let pool = coinhub_daemon::db::connect_and_migrate(&config)
            .await
            .expect("migrate");
        Self { name, pool }
    }

    async fn drop_database(self) {
        self.pool.close().await;
        let mut admin = PgConnection::connect(ADMIN_URL).await.expect("PostgreSQL");
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&mut admin)
            .await
            .expect("drop db");
    }
}

fn block(height: u64, branch: &str) -> BlockRef {
    let parent = if height == 0 {
        "genesis".to_owned()
    } else {
        format!("{branch}-{}", height - 1)
    };
    BlockRef {
        height,
        hash: BlockHash::new(format!("{branch}-{height}")),
        parent_hash: BlockHash::new(parent),
    }
}

fn transfer(txid: &str, amount: u64) -> Transfer {
    Transfer {
        txid: txid.to_owned(),
        index: 0,
        recipient: Recipient::Address(ALICE.to_owned()),
        asset: "ETH".to_owned(),
        amount: U256::from(amount),
    }
}

/// A fresh database with alice's ethereum address issued, and a store for chain
/// `ethereum` with one asset `ETH` under `rules` (reorg depth 8).
async fn setup(rules: AssetRules) -> (TestDatabase, PgChainStore, Arc<Watchlist>) {
    let db = TestDatabase::create().await;
    sqlx::query(
        "INSERT INTO deposit_addresses (chain, member_id, derivation_index, address)
         VALUES ('ethereum', 'alice', 0, $1)",
    )
    .bind(ALICE)
    .execute(&db.pool)
    .await
    .expect("address");
    let watchlist = Arc::new(Watchlist::default());
    let store = PgChainStore::new(
        db.pool.clone(),
        "ethereum".to_owned(),
        BTreeMap::from([("ETH".to_owned(), rules)]),
        8,
        ChainWatchlist::Evm(watchlist.clone()),
    );
    (db, store, watchlist)
}

async fn status_of(pool: &PgPool, txid: &str) -> String {
    sqlx::query_scalar("SELECT status FROM deposits WHERE txid = $1")
        .bind(txid)
        .fetch_one(pool)
        .await
        .expect("deposit row")
}

/// (routing key, deposit txid, was_confirmed) of every outbox event, in order.
async fn outbox(pool: &PgPool) -> Vec<(String, String, bool)> {
    let rows: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT routing_key, payload FROM outbox ORDER BY seq")
            .fetch_all(pool)
            .await
            .expect("outbox");
    rows.into_iter()
        .map(|(key, payload)| {
            let event: DepositEvent =
                serde_json::from_value(payload).expect("outbox holds valid events");
            assert_eq!(event.event.routing_key(), key);
            (key, event.txid, event.was_confirmed)
        })
        .collect()
}

/// Steps: alice's address is issued; a block pays her 5 wei (below `deposit_min` = 10,
/// recorded as ignored) and 1000 wei; two more blocks confirm it (`confirmations_min` = 3);
/// a reorg to height 1 orphans it and reports `was_confirmed`; the same transaction mined in
/// the new branch is detected again under the same deposit id, then confirmed again.
#[tokio::test]
async fn deposits_follow_their_blocks() {
    let rules = AssetRules {
        decimals: 18,
        confirmations_min: 3,
        deposit_min: U256::from(10u8),
    };
    let (db, store, watchlist) = setup(rules).await;
    let pool = db.pool.clone();
    store.refresh_watchlist().await.expect("refresh");
    assert!(watchlist.contains(&ALICE.parse().expect("address")));

    store
        .connect_block(&block(0, "a"), &[])
        .await
        .expect("connect 0");
    store
        .connect_block(&block(1, "a"), &[])
        .await
        .expect("connect 1");
    store
        .connect_block(
            &block(2, "a"),
            &[transfer("0xdust", 5), transfer("0xpay", 1000)],
        )
        .await
        .expect("connect 2");
    assert_eq!(status_of(&pool, "0xdust").await, "ignored");
    assert_eq!(status_of(&pool, "0xpay").await, "detected");
    store
        .connect_block(&block(3, "a"), &[])
        .await
        .expect("connect 3");
    assert_eq!(
        status_of(&pool, "0xpay").await,
        "detected",
        "2 confirmations < 3"
    );
    store
        .connect_block(&block(4, "a"), &[])
        .await
        .expect("connect 4");
    assert_eq!(status_of(&pool, "0xpay").await, "confirmed");

    store.disconnect_above(1).await.expect("unwind");
    assert_eq!(status_of(&pool, "0xpay").await, "orphaned");
    assert_eq!(store.tip().await.expect("tip").map(|b| b.height), Some(1));

    store
        .connect_block(&block(2, "b"), &[])
        .await
        .expect("connect b2");
    store
        .connect_block(&block(3, "b"), &[transfer("0xpay", 1000)])
        .await
        .expect("connect b3");
    assert_eq!(status_of(&pool, "0xpay").await, "detected");
    let height: i64 = sqlx::query_scalar("SELECT block_height FROM deposits WHERE txid = '0xpay'")
        .fetch_one(&pool)
        .await
        .expect("height");
    assert_eq!(height, 3);
    store
        .connect_block(&block(4, "b"), &[])
        .await
        .expect("connect b4");
    store
        .connect_block(&block(5, "b"), &[])
        .await
        .expect("connect b5");
    assert_eq!(status_of(&pool, "0xpay").await, "confirmed");

    let pay = |key: &str, was_confirmed| (key.to_owned(), "0xpay".to_owned(), was_confirmed);
    assert_eq!(
        outbox(&pool).await,
        vec![
            pay("deposit.detected", false),
            pay("deposit.confirmed", false),
            pay("deposit.orphaned", true),
            pay("deposit.detected", false),
            pay("deposit.confirmed", false),
        ]
    );
    let deposits: i64 = sqlx::query_scalar("SELECT count(*) FROM deposits")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(
        deposits, 2,
        "one row per (chain, txid, index), revived not duplicated"
    );
    db.drop_database().await;
}

/// Connecting a height that is already stored fails and leaves nothing behind: the deposit
/// and event of the refused block are rolled back with it.
#[tokio::test]
async fn a_failed_step_is_not_half_applied() {
    let rules = AssetRules {
        decimals: 18,
        confirmations_min: 1,
        deposit_min: U256::ZERO,
    };
    let (db, store, _) = setup(rules).await;
    let pool = db.pool.clone();
    store
        .connect_block(&block(0, "a"), &[])
        .await
        .expect("connect 0");
    let error = store
        .connect_block(&block(0, "b"), &[transfer("0xlost", 7)])
        .await;
    assert!(
        error.is_err(),
        "a second block at one height must be refused"
    );
    let deposits: i64 = sqlx::query_scalar("SELECT count(*) FROM deposits")
        .fetch_one(&pool)
        .await
        .expect("count");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!((deposits, events), (0, 0));
    db.drop_database().await;
}
