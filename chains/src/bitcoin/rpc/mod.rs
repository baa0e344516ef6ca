//! Async client for Bitcoin Core's JSON-RPC and REST interfaces (Dash Core has the same
//! shape for everything used here).
//!
//! - JSON-RPC over HTTP POST (<https://github.com/bitcoin/bitcoin/blob/master/doc/JSON-RPC-interface.md>),
//!   with user/password or cookie-file basic auth ([`Auth`]); batches are one HTTP request
//!   with an array body, replies matched by id ([`BitcoinRpc::call_batch`]).
//! - REST `GET /rest/block/<hash>.bin` for raw blocks
//!   (<https://github.com/bitcoin/bitcoin/blob/master/doc/REST-interface.md>), falling back
//!   to `getblock <hash> 0` when REST is off ([`BitcoinRpc::get_block_raw`]).
//! - Every call has a timeout ([`RpcConfig::timeout_ms`]) and a reply size limit.
//! - Errors are typed by Bitcoin Core's error codes and HTTP status ([`RpcError`]); -28
//!   ("warming up", node starting) is waited out with bounded backoff.
//!
//! Replies are parsed into the node's own field names ([`wire`]) and then converted into
//! domain types ([`types`]): `bitcoin::BlockHash` / `Txid`, `bitcoin::Amount`, bytes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), coinhub_chains::bitcoin::rpc::RpcError> {
//! use coinhub_chains::bitcoin::rpc::{Auth, BitcoinRpc, RpcConfig};
//! let rpc = BitcoinRpc::new(RpcConfig::new(
//!     "http://127.0.0.1:18443",
//!     Auth::CookieFile("/var/lib/bitcoind/regtest/.cookie".into()),
//! ))?;
//! let tip = rpc.get_block_count().await?;
//! let hash = rpc.get_block_hash(tip).await?;
//! let raw_block = rpc.get_block_raw(&hash).await?;
//! # let _ = raw_block; Ok(()) }
//! ```

mod error;
pub mod types;
pub mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ::bitcoin::hex::{DisplayHex, FromHex};
use ::bitcoin::{BlockHash, OutPoint, ScriptBuf, Txid};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use error::{
    RPC_IN_WARMUP, RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER, RPC_METHOD_NOT_FOUND,
    RPC_VERIFY_ALREADY_IN_CHAIN, RPC_VERIFY_ERROR, RPC_VERIFY_REJECTED, RpcError,
};
pub use types::{
    BatchCall, BlockHeaderInfo, Broadcast, ChainInfo, EstimateMode, FeeEstimate, NetworkInfo,
    TransactionInfo, UnspentOutput,
};

use types::btc_number_to_amount;

/// How the client authenticates (HTTP basic auth, as Bitcoin Core's `rpcauth`/`rpcuser` and
/// cookie file expect).
#[derive(Debug, Clone)]
pub enum Auth {
    /// `rpcuser`/`rpcpassword` or an `rpcauth` entry.
    UserPass {
        /// User name.
        user: String,
        /// Password; never logged or put in an error.
        password: SecretString,
    },
    /// The node's cookie file (`<datadir>/<chain>/.cookie`, one line `__cookie__:<password>`).
    /// Read at the first call and re-read whenever the node answers 401, because the node
    /// writes a new cookie every time it starts.
    CookieFile(PathBuf),
}

/// Client settings. Build with [`RpcConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// Base URL of the node's RPC port, e.g. `http://127.0.0.1:8332` (no path, no
    /// credentials in it). REST uses the same port.
    pub url: String,
    /// Credentials.
    pub auth: Auth,
    /// Limit on every HTTP exchange (connect, send, receive), milliseconds. Default 30 000.
    pub timeout_ms: u64,
    /// Most calls made while the node answers -28 (warming up), the first included; then
    /// [`RpcError::WarmingUp`]. Default 20.
    pub warmup_attempts_max: u32,
    /// First wait after a -28, milliseconds; doubled after each further -28. Default 250.
    pub warmup_backoff_initial_ms: u64,
    /// Longest wait between -28 retries, milliseconds. Default 5 000.
    pub warmup_backoff_max_ms: u64,
    /// Most calls per HTTP request in [`BitcoinRpc::call_batch`]; longer batches are sent as
    /// several requests. Default 100.
    pub batch_size_max: usize,
    /// Largest reply body accepted, bytes (a raw 4 MB block is 8 MB as hex). Default 32 MiB.
    pub response_bytes_max: usize,
}

impl RpcConfig {
    /// Settings for the node at `url` with the defaults documented on each field.
    pub fn new(url: impl Into<String>, auth: Auth) -> Self {
        Self {
            url: url.into(),
            auth,
            timeout_ms: 30_000,
            warmup_attempts_max: 20,
            warmup_backoff_initial_ms: 250,
            warmup_backoff_max_ms: 5_000,
            batch_size_max: 100,
            response_bytes_max: 32 * 1024 * 1024,
        }
    }
}

/// Basic-auth credentials currently in use.
#[derive(Clone)]
struct Credentials {
    user: String,
    password: SecretString,
}

/// An HTTP reply: status and body.
struct HttpReply {
    status: u16,
    body: Vec<u8>,
}

/// Async client of one Bitcoin Core or Dash Core node. Cheap to share behind an `Arc`;
/// calls may run concurrently.
pub struct BitcoinRpc {
    http: reqwest::Client,
    /// Base URL without trailing slash.
    base_url: String,
    /// `host:port`, used in errors and logs.
    node: String,
    auth: Auth,
    credentials: RwLock<Option<Credentials>>,
    next_id: AtomicU64,
    /// Set once a REST 404/403 was followed by a successful `getblock`: REST is off.
    rest_disabled: AtomicBool,
    config: RpcConfig,
}

impl std::fmt::Debug for BitcoinRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitcoinRpc")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl BitcoinRpc {
    /// A client for the node in `config`. Does no I/O (the cookie file is read at the first
    /// call).
    ///
    /// Errors: [`RpcError::InvalidConfig`] for a URL that is not `http(s)://host[:port]`, that
    /// carries credentials, or zero limits.
    pub fn new(config: RpcConfig) -> Result<Self, RpcError> {
        let invalid = |reason: String| RpcError::InvalidConfig { reason };
        let url = url::Url::parse(&config.url)
            .map_err(|e| invalid(format!("node url is not a url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "node url scheme {} is not http(s)",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "node url must not contain credentials; use auth".into(),
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| invalid("node url has no host".into()))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| invalid("node url has no port".into()))?;
        if config.timeout_ms == 0 || config.batch_size_max == 0 || config.response_bytes_max == 0 {
            return Err(invalid(
                "timeout_ms, batch_size_max and response_bytes_max must be > 0".into(),
            ));
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| invalid(format!("http client: {e}")))?;
        let credentials = match &config.auth {
            Auth::UserPass { user, password } => Some(Credentials {
                user: user.clone(),
                password: password.clone(),
            }),
            Auth::CookieFile(_) => None,
        };
        Ok(Self {
            http,
            base_url: config.url.trim_end_matches('/').to_owned(),
            node: format!("{host}:{port}"),
            auth: config.auth.clone(),
            credentials: RwLock::new(credentials),
            next_id: AtomicU64::new(1),
            rest_disabled: AtomicBool::new(false),
            config,
        })
    }

    /// `host:port` of the node, as errors name it.
    pub fn node(&self) -> &str {
        &self.node
    }

    // ----- typed methods -------------------------------------------------------------------

    /// `getblockchaininfo`: chain name, heights, best block, IBD and pruning state.
    /// (<https://bitcoincore.org/en/doc/latest/rpc/blockchain/getblockchaininfo/>)
    pub async fn get_blockchain_info(&self) -> Result<ChainInfo, RpcError> {
        const M: &str = "getblockchaininfo";
        let w: wire::BlockchainInfo = self.call(M, &[]).await?;
        Ok(ChainInfo {
            best_block_hash: self.parse_hash(M, &w.bestblockhash)?,
            chain: w.chain,
            blocks: w.blocks,
            headers: w.headers,
            median_time_s: w.mediantime,
            verification_progress: w.verificationprogress,
            initial_block_download: w.initialblockdownload,
            pruned: w.pruned,
            prune_height: w.pruneheight,
            warnings: w.warnings.map(wire::Warnings::into_vec).unwrap_or_default(),
        })
    }

    /// `getnetworkinfo`: node version, connections, relay fee.
    /// (<https://bitcoincore.org/en/doc/latest/rpc/network/getnetworkinfo/>)
    pub async fn get_network_info(&self) -> Result<NetworkInfo, RpcError> {
        const M: &str = "getnetworkinfo";
        let w: wire::NetworkInfo = self.call(M, &[]).await?;
        Ok(NetworkInfo {
            relay_fee_per_kvb: self.parse_amount(M, &w.relayfee)?,
            incremental_fee_per_kvb: w
                .incrementalfee
                .as_ref()
                .map(|fee| self.parse_amount(M, fee))
                .transpose()?,
            version: w.version,
            subversion: w.subversion,
            protocol_version: w.protocolversion,
            connections: w.connections,
            network_active: w.networkactive,
            warnings: w.warnings.map(wire::Warnings::into_vec).unwrap_or_default(),
        })
    }

    /// `getblockcount`: height of the best validated block.
    /// (<https://bitcoincore.org/en/doc/latest/rpc/blockchain/getblockcount/>)
    pub async fn get_block_count(&self) -> Result<u64, RpcError> {
        self.call("getblockcount", &[]).await
    }

    /// `getblockhash <height>`: hash of the best chain's block at `height`.
    /// (<https://bitcoincore.org/en/doc/latest/rpc/blockchain/getblockhash/>)
    ///
    /// Errors: [`RpcError::InvalidParameter`] (-8 `Block height out of range`) above the tip.
    pub async fn get_block_hash(&self, height: u64) -> Result<BlockHash, RpcError> {
        const M: &str = "getblockhash";
        let text: String = self.call(M, &[json!(height)]).await?;
        self.parse_hash(M, &text)
    }

    /// `getblockheader <hash> true`: the header with its height and confirmations
    /// (-1 when not on the best chain, see [`BlockHeaderInfo::is_on_best_chain`]).
    /// (<https://bitcoincore.org/en/doc/latest/rpc/blockchain/getblockheader/>)
    ///
    /// Errors: [`RpcError::NotFound`] (-5) for a hash the node does not know.
    pub async fn get_block_header(&self, hash: &BlockHash) -> Result<BlockHeaderInfo, RpcError> {
        const M: &str = "getblockheader";
        let w: wire::BlockHeader = self
            .call(M, &[json!(hash.to_string()), json!(true)])
            .await?;
        let opt_hash = |text: Option<&String>| text.map(|t| self.parse_hash(M, t)).transpose();
        let info = BlockHeaderInfo {
            hash: self.parse_hash(M, &w.hash)?,
            height: w.height,
            confirmations: w.confirmations,
            previous_block_hash: opt_hash(w.previousblockhash.as_ref())?,
            next_block_hash: opt_hash(w.nextblockhash.as_ref())?,
            time_s: w.time,
            median_time_s: w.mediantime,
            tx_count: w.n_tx,
            chainwork_hex: w.chainwork,
        };
        if info.hash != *hash {
            return Err(self.bad_reply(M, format!("asked for header {hash}, got {}", info.hash)));
        }
        Ok(info)
    }

    /// The serialized block `hash` (consensus encoding, as stored on disk): REST
    /// `GET /rest/block/<hash>.bin`, or `getblock <hash> 0` (hex) when the node answers the
    /// REST request with 404 or 403 (REST off, `-rest=0`). Once the fallback has worked, REST
    /// is not tried again by this client.
    /// (<https://github.com/bitcoin/bitcoin/blob/master/doc/REST-interface.md>,
    /// <https://bitcoincore.org/en/doc/latest/rpc/blockchain/getblock/>)
    ///
    /// Decode with `bitcoin::consensus::deserialize::<bitcoin::Block>` (Dash blocks need the
    /// Dash decoder). Errors: [`RpcError::NotFound`] (-5) for an unknown block; a pruned
    /// node's missing block is [`RpcError::Rpc`] (-1 `Block not available (pruned data)`).
    pub async fn get_block_raw(&self, hash: &BlockHash) -> Result<Vec<u8>, RpcError> {
        if !self.rest_disabled.load(Ordering::Relaxed) {
            let path = format!("/rest/block/{hash}.bin");
            let reply = self.send(&path, None).await?;
            match reply.status {
                200 => return Ok(reply.body),
                403 | 404 => {
                    tracing::debug!(node = %self.node, status = reply.status, %hash,
                        "rest block unavailable, trying getblock");
                    let raw = self.get_block_raw_rpc(hash).await?;
                    if !self.rest_disabled.swap(true, Ordering::Relaxed) {
                        tracing::warn!(node = %self.node,
                            "node rest interface is off (-rest=0); using getblock for raw blocks");
                    }
                    return Ok(raw);
                }
                status => return Err(self.http_error(&path, status, &reply.body)),
            }
        }
        self.get_block_raw_rpc(hash).await
    }

    /// `getblock <hash> 0`: the serialized block from its hex.
    async fn get_block_raw_rpc(&self, hash: &BlockHash) -> Result<Vec<u8>, RpcError> {
        const M: &str = "getblock";
        let hex: String = self.call(M, &[json!(hash.to_string()), json!(0)]).await?;
        self.parse_hex(M, &hex)
    }

    /// `getrawmempool false`: txids of every transaction in the node's mempool.
    /// (<https://bitcoincore.org/en/doc/latest/rpc/blockchain/getrawmempool/>)
    pub async fn get_raw_mempool(&self) -> Result<Vec<Txid>, RpcError> {
        const M: &str = "getrawmempool";
        let txids: Vec<String> = self.call(M, &[json!(false)]).await?;
        txids.iter().map(|t| self.parse_txid(M, t)).collect()
    }

    /// `getrawtransaction <txid> 0`: the serialized transaction. Needs `-txindex` for
    /// transactions that are neither in the mempool nor in a wallet.
    /// (<https://bitcoincore.org/en/doc/latest/rpc/rawtransactions/getrawtransaction/>)
    ///
    /// Errors: [`RpcError::NotFound`] (-5) for an unknown transaction.
    pub async fn get_raw_transaction(&self, txid: &Txid) -> Result<Vec<u8>, RpcError> {
        const M: &str = "getrawtransaction";
        let hex: String = self.call(M, &[json!(txid.to_string()), json!(0)]).await?;
        self.parse_hex(M, &hex)
    }

    /// `getrawtransaction <txid> 1`: the transaction with its block and confirmations.
    /// (<https://bitcoincore.org/en/doc/latest/rpc/rawtransactions/getrawtransaction/>)
    ///
    /// Errors: [`RpcError::NotFound`] (-5) for an unknown transaction.
    pub async fn get_raw_transaction_info(&self, txid: &Txid) -> Result<TransactionInfo, RpcError> {
        const M: &str = "getrawtransaction";
        let w: wire::RawTransactionVerbose =
            self.call(M, &[json!(txid.to_string()), json!(1)]).await?;
        let info = TransactionInfo {
            txid: self.parse_txid(M, &w.txid)?,
            raw: self.parse_hex(M, &w.hex)?,
            block_hash: w
                .blockhash
                .as_ref()
                .map(|h| self.parse_hash(M, h))
                .transpose()?,
            confirmations: w.confirmations,
            block_time_s: w.blocktime,
        };
        if info.txid != *txid {
            return Err(self.bad_reply(M, format!("asked for tx {txid}, got {}", info.txid)));
        }
        Ok(info)
    }

    /// `gettxout <txid> <n> <include_mempool>`: the output `outpoint` if it is unspent, or
    /// `None` when the node answers `null` (no such output, or already spent).
    /// (<https://bitcoincore.org/en/doc/latest/rpc/blockchain/gettxout/>)
    ///
    /// With `include_mempool = false` the node looks only at its UTXO set (confirmed
    /// outputs): an output spent by a mempool transaction is still returned, one created by
    /// a mempool transaction is not. With `true`, mempool outputs are returned and outputs
    /// spent in the mempool are `None`.
    ///
    /// The value is parsed exactly (no floating point) into satoshi (duff on Dash).
    pub async fn get_tx_out(
        &self,
        outpoint: &OutPoint,
        include_mempool: bool,
    ) -> Result<Option<UnspentOutput>, RpcError> {
        const M: &str = "gettxout";
        let reply: Option<wire::TxOut> = self
            .call(
                M,
                &[
                    json!(outpoint.txid.to_string()),
                    json!(outpoint.vout),
                    json!(include_mempool),
                ],
            )
            .await?;
        let Some(w) = reply else {
            return Ok(None);
        };
        Ok(Some(UnspentOutput {
            best_block: self.parse_hash(M, &w.bestblock)?,
            confirmations: w.confirmations,
            value: self.parse_amount(M, &w.value)?,
            script_pubkey: ScriptBuf::from_bytes(self.parse_hex(M, &w.script_pub_key.hex)?),
            coinbase: w.coinbase,
        }))
    }

    /// `sendrawtransaction <hex>`: broadcasts a serialized transaction.
    /// (<https://bitcoincore.org/en/doc/latest/rpc/rawtransactions/sendrawtransaction/>)
    ///
    /// Idempotent for re-broadcasts: the node's -27 ("outputs already in utxo set": mined
    /// before) is returned as `Ok(`[`Broadcast::AlreadyInChain`]`)`, not as an error.
    ///
    /// Errors: [`RpcError::ScriptVerifyFailed`] (bad signature), [`RpcError::VerifyError`]
    /// (-25, e.g. inputs missing or spent), [`RpcError::Rejected`] (-26, policy, e.g. fee too
    /// low for a replacement), [`RpcError::Rpc`] with -22 for bytes that do not decode.
    pub async fn send_raw_transaction(&self, raw_tx: &[u8]) -> Result<Broadcast, RpcError> {
        const M: &str = "sendrawtransaction";
        match self
            .call::<String>(M, &[json!(raw_tx.to_lower_hex_string())])
            .await
        {
            Ok(text) => Ok(Broadcast::Accepted {
                txid: self.parse_txid(M, &text)?,
            }),
            Err(RpcError::AlreadyInChain { message }) => Ok(Broadcast::AlreadyInChain { message }),
            Err(other) => Err(other),
        }
    }

    /// `estimatesmartfee <conf_target> [mode]`: fee rate for confirmation within
    /// `conf_target` blocks (1..=1008).
    /// (<https://bitcoincore.org/en/doc/latest/rpc/util/estimatesmartfee/>)
    ///
    /// A node without enough data answers without a fee rate (`fee_per_kvb: None`), not with
    /// an error.
    pub async fn estimate_smart_fee(
        &self,
        conf_target: u16,
        mode: Option<EstimateMode>,
    ) -> Result<FeeEstimate, RpcError> {
        const M: &str = "estimatesmartfee";
        let mut params = vec![json!(conf_target)];
        if let Some(mode) = mode {
            params.push(json!(mode.as_str()));
        }
        let w: wire::EstimateSmartFee = self.call(M, &params).await?;
        Ok(FeeEstimate {
            fee_per_kvb: w
                .feerate
                .as_ref()
                .map(|f| self.parse_amount(M, f))
                .transpose()?,
            blocks: w.blocks,
            errors: w.errors.unwrap_or_default(),
        })
    }

    /// Hashes of the best chain's blocks at `heights`, in one batched HTTP request (per
    /// [`RpcConfig::batch_size_max`]). Each element fails on its own, e.g. with
    /// [`RpcError::InvalidParameter`] above the tip.
    pub async fn get_block_hashes(
        &self,
        heights: &[u64],
    ) -> Result<Vec<Result<BlockHash, RpcError>>, RpcError> {
        let calls: Vec<BatchCall> = heights
            .iter()
            .map(|h| BatchCall::new("getblockhash", vec![json!(h)]))
            .collect();
        let replies = self.call_batch(&calls).await?;
        Ok(replies
            .into_iter()
            .map(|reply| {
                let value = reply?;
                let text = value.as_str().ok_or_else(|| {
                    self.bad_reply("getblockhash", format!("expected a hash, got {value}"))
                })?;
                self.parse_hash("getblockhash", text)
            })
            .collect())
    }

    // ----- generic calls -------------------------------------------------------------------

    /// Calls `method` with positional `params` and parses the `result` as `T` (use the
    /// [`wire`] types or `serde_json::Value`). Waits out -28 (see
    /// [`RpcConfig::warmup_attempts_max`]).
    ///
    /// Errors: the error code mapped to its [`RpcError`] variant; [`RpcError::BadReply`] when
    /// the result does not parse as `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &[Value],
    ) -> Result<T, RpcError> {
        let value = self
            .with_warmup_retry(|| async {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let request = wire::Request {
                    jsonrpc: "1.0",
                    id,
                    method,
                    params,
                };
                let body = serde_json::to_vec(&request)
                    .map_err(|e| self.bad_reply(method, format!("cannot encode request: {e}")))?;
                let reply = self.send("/", Some(body)).await?;
                let response: wire::Response = self.parse_rpc_body(method, &reply)?;
                if response.id != json!(id) {
                    return Err(self.bad_reply(
                        method,
                        format!("reply id {} does not match request id {id}", response.id),
                    ));
                }
                Ok(vec![Self::into_result(method, response)])
            })
            .await?
            .pop()
            .expect("one request gives one reply")?;
        serde_json::from_value(value).map_err(|e| self.bad_reply(method, e.to_string()))
    }

    /// Sends `calls` as JSON-RPC batches (one HTTP request per [`RpcConfig::batch_size_max`]
    /// calls, array body) and returns each call's `result` or error, in the order of
    /// `calls` (replies are matched by id, whatever order the node sends them in).
    ///
    /// The outer error is for the whole request (transport, 401, unparsable reply); inner
    /// errors are per call. A batch with a -28 reply is retried whole, like [`Self::call`].
    pub async fn call_batch(
        &self,
        calls: &[BatchCall],
    ) -> Result<Vec<Result<Value, RpcError>>, RpcError> {
        let mut results = Vec::with_capacity(calls.len());
        for chunk in calls.chunks(self.config.batch_size_max) {
            let replies = self.with_warmup_retry(|| self.send_batch(chunk)).await?;
            results.extend(replies);
        }
        debug_assert_eq!(results.len(), calls.len());
        Ok(results)
    }

    /// One HTTP request carrying `chunk`.
    async fn send_batch(
        &self,
        chunk: &[BatchCall],
    ) -> Result<Vec<Result<Value, RpcError>>, RpcError> {
        const M: &str = "batch";
        let first_id = self
            .next_id
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        let requests: Vec<wire::Request<'_>> = chunk
            .iter()
            .zip(first_id..)
            .map(|(call, id)| wire::Request {
                jsonrpc: "1.0",
                id,
                method: &call.method,
                params: &call.params,
            })
            .collect();
        let body = serde_json::to_vec(&requests)
            .map_err(|e| self.bad_reply(M, format!("cannot encode request: {e}")))?;
        let reply = self.send("/", Some(body)).await?;
        let responses: Vec<wire::Response> = match self.parse_rpc_body::<Value>(M, &reply)? {
            Value::Array(items) => items
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<_, _>>()
                .map_err(|e| self.bad_reply(M, e.to_string()))?,
            // A whole-request error (e.g. a parse error) comes back as one object.
            other => {
                let response: wire::Response =
                    serde_json::from_value(other).map_err(|e| self.bad_reply(M, e.to_string()))?;
                return Err(match Self::into_result(M, response) {
                    Err(error) => error,
                    Ok(_) => self.bad_reply(M, "expected an array reply to a batch".into()),
                });
            }
        };
        let mut by_id: HashMap<u64, wire::Response> = HashMap::with_capacity(responses.len());
        for response in responses {
            if let Some(id) = response.id.as_u64() {
                by_id.insert(id, response);
            }
        }
        Ok(chunk
            .iter()
            .zip(first_id..)
            .map(|(call, id)| match by_id.remove(&id) {
                Some(response) => Self::into_result(&call.method, response),
                None => Err(self.bad_reply(&call.method, format!("batch reply has no id {id}"))),
            })
            .collect())
    }

    // ----- plumbing ------------------------------------------------------------------------

    /// Runs `attempt` (one HTTP request, one or many replies) and repeats it with
    /// exponential backoff while any reply is -28, at most `warmup_attempts_max` times.
    async fn with_warmup_retry<F, Fut>(
        &self,
        attempt: F,
    ) -> Result<Vec<Result<Value, RpcError>>, RpcError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Result<Value, RpcError>>, RpcError>>,
    {
        let attempts_max = self.config.warmup_attempts_max.max(1);
        let mut backoff_ms = self.config.warmup_backoff_initial_ms;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let replies = attempt().await?;
            let warming = replies.iter().find_map(|r| match r {
                Err(RpcError::Rpc {
                    code: RPC_IN_WARMUP,
                    message,
                    ..
                }) => Some(message.clone()),
                _ => None,
            });
            let Some(message) = warming else {
                return Ok(replies);
            };
            if attempts >= attempts_max {
                return Err(RpcError::WarmingUp {
                    node: self.node.clone(),
                    attempts,
                    message,
                });
            }
            tracing::info!(node = %self.node, attempts, backoff_ms, %message,
                "node warming up, waiting");
            tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
            backoff_ms = backoff_ms
                .saturating_mul(2)
                .min(self.config.warmup_backoff_max_ms);
        }
    }

    /// A reply object's result, or its error mapped to [`RpcError`] (-28 stays
    /// [`RpcError::Rpc`] here so [`Self::with_warmup_retry`] can see it).
    fn into_result(method: &str, response: wire::Response) -> Result<Value, RpcError> {
        match response.error {
            Some(error) if error.code == RPC_IN_WARMUP => Err(RpcError::Rpc {
                method: method.to_owned(),
                code: error.code,
                message: error.message,
            }),
            Some(error) => Err(RpcError::from_code(method, error.code, error.message)),
            None => Ok(response.result),
        }
    }

    /// Parses a JSON-RPC reply body. JSON-RPC 1.0 errors come with HTTP 500 (404 for an
    /// unknown method) and 2.0 errors with 200, all with a JSON body; any other status, or
    /// one of those without a JSON body, is [`RpcError::Http`].
    fn parse_rpc_body<T: DeserializeOwned>(
        &self,
        method: &str,
        reply: &HttpReply,
    ) -> Result<T, RpcError> {
        match reply.status {
            200 | 404 | 500 => serde_json::from_slice(&reply.body).map_err(|e| {
                if reply.status == 200 {
                    self.bad_reply(method, format!("not json-rpc: {e}"))
                } else {
                    self.http_error(method, reply.status, &reply.body)
                }
            }),
            status => Err(self.http_error(method, status, &reply.body)),
        }
    }

    /// One HTTP exchange: POST `body` to `/` (JSON-RPC) or GET `path` (REST). Handles 401:
    /// with a cookie file, re-reads it and tries once more; then [`RpcError::Unauthorized`].
    async fn send(&self, path: &str, body: Option<Vec<u8>>) -> Result<HttpReply, RpcError> {
        let mut reread_cookie = false;
        loop {
            let credentials = self.credentials(reread_cookie)?;
            let url = format!("{}{path}", self.base_url);
            let request = match &body {
                Some(body) => self
                    .http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone()),
                None => self.http.get(&url),
            };
            let request = request.basic_auth(
                &credentials.user,
                Some(credentials.password.expose_secret()),
            );
            let reply = self.exchange(path, request).await?;
            if reply.status != 401 {
                return Ok(reply);
            }
            if matches!(self.auth, Auth::CookieFile(_)) && !reread_cookie {
                tracing::info!(node = %self.node, "rpc 401, re-reading cookie file");
                reread_cookie = true;
                continue;
            }
            return Err(RpcError::Unauthorized {
                node: self.node.clone(),
            });
        }
    }

    /// Sends `request` and reads the body, within the timeout and size limit.
    async fn exchange(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<HttpReply, RpcError> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                RpcError::Timeout {
                    node: self.node.clone(),
                    method: what.to_owned(),
                    timeout_ms: self.config.timeout_ms,
                }
            } else {
                RpcError::Unreachable {
                    node: self.node.clone(),
                    reason: e.without_url().to_string(),
                }
            }
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let limit = self.config.response_bytes_max;
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(self.bad_reply(what, format!("reply larger than {limit} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > limit {
                return Err(self.bad_reply(what, format!("reply larger than {limit} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpReply { status, body })
    }

    /// The credentials to send; with a cookie file, reads it when not yet read or when
    /// `reread` (after a 401).
    fn credentials(&self, reread: bool) -> Result<Credentials, RpcError> {
        if !reread
            && let Some(credentials) = self.credentials.read().expect("lock not poisoned").as_ref()
        {
            return Ok(credentials.clone());
        }
        let Auth::CookieFile(path) = &self.auth else {
            let credentials = self.credentials.read().expect("lock not poisoned");
            return Ok(credentials
                .clone()
                .expect("user/password credentials are set in new()"));
        };
        let cookie_error = |reason: String| RpcError::Cookie {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| cookie_error(e.kind().to_string()))?;
        let line = text.lines().next().unwrap_or_default().trim();
        let (user, password) = line
            .split_once(':')
            .filter(|(user, password)| !user.is_empty() && !password.is_empty())
            .ok_or_else(|| cookie_error("expected one line user:password".into()))?;
        let credentials = Credentials {
            user: user.to_owned(),
            password: SecretString::from(password.to_owned()),
        };
        *self.credentials.write().expect("lock not poisoned") = Some(credentials.clone());
        Ok(credentials)
    }

    fn http_error(&self, method: &str, status: u16, body: &[u8]) -> RpcError {
        RpcError::Http {
            node: self.node.clone(),
            method: method.to_owned(),
            status,
            body: String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(200)
                .collect(),
        }
    }

    fn bad_reply(&self, method: &str, reason: String) -> RpcError {
        RpcError::BadReply {
            node: self.node.clone(),
            method: method.to_owned(),
            reason,
        }
    }

    fn parse_hash(&self, method: &str, text: &str) -> Result<BlockHash, RpcError> {
        text.parse()
            .map_err(|e| self.bad_reply(method, format!("block hash {text:?}: {e}")))
    }

    fn parse_txid(&self, method: &str, text: &str) -> Result<Txid, RpcError> {
        text.parse()
            .map_err(|e| self.bad_reply(method, format!("txid {text:?}: {e}")))
    }

    fn parse_hex(&self, method: &str, hex: &str) -> Result<Vec<u8>, RpcError> {
        Vec::from_hex(hex).map_err(|e| self.bad_reply(method, format!("hex: {e}")))
    }

    fn parse_amount(
        &self,
        method: &str,
        number: &serde_json::Number,
    ) -> Result<::bitcoin::Amount, RpcError> {
        btc_number_to_amount(number).map_err(|reason| self.bad_reply(method, reason))
    }
}
