//! The double's replies against Bitcoin Core's recorded replies, field by field.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashMap};

use bitcoin::consensus::encode::deserialize;
use bitcoin::{Amount, Block, OutPoint, TxOut};
use coinhub_bitcoind_double::{BitcoindDouble, Params};
use common::{Client, WSH_ADDRESS, Wallet, deposit_spend, flip_signature_byte, tx_hex};
use serde_json::{Value, json};

/// Where the recordings live, relative to this crate.
const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/bitcoin-core"
);

/// Recorded methods the double does not implement: wallet, PSBT and descriptor calls that a
/// node client never makes (Coinhub signs itself and watches scripts from raw blocks).
const NOT_IMPLEMENTED: &[&str] = &[
    "createwallet",
    "getnewaddress",
    "sendtoaddress",
    "sendmany",
    "createrawtransaction",
    "fundrawtransaction",
    "signrawtransactionwithwallet",
    "scantxoutset",
    "getdescriptorinfo",
    "importdescriptors",
    "rescanblockchain",
    "getbalances",
    "listunspent",
    "walletcreatefundedpsbt",
    "walletprocesspsbt",
    "combinepsbt",
    "finalizepsbt",
    "analyzepsbt",
    "decodepsbt",
    "bumpfee",
    "deriveaddresses",
    "getaddressinfo",
];

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_hash_keyed(o: &serde_json::Map<String, Value>) -> bool {
    !o.is_empty()
        && o.keys()
            .all(|k| k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Compares the set of keys and the JSON type of every value, recursively. Arrays compare
/// element i with recorded element i (or the last recorded one); objects keyed by txid
/// (verbose mempool) compare every entry with the first recorded entry.
fn shape(path: &str, recorded: &Value, ours: &Value, errors: &mut Vec<String>) {
    if json_type(recorded) != json_type(ours) {
        errors.push(format!(
            "{path}: recorded {} but double sent {}",
            json_type(recorded),
            json_type(ours)
        ));
        return;
    }
    match (recorded, ours) {
        (Value::Object(r), Value::Object(o)) if is_hash_keyed(r) || is_hash_keyed(o) => {
            if let (Some(first), true) = (r.values().next(), is_hash_keyed(o)) {
                for (k, v) in o {
                    shape(&format!("{path}.<{k}>"), first, v, errors);
                }
            } else if !o.is_empty() {
                errors.push(format!("{path}: txid-keyed object expected"));
            }
        }
        (Value::Object(r), Value::Object(o)) => {
            let rk: BTreeSet<&String> = r.keys().collect();
            let ok: BTreeSet<&String> = o.keys().collect();
            for missing in rk.difference(&ok) {
                errors.push(format!(
                    "{path}.{missing}: recorded but missing from the double"
                ));
            }
            for extra in ok.difference(&rk) {
                errors.push(format!(
                    "{path}.{extra}: sent by the double but not recorded"
                ));
            }
            for k in rk.intersection(&ok) {
                shape(&format!("{path}.{k}"), &r[*k], &o[*k], errors);
            }
        }
        (Value::Array(r), Value::Array(o)) if !r.is_empty() => {
            for (i, v) in o.iter().enumerate() {
                shape(&format!("{path}[{i}]"), &r[i.min(r.len() - 1)], v, errors);
            }
        }
        _ => {}
    }
}

/// Replaces 64-hex-digit words (txids, hashes) so messages naming them compare exactly.
fn without_hashes(s: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push_str("<hash>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in s.chars() {
        if c.is_ascii_hexdigit() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Proves the comparator itself catches differences: a missing key, an extra key, a changed
/// type deep inside an array, and a null where a string was recorded.
#[test]
fn shape_comparison_detects_differences() {
    let recorded = json!({"a": 1, "b": [{"c": "x", "d": null}], "e": "s"});
    let mut errs = Vec::new();
    shape(
        "",
        &recorded,
        &json!({"a": 2, "b": [{"c": "y", "d": null}], "e": "t"}),
        &mut errs,
    );
    assert!(errs.is_empty(), "{errs:?}");
    for broken in [
        json!({"b": [{"c": "x", "d": null}], "e": "s"}),
        json!({"a": 1, "b": [{"c": "x", "d": null}], "e": "s", "f": 0}),
        json!({"a": 1, "b": [{"c": "x", "d": null}, {"c": 5, "d": null}], "e": "s"}),
        json!({"a": 1, "b": [{"c": "x", "d": null}], "e": null}),
    ] {
        let mut errs = Vec::new();
        shape("", &recorded, &broken, &mut errs);
        assert!(!errs.is_empty(), "{broken} should differ");
    }
    assert_eq!(
        without_hashes(&format!("spending {}:1", "ab".repeat(32))),
        "spending <hash>:1"
    );
}

/// Replays the recorded scenarios against the double and collects every difference.
struct Replay {
    rpc: Client,
    files: HashMap<&'static str, Value>,
    errors: Vec<String>,
    covered: BTreeSet<String>,
}

impl Replay {
    fn exchange(&self, file: &str, id: u64) -> Value {
        self.files[file]["exchanges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["request"].is_object() && e["request"]["id"] == id && e["http_path"] == "/")
            .unwrap_or_else(|| panic!("{file}: no exchange with id {id}"))
            .clone()
    }

    fn rest_exchange(&self, file: &str, pred: impl Fn(&str) -> bool) -> Value {
        self.files[file]["exchanges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["http_method"] == "GET" && pred(e["http_path"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("{file}: no REST exchange"))
            .clone()
    }

    /// Sends recorded request `id` of `file` with `params` swapped in (None keeps them);
    /// checks the HTTP status exactly and the reply's shape field by field. Returns our reply.
    async fn shape_of(&mut self, file: &str, id: u64, params: Option<Value>) -> Value {
        let (label, recorded, ours) = self.send(file, id, params).await;
        let mut errs = Vec::new();
        shape("", &recorded, &ours, &mut errs);
        self.errors
            .extend(errs.into_iter().map(|e| format!("{label}: {e}")));
        if recorded["error"].is_object() {
            self.compare_error(&label, &recorded, &ours);
        }
        ours
    }

    /// Like `shape_of`, and the whole reply must equal the recording (after hiding hashes).
    async fn exact(&mut self, file: &str, id: u64, params: Option<Value>) -> Value {
        let (label, recorded, ours) = self.send(file, id, params).await;
        if without_hashes(&recorded.to_string()) != without_hashes(&ours.to_string()) {
            self.errors.push(format!(
                "{label}: recorded {recorded} but double sent {ours}"
            ));
        }
        ours
    }

    fn compare_error(&mut self, label: &str, recorded: &Value, ours: &Value) {
        let r = &recorded["error"];
        let o = &ours["error"];
        if r["code"] != o["code"] {
            self.errors.push(format!(
                "{label}: error code {} recorded, {} sent",
                r["code"], o["code"]
            ));
        }
        let (rm, om) = (
            r["message"].as_str().unwrap_or(""),
            o["message"].as_str().unwrap_or(""),
        );
        if without_hashes(rm) != without_hashes(om) {
            self.errors.push(format!(
                "{label}: error message {rm:?} recorded, {om:?} sent"
            ));
        }
    }

    async fn send(&mut self, file: &str, id: u64, params: Option<Value>) -> (String, Value, Value) {
        let ex = self.exchange(file, id);
        let mut request = ex["request"].clone();
        if let Some(p) = params {
            request["params"] = p;
        }
        let method = request["method"].as_str().unwrap().to_owned();
        self.covered.insert(method.clone());
        let label = format!("{file}#{id} {method}");
        let (status, ours) = self.rpc.post(&request).await;
        if status != ex["http_status"] {
            self.errors.push(format!(
                "{label}: HTTP {} recorded, {status} sent",
                ex["http_status"]
            ));
        }
        (label, ex["response"].clone(), ours)
    }

    /// REST: status exactly; JSON bodies by shape, text bodies exactly. Returns our bytes.
    async fn rest(&mut self, file: &str, pred: impl Fn(&str) -> bool, path: &str) -> Vec<u8> {
        let ex = self.rest_exchange(file, pred);
        let label = format!("{file} GET {}", ex["http_path"]);
        let (status, body) = self.rpc.get(path).await;
        if status != ex["http_status"] {
            self.errors.push(format!(
                "{label}: HTTP {} recorded, {status} sent",
                ex["http_status"]
            ));
        }
        let recorded = &ex["response"];
        if let Some(text) = recorded.get("raw_text") {
            let ours = String::from_utf8_lossy(&body);
            if text.as_str().unwrap() != ours {
                self.errors
                    .push(format!("{label}: body {text} recorded, {ours:?} sent"));
            }
        } else if !recorded.is_null() {
            let ours: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let mut errs = Vec::new();
            shape("", recorded, &ours, &mut errs);
            self.errors
                .extend(errs.into_iter().map(|e| format!("{label}: {e}")));
        }
        body
    }
}

/// Proves the double answers like Bitcoin Core: it replays the recorded scenarios
/// (chain_and_blocks, deposits, reorg, rbf, multisig_spend, errors) with the double's own
/// hashes and transactions in place of the recorded ones, and for every recorded method the
/// double implements compares, field by field, the set of JSON keys and the JSON type of
/// every value (recursively), and the HTTP status exactly; error codes and messages, 401
/// with an empty body, REST 404/400 texts and batch replies must equal the recordings
/// (transaction ids in messages aside). Finally it checks that every recorded method that
/// is not a wallet/PSBT call was exercised.
#[tokio::test]
async fn replies_match_recordings_field_by_field() {
    let mut files = HashMap::new();
    for name in [
        "chain_and_blocks",
        "deposits",
        "errors",
        "reorg",
        "rbf",
        "multisig_spend",
    ] {
        let path = format!("{FIXTURES}/{name}.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        files.insert(name, serde_json::from_str::<Value>(&text).unwrap());
    }
    let node = BitcoindDouble::start(Params::bitcoin()).unwrap();
    let mut r = Replay {
        rpc: Client::new(&node),
        files,
        errors: Vec::new(),
        covered: BTreeSet::new(),
    };
    let wallet = Wallet::new(9);
    let addr = wallet.address.to_string();
    let c = "chain_and_blocks";

    // --- chain_and_blocks: fresh chain, 101 + 1 blocks, headers, blocks, REST.
    r.shape_of(c, 0, None).await;
    r.shape_of(c, 1, None).await;
    r.shape_of(c, 4, Some(json!([101, addr]))).await;
    let tip = r.shape_of(c, 5, Some(json!([1, WSH_ADDRESS]))).await["result"][0].clone();
    let tip_s = tip.as_str().unwrap().to_owned();
    r.shape_of(c, 6, None).await;
    r.shape_of(c, 7, None).await;
    r.shape_of(c, 8, None).await;
    r.shape_of(c, 9, Some(json!([tip, true]))).await;
    r.shape_of(c, 10, Some(json!([tip, false]))).await;
    for (id, verbosity) in [(11, 0), (12, 1), (13, 2), (14, 3)] {
        r.shape_of(c, id, Some(json!([tip, verbosity]))).await;
    }
    let prev = r.rpc.ok("getblockhash", json!([101])).await;
    let prev = prev.as_str().unwrap().to_owned();
    r.rest(c, |p| p == "/rest/chaininfo.json", "/rest/chaininfo.json")
        .await;
    r.rest(
        c,
        |p| p.starts_with("/rest/block/") && p.ends_with(".json") && !p.contains("notx"),
        &format!("/rest/block/{tip_s}.json"),
    )
    .await;
    let bin = r
        .rest(
            c,
            |p| p.starts_with("/rest/block/") && p.ends_with(".bin"),
            &format!("/rest/block/{tip_s}.bin"),
        )
        .await;
    let block: Block = deserialize(&bin).unwrap();
    assert_eq!(block.block_hash().to_string(), tip_s);
    r.rest(
        c,
        |p| p.contains("notxdetails"),
        &format!("/rest/block/notxdetails/{tip_s}.json"),
    )
    .await;
    r.rest(
        c,
        |p| p.starts_with("/rest/headers/"),
        &format!("/rest/headers/{prev}.json?count=3"),
    )
    .await;
    r.rest(
        c,
        |p| p.starts_with("/rest/blockhashbyheight/"),
        "/rest/blockhashbyheight/5.json",
    )
    .await;
    r.shape_of(c, 21, None).await;
    r.shape_of(c, 22, None).await;

    // --- deposits: a deposit in the mempool, then mined.
    let d = "deposits";
    let cb1 = r.rpc.block_at(1).await.txdata[0].clone();
    let cb2 = r.rpc.block_at(2).await.txdata[0].clone();
    let t1 = deposit_spend(
        &wallet,
        &cb1,
        Amount::from_btc(0.5).unwrap(),
        Amount::from_sat(1_650),
    );
    let t2 = deposit_spend(
        &wallet,
        &cb2,
        Amount::from_btc(0.2).unwrap(),
        Amount::from_sat(1_980),
    );
    let t1id = t1.compute_txid().to_string();
    r.shape_of(d, 6, Some(json!([[tx_hex(&t2)]]))).await;
    r.shape_of(d, 7, Some(json!([tx_hex(&t1)]))).await;
    r.shape_of(d, 8, None).await;
    r.shape_of(d, 9, None).await;
    r.shape_of(d, 10, Some(json!([t1id]))).await;
    r.shape_of(d, 11, None).await;
    r.shape_of(d, 12, Some(json!([t1id, 1]))).await;
    r.shape_of(d, 15, Some(json!([t1id, 0]))).await;
    let mined = r.shape_of(d, 16, Some(json!([1, addr]))).await["result"][0].clone();
    r.shape_of(d, 17, Some(json!([mined, 2]))).await;
    r.shape_of(d, 18, Some(json!([t1id, 2, mined]))).await;
    r.shape_of(d, 19, Some(json!([t1id, 0]))).await;
    r.shape_of(d, 21, None).await;
    r.shape_of(d, 22, None).await;

    // --- errors: chain-independent requests verbatim, then script failure and batches.
    let e = "errors";
    for id in [0, 1, 2, 3, 4, 5, 6, 7, 8] {
        r.exact(e, id, None).await;
    }
    r.shape_of(e, 9, Some(json!([t1id, 0]))).await;
    r.exact(e, 10, Some(json!([tx_hex(&t1)]))).await;
    // The recorded tampered spend spends output 1 of its parent; so does ours.
    let cb3 = r.rpc.block_at(3).await.txdata[0].clone();
    let parent = wallet.spend(
        OutPoint {
            txid: cb3.compute_txid(),
            vout: 0,
        },
        cb3.output[0].value,
        vec![
            TxOut {
                value: Amount::from_sat(4_899_990_000),
                script_pubkey: common::script_of(common::TAPROOT_ADDRESS),
            },
            TxOut {
                value: Amount::from_int_btc(1),
                script_pubkey: wallet.script(),
            },
        ],
    );
    r.rpc
        .ok("sendrawtransaction", json!([tx_hex(&parent)]))
        .await;
    let t3 = wallet.spend(
        OutPoint {
            txid: parent.compute_txid(),
            vout: 1,
        },
        Amount::from_int_btc(1),
        vec![
            TxOut {
                value: Amount::from_btc(0.1).unwrap(),
                script_pubkey: common::script_of(common::TAPROOT_ADDRESS),
            },
            TxOut {
                value: Amount::from_sat(89_999_055),
                script_pubkey: common::script_of(WSH_ADDRESS),
            },
        ],
    );
    let bad = flip_signature_byte(&t3);
    r.shape_of(e, 16, Some(json!([tx_hex(&t3)]))).await;
    r.shape_of(e, 17, Some(json!([[tx_hex(&t3)]]))).await;
    let tested = r.shape_of(e, 18, Some(json!([[tx_hex(&bad)]]))).await;
    let recorded = r.exchange(e, 18)["response"]["result"][0]["reject-reason"].clone();
    if tested["result"][0]["reject-reason"] != recorded {
        r.errors.push(format!(
            "errors#18: reject-reason {recorded} recorded, {} sent",
            tested["result"][0]["reject-reason"]
        ));
    }
    r.shape_of(e, 19, Some(json!([tx_hex(&bad)]))).await;
    r.shape_of(e, 20, None).await;
    let batch = r.files[e]["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["request"].is_array())
        .unwrap()
        .clone();
    let (status, ours) = r.rpc.post(&batch["request"]).await;
    assert_eq!(status, batch["http_status"]);
    let mut errs = Vec::new();
    shape("batch", &batch["response"], &ours, &mut errs);
    r.errors.extend(errs);
    if ours[2] != batch["response"][2] {
        r.errors.push(format!(
            "batch error element: {} recorded, {} sent",
            batch["response"][2], ours[2]
        ));
    }
    let wrong = r.files[e]["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["auth"] == "wrong")
        .unwrap()
        .clone();
    let (status, text) = r.rpc.post_as(&r.rpc.user, "wrong", &wrong["request"]).await;
    assert_eq!(
        (status, text.as_str()),
        (401, wrong["response"]["raw_text"].as_str().unwrap())
    );
    let zeros = "0".repeat(64);
    r.rest(
        e,
        |p| p.ends_with(".bin"),
        &format!("/rest/block/{zeros}.bin"),
    )
    .await;
    r.rest(e, |p| p.ends_with("xyz.json"), "/rest/block/xyz.json")
        .await;

    // --- multisig_spend: broadcast twice while in the mempool, again after mining.
    let m = "multisig_spend";
    r.shape_of(m, 27, Some(json!([tx_hex(&t3)]))).await;
    r.shape_of(m, 28, Some(json!([tx_hex(&t3)]))).await;
    r.shape_of(m, 29, Some(json!([1, addr]))).await;
    r.exact(m, 30, Some(json!([tx_hex(&t3)]))).await;
    r.shape_of(m, 31, Some(json!([t3.compute_txid().to_string(), 1])))
        .await;

    // --- reorg: the deposit's block and its child orphaned, a longer fork wins.
    let g = "reorg";
    let cb4 = r.rpc.block_at(4).await.txdata[0].clone();
    let t4 = deposit_spend(
        &wallet,
        &cb4,
        Amount::from_btc(0.7).unwrap(),
        Amount::from_sat(1_650),
    );
    let t4id = t4.compute_txid().to_string();
    r.rpc.ok("sendrawtransaction", json!([tx_hex(&t4)])).await;
    let b1 = r.shape_of(g, 1, Some(json!([1, addr]))).await["result"][0].clone();
    let b2 = r.shape_of(g, 2, Some(json!([1, addr]))).await["result"][0].clone();
    r.shape_of(g, 3, None).await;
    r.shape_of(g, 4, Some(json!([t4id, 1]))).await;
    r.exact(g, 5, Some(json!([b1]))).await;
    r.shape_of(g, 6, None).await;
    r.shape_of(g, 7, None).await;
    r.shape_of(g, 8, Some(json!([b1, 1]))).await;
    r.shape_of(g, 9, Some(json!([t4id, 1]))).await;
    r.exact(g, 10, Some(json!([t4id, 0, -100_000_000]))).await;
    let fork = r.shape_of(g, 11, Some(json!([3, addr]))).await["result"].clone();
    r.shape_of(g, 12, None).await;
    let stale = r.shape_of(g, 13, Some(json!([b2, true]))).await;
    assert_eq!(stale["result"]["confirmations"], -1);
    r.shape_of(g, 14, Some(json!([fork[2], 1]))).await;
    r.shape_of(g, 15, Some(json!([t4id, 1]))).await;

    // --- rbf: a replacement, then the replaced transaction again.
    let f = "rbf";
    let cb5 = r.rpc.block_at(5).await.txdata[0].clone();
    let original = deposit_spend(
        &wallet,
        &cb5,
        Amount::from_btc(0.01).unwrap(),
        Amount::from_sat(1_650),
    );
    let bumped = deposit_spend(
        &wallet,
        &cb5,
        Amount::from_btc(0.01).unwrap(),
        Amount::from_sat(2_476),
    );
    r.rpc
        .ok("sendrawtransaction", json!([tx_hex(&original)]))
        .await;
    r.rpc
        .ok("sendrawtransaction", json!([tx_hex(&bumped)]))
        .await;
    r.shape_of(f, 3, None).await;
    r.exact(f, 4, Some(json!([tx_hex(&original)]))).await;
    r.exact(f, 5, Some(json!([original.compute_txid().to_string()])))
        .await;
    r.shape_of(f, 6, Some(json!([1, addr]))).await;

    // Every recorded non-wallet method was exercised.
    let mut recorded_methods = BTreeSet::new();
    for file in r.files.values() {
        for ex in file["exchanges"].as_array().unwrap() {
            if let Some(method) = ex["request"]["method"].as_str() {
                recorded_methods.insert(method.to_owned());
            }
        }
    }
    for method in &recorded_methods {
        if !NOT_IMPLEMENTED.contains(&method.as_str()) && !r.covered.contains(method) {
            r.errors
                .push(format!("recorded method {method} was not compared"));
        }
    }
    eprintln!("compared methods: {:?}", r.covered);
    assert!(
        r.errors.is_empty(),
        "{} differences:\n{}",
        r.errors.len(),
        r.errors.join("\n")
    );
}
