//! The cosigner's HTTP API (axum), called only by coinhubd.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /healthz` | — | `200 ok` (unauthenticated) |
//! | `POST /v1/sign/utxo` | [`UtxoSignRequest`] | `200` [`UtxoSignReply`] |
//! | `POST /v1/sign/evm` | [`EvmSignRequest`] | `200` [`EvmSignReply`] |
//!
//! Every `/v1` request must be signed (see [`super::auth`]); the check runs over the raw body
//! before it is parsed. Answers other than 200:
//! - `401 {"error":"unauthorized","reason":…}`: missing headers, bad signature, stale
//!   timestamp, replayed nonce;
//! - `400 {"error":"bad_request","reason":…}`: a body that is not the route's JSON;
//! - `422 {"error":"refused","rule":…,"reason":…}`: a rule refused the spend;
//! - `503 {"error":"unavailable","reason":…}`: Vault could not decrypt key B, or the
//!   cosigner's own node could not check the inputs (transient: retry later);
//! - `500 {"error":"internal","reason":"internal error; see the cosigner's log"}`.
//!
//! [`UtxoSignReply`]: super::verify::UtxoSignReply
//! [`EvmSignReply`]: super::verify::EvmSignReply

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::auth::{self, AuthError};
use super::verify::{Cosigner, EvmSignRequest, SignError, UtxoSignRequest};

/// Path of the UTXO signing route.
pub const SIGN_UTXO_PATH: &str = "/v1/sign/utxo";
/// Path of the EVM signing route.
pub const SIGN_EVM_PATH: &str = "/v1/sign/evm";

/// The router with every route; `/v1` routes require a signed request.
pub fn router(cosigner: Arc<Cosigner>) -> Router {
    let body_max_bytes = cosigner.config().api.body_max_bytes;
    let signed = Router::new()
        .route(SIGN_UTXO_PATH, post(sign_utxo))
        .route(SIGN_EVM_PATH, post(sign_evm))
        .route_layer(middleware::from_fn_with_state(
            cosigner.clone(),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(signed)
        .layer(DefaultBodyLimit::max(body_max_bytes))
        .with_state(cosigner)
}

fn error_body(status: StatusCode, error: &str, reason: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": error, "reason": reason })),
    )
        .into_response()
}

/// Buffers the body (up to `[api] body_max_bytes`), authenticates the request over it and
/// passes it on unchanged; 401 otherwise.
async fn authenticate(
    State(cosigner): State<Arc<Cosigner>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let limit = cosigner.config().api.body_max_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return error_body(
                StatusCode::PAYLOAD_TOO_LARGE,
                "bad_request",
                &format!("body larger than {limit} bytes"),
            );
        }
    };
    let api = &cosigner.config().api;
    let outcome = auth::authenticate(
        cosigner.pool(),
        &api.hmac_secret,
        api.max_clock_skew_secs,
        &parts.headers,
        parts.method.as_str(),
        parts.uri.path(),
        &bytes,
    )
    .await;
    match outcome {
        Ok(()) => {}
        Err(AuthError::Store(error)) => {
            tracing::error!(%error, "nonce store failed");
            return error_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the cosigner's log",
            );
        }
        Err(error) => {
            tracing::warn!(path = %parts.uri.path(), %error, "unauthenticated request refused");
            return error_body(StatusCode::UNAUTHORIZED, "unauthorized", &error.to_string());
        }
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

fn sign_error(chain: &str, request_ids: &[uuid::Uuid], error: SignError) -> Response {
    match error {
        SignError::Refused(refused) => {
            tracing::warn!(%chain, ?request_ids, rule = refused.rule, reason = %refused.reason,
                "spend refused");
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({
                    "error": "refused",
                    "rule": refused.rule,
                    "reason": refused.reason,
                })),
            )
                .into_response()
        }
        SignError::KeyUnavailable(error) => {
            tracing::error!(%error, "key b cannot be decrypted");
            error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                &error.to_string(),
            )
        }
        SignError::NodeUnavailable(reason) => {
            tracing::error!(%chain, ?request_ids, %reason, "the cosigner's node cannot check the inputs");
            error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                &format!("the cosigner's node cannot check the inputs: {reason}"),
            )
        }
        error => {
            tracing::error!(%error, "signing request failed");
            error_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the cosigner's log",
            )
        }
    }
}

fn bad_request(error: &serde_json::Error) -> Response {
    error_body(StatusCode::BAD_REQUEST, "bad_request", &error.to_string())
}

async fn sign_utxo(State(cosigner): State<Arc<Cosigner>>, body: Bytes) -> Response {
    let request: UtxoSignRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return bad_request(&error),
    };
    match cosigner.sign_utxo(&request).await {
        Ok(reply) => axum::Json(reply).into_response(),
        Err(error) => sign_error(&request.chain, &request.request_ids, error),
    }
}

async fn sign_evm(State(cosigner): State<Arc<Cosigner>>, body: Bytes) -> Response {
    let request: EvmSignRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return bad_request(&error),
    };
    match cosigner.sign_evm(&request).await {
        Ok(reply) => axum::Json(reply).into_response(),
        Err(error) => sign_error(&request.chain, &request.request_ids, error),
    }
}
