//! Bitcoin deposits on the regtest node double: 2-of-3 `wsh(sortedmulti)` deposit addresses,
//! a batched transaction, confirmations, crediting in satoshi, and a reorg after credit.

use std::str::FromStr;
use std::time::Duration;

use alloy::primitives::U256;
use bitcoin::{Address, Amount, Network, ScriptBuf};
use coinhub_bitcoind_double::wallet::TestWallet;
use coinhub_bitcoind_double::{BitcoindDouble, Params};
use coinhub_custody::utxo::{AccountXpub, Branch, MultisigScript, UtxoNetwork, UtxoWallet};
use coinhub_tests::stack::{KEY_B_WORDS, KEY_C_WORDS, UtxoChainOptions, test_account_xpub};
use coinhub_tests::{DepositView, Stack, StackOptions, run_test};

const WAIT: Duration = Duration::from_secs(60);
const CHAIN: &str = "bitcoin";
const BTC: &str = "BTC";

/// A stack whose coinhubd also follows the double as chain `bitcoin` (BTC needs 2
/// confirmations).
async fn start(env: &coinhub_tests::TestEnv, double: &BitcoindDouble) -> anyhow::Result<Stack> {
    let rpc = (
        double.rpc_url.as_str(),
        double.user.as_str(),
        double.password.as_str(),
    );
    let utxo = UtxoChainOptions::regtest_double(CHAIN, UtxoNetwork::BitcoinRegtest, rpc, BTC, 2)?;
    let options = StackOptions {
        with_token: false,
        utxo: Some(utxo),
        ..StackOptions::default()
    };
    Stack::start(env, options).await
}

/// The deposit address of `member` on the double's chain and the script it pays to.
async fn deposit_script(stack: &Stack, member: &str) -> anyhow::Result<(String, ScriptBuf)> {
    let address = stack
        .coinhubd
        .api()
        .new_address(member, CHAIN)
        .await?
        .address;
    let script = Address::from_str(&address)?
        .require_network(Network::Regtest)?
        .script_pubkey();
    Ok((address, script))
}

/// The receive script at `index` of coinhubd's Bitcoin wallet, derived here from key A's
/// BIP48 xpub (read from coinhubd's database), B and C: an address nobody was given yet.
async fn wallet_script(stack: &Stack, index: u32) -> anyhow::Result<ScriptBuf> {
    let daemon_db = sqlx::PgPool::connect(&stack.daemon_db.url()).await?;
    let key_a: String = sqlx::query_scalar(
        "SELECT utxo_account_xpubs ->> 'bitcoin-regtest' FROM custody_keys WHERE key_id = 'a'",
    )
    .fetch_one(&daemon_db)
    .await?;
    let keys: [AccountXpub; 3] = [
        key_a.parse()?,
        test_account_xpub(KEY_B_WORDS, UtxoNetwork::BitcoinRegtest)?.parse()?,
        test_account_xpub(KEY_C_WORDS, UtxoNetwork::BitcoinRegtest)?.parse()?,
    ];
    let wallet = UtxoWallet::new(UtxoNetwork::BitcoinRegtest, MultisigScript::Wsh, keys)?;
    Ok(wallet.script_pubkey(Branch::Receive, index)?)
}

/// `member`'s deposits of transaction `txid` once all `count` of them have `status`.
async fn wait_outputs(
    stack: &Stack,
    member: &str,
    txid: &str,
    status: &str,
    count: usize,
) -> anyhow::Result<Vec<DepositView>> {
    let what = format!("{count} {status} outputs of {txid} for {member}");
    coinhub_tests::wait::wait_until(&what, WAIT, Duration::from_millis(200), || async {
        let mut deposits: Vec<DepositView> = stack
            .coinhubd
            .api()
            .deposits(member)
            .await?
            .into_iter()
            .filter(|d| d.txid == txid && d.status == status)
            .collect();
        deposits.sort_by_key(|d| d.index);
        Ok((deposits.len() == count).then_some(deposits))
    })
    .await
}

fn sat(amount: u64) -> U256 {
    U256::from(amount)
}

/// Proves: deposit addresses are the wallet's own 2-of-3 P2WSH addresses (bech32, 34-byte
/// script); one transaction paying alice twice and bob once yields three deposits, one per
/// output (txid, vout), each confirmed after 2 blocks and credited to the satoshi; an output
/// of the same transaction to the next, not yet issued, wallet address is seen through the
/// look-ahead window and recorded in `unassigned_deposits`; a reorg
/// after credit (`invalidateblock` of the deposit's block) orphans the deposits and reports
/// them as `was_confirmed`, and when the same transaction is mined again nothing is credited
/// a second time.
///
/// Steps: start the double and the stack; hand out alice's and bob's BTC addresses; fund the
/// test wallet (101 blocks) and pay 0.5 BTC to alice, 0.25 BTC to bob and 0.1 BTC to alice
/// in one transaction, plus 0.01 BTC to the unissued index-2 address; mine 2 blocks; wait
/// for three confirmed deposits, the unassigned one, and the balances
/// alice 60,000,000 sat, bob 25,000,000 sat; invalidate the deposit's block; wait until the
/// deposits are orphaned; mine 3 blocks (the transaction is mined again from the mempool);
/// wait until they are confirmed again; balances are unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitcoin_deposits_are_credited_once_per_output_across_a_reorg() {
    run_test(
        "bitcoin_deposits_are_credited_once_per_output_across_a_reorg",
        |env| async move {
            let double = BitcoindDouble::start(Params::bitcoin())?;
            let stack = start(&env, &double).await?;
            let (alice_address, alice) = deposit_script(&stack, "alice").await?;
            let (_, bob) = deposit_script(&stack, "bob").await?;
            assert!(alice_address.starts_with("bcrt1q"), "{alice_address}");
            assert!(
                alice.is_p2wsh(),
                "a 2-of-3 wsh(sortedmulti) script: {alice:?}"
            );
            assert_ne!(alice, bob);

            let unissued = wallet_script(&stack, 2).await?;
            let wallet = TestWallet::new(&double);
            wallet.fund(1).await?;
            let txid = wallet
                .pay(&[
                    (alice.clone(), Amount::from_sat(50_000_000)),
                    (bob.clone(), Amount::from_sat(25_000_000)),
                    (alice.clone(), Amount::from_sat(10_000_000)),
                    (unissued, Amount::from_sat(1_000_000)),
                ])
                .await?
                .to_string();
            let mined = wallet.mine(2).await?;
            let deposit_block = mined[0].to_string();

            let alice_deposits = wait_outputs(&stack, "alice", &txid, "confirmed", 2).await?;
            let outputs: Vec<(u32, &str)> = alice_deposits
                .iter()
                .map(|d| (d.index, d.amount.as_str()))
                .collect();
            assert_eq!(outputs, vec![(0, "50000000"), (2, "10000000")]);
            assert!(
                alice_deposits
                    .iter()
                    .all(|d| d.block_hash == deposit_block && d.decimals == 8)
            );
            let bob_deposits = wait_outputs(&stack, "bob", &txid, "confirmed", 1).await?;
            assert_eq!(
                (bob_deposits[0].index, bob_deposits[0].amount.as_str()),
                (1, "25000000")
            );
            stack
                .wait_balances("alice", &[(BTC, sat(60_000_000))])
                .await?;
            stack
                .wait_balances("bob", &[(BTC, sat(25_000_000))])
                .await?;
            // The look-ahead window watched index 2 before anyone was given it: the payment
            // is recorded for an operator, neither lost nor credited.
            let daemon_db = sqlx::PgPool::connect(&stack.daemon_db.url()).await?;
            let unassigned: (i32, String) =
                sqlx::query_as("SELECT idx, amount::text FROM unassigned_deposits WHERE txid = $1")
                    .bind(&txid)
                    .fetch_one(&daemon_db)
                    .await?;
            assert_eq!(unassigned, (3, "1000000".to_owned()));

            wallet
                .rpc("invalidateblock", serde_json::json!([deposit_block]))
                .await?;
            wait_outputs(&stack, "alice", &txid, "orphaned", 2).await?;
            wait_outputs(&stack, "bob", &txid, "orphaned", 1).await?;
            let exchange_db = sqlx::PgPool::connect(&stack.exchange_db.url()).await?;
            let alerts: i64 = coinhub_tests::wait::wait_until(
                "the exchange recorded the reversal alerts",
                WAIT,
                Duration::from_millis(200),
                || async {
                    let alerts: i64 =
                        sqlx::query_scalar("SELECT count(*) FROM credit_reversal_alerts")
                            .fetch_one(&exchange_db)
                            .await?;
                    Ok((alerts >= 3).then_some(alerts))
                },
            )
            .await?;
            assert_eq!(
                alerts, 3,
                "each credited output that left the chain is reported"
            );

            wallet.mine(3).await?;
            wait_outputs(&stack, "alice", &txid, "confirmed", 2).await?;
            wait_outputs(&stack, "bob", &txid, "confirmed", 1).await?;
            // A later deposit as a barrier: once it is credited, any second credit of the
            // re-mined outputs would have landed too.
            let barrier = wallet
                .pay(&[(bob, Amount::from_sat(1_000_000))])
                .await?
                .to_string();
            wallet.mine(2).await?;
            wait_outputs(&stack, "bob", &barrier, "confirmed", 1).await?;
            stack
                .wait_balances("bob", &[(BTC, sat(26_000_000))])
                .await?;
            stack
                .wait_balances("alice", &[(BTC, sat(60_000_000))])
                .await?;
            Ok(())
        },
    )
    .await;
}

/// Proves: a Bitcoin deposit whose block is invalidated before it has its confirmations is
/// orphaned and not credited; and a coinhubd killed mid-scan (with blocks mined while it is
/// down) resumes from its stored tip, so the re-mined deposit is confirmed and credited
/// exactly once, nothing missed, nothing repeated.
///
/// Steps: pay alice 0.2 BTC and mine 1 block; wait until detected; `invalidateblock` it;
/// wait until orphaned and check nothing is credited; kill coinhubd (SIGKILL); mine 4
/// blocks (the transaction is mined again from the mempool); restart coinhubd; wait until
/// the deposit is confirmed on the new chain; pay a 0.01 BTC barrier deposit, mine 2, wait
/// until it is credited; alice has exactly 0.21 BTC and the exchange credited two deposits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitcoin_reorg_before_confirmation_and_restart_mid_scan() {
    run_test(
        "bitcoin_reorg_before_confirmation_and_restart_mid_scan",
        |env| async move {
            let double = BitcoindDouble::start(Params::bitcoin())?;
            let mut stack = start(&env, &double).await?;
            let (_, alice) = deposit_script(&stack, "alice").await?;
            let wallet = TestWallet::new(&double);
            wallet.fund(1).await?;

            let txid = wallet
                .pay(&[(alice.clone(), Amount::from_sat(20_000_000))])
                .await?
                .to_string();
            let first_block = wallet.mine(1).await?[0].to_string();
            let detected = wait_outputs(&stack, "alice", &txid, "detected", 1).await?;
            assert_eq!(detected[0].block_hash, first_block);
            wallet
                .rpc("invalidateblock", serde_json::json!([first_block]))
                .await?;
            wait_outputs(&stack, "alice", &txid, "orphaned", 1).await?;
            let credited =
                coinhub_tests::exchange::credited_deposit_count(&stack.exchange_db, "alice")
                    .await?;
            assert_eq!(
                credited, 0,
                "an orphaned, never confirmed deposit is not credited"
            );

            stack.coinhubd.kill();
            wallet.mine(4).await?;
            stack.coinhubd.restart().await?;
            // The re-mined block may even be byte-identical to the invalidated one (the
            // double's block time is deterministic): either way it is connected anew.
            wait_outputs(&stack, "alice", &txid, "confirmed", 1).await?;

            let barrier = wallet
                .pay(&[(alice, Amount::from_sat(1_000_000))])
                .await?
                .to_string();
            wallet.mine(2).await?;
            wait_outputs(&stack, "alice", &barrier, "confirmed", 1).await?;
            stack
                .wait_balances("alice", &[(BTC, sat(21_000_000))])
                .await?;
            let credited =
                coinhub_tests::exchange::credited_deposit_count(&stack.exchange_db, "alice")
                    .await?;
            assert_eq!(credited, 2);
            Ok(())
        },
    )
    .await;
}
