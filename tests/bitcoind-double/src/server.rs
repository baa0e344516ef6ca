//! HTTP layer: basic auth, JSON-RPC 1.0/2.0 envelopes and batches, REST endpoints.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use bitcoin::BlockHash;
use bitcoin::consensus::encode::serialize;
use bitcoin::hashes::Hash;
use serde_json::{Value, json};

use crate::json::{block_json, hash_internal_hex, header_json};
use crate::node::Node;
use crate::rpc::{INVALID_REQUEST, METHOD_NOT_FOUND, RpcError, blockchain_info, call};

/// Most headers one REST `headers` request returns (Bitcoin Core `MAX_REST_HEADERS_RESULTS`).
const REST_HEADERS_MAX: u64 = 2000;

/// State shared by all requests.
pub(crate) struct Shared {
    pub(crate) node: Mutex<Node>,
    /// Accepted `user:password` pairs (configured credentials and the cookie).
    pub(crate) credentials: Vec<String>,
    /// Calls still to be answered with -28 (RPC in warm-up).
    pub(crate) warmup_calls: AtomicU32,
}

/// The router: JSON-RPC on `/` and `/wallet/<name>`, REST under `/rest/`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", post(rpc))
        .route("/wallet/{*name}", post(rpc))
        .route("/rest/{*path}", get(rest))
        .with_state(shared)
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(pair) = String::from_utf8(decoded) else {
        return false;
    };
    shared.credentials.contains(&pair)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut text = body.to_string();
    text.push('\n');
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// One reply: its JSON body, the HTTP status a single request would get, and whether it
/// is a JSON-RPC 2.0 notification (no reply).
struct Reply {
    body: Value,
    status: StatusCode,
    notification: bool,
}

fn error_reply(v2: bool, id: Value, err: &RpcError) -> Reply {
    let error = json!({"code": err.code, "message": err.message});
    if v2 {
        return Reply {
            body: json!({"jsonrpc": "2.0", "error": error, "id": id}),
            status: StatusCode::OK,
            notification: false,
        };
    }
    let status = match err.code {
        INVALID_REQUEST => StatusCode::BAD_REQUEST,
        METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Reply {
        body: json!({"result": null, "error": error, "id": id}),
        status,
        notification: false,
    }
}

fn handle_one(shared: &Shared, request: &Value) -> Reply {
    let Some(obj) = request.as_object() else {
        return error_reply(
            false,
            Value::Null,
            &RpcError::new(INVALID_REQUEST, "Invalid Request object"),
        );
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    let v2 = match obj.get("jsonrpc") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "1.0" => false,
        Some(Value::String(s)) if s == "2.0" => true,
        Some(_) => {
            return error_reply(
                false,
                id,
                &RpcError::new(INVALID_REQUEST, "JSON-RPC version not supported"),
            );
        }
    };
    let notification = v2 && !obj.contains_key("id");
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        return error_reply(
            v2,
            id,
            &RpcError::new(INVALID_REQUEST, "Method must be a string"),
        );
    };
    let params = obj.get("params").cloned().unwrap_or(Value::Null);
    let warming = shared
        .warmup_calls
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let result = if warming {
        Err(RpcError::new(-28, "Loading block index\u{2026}"))
    } else {
        let mut node = shared
            .node
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        call(&mut node, method, &params)
    };
    let mut reply = match result {
        Ok(result) if v2 => Reply {
            body: json!({"jsonrpc": "2.0", "result": result, "id": id}),
            status: StatusCode::OK,
            notification: false,
        },
        Ok(result) => Reply {
            body: json!({"result": result, "error": null, "id": id}),
            status: StatusCode::OK,
            notification: false,
        },
        Err(e) => error_reply(v2, id, &e),
    };
    reply.notification = notification;
    reply
}

async fn rpc(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&shared, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"jsonrpc\"")],
            "",
        )
            .into_response();
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"result": null, "error": {"code": -32700, "message": "Parse error"}, "id": null}),
            );
        }
    };
    match &request {
        Value::Object(_) => {
            let reply = handle_one(&shared, &request);
            if reply.notification {
                return StatusCode::NO_CONTENT.into_response();
            }
            json_response(reply.status, &reply.body)
        }
        Value::Array(items) => {
            let replies: Vec<Value> = items
                .iter()
                .map(|r| handle_one(&shared, r))
                .filter(|r| !r.notification)
                .map(|r| r.body)
                .collect();
            json_response(StatusCode::OK, &Value::Array(replies))
        }
        _ => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"result": null, "error": {"code": -32700, "message": "Top-level object parse error"}, "id": null}),
        ),
    }
}

fn rest_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain")],
        format!("{message}\r\n"),
    )
        .into_response()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Bin,
    Hex,
    Json,
}

/// Splits `name.ext` into the name and a known format.
fn split_format(s: &str) -> (&str, Option<Format>) {
    match s.rsplit_once('.') {
        Some((name, "bin")) => (name, Some(Format::Bin)),
        Some((name, "hex")) => (name, Some(Format::Hex)),
        Some((name, "json")) => (name, Some(Format::Json)),
        Some((name, _)) => (name, None),
        None => (s, None),
    }
}

fn format_not_found() -> Response {
    rest_error(
        StatusCode::NOT_FOUND,
        "output format not found (available: .bin, .hex, .json)",
    )
}

fn rest_bytes(format: Format, bytes: Vec<u8>, json_value: impl FnOnce() -> Value) -> Response {
    match format {
        Format::Bin => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response(),
        Format::Hex => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("{}\n", hex::encode(bytes)),
        )
            .into_response(),
        Format::Json => json_response(StatusCode::OK, &json_value()),
    }
}

fn parse_rest_hash(s: &str) -> Option<BlockHash> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    s.parse().ok()
}

async fn rest(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let node = shared
        .node
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["chaininfo.json"] => json_response(StatusCode::OK, &blockchain_info(&node)),
        ["chaininfo.bin" | "chaininfo.hex"] => format_not_found(),
        ["block", rest @ ..] if !rest.is_empty() && rest.len() <= 2 => {
            let (details, last) = match rest {
                ["notxdetails", last] => (false, *last),
                [last] => (true, *last),
                _ => return rest_error(StatusCode::NOT_FOUND, ""),
            };
            let (hash_str, format) = split_format(last);
            let Some(format) = format else {
                return format_not_found();
            };
            let Some(hash) = parse_rest_hash(hash_str) else {
                return rest_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid hash: {hash_str}"),
                );
            };
            let Some(entry) = node.blocks.get(&hash) else {
                return rest_error(StatusCode::NOT_FOUND, &format!("{hash_str} not found"));
            };
            if node.pruned.contains(&hash) {
                return rest_error(
                    StatusCode::NOT_FOUND,
                    &format!("{hash_str} not available (pruned data)"),
                );
            }
            let bytes = serialize(&entry.block);
            rest_bytes(format, bytes, || {
                block_json(&node, &hash, if details { 2 } else { 1 })
            })
        }
        ["headers", rest @ ..] => {
            let (count_str, last) = match rest {
                [last] => (
                    query
                        .get("count")
                        .cloned()
                        .unwrap_or_else(|| "5".to_owned()),
                    *last,
                ),
                [count, last] => ((*count).to_owned(), *last),
                _ => return rest_error(StatusCode::NOT_FOUND, ""),
            };
            let (hash_str, format) = split_format(last);
            let Some(format) = format else {
                return format_not_found();
            };
            let count = match count_str.parse::<u64>() {
                Ok(c) if (1..=REST_HEADERS_MAX).contains(&c) => c,
                _ => {
                    return rest_error(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "Header count is invalid or out of acceptable range (1-{REST_HEADERS_MAX}): {count_str}"
                        ),
                    );
                }
            };
            let Some(hash) = parse_rest_hash(hash_str) else {
                return rest_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid hash: {hash_str}"),
                );
            };
            let mut hashes = Vec::new();
            let mut cursor = node.blocks.contains_key(&hash).then_some(hash);
            while let Some(h) = cursor {
                hashes.push(h);
                if hashes.len() as u64 == count {
                    break;
                }
                cursor = node.next_hash(&h);
            }
            let mut bytes = Vec::new();
            for h in &hashes {
                bytes.extend(serialize(&node.blocks[h].block.header));
            }
            rest_bytes(format, bytes, || {
                Value::Array(hashes.iter().map(|h| header_json(&node, h)).collect())
            })
        }
        ["blockhashbyheight", last] => {
            let (height_str, format) = split_format(last);
            let Some(format) = format else {
                return format_not_found();
            };
            let height = match height_str.parse::<i32>() {
                Ok(h) if h >= 0 => h as usize,
                _ => {
                    return rest_error(
                        StatusCode::BAD_REQUEST,
                        &format!("Invalid height: {height_str}"),
                    );
                }
            };
            let Some(hash) = node.active.get(height).copied() else {
                return rest_error(StatusCode::NOT_FOUND, "Block height out of range");
            };
            match format {
                Format::Hex => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/plain")],
                    format!("{}\n", hash_internal_hex(&hash)),
                )
                    .into_response(),
                _ => rest_bytes(
                    format,
                    hash.to_byte_array().to_vec(),
                    || json!({"blockhash": hash.to_string()}),
                ),
            }
        }
        _ => rest_error(StatusCode::NOT_FOUND, "Not found"),
    }
}
