//! A reorg that removes a deposit's block before it is confirmed.

use std::time::Duration;

use coinhub_tests::exchange::credited_deposit_count;
use coinhub_tests::stack::{CHAIN, DECIMALS, ETH};
use coinhub_tests::{Stack, StackOptions, run_test, to_base_units};

const WAIT: Duration = Duration::from_secs(60);

/// Proves: when a reorg removes the blocks of two unconfirmed deposits, the one whose
/// transaction is gone from the new branch becomes `orphaned` and is never credited, and
/// the one whose transaction is re-mined in the new branch (same txid, new block) follows
/// its new block, is confirmed there and credited once.
///
/// Steps (ETH needs 4 confirmations): sign and send deposit A (0.7 ETH, account 1) and
/// deposit B (0.3 ETH, account 2), each mined in its own block, then mine one more block;
/// wait until coinhubd has detected both; `anvil_reorg` the last three blocks (A's, B's and
/// the empty one: neither deposit had 4 confirmations) into three new ones that hold only
/// B, in the last of them, and mine one block on the new branch; wait until A is `orphaned`
/// and B is listed in its new block, not confirmed; mine until B has 4 confirmations and
/// wait for `confirmed`; wait until alice's balance is
/// exactly 0.3 ETH; send 0.05 ETH as a barrier and check 0.35 ETH, two credits, A still
/// `orphaned`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorg_orphans_a_deposit_and_credits_the_re_mined_one_once() {
    run_test(
        "reorg_orphans_a_deposit_and_credits_the_re_mined_one_once",
        |env| async move {
            let options = StackOptions {
                eth_confirmations_min: 4,
                with_token: false,
                ..StackOptions::default()
            };
            let stack = Stack::start(&env, options).await?;
            let api = stack.coinhubd.api();
            let alice = stack.deposit_address("alice").await?;

            let a_amount = to_base_units("0.7", DECIMALS);
            let b_amount = to_base_units("0.3", DECIMALS);
            let (a_txid, a_raw) = stack.chain.sign_eth_transfer(1, alice, a_amount).await?;
            let (b_txid, b_raw) = stack.chain.sign_eth_transfer(2, alice, b_amount).await?;
            let a_height = stack
                .chain
                .send_raw(&a_raw)
                .await?
                .block_number
                .expect("mined");
            let b_receipt = stack.chain.send_raw(&b_raw).await?;
            let b_old_hash = b_receipt.block_hash.expect("mined").to_string();
            stack.chain.mine(1).await?;
            let tip = stack.chain.block_number().await?;
            assert_eq!(tip, a_height + 2);

            let a_txid = a_txid.to_string();
            let b_txid = b_txid.to_string();
            api.wait_deposit_status("alice", &a_txid, "detected", WAIT)
                .await?;
            let b_before = api
                .wait_deposit_status("alice", &b_txid, "detected", WAIT)
                .await?;
            assert_eq!(
                b_before.block_hash.to_lowercase(),
                b_old_hash.to_lowercase()
            );
            api.wait_scanned(CHAIN, tip, WAIT).await?;

            // Replace blocks a_height..=tip; B is re-mined in the last new block, A is dropped.
            stack.chain.reorg(3, &[(b_raw.clone(), 2)]).await?;
            let b_new_hash = stack.chain.block_hash(tip).await?.to_string();
            // The new branch grows by a block, as a real one would; B then has 2 of 4.
            stack.chain.mine(1).await?;

            api.wait_deposit_status("alice", &a_txid, "orphaned", WAIT)
                .await?;
            let b_moved = coinhub_tests::wait_for("B is listed in its new block", || async {
                let b = api.deposit_by_txid("alice", &b_txid).await?;
                Ok(b.filter(|b| b.block_hash.to_lowercase() == b_new_hash.to_lowercase()))
            })
            .await?;
            assert_eq!(b_moved.block_height, tip);
            assert_ne!(
                b_moved.status, "confirmed",
                "B has 2 confirmations in the new branch: {b_moved:?}"
            );

            stack.mine_and_scan(2).await?;
            api.wait_deposit_status("alice", &b_txid, "confirmed", WAIT)
                .await?;
            stack.wait_balances("alice", &[(ETH, b_amount)]).await?;

            // Barrier: nothing for A arrives after a later deposit's credit.
            let c_amount = to_base_units("0.05", DECIMALS);
            let c_txid = stack
                .chain
                .send_eth(3, alice, c_amount)
                .await?
                .transaction_hash
                .to_string();
            stack.mine_and_scan(3).await?;
            api.wait_deposit_status("alice", &c_txid, "confirmed", WAIT)
                .await?;
            stack
                .wait_balances("alice", &[(ETH, b_amount + c_amount)])
                .await?;
            assert_eq!(
                credited_deposit_count(&stack.exchange_db, "alice").await?,
                2
            );

            let a = api
                .deposit_by_txid("alice", &a_txid)
                .await?
                .expect("A stays listed");
            assert_eq!(a.status, "orphaned", "{a:?}");
            Ok(())
        },
    )
    .await;
}
