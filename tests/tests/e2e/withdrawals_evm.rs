//! EVM withdrawals from the Safe 2-of-3 hot wallet: the exchange locks the member's funds and
//! sends `withdrawal.request`; coinhubd signs the Safe transaction with key A, the cosigner
//! (its own process, database and OpenBao token) signs with key B, the executor submits
//! `execTransaction`; the exchange settles on `withdrawal.confirmed`.

use std::time::Duration;

use alloy::primitives::{Address, U256};
use coinhub_tests::stack::{CHAIN, CosignerOptions, DECIMALS, ETH, TOKEN};
use coinhub_tests::{Stack, StackOptions, run_test, to_base_units};

const WAIT: Duration = Duration::from_secs(90);

/// Starts a stack with a cosigner; credits `eth` and `tst` to `member` through real
/// deposits, and funds the Safe with 5 ETH and 1,000 TST (as if deposits had been collected).
async fn funded_stack(
    env: &coinhub_tests::TestEnv,
    options: CosignerOptions,
    member: &str,
    eth: U256,
    tst: U256,
) -> anyhow::Result<Stack> {
    let stack = Stack::start(
        env,
        StackOptions {
            eth_confirmations_min: 2,
            token_confirmations_min: 2,
            cosigner: Some(options),
            ..StackOptions::default()
        },
    )
    .await?;
    let address = stack.deposit_address(member).await?;
    stack.chain.send_eth(1, address, eth).await?;
    stack
        .chain
        .send_erc20(stack.token(), 0, address, tst)
        .await?;
    let safe = stack.cosigner().safe;
    stack
        .chain
        .send_eth(2, safe, to_base_units("5", DECIMALS))
        .await?;
    stack
        .chain
        .send_erc20(stack.token(), 0, safe, to_base_units("1000", DECIMALS))
        .await?;
    stack.mine_and_scan(2).await?;
    stack
        .wait_balances(member, &[(ETH, eth), (TOKEN, tst)])
        .await?;
    Ok(stack)
}

/// Mines a block at a time until withdrawal `id` is `confirmed` (at most 20 blocks).
async fn mine_until_confirmed(stack: &Stack, id: &str) -> anyhow::Result<serde_json::Value> {
    let api = stack.coinhubd.api();
    for _ in 0..20 {
        if let Some(withdrawal) = api.withdrawal(id).await?
            && withdrawal["status"] == "confirmed"
        {
            return Ok(withdrawal);
        }
        stack.mine_and_scan(1).await?;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    api.wait_withdrawal_status(id, "confirmed", WAIT).await
}

/// Proves: an ETH and an ERC-20 withdrawal are each paid once, exactly, from the Safe by one
/// `execTransaction` carrying the signatures of keys A and B (the Safe's nonce advances by
/// one per withdrawal); coinhubd reports `confirmed` with the txid; the exchange settles: the
/// member's locked funds are debited and nothing else changes; the destination receives
/// exactly the amount and the Safe pays exactly it (the executor pays the gas).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_and_erc20_withdrawals_are_paid_by_the_safe_and_settled() {
    run_test(
        "eth_and_erc20_withdrawals_are_paid_by_the_safe_and_settled",
        |env| async move {
            let (eth, tst) = (to_base_units("2", DECIMALS), to_base_units("300", DECIMALS));
            let stack = funded_stack(&env, CosignerOptions::default(), "alice", eth, tst).await?;
            let safe = stack.cosigner().safe;
            let destination = Address::repeat_byte(0x5a);
            let safe_eth_before = stack.chain.eth_balance(safe).await?;
            let safe_nonce_before =
                coinhub_tests::safe::safe_nonce(stack.chain.provider(), safe).await?;

            let eth_out = to_base_units("1.25", DECIMALS);
            let id = stack
                .exchange()
                .withdraw(
                    "alice",
                    ETH,
                    &eth_out.to_string(),
                    &destination.to_checksum(None),
                )
                .await?;
            let withdrawal = mine_until_confirmed(&stack, &id).await?;
            assert_eq!(
                withdrawal["attempts"].as_array().map(Vec::len),
                Some(1),
                "{withdrawal}"
            );
            assert_eq!(
                stack.chain.eth_balance(destination).await?,
                eth_out,
                "paid exactly once"
            );
            assert_eq!(
                stack.chain.eth_balance(safe).await?,
                safe_eth_before - eth_out,
                "the Safe pays the amount, not the gas"
            );

            let tst_out = to_base_units("120.5", DECIMALS);
            let id = stack
                .exchange()
                .withdraw(
                    "alice",
                    TOKEN,
                    &tst_out.to_string(),
                    &destination.to_checksum(None),
                )
                .await?;
            mine_until_confirmed(&stack, &id).await?;
            assert_eq!(
                stack
                    .chain
                    .erc20_balance(stack.token(), destination)
                    .await?,
                tst_out
            );
            assert_eq!(
                coinhub_tests::safe::safe_nonce(stack.chain.provider(), safe).await?,
                safe_nonce_before + U256::from(2u8),
                "one Safe transaction per withdrawal"
            );

            stack
                .wait_balances("alice", &[(ETH, eth - eth_out), (TOKEN, tst - tst_out)])
                .await?;
            let _ = CHAIN;
            Ok(())
        },
    )
    .await;
}

/// Proves: a withdrawal whose transaction is not mined (automine off) is replaced after
/// `replace_after_secs` by a transaction with the same executor nonce and a higher fee;
/// when a block is mined exactly one of them is in it, the destination is paid once, and
/// the withdrawal is confirmed with the replacement's txid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_evm_withdrawal_is_replaced_with_the_same_nonce() {
    run_test(
        "a_stuck_evm_withdrawal_is_replaced_with_the_same_nonce",
        |env| async move {
            let options = CosignerOptions {
                replace_after_secs: 2,
                ..CosignerOptions::default()
            };
            let (eth, tst) = (to_base_units("1", DECIMALS), to_base_units("1", DECIMALS));
            let stack = funded_stack(&env, options, "bob", eth, tst).await?;
            let destination = Address::repeat_byte(0x6b);
            stack.chain.set_automine(false).await?;

            let out = to_base_units("0.4", DECIMALS);
            let id = stack
                .exchange()
                .withdraw("bob", ETH, &out.to_string(), &destination.to_checksum(None))
                .await?;
            let api = stack.coinhubd.api();
            api.wait_withdrawal_status(&id, "broadcast", WAIT).await?;
            coinhub_tests::wait::wait_until(
                "a replacement is broadcast",
                WAIT,
                Duration::from_millis(200),
                || async {
                    let withdrawal = api.withdrawal(&id).await?.unwrap_or_default();
                    let attempts = withdrawal["attempts"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    Ok((attempts.len() >= 2
                        && attempts.iter().all(|a| !a["broadcast_at"].is_null()))
                    .then_some(()))
                },
            )
            .await?;
            assert_eq!(
                stack.chain.eth_balance(destination).await?,
                U256::ZERO,
                "nothing mined yet"
            );

            stack.chain.set_automine(true).await?;
            let withdrawal = mine_until_confirmed(&stack, &id).await?;
            let attempts = withdrawal["attempts"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let in_block = stack
                .chain
                .transactions_in_block(withdrawal["block_height"].as_u64().unwrap_or_default())
                .await?;
            let mined: Vec<_> = attempts
                .iter()
                .filter(|a| {
                    a["txid"]
                        .as_str()
                        .is_some_and(|t| in_block.iter().any(|b| b == t))
                })
                .collect();
            assert_eq!(mined.len(), 1, "exactly one attempt is mined: {withdrawal}");
            assert!(
                mined[0]["attempt"].as_i64() >= Some(1),
                "the replacement was mined: {withdrawal}"
            );
            assert_eq!(
                stack.chain.eth_balance(destination).await?,
                out,
                "paid exactly once"
            );
            stack
                .wait_balances("bob", &[(ETH, eth - out), (TOKEN, tst)])
                .await?;
            Ok(())
        },
    )
    .await;
}

/// Proves: when the node drops the executor's transaction from its mempool
/// (`anvil_dropTransaction`, as a node restart or eviction would), coinhubd notices it is
/// gone and sends the same stored transaction again (same nonce, same hash; nothing is
/// skipped or rebuilt), which is then mined once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_evm_withdrawal_is_sent_again_not_skipped() {
    run_test(
        "a_dropped_evm_withdrawal_is_sent_again_not_skipped",
        |env| async move {
            let (eth, tst) = (to_base_units("1", DECIMALS), to_base_units("1", DECIMALS));
            let stack = funded_stack(&env, CosignerOptions::default(), "carl", eth, tst).await?;
            let destination = Address::repeat_byte(0x7c);
            stack.chain.set_automine(false).await?;
            let out = to_base_units("0.3", DECIMALS);
            let id = stack
                .exchange()
                .withdraw(
                    "carl",
                    ETH,
                    &out.to_string(),
                    &destination.to_checksum(None),
                )
                .await?;
            let api = stack.coinhubd.api();
            let withdrawal = api.wait_withdrawal_status(&id, "broadcast", WAIT).await?;
            let txid = withdrawal["attempts"][0]["txid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            stack.chain.drop_transaction(&txid).await?;
            assert!(
                !stack.chain.knows_transaction(&txid).await?,
                "anvil dropped it"
            );
            coinhub_tests::wait::wait_until(
                "coinhubd sends the dropped transaction again",
                WAIT,
                Duration::from_millis(100),
                || async { Ok(stack.chain.knows_transaction(&txid).await?.then_some(())) },
            )
            .await?;
            stack.chain.set_automine(true).await?;
            let withdrawal = mine_until_confirmed(&stack, &id).await?;
            assert_eq!(
                withdrawal["attempts"].as_array().map(Vec::len),
                Some(1),
                "no new transaction: {withdrawal}"
            );
            assert_eq!(stack.chain.eth_balance(destination).await?, out);
            stack
                .wait_balances("carl", &[(ETH, eth - out), (TOKEN, tst)])
                .await?;
            Ok(())
        },
    )
    .await;
}
