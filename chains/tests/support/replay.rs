//! A tiny HTTP server that replays replies recorded from a real Bitcoin Core.
//!
//! Fixtures are `../shared/fixtures/bitcoin-core/*.json` (format in that folder's
//! README.md): each exchange has `http_path`, `request` (a JSON-RPC object or batch array) or
//! `http_method` + `http_path` (REST), `http_status`, and `response` (the reply body as JSON,
//! or `{"raw_text": …}` for a non-JSON body) or `response_hex` (REST `.bin` bytes).
//!
//! The server answers
//! - a JSON-RPC POST by the first loaded exchange with the same method and params, with the
//!   recorded HTTP status and body, its `id` replaced by the request's id;
//! - a batch (array body) by the recorded batch with the same calls if there is one, else by
//!   answering each call as above (HTTP 200, array of reply objects);
//! - a REST GET by the exchange with the same path (and query); unknown REST paths get 404
//!   like a node started with `-rest=0`;
//! - any request whose basic-auth credentials differ from the expected ones with HTTP 401
//!   and an empty body, as Bitcoin Core does.
//!
//! An exchange may be limited to be served `times` times (then skipped), so a test can serve
//! e.g. -28 twice before the real reply.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

/// Folder of the recorded fixtures.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/bitcoin-core")
}

/// A recorded reply body.
#[derive(Debug, Clone)]
pub enum RecordedBody {
    /// A JSON body (object or array).
    Json(Value),
    /// A non-JSON text body (`raw_text`).
    Text(String),
    /// Raw bytes (`response_hex`).
    Bytes(Vec<u8>),
}

/// One recorded request and its reply.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The fixture's label, if any.
    pub label: Option<String>,
    /// `GET` for REST, `POST` for JSON-RPC.
    pub http_method: String,
    /// `/`, `/wallet/NAME` or `/rest/...`.
    pub http_path: String,
    /// The JSON-RPC request (object or batch array); `Null` for REST.
    pub request: Value,
    /// Recorded HTTP status.
    pub http_status: u16,
    /// Recorded body.
    pub body: RecordedBody,
    /// Serve at most this many times (`None`: always).
    pub times: Option<usize>,
}

impl Exchange {
    /// The request's method, for a single JSON-RPC request.
    pub fn method(&self) -> Option<&str> {
        self.request.get("method").and_then(Value::as_str)
    }

    /// The request's params, for a single JSON-RPC request.
    pub fn params(&self) -> Option<&Value> {
        self.request.get("params")
    }

    /// The recorded JSON body; panics for text or bytes bodies.
    pub fn json(&self) -> &Value {
        match &self.body {
            RecordedBody::Json(value) => value,
            other => panic!("exchange {:?} has no json body: {other:?}", self.label),
        }
    }

    /// The recorded `result` of a JSON-RPC reply.
    pub fn result(&self) -> &Value {
        &self.json()["result"]
    }

    /// A synthetic JSON-RPC 1.0 error reply to `method` + `params` (HTTP 500).
    pub fn rpc_error(method: &str, params: Value, code: i32, message: &str) -> Self {
        Self {
            label: Some(format!("synthetic {code}")),
            http_method: "POST".into(),
            http_path: "/".into(),
            request: json!({"method": method, "params": params, "id": 0, "jsonrpc": "1.0"}),
            http_status: 500,
            body: RecordedBody::Json(json!({
                "result": null,
                "error": {"code": code, "message": message},
                "id": 0
            })),
            times: None,
        }
    }

    /// This exchange, served at most `times` times.
    pub fn times(mut self, times: usize) -> Self {
        self.times = Some(times);
        self
    }
}

/// One fixture file.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Scenario name.
    pub scenario: String,
    /// Its exchanges, in recorded order.
    pub exchanges: Vec<Exchange>,
}

impl Fixture {
    /// Loads `<fixtures_dir>/<name>.json`.
    pub fn load(name: &str) -> Self {
        let path = fixtures_dir().join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
        let file: Value = serde_json::from_str(&text).expect("fixture is json");
        let exchanges = file["exchanges"]
            .as_array()
            .expect("fixture has exchanges")
            .iter()
            .map(|e| {
                let body = if let Some(hex) = e.get("response_hex").and_then(Value::as_str) {
                    RecordedBody::Bytes(hex::decode(hex).expect("response_hex is hex"))
                } else if let Some(text) = e["response"].get("raw_text").and_then(Value::as_str) {
                    RecordedBody::Text(text.to_owned())
                } else {
                    RecordedBody::Json(e["response"].clone())
                };
                let request = e.get("request").cloned().unwrap_or(Value::Null);
                Exchange {
                    label: e.get("label").and_then(Value::as_str).map(str::to_owned),
                    http_method: e
                        .get("http_method")
                        .and_then(Value::as_str)
                        .unwrap_or(if request.is_null() { "GET" } else { "POST" })
                        .to_owned(),
                    http_path: e["http_path"].as_str().expect("http_path").to_owned(),
                    request,
                    http_status: u16::try_from(e["http_status"].as_u64().expect("http_status"))
                        .expect("http status fits u16"),
                    body,
                    times: None,
                }
            })
            .collect();
        Self {
            scenario: file["scenario"].as_str().unwrap_or(name).to_owned(),
            exchanges,
        }
    }

    /// The exchange labelled `label`; panics if there is none.
    pub fn by_label(&self, label: &str) -> Exchange {
        self.exchanges
            .iter()
            .find(|e| e.label.as_deref() == Some(label))
            .unwrap_or_else(|| panic!("{}: no exchange labelled {label:?}", self.scenario))
            .clone()
    }

    /// Every exchange of a single JSON-RPC call of `method`.
    pub fn by_method(&self, method: &str) -> Vec<Exchange> {
        self.exchanges
            .iter()
            .filter(|e| e.method() == Some(method))
            .cloned()
            .collect()
    }

    /// The first exchange of `method` with exactly `params`; panics if there is none.
    pub fn call(&self, method: &str, params: Value) -> Exchange {
        self.exchanges
            .iter()
            .find(|e| e.method() == Some(method) && e.params() == Some(&params))
            .unwrap_or_else(|| panic!("{}: no {method} {params}", self.scenario))
            .clone()
    }
}

/// What the server holds.
struct State {
    /// Exchanges with how often each was served.
    exchanges: Mutex<Vec<(Exchange, usize)>>,
    /// Expected `user:password`.
    credentials: Mutex<(String, String)>,
    /// Every request seen: `(http method, path, body)`.
    log: Mutex<Vec<(String, String, Value)>>,
}

/// A running replay server; stops when dropped.
pub struct ReplayNode {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReplayNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReplayNode {
    /// Starts a server on a free loopback port answering from `exchanges` (first match wins)
    /// to clients that authenticate as `user`/`password`.
    pub async fn start(exchanges: Vec<Exchange>, user: &str, password: &str) -> Self {
        let state = Arc::new(State {
            exchanges: Mutex::new(exchanges.into_iter().map(|e| (e, 0)).collect()),
            credentials: Mutex::new((user.to_owned(), password.to_owned())),
            log: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let handler_state = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = handler_state.clone();
                async move { answer(&state, method, uri, headers, body) }
            },
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("replay server runs");
        });
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:<port>`, as the client names the node.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// Changes the expected credentials (a node restart with a new cookie).
    pub fn set_credentials(&self, user: &str, password: &str) {
        *self.state.credentials.lock().expect("lock") = (user.to_owned(), password.to_owned());
    }

    /// Every request seen so far: `(http method, path, JSON body or Null)`.
    pub fn log(&self) -> Vec<(String, String, Value)> {
        self.state.log.lock().expect("lock").clone()
    }
}

fn answer(state: &State, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state
        .log
        .lock()
        .expect("lock")
        .push((method.to_string(), path.clone(), json_body.clone()));

    if !authorized(state, &headers) {
        return reply(401, Body::empty(), None);
    }
    let mut exchanges = state.exchanges.lock().expect("lock");
    let mut take = |matches: &dyn Fn(&Exchange) -> bool| -> Option<Exchange> {
        let (exchange, served) = exchanges
            .iter_mut()
            .find(|(e, served)| matches(e) && e.times.is_none_or(|t| *served < t))?;
        *served += 1;
        Some(exchange.clone())
    };

    if method == Method::GET {
        return match take(&|e| e.http_method == "GET" && e.http_path == path) {
            Some(e) => reply_with(&e, None),
            None => reply(404, Body::from("Not found"), Some("text/html")),
        };
    }
    match &json_body {
        Value::Object(_) => {
            let (m, p) = (&json_body["method"], &json_body["params"]);
            match take(&|e| {
                e.http_path == path
                    && e.method().is_some()
                    && &e.request["method"] == m
                    && &e.request["params"] == p
            }) {
                Some(e) => reply_with(&e, Some(&json_body["id"])),
                None => unknown(&json_body),
            }
        }
        Value::Array(calls) => {
            let same_calls = |e: &Exchange| {
                e.request.as_array().is_some_and(|rec| {
                    rec.len() == calls.len()
                        && rec
                            .iter()
                            .zip(calls)
                            .all(|(r, c)| r["method"] == c["method"] && r["params"] == c["params"])
                })
            };
            if let Some(e) = take(&same_calls) {
                // Renumber the recorded replies with the ids of this request.
                let recorded_ids: Vec<Value> = e
                    .request
                    .as_array()
                    .expect("batch")
                    .iter()
                    .map(|r| r["id"].clone())
                    .collect();
                let mut replies = e.json().as_array().expect("batch reply").clone();
                for reply in &mut replies {
                    let at = recorded_ids
                        .iter()
                        .position(|id| *id == reply["id"])
                        .expect("id");
                    reply["id"] = calls[at]["id"].clone();
                }
                return reply(
                    200,
                    Body::from(Value::Array(replies).to_string()),
                    Some("application/json"),
                );
            }
            let replies: Vec<Value> = calls
                .iter()
                .map(|call| {
                    match take(&|e| e.method().is_some() && e.request["method"] == call["method"] && e.request["params"] == call["params"]) {
                        Some(e) => {
                            let mut body = e.json().clone();
                            body["id"] = call["id"].clone();
                            body
                        }
                        None => json!({"result": null, "error": {"code": -32601, "message": "Method not found"}, "id": call["id"]}),
                    }
                })
                .collect();
            reply(
                200,
                Body::from(Value::Array(replies).to_string()),
                Some("application/json"),
            )
        }
        _ => reply(
            500,
            Body::from(
                r#"{"result":null,"error":{"code":-32700,"message":"Parse error"},"id":null}"#,
            ),
            Some("application/json"),
        ),
    }
}

/// No recording for this call: answer like a node that does not know it, and say so in the
/// message so a test failure is easy to read.
fn unknown(request: &Value) -> Response {
    let body = json!({
        "result": null,
        "error": {"code": -32601, "message": format!("replay: no recorded reply for {} {}", request["method"], request["params"])},
        "id": request["id"],
    });
    reply(404, Body::from(body.to_string()), Some("application/json"))
}

fn authorized(state: &State, headers: &HeaderMap) -> bool {
    use base64::Engine as _;
    let (user, password) = state.credentials.lock().expect("lock").clone();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

fn reply_with(exchange: &Exchange, id: Option<&Value>) -> Response {
    match &exchange.body {
        RecordedBody::Json(value) => {
            let mut value = value.clone();
            if let (Some(id), Some(object)) = (id, value.as_object_mut()) {
                object.insert("id".into(), id.clone());
            }
            reply(
                exchange.http_status,
                Body::from(value.to_string()),
                Some("application/json"),
            )
        }
        RecordedBody::Text(text) => reply(
            exchange.http_status,
            Body::from(text.clone()),
            Some("text/plain"),
        ),
        RecordedBody::Bytes(bytes) => reply(
            exchange.http_status,
            Body::from(bytes.clone()),
            Some("application/octet-stream"),
        ),
    }
}

fn reply(status: u16, body: Body, content_type: Option<&str>) -> Response {
    let mut builder =
        Response::builder().status(StatusCode::from_u16(status).expect("valid status"));
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    builder.body(body).expect("valid response")
}
