//! At-least-once delivery into the exchange: duplicates credit once, poison goes to the
//! dead-letter queue and the consumer keeps going.

use std::time::Duration;

use coinhub_custody::testing::BaoDevServer;
use coinhub_events::topology::routing;
use coinhub_events::{BaseUnits, DepositEvent, DepositEventKind, SCHEMA_VERSION};
use coinhub_tests::exchange::{ExchangeConfig, credited_deposit_count, exchange_vault};
use coinhub_tests::stack::{DECIMALS, ETH, TOKEN};
use coinhub_tests::{Amqp, Database, ExchangeProcess, Vhost, run_test, to_base_units, wait_for};
use uuid::Uuid;

fn confirmed_event(member: &str, asset: &str, txid: &str, amount: &str) -> DepositEvent {
    DepositEvent {
        version: SCHEMA_VERSION,
        id: Uuid::new_v4(),
        event: DepositEventKind::Confirmed,
        occurred_at: time::OffsetDateTime::now_utc(),
        deposit_id: DepositEvent::deposit_id_for("ethereum", txid, 0),
        chain: "ethereum".to_owned(),
        asset: asset.to_owned(),
        member: member.parse().expect("valid member"),
        address: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".to_owned(),
        txid: txid.to_owned(),
        index: 0,
        amount: amount.parse::<BaseUnits>().expect("valid amount"),
        decimals: DECIMALS,
        block_height: 7,
        block_hash: format!("0x{:064x}", 7),
        confirmations: 12,
        was_confirmed: false,
    }
}

/// Proves: the exchange credits a `deposit.confirmed` once however often it is delivered
/// (the same message twice, and the same deposit again under a new message id, as a
/// producer that lost its bookkeeping would send it); a message that is not JSON and one
/// of an unknown schema version land in `coinhub.dead-letter` with their reason and the
/// body unchanged; and the consumer keeps going after them.
///
/// Steps: start only the exchange (its database, a vhost); publish to `coinhub.events` with
/// routing key `deposit.confirmed`: event E1 (1.5 ETH) twice, a garbage body, a version-2
/// body, E1's deposit under a new id, then E2 (250 TST); wait until bob's balances are
/// exactly 1.5 ETH and 250 TST (E2 is last, so everything before it was handled); check two
/// credits; wait until the dead-letter queue holds the two poison messages and check their
/// bodies, routing key and reason header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_credit_once_and_garbage_is_dead_lettered() {
    run_test(
        "duplicates_credit_once_and_garbage_is_dead_lettered",
        |env| async move {
            let vhost = Vhost::create()?;
            let ledger = Database::create("coinhub_exchange_e2e").await?;
            let bao = BaoDevServer::start().await?;
            let exchange = ExchangeProcess::start(
                &env,
                &ExchangeConfig::new(
                    &ledger.url(),
                    &vhost.amqp_url(),
                    exchange_vault(&bao).await?,
                ),
            )
            .await?;
            let amqp = Amqp::connect(&vhost.amqp_url()).await?;
            amqp.declare_topology().await?;

            let eth = to_base_units("1.5", DECIMALS).to_string();
            let tst = to_base_units("250", DECIMALS).to_string();
            let e1 = confirmed_event("bob", ETH, &format!("0x{:064x}", 1), &eth);
            let e2 = confirmed_event("bob", TOKEN, &format!("0x{:064x}", 2), &tst);
            let e1_again = DepositEvent {
                id: Uuid::new_v4(),
                ..e1.clone()
            };
            let garbage = b"{this is not json".to_vec();
            let mut future_version = serde_json::to_value(&e1)?;
            future_version["version"] = 2.into();
            future_version["id"] = Uuid::new_v4().to_string().into();
            let future_version = serde_json::to_vec(&future_version)?;

            let key = routing::DEPOSIT_CONFIRMED;
            let publish = |event: &DepositEvent| {
                let body = serde_json::to_vec(event).expect("serializes");
                let id = event.id.to_string();
                let amqp = &amqp;
                async move { amqp.publish_event(key, &id, &body).await }
            };
            publish(&e1).await?;
            publish(&e1).await?;
            amqp.publish_event(key, "garbage-1", &garbage).await?;
            amqp.publish_event(key, "future-version-1", &future_version)
                .await?;
            publish(&e1_again).await?;
            publish(&e2).await?;

            exchange
                .wait_balances(
                    "bob",
                    &[(ETH, &eth), (TOKEN, &tst)],
                    Duration::from_secs(60),
                )
                .await?;
            assert_eq!(credited_deposit_count(&ledger, "bob").await?, 2);

            let taken = std::sync::Mutex::new(Vec::new());
            wait_for("both poison messages are in coinhub.dead-letter", || {
                let more = amqp.take_dead_letters();
                let taken = &taken;
                async move {
                    let more = more.await?;
                    let mut taken = taken.lock().expect("not poisoned");
                    taken.extend(more);
                    Ok((taken.len() >= 2).then_some(()))
                }
            })
            .await?;
            let letters = taken.into_inner().expect("not poisoned");
            assert_eq!(letters.len(), 2, "{letters:#?}");
            let bodies: Vec<&[u8]> = letters.iter().map(|l| l.body.as_slice()).collect();
            assert!(bodies.contains(&garbage.as_slice()), "{letters:#?}");
            assert!(bodies.contains(&future_version.as_slice()), "{letters:#?}");
            for letter in &letters {
                assert_eq!(letter.routing_key, key, "{letter:?}");
                let reason = letter.reason.as_deref().unwrap_or_default();
                assert!(
                    !reason.is_empty(),
                    "a dead letter carries its reason: {letter:?}"
                );
            }

            // Still consuming after the poison: one more credit arrives.
            let e3 = confirmed_event("bob", ETH, &format!("0x{:064x}", 3), "5");
            publish(&e3).await?;
            let eth_plus =
                (to_base_units("1.5", DECIMALS) + alloy::primitives::U256::from(5u8)).to_string();
            exchange
                .wait_balances(
                    "bob",
                    &[(ETH, &eth_plus), (TOKEN, &tst)],
                    Duration::from_secs(60),
                )
                .await?;
            Ok(())
        },
    )
    .await;
}
