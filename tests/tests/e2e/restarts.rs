//! Crashes (SIGKILL) of `coinhubd` and `coinhub-exchange` at every step of a deposit's way
//! neither lose nor double-credit it.

use std::time::Duration;

use coinhub_tests::amqp::EXCHANGE_DEPOSITS_QUEUE;
use coinhub_tests::exchange::credited_deposit_count;
use coinhub_tests::stack::{CHAIN, DECIMALS, ETH, TOKEN};
use coinhub_tests::{Stack, StackOptions, run_test, to_base_units, wait_for};

const WAIT: Duration = Duration::from_secs(60);

/// Proves: a deposit survives crashes of both processes at each step — after detection,
/// while blocks arrive with coinhubd down (it resumes from its stored cursor and confirms),
/// with the confirmation published but the exchange down (the event waits in the durable
/// queue), right after a confirmation (the relay may republish), and with the exchange
/// killed while it consumes — and is credited exactly once.
///
/// Steps (ETH needs 3 confirmations, TST 5): send 1.5 ETH and 250 TST to alice; wait until
/// both are `detected`; kill the exchange; kill coinhubd, mine 2 blocks, restart coinhubd
/// and wait for ETH `confirmed` (TST still `detected`); wait until the ETH confirmation waits
/// in the exchange's queue; kill and restart coinhubd; mine 2 blocks, wait for TST
/// `confirmed` and kill coinhubd at once, restart it; wait until both confirmations wait in
/// the queue; start the exchange, kill it as soon as any credit shows, start it again; wait
/// for exactly 1.5 ETH and 250 TST; send 0.25 ETH as a barrier and check 1.75 ETH, 250 TST,
/// three credits and three confirmed deposits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_neither_lose_nor_double_credit() {
    run_test(
        "restarts_neither_lose_nor_double_credit",
        |env| async move {
            let mut stack = Stack::start(&env, StackOptions::default()).await?;
            let amqp = stack.amqp().await?;
            let alice = stack.deposit_address("alice").await?;
            let eth_amount = to_base_units("1.5", DECIMALS);
            let token_amount = to_base_units("250", DECIMALS);
            let eth_txid = stack
                .chain
                .send_eth(1, alice, eth_amount)
                .await?
                .transaction_hash
                .to_string();
            let token_txid = stack
                .chain
                .send_erc20(stack.token(), 0, alice, token_amount)
                .await?
                .transaction_hash
                .to_string();
            stack
                .coinhubd
                .api()
                .wait_deposit_status("alice", &eth_txid, "detected", WAIT)
                .await?;
            stack
                .coinhubd
                .api()
                .wait_deposit_status("alice", &token_txid, "detected", WAIT)
                .await?;

            // The exchange is down from here until both confirmations are queued.
            stack.exchange_mut().kill();

            // Blocks arrive while coinhubd is down: ETH reaches 4 confirmations, TST 3.
            stack.coinhubd.kill();
            stack.chain.mine(2).await?;
            stack.coinhubd.restart().await?;
            let tip = stack.chain.block_number().await?;
            stack.coinhubd.api().wait_scanned(CHAIN, tip, WAIT).await?;
            stack
                .coinhubd
                .api()
                .wait_deposit_status("alice", &eth_txid, "confirmed", WAIT)
                .await?;
            let tst = stack
                .coinhubd
                .api()
                .deposit_by_txid("alice", &token_txid)
                .await?
                .expect("listed");
            assert_eq!(
                tst.status, "detected",
                "TST has 3 of 5 confirmations: {tst:?}"
            );

            // Published and durable while nobody consumes.
            wait_queued(&amqp, 1).await?;
            stack.coinhubd.kill();
            stack.coinhubd.restart().await?;

            // Crash right after the TST confirmation (between the state change and/or the
            // relay's publish and its bookkeeping).
            stack.chain.mine(2).await?;
            stack
                .coinhubd
                .api()
                .wait_deposit_status("alice", &token_txid, "confirmed", WAIT)
                .await?;
            stack.coinhubd.kill();
            stack.coinhubd.restart().await?;
            wait_queued(&amqp, 2).await?;

            // The exchange consumes; crash it as soon as the first credit is committed.
            stack.exchange_mut().restart_nowait()?;
            wait_for("the exchange has credited something", || async {
                let balances = stack.exchange().balances("alice").await?;
                Ok((!balances.is_empty()).then_some(()))
            })
            .await?;
            stack.exchange_mut().kill();
            stack.exchange_mut().restart().await?;
            stack
                .wait_balances("alice", &[(ETH, eth_amount), (TOKEN, token_amount)])
                .await?;

            // Barrier: anything still in flight would have been processed before this.
            let more = to_base_units("0.25", DECIMALS);
            let receipt = stack.chain.send_eth(2, alice, more).await?;
            stack.mine_and_scan(3).await?;
            let txid = receipt.transaction_hash.to_string();
            stack
                .coinhubd
                .api()
                .wait_deposit_status("alice", &txid, "confirmed", WAIT)
                .await?;
            stack
                .wait_balances("alice", &[(ETH, eth_amount + more), (TOKEN, token_amount)])
                .await?;

            assert_eq!(
                credited_deposit_count(&stack.exchange_db, "alice").await?,
                3
            );
            let deposits = stack.coinhubd.api().deposits("alice").await?;
            assert_eq!(deposits.len(), 3, "one row per deposit: {deposits:#?}");
            assert!(
                deposits.iter().all(|d| d.status == "confirmed"),
                "{deposits:#?}"
            );
            Ok(())
        },
    )
    .await;
}

/// Waits until at least `count` messages wait in the exchange's deposit queue.
async fn wait_queued(amqp: &coinhub_tests::Amqp, count: u32) -> anyhow::Result<()> {
    wait_for(
        &format!("{count} message(s) wait in {EXCHANGE_DEPOSITS_QUEUE}"),
        || async {
            let counts = amqp.queue_counts(EXCHANGE_DEPOSITS_QUEUE).await?;
            Ok(counts.filter(|(ready, _)| *ready >= count).map(|_| ()))
        },
    )
    .await
}
