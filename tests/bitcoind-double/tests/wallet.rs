//! The test wallet end to end: fund, pay several outputs in one transaction, mine, and read
//! the outputs back with `getrawtransaction`, for both flavors.

#![allow(clippy::unwrap_used)]

use bitcoin::consensus::encode::deserialize;
use bitcoin::hashes::Hash;
use bitcoin::{Amount, PubkeyHash, ScriptBuf, Transaction, WPubkeyHash, WScriptHash};
use coinhub_bitcoind_double::wallet::{FEE, TestWallet, WalletError};
use coinhub_bitcoind_double::{BitcoindDouble, Params};
use serde_json::json;

/// Funds the wallet, pays `a` twice and `b` once in one transaction, mines it, and checks
/// `getrawtransaction` (verbose and raw) shows exactly those outputs in order plus the change
/// (coinbase minus payments minus [`FEE`]) to the wallet; then pays again from the change.
async fn pay_two_scripts_one_twice(node: &BitcoindDouble, a: ScriptBuf, b: ScriptBuf) {
    let wallet = TestWallet::new(node);
    let funded = wallet.fund(1).await.unwrap();
    assert_eq!(funded.len(), 101);
    assert_eq!(wallet.rpc("getblockcount", json!([])).await.unwrap(), 101);
    assert_eq!(wallet.balance(), Amount::from_int_btc(50 * 101));

    let payments = [
        (a.clone(), Amount::from_sat(30_000_000)),
        (b.clone(), Amount::from_sat(12_345_678)),
        (a.clone(), Amount::from_sat(1_000)),
    ];
    let txid = wallet.pay(&payments).await.unwrap();
    assert_eq!(
        wallet.rpc("getrawmempool", json!([])).await.unwrap(),
        json!([txid.to_string()])
    );
    // Two more: from the second mature coinbase (height 2), then, with no other mature
    // coinbase for block 102, from the first payment's unconfirmed change.
    let second = wallet
        .pay(&[(b.clone(), Amount::from_int_btc(49))])
        .await
        .unwrap();
    let third = wallet
        .pay(&[(a.clone(), Amount::from_int_btc(45))])
        .await
        .unwrap();
    let spending = wallet
        .rpc("getrawtransaction", json!([third.to_string(), 1]))
        .await
        .unwrap();
    assert_eq!(
        spending["vin"][0]["txid"],
        txid.to_string(),
        "change is spent"
    );
    assert_eq!(spending["vin"][0]["vout"], 3);
    let mined = wallet.mine(1).await.unwrap();

    let verbose = wallet
        .rpc("getrawtransaction", json!([txid.to_string(), 1]))
        .await
        .unwrap();
    assert_eq!(verbose["blockhash"], mined[0].to_string());
    assert_eq!(verbose["confirmations"], 1);
    let tx: Transaction =
        deserialize(&hex::decode(verbose["hex"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(tx.compute_txid(), txid);
    let change = Amount::from_int_btc(50) - Amount::from_sat(30_000_000 + 12_345_678 + 1_000) - FEE;
    let mut expected: Vec<(ScriptBuf, Amount)> = payments.to_vec();
    expected.push((wallet.script_pubkey().clone(), change));
    let vout = verbose["vout"].as_array().unwrap();
    assert_eq!(vout.len(), expected.len());
    for (n, (script, amount)) in expected.iter().enumerate() {
        assert_eq!(tx.output[n].value, *amount, "output {n}");
        assert_eq!(tx.output[n].script_pubkey, *script, "output {n}");
        assert_eq!(vout[n]["n"], n);
        assert_eq!(
            Amount::from_btc(vout[n]["value"].as_f64().unwrap()).unwrap(),
            *amount,
            "output {n}: {}",
            vout[n]["value"]
        );
        assert_eq!(
            vout[n]["scriptPubKey"]["hex"],
            hex::encode(script.as_bytes())
        );
    }
    // Each fee is exactly FEE: the block's coinbase is the subsidy plus three of them.
    let block = wallet
        .rpc("getblock", json!([mined[0].to_string(), 0]))
        .await
        .unwrap();
    let block: bitcoin::Block =
        deserialize(&hex::decode(block.as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(block.txdata[1], tx);
    let txids: Vec<_> = block.txdata[1..]
        .iter()
        .map(Transaction::compute_txid)
        .collect();
    assert_eq!(txids, [txid, second, third]);
    assert_eq!(
        block.txdata[0].output[0].value,
        Amount::from_int_btc(50) + FEE * 3
    );
    assert_eq!(
        wallet.balance(),
        Amount::from_int_btc(50 * 102)
            - Amount::from_sat(30_000_000 + 12_345_678 + 1_000)
            - Amount::from_int_btc(49 + 45)
    );

    // No single output covers 60 BTC.
    let err = wallet
        .pay(&[(a, Amount::from_int_btc(60))])
        .await
        .unwrap_err();
    assert!(
        matches!(err, WalletError::InsufficientFunds { .. }),
        "{err}"
    );
}

/// Proves the Bitcoin flavor: P2WPKH spends by the wallet are accepted under
/// libbitcoinconsensus, mined, and `getrawtransaction` shows the exact outputs (a P2WSH
/// script paid twice and a P2WPKH script once).
#[tokio::test]
async fn bitcoin_wallet_pays_two_scripts_one_twice() {
    let node = BitcoindDouble::start(Params::bitcoin()).unwrap();
    let a = ScriptBuf::new_p2wsh(&WScriptHash::from_byte_array([0xaa; 32]));
    let b = ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array([0xbb; 20]));
    pay_two_scripts_one_twice(&node, a, b).await;
}

/// Proves the Dash flavor: legacy-sighash P2PKH spends by the wallet are accepted, mined,
/// and `getrawtransaction` shows the exact outputs (two P2PKH scripts, one paid twice).
#[tokio::test]
async fn dash_wallet_pays_two_scripts_one_twice() {
    let node = BitcoindDouble::start(Params::dash()).unwrap();
    let wallet = node.wallet();
    assert!(wallet.address().starts_with('y'), "{}", wallet.address());
    assert!(wallet.script_pubkey().is_p2pkh());
    let a = ScriptBuf::new_p2pkh(&PubkeyHash::from_byte_array([0xaa; 20]));
    let b = ScriptBuf::new_p2pkh(&PubkeyHash::from_byte_array([0xbb; 20]));
    pay_two_scripts_one_twice(&node, a, b).await;
}

/// Proves error reporting: paying before any coinbase matures fails with `InsufficientFunds`
/// (spendable zero) and leaves the five immature coinbases tracked; the double's own JSON-RPC
/// errors come back as `Rpc` with their code.
#[tokio::test]
async fn errors_are_reported() {
    let node = BitcoindDouble::start(Params::bitcoin()).unwrap();
    let wallet = node.wallet();
    assert!(wallet.address().starts_with("bcrt1q"));
    wallet.mine(5).await.unwrap();
    let err = wallet
        .pay(&[(wallet.script_pubkey().clone(), Amount::from_sat(1))])
        .await
        .unwrap_err();
    assert!(
        matches!(err, WalletError::InsufficientFunds { spendable, .. } if spendable == Amount::ZERO),
        "{err}"
    );
    let err = wallet.rpc("getblockhash", json!([99])).await.unwrap_err();
    assert!(matches!(err, WalletError::Rpc { code: -8, .. }), "{err}");
    assert_eq!(wallet.balance(), Amount::from_int_btc(250));
}
