//! JSON-RPC methods: parameter checking and one function per method, shaped like Bitcoin Core.

use std::str::FromStr;

use bitcoin::consensus::encode::{deserialize, serialize_hex};
use bitcoin::hashes::Hash;
use bitcoin::{Address, Amount, BlockHash, OutPoint, ScriptBuf, Transaction, Txid, base58};
use serde_json::{Map, Value, json};

use crate::Flavor;
use crate::json::{
    DASH_REGTEST_P2PKH, DASH_REGTEST_P2SH, block_json, btc, btc_signed, header_json,
    script_pubkey_json, tx_json,
};
use crate::node::{GENERATE_BLOCKS_MAX, Node, REGTEST_BITS, RELAY_FEE_SAT_PER_KVB, Reject};

/// A JSON-RPC error as Bitcoin Core sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RpcError {
    pub(crate) code: i64,
    pub(crate) message: String,
}

impl RpcError {
    pub(crate) fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<Reject> for RpcError {
    fn from(r: Reject) -> Self {
        Self {
            code: r.code,
            message: r.message,
        }
    }
}

/// `RPC_METHOD_NOT_FOUND`.
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
/// `RPC_INVALID_REQUEST`.
pub(crate) const INVALID_REQUEST: i64 = -32600;

/// Expected JSON type of a positional parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Num,
    Str,
    Bool,
    Arr,
    /// Not type-checked by Core (verbosity accepts number or bool; amounts number or string).
    Any,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Num => "number",
            Ty::Str => "string",
            Ty::Bool => "bool",
            Ty::Arr => "array",
            Ty::Any => "any",
        }
    }
}

/// (name, type, required)
type Spec = &'static [(&'static str, Ty, bool)];

fn spec(method: &str) -> Option<Spec> {
    Some(match method {
        "getblockchaininfo" | "getblockcount" | "getbestblockhash" | "getchaintips"
        | "getnetworkinfo" | "getmempoolinfo" | "ping" | "uptime" => &[],
        "getblockhash" => &[("height", Ty::Num, true)],
        "getblockheader" => &[("blockhash", Ty::Str, true), ("verbose", Ty::Bool, false)],
        "getblock" => &[("blockhash", Ty::Str, true), ("verbosity", Ty::Any, false)],
        "getrawmempool" => &[
            ("verbose", Ty::Bool, false),
            ("mempool_sequence", Ty::Bool, false),
        ],
        "getmempoolentry" => &[("txid", Ty::Str, true)],
        "getrawtransaction" => &[
            ("txid", Ty::Str, true),
            ("verbosity", Ty::Any, false),
            ("blockhash", Ty::Str, false),
        ],
        "sendrawtransaction" => &[
            ("hexstring", Ty::Str, true),
            ("maxfeerate", Ty::Any, false),
            ("maxburnamount", Ty::Any, false),
        ],
        "testmempoolaccept" => &[("rawtxs", Ty::Arr, true), ("maxfeerate", Ty::Any, false)],
        "decoderawtransaction" => &[("hexstring", Ty::Str, true), ("iswitness", Ty::Bool, false)],
        "estimatesmartfee" => &[
            ("conf_target", Ty::Num, true),
            ("estimate_mode", Ty::Str, false),
        ],
        "generatetoaddress" => &[
            ("nblocks", Ty::Num, true),
            ("address", Ty::Str, true),
            ("maxtries", Ty::Num, false),
        ],
        "invalidateblock" | "reconsiderblock" => &[("blockhash", Ty::Str, true)],
        "gettxout" => &[
            ("txid", Ty::Str, true),
            ("n", Ty::Num, true),
            ("include_mempool", Ty::Bool, false),
        ],
        "prioritisetransaction" => &[
            ("txid", Ty::Str, true),
            ("dummy", Ty::Any, false),
            ("fee_delta", Ty::Num, true),
        ],
        _ => return None,
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Positional parameters after named-parameter mapping, count and type checks; optional
/// parameters that are absent come back as `Value::Null`.
fn check_params(method: &str, spec: Spec, params: &Value) -> Result<Vec<Value>, RpcError> {
    let mut positional: Vec<Value> = match params {
        Value::Null => vec![],
        Value::Array(a) => a.clone(),
        Value::Object(o) => {
            let mut out = vec![Value::Null; spec.len()];
            for (k, v) in o {
                let Some(pos) = spec.iter().position(|(n, _, _)| n == k) else {
                    return Err(RpcError::new(-8, format!("Unknown named parameter {k}")));
                };
                out[pos] = v.clone();
            }
            while out.last() == Some(&Value::Null) {
                out.pop();
            }
            out
        }
        _ => {
            return Err(RpcError::new(
                INVALID_REQUEST,
                "Params must be an array or object",
            ));
        }
    };
    let required = spec.iter().filter(|(_, _, r)| *r).count();
    if positional.len() > spec.len() || positional.len() < required {
        let args: Vec<String> = spec
            .iter()
            .map(|(n, _, r)| {
                if *r {
                    format!("\"{n}\"")
                } else {
                    format!("( \"{n}\" )")
                }
            })
            .collect();
        return Err(RpcError::new(-1, format!("{method} {}\n", args.join(" "))));
    }
    let mut errors = Vec::new();
    for (i, (name, ty, req)) in spec.iter().enumerate() {
        let Some(v) = positional.get(i) else { break };
        if v.is_null() && !req {
            continue;
        }
        let ok = match ty {
            Ty::Num => v.is_number(),
            Ty::Str => v.is_string(),
            Ty::Bool => v.is_boolean(),
            Ty::Arr => v.is_array(),
            Ty::Any => true,
        };
        if !ok {
            errors.push(format!(
                "    \"Position {} ({name})\": \"JSON value of type {} is not of expected type {}\"",
                i + 1,
                type_name(v),
                ty.name()
            ));
        }
    }
    if !errors.is_empty() {
        return Err(RpcError::new(
            -3,
            format!("Wrong type passed:\n{{\n{}\n}}", errors.join(",\n")),
        ));
    }
    positional.resize(spec.len(), Value::Null);
    Ok(positional)
}

/// Bitcoin Core's `ParseHashV`.
fn parse_hash<T: FromStr>(v: &Value, name: &str) -> Result<T, RpcError> {
    let s = v.as_str().unwrap_or_default();
    if s.len() != 64 {
        return Err(RpcError::new(
            -8,
            format!("{name} must be of length 64 (not {}, for '{s}')", s.len()),
        ));
    }
    s.parse::<T>()
        .map_err(|_| RpcError::new(-8, format!("{name} must be hexadecimal string (not '{s}')")))
}

fn int(v: &Value) -> Result<i64, RpcError> {
    v.as_i64()
        .ok_or_else(|| RpcError::new(-3, "JSON integer out of range"))
}

/// `ParseVerbosity`: number, or bool (true = 1) when allowed.
fn verbosity(v: &Value, default: i64) -> Result<i64, RpcError> {
    match v {
        Value::Null => Ok(default),
        Value::Bool(b) => Ok(i64::from(*b)),
        Value::Number(_) => int(v),
        other => Err(RpcError::new(
            -3,
            format!(
                "JSON value of type {} is not of expected type number",
                type_name(other)
            ),
        )),
    }
}

fn block_not_found() -> RpcError {
    RpcError::new(-5, "Block not found")
}

/// Runs one JSON-RPC method against the node.
pub(crate) fn call(node: &mut Node, method: &str, params: &Value) -> Result<Value, RpcError> {
    let Some(spec) = spec(method) else {
        return Err(RpcError::new(METHOD_NOT_FOUND, "Method not found"));
    };
    let p = check_params(method, spec, params)?;
    match method {
        "ping" => Ok(Value::Null),
        "uptime" => Ok(json!(0)),
        "getblockchaininfo" => Ok(blockchain_info(node)),
        "getnetworkinfo" => Ok(network_info()),
        "getblockcount" => Ok(json!(node.tip_height())),
        "getbestblockhash" => Ok(json!(node.tip_hash().to_string())),
        "getblockhash" => {
            let h = int(&p[0])?;
            if h < 0 || h > i64::from(node.tip_height()) {
                return Err(RpcError::new(-8, "Block height out of range"));
            }
            Ok(json!(node.active[h as usize].to_string()))
        }
        "getblockheader" => {
            let hash: BlockHash = parse_hash(&p[0], "blockhash")?;
            let entry = node.blocks.get(&hash).ok_or_else(block_not_found)?;
            if p[1].as_bool().unwrap_or(true) {
                Ok(header_json(node, &hash))
            } else {
                Ok(json!(serialize_hex(&entry.block.header)))
            }
        }
        "getblock" => {
            let hash: BlockHash = parse_hash(&p[0], "blockhash")?;
            let v = verbosity(&p[1], 1)?;
            let entry = node.blocks.get(&hash).ok_or_else(block_not_found)?;
            if node.pruned.contains(&hash) {
                return Err(RpcError::new(-1, "Block not available (pruned data)"));
            }
            if v <= 0 {
                Ok(json!(serialize_hex(&entry.block)))
            } else {
                Ok(block_json(node, &hash, v.min(3) as u8))
            }
        }
        "getchaintips" => Ok(chain_tips(node)),
        "getrawmempool" => {
            let verbose = p[0].as_bool().unwrap_or(false);
            let sequence = p[1].as_bool().unwrap_or(false);
            if verbose && sequence {
                return Err(RpcError::new(
                    -8,
                    "Verbose results cannot contain mempool sequence values.",
                ));
            }
            let ids: Vec<Value> = node
                .mempool_txids()
                .iter()
                .map(|t| json!(t.to_string()))
                .collect();
            if verbose {
                let mut m = Map::new();
                for t in node.mempool_txids() {
                    m.insert(t.to_string(), mempool_entry_json(node, t));
                }
                Ok(Value::Object(m))
            } else if sequence {
                Ok(json!({"txids": ids, "mempool_sequence": ids.len()}))
            } else {
                Ok(Value::Array(ids))
            }
        }
        "getmempoolentry" => {
            let txid: Txid = parse_hash(&p[0], "parameter 1")?;
            if !node.mempool.contains_key(&txid) {
                return Err(RpcError::new(-5, "Transaction not in mempool"));
            }
            Ok(mempool_entry_json(node, &txid))
        }
        "getmempoolinfo" => Ok(mempool_info(node)),
        "getrawtransaction" => get_raw_transaction(node, &p),
        "sendrawtransaction" => {
            let tx = decode_tx(&p[0])?;
            let max_rate = fee_rate_sat_per_kvb(&p[1], DEFAULT_MAX_FEE_RATE_SAT_PER_KVB)?;
            let txid = node.send_raw_transaction(tx, max_rate)?;
            Ok(json!(txid.to_string()))
        }
        "decoderawtransaction" => {
            let tx = decode_tx(&p[0])?;
            Ok(tx_json(node.flavor, &tx, None, None, false))
        }
        "testmempoolaccept" => {
            let raws = p[0].as_array().cloned().unwrap_or_default();
            if raws.is_empty() || raws.len() > 25 {
                return Err(RpcError::new(
                    -8,
                    "Array must contain between 1 and 25 transactions.",
                ));
            }
            let mut out = Vec::new();
            for raw in &raws {
                let tx = decode_tx(raw)?;
                out.push(test_accept(node, &tx));
            }
            Ok(Value::Array(out))
        }
        "estimatesmartfee" => {
            let target = int(&p[0])?;
            if !(1..=1008).contains(&target) {
                return Err(RpcError::new(
                    -8,
                    "Invalid conf_target, must be between 1 and 1008",
                ));
            }
            if let Some(mode) = p[1].as_str()
                && !["unset", "economical", "conservative"]
                    .contains(&mode.to_ascii_lowercase().as_str())
            {
                return Err(RpcError::new(
                    -8,
                    "Invalid estimate_mode parameter, must be one of: \"unset\", \"economical\", \"conservative\"",
                ));
            }
            Ok(json!({"errors": ["Insufficient data or no feerate found"], "blocks": 0}))
        }
        "generatetoaddress" => {
            let n = int(&p[0])?;
            let script = parse_address(node.flavor, p[1].as_str().unwrap_or_default())
                .ok_or_else(|| RpcError::new(-5, "Error: Invalid address"))?;
            let n = u64::try_from(n).unwrap_or(0).min(GENERATE_BLOCKS_MAX);
            let hashes = node.generate(n, &script);
            Ok(Value::Array(
                hashes.iter().map(|h| json!(h.to_string())).collect(),
            ))
        }
        "invalidateblock" | "reconsiderblock" => {
            let hash: BlockHash = parse_hash(&p[0], "blockhash")?;
            if !node.blocks.contains_key(&hash) {
                return Err(block_not_found());
            }
            if method == "invalidateblock" {
                node.invalidate(hash);
            } else {
                node.reconsider(hash);
            }
            Ok(Value::Null)
        }
        "gettxout" => {
            let txid: Txid = parse_hash(&p[0], "txid")?;
            let n = int(&p[1])?;
            let include_mempool = p[2].as_bool().unwrap_or(true);
            let op = OutPoint {
                txid,
                vout: u32::try_from(n).unwrap_or(u32::MAX),
            };
            if include_mempool && node.mempool_spender(&op).is_some() {
                return Ok(Value::Null);
            }
            let Some(coin) = node.coin(&op, include_mempool) else {
                return Ok(Value::Null);
            };
            let confirmations = if node.mempool.contains_key(&txid) {
                0
            } else {
                node.tip_height() - coin.height + 1
            };
            Ok(json!({
                "bestblock": node.tip_hash().to_string(),
                "confirmations": confirmations,
                "value": btc(coin.txout.value),
                "scriptPubKey": script_pubkey_json(node.flavor, &coin.txout.script_pubkey),
                "coinbase": coin.coinbase,
            }))
        }
        "prioritisetransaction" => {
            let txid: Txid = parse_hash(&p[0], "txid")?;
            if !p[1].is_null() && p[1].as_f64() != Some(0.0) {
                return Err(RpcError::new(
                    -8,
                    "Priority is no longer supported, dummy argument to prioritisetransaction must be 0.",
                ));
            }
            let delta = int(&p[2])?;
            *node.fee_deltas.entry(txid).or_insert(0) += delta;
            Ok(json!(true))
        }
        _ => Err(RpcError::new(METHOD_NOT_FOUND, "Method not found")),
    }
}

/// `sendrawtransaction`'s default `maxfeerate`: 0.10 BTC/kvB.
const DEFAULT_MAX_FEE_RATE_SAT_PER_KVB: u64 = 10_000_000;

/// A BTC/kvB fee rate given as a JSON number or string, in sat/kvB (0 = no limit).
fn fee_rate_sat_per_kvb(v: &Value, default: u64) -> Result<u64, RpcError> {
    let text = match v {
        Value::Null => return Ok(default),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return Err(RpcError::new(-3, "Amount is not a number or string")),
    };
    Amount::from_str_in(&text, bitcoin::Denomination::Bitcoin)
        .map(|a| a.to_sat())
        .map_err(|_| RpcError::new(-3, "Invalid amount"))
}

fn decode_tx(v: &Value) -> Result<Transaction, RpcError> {
    let err = || {
        RpcError::new(
            -22,
            "TX decode failed. Make sure the tx has at least one input.",
        )
    };
    let bytes = hex::decode(v.as_str().unwrap_or_default()).map_err(|_| err())?;
    let tx: Transaction = deserialize(&bytes).map_err(|_| err())?;
    if tx.input.is_empty() {
        return Err(err());
    }
    Ok(tx)
}

/// Output script of a regtest address for this flavor.
pub(crate) fn parse_address(flavor: Flavor, s: &str) -> Option<ScriptBuf> {
    match flavor {
        Flavor::Bitcoin => {
            let a = Address::from_str(s)
                .ok()?
                .require_network(bitcoin::Network::Regtest)
                .ok()?;
            Some(a.script_pubkey())
        }
        Flavor::Dash => {
            let data = base58::decode_check(s).ok()?;
            if data.len() != 21 {
                return None;
            }
            let hash: [u8; 20] = data[1..].try_into().ok()?;
            match data[0] {
                DASH_REGTEST_P2PKH => Some(ScriptBuf::new_p2pkh(
                    &bitcoin::PubkeyHash::from_byte_array(hash),
                )),
                DASH_REGTEST_P2SH => Some(ScriptBuf::new_p2sh(
                    &bitcoin::ScriptHash::from_byte_array(hash),
                )),
                _ => None,
            }
        }
    }
}

/// `getblockchaininfo` (also REST `chaininfo.json`).
pub(crate) fn blockchain_info(node: &Node) -> Value {
    let tip = node.tip();
    let h = &tip.block.header;
    json!({
        "chain": "regtest",
        "blocks": node.tip_height(),
        "headers": node.tip_height(),
        "bestblockhash": node.tip_hash().to_string(),
        "bits": format!("{REGTEST_BITS:08x}"),
        "target": hex::encode(h.target().to_be_bytes()),
        "difficulty": crate::json::difficulty(h.bits.to_consensus()),
        "time": h.time,
        "mediantime": tip.median_time,
        "verificationprogress": 1,
        "initialblockdownload": node.tip_height() == 0,
        "chainwork": hex::encode(tip.chainwork.to_be_bytes()),
        "size_on_disk": node.size_on_disk,
        "pruned": !node.pruned.is_empty(),
        "warnings": ["This is coinhub-bitcoind-double, a regtest node double - not Bitcoin Core"],
    })
}

fn network_info() -> Value {
    let net = |name: &str| json!({"name": name, "limited": false, "reachable": true, "proxy": "", "proxy_randomize_credentials": false});
    json!({
        "version": 319900,
        "subversion": "/Satoshi:31.99.0(coinhub-bitcoind-double)/",
        "protocolversion": 70017,
        "localservices": "0000000000000c09",
        "localservicesnames": ["NETWORK", "WITNESS", "NETWORK_LIMITED", "P2P_V2"],
        "localrelay": true,
        "timeoffset": 0,
        "networkactive": true,
        "connections": 0,
        "connections_in": 0,
        "connections_out": 0,
        "networks": [net("ipv4"), net("ipv6"), net("onion"), net("i2p"), net("cjdns")],
        "relayfee": btc(Amount::from_sat(RELAY_FEE_SAT_PER_KVB)),
        "incrementalfee": btc(Amount::from_sat(RELAY_FEE_SAT_PER_KVB)),
        "localaddresses": [],
        "warnings": ["This is coinhub-bitcoind-double, a regtest node double - not Bitcoin Core"],
    })
}

fn chain_tips(node: &Node) -> Value {
    let mut has_child = std::collections::HashSet::new();
    for e in node.blocks.values() {
        if e.height > 0 {
            has_child.insert(e.block.header.prev_blockhash);
        }
    }
    let mut tips: Vec<(&BlockHash, u32)> = node
        .blocks
        .iter()
        .filter(|(h, _)| !has_child.contains(*h) || **h == node.tip_hash())
        .map(|(h, e)| (h, e.height))
        .collect();
    tips.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let out: Vec<Value> = tips
        .into_iter()
        .map(|(hash, height)| {
            let e = &node.blocks[hash];
            let mut cursor = *hash;
            while !node.is_active(&cursor) {
                cursor = node.blocks[&cursor].block.header.prev_blockhash;
            }
            let branchlen = height - node.blocks[&cursor].height;
            let status = if node.is_active(hash) {
                "active"
            } else if e.invalid {
                "invalid"
            } else if e.undo.is_some() {
                "valid-fork"
            } else {
                "valid-headers"
            };
            json!({"height": height, "hash": hash.to_string(), "branchlen": branchlen, "status": status})
        })
        .collect();
    Value::Array(out)
}

fn mempool_entry_json(node: &Node, txid: &Txid) -> Value {
    let e = &node.mempool[txid];
    let delta = node.fee_deltas.get(txid).copied().unwrap_or(0);
    let sum = |ids: &[Txid]| -> (u64, u64, i64) {
        ids.iter().fold((0, 0, 0), |(vs, w, f), t| {
            let m = &node.mempool[t];
            let d = node.fee_deltas.get(t).copied().unwrap_or(0);
            (
                vs + m.tx.vsize() as u64,
                w + m.tx.weight().to_wu(),
                f + m.fee.to_sat() as i64 + d,
            )
        })
    };
    let ancestors = node.ancestors(txid);
    let descendants = node.descendants(txid);
    let (anc_size, _, anc_fee) = sum(&ancestors);
    let (desc_size, _, desc_fee) = sum(&descendants);
    let mut cluster = ancestors.clone();
    for d in &descendants {
        if !cluster.contains(d) {
            cluster.push(*d);
        }
    }
    let (_, chunk_weight, chunk_fee) = sum(&cluster);
    let depends: Vec<Value> =
        e.tx.input
            .iter()
            .filter(|i| node.mempool.contains_key(&i.previous_output.txid))
            .map(|i| json!(i.previous_output.txid.to_string()))
            .collect();
    let spentby: Vec<Value> = (0..e.tx.output.len())
        .filter_map(|v| {
            node.mempool_spender(&OutPoint {
                txid: *txid,
                vout: v as u32,
            })
        })
        .map(|t| json!(t.to_string()))
        .collect();
    json!({
        "vsize": e.tx.vsize(),
        "weight": e.tx.weight().to_wu(),
        "time": e.time,
        "height": e.height,
        "descendantcount": descendants.len(),
        "descendantsize": desc_size,
        "ancestorcount": ancestors.len(),
        "ancestorsize": anc_size,
        "wtxid": e.tx.compute_wtxid().to_string(),
        "chunkweight": chunk_weight,
        "fees": {
            "base": btc(e.fee),
            "modified": btc_signed(e.fee.to_sat() as i64 + delta),
            "ancestor": btc_signed(anc_fee),
            "descendant": btc_signed(desc_fee),
            "chunk": btc_signed(chunk_fee),
        },
        "depends": depends,
        "spentby": spentby,
        "unbroadcast": true,
    })
}

fn mempool_info(node: &Node) -> Value {
    let bytes: u64 = node.mempool.values().map(|e| e.tx.vsize() as u64).sum();
    let fees: Amount = node.mempool.values().map(|e| e.fee).sum();
    let relay = btc(Amount::from_sat(RELAY_FEE_SAT_PER_KVB));
    json!({
        "loaded": true,
        "size": node.mempool.len(),
        "bytes": bytes,
        "usage": bytes * 6,
        "total_fee": btc(fees),
        "maxmempool": 300_000_000,
        "mempoolminfee": relay,
        "minrelaytxfee": relay,
        "incrementalrelayfee": relay,
        "unbroadcastcount": node.mempool.len(),
        "permitbaremultisig": true,
        "maxdatacarriersize": 100_000,
        "limitclustercount": 64,
        "limitclustersize": 101_000,
        "optimal": true,
    })
}

fn test_accept(node: &Node, tx: &Transaction) -> Value {
    let txid = tx.compute_txid();
    let wtxid = tx.compute_wtxid();
    let already = (0..tx.output.len()).any(|v| {
        node.coin(
            &OutPoint {
                txid,
                vout: v as u32,
            },
            false,
        )
        .is_some()
    });
    let result = if already {
        Err(Reject {
            code: -27,
            message: "txn-already-known".to_owned(),
            reason: "txn-already-known".to_owned(),
        })
    } else {
        node.check_tx(tx, false)
    };
    match result {
        Ok(acc) => {
            let vsize = tx.vsize() as u64;
            let rate = Amount::from_sat(acc.fee.to_sat() * 1000 / vsize.max(1));
            json!({
                "txid": txid.to_string(),
                "wtxid": wtxid.to_string(),
                "allowed": true,
                "vsize": vsize,
                "fees": {
                    "base": btc(acc.fee),
                    "effective-feerate": btc(rate),
                    "effective-includes": [wtxid.to_string()],
                },
            })
        }
        Err(r) => {
            let mut m = Map::new();
            m.insert("txid".into(), json!(txid.to_string()));
            m.insert("wtxid".into(), json!(wtxid.to_string()));
            m.insert("allowed".into(), json!(false));
            m.insert("reject-reason".into(), json!(r.reason));
            if r.reason != "missing-inputs" {
                m.insert("reject-details".into(), json!(r.message));
            }
            Value::Object(m)
        }
    }
}

fn get_raw_transaction(node: &Node, p: &[Value]) -> Result<Value, RpcError> {
    let txid: Txid = parse_hash(&p[0], "parameter 1")?;
    let v = verbosity(&p[1], 0)?;
    let (tx, block): (Transaction, Option<BlockHash>) = if !p[2].is_null() {
        let hash: BlockHash = parse_hash(&p[2], "parameter 3")?;
        let entry = node
            .blocks
            .get(&hash)
            .ok_or_else(|| RpcError::new(-5, "Block hash not found"))?;
        let tx = entry.block.txdata.iter().find(|t| t.compute_txid() == txid).cloned().ok_or_else(|| {
            RpcError::new(
                -5,
                "No such transaction found in the provided block. Use gettransaction for wallet transactions.",
            )
        })?;
        (tx, Some(hash))
    } else if let Some(e) = node.mempool.get(&txid) {
        (e.tx.clone(), None)
    } else if let Some(hash) = node.tx_block(&txid) {
        let tx = node.blocks[&hash]
            .block
            .txdata
            .iter()
            .find(|t| t.compute_txid() == txid)
            .cloned()
            .expect("the tx index points at the block holding the tx");
        (tx, Some(hash))
    } else {
        return Err(RpcError::new(
            -5,
            "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.",
        ));
    };
    if v <= 0 {
        return Ok(json!(serialize_hex(&tx)));
    }
    let mut fee = None;
    let mut prevouts = None;
    if let (Some(hash), true) = (block, v >= 2) {
        let e = &node.blocks[&hash];
        let index = e
            .block
            .txdata
            .iter()
            .position(|t| t.compute_txid() == txid)
            .expect("found above");
        if let (Some(undo), false) = (e.undo.as_ref(), tx.is_coinbase()) {
            let coins = &undo[index];
            let input: Amount = coins.iter().map(|c| c.txout.value).sum();
            let output: Amount = tx.output.iter().map(|o| o.value).sum();
            fee = input.checked_sub(output);
            prevouts = Some(coins.clone());
        }
    }
    let Value::Object(body) = tx_json(node.flavor, &tx, fee, prevouts.as_deref(), true) else {
        unreachable!("tx_json returns an object")
    };
    let mut m = Map::new();
    if !p[2].is_null() {
        m.insert(
            "in_active_chain".into(),
            json!(block.is_some_and(|h| node.is_active(&h))),
        );
    }
    m.extend(body);
    if let Some(hash) = block {
        m.insert("blockhash".into(), json!(hash.to_string()));
        if node.is_active(&hash) {
            let t = node.blocks[&hash].block.header.time;
            m.insert("confirmations".into(), json!(node.confirmations(&hash)));
            m.insert("time".into(), json!(t));
            m.insert("blocktime".into(), json!(t));
        } else {
            m.insert("confirmations".into(), json!(0));
        }
    }
    Ok(Value::Object(m))
}
