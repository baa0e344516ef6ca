//! ETH and ERC-20 deposits on a real node are confirmed at their asset's
//! `confirmations_min` and credited exactly once, to the wei.

use std::time::Duration;

use alloy::primitives::Address;
use coinhub_tests::exchange::credited_deposit_count;
use coinhub_tests::stack::{CHAIN, DECIMALS, ETH, TOKEN};
use coinhub_tests::{DepositView, Stack, StackOptions, run_test, to_base_units};

const WAIT: Duration = Duration::from_secs(60);

/// Proves: an ETH deposit and an ERC-20 deposit to a member's address are detected with the
/// right amount, asset, member and block; each stays `detected` while it has fewer than its
/// asset's `confirmations_min` confirmations and becomes `confirmed` when it reaches them
/// (ETH 3, TST 5); the exchange credits each once, so the member's balances equal the amounts
/// sent to the wei; and a later deposit adds exactly its own amount (nothing was credited
/// twice in between).
///
/// Steps: start the stack; get alice's address (twice: same answer; EIP-55); send 1.5 ETH
/// and 250 TST; wait until both are `detected` and check their fields; mine one block at a
/// time, after each waiting until coinhubd has scanned the tip and checking that a deposit
/// below its threshold is still `detected`, and waiting for `confirmed` at the threshold;
/// wait for the balances; send 0.25 ETH more as a barrier, confirm it, and check the
/// balances are 1.75 ETH and 250 TST, the exchange holds three credits and coinhubd lists
/// three confirmed deposits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_and_erc20_deposits_are_confirmed_and_credited_once() {
    run_test("eth_and_erc20_deposits_are_confirmed_and_credited_once", |env| async move {
        let stack = Stack::start(&env, StackOptions::default()).await?;
        let api = stack.coinhubd.api();
        let token = stack.token();

        let alice = stack.deposit_address("alice").await?;
        let again = api.new_address("alice", CHAIN).await?;
        assert_eq!(again.address, alice.to_checksum(None), "same address again, EIP-55 checksummed");

        let eth_amount = to_base_units("1.5", DECIMALS);
        let token_amount = to_base_units("250", DECIMALS);
        let eth_receipt = stack.chain.send_eth(1, alice, eth_amount).await?;
        let token_receipt = stack.chain.send_erc20(token, 0, alice, token_amount).await?;
        let eth_txid = eth_receipt.transaction_hash.to_string();
        let token_txid = token_receipt.transaction_hash.to_string();

        let eth = api.wait_deposit_status("alice", &eth_txid, "detected", WAIT).await?;
        let tst = api.wait_deposit_status("alice", &token_txid, "detected", WAIT).await?;
        check_fields(&eth, ETH, &eth_amount.to_string(), alice, eth_receipt.block_number, 0);
        let log_index = token_receipt.inner.logs()[0].log_index.expect("mined log");
        check_fields(&tst, TOKEN, &token_amount.to_string(), alice, token_receipt.block_number, log_index);

        let thresholds = [(eth_txid.as_str(), eth.block_height, 3u64), (token_txid.as_str(), tst.block_height, 5)];
        let mut tip = stack.chain.block_number().await?;
        while thresholds.iter().any(|(_, height, min)| tip - height + 1 < *min) {
            tip = stack.mine_and_scan(1).await?;
            for (txid, height, min) in thresholds {
                let confirmations = tip - height + 1;
                if confirmations >= min {
                    api.wait_deposit_status("alice", txid, "confirmed", WAIT).await?;
                } else {
                    let deposit = api.deposit_by_txid("alice", txid).await?.expect("listed");
                    assert_eq!(
                        deposit.status, "detected",
                        "{txid} must not be confirmed with {confirmations} of {min} confirmations"
                    );
                }
            }
        }

        stack.wait_balances("alice", &[(ETH, eth_amount), (TOKEN, token_amount)]).await?;

        // Barrier: a later deposit is credited after everything before it was processed.
        let more = to_base_units("0.25", DECIMALS);
        let receipt = stack.chain.send_eth(2, alice, more).await?;
        stack.mine_and_scan(3).await?;
        api.wait_deposit_status("alice", &receipt.transaction_hash.to_string(), "confirmed", WAIT).await?;
        stack.wait_balances("alice", &[(ETH, eth_amount + more), (TOKEN, token_amount)]).await?;

        assert_eq!(credited_deposit_count(&stack.exchange_db, "alice").await?, 3);
        let deposits = api.deposits("alice").await?;
        assert_eq!(deposits.len(), 3, "{deposits:#?}");
        assert!(deposits.iter().all(|d| d.status == "confirmed"), "{deposits:#?}");

        let metrics = api.metrics().await?;
        coinhub_tests::promtool::check_metrics(&metrics)?;
        let exchange_metrics = stack.exchange().metrics().await?;
        coinhub_tests::promtool::check_metrics(&exchange_metrics)?;
        assert!(
            exchange_metrics.lines().any(|line| line == "coinhub_exchange_outbox_backlog 0"),
            "{exchange_metrics}"
        );
        Ok(())
    })
    .await;
}

fn check_fields(
    deposit: &DepositView,
    asset: &str,
    amount: &str,
    address: Address,
    block: Option<u64>,
    index: u64,
) {
    assert_eq!(deposit.asset, asset, "{deposit:?}");
    assert_eq!(deposit.amount, amount, "{deposit:?}");
    assert_eq!(deposit.decimals, DECIMALS, "{deposit:?}");
    assert_eq!(deposit.member, "alice", "{deposit:?}");
    assert_eq!(deposit.chain, CHAIN, "{deposit:?}");
    assert_eq!(deposit.address, address.to_checksum(None), "{deposit:?}");
    assert_eq!(Some(deposit.block_height), block, "{deposit:?}");
    assert_eq!(u64::from(deposit.index), index, "{deposit:?}");
}
