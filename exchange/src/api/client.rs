//! A Rust client of the member API that signs its requests ([`super::auth`]).
//!
//! ```no_run
//! # async fn example() -> Result<(), coinhub_exchange::api::client::ClientError> {
//! use coinhub_exchange::api::client::ApiClient;
//! use secrecy::SecretString;
//! let key_id = "ck_0123456789abcdef0123456789abcdef".parse().expect("key id");
//! let secret = SecretString::from("…64 hex digits from `coinhub-exchange api-key create`…");
//! let client = ApiClient::new("http://127.0.0.1:8781", key_id, secret)?;
//! let balances = client.balances().await?;
//! # Ok(()) }
//! ```
//!
//! Every call has a timeout ([`REQUEST_TIMEOUT`]). [`ApiClient::prepare`] and
//! [`ApiClient::send`] expose one signed request as data, so tests can replay or alter it.

use std::time::Duration;

use reqwest::Method;
use secrecy::SecretString;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::auth::{self, SignedHeaders};
use super::error::ErrorBody;
use super::keys::KeyId;
use super::routes::{BalancesView, WithdrawalRequestBody, WithdrawalView};
use crate::trading::{DepthView, MarketView, NewOrder, OrderView, TradeView};

/// Longest wait for one answer, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The body's `error.code`, e.g. `insufficient_funds`.
        code: String,
        /// The body's `error.message`.
        message: String,
        /// The `Retry-After` header in seconds, if any (a `429 rate_limited` has one).
        retry_after_secs: Option<u64>,
    },
    /// No answer (connection, timeout) or a bad base URL.
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// An answer that is not the expected JSON.
    #[error("unexpected answer {status}: {reason}")]
    Decode {
        /// HTTP status.
        status: u16,
        /// What did not parse.
        reason: String,
    },
    /// A signed route was called on a client without a key.
    #[error("this client has no api key")]
    NoCredentials,
}

impl ClientError {
    /// The API error code, if the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Seconds to wait before retrying, from the answer's `Retry-After` header (a `429
    /// rate_limited` has one).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Api {
                retry_after_secs, ..
            } => *retry_after_secs,
            _ => None,
        }
    }
}

/// One request ready to send: what is signed and the signature headers (absent for public
/// routes). Fields are public so tests can alter a signed request or send it twice.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The method.
    pub method: Method,
    /// `path?query`, exactly as signed and sent.
    pub target: String,
    /// The body (JSON, or empty).
    pub body: Vec<u8>,
    /// The signature headers.
    pub headers: Option<SignedHeaders>,
}

/// A raw answer.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
    /// The `Retry-After` header in seconds, if present and a number.
    pub retry_after_secs: Option<u64>,
}

/// The client. Cheap to clone.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: String,
    credentials: Option<(KeyId, SecretString)>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base_url", &self.base_url)
            .field("key_id", &self.credentials.as_ref().map(|(id, _)| id))
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client of the server at `base_url` (e.g. `http://127.0.0.1:8781`) signing with the
    /// key `key_id` and its `secret`.
    ///
    /// Errors: [`ClientError::Transport`] if the HTTP client cannot be built.
    pub fn new(base_url: &str, key_id: KeyId, secret: SecretString) -> Result<Self, ClientError> {
        let mut client = Self::public(base_url)?;
        client.credentials = Some((key_id, secret));
        Ok(client)
    }

    /// A client without a key: only the public routes work.
    ///
    /// Errors: [`ClientError::Transport`] if the HTTP client cannot be built.
    pub fn public(base_url: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            credentials: None,
        })
    }

    /// The key id, if any.
    pub fn key_id(&self) -> Option<&KeyId> {
        self.credentials.as_ref().map(|(id, _)| id)
    }

    /// Signs `method target body` now with a fresh nonce.
    ///
    /// Errors: [`ClientError::NoCredentials`].
    pub fn prepare(
        &self,
        method: Method,
        target: &str,
        body: Vec<u8>,
    ) -> Result<Prepared, ClientError> {
        let (key_id, secret) = self
            .credentials
            .as_ref()
            .ok_or(ClientError::NoCredentials)?;
        let headers = auth::sign_request(key_id, secret, method.as_str(), target, &body);
        Ok(Prepared {
            method,
            target: target.to_owned(),
            body,
            headers: Some(headers),
        })
    }

    /// [`Self::prepare`] with a given timestamp (Unix seconds) and nonce.
    ///
    /// Errors: [`ClientError::NoCredentials`].
    pub fn prepare_at(
        &self,
        method: Method,
        target: &str,
        body: Vec<u8>,
        timestamp: i64,
        nonce: &str,
    ) -> Result<Prepared, ClientError> {
        let (key_id, secret) = self
            .credentials
            .as_ref()
            .ok_or(ClientError::NoCredentials)?;
        let headers = auth::sign_request_at(
            key_id,
            secret,
            method.as_str(),
            target,
            &body,
            timestamp,
            nonce,
        );
        Ok(Prepared {
            method,
            target: target.to_owned(),
            body,
            headers: Some(headers),
        })
    }

    /// Sends a prepared request and returns the answer as it came, whatever the status.
    ///
    /// Errors: [`ClientError::Transport`].
    pub async fn send(&self, prepared: &Prepared) -> Result<RawResponse, ClientError> {
        let url = format!("{}{}", self.base_url, prepared.target);
        let mut request = self.http.request(prepared.method.clone(), url);
        if let Some(headers) = &prepared.headers {
            for (name, value) in headers.pairs() {
                request = request.header(name, value);
            }
        }
        if !prepared.body.is_empty() {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(prepared.body.clone());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let retry_after_secs = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok()?.parse().ok());
        let body = response.bytes().await?.to_vec();
        Ok(RawResponse {
            status,
            body,
            retry_after_secs,
        })
    }

    /// Sends a prepared request and parses a 2xx answer as `T`, or the error body.
    ///
    /// Errors: [`ClientError::Api`] for an error answer; [`ClientError::Transport`];
    /// [`ClientError::Decode`].
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        prepared: &Prepared,
    ) -> Result<T, ClientError> {
        let raw = self.send(prepared).await?;
        let decode = |reason: serde_json::Error| ClientError::Decode {
            status: raw.status,
            reason: reason.to_string(),
        };
        if (200..300).contains(&raw.status) {
            return serde_json::from_slice(&raw.body).map_err(decode);
        }
        let error: ErrorBody = serde_json::from_slice(&raw.body).map_err(decode)?;
        Err(ClientError::Api {
            status: raw.status,
            code: error.error.code,
            message: error.error.message,
            retry_after_secs: raw.retry_after_secs,
        })
    }

    async fn signed<T: DeserializeOwned>(
        &self,
        method: Method,
        target: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(body) => serde_json::to_vec(body).map_err(|e| ClientError::Decode {
                status: 0,
                reason: format!("serializing the request: {e}"),
            })?,
            None => Vec::new(),
        };
        let prepared = self.prepare(method, target, body)?;
        self.send_json(&prepared).await
    }

    async fn public_get<T: DeserializeOwned>(&self, target: &str) -> Result<T, ClientError> {
        let prepared = Prepared {
            method: Method::GET,
            target: target.to_owned(),
            body: Vec::new(),
            headers: None,
        };
        self.send_json(&prepared).await
    }

    /// `GET /v1/balances`.
    pub async fn balances(&self) -> Result<BalancesView, ClientError> {
        self.signed(Method::GET, "/v1/balances", None::<&()>).await
    }

    /// `POST /v1/orders`.
    pub async fn place_order(&self, order: &NewOrder) -> Result<OrderView, ClientError> {
        self.signed(Method::POST, "/v1/orders", Some(order)).await
    }

    /// `DELETE /v1/orders/{market}/{id}`.
    pub async fn cancel_order(&self, market: &str, id: u64) -> Result<OrderView, ClientError> {
        let target = format!("/v1/orders/{}/{id}", encode(market));
        self.signed(Method::DELETE, &target, None::<&()>).await
    }

    /// `GET /v1/orders/open`.
    pub async fn open_orders(&self, market: Option<&str>) -> Result<Vec<OrderView>, ClientError> {
        let target = with_query("/v1/orders/open", &[("market", market.map(str::to_owned))]);
        self.signed(Method::GET, &target, None::<&()>).await
    }

    /// `GET /v1/orders/history`.
    pub async fn order_history(
        &self,
        market: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Vec<OrderView>, ClientError> {
        let target = with_query(
            "/v1/orders/history",
            &[
                ("market", market.map(str::to_owned)),
                ("limit", limit.map(|l| l.to_string())),
            ],
        );
        self.signed(Method::GET, &target, None::<&()>).await
    }

    /// `GET /v1/trades`.
    pub async fn trades(
        &self,
        market: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Vec<TradeView>, ClientError> {
        let target = with_query(
            "/v1/trades",
            &[
                ("market", market.map(str::to_owned)),
                ("limit", limit.map(|l| l.to_string())),
            ],
        );
        self.signed(Method::GET, &target, None::<&()>).await
    }

    /// `POST /v1/withdrawals`.
    pub async fn request_withdrawal(
        &self,
        body: &WithdrawalRequestBody,
    ) -> Result<WithdrawalView, ClientError> {
        self.signed(Method::POST, "/v1/withdrawals", Some(body))
            .await
    }

    /// `GET /v1/withdrawals`.
    pub async fn withdrawals(&self) -> Result<Vec<WithdrawalView>, ClientError> {
        self.signed(Method::GET, "/v1/withdrawals", None::<&()>)
            .await
    }

    /// `GET /v1/markets` (public).
    pub async fn markets(&self) -> Result<Vec<MarketView>, ClientError> {
        self.public_get("/v1/markets").await
    }

    /// `GET /v1/depth/{market}` (public).
    pub async fn depth(
        &self,
        market: &str,
        levels: Option<usize>,
    ) -> Result<DepthView, ClientError> {
        let path = format!("/v1/depth/{}", encode(market));
        let target = with_query(&path, &[("levels", levels.map(|l| l.to_string()))]);
        self.public_get(&target).await
    }

    /// `GET /healthz`: true if the server answers `200`.
    ///
    /// Errors: [`ClientError::Transport`].
    pub async fn healthy(&self) -> Result<bool, ClientError> {
        let prepared = Prepared {
            method: Method::GET,
            target: "/healthz".to_owned(),
            body: Vec::new(),
            headers: None,
        };
        Ok(self.send(&prepared).await?.status == 200)
    }
}

/// Percent-encodes one path segment or query value (form encoding; market names need none).
fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `path` with the present `(name, value)` pairs as a query string.
fn with_query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={}", encode(v))))
        .collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_skip_absent_values_and_encode() {
        assert_eq!(with_query("/v1/trades", &[("market", None)]), "/v1/trades");
        assert_eq!(
            with_query(
                "/v1/trades",
                &[
                    ("market", Some("btc_usdt".into())),
                    ("limit", Some("5".into()))
                ]
            ),
            "/v1/trades?market=btc_usdt&limit=5"
        );
        assert_eq!(encode("a b&c"), "a+b%26c");
    }
}
