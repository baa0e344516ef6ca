//! The Bitcoin Core client ([`coinhub_chains::bitcoin::rpc`]) against replies recorded from a
//! real Bitcoin Core, served by the replay server in `support/replay.rs`.

mod support;

use std::str::FromStr;

use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, Block, BlockHash, Transaction, Txid};
use coinhub_chains::bitcoin::rpc::{
    Auth, BatchCall, BitcoinRpc, Broadcast, EstimateMode, RpcConfig, RpcError,
};
use serde_json::{Value, json};
use support::replay::{Exchange, Fixture, RecordedBody, ReplayNode};

const USER: &str = "coinhub";
const PASSWORD: &str = "correct-horse-battery-staple";

/// A client of `node` with fast warm-up retries and a short timeout.
fn client(node: &ReplayNode, auth: Auth) -> BitcoinRpc {
    let mut config = RpcConfig::new(node.url(), auth);
    config.timeout_ms = 5_000;
    config.warmup_backoff_initial_ms = 10;
    config.warmup_backoff_max_ms = 20;
    BitcoinRpc::new(config).expect("valid config")
}

fn user_pass(password: &str) -> Auth {
    Auth::UserPass {
        user: USER.into(),
        password: password.to_owned().into(),
    }
}

/// Starts a replay node with `exchanges` and a client that has the right password.
async fn node_and_client(exchanges: Vec<Exchange>) -> (ReplayNode, BitcoinRpc) {
    let node = ReplayNode::start(exchanges, USER, PASSWORD).await;
    let rpc = client(&node, user_pass(PASSWORD));
    (node, rpc)
}

fn block_hash(text: &str) -> BlockHash {
    BlockHash::from_str(text).expect("block hash")
}

fn txid(text: &str) -> Txid {
    Txid::from_str(text).expect("txid")
}

/// The hex first parameter of a recorded `sendrawtransaction`, as bytes.
fn sent_tx(exchange: &Exchange) -> Vec<u8> {
    hex::decode(exchange.params().expect("params")[0].as_str().expect("hex")).expect("hex")
}

/// Proves `getblockchaininfo`, `getnetworkinfo`, `getblockcount`, `getblockhash` and
/// `getblockheader` parse Bitcoin Core's recorded replies into domain types: heights, hashes
/// as `BlockHash`, the relay fee as exact satoshi (`1e-06` BTC/kvB = 100 sat), warnings as a
/// list, and a best-chain header with its parent.
#[tokio::test]
async fn chain_methods_parse_recorded_replies() {
    let f = Fixture::load("chain_and_blocks");
    let tip = "1bab7658b9afc4fd0be7d793d4fac02fd2a6284201c89703f6c0601f0d72232a";
    let (_node, rpc) = node_and_client(vec![
        f.by_label("after mining"),
        f.call("getnetworkinfo", json!([])),
        f.call("getblockcount", json!([])),
        f.call("getblockhash", json!([1])),
        f.call("getblockheader", json!([tip, true])),
    ])
    .await;

    let info = rpc.get_blockchain_info().await.expect("getblockchaininfo");
    assert_eq!(info.chain, "regtest");
    assert_eq!((info.blocks, info.headers), (102, 102));
    assert_eq!(info.best_block_hash, block_hash(tip));
    assert!(!info.initial_block_download && !info.pruned);
    assert_eq!(info.warnings.len(), 1);

    let network = rpc.get_network_info().await.expect("getnetworkinfo");
    assert_eq!(network.version, 319_900);
    assert_eq!(network.subversion, "/Satoshi:31.99.0/");
    assert_eq!(network.relay_fee_per_kvb, Amount::from_sat(100));
    assert_eq!(network.incremental_fee_per_kvb, Some(Amount::from_sat(100)));

    assert_eq!(rpc.get_block_count().await.expect("getblockcount"), 102);
    assert_eq!(
        rpc.get_block_hash(1).await.expect("getblockhash"),
        block_hash("5e2dcf752ed46056ebda9eb64a900b55cc5007d2964173c0f3c7af7af4bafb43")
    );

    let header = rpc
        .get_block_header(&block_hash(tip))
        .await
        .expect("getblockheader");
    assert_eq!(
        (header.height, header.confirmations, header.tx_count),
        (102, 1, 1)
    );
    assert!(header.is_on_best_chain());
    assert_eq!(
        header.previous_block_hash,
        Some(block_hash(
            "501e371170c1a294eba329694e5eb18c98cedbe68289091f1d05628c4c4a439c"
        ))
    );
    assert_eq!(header.next_block_hash, None);
}

/// Proves the mempool, transaction, fee and broadcast methods parse recorded replies:
/// `getrawmempool` to three txids, `getrawtransaction` raw bytes that decode (rust-bitcoin)
/// to the asked txid, verbose `getrawtransaction` for a mempool tx (no block) and a confirmed
/// one (block hash, 2 confirmations), `estimatesmartfee` without data (no fee rate, the
/// node's reason) in both parameter forms, and `sendrawtransaction` accepted with its txid.
#[tokio::test]
async fn mempool_tx_fee_and_broadcast_methods_parse_recorded_replies() {
    let deposits = Fixture::load("deposits");
    let reorg = Fixture::load("reorg");
    let spend = Fixture::load("multisig_spend");
    let batched = "b8838721908f9ee496ba994eb95e03be78185a9744849d7ec9f828e837958295";
    let reorged = "8b6810b02edd53a9d45564d6ee6d9674fd5816cf792100590e71fb1d748da672";
    let broadcast = spend.exchanges[27].clone();
    assert_eq!(broadcast.method(), Some("sendrawtransaction"));
    let (_node, rpc) = node_and_client(vec![
        deposits.call("getrawmempool", json!([false])),
        deposits.call("getrawtransaction", json!([batched, 0])),
        deposits.call("getrawtransaction", json!([batched, 1])),
        reorg.by_label("deposit confirmed twice"),
        deposits.call("estimatesmartfee", json!([6])),
        deposits.call("estimatesmartfee", json!([2, "economical"])),
        broadcast.clone(),
    ])
    .await;

    let mempool = rpc.get_raw_mempool().await.expect("getrawmempool");
    assert_eq!(mempool.len(), 3);
    assert!(mempool.contains(&txid(batched)));

    let raw = rpc
        .get_raw_transaction(&txid(batched))
        .await
        .expect("getrawtransaction 0");
    let tx: Transaction = bitcoin::consensus::deserialize(&raw).expect("decodes");
    assert_eq!(tx.compute_txid(), txid(batched));

    let in_mempool = rpc
        .get_raw_transaction_info(&txid(batched))
        .await
        .expect("verbose");
    assert_eq!(in_mempool.raw, raw);
    assert_eq!(
        (in_mempool.block_hash, in_mempool.confirmations),
        (None, None)
    );

    let confirmed = rpc
        .get_raw_transaction_info(&txid(reorged))
        .await
        .expect("verbose");
    assert_eq!(confirmed.confirmations, Some(2));
    assert!(confirmed.block_hash.is_some() && confirmed.block_time_s.is_some());

    for mode in [None, Some(EstimateMode::Economical)] {
        let target = if mode.is_some() { 2 } else { 6 };
        let fee = rpc
            .estimate_smart_fee(target, mode)
            .await
            .expect("estimatesmartfee");
        assert_eq!(fee.fee_per_kvb, None);
        assert_eq!(
            fee.errors,
            vec!["Insufficient data or no feerate found".to_owned()]
        );
    }

    let outcome = rpc
        .send_raw_transaction(&sent_tx(&broadcast))
        .await
        .expect("broadcast");
    assert_eq!(
        outcome,
        Broadcast::Accepted {
            txid: txid("e1b8e548c68844ee97136f4534e9f559cb0a8a220b7ad548df5a56ca47753589")
        }
    );
}

/// Proves batching: three calls go out as ONE HTTP request with an array body, and the
/// recorded batch reply (two results, one `Method not found`) comes back per call, in call
/// order, each with its own typed outcome.
#[tokio::test]
async fn batch_is_one_request_with_per_call_results() {
    let errors = Fixture::load("errors");
    let (node, rpc) = node_and_client(vec![errors.by_label("batch of three, one failing")]).await;

    let calls = [
        BatchCall::new("getblockcount", vec![]),
        BatchCall::new("getbestblockhash", vec![]),
        BatchCall::new("nosuchmethod", vec![]),
    ];
    let results = rpc.call_batch(&calls).await.expect("batch");

    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().expect("count"), &json!(108));
    assert_eq!(
        results[1].as_ref().expect("hash"),
        &json!("0de56b8f020401ab9632af767f45b30eee65abcd3aab91a3fafaeb7121e3331a")
    );
    assert!(
        matches!(&results[2], Err(RpcError::MethodNotFound { method }) if method == "nosuchmethod")
    );
    let log = node.log();
    assert_eq!(log.len(), 1, "one HTTP request");
    assert_eq!(log[0].2.as_array().map(Vec::len), Some(3), "array body");
}

/// Proves `get_block_hashes` batches `getblockhash` calls and types each reply: a height on
/// the chain gives its hash, a height above the tip gives -8 `InvalidParameter`, without
/// failing the others.
#[tokio::test]
async fn block_hashes_batch_types_each_reply() {
    let chain = Fixture::load("chain_and_blocks");
    let errors = Fixture::load("errors");
    let (node, rpc) = node_and_client(vec![
        chain.call("getblockhash", json!([1])),
        errors.by_label("height out of range"),
    ])
    .await;

    let hashes = rpc.get_block_hashes(&[1, 999_999]).await.expect("batch");

    assert_eq!(
        hashes[0].as_ref().expect("height 1"),
        &block_hash("5e2dcf752ed46056ebda9eb64a900b55cc5007d2964173c0f3c7af7af4bafb43")
    );
    assert!(
        matches!(&hashes[1], Err(RpcError::InvalidParameter { message, .. }) if message == "Block height out of range")
    );
    assert_eq!(node.log().len(), 1);
}

/// Proves -28 at start is waited out: the node answers "Loading block index…" (-28, HTTP
/// 500) twice, then the recorded reply; the client retries with backoff and returns the
/// reply after three requests.
#[tokio::test]
async fn warming_up_is_waited_out() {
    let chain = Fixture::load("chain_and_blocks");
    let (node, rpc) = node_and_client(vec![
        Exchange::rpc_error("getblockcount", json!([]), -28, "Loading block index…").times(2),
        chain.call("getblockcount", json!([])),
    ])
    .await;

    assert_eq!(rpc.get_block_count().await.expect("after warm-up"), 102);
    assert_eq!(node.log().len(), 3);
}

/// Proves the -28 wait is bounded: a node that stays in warm-up gives `WarmingUp` after
/// `warmup_attempts_max` requests, with the node's message.
#[tokio::test]
async fn warming_up_forever_gives_up() {
    let node = ReplayNode::start(
        vec![Exchange::rpc_error(
            "getblockcount",
            json!([]),
            -28,
            "Verifying blocks…",
        )],
        USER,
        PASSWORD,
    )
    .await;
    let mut config = RpcConfig::new(node.url(), user_pass(PASSWORD));
    config.warmup_attempts_max = 3;
    config.warmup_backoff_initial_ms = 1;
    let rpc = BitcoinRpc::new(config).expect("config");

    let error = rpc.get_block_count().await.expect_err("stays warming up");

    assert!(
        matches!(&error, RpcError::WarmingUp { attempts: 3, message, .. } if message == "Verifying blocks…")
    );
    assert_eq!(error.code(), Some(-28));
    assert_eq!(node.log().len(), 3);
}

/// Proves a wrong password gives `Unauthorized` naming the node (`host:port`) and that
/// neither the error's text nor its debug form contains the password. The node answers
/// HTTP 401 with an empty body, exactly as recorded in `errors.json`.
#[tokio::test]
async fn wrong_password_is_unauthorized_naming_the_node_not_the_password() {
    let recorded = Fixture::load("errors").by_label("wrong password");
    assert_eq!(recorded.http_status, 401);
    assert!(matches!(&recorded.body, RecordedBody::Text(text) if text.is_empty()));
    let chain = Fixture::load("chain_and_blocks");
    let node =
        ReplayNode::start(vec![chain.call("getblockcount", json!([]))], USER, PASSWORD).await;
    let wrong = "hunter2-wrong-secret";
    let rpc = client(&node, user_pass(wrong));

    let error = rpc.get_block_count().await.expect_err("401");

    assert!(matches!(&error, RpcError::Unauthorized { node: n } if *n == node.host_port()));
    let text = error.to_string();
    assert!(text.contains(&node.host_port()), "{text}");
    assert!(
        !text.contains(wrong) && !format!("{error:?}").contains(wrong),
        "{text}"
    );
}

/// Proves cookie auth: the client reads `__cookie__:<password>` from the cookie file, and
/// when the node restarts with a new cookie (401), it re-reads the file and the call
/// succeeds without a new client.
#[tokio::test]
async fn cookie_is_reread_after_401() {
    let chain = Fixture::load("chain_and_blocks");
    let node = ReplayNode::start(
        vec![chain.call("getblockcount", json!([]))],
        "__cookie__",
        "first",
    )
    .await;
    let dir = std::env::temp_dir().join(format!("coinhub-cookie-{}", node.addr.port()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cookie = dir.join(".cookie");
    std::fs::write(&cookie, "__cookie__:first").expect("write cookie");
    let rpc = client(&node, Auth::CookieFile(cookie.clone()));
    assert_eq!(rpc.get_block_count().await.expect("first cookie"), 102);

    node.set_credentials("__cookie__", "second");
    std::fs::write(&cookie, "__cookie__:second\n").expect("rewrite cookie");

    assert_eq!(rpc.get_block_count().await.expect("re-read cookie"), 102);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// Proves the same error maps to the same typed error in both protocol versions:
/// JSON-RPC 1.0 (HTTP 500, body with `error`) and 2.0 (HTTP 200) replies to `getblockhash`
/// above the tip are both -8 `InvalidParameter`; an unknown method (1.0: HTTP 404) is
/// `MethodNotFound`; an unknown transaction (-5, HTTP 500) is `NotFound`.
#[tokio::test]
async fn json_rpc_1_and_2_errors_map_to_typed_errors() {
    let errors = Fixture::load("errors");
    for label in ["height out of range", "height out of range, 2.0"] {
        let exchange = errors.by_label(label);
        let status = exchange.http_status;
        let (_node, rpc) = node_and_client(vec![exchange]).await;
        let error = rpc.get_block_hash(999_999).await.expect_err(label);
        assert!(
            matches!(&error, RpcError::InvalidParameter { message, .. } if message == "Block height out of range"),
            "{label} (HTTP {status}): {error:?}"
        );
    }
    assert_eq!(errors.by_label("height out of range").http_status, 500);
    assert_eq!(errors.by_label("height out of range, 2.0").http_status, 200);

    let (_node, rpc) = node_and_client(vec![
        errors.by_label("unknown method, JSON-RPC 1.0"),
        errors.by_label("unknown tx"),
    ])
    .await;
    let error = rpc
        .call::<Value>("nosuchmethod", &[])
        .await
        .expect_err("unknown method");
    assert!(
        matches!(error, RpcError::MethodNotFound { .. }),
        "{error:?}"
    );
    let unknown = txid("1111111111111111111111111111111111111111111111111111111111111111");
    let error = rpc
        .get_raw_transaction_info(&unknown)
        .await
        .expect_err("unknown tx");
    assert!(matches!(error, RpcError::NotFound { .. }), "{error:?}");
}

/// Proves REST raw blocks: `get_block_raw` fetches `/rest/block/<hash>.bin` (one GET, no
/// JSON-RPC) and the bytes decode with rust-bitcoin to a block whose hash is the one asked
/// for, with the fixture's transaction count.
#[tokio::test]
async fn rest_raw_block_decodes_to_its_hash() {
    let f = Fixture::load("chain_and_blocks");
    let rest = f.by_label("REST block bin");
    let hash = block_hash("1bab7658b9afc4fd0be7d793d4fac02fd2a6284201c89703f6c0601f0d72232a");
    assert!(rest.http_path.contains(&hash.to_string()));
    let (node, rpc) = node_and_client(vec![rest]).await;

    let raw = rpc.get_block_raw(&hash).await.expect("rest block");
    let block: Block = bitcoin::consensus::deserialize(&raw).expect("decodes");

    assert_eq!(block.block_hash(), hash);
    assert_eq!(block.txdata.len(), 1);
    let log = node.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].0, "GET");
}

/// Proves the REST fallback: when the node answers the REST request with 404 (REST off),
/// the client gets the same bytes from `getblock <hash> 0`, and afterwards goes straight to
/// `getblock` without trying REST again.
#[tokio::test]
async fn rest_404_falls_back_to_getblock_verbosity_0() {
    let f = Fixture::load("chain_and_blocks");
    let expected = match &f.by_label("REST block bin").body {
        RecordedBody::Bytes(bytes) => bytes.clone(),
        other => panic!("REST .bin body is bytes, got {other:?}"),
    };
    let (node, rpc) = node_and_client(vec![f.by_label("verbosity 0")]).await;
    let hash = block_hash("1bab7658b9afc4fd0be7d793d4fac02fd2a6284201c89703f6c0601f0d72232a");

    assert_eq!(rpc.get_block_raw(&hash).await.expect("fallback"), expected);
    assert_eq!(rpc.get_block_raw(&hash).await.expect("rpc only"), expected);

    let methods: Vec<String> = node.log().into_iter().map(|(m, _, _)| m).collect();
    assert_eq!(methods, ["GET", "POST", "POST"]);
}

/// Proves a block the node does not have is reported as `NotFound`: REST answers 404
/// `<hash> not found` (recorded), the `getblock` fallback answers -5 (recorded `Block not
/// found`), and REST stays in use for later blocks.
#[tokio::test]
async fn unknown_block_is_not_found() {
    let errors = Fixture::load("errors");
    let zero = "0000000000000000000000000000000000000000000000000000000000000000";
    let mut getblock = errors.by_label("unknown block");
    getblock.request["params"] = json!([zero, 0]);
    let (node, rpc) = node_and_client(vec![errors.by_label("REST unknown block"), getblock]).await;

    let error = rpc
        .get_block_raw(&BlockHash::all_zeros())
        .await
        .expect_err("unknown");
    assert!(
        matches!(&error, RpcError::NotFound { message, .. } if message == "Block not found"),
        "{error:?}"
    );
    let _ = rpc.get_block_raw(&BlockHash::all_zeros()).await;
    let methods: Vec<String> = node.log().into_iter().map(|(m, _, _)| m).collect();
    assert_eq!(methods, ["GET", "POST", "GET", "POST"]);
}

/// Proves stale blocks are modelled: after `invalidateblock`, `getblockheader` of the
/// orphaned block reports `confirmations: -1`, kept as -1 and `is_on_best_chain() == false`.
#[tokio::test]
async fn stale_block_has_minus_one_confirmations() {
    let reorg = Fixture::load("reorg");
    let stale = "469d79200dd976b1346256bdbbf079619e04cd147e9ecb2dc5c5efcc72774643";
    let (_node, rpc) = node_and_client(vec![reorg.by_label("stale child header")]).await;

    let header = rpc
        .get_block_header(&block_hash(stale))
        .await
        .expect("header");

    assert_eq!(header.confirmations, -1);
    assert!(!header.is_on_best_chain());
    assert_eq!(header.height, 106);
}

/// Proves re-broadcast is idempotent: the same transaction sent again while in the mempool
/// is `Accepted` with its txid, and after it is mined the node's -27 (HTTP 500, `Transaction
/// outputs already in utxo set`) is `Ok(Broadcast::AlreadyInChain)`, not an error.
#[tokio::test]
async fn rebroadcast_of_a_mined_tx_is_already_in_chain_success() {
    let spend = Fixture::load("multisig_spend");
    let again = spend.by_label("same tx again while in mempool");
    let mined = spend.by_label("same tx again after it is mined");
    assert_eq!(mined.http_status, 500);
    let raw = sent_tx(&mined);

    let (_node, rpc) = node_and_client(vec![again]).await;
    assert!(matches!(
        rpc.send_raw_transaction(&raw).await,
        Ok(Broadcast::Accepted { .. })
    ));

    let (_node, rpc) = node_and_client(vec![mined]).await;
    let outcome = rpc
        .send_raw_transaction(&raw)
        .await
        .expect("-27 is success");
    assert_eq!(
        outcome,
        Broadcast::AlreadyInChain {
            message: "Transaction outputs already in utxo set".into()
        }
    );
}

/// Proves broadcast rejections are typed: the recorded spend with one flipped signature
/// byte (-26 `mempool-script-verify-flag-failed …`) is `ScriptVerifyFailed`, while a policy
/// rejection (-26 `insufficient fee, rejecting replacement …` from `rbf.json`) is `Rejected`,
/// and an undecodable transaction (-22) keeps its code.
#[tokio::test]
async fn broadcast_rejections_are_typed() {
    let errors = Fixture::load("errors");
    let bad_signature = errors.by_label("broadcast with the bad signature");
    let replaced = Fixture::load("rbf").by_label("replaced tx again");
    let undecodable = errors.by_label("undecodable tx");
    let (_node, rpc) =
        node_and_client(vec![bad_signature.clone(), replaced.clone(), undecodable]).await;

    let error = rpc
        .send_raw_transaction(&sent_tx(&bad_signature))
        .await
        .expect_err("bad sig");
    assert!(
        matches!(&error, RpcError::ScriptVerifyFailed { code: -26, reason } if reason.contains("CHECK(MULTI)SIG")),
        "{error:?}"
    );
    let error = rpc
        .send_raw_transaction(&sent_tx(&replaced))
        .await
        .expect_err("replaced");
    assert!(
        matches!(&error, RpcError::Rejected { reason } if reason.starts_with("insufficient fee")),
        "{error:?}"
    );
    let error = rpc
        .send_raw_transaction(&[0xde, 0xad, 0xbe, 0xef])
        .await
        .expect_err("undecodable");
    assert_eq!(error.code(), Some(-22));
}

/// Proves every call has a timeout: a node that accepts the connection but never answers
/// gives `Timeout` after `timeout_ms`, and a closed port gives `Unreachable`; both are
/// transient and name the node.
#[tokio::test]
async fn silent_node_times_out_and_closed_port_is_unreachable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (socket, _) = listener.accept().await.expect("accept");
            held.push(socket);
        }
    });
    let mut config = RpcConfig::new(format!("http://{addr}"), user_pass(PASSWORD));
    config.timeout_ms = 200;
    let rpc = BitcoinRpc::new(config).expect("config");

    let error = rpc.get_block_count().await.expect_err("silent");
    assert!(
        matches!(&error, RpcError::Timeout { timeout_ms: 200, node, .. } if *node == addr.to_string()),
        "{error:?}"
    );
    assert!(error.is_transient());
    silent.abort();

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let rpc = BitcoinRpc::new(RpcConfig::new(
        format!("http://{closed}"),
        user_pass(PASSWORD),
    ))
    .expect("config");
    let error = rpc.get_block_count().await.expect_err("closed");
    assert!(matches!(error, RpcError::Unreachable { .. }), "{error:?}");
}

/// Proves the client refuses a node URL carrying credentials (they would end up in logs).
#[test]
fn url_with_credentials_is_refused() {
    let config = RpcConfig::new("http://user:secret@127.0.0.1:8332", user_pass(PASSWORD));
    let error = BitcoinRpc::new(config).expect_err("credentials in url");
    assert!(matches!(&error, RpcError::InvalidConfig { .. }));
    assert!(!error.to_string().contains("secret"));
}

/// Proves `gettxout` parses Bitcoin Core's recorded reply (`deposits.json`): the value
/// `49.4999835` BTC to exactly 4 949 998 350 sat, the scriptPubKey from its hex, best block
/// and confirmations; the client sends `include_mempool` as the third parameter; a `null`
/// reply (spent or unknown output) is `None`, not an error.
#[tokio::test]
async fn tx_out_parses_recorded_reply_and_null_is_none() {
    let deposits = Fixture::load("deposits");
    let outpoint_txid = "82f85547c23dece26ef3cd51d2409126bb31b33ca3012d48c7f42b86d02fbae6";
    let mut unspent = deposits.call("gettxout", json!([outpoint_txid, 0]));
    unspent.request["params"] = json!([outpoint_txid, 0, false]);
    let mut spent = unspent.clone();
    spent.request["params"] = json!([outpoint_txid, 1, true]);
    spent.body = RecordedBody::Json(json!({"result": null, "error": null, "id": 0}));
    let (_node, rpc) = node_and_client(vec![unspent, spent]).await;

    let outpoint = bitcoin::OutPoint {
        txid: txid(outpoint_txid),
        vout: 0,
    };
    let out = rpc
        .get_tx_out(&outpoint, false)
        .await
        .expect("gettxout")
        .expect("unspent");
    assert_eq!(out.value, Amount::from_sat(4_949_998_350));
    assert_eq!(
        out.script_pubkey.to_hex_string(),
        "5120d62c95efe9adda2eeddc3ccfcf0a2a5f2df62030c0bfa20b8baac96851c8fc87"
    );
    assert_eq!(out.confirmations, 1);
    assert!(!out.coinbase);
    assert_eq!(
        out.best_block,
        block_hash("010a9c7d464800e554c125597665240af31e4f4f99ec9b9e678719d6964d5b18")
    );

    let spent = bitcoin::OutPoint {
        txid: txid(outpoint_txid),
        vout: 1,
    };
    assert_eq!(rpc.get_tx_out(&spent, true).await.expect("gettxout"), None);
}
