//! Typed errors of the node client, by Bitcoin Core's RPC error codes
//! (`src/rpc/protocol.h`, `RPCErrorCode`) and by HTTP status.

use std::path::PathBuf;

/// Bitcoin Core's `RPC_IN_WARMUP`: the node is starting (loading the block index, verifying
/// blocks). The client waits and retries; see [`super::RpcConfig::warmup_attempts_max`].
pub const RPC_IN_WARMUP: i32 = -28;
/// `RPC_INVALID_ADDRESS_OR_KEY`: unknown block, transaction or address.
pub const RPC_INVALID_ADDRESS_OR_KEY: i32 = -5;
/// `RPC_INVALID_PARAMETER`: e.g. a height above the tip, a malformed hash.
pub const RPC_INVALID_PARAMETER: i32 = -8;
/// `RPC_VERIFY_ERROR`: general error during transaction submission (e.g. missing inputs).
pub const RPC_VERIFY_ERROR: i32 = -25;
/// `RPC_VERIFY_REJECTED`: transaction rejected by network rules (policy or consensus, which
/// includes a failing script / bad signature).
pub const RPC_VERIFY_REJECTED: i32 = -26;
/// `RPC_VERIFY_ALREADY_IN_CHAIN` (renamed `RPC_VERIFY_ALREADY_IN_UTXO_SET`): the
/// transaction's outputs are already in the UTXO set, i.e. it was mined before.
pub const RPC_VERIFY_ALREADY_IN_CHAIN: i32 = -27;
/// JSON-RPC `Method not found`.
pub const RPC_METHOD_NOT_FOUND: i32 = -32601;

/// A failed node call.
///
/// Messages are lower-case and never contain credentials: `node` is `host:port` only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The client configuration is unusable (bad URL, URL with credentials in it).
    #[error("invalid node client configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// HTTP 401: the node refused our credentials (wrong user/password, or a cookie that is
    /// still wrong after re-reading the cookie file).
    #[error("node {node} refused the rpc credentials (http 401)")]
    Unauthorized {
        /// `host:port` of the node.
        node: String,
    },
    /// The cookie file could not be read or has no `user:password` line.
    #[error("cannot use rpc cookie file {path}: {reason}")]
    Cookie {
        /// Path of the cookie file.
        path: PathBuf,
        /// What went wrong (never the file's content).
        reason: String,
    },
    /// The call did not complete within the configured timeout.
    #[error("node {node}: {method} timed out after {timeout_ms} ms")]
    Timeout {
        /// `host:port` of the node.
        node: String,
        /// RPC method or REST path.
        method: String,
        /// The configured timeout.
        timeout_ms: u64,
    },
    /// The node could not be reached (connection refused, reset, DNS).
    #[error("node {node} unreachable: {reason}")]
    Unreachable {
        /// `host:port` of the node.
        node: String,
        /// Transport error text (without URL).
        reason: String,
    },
    /// The node was still warming up (-28) after every allowed retry.
    #[error("node {node} still warming up after {attempts} attempts: {message}")]
    WarmingUp {
        /// `host:port` of the node.
        node: String,
        /// Calls made, the first included.
        attempts: u32,
        /// The node's last message, e.g. `Loading block index…`.
        message: String,
    },
    /// -5: unknown block, transaction or address.
    #[error("{method}: not found: {message}")]
    NotFound {
        /// RPC method.
        method: String,
        /// The node's message.
        message: String,
    },
    /// -8: invalid parameter, e.g. `Block height out of range`.
    #[error("{method}: invalid parameter: {message}")]
    InvalidParameter {
        /// RPC method.
        method: String,
        /// The node's message.
        message: String,
    },
    /// A broadcast failed script verification: a bad or missing signature. Reported by
    /// Bitcoin Core as -26 (or -25) with a reason containing `script-verify-flag`, e.g.
    /// `mempool-script-verify-flag-failed (Signature must be zero for failed
    /// CHECK(MULTI)SIG operation)`. Never fixed by retrying: the transaction is wrong.
    #[error("transaction failed script verification: {reason}")]
    ScriptVerifyFailed {
        /// The node's error code (-26 or -25).
        code: i32,
        /// The node's reject reason.
        reason: String,
    },
    /// -25: general verification error, e.g. `bad-txns-inputs-missingorspent`.
    #[error("transaction verification error: {message}")]
    VerifyError {
        /// The node's message.
        message: String,
    },
    /// -26: rejected by policy or consensus rules (other than script verification), e.g.
    /// `insufficient fee, rejecting replacement …`, `min relay fee not met`.
    #[error("transaction rejected: {reason}")]
    Rejected {
        /// The node's reject reason.
        reason: String,
    },
    /// -27 from a method other than `sendrawtransaction` (where it is a success, see
    /// [`super::Broadcast::AlreadyInChain`]).
    #[error("already in chain: {message}")]
    AlreadyInChain {
        /// The node's message.
        message: String,
    },
    /// -32601: the node does not know the method (old or Dash node, or a typo).
    #[error("node does not know method {method}")]
    MethodNotFound {
        /// RPC method.
        method: String,
    },
    /// Any other JSON-RPC error code.
    #[error("{method}: node error {code}: {message}")]
    Rpc {
        /// RPC method.
        method: String,
        /// Bitcoin Core error code.
        code: i32,
        /// The node's message.
        message: String,
    },
    /// An HTTP status without a JSON-RPC error body (e.g. 403 forbidden by `rpcallowip` or
    /// `rpcwhitelist`, 503 work queue full, a REST error).
    #[error("node {node}: {method}: http {status}: {body}")]
    Http {
        /// `host:port` of the node.
        node: String,
        /// RPC method or REST path.
        method: String,
        /// HTTP status code.
        status: u16,
        /// Start of the body (at most 200 characters).
        body: String,
    },
    /// The node's reply could not be used (not JSON, wrong shape, bad hex, a batch reply
    /// missing an id, a reply larger than the limit).
    #[error("node {node}: unusable reply to {method}: {reason}")]
    BadReply {
        /// `host:port` of the node.
        node: String,
        /// RPC method or REST path.
        method: String,
        /// What was wrong.
        reason: String,
    },
}

impl RpcError {
    /// Maps a JSON-RPC error object of a reply to `method` to its typed error.
    pub(crate) fn from_code(method: &str, code: i32, message: String) -> Self {
        let method = method.to_owned();
        match code {
            RPC_INVALID_ADDRESS_OR_KEY => Self::NotFound { method, message },
            RPC_INVALID_PARAMETER => Self::InvalidParameter { method, message },
            RPC_VERIFY_ERROR | RPC_VERIFY_REJECTED if message.contains("script-verify-flag") => {
                Self::ScriptVerifyFailed {
                    code,
                    reason: message,
                }
            }
            RPC_VERIFY_ERROR => Self::VerifyError { message },
            RPC_VERIFY_REJECTED => Self::Rejected { reason: message },
            RPC_VERIFY_ALREADY_IN_CHAIN => Self::AlreadyInChain { message },
            RPC_METHOD_NOT_FOUND => Self::MethodNotFound { method },
            _ => Self::Rpc {
                method,
                code,
                message,
            },
        }
    }

    /// The Bitcoin Core error code behind this error, if it came from a JSON-RPC error
    /// object (`None` for transport, HTTP and parsing failures).
    pub fn code(&self) -> Option<i32> {
        match self {
            Self::WarmingUp { .. } => Some(RPC_IN_WARMUP),
            Self::NotFound { .. } => Some(RPC_INVALID_ADDRESS_OR_KEY),
            Self::InvalidParameter { .. } => Some(RPC_INVALID_PARAMETER),
            Self::ScriptVerifyFailed { code, .. } | Self::Rpc { code, .. } => Some(*code),
            Self::VerifyError { .. } => Some(RPC_VERIFY_ERROR),
            Self::Rejected { .. } => Some(RPC_VERIFY_REJECTED),
            Self::AlreadyInChain { .. } => Some(RPC_VERIFY_ALREADY_IN_CHAIN),
            Self::MethodNotFound { .. } => Some(RPC_METHOD_NOT_FOUND),
            _ => None,
        }
    }

    /// Whether retrying the same call later may succeed: the node was unreachable, slow,
    /// warming up or overloaded (HTTP 503). Errors about the request itself (not found,
    /// rejected, bad credentials) are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Unreachable { .. } | Self::WarmingUp { .. } => true,
            Self::Http { status, .. } => *status == 503,
            _ => false,
        }
    }
}
