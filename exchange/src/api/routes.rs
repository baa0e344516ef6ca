//! The route handlers and their JSON shapes (see the table in [`super`]).

use std::collections::BTreeMap;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ApiState;
use super::auth::Authenticated;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::journal;
use crate::ledger::AccountKind;
use crate::trading::{DepthView, MarketView, NewOrder, OrderView, TradeView, TradingError};
use crate::withdrawals::{self, NewWithdrawal, RequestError, Withdrawal};

/// Default `limit` of the history and trades routes.
pub const LIST_LIMIT_DEFAULT: u32 = 100;
/// Largest `limit` (the engine caps there too).
pub const LIST_LIMIT_MAX: u32 = 1_000;
/// Default `levels` of the depth route.
pub const DEPTH_LEVELS_DEFAULT: usize = 50;
/// Largest `levels`.
pub const DEPTH_LEVELS_MAX: usize = 1_000;

/// The answer of a trading error: 4xx with its code, or a logged 5xx.
fn trading_error(error: TradingError) -> ApiError {
    if !error.is_client_error() {
        return match error {
            TradingError::Unavailable(_) => ApiError::unavailable("trading unavailable", &error),
            _ => ApiError::internal("trading call failed", &error),
        };
    }
    let status = match &error {
        TradingError::UnknownOrder(_) => StatusCode::NOT_FOUND,
        TradingError::ForeignOrder(_) => StatusCode::FORBIDDEN,
        TradingError::InsufficientFunds { .. } | TradingError::Rejected { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, error.code(), error.to_string())
}

/// `POST /v1/orders`.
pub(super) async fn place_order(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
    ApiJson(order): ApiJson<NewOrder>,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    let view = state
        .trading()?
        .place(&auth.member, order)
        .await
        .map_err(trading_error)?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `DELETE /v1/orders/{market}/{id}`.
pub(super) async fn cancel_order(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
    ApiPath((market, id)): ApiPath<(String, u64)>,
) -> Result<Json<OrderView>, ApiError> {
    let view = state
        .trading()?
        .cancel(&auth.member, &market, id)
        .await
        .map_err(trading_error)?;
    Ok(Json(view))
}

/// `?market=` of `GET /v1/orders/open`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenOrdersQuery {
    /// Only this market.
    #[serde(default)]
    pub market: Option<String>,
}

/// `?market=&limit=` of `GET /v1/orders/history` and `GET /v1/trades`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only this market.
    #[serde(default)]
    pub market: Option<String>,
    /// At most this many, newest first: 1 to 1,000 (`LIST_LIMIT_MAX`), default 100
    /// (`LIST_LIMIT_DEFAULT`).
    #[serde(default)]
    pub limit: Option<u32>,
}

impl HistoryQuery {
    fn limit(&self) -> Result<u32, ApiError> {
        let limit = self.limit.unwrap_or(LIST_LIMIT_DEFAULT);
        if !(1..=LIST_LIMIT_MAX).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("limit must be 1 to {LIST_LIMIT_MAX}"),
            ));
        }
        Ok(limit)
    }
}

/// `GET /v1/orders/open`.
pub(super) async fn open_orders(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
    ApiQuery(query): ApiQuery<OpenOrdersQuery>,
) -> Result<Json<Vec<OrderView>>, ApiError> {
    let orders = state
        .trading()?
        .open_orders(&auth.member, query.market.as_deref())
        .await
        .map_err(trading_error)?;
    Ok(Json(orders))
}

/// `GET /v1/orders/history`.
pub(super) async fn order_history(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<Vec<OrderView>>, ApiError> {
    let limit = query.limit()?;
    let orders = state
        .trading()?
        .order_history(&auth.member, query.market.as_deref(), limit)
        .await
        .map_err(trading_error)?;
    Ok(Json(orders))
}

/// `GET /v1/trades`.
pub(super) async fn trades(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<Vec<TradeView>>, ApiError> {
    let limit = query.limit()?;
    let trades = state
        .trading()?
        .trades(&auth.member, query.market.as_deref(), limit)
        .await
        .map_err(trading_error)?;
    Ok(Json(trades))
}

/// `GET /v1/markets` (public).
pub(super) async fn markets(
    State(state): State<ApiState>,
) -> Result<Json<Vec<MarketView>>, ApiError> {
    Ok(Json(state.trading()?.markets()))
}

/// `?levels=` of `GET /v1/depth/{market}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepthQuery {
    /// Price levels per side: 1 to 1,000 (`DEPTH_LEVELS_MAX`), default 50
    /// (`DEPTH_LEVELS_DEFAULT`).
    #[serde(default)]
    pub levels: Option<usize>,
}

/// `GET /v1/depth/{market}` (public).
pub(super) async fn depth(
    State(state): State<ApiState>,
    ApiPath(market): ApiPath<String>,
    ApiQuery(query): ApiQuery<DepthQuery>,
) -> Result<Json<DepthView>, ApiError> {
    let levels = query.levels.unwrap_or(DEPTH_LEVELS_DEFAULT);
    if !(1..=DEPTH_LEVELS_MAX).contains(&levels) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("levels must be 1 to {DEPTH_LEVELS_MAX}"),
        ));
    }
    let depth = state
        .trading()?
        .depth(&market, levels)
        .map_err(trading_error)?;
    Ok(Json(depth))
}

/// One asset of `GET /v1/balances`. Amounts are base units, decimal strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceView {
    /// Asset symbol, e.g. `BTC`.
    pub asset: String,
    /// The asset's decimals (`base units / 10^decimals` whole units).
    pub decimals: u8,
    /// Free to trade or withdraw.
    pub available: String,
    /// Held by open orders and pending withdrawals.
    pub locked: String,
}

/// The answer of `GET /v1/balances`: every asset the member has an account in, by symbol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalancesView {
    /// The key's member.
    pub member: String,
    /// One item per asset, ordered by symbol.
    pub balances: Vec<BalanceView>,
}

/// `GET /v1/balances`.
pub(super) async fn balances(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
) -> Result<Json<BalancesView>, ApiError> {
    let rows = journal::member_balances(state.pool(), &auth.member)
        .await
        .map_err(|e| ApiError::internal("reading balances failed", &e))?;
    let mut by_asset: BTreeMap<String, BalanceView> = BTreeMap::new();
    for row in rows {
        let asset = row.account.asset().to_string();
        let view = by_asset
            .entry(asset.clone())
            .or_insert_with(|| BalanceView {
                asset,
                decimals: row.decimals,
                available: "0".to_owned(),
                locked: "0".to_owned(),
            });
        match row.account.kind() {
            AccountKind::Available => view.available = row.amount.to_string(),
            AccountKind::Locked => view.locked = row.amount.to_string(),
            // Member accounts are only available and locked today; a new kind is not shown
            // until this view knows it.
            _ => {}
        }
    }
    Ok(Json(BalancesView {
        member: auth.member.to_string(),
        balances: by_asset.into_values().collect(),
    }))
}

/// The body of `POST /v1/withdrawals`. The member is the API key's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalRequestBody {
    /// Idempotency key: the same id again changes nothing and answers the stored
    /// withdrawal. Default: a fresh UUID.
    #[serde(default)]
    pub id: Option<Uuid>,
    /// Asset symbol, e.g. `BTC` (case-insensitive).
    pub asset: String,
    /// What the destination receives, base units; the asset's withdrawal fee is locked on
    /// top.
    pub amount: String,
    /// Where to pay (checked by coinhubd; a bad one ends as status `failed`).
    pub destination: String,
}

/// A withdrawal as the API shows it. Amounts are base units, decimal strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalView {
    /// The withdrawal id.
    pub id: Uuid,
    /// Asset symbol.
    pub asset: String,
    /// What the destination receives.
    pub amount: String,
    /// The exchange's fee (locked with the amount).
    pub fee: String,
    /// The asset's decimals.
    pub decimals: u8,
    /// Where to pay.
    pub destination: String,
    /// `requested`, `confirmed` or `failed`.
    pub status: String,
    /// The paying transaction, once confirmed.
    pub txid: Option<String>,
    /// Why it failed, if it did.
    pub reason: Option<String>,
    /// RFC 3339.
    pub requested_at: String,
    /// RFC 3339, once confirmed or failed.
    pub settled_at: Option<String>,
}

impl From<&Withdrawal> for WithdrawalView {
    fn from(w: &Withdrawal) -> Self {
        let rfc3339 = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .expect("a database timestamp formats as RFC 3339")
        };
        Self {
            id: w.id,
            asset: w.asset.clone(),
            amount: w.amount.to_string(),
            fee: w.fee.to_string(),
            decimals: w.decimals,
            destination: w.destination.clone(),
            status: w.status.as_str().to_owned(),
            txid: w.txid.clone(),
            reason: w.reason.clone(),
            requested_at: rfc3339(w.requested_at),
            settled_at: w.settled_at.map(rfc3339),
        }
    }
}

fn withdrawal_error(error: RequestError) -> ApiError {
    match error {
        RequestError::InvalidField { field, .. } => {
            ApiError::bad_request(format!("invalid_{field}"), error.to_string())
        }
        RequestError::UnknownAsset { .. } => {
            ApiError::bad_request("unknown_asset", error.to_string())
        }
        RequestError::UnknownMember { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "insufficient_funds",
            "insufficient funds: the member has no balance yet",
        ),
        RequestError::InsufficientFunds { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "insufficient_funds",
            error.to_string(),
        ),
        RequestError::IdReused { .. } => {
            ApiError::new(StatusCode::CONFLICT, "id_reused", error.to_string())
        }
        other => ApiError::internal("withdrawal request failed", &other),
    }
}

/// `POST /v1/withdrawals`: locks `amount + fee` and queues `withdrawal.request` for
/// coinhubd ([`withdrawals::request`]).
pub(super) async fn request_withdrawal(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
    ApiJson(body): ApiJson<WithdrawalRequestBody>,
) -> Result<(StatusCode, Json<WithdrawalView>), ApiError> {
    let new = NewWithdrawal {
        id: body.id,
        member: auth.member.to_string(),
        asset: body.asset,
        amount: body.amount,
        destination: body.destination,
    };
    let requested = withdrawals::request(state.pool(), state.assets(), &new)
        .await
        .map_err(withdrawal_error)?;
    let status = if requested.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(WithdrawalView::from(&requested.withdrawal))))
}

/// `GET /v1/withdrawals`: the member's withdrawals, oldest first.
pub(super) async fn list_withdrawals(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
) -> Result<Json<Vec<WithdrawalView>>, ApiError> {
    let list = withdrawals::list(state.pool(), &auth.member)
        .await
        .map_err(|e| ApiError::internal("listing withdrawals failed", &e))?;
    Ok(Json(list.iter().map(WithdrawalView::from).collect()))
}
