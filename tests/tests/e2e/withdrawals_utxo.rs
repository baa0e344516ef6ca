//! Bitcoin and Dash withdrawals from the 2-of-3 multisig hot wallet on the regtest node
//! double (every input's script checked by libbitcoinconsensus): batching, change, the
//! cosigner's refusals, refusals before signing, and crashes around the broadcast.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use alloy::primitives::U256;
use bitcoin::consensus::encode::deserialize;
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{Amount, CompressedPublicKey, Network, ScriptBuf, Transaction, Txid};
use coinhub_bitcoind_double::wallet::TestWallet;
use coinhub_bitcoind_double::{BitcoindDouble, Params};
use coinhub_custody::utxo::{
    AccountXpub, Branch, MultisigScript, UtxoNetwork, UtxoWallet, dash_address,
};
use coinhub_tests::stack::{
    AssetLimits, CosignerOptions, KEY_C_WORDS, UtxoChainOptions, test_account_xpub,
};
use coinhub_tests::{Stack, StackOptions, run_test};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);
const COIN: u64 = 100_000_000;

/// One UTXO chain under test: Bitcoin (`wsh`) or Dash (`sh`).
#[derive(Clone, Copy)]
struct Coin {
    chain: &'static str,
    asset: &'static str,
    network: UtxoNetwork,
}

const BTC: Coin = Coin {
    chain: "bitcoin",
    asset: "BTC",
    network: UtxoNetwork::BitcoinRegtest,
};
const DASH: Coin = Coin {
    chain: "dash",
    asset: "DASH",
    network: UtxoNetwork::DashRegtest,
};

impl Coin {
    fn params(self) -> Params {
        if self.network.is_dash() {
            Params::dash()
        } else {
            Params::bitcoin()
        }
    }

    /// A destination outside our wallet: P2WPKH on Bitcoin, P2PKH on Dash, from secret
    /// `seed` (test keys only).
    fn destination(self, seed: u8) -> (String, ScriptBuf) {
        let secp = Secp256k1::new();
        let secret = SecretKey::from_slice(&[seed; 32]).expect("valid test key");
        let public = CompressedPublicKey(secret.public_key(&secp));
        if self.network.is_dash() {
            let script = ScriptBuf::new_p2pkh(&public.pubkey_hash());
            let text = dash_address(&script, self.network).expect("a Dash address");
            (text, script)
        } else {
            let address = bitcoin::Address::p2wpkh(&public, Network::Regtest);
            (address.to_string(), address.script_pubkey())
        }
    }
}

/// Starts the double and a stack with a cosigner whose policy for the coin is `limits`; the
/// coin needs 2 confirmations.
async fn start(
    env: &coinhub_tests::TestEnv,
    coin: Coin,
    limits: Option<AssetLimits>,
) -> anyhow::Result<(BitcoindDouble, Stack)> {
    let double = BitcoindDouble::start(coin.params())?;
    let rpc = (
        double.rpc_url.as_str(),
        double.user.as_str(),
        double.password.as_str(),
    );
    let utxo = UtxoChainOptions::regtest_double(coin.chain, coin.network, rpc, coin.asset, 2)?;
    let mut cosigner = CosignerOptions::default();
    if let Some(limits) = limits {
        cosigner.limits = BTreeMap::from([(coin.asset.to_owned(), limits)]);
    }
    let options = StackOptions {
        with_token: false,
        utxo: Some(utxo),
        cosigner: Some(cosigner),
        ..StackOptions::default()
    };
    let stack = Stack::start(env, options).await?;
    Ok((double, stack))
}

/// Pays `amounts` (satoshi/duffs) to `member`'s deposit address in one transaction from the
/// double's test wallet, mines 2 blocks and waits until the exchange credited their sum.
async fn credit(
    stack: &Stack,
    double: &BitcoindDouble,
    coin: Coin,
    member: &str,
    amounts: &[u64],
) -> anyhow::Result<TestWallet> {
    let address = stack
        .coinhubd
        .api()
        .new_address(member, coin.chain)
        .await?
        .address;
    let script = deposit_script(coin, &address)?;
    let wallet = TestWallet::new(double);
    wallet.fund(1).await?;
    let outputs: Vec<(ScriptBuf, Amount)> = amounts
        .iter()
        .map(|a| (script.clone(), Amount::from_sat(*a)))
        .collect();
    wallet.pay(&outputs).await?;
    wallet.mine(2).await?;
    stack
        .wait_balances(
            member,
            &[(coin.asset, U256::from(amounts.iter().sum::<u64>()))],
        )
        .await?;
    Ok(wallet)
}

fn deposit_script(coin: Coin, address: &str) -> anyhow::Result<ScriptBuf> {
    if coin.network.is_dash() {
        let parsed = coinhub_chains::destination::parse_destination(
            coinhub_chains::destination::DestinationNetwork::Dash { testnet: true },
            address,
        )?;
        Ok(parsed.script_pubkey().expect("a UTXO destination").clone())
    } else {
        Ok(bitcoin::Address::from_str(address)?
            .require_network(Network::Regtest)?
            .script_pubkey())
    }
}

/// The hot wallet, rebuilt from key A's xpub (coinhubd's database), key B's (the cosigner's
/// `init`) and key C's.
async fn hot_wallet(stack: &Stack, coin: Coin) -> anyhow::Result<UtxoWallet> {
    let daemon_db = sqlx::PgPool::connect(&stack.daemon_db.url()).await?;
    let key_a: String =
        sqlx::query_scalar("SELECT utxo_account_xpubs ->> $1 FROM custody_keys WHERE key_id = 'a'")
            .bind(coin.network.name())
            .fetch_one(&daemon_db)
            .await?;
    let key_b = stack.cosigner().key_b.bip48[coin.network.name()].clone();
    let keys: [AccountXpub; 3] = [
        key_a.parse()?,
        key_b.parse()?,
        test_account_xpub(KEY_C_WORDS, coin.network)?.parse()?,
    ];
    let script = if coin.network.is_dash() {
        MultisigScript::Sh
    } else {
        MultisigScript::Wsh
    };
    Ok(UtxoWallet::new(coin.network, script, keys)?)
}

/// The transaction `txid` from the node.
async fn transaction(wallet: &TestWallet, txid: &str) -> anyhow::Result<Transaction> {
    let raw = wallet.rpc("getrawtransaction", json!([txid, 0])).await?;
    let bytes = hex::decode(raw.as_str().unwrap_or_default())?;
    Ok(deserialize(&bytes)?)
}

/// Mines a block at a time until every withdrawal of `ids` is `confirmed`; returns them.
async fn mine_until_confirmed(
    stack: &Stack,
    wallet: &TestWallet,
    ids: &[String],
) -> anyhow::Result<Vec<Value>> {
    let api = stack.coinhubd.api();
    for _ in 0..10 {
        let mut all = Vec::new();
        for id in ids {
            if let Some(withdrawal) = api.withdrawal(id).await?
                && withdrawal["status"] == "confirmed"
            {
                all.push(withdrawal);
            }
        }
        if all.len() == ids.len() {
            return Ok(all);
        }
        wallet.mine(1).await?;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let mut all = Vec::new();
    for id in ids {
        all.push(api.wait_withdrawal_status(id, "confirmed", WAIT).await?);
    }
    Ok(all)
}

/// Waits until coinhubd knows every one of `ids` as `requested`.
async fn wait_requested(stack: &Stack, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        stack
            .coinhubd
            .api()
            .wait_withdrawal_status(id, "requested", WAIT)
            .await?;
    }
    Ok(())
}

/// The withdrawals are paid in one transaction with one output each (exact amount to the
/// exact script), change to the wallet's change branch at index 0, and the fee the
/// transaction really pays split over them; every input spends our wallet.
async fn check_batch(
    stack: &Stack,
    wallet: &TestWallet,
    coin: Coin,
    paid: &[(String, ScriptBuf, u64)],
    withdrawals: &[Value],
) -> anyhow::Result<()> {
    let txid = withdrawals[0]["attempts"][0]["txid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        withdrawals
            .iter()
            .all(|w| w["attempts"].as_array().map(Vec::len) == Some(1)
                && w["attempts"][0]["txid"] == txid.as_str()),
        "one transaction pays all: {withdrawals:#?}"
    );
    let tx = transaction(wallet, &txid).await?;
    assert_eq!(tx.compute_txid(), Txid::from_str(&txid)?);
    for (_, script, amount) in paid {
        let outputs: Vec<_> = tx
            .output
            .iter()
            .filter(|o| o.script_pubkey == *script)
            .collect();
        assert_eq!(outputs.len(), 1, "one output per withdrawal: {tx:?}");
        assert_eq!(outputs[0].value.to_sat(), *amount);
    }
    let hot = hot_wallet(stack, coin).await?;
    let change_script = hot.script_pubkey(Branch::Change, 0)?;
    let change: Vec<_> = tx
        .output
        .iter()
        .filter(|o| o.script_pubkey == change_script)
        .collect();
    assert_eq!(
        change.len(),
        1,
        "change goes to the wallet's change branch, index 0: {tx:?}"
    );
    assert_eq!(tx.output.len(), paid.len() + 1, "no other output: {tx:?}");
    let mut input_total = 0;
    for input in &tx.input {
        let previous = transaction(wallet, &input.previous_output.txid.to_string()).await?;
        let spent = &previous.output[input.previous_output.vout as usize];
        assert!(
            (0..20).any(|i| hot
                .script_pubkey(Branch::Receive, i)
                .is_ok_and(|s| s == spent.script_pubkey)),
            "inputs spend the hot wallet"
        );
        input_total += spent.value.to_sat();
        if !coin.network.is_dash() {
            assert_eq!(input.sequence.0, 0xffff_fffd, "BIP125 replaceable");
        }
    }
    let output_total: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
    let fee = input_total - output_total;
    let shares: u64 = withdrawals
        .iter()
        .map(|w| w["fee"].as_str().unwrap_or("0").parse::<u64>().unwrap_or(0))
        .sum();
    assert_eq!(
        shares, fee,
        "the fee shares add up to the fee the transaction pays"
    );
    assert!(
        fee > 0 && fee < 10_000,
        "fee at the regtest floor rate: {fee}"
    );
    Ok(())
}

/// Proves, on one chain: three withdrawals that are ready together are paid by ONE
/// transaction of the 2-of-3 wallet signed by coinhubd (A) and the cosigner (B) — the node
/// double accepts it only if libbitcoinconsensus verifies every input — with exact amounts,
/// change to the change branch, and the fee split over them; each is `confirmed` after 2
/// blocks; the exchange settles (the member's available balance drops by exactly the three
/// amounts and nothing stays locked).
async fn batch_is_paid_and_settled(env: coinhub_tests::TestEnv, coin: Coin) -> anyhow::Result<()> {
    let (double, mut stack) = start(&env, coin, None).await?;
    let wallet = credit(&stack, &double, coin, "alice", &[COIN, COIN / 2]).await?;
    // With the cosigner down, requests pile up as `requested`: the next round batches them.
    stack.cosigner.as_mut().expect("cosigner").process.kill();
    let mut paid = Vec::new();
    let mut ids = Vec::new();
    for (seed, amount) in [(11u8, 30_000_000u64), (12, 20_000_000), (13, 10_000_000)] {
        let (address, script) = coin.destination(seed);
        ids.push(
            stack
                .exchange()
                .withdraw("alice", coin.asset, &amount.to_string(), &address)
                .await?,
        );
        paid.push((address, script, amount));
    }
    wait_requested(&stack, &ids).await?;
    stack
        .cosigner
        .as_mut()
        .expect("cosigner")
        .process
        .restart()
        .await?;
    let withdrawals = mine_until_confirmed(&stack, &wallet, &ids).await?;
    check_batch(&stack, &wallet, coin, &paid, &withdrawals).await?;
    stack
        .wait_balances(
            "alice",
            &[(coin.asset, U256::from(COIN + COIN / 2 - 60_000_000))],
        )
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitcoin_withdrawals_are_batched_signed_by_two_processes_and_settled() {
    run_test(
        "bitcoin_withdrawals_are_batched_signed_by_two_processes_and_settled",
        |env| batch_is_paid_and_settled(env, BTC),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dash_withdrawals_are_batched_signed_by_two_processes_and_settled() {
    run_test(
        "dash_withdrawals_are_batched_signed_by_two_processes_and_settled",
        |env| batch_is_paid_and_settled(env, DASH),
    )
    .await;
}

/// Waits until withdrawal `id` is `failed` and checks its reason contains `expected`.
async fn expect_failed(stack: &Stack, id: &str, expected: &str) -> anyhow::Result<()> {
    let withdrawal = stack
        .coinhubd
        .api()
        .wait_withdrawal_status(id, "failed", WAIT)
        .await?;
    let reason = withdrawal["failure_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(expected),
        "reason {reason:?} should name {expected:?}"
    );
    assert!(
        withdrawal["payout_id"].is_null(),
        "nothing signed: {withdrawal}"
    );
    Ok(())
}

/// Proves: the cosigner refuses a withdrawal over the per-withdrawal maximum, one to a denied
/// address, and one that would take the rolling 24 h total over its limit (after a paid one),
/// each with the rule named in the reason; a request refused before signing — a malformed
/// address, a mainnet address on regtest, an unknown asset — fails with a reason naming the
/// field; nothing is broadcast for any of them (the mempool holds only the one paid
/// withdrawal), and the exchange returns the member's funds for every failed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bitcoin_withdrawals_fail_with_their_reason_and_unlock_funds() {
    run_test(
        "refused_bitcoin_withdrawals_fail_with_their_reason_and_unlock_funds",
        |env| async move {
            let (denied, _) = BTC.destination(21);
            let limits = AssetLimits {
                max_per_withdrawal: U256::from(50_000_000u64),
                max_24h: U256::from(80_000_000u64),
                fee_cap: U256::from(100_000u64),
                deny: vec![denied.clone()],
            };
            let (double, stack) = start(&env, BTC, Some(limits)).await?;
            let wallet = credit(&stack, &double, BTC, "carol", &[2 * COIN]).await?;
            let (good, good_script) = BTC.destination(22);
            let exchange = stack.exchange();

            let over = exchange.withdraw("carol", "BTC", "60000000", &good).await?;
            expect_failed(&stack, &over, "max").await?;
            let to_denied = exchange
                .withdraw("carol", "BTC", "1000000", &denied)
                .await?;
            expect_failed(&stack, &to_denied, "den").await?;
            let malformed = exchange
                .withdraw("carol", "BTC", "1000000", "bcrt1qnotanaddress")
                .await?;
            expect_failed(&stack, &malformed, "destination").await?;
            let mainnet = exchange
                .withdraw(
                    "carol",
                    "BTC",
                    "1000000",
                    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
                )
                .await?;
            expect_failed(&stack, &mainnet, "destination").await?;

            let first = exchange.withdraw("carol", "BTC", "45000000", &good).await?;
            let confirmed =
                mine_until_confirmed(&stack, &wallet, std::slice::from_ref(&first)).await?;
            let txid = confirmed[0]["attempts"][0]["txid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let paid = transaction(&wallet, &txid).await?;
            assert_eq!(
                paid.output
                    .iter()
                    .filter(|o| o.script_pubkey == good_script)
                    .map(|o| o.value.to_sat())
                    .sum::<u64>(),
                45_000_000
            );
            let over_24h = exchange.withdraw("carol", "BTC", "45000000", &good).await?;
            expect_failed(&stack, &over_24h, "24").await?;

            let mempool = wallet.rpc("getrawmempool", json!([])).await?;
            assert_eq!(mempool, json!([]), "nothing refused was broadcast");
            stack
                .wait_balances("carol", &[("BTC", U256::from(2 * COIN - 45_000_000))])
                .await?;
            Ok(())
        },
    )
    .await;
}

/// Proves: with a fee cap below any real fee, the cosigner refuses the spend (rule named),
/// the withdrawal fails before anything is broadcast and the funds return to the member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitcoin_spend_with_a_fee_over_the_cap_is_refused() {
    run_test(
        "a_bitcoin_spend_with_a_fee_over_the_cap_is_refused",
        |env| async move {
            let limits = AssetLimits {
                fee_cap: U256::from(10u8),
                ..AssetLimits::generous()
            };
            let (double, stack) = start(&env, BTC, Some(limits)).await?;
            let wallet = credit(&stack, &double, BTC, "dave", &[COIN]).await?;
            let (address, _) = BTC.destination(31);
            let id = stack
                .exchange()
                .withdraw("dave", "BTC", "1000000", &address)
                .await?;
            expect_failed(&stack, &id, "fee").await?;
            assert_eq!(wallet.rpc("getrawmempool", json!([])).await?, json!([]));
            stack
                .wait_balances("dave", &[("BTC", U256::from(COIN))])
                .await?;
            Ok(())
        },
    )
    .await;
}

/// Proves, for a crash at `point` (`after_sign`: the signed transaction is stored, not sent;
/// `after_broadcast`: the node has it, the state is not stored): after a restart coinhubd
/// sends the SAME stored transaction (one attempt, same txid), never a second one; the
/// destination is paid exactly once and the withdrawal is confirmed and settled.
async fn crash_then_exactly_one_payment(
    env: coinhub_tests::TestEnv,
    point: &str,
) -> anyhow::Result<()> {
    let (double, mut stack) = start(&env, BTC, None).await?;
    let wallet = credit(&stack, &double, BTC, "erin", &[COIN]).await?;
    stack.coinhubd.set_crash_point(Some(point));
    stack.coinhubd.restart().await?;
    let (address, script) = BTC.destination(41);
    let id = stack
        .exchange()
        .withdraw("erin", "BTC", "25000000", &address)
        .await?;
    stack.coinhubd.wait_exited(WAIT).await?;

    let before = stack.coinhubd.api().withdrawal(&id).await.ok().flatten();
    assert!(before.is_none(), "coinhubd is down");
    let daemon_db = sqlx::PgPool::connect(&stack.daemon_db.url()).await?;
    let (status, txid): (String, String) = sqlx::query_as(
        "SELECT w.status, a.txid FROM withdrawals w JOIN payout_attempts a ON a.payout_id = w.payout_id WHERE w.withdrawal_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&daemon_db)
    .await?;
    assert_eq!(
        status, "signed",
        "the signed transaction was stored before the crash"
    );
    let mempool = wallet.rpc("getrawmempool", json!([])).await?;
    let in_mempool = mempool
        .as_array()
        .is_some_and(|txids| txids.iter().any(|t| t == txid.as_str()));
    assert_eq!(
        in_mempool,
        point == "after_broadcast",
        "mempool {mempool} at {point}"
    );

    stack.coinhubd.set_crash_point(None);
    stack.coinhubd.restart().await?;
    let withdrawals = mine_until_confirmed(&stack, &wallet, std::slice::from_ref(&id)).await?;
    let attempts = withdrawals[0]["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        attempts.len(),
        1,
        "no second transaction was built: {withdrawals:?}"
    );
    assert_eq!(
        attempts[0]["txid"],
        txid.as_str(),
        "the stored transaction was sent"
    );
    let payouts: i64 = sqlx::query_scalar("SELECT count(*) FROM payouts")
        .fetch_one(&daemon_db)
        .await?;
    assert_eq!(payouts, 1);
    let paid = transaction(&wallet, &txid).await?;
    assert_eq!(
        paid.output
            .iter()
            .filter(|o| o.script_pubkey == script)
            .map(|o| o.value.to_sat())
            .collect::<Vec<_>>(),
        vec![25_000_000]
    );
    stack
        .wait_balances("erin", &[("BTC", U256::from(COIN - 25_000_000))])
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_signing_resumes_the_same_transaction() {
    run_test(
        "a_crash_after_signing_resumes_the_same_transaction",
        |env| crash_then_exactly_one_payment(env, "after_sign"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_broadcast_resumes_the_same_transaction() {
    run_test(
        "a_crash_after_broadcast_resumes_the_same_transaction",
        |env| crash_then_exactly_one_payment(env, "after_broadcast"),
    )
    .await;
}

/// Proves: a Bitcoin payout that miners leave out (`prioritisetransaction` with a negative
/// delta keeps it out of blocks) is replaced after `rbf_after_blocks` by a BIP125 replacement
/// that spends the same inputs with a higher fee, signed again by both keys; the replacement
/// is mined, the original never is, the destination is paid exactly once, and the withdrawal
/// is confirmed with the replacement's fee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_bitcoin_withdrawal_is_replaced_by_fee() {
    run_test(
        "a_stuck_bitcoin_withdrawal_is_replaced_by_fee",
        |env| async move {
            let double = BitcoindDouble::start(Params::bitcoin())?;
            let rpc = (
                double.rpc_url.as_str(),
                double.user.as_str(),
                double.password.as_str(),
            );
            let utxo = UtxoChainOptions::regtest_double(BTC.chain, BTC.network, rpc, BTC.asset, 2)?;
            let options = StackOptions {
                with_token: false,
                utxo: Some(utxo),
                cosigner: Some(CosignerOptions {
                    rbf_after_blocks: 2,
                    ..CosignerOptions::default()
                }),
                ..StackOptions::default()
            };
            let stack = Stack::start(&env, options).await?;
            let wallet = credit(&stack, &double, BTC, "frank", &[COIN]).await?;
            let (address, script) = BTC.destination(51);
            let id = stack
                .exchange()
                .withdraw("frank", "BTC", "40000000", &address)
                .await?;
            let api = stack.coinhubd.api();
            let broadcast = api.wait_withdrawal_status(&id, "broadcast", WAIT).await?;
            let original = broadcast["attempts"][0]["txid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            wallet
                .rpc("prioritisetransaction", json!([original, 0, -10_000_000]))
                .await?;

            let replaced = coinhub_tests::wait::wait_until(
                "a BIP125 replacement is broadcast",
                WAIT,
                Duration::from_millis(300),
                || async {
                    wallet.mine(1).await?;
                    let withdrawal = api.withdrawal(&id).await?.unwrap_or_default();
                    let attempts = withdrawal["attempts"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    Ok(
                        (attempts.len() >= 2 && !attempts[1]["broadcast_at"].is_null())
                            .then_some(withdrawal),
                    )
                },
            )
            .await?;
            let replacement = replaced["attempts"][1]["txid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let (old_tx, new_tx) = (
                transaction(&wallet, &original).await,
                transaction(&wallet, &replacement).await?,
            );
            assert!(
                old_tx.is_err(),
                "the original left the mempool and is in no block"
            );
            let withdrawals =
                mine_until_confirmed(&stack, &wallet, std::slice::from_ref(&id)).await?;
            let attempts = withdrawals[0]["attempts"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let fees: Vec<u64> = attempts
                .iter()
                .map(|a| a["fee"].as_str().unwrap_or("0").parse().unwrap_or(0))
                .collect();
            assert!(fees[1] > fees[0], "the replacement pays more: {fees:?}");
            assert_eq!(
                withdrawals[0]["fee"].as_str(),
                Some(fees[1].to_string().as_str()),
                "the mined replacement's fee is reported"
            );
            assert_eq!(
                new_tx
                    .output
                    .iter()
                    .filter(|o| o.script_pubkey == script)
                    .map(|o| o.value.to_sat())
                    .collect::<Vec<_>>(),
                vec![40_000_000]
            );
            let mempool = wallet.rpc("getrawmempool", json!([])).await?;
            assert_eq!(mempool, json!([]), "nothing else pays the withdrawal");
            stack
                .wait_balances("frank", &[("BTC", U256::from(COIN - 40_000_000))])
                .await?;
            Ok(())
        },
    )
    .await;
}

/// Proves: requests that a careless exchange could send — zero, negative and fractional
/// amounts, an unknown asset, wrong decimals — published straight to `withdrawal.request`,
/// are stored as `failed` with a reason naming the field, before anything is signed; a
/// repeated request id changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_withdrawal_requests_fail_before_signing_with_a_clear_reason() {
    run_test(
        "invalid_withdrawal_requests_fail_before_signing_with_a_clear_reason",
        |env| async move {
            let (_double, stack) = start(&env, BTC, None).await?;
            let (address, _) = BTC.destination(61);
            let amqp = stack.amqp().await?;
            let cases = [
                ("BTC", "0", 8, "amount: amount is zero"),
                ("BTC", "-5", 8, "amount: amount \"-5\" is negative"),
                (
                    "BTC",
                    "1.5",
                    8,
                    "amount: amount \"1.5\" has a decimal point",
                ),
                ("XYZ", "1000", 8, "asset: unknown asset \"XYZ\""),
                (
                    "BTC",
                    "1000",
                    18,
                    "decimals: the request says 18 but BTC has 8",
                ),
            ];
            for (asset, amount, decimals, expected) in cases {
                let id = uuid::Uuid::new_v4().to_string();
                let body = json!({
                    "version": 1, "id": id, "occurred_at": "2026-11-22T10:00:00Z", "member": "gina",
                    "asset": asset, "amount": amount, "decimals": decimals, "destination": address,
                });
                for _ in 0..2 {
                    amqp.publish_routed(
                        "coinhub.commands",
                        "withdrawal.request",
                        body.to_string().as_bytes(),
                        Default::default(),
                        WAIT,
                    )
                    .await?;
                }
                let withdrawal = stack
                    .coinhubd
                    .api()
                    .wait_withdrawal_status(&id, "failed", WAIT)
                    .await?;
                let reason = withdrawal["failure_reason"].as_str().unwrap_or_default();
                assert!(
                    reason.starts_with(expected),
                    "{reason:?} should start with {expected:?}"
                );
                assert!(withdrawal["payout_id"].is_null());
            }
            let daemon_db = sqlx::PgPool::connect(&stack.daemon_db.url()).await?;
            let counts: (i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM withdrawals), (SELECT count(*) FROM payouts),
                    (SELECT count(*) FROM outbox WHERE routing_key = 'withdrawal.failed')",
            )
            .fetch_one(&daemon_db)
            .await?;
            assert_eq!(
                counts,
                (5, 0, 5),
                "one row and one withdrawal.failed per id, nothing signed"
            );
            Ok(())
        },
    )
    .await;
}

/// Proves: `coinhub withdrawals cancel` fails a withdrawal that is not signed yet (the
/// cosigner is down, so it waits as `requested`) with the operator's reason, and the exchange
/// returns the member's funds; `withdrawals list` shows it; cancelling a withdrawal that is
/// already signed is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cancels_a_withdrawal_only_before_it_is_signed() {
    run_test(
        "an_operator_cancels_a_withdrawal_only_before_it_is_signed",
        |env| async move {
            let (double, mut stack) = start(&env, BTC, None).await?;
            let wallet = credit(&stack, &double, BTC, "hank", &[COIN]).await?;
            let (address, _) = BTC.destination(71);
            stack.cosigner.as_mut().expect("cosigner").process.kill();
            let waiting = stack
                .exchange()
                .withdraw("hank", "BTC", "30000000", &address)
                .await?;
            wait_requested(&stack, std::slice::from_ref(&waiting)).await?;
            let output = stack
                .coinhubd
                .cli(&[
                    "withdrawals",
                    "cancel",
                    &waiting,
                    "--reason",
                    "member asked",
                    "--operator",
                    "ops-1",
                ])
                .await?;
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let withdrawal = stack
                .coinhubd
                .api()
                .wait_withdrawal_status(&waiting, "failed", WAIT)
                .await?;
            assert_eq!(
                withdrawal["failure_reason"].as_str(),
                Some("cancelled by ops-1: member asked")
            );
            assert_eq!(withdrawal["cancelled_by"].as_str(), Some("ops-1"));
            stack
                .wait_balances("hank", &[("BTC", U256::from(COIN))])
                .await?;
            let listed = stack
                .coinhubd
                .cli(&["withdrawals", "list", "--member", "hank"])
                .await?;
            let listed = String::from_utf8_lossy(&listed.stdout);
            assert!(
                listed.contains(&waiting) && listed.contains("cancelled by ops-1"),
                "{listed}"
            );

            stack
                .cosigner
                .as_mut()
                .expect("cosigner")
                .process
                .restart()
                .await?;
            let paid = stack
                .exchange()
                .withdraw("hank", "BTC", "20000000", &address)
                .await?;
            mine_until_confirmed(&stack, &wallet, std::slice::from_ref(&paid)).await?;
            let output = stack
                .coinhubd
                .cli(&["withdrawals", "cancel", &paid, "--reason", "too late"])
                .await?;
            assert!(
                !output.status.success(),
                "a signed withdrawal cannot be cancelled"
            );
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("only a requested (unsigned) withdrawal can be cancelled"),
                "{stderr}"
            );
            let shown = stack.coinhubd.cli(&["withdrawals", "show", &paid]).await?;
            let withdrawal: Value = serde_json::from_slice(&shown.stdout)?;
            assert_eq!(
                withdrawal["status"], "confirmed",
                "withdrawals show: {withdrawal}"
            );
            assert_eq!(withdrawal["attempts"].as_array().map(Vec::len), Some(1));
            stack
                .wait_balances("hank", &[("BTC", U256::from(COIN - 20_000_000))])
                .await?;
            Ok(())
        },
    )
    .await;
}
