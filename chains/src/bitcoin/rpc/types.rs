//! Domain types returned by the client: hashes as `bitcoin` hash types, amounts as
//! [`bitcoin::Amount`] (satoshi; duff on Dash), raw data as bytes. Built from the
//! [`super::wire`] types, validated while converting.

use ::bitcoin::{Amount, BlockHash, ScriptBuf, Txid};

/// The node's chain state, from `getblockchaininfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainInfo {
    /// `main`, `test`, `testnet4`, `signet` or `regtest` (Dash: `main`, `test`, `regtest`,
    /// `devnet-…`).
    pub chain: String,
    /// Height of the best validated block.
    pub blocks: u64,
    /// Height of the best known header (`headers > blocks` while syncing).
    pub headers: u64,
    /// Hash of the best validated block.
    pub best_block_hash: BlockHash,
    /// Median time past of the best block, Unix seconds.
    pub median_time_s: u64,
    /// Estimated verification progress, 0..=1.
    pub verification_progress: f64,
    /// Whether the node is still in initial block download.
    pub initial_block_download: bool,
    /// Whether the node prunes old blocks (then blocks below `prune_height` are gone).
    pub pruned: bool,
    /// Lowest height whose block is still stored, when pruned.
    pub prune_height: Option<u64>,
    /// Node warnings (empty when none).
    pub warnings: Vec<String>,
}

/// The node's version and network state, from `getnetworkinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Node version as an integer, e.g. 280100 for Bitcoin Core 28.1.0.
    pub version: u64,
    /// User agent, e.g. `/Satoshi:28.1.0/` or `/Dash Core:21.1.0/`.
    pub subversion: String,
    /// P2P protocol version.
    pub protocol_version: u64,
    /// Number of peer connections.
    pub connections: u64,
    /// Whether P2P networking is enabled.
    pub network_active: bool,
    /// Minimum relay fee per 1000 virtual bytes (per 1000 bytes on Dash).
    pub relay_fee_per_kvb: Amount,
    /// Minimum fee rate increment for a replacement, per 1000 virtual bytes; `None` on nodes
    /// that do not report it.
    pub incremental_fee_per_kvb: Option<Amount>,
    /// Node warnings (empty when none).
    pub warnings: Vec<String>,
}

/// A block header as the node sees it, from `getblockheader <hash> true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeaderInfo {
    /// Block hash.
    pub hash: BlockHash,
    /// Height.
    pub height: u64,
    /// Confirmations: 1 for the tip, `tip - height + 1` below it, and **-1 when the block is
    /// not on the node's best chain** (stale, or invalidated). See
    /// [`BlockHeaderInfo::is_on_best_chain`].
    pub confirmations: i64,
    /// Parent hash; `None` only for the genesis block.
    pub previous_block_hash: Option<BlockHash>,
    /// Next block on the best chain; `None` at the tip and for stale blocks.
    pub next_block_hash: Option<BlockHash>,
    /// Header time, Unix seconds.
    pub time_s: u64,
    /// Median time past, Unix seconds.
    pub median_time_s: u64,
    /// Number of transactions in the block.
    pub tx_count: u64,
    /// Total chain work up to this block, hex as the node writes it.
    pub chainwork_hex: String,
}

impl BlockHeaderInfo {
    /// Whether the block is on the node's best (active) chain: Bitcoin Core reports
    /// `confirmations: -1` for a block that is not.
    pub fn is_on_best_chain(&self) -> bool {
        self.confirmations > 0
    }
}

/// A transaction the node knows (mempool or chain), from `getrawtransaction <txid> 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionInfo {
    /// Transaction id.
    pub txid: Txid,
    /// The serialized transaction (decode with `bitcoin::consensus` for Bitcoin; Dash
    /// special transactions need the Dash decoder).
    pub raw: Vec<u8>,
    /// Containing block; `None` while the transaction is in the mempool.
    pub block_hash: Option<BlockHash>,
    /// Confirmations of the containing block; `None` in the mempool.
    pub confirmations: Option<i64>,
    /// Containing block's time, Unix seconds; `None` in the mempool.
    pub block_time_s: Option<u64>,
}

/// An unspent output as the node sees it, from `gettxout <txid> <n> <include_mempool>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnspentOutput {
    /// The node's best block when it answered.
    pub best_block: BlockHash,
    /// Confirmations of the transaction holding the output; 0 while it is in the mempool
    /// (only with `include_mempool`).
    pub confirmations: u64,
    /// The output's value, satoshi (duff on Dash), parsed exactly from the node's number.
    pub value: Amount,
    /// The output's scriptPubKey.
    pub script_pubkey: ScriptBuf,
    /// Whether it is a coinbase output.
    pub coinbase: bool,
}

/// A fee estimate from `estimatesmartfee`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeEstimate {
    /// Estimated fee per 1000 virtual bytes (per 1000 bytes on Dash); `None` when the node
    /// has not seen enough transactions to estimate (always on a fresh regtest).
    pub fee_per_kvb: Option<Amount>,
    /// Confirmation target, in blocks, that the estimate is for (may be higher than asked).
    pub blocks: u32,
    /// Why no estimate was possible, as the node says it.
    pub errors: Vec<String>,
}

/// `estimatesmartfee` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EstimateMode {
    /// `economical`: reacts faster to falling fees, may underpay.
    Economical,
    /// `conservative`: longer history, less likely to underpay.
    Conservative,
}

impl EstimateMode {
    /// The parameter text Bitcoin Core expects.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Economical => "economical",
            Self::Conservative => "conservative",
        }
    }
}

/// Outcome of a successful `sendrawtransaction`.
///
/// Re-broadcasting a stored withdrawal is idempotent: Bitcoin Core answers the txid again
/// while the transaction is in its mempool, and error -27 once it is mined. Both are
/// successes for Coinhub; `AlreadyInChain` means "stop re-broadcasting, watch for
/// confirmations".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broadcast {
    /// The node accepted the transaction into (or already had it in) its mempool.
    Accepted {
        /// The txid the node reported.
        txid: Txid,
    },
    /// -27 `Transaction outputs already in utxo set`: the transaction is already mined.
    AlreadyInChain {
        /// The node's message.
        message: String,
    },
}

/// One call of a [`super::BitcoinRpc::call_batch`].
#[derive(Debug, Clone, PartialEq)]
pub struct BatchCall {
    /// RPC method, e.g. `"getblockhash"`.
    pub method: String,
    /// Positional parameters.
    pub params: Vec<serde_json::Value>,
}

impl BatchCall {
    /// A call of `method` with `params`.
    pub fn new(method: impl Into<String>, params: Vec<serde_json::Value>) -> Self {
        Self {
            method: method.into(),
            params,
        }
    }
}

/// Parses a BTC amount as the node writes it (a JSON number such as `48.7489792`,
/// `1e-06`) into satoshi without floating-point arithmetic.
///
/// Errors on negative values, more than 8 decimals, or values beyond `u64` satoshi.
pub(crate) fn btc_number_to_amount(number: &serde_json::Number) -> Result<Amount, String> {
    let text = number.to_string();
    let bad = |why: &str| format!("amount {text}: {why}");
    if text.starts_with('-') {
        return Err(bad("negative"));
    }
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => {
            let exponent: i32 = text[at + 1..]
                .trim_start_matches('+')
                .parse()
                .map_err(|_| bad("bad exponent"))?;
            (&text[..at], exponent)
        }
        None => (text.as_str(), 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = [int_part, frac_part].concat();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("not a decimal number"));
    }
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return Err(bad("too many digits"));
    }
    let value: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| bad("not a decimal number"))?
    };
    let frac_len = i32::try_from(frac_part.len()).map_err(|_| bad("too many digits"))?;
    // value × 10^(exponent − frac_len) BTC = value × 10^(exponent − frac_len + 8) sat.
    let shift = exponent - frac_len + 8;
    let sat = if shift >= 0 {
        let factor = 10u128
            .checked_pow(u32::try_from(shift).map_err(|_| bad("too large"))?)
            .ok_or_else(|| bad("too large"))?;
        value.checked_mul(factor).ok_or_else(|| bad("too large"))?
    } else {
        let divisor = 10u128
            .checked_pow(u32::try_from(-shift).map_err(|_| bad("too small"))?)
            .ok_or_else(|| bad("more than 8 decimals"))?;
        if !value.is_multiple_of(divisor) {
            return Err(bad("more than 8 decimals"));
        }
        value / divisor
    };
    let sat = u64::try_from(sat).map_err(|_| bad("too large"))?;
    Ok(Amount::from_sat(sat))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<u64, String> {
        let number: serde_json::Number = serde_json::from_str(json).expect("a JSON number");
        btc_number_to_amount(&number).map(Amount::to_sat)
    }

    /// Proves BTC amounts in every form Bitcoin Core writes them (plain, exponent, integer,
    /// zero) convert to exact satoshi, and that sub-satoshi or negative values are refused.
    #[test]
    fn btc_numbers_convert_exactly() {
        assert_eq!(parse("48.7489792"), Ok(4_874_897_920));
        assert_eq!(parse("1e-06"), Ok(100));
        assert_eq!(parse("1.65e-05"), Ok(1_650));
        assert_eq!(parse("0.0001005"), Ok(10_050));
        assert_eq!(parse("50"), Ok(5_000_000_000));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("20999999.99999999"), Ok(2_099_999_999_999_999));
        assert!(parse("0.000000001").is_err());
        assert!(parse("-1").is_err());
    }
}
