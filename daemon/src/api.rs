//! The admin HTTP API (axum), used by the `coinhub` CLI. Every `/v1` route needs
//! `Authorization: Bearer <[admin] token>`; `/healthz` and `/metrics` are open (bind the
//! listener to a private interface).
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | `200 ok` |
//! | `GET /metrics` | Prometheus text |
//! | `GET /v1/status` | `{"chains": [ChainStatus...]}` |
//! | `POST /v1/addresses` `{"member","chain"}` | `DepositAddress` |
//! | `GET /v1/deposits?member=&chain=&status=&limit=` | `[DepositView...]`, newest first |
//! | `GET /v1/withdrawals?member=&status=&limit=` | `[WithdrawalRow...]`, newest first |
//! | `GET /v1/withdrawals/{id}` | `WithdrawalDetail` (with the payout's signed transactions) |
//! | `POST /v1/withdrawals/{id}/cancel` `{"reason","operator"}` | `WithdrawalRow` (now `failed`); 409 once signed |
//!
//! Errors are `{"error": {"code": "...", "message": "..."}}` with a 4xx/5xx status; internal
//! error text is logged, never sent.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bigdecimal::BigDecimal;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::commands::AddressService;
use crate::metrics::Metrics;
use crate::status::{ChainStatus, StatusBoard};
use crate::withdrawals::store;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The database.
    pub pool: PgPool,
    /// Address issuing.
    pub addresses: AddressService,
    /// Watcher status.
    pub status: StatusBoard,
    /// Metrics.
    pub metrics: Metrics,
    /// The bearer token.
    pub token: SecretString,
}

/// The router with every route.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/addresses", post(new_address))
        .route("/v1/deposits", get(deposits))
        .route("/v1/withdrawals", get(withdrawals))
        .route("/v1/withdrawals/{id}", get(withdrawal))
        .route("/v1/withdrawals/{id}/cancel", post(cancel_withdrawal))
        .with_state(state)
}

/// An error answer: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "admin api internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see coinhubd's log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let expected = state.token.expose_secret().as_bytes();
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), expected) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
        )),
    }
}

/// Compares without an early exit, so response time does not reveal a token's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}

#[derive(Serialize)]
struct StatusView {
    chains: Vec<ChainStatus>,
}

async fn status(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<StatusView>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(StatusView {
        chains: state.status.snapshot(),
    }))
}

#[derive(Deserialize)]
struct NewAddress {
    member: String,
    chain: String,
}

async fn new_address(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Json(request): Json<NewAddress>,
) -> Result<Json<crate::addresses::DepositAddress>, ApiError> {
    authorize(&state, &headers)?;
    let member = request.member.parse().map_err(|reason: String| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_member", reason)
    })?;
    match state
        .addresses
        .deposit_address(&request.chain, &member)
        .await
    {
        Ok(address) => Ok(Json(address)),
        Err(error) if error.is_client_error() => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_chain",
            error.to_string(),
        )),
        Err(error) => Err(ApiError::internal(error)),
    }
}

#[derive(Deserialize)]
struct DepositFilter {
    member: Option<String>,
    chain: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

/// A deposit as the API shows it; `amount` is a decimal string of base units.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct DepositView {
    deposit_id: Uuid,
    chain: String,
    asset: String,
    member: String,
    address: String,
    txid: String,
    index: i32,
    #[serde(serialize_with = "integer_string")]
    amount: BigDecimal,
    decimals: i16,
    block_height: i64,
    block_hash: String,
    status: String,
    confirmations: i64,
}

fn integer_string<S: serde::Serializer>(
    value: &BigDecimal,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&value.to_plain_string())
}

async fn deposits(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(filter): Query<DepositFilter>,
) -> Result<Json<Vec<DepositView>>, ApiError> {
    authorize(&state, &headers)?;
    let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
    // Confirmations count from the watcher's stored tip; orphaned deposits have none.
    let rows: Vec<DepositView> = sqlx::query_as(
        "SELECT d.deposit_id, d.chain, d.asset, d.member_id AS member, d.address, d.txid,
                d.idx AS index, d.amount, d.decimals, d.block_height, d.block_hash, d.status,
                CASE WHEN d.status = 'orphaned' THEN 0
                     ELSE GREATEST(COALESCE(tip.height, d.block_height) - d.block_height + 1, 0)
                END AS confirmations
         FROM deposits d
         LEFT JOIN LATERAL (SELECT max(height) AS height FROM chain_blocks b WHERE b.chain = d.chain) tip ON true
         WHERE ($1::text IS NULL OR d.member_id = $1)
           AND ($2::text IS NULL OR d.chain = $2)
           AND ($3::text IS NULL OR d.status = $3)
         ORDER BY d.detected_at DESC LIMIT $4",
    )
    .bind(filter.member)
    .bind(filter.chain)
    .bind(filter.status)
    .bind(limit)
    .fetch_all(&state.pool)
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(rows))
}

#[derive(Deserialize)]
struct WithdrawalFilter {
    member: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

async fn withdrawals(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(filter): Query<WithdrawalFilter>,
) -> Result<Json<Vec<store::WithdrawalRow>>, ApiError> {
    authorize(&state, &headers)?;
    let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
    store::list(
        &state.pool,
        filter.member.as_deref(),
        filter.status.as_deref(),
        limit,
    )
    .await
    .map(Json)
    .map_err(ApiError::internal)
}

async fn withdrawal(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Result<Json<store::WithdrawalDetail>, ApiError> {
    authorize(&state, &headers)?;
    let mut conn = state.pool.acquire().await.map_err(ApiError::internal)?;
    match store::show(&mut conn, id)
        .await
        .map_err(ApiError::internal)?
    {
        Some(detail) => Ok(Json(detail)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("withdrawal {id} does not exist"),
        )),
    }
}

#[derive(Deserialize)]
struct CancelRequest {
    reason: String,
    operator: String,
}

async fn cancel_withdrawal(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    Json(request): Json<CancelRequest>,
) -> Result<Json<store::WithdrawalRow>, ApiError> {
    authorize(&state, &headers)?;
    match store::cancel(&state.pool, id, &request.reason, &request.operator).await {
        Ok(row) => Ok(Json(row)),
        Err(error @ store::CancelError::NotFound(_)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            error.to_string(),
        )),
        Err(error @ store::CancelError::TooLate { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_signed",
            error.to_string(),
        )),
        Err(error @ store::CancelError::NoReason) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "no_reason",
            error.to_string(),
        )),
        Err(store::CancelError::Database(error)) => Err(ApiError::internal(error)),
    }
}
