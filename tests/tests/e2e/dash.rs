//! Dash deposits on the regtest node double in Dash mode: 2-of-3 `sh(sortedmulti)` deposit
//! addresses in Dash's base58 encoding, X11 block hashes, confirmations and crediting in
//! duffs.

use std::time::Duration;

use alloy::primitives::U256;
use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, ScriptBuf, ScriptHash};
use coinhub_bitcoind_double::wallet::TestWallet;
use coinhub_bitcoind_double::{BitcoindDouble, Flavor, Params};
use coinhub_custody::utxo::UtxoNetwork;
use coinhub_tests::stack::UtxoChainOptions;
use coinhub_tests::{DepositView, Stack, StackOptions, run_test};

const WAIT: Duration = Duration::from_secs(60);
const CHAIN: &str = "dash";
const DASH: &str = "DASH";
/// Base58Check version byte of P2SH addresses on Dash testnet and regtest.
const DASH_REGTEST_P2SH_VERSION: u8 = 19;

/// A stack whose coinhubd also follows the Dash double as chain `dash` (DASH needs 2
/// confirmations).
async fn start(env: &coinhub_tests::TestEnv, double: &BitcoindDouble) -> anyhow::Result<Stack> {
    let rpc = (
        double.rpc_url.as_str(),
        double.user.as_str(),
        double.password.as_str(),
    );
    let utxo = UtxoChainOptions::regtest_double(CHAIN, UtxoNetwork::DashRegtest, rpc, DASH, 2)?;
    let options = StackOptions {
        with_token: false,
        utxo: Some(utxo),
        ..StackOptions::default()
    };
    Stack::start(env, options).await
}

/// The scriptPubKey a Dash regtest P2SH address pays to (`OP_HASH160 <hash> OP_EQUAL`),
/// after checking its Base58Check encoding and version byte 19.
fn dash_regtest_p2sh_script(address: &str) -> anyhow::Result<ScriptBuf> {
    anyhow::ensure!(
        address.starts_with('8') || address.starts_with('9'),
        "a Dash regtest P2SH address starts with 8 or 9: {address}"
    );
    let data = bitcoin::base58::decode_check(address)?;
    anyhow::ensure!(
        data.len() == 21,
        "{address}: {} bytes after decoding, not version + HASH160",
        data.len()
    );
    anyhow::ensure!(
        data[0] == DASH_REGTEST_P2SH_VERSION,
        "{address}: version byte {}, not Dash regtest P2SH's {DASH_REGTEST_P2SH_VERSION}",
        data[0]
    );
    let hash = ScriptHash::from_slice(&data[1..])?;
    let script = ScriptBuf::new_p2sh(&hash);
    anyhow::ensure!(
        script.is_p2sh() && script.as_bytes()[2..22] == data[1..],
        "the script carries the address's HASH160: {script:?}"
    );
    Ok(script)
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

/// Proves: coinhubd follows a Dash node whose blocks are named by X11 hashes; deposit
/// addresses are the wallet's 2-of-3 `sh(sortedmulti)` P2SH addresses in Dash regtest's
/// base58 encoding (version byte 19, leading `8` or `9`, HASH160 of the redeem script); one
/// transaction paying alice twice yields two deposits, one per output (txid, vout), in the
/// block the node named by its X11 hash, confirmed after 2 blocks and credited to the duff.
///
/// Steps: start the double in Dash mode and a stack with chain `dash` (`dash-regtest`, DASH,
/// 8 decimals, 2 confirmations, keys B and C as Dash regtest BIP48 account xpubs); hand out
/// alice's DASH address, decode it and derive its P2SH scriptPubKey; fund the test wallet
/// (P2PKH, 101 blocks) and pay alice 1.25 DASH and 0.5 DASH in one transaction; check that
/// the double shows those outputs with alice's address; mine 2 blocks; wait for two
/// confirmed deposits of 125,000,000 and 50,000,000 duffs and alice's exchange balance of
/// 175,000,000 duffs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dash_deposits_are_credited_per_output_in_duffs() {
    run_test(
        "dash_deposits_are_credited_per_output_in_duffs",
        |env| async move {
            let double = BitcoindDouble::start(Params::dash())?;
            assert_eq!(double.flavor, Flavor::Dash);
            let wallet = TestWallet::new(&double);
            assert!(wallet.script_pubkey().is_p2pkh());
            let genesis = wallet.rpc("getblockhash", serde_json::json!([0])).await?;
            assert_eq!(
                genesis, "000008ca1832a4baf228eb1553c03d3a2c8e02399550dd6ea8d65cec3ef23d2e",
                "the double names blocks by X11, as a Dash node does"
            );
            let stack = start(&env, &double).await?;
            let alice_address = stack
                .coinhubd
                .api()
                .new_address("alice", CHAIN)
                .await?
                .address;
            let alice = dash_regtest_p2sh_script(&alice_address)?;

            wallet.fund(1).await?;
            let txid = wallet
                .pay(&[
                    (alice.clone(), Amount::from_sat(125_000_000)),
                    (alice.clone(), Amount::from_sat(50_000_000)),
                ])
                .await?
                .to_string();
            // The double encodes the outputs' script as Dash regtest P2SH too: the address
            // coinhubd handed out is the one a Dash node would show for them.
            let tx = wallet
                .rpc("getrawtransaction", serde_json::json!([txid, true]))
                .await?;
            for vout in 0..2 {
                assert_eq!(
                    tx["vout"][vout]["scriptPubKey"]["address"], alice_address,
                    "output {vout}: {tx}"
                );
            }
            let mined = wallet.mine(2).await?;
            let deposit_block = mined[0].to_string();

            let deposits = wait_outputs(&stack, "alice", &txid, "confirmed", 2).await?;
            let outputs: Vec<(u32, &str)> = deposits
                .iter()
                .map(|d| (d.index, d.amount.as_str()))
                .collect();
            assert_eq!(outputs, vec![(0, "125000000"), (1, "50000000")]);
            assert!(
                deposits
                    .iter()
                    .all(|d| d.block_hash == deposit_block && d.decimals == 8),
                "{deposits:?}"
            );
            stack
                .wait_balances("alice", &[(DASH, U256::from(175_000_000u64))])
                .await?;
            Ok(())
        },
    )
    .await;
}
