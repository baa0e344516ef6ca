//! Wire types: the JSON that Bitcoin Core (and Dash Core) send and receive, field for field.
//!
//! These structs mirror the node's field names (`bestblockhash`, `nTx`, `versionHex`, ...)
//! and keep its encodings (hashes as hex text, BTC amounts as JSON numbers). They are parsed
//! and validated into the domain types of [`super::types`] by the client; nothing outside
//! [`super`] should need them except to call an RPC the client does not wrap.
//!
//! Unknown fields are ignored, so newer nodes that add fields still parse. Fields that only
//! some versions (or only Bitcoin Core, not Dash Core) send are `Option`s.

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

/// One JSON-RPC request object, as sent (alone or inside a batch array).
///
/// We send `"jsonrpc": "1.0"`, which every Bitcoin Core and Dash Core version accepts;
/// replies are parsed whichever version the node answers with (see [`Response`]).
#[derive(Debug, Clone, Serialize)]
pub struct Request<'a> {
    /// Protocol version marker, always `"1.0"`.
    pub jsonrpc: &'static str,
    /// Request id, echoed by the node; used to match batch replies.
    pub id: u64,
    /// RPC method name, e.g. `"getblockhash"`.
    pub method: &'a str,
    /// Positional parameters.
    pub params: &'a [Value],
}

/// One JSON-RPC reply object.
///
/// JSON-RPC 1.0 (legacy) replies always carry both `result` and `error` (one of them `null`)
/// and come with HTTP 200 on success, HTTP 500 (or 404 for an unknown method) on error.
/// JSON-RPC 2.0 replies (Bitcoin Core ≥ 28 when asked for 2.0) carry only one of the two and
/// always come with HTTP 200.
#[derive(Debug, Clone, Deserialize)]
pub struct Response {
    /// The result; `null` or absent on error.
    #[serde(default)]
    pub result: Value,
    /// The error; `null` or absent on success.
    #[serde(default)]
    pub error: Option<ErrorObject>,
    /// The request's id (`null` when the node could not parse the request).
    #[serde(default)]
    pub id: Value,
}

/// The `error` member of a reply: Bitcoin Core's `RPCErrorCode` and its message
/// (`src/rpc/protocol.h`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ErrorObject {
    /// Error code, e.g. -5 (not found), -8 (invalid parameter), -28 (warming up).
    pub code: i32,
    /// Human-readable message from the node.
    pub message: String,
}

/// `warnings`: a string before Bitcoin Core 28 (and on Dash Core), an array since.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Warnings {
    /// Older nodes: one string, empty when there is no warning.
    Text(String),
    /// Bitcoin Core ≥ 28: one string per warning.
    List(Vec<String>),
}

impl Warnings {
    /// The warnings as a list, without empty strings.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::Text(text) if text.is_empty() => Vec::new(),
            Self::Text(text) => vec![text],
            Self::List(list) => list.into_iter().filter(|w| !w.is_empty()).collect(),
        }
    }
}

/// `getblockchaininfo` result
/// (<https://bitcoincore.org/en/doc/latest/rpc/blockchain/getblockchaininfo/>).
#[derive(Debug, Clone, Deserialize)]
pub struct BlockchainInfo {
    /// `main`, `test`, `testnet4`, `signet` or `regtest`.
    pub chain: String,
    /// Height of the best validated block.
    pub blocks: u64,
    /// Height of the best known header.
    pub headers: u64,
    /// Hash of the best validated block (hex, RPC byte order).
    pub bestblockhash: String,
    /// Median time past of the best block, Unix seconds.
    pub mediantime: u64,
    /// Estimated verification progress, 0..=1 (not money; a float is fine).
    pub verificationprogress: f64,
    /// Whether the node is in initial block download.
    pub initialblockdownload: bool,
    /// Total work in the active chain, hex.
    pub chainwork: String,
    /// Whether the node prunes old blocks.
    pub pruned: bool,
    /// Lowest height with a stored block, only when pruned.
    #[serde(default)]
    pub pruneheight: Option<u64>,
    /// Node warnings.
    #[serde(default)]
    pub warnings: Option<Warnings>,
}

/// `getnetworkinfo` result
/// (<https://bitcoincore.org/en/doc/latest/rpc/network/getnetworkinfo/>).
#[derive(Debug, Clone, Deserialize)]
pub struct NetworkInfo {
    /// Node version as an integer, e.g. 280100 for 28.1.0.
    pub version: u64,
    /// User agent, e.g. `/Satoshi:28.1.0/`.
    pub subversion: String,
    /// P2P protocol version.
    pub protocolversion: u64,
    /// Number of peer connections.
    pub connections: u64,
    /// Whether P2P networking is enabled.
    pub networkactive: bool,
    /// Minimum relay fee, BTC per 1000 virtual bytes (JSON number).
    pub relayfee: Number,
    /// Minimum fee rate increment for replacement, BTC per 1000 virtual bytes.
    #[serde(default)]
    pub incrementalfee: Option<Number>,
    /// Node warnings.
    #[serde(default)]
    pub warnings: Option<Warnings>,
}

/// `getblockheader <hash> true` result
/// (<https://bitcoincore.org/en/doc/latest/rpc/blockchain/getblockheader/>).
#[derive(Debug, Clone, Deserialize)]
pub struct BlockHeader {
    /// Block hash (hex, RPC byte order).
    pub hash: String,
    /// Confirmations: 1 for the tip, more below it, **-1 when the block is not on the best
    /// chain** (stale or invalidated).
    pub confirmations: i64,
    /// Height.
    pub height: u64,
    /// Header version.
    pub version: i32,
    /// Merkle root (hex).
    pub merkleroot: String,
    /// Header time, Unix seconds.
    pub time: u64,
    /// Median time past, Unix seconds.
    pub mediantime: u64,
    /// Nonce.
    pub nonce: u32,
    /// Compact target, hex (e.g. `207fffff`).
    pub bits: String,
    /// Total chain work up to this block, hex.
    pub chainwork: String,
    /// Number of transactions in the block.
    #[serde(rename = "nTx")]
    pub n_tx: u64,
    /// Parent hash; absent for the genesis block.
    #[serde(default)]
    pub previousblockhash: Option<String>,
    /// Next block on the best chain; absent at the tip and for stale blocks.
    #[serde(default)]
    pub nextblockhash: Option<String>,
}

/// `getrawtransaction <txid> 1` result
/// (<https://bitcoincore.org/en/doc/latest/rpc/rawtransactions/getrawtransaction/>), the
/// fields Coinhub reads; inputs and outputs are taken from `hex`.
#[derive(Debug, Clone, Deserialize)]
pub struct RawTransactionVerbose {
    /// Transaction id (hex).
    pub txid: String,
    /// The serialized transaction (hex).
    pub hex: String,
    /// Containing block, absent while in the mempool.
    #[serde(default)]
    pub blockhash: Option<String>,
    /// Confirmations of the containing block, absent while in the mempool.
    #[serde(default)]
    pub confirmations: Option<i64>,
    /// Containing block's time, Unix seconds.
    #[serde(default)]
    pub blocktime: Option<u64>,
}

/// `estimatesmartfee` result
/// (<https://bitcoincore.org/en/doc/latest/rpc/util/estimatesmartfee/>).
#[derive(Debug, Clone, Deserialize)]
pub struct EstimateSmartFee {
    /// Estimated fee rate, BTC per 1000 virtual bytes; absent when the node has no data.
    #[serde(default)]
    pub feerate: Option<Number>,
    /// Why no estimate was possible (e.g. `Insufficient data or no feerate found`).
    #[serde(default)]
    pub errors: Option<Vec<String>>,
    /// Confirmation target (blocks) the estimate is for.
    pub blocks: u32,
}

/// `gettxout <txid> <n> <include_mempool>` result
/// (<https://bitcoincore.org/en/doc/latest/rpc/blockchain/gettxout/>); the node answers
/// `null` instead for an output that is unknown or spent.
#[derive(Debug, Clone, Deserialize)]
pub struct TxOut {
    /// Hash of the node's best block when it answered.
    pub bestblock: String,
    /// Confirmations of the transaction holding the output; 0 while it is in the mempool.
    pub confirmations: u64,
    /// The output's value, BTC (DASH) as a JSON number.
    pub value: Number,
    /// The output's script.
    #[serde(rename = "scriptPubKey")]
    pub script_pub_key: ScriptPubKey,
    /// Whether the output is a coinbase output.
    #[serde(default)]
    pub coinbase: bool,
}

/// A `scriptPubKey` object as the node writes it (only `hex` is read; `asm`, `desc`,
/// `address`, `type` differ between Bitcoin Core and Dash Core versions).
#[derive(Debug, Clone, Deserialize)]
pub struct ScriptPubKey {
    /// The script, hex.
    pub hex: String,
    /// The script type, e.g. `scripthash`, `witness_v0_scripthash`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}
