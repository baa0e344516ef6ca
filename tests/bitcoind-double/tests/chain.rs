//! Behaviour of the double as a node: mining, raw blocks, script checks, double spends, reorgs.

#![allow(clippy::unwrap_used)]

mod common;

use bitcoin::consensus::encode::deserialize;
use bitcoin::{Amount, Block, BlockHash, OutPoint, TxOut};
use coinhub_bitcoind_double::{BitcoindDouble, Params};
use common::{Client, Wallet, deposit_spend, flip_signature_byte, tx_hex};
use serde_json::json;

/// Proves mined blocks are real rust-bitcoin blocks: `generatetoaddress` returns hashes whose
/// `getblock <hash> 0` and REST `/rest/block/<hash>.bin` bytes decode to the same block, with
/// valid regtest proof of work, a merkle root and witness commitment that check, the BIP34
/// height in the coinbase, the 50 BTC subsidy to the requested address, and each block's
/// `prev_blockhash` equal to the previous height's hash (from genesis). REST
/// `blockhashbyheight` and `headers` agree with the RPC view.
#[tokio::test]
async fn mined_blocks_decode_with_correct_links_and_heights() {
    let node = BitcoindDouble::start(Params::bitcoin()).unwrap();
    let rpc = Client::new(&node);
    let wallet = Wallet::new(1);
    let hashes = rpc
        .ok("generatetoaddress", json!([20, wallet.address.to_string()]))
        .await;
    let hashes: Vec<String> = serde_json::from_value(hashes).unwrap();
    assert_eq!(hashes.len(), 20);
    assert_eq!(rpc.ok("getblockcount", json!([])).await, 20);
    assert_eq!(rpc.ok("getbestblockhash", json!([])).await, hashes[19]);

    let genesis = rpc.ok("getblockhash", json!([0])).await;
    assert_eq!(
        genesis,
        "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
    );
    let mut prev: BlockHash = genesis.as_str().unwrap().parse().unwrap();
    for (i, hash) in hashes.iter().enumerate() {
        let height = i as u64 + 1;
        let block = rpc.block(hash).await;
        let (status, bin) = rpc.get(&format!("/rest/block/{hash}.bin")).await;
        assert_eq!(status, 200);
        let from_rest: Block = deserialize(&bin).unwrap();
        assert_eq!(from_rest, block);
        assert_eq!(block.block_hash().to_string(), *hash);
        assert_eq!(
            block.header.prev_blockhash, prev,
            "block {height} links to its parent"
        );
        block.header.validate_pow(block.header.target()).unwrap();
        assert!(block.check_merkle_root());
        assert!(block.check_witness_commitment());
        // BIP34: the coinbase scriptSig starts with the height as Core's `CScript() << height`
        // (OP_1..OP_16 for heights up to 16, which rust-bitcoin's parser does not read).
        let expected = bitcoin::script::Builder::new()
            .push_int(height as i64)
            .into_script();
        assert!(
            block.txdata[0].input[0]
                .script_sig
                .as_bytes()
                .starts_with(expected.as_bytes())
        );
        if height > 16 {
            assert_eq!(block.bip34_block_height().unwrap(), height);
        }
        assert_eq!(block.txdata[0].output[0].value, Amount::from_int_btc(50));
        assert_eq!(block.txdata[0].output[0].script_pubkey, wallet.script());
        let header = rpc.ok("getblockheader", json!([hash, true])).await;
        assert_eq!(header["height"], height);
        assert_eq!(header["confirmations"], 21 - height);
        let (status, by_height) = rpc
            .get(&format!("/rest/blockhashbyheight/{height}.bin"))
            .await;
        assert_eq!(status, 200);
        let by_height: BlockHash = deserialize(&by_height).unwrap();
        assert_eq!(by_height, block.block_hash());
        prev = block.block_hash();
    }
    let (status, headers) = rpc
        .get(&format!("/rest/headers/{}.bin?count=10", hashes[1]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers.len(), 10 * 80, "ten headers from height 2");
    let first: bitcoin::block::Header = deserialize(&headers[..80]).unwrap();
    assert_eq!(first.block_hash().to_string(), hashes[1]);
}

/// Proves script verification under libbitcoinconsensus: after 101 blocks (coinbase
/// maturity), a correctly signed P2WPKH spend of the first coinbase is accepted, appears in
/// the mempool and is mined; the same transaction with one flipped signature byte is
/// rejected with Bitcoin Core's code -26 and message
/// `mempool-script-verify-flag-failed (Signature must be zero for failed CHECK(MULTI)SIG
/// operation), input 0 of <txid> (wtxid <wtxid>), spending <prev>:0` (as in errors.json);
/// and spending an immature coinbase is refused as premature.
#[tokio::test]
async fn signed_p2wpkh_spend_accepted_and_tampered_signature_rejected() {
    let node = BitcoindDouble::start(Params::bitcoin()).unwrap();
    let rpc = Client::new(&node);
    let wallet = Wallet::new(2);
    rpc.ok(
        "generatetoaddress",
        json!([101, wallet.address.to_string()]),
    )
    .await;
    let coinbase = rpc.block_at(1).await.txdata[0].clone();
    let good = deposit_spend(
        &wallet,
        &coinbase,
        Amount::from_btc(0.5).unwrap(),
        Amount::from_sat(2_000),
    );
    let bad = flip_signature_byte(&good);

    let (status, reply) = rpc.call("sendrawtransaction", json!([tx_hex(&bad)])).await;
    assert_eq!(status, 500);
    assert_eq!(reply["error"]["code"], -26);
    let expected = format!(
        "mempool-script-verify-flag-failed (Signature must be zero for failed CHECK(MULTI)SIG operation), input 0 of {} (wtxid {}), spending {}:0",
        bad.compute_txid(),
        bad.compute_wtxid(),
        coinbase.compute_txid()
    );
    assert_eq!(reply["error"]["message"], expected);
    let tested = rpc.ok("testmempoolaccept", json!([[tx_hex(&bad)]])).await;
    assert_eq!(tested[0]["allowed"], false);
    assert_eq!(tested[0]["reject-details"], expected);

    let txid = rpc.ok("sendrawtransaction", json!([tx_hex(&good)])).await;
    assert_eq!(txid, good.compute_txid().to_string());
    assert_eq!(rpc.ok("getrawmempool", json!([])).await, json!([txid]));
    let mined = rpc
        .ok("generatetoaddress", json!([1, wallet.address.to_string()]))
        .await;
    let block = rpc.block(mined[0].as_str().unwrap()).await;
    assert_eq!(block.txdata[1], good);
    assert_eq!(
        block.txdata[0].output[0].value,
        Amount::from_int_btc(50) + Amount::from_sat(2_000)
    );

    // Coinbase of block 100 has 3 confirmations: not mature.
    let young = rpc.block_at(100).await.txdata[0].clone();
    let early = deposit_spend(
        &wallet,
        &young,
        Amount::from_btc(0.1).unwrap(),
        Amount::from_sat(2_000),
    );
    let (status, reply) = rpc
        .call("sendrawtransaction", json!([tx_hex(&early)]))
        .await;
    assert_eq!(status, 500);
    assert_eq!(reply["error"]["code"], -26);
    assert_eq!(
        reply["error"]["message"],
        "bad-txns-premature-spend-of-coinbase, tried to spend coinbase at depth 3"
    );
}

/// Proves double spends are refused: a second transaction spending the same coinbase output
/// with a lower fee is rejected as an insufficient-fee replacement (-26, Core's wording)
/// while the first is in the mempool; once the first is mined, any spend of the output is
/// rejected with -25 `bad-txns-inputs-missingorspent`; re-sending the mined transaction
/// gives -27 `Transaction outputs already in utxo set`; re-sending while it was still in
/// the mempool returned its txid, as Bitcoin Core does.
#[tokio::test]
async fn double_spend_rejected() {
    let node = BitcoindDouble::start(Params::bitcoin()).unwrap();
    let rpc = Client::new(&node);
    let wallet = Wallet::new(3);
    rpc.ok(
        "generatetoaddress",
        json!([101, wallet.address.to_string()]),
    )
    .await;
    let coinbase = rpc.block_at(1).await.txdata[0].clone();
    let first = deposit_spend(
        &wallet,
        &coinbase,
        Amount::from_btc(1.0).unwrap(),
        Amount::from_sat(5_000),
    );
    let second = deposit_spend(
        &wallet,
        &coinbase,
        Amount::from_btc(2.0).unwrap(),
        Amount::from_sat(3_000),
    );
    rpc.ok("sendrawtransaction", json!([tx_hex(&first)])).await;
    assert_eq!(
        rpc.ok("sendrawtransaction", json!([tx_hex(&first)])).await,
        first.compute_txid().to_string(),
        "an already-known mempool transaction is answered with its txid"
    );

    let (status, reply) = rpc
        .call("sendrawtransaction", json!([tx_hex(&second)]))
        .await;
    assert_eq!(status, 500);
    assert_eq!(reply["error"]["code"], -26);
    assert_eq!(
        reply["error"]["message"],
        format!(
            "insufficient fee, rejecting replacement {}, less fees than conflicting txs; 0.00003 < 0.00005",
            second.compute_txid()
        )
    );
    assert_eq!(
        rpc.ok("getrawmempool", json!([])).await,
        json!([first.compute_txid().to_string()])
    );

    rpc.ok("generatetoaddress", json!([1, wallet.address.to_string()]))
        .await;
    let (status, reply) = rpc
        .call("sendrawtransaction", json!([tx_hex(&second)]))
        .await;
    assert_eq!(status, 500);
    assert_eq!(
        reply["error"],
        json!({"code": -25, "message": "bad-txns-inputs-missingorspent"})
    );
    let (status, reply) = rpc
        .call("sendrawtransaction", json!([tx_hex(&first)]))
        .await;
    assert_eq!(status, 500);
    assert_eq!(
        reply["error"],
        json!({"code": -27, "message": "Transaction outputs already in utxo set"})
    );

    // A transaction spending an output that never existed.
    let ghost = wallet.spend(
        OutPoint {
            txid: first.compute_txid(),
            vout: 7,
        },
        Amount::from_int_btc(1),
        vec![TxOut {
            value: Amount::from_btc(0.9).unwrap(),
            script_pubkey: wallet.script(),
        }],
    );
    let (_, reply) = rpc
        .call("sendrawtransaction", json!([tx_hex(&ghost)]))
        .await;
    assert_eq!(reply["error"]["code"], -25);
}

/// Proves `invalidateblock` reorganises like Bitcoin Core: with a deposit mined in block
/// 102 and block 103 on top, invalidating 102 moves the tip back to 101, puts the deposit
/// back in the mempool (`getrawtransaction` no longer reports a block), and both stale
/// headers report `confirmations: -1`; `getchaintips` lists the invalid branch; a longer
/// fork mined afterwards confirms the deposit again in a new block. `reconsiderblock` then
/// leaves the longer fork active.
#[tokio::test]
async fn invalidateblock_returns_tx_to_mempool_and_marks_stale_blocks() {
    let node = BitcoindDouble::start(Params::bitcoin()).unwrap();
    let rpc = Client::new(&node);
    let wallet = Wallet::new(4);
    let addr = wallet.address.to_string();
    rpc.ok("generatetoaddress", json!([101, addr])).await;
    let coinbase = rpc.block_at(1).await.txdata[0].clone();
    let deposit = deposit_spend(
        &wallet,
        &coinbase,
        Amount::from_btc(0.7).unwrap(),
        Amount::from_sat(1_650),
    );
    let txid = rpc
        .ok("sendrawtransaction", json!([tx_hex(&deposit)]))
        .await;
    let b102 = rpc.ok("generatetoaddress", json!([1, addr])).await[0].clone();
    let b103 = rpc.ok("generatetoaddress", json!([1, addr])).await[0].clone();
    let confirmed = rpc.ok("getrawtransaction", json!([txid, 1])).await;
    assert_eq!(confirmed["blockhash"], b102);
    assert_eq!(confirmed["confirmations"], 2);
    assert_eq!(rpc.ok("getrawmempool", json!([])).await, json!([]));

    assert_eq!(rpc.ok("invalidateblock", json!([b102])).await, json!(null));
    assert_eq!(rpc.ok("getblockcount", json!([])).await, 101);
    assert_eq!(rpc.ok("getrawmempool", json!([])).await, json!([txid]));
    let back = rpc.ok("getrawtransaction", json!([txid, 1])).await;
    assert!(back.get("blockhash").is_none() && back.get("confirmations").is_none());
    for stale in [&b102, &b103] {
        let header = rpc.ok("getblockheader", json!([stale, true])).await;
        assert_eq!(header["confirmations"], -1, "stale block {stale}");
    }
    let stale_block = rpc.ok("getblock", json!([b102, 1])).await;
    assert_eq!(stale_block["confirmations"], -1);
    assert_eq!(stale_block["tx"][1], txid);

    rpc.ok("prioritisetransaction", json!([txid, 0, -100_000_000]))
        .await;
    let fork = rpc.ok("generatetoaddress", json!([3, addr])).await;
    assert_eq!(rpc.ok("getblockcount", json!([])).await, 104);
    assert_eq!(
        rpc.ok("getrawmempool", json!([])).await,
        json!([txid]),
        "deprioritised deposit stays out"
    );
    let tips = rpc.ok("getchaintips", json!([])).await;
    assert_eq!(
        tips,
        json!([
            {"height": 104, "hash": fork[2], "branchlen": 0, "status": "active"},
            {"height": 103, "hash": b103, "branchlen": 2, "status": "invalid"},
        ])
    );
    rpc.ok("reconsiderblock", json!([b102])).await;
    assert_eq!(
        rpc.ok("getbestblockhash", json!([])).await,
        fork[2],
        "the longer fork stays active"
    );
    assert_eq!(
        rpc.ok("getblockheader", json!([b103, true])).await["confirmations"],
        -1
    );

    rpc.ok("prioritisetransaction", json!([txid, 0, 100_000_000]))
        .await;
    let again = rpc.ok("generatetoaddress", json!([1, addr])).await[0].clone();
    assert_eq!(
        rpc.ok("getrawtransaction", json!([txid, 1])).await["blockhash"],
        again
    );
}

/// Proves the invalidated chain comes back: `reconsiderblock` on an invalidated block whose
/// branch has more work makes it active again and takes its transactions out of the mempool.
#[tokio::test]
async fn reconsiderblock_restores_the_heavier_branch() {
    let node = BitcoindDouble::start(Params::bitcoin()).unwrap();
    let rpc = Client::new(&node);
    let wallet = Wallet::new(5);
    let addr = wallet.address.to_string();
    rpc.ok("generatetoaddress", json!([101, addr])).await;
    let coinbase = rpc.block_at(1).await.txdata[0].clone();
    let deposit = deposit_spend(
        &wallet,
        &coinbase,
        Amount::from_btc(0.7).unwrap(),
        Amount::from_sat(1_650),
    );
    let txid = rpc
        .ok("sendrawtransaction", json!([tx_hex(&deposit)]))
        .await;
    let mined = rpc.ok("generatetoaddress", json!([2, addr])).await;
    rpc.ok("invalidateblock", json!([mined[0]])).await;
    assert_eq!(rpc.ok("getrawmempool", json!([])).await, json!([txid]));
    rpc.ok("reconsiderblock", json!([mined[0]])).await;
    assert_eq!(rpc.ok("getbestblockhash", json!([])).await, mined[1]);
    assert_eq!(rpc.ok("getrawmempool", json!([])).await, json!([]));
    assert_eq!(
        rpc.ok("getblockheader", json!([mined[0], true])).await["confirmations"],
        2
    );
}

/// Proves the Dash mode runs: a Dash regtest double mines to a Dash regtest P2PKH address
/// (version byte 140), blocks carry no segwit commitment, and the address round-trips
/// through `getblock` verbosity 2. Block hashes are X11 of the header, as on a Dash node:
/// the genesis hash is Dash regtest's, and `getblockhash`, `getbestblockhash`,
/// `getblockheader`, `previousblockhash` links and REST `block` / `headers` /
/// `blockhashbyheight` all name blocks by X11 (never double SHA-256).
#[tokio::test]
async fn dash_mode_mines_to_dash_addresses() {
    let node = BitcoindDouble::start(Params::dash()).unwrap();
    let rpc = Client::new(&node);
    let hash160 = [7u8; 20];
    let mut data = vec![140u8];
    data.extend_from_slice(&hash160);
    let address = bitcoin::base58::encode_check(&data);
    let hashes = rpc.ok("generatetoaddress", json!([2, address])).await;
    let block = rpc.block(hashes[1].as_str().unwrap()).await;
    assert_eq!(
        block.txdata[0].output.len(),
        1,
        "no witness commitment on Dash"
    );
    assert!(block.txdata[0].input[0].witness.is_empty());
    let verbose = rpc.ok("getblock", json!([hashes[1], 2])).await;
    assert_eq!(
        verbose["tx"][0]["vout"][0]["scriptPubKey"]["address"],
        address
    );
    assert_eq!(
        verbose["tx"][0]["vout"][0]["scriptPubKey"]["type"],
        "pubkeyhash"
    );

    let x11 = |header: &bitcoin::block::Header| -> BlockHash {
        let bytes: [u8; 80] = bitcoin::consensus::serialize(header).try_into().unwrap();
        bitcoin::hashes::Hash::from_byte_array(rs_x11_hash::get_x11_hash(bytes))
    };
    let genesis = rpc.ok("getblockhash", json!([0])).await;
    assert_eq!(
        genesis,
        "000008ca1832a4baf228eb1553c03d3a2c8e02399550dd6ea8d65cec3ef23d2e"
    );
    assert_eq!(rpc.ok("getbestblockhash", json!([])).await, hashes[1]);
    let mut prev: BlockHash = genesis.as_str().unwrap().parse().unwrap();
    for (i, hash) in hashes.as_array().unwrap().iter().enumerate() {
        let hash = hash.as_str().unwrap();
        let height = i as u64 + 1;
        let block = rpc.block(hash).await;
        assert_eq!(x11(&block.header).to_string(), hash);
        assert_ne!(block.block_hash().to_string(), hash, "not double SHA-256");
        assert_eq!(block.header.prev_blockhash, prev);
        assert!(block.header.target().is_met_by(x11(&block.header)));
        assert_eq!(rpc.ok("getblockhash", json!([height])).await, hash);
        let header = rpc.ok("getblockheader", json!([hash, true])).await;
        assert_eq!(header["hash"], hash);
        assert_eq!(header["previousblockhash"], prev.to_string());
        let (status, bin) = rpc.get(&format!("/rest/block/{hash}.bin")).await;
        assert_eq!(status, 200);
        assert_eq!(deserialize::<Block>(&bin).unwrap(), block);
        let (status, by_height) = rpc
            .get(&format!("/rest/blockhashbyheight/{height}.bin"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            deserialize::<BlockHash>(&by_height).unwrap().to_string(),
            hash
        );
        prev = x11(&block.header);
    }
    let (status, headers) = rpc
        .get(&format!(
            "/rest/headers/{genesis_s}.bin?count=3",
            genesis_s = genesis.as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers.len(), 3 * 80);
    let third: bitcoin::block::Header = deserialize(&headers[160..]).unwrap();
    assert_eq!(x11(&third).to_string(), hashes[1].as_str().unwrap());

    let (_, reply) = rpc
        .call(
            "generatetoaddress",
            json!([1, "bcrt1qfuu32uznyq4f3kge3eqmwvdyc7cg224rjf4nct"]),
        )
        .await;
    assert_eq!(
        reply["error"],
        json!({"code": -5, "message": "Error: Invalid address"})
    );
}

/// Proves authentication: wrong credentials get HTTP 401 with an empty body; the cookie
/// written to `<datadir>/regtest/.cookie` is accepted and removed when the double stops.
#[tokio::test]
async fn basic_auth_and_cookie() {
    let dir = std::env::temp_dir().join(format!("bitcoind-double-{}", std::process::id()));
    let node = BitcoindDouble::start(Params {
        datadir: Some(dir.clone()),
        ..Params::bitcoin()
    })
    .unwrap();
    let rpc = Client::new(&node);
    let body = json!({"jsonrpc": "1.0", "id": 1, "method": "getblockcount", "params": []});
    let (status, text) = rpc.post_as("coinhub", "wrong", &body).await;
    assert_eq!((status, text.as_str()), (401, ""));
    let cookie_path = node.cookie_path.clone().unwrap();
    let cookie = std::fs::read_to_string(&cookie_path).unwrap();
    let (user, password) = cookie.split_once(':').unwrap();
    assert_eq!(user, "__cookie__");
    let (status, text) = rpc.post_as(user, password, &body).await;
    assert_eq!(status, 200, "{text}");
    drop(node);
    assert!(!cookie_path.exists());
    let _ = std::fs::remove_dir_all(dir);
}

/// Proves the test hooks for node-client tests: `set_warmup(2)` makes the next two calls
/// fail with -28 `Loading block index…` (HTTP 500) and the third succeed; `prune_block`
/// makes `getblock` answer -1 `Block not available (pruned data)` and REST 404 while the
/// header stays available; and `sendrawtransaction` refuses a fee above `maxfeerate` with
/// -25 as Bitcoin Core does.
#[tokio::test]
async fn warmup_pruned_block_and_max_fee_rate() {
    let node = BitcoindDouble::start(Params::bitcoin()).unwrap();
    let rpc = Client::new(&node);
    node.set_warmup(2);
    for _ in 0..2 {
        let (status, reply) = rpc.call("getblockcount", json!([])).await;
        assert_eq!(status, 500);
        assert_eq!(
            reply["error"],
            json!({"code": -28, "message": "Loading block index\u{2026}"})
        );
    }
    assert_eq!(rpc.ok("getblockcount", json!([])).await, 0);

    let wallet = Wallet::new(6);
    let hashes = rpc
        .ok(
            "generatetoaddress",
            json!([101, wallet.address.to_string()]),
        )
        .await;
    let first = hashes[0].as_str().unwrap().to_owned();
    assert!(node.prune_block(&first.parse().unwrap()));
    let (status, reply) = rpc.call("getblock", json!([first, 0])).await;
    assert_eq!(status, 500);
    assert_eq!(
        reply["error"],
        json!({"code": -1, "message": "Block not available (pruned data)"})
    );
    let (status, body) = rpc.get(&format!("/rest/block/{first}.bin")).await;
    assert_eq!(
        (status, String::from_utf8(body).unwrap()),
        (404, format!("{first} not available (pruned data)\r\n"))
    );
    assert_eq!(
        rpc.ok("getblockheader", json!([first, true])).await["height"],
        1
    );
    assert_eq!(rpc.ok("getblockchaininfo", json!([])).await["pruned"], true);

    let coinbase = rpc.block_at(2).await.txdata[0].clone();
    let pricey = deposit_spend(
        &wallet,
        &coinbase,
        Amount::from_btc(0.5).unwrap(),
        Amount::from_btc(0.5).unwrap(),
    );
    let (status, reply) = rpc
        .call("sendrawtransaction", json!([tx_hex(&pricey)]))
        .await;
    assert_eq!(status, 500);
    assert_eq!(
        reply["error"],
        json!({"code": -25, "message": "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)"})
    );
    rpc.ok("sendrawtransaction", json!([tx_hex(&pricey), 0]))
        .await;
}

/// The benchmark hook `append_block_unchecked` puts the real 1 MB mainnet block 413,567 on
/// the regtest chain: its transactions are served byte for byte by REST and `getblock`, only
/// the header is re-linked to the tip (valid regtest proof of work, merkle root intact), and
/// mining continues on top of it.
#[tokio::test]
async fn append_block_unchecked_serves_a_real_block_and_mining_continues() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/bitcoin/block413567.raw"
    );
    let raw = std::fs::read(path).unwrap();
    let node = BitcoindDouble::start(Params::bitcoin()).unwrap();
    let rpc = Client::new(&node);
    let wallet = Wallet::new(1);
    rpc.ok("generatetoaddress", json!([3, wallet.address.to_string()]))
        .await;
    let tip = rpc.ok("getblockhash", json!([3])).await;

    let hash = node.append_block_unchecked(&raw).unwrap();
    assert_eq!(rpc.ok("getblockcount", json!([])).await, 4);
    assert_eq!(rpc.ok("getblockhash", json!([4])).await, hash.to_string());
    let (status, served) = rpc.get(&format!("rest/block/{hash}.bin")).await;
    assert_eq!(status, 200);
    assert_eq!(served.len(), raw.len());
    assert_eq!(served[80..], raw[80..], "transactions byte for byte");
    let block: Block = deserialize(&served).unwrap();
    assert_eq!(block.block_hash(), hash);
    assert_eq!(block.txdata.len(), 1_557);
    assert_eq!(
        block.header.prev_blockhash.to_string(),
        tip.as_str().unwrap()
    );
    assert!(block.check_merkle_root());
    assert!(block.header.validate_pow(block.header.target()).is_ok());
    assert_eq!(rpc.block(&hash.to_string()).await, block);

    rpc.ok("generatetoaddress", json!([1, wallet.address.to_string()]))
        .await;
    assert_eq!(rpc.block_at(5).await.header.prev_blockhash, hash);
}
