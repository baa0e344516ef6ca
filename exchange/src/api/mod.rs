//! The member HTTP API (axum, JSON): trading, balances and withdrawals, one API key per
//! member, every private request HMAC-signed ([`auth`]).
//!
//! | route | auth | body / query | answer |
//! |---|---|---|---|
//! | `GET /healthz` | — | — | `200 ok` |
//! | `GET /v1/markets` | — | — | `200 [MarketView]` |
//! | `GET /v1/depth/{market}` | — | `?levels=` (default 50, at most 1000) | `200 DepthView` |
//! | `POST /v1/orders` | signed | [`NewOrder`](crate::trading::NewOrder) | `201 OrderView` |
//! | `DELETE /v1/orders/{market}/{id}` | signed | — | `200 OrderView` (cancelled) |
//! | `GET /v1/orders/open` | signed | `?market=` (optional) | `200 [OrderView]` |
//! | `GET /v1/orders/history` | signed | `?market=&limit=` (default 100) | `200 [OrderView]` |
//! | `GET /v1/trades` | signed | `?market=&limit=` (default 100) | `200 [TradeView]` |
//! | `GET /v1/balances` | signed | — | `200` [`BalancesView`] |
//! | `POST /v1/withdrawals` | signed | [`WithdrawalRequestBody`] | `201` (or `200` for a repeated id) [`WithdrawalView`] |
//! | `GET /v1/withdrawals` | signed | — | `200 [WithdrawalView]` |
//!
//! A signed request acts for the API key's member only; the member is never taken from the
//! request. Amounts are decimal strings of base units everywhere.
//!
//! Every order answered before a request is in its answer: open orders come from the books;
//! order history and trades from the read models `orders` and `trades`, which the request
//! first brings up to every settled batch (`crate::trading::projection`), so under a peak
//! they may take as long as the projection is behind.
//!
//! Errors are `{"error":{"code":…,"message":…}}` ([`error`]):
//! - `401`: `missing_header`, `malformed_header`, `unknown_key` (also a revoked key),
//!   `bad_signature`, `stale_timestamp`, `replayed_nonce`; nothing ran;
//! - `400`: `invalid_body`, `invalid_query`, `invalid_path`, `unknown_market`,
//!   `invalid_quantity`, `price_off_tick`, `quantity_off_lot`, `below_minimum`,
//!   `invalid_amount`, `invalid_asset`, `invalid_destination`, `unknown_asset`;
//! - `403 foreign_order`; `404 unknown_order`, `not_found`; `405 method_not_allowed`;
//!   `409 id_reused`; `413 body_too_large`; `422 insufficient_funds`, `rejected` (the
//!   matcher refused the order, e.g. post-only that would cross; the message has the reason);
//! - `429 rate_limited` with a `Retry-After` header (whole seconds, rounded up): the API
//!   key's rate limit, or its client address's limit of failed authentications, is spent
//!   ([`limits`]); nothing ran and the nonce is not spent, so the same signed request may be
//!   sent again after the wait;
//! - `503 unavailable` (trading stopping or not configured; retry), `500 internal` (the cause
//!   is logged, never sent).
//!
//! [`client`] is a Rust client that signs its requests.

pub mod auth;
pub mod client;
pub mod error;
pub mod keys;
pub mod limits;
mod routes;
pub mod secrets;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, OriginalUri, Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::AssetsConfig;
use crate::trading::TradingEngine;
use limits::{ClientNetwork, Limiter, RateLimits, Refusal};
use secrets::ApiSecrets;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use routes::{
    BalanceView, BalancesView, DepthQuery, HistoryQuery, OpenOrdersQuery, WithdrawalRequestBody,
    WithdrawalView,
};

/// Largest accepted request body, in bytes.
pub const BODY_MAX_BYTES: usize = 64 * 1024;
/// How often stored nonces are pruned.
pub const NONCE_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    secrets: ApiSecrets,
    assets: AssetsConfig,
    max_clock_skew_secs: u64,
    limiter: Limiter,
    trading: Option<TradingEngine>,
}

impl ApiState {
    /// The state of a server on the ledger `pool`, opening API key secrets with `secrets`,
    /// with the withdrawal fees of `assets`, the
    /// timestamp window `max_clock_skew_secs` (`[api] max_clock_skew_secs`) and the trading
    /// engine. Without an engine the trading routes answer `503 unavailable` (a ledger-only
    /// deployment, or tests of the other routes). The rate limits are the defaults
    /// ([`RateLimits::default`]); [`ApiState::with_limits`] sets them.
    pub fn new(
        pool: PgPool,
        secrets: ApiSecrets,
        assets: AssetsConfig,
        max_clock_skew_secs: u64,
        trading: Option<TradingEngine>,
    ) -> Self {
        Self::with_limits(
            pool,
            secrets,
            assets,
            max_clock_skew_secs,
            RateLimits::default(),
            trading,
        )
    }

    /// [`ApiState::new`] with the rate limits `limits` (`[api] requests_per_second`,
    /// `burst`, `unauthenticated_requests_per_second`, `unauthenticated_burst`; see
    /// [`limits`]).
    pub fn with_limits(
        pool: PgPool,
        secrets: ApiSecrets,
        assets: AssetsConfig,
        max_clock_skew_secs: u64,
        limits: RateLimits,
        trading: Option<TradingEngine>,
    ) -> Self {
        assert!(max_clock_skew_secs > 0, "a zero skew refuses every request");
        Self {
            inner: Arc::new(Inner {
                pool,
                secrets,
                assets,
                max_clock_skew_secs,
                limiter: Limiter::new(limits),
                trading,
            }),
        }
    }

    /// The rate limits in force.
    pub fn limits(&self) -> RateLimits {
        self.inner.limiter.limits()
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub(crate) fn assets(&self) -> &AssetsConfig {
        &self.inner.assets
    }

    pub(crate) fn trading(&self) -> Result<&TradingEngine, ApiError> {
        self.inner.trading.as_ref().ok_or_else(|| {
            ApiError::unavailable(
                "trading route called without a trading engine",
                &"not enabled",
            )
        })
    }
}

/// Every route (see the module docs).
pub fn router(state: ApiState) -> Router {
    let signed = Router::new()
        .route("/v1/orders", post(routes::place_order))
        .route("/v1/orders/{market}/{id}", delete(routes::cancel_order))
        .route("/v1/orders/open", get(routes::open_orders))
        .route("/v1/orders/history", get(routes::order_history))
        .route("/v1/trades", get(routes::trades))
        .route("/v1/balances", get(routes::balances))
        .route(
            "/v1/withdrawals",
            post(routes::request_withdrawal).get(routes::list_withdrawals),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/markets", get(routes::markets))
        .route("/v1/depth/{market}", get(routes::depth))
        .merge(signed)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_MAX_BYTES))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled (in-flight requests
/// finish), pruning stored nonces every [`NONCE_PRUNE_INTERVAL`] and idle rate-limiter
/// entries every [`limits::LIMITER_PRUNE_INTERVAL`]. Each request's TCP peer address is
/// passed to the handlers (the per-address limit of failed authentications).
///
/// Errors: the listener's.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "member api listening");
    }
    let pool = state.pool().clone();
    let skew = state.inner.max_clock_skew_secs;
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let (served, (), ()) = tokio::join!(
        server,
        prune_loop(pool, skew, shutdown.clone()),
        limiter_prune_loop(state, shutdown)
    );
    served
}

/// Keeps the rate limiters' memory bounded (see [`limits`]).
async fn limiter_prune_loop(state: ApiState, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(limits::LIMITER_PRUNE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let (keys, networks) = state.inner.limiter.prune();
        tracing::trace!(keys, networks, "rate limiter entries kept after pruning");
    }
}

async fn prune_loop(pool: PgPool, max_clock_skew_secs: u64, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(NONCE_PRUNE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        match auth::prune_nonces(&pool, max_clock_skew_secs).await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "expired api nonces pruned"),
            Err(error) => tracing::warn!(%error, "pruning api nonces failed; retrying later"),
        }
    }
}

/// `429 rate_limited` with `Retry-After` (whole seconds, rounded up).
fn rate_limited(message: String, refusal: Refusal) -> Response {
    let mut response =
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(refusal.retry_after_secs()));
    response
}

/// The refusal of a request from `network` whose failed authentications are over the limit.
fn network_limited(state: &ApiState, network: ClientNetwork, refusal: Refusal) -> Response {
    let limits = state.limits();
    tracing::debug!(
        ?network,
        retry_after_secs = refusal.retry_after_secs(),
        "signed request refused: too many failed authentications from its address"
    );
    rate_limited(
        format!(
            "too many requests failing authentication from this address: limit {} per second, \
             burst {}; retry after {} s",
            limits.unauthenticated_requests_per_second,
            limits.unauthenticated_burst,
            refusal.retry_after_secs()
        ),
        refusal,
    )
}

/// Refuses requests from a client address over its limit of failed authentications
/// (`429`, before anything else); buffers the body (up to [`BODY_MAX_BYTES`]);
/// authenticates the request over it ([`auth::verify_request`]); charges the API key's rate
/// limit (`429`, nonce not spent); records the nonce ([`auth::Verified::record_nonce`]);
/// and passes the request on with the [`auth::Authenticated`] member as an extension. A
/// failed authentication is `401`, charged to the client address (`429` once that is over
/// its limit).
async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let network = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(ClientNetwork::Unknown, |peer| {
            ClientNetwork::of(peer.0.ip())
        });
    let limiter = &state.inner.limiter;
    if let Err(refusal) = limiter.check_network(network) {
        return network_limited(&state, network, refusal);
    }
    let bytes = match axum::body::to_bytes(body, BODY_MAX_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("body larger than {BODY_MAX_BYTES} bytes"),
            )
            .into_response();
        }
    };
    // The target as the client sent it, also if this router is nested.
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or_else(|| parts.uri.clone(), |original| original.0.clone());
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let verified = auth::verify_request(
        state.pool(),
        &state.inner.secrets,
        state.inner.max_clock_skew_secs,
        &parts.headers,
        parts.method.as_str(),
        target,
        &bytes,
    )
    .await;
    // The key's budget is charged after the signature verified (nobody else can spend it)
    // and before the nonce is recorded (a refused request can be sent again unchanged).
    let outcome = match verified {
        Ok(verified) => match limiter.check_key(verified.key_id()) {
            Ok(()) => verified.record_nonce(state.pool()).await,
            Err(refusal) => {
                let limits = state.limits();
                tracing::debug!(key_id = %verified.key_id(),
                    retry_after_secs = refusal.retry_after_secs(),
                    "signed request refused: api key over its rate limit");
                return rate_limited(
                    format!(
                        "rate limit of api key {} exceeded: {} requests per second, burst {}; \
                         retry after {} s",
                        verified.key_id(),
                        limits.requests_per_second,
                        limits.burst,
                        refusal.retry_after_secs()
                    ),
                    refusal,
                );
            }
        },
        Err(error) => Err(error),
    };
    match outcome {
        Ok(authenticated) => {
            parts.extensions.insert(authenticated);
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Err(auth::AuthError::Store(error)) => {
            ApiError::internal("api key or nonce store failed", &error).into_response()
        }
        Err(error) => {
            tracing::warn!(path = %uri.path(), code = error.code(), %error,
                "unauthenticated request refused");
            if let Err(refusal) = limiter.record_failure(network) {
                return network_limited(&state, network, refusal);
            }
            ApiError::new(StatusCode::UNAUTHORIZED, error.code(), error.to_string()).into_response()
        }
    }
}
