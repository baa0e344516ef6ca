//! Request signing of the member API: HMAC-SHA256 with the API key's secret, a timestamp
//! window and single-use nonces per key. The scheme is the one coinhubd and its cosigner use
//! (`daemon/src/cosigner/auth.rs`), plus a key id header and the query string in the signed
//! text, so a signature also binds the filters of a `GET`.
//!
//! Every signed request carries four headers:
//! - [`KEY_HEADER`] `x-coinhub-key`: the API key id (`ck_` + 32 hex digits);
//! - [`TIMESTAMP_HEADER`] `x-coinhub-timestamp`: Unix seconds (UTC) when it was signed;
//! - [`NONCE_HEADER`] `x-coinhub-nonce`: 16 to 64 of `A-Z a-z 0-9 _ -`, never reused with the
//!   same key (a UUID v4 in simple form is a good choice);
//! - [`SIGNATURE_HEADER`] `x-coinhub-signature`: lowercase hex of
//!   `HMAC-SHA256(secret, "{METHOD}\n{path}?{query}\n{timestamp}\n{nonce}\n{hex(sha256(body))}")`
//!   ([RFC 2104](https://www.rfc-editor.org/rfc/rfc2104)), where `secret` is the key's
//!   secret as issued (its 64 hex characters as ASCII bytes), `METHOD` is upper case, and
//!   `path?query` is the request target exactly as sent (`?query` only when there is one).
//!
//! A request is checked in two steps, [`verify_request`] then [`Verified::record_nonce`],
//! in this order, and refused with the [`AuthError`] of the first failure: headers present
//! and well formed; the key exists and is not revoked (`unknown_key`; its secret is opened
//! with [`ApiSecrets`], from memory after the first request); the signature verifies,
//! compared in constant time by `hmac`'s `verify_slice` (`bad_signature`); the timestamp is
//! within `max_clock_skew_secs` of our clock (`stale_timestamp`); the nonce was not used
//! before with this key (`replayed_nonce`). The nonce is stored (`api_nonces`, unique per
//! key) only after the signature and the timestamp verified, and before the request runs.
//! The server checks the API key's rate limit between the two steps ([`super::limits`]): a
//! request refused with `429` has not spent its nonce and may be sent again unchanged, and a
//! replayed request is refused before it is charged to the key (the unused-nonce check of
//! [`verify_request`] is a read; the insert of [`Verified::record_nonce`] stays the
//! authority, so two copies sent at once still run once). Stored nonces are pruned
//! ([`prune_nonces`]) once older than twice the skew, when a replay of them would fail the
//! timestamp check anyway. A nonce is spent once it is stored, even if the request then
//! fails (say the database went away): retry with a fresh nonce; the routes that change
//! state take an idempotency key where a retry must not act twice (a withdrawal's `id`).

use axum::http::HeaderMap;
use coinhub_events::MemberId;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::keys::{self, KeyId};
use super::secrets::ApiSecrets;

/// Header with the API key id.
pub const KEY_HEADER: &str = "x-coinhub-key";
/// Header with the signing time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-coinhub-timestamp";
/// Header with the request's single-use nonce.
pub const NONCE_HEADER: &str = "x-coinhub-nonce";
/// Header with the hex HMAC-SHA256 signature.
pub const SIGNATURE_HEADER: &str = "x-coinhub-signature";

/// Shortest accepted nonce, in characters.
pub const NONCE_LEN_MIN: usize = 16;
/// Longest accepted nonce, in characters.
pub const NONCE_LEN_MAX: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// The authentication headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// The API key id.
    pub key_id: KeyId,
    /// Unix seconds.
    pub timestamp: i64,
    /// The nonce.
    pub nonce: String,
    /// Lowercase hex HMAC-SHA256.
    pub signature: String,
}

impl SignedHeaders {
    /// The headers as `(name, value)` pairs, ready to add to a request.
    pub fn pairs(&self) -> [(&'static str, String); 4] {
        [
            (KEY_HEADER, self.key_id.as_str().to_owned()),
            (TIMESTAMP_HEADER, self.timestamp.to_string()),
            (NONCE_HEADER, self.nonce.clone()),
            (SIGNATURE_HEADER, self.signature.clone()),
        ]
    }
}

/// Why a request is not authenticated. `Display` is the message sent back to the caller;
/// it never contains the secret or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A header is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is not of its documented shape.
    #[error("malformed header {0}")]
    MalformedHeader(&'static str),
    /// No active key has this id (never issued, or revoked).
    #[error("unknown or revoked api key")]
    UnknownKey,
    /// The signature does not verify with the key's secret.
    #[error("bad signature")]
    BadSignature,
    /// The timestamp is outside the allowed window around the server's clock.
    #[error("timestamp {timestamp} is more than {max_skew_secs} s from the server's clock {now}")]
    StaleTimestamp {
        /// The request's timestamp, Unix seconds.
        timestamp: i64,
        /// The server's clock, Unix seconds.
        now: i64,
        /// The allowed skew, seconds.
        max_skew_secs: u64,
    },
    /// The nonce was used before with this key (a replay).
    #[error("nonce {0} was already used with this key")]
    ReplayedNonce(String),
    /// The key or nonce store failed, or Vault could not open the key's secret (HTTP 500,
    /// not 401). The text is for the log only.
    #[error("authentication store unavailable")]
    Store(String),
}

impl AuthError {
    /// The error code of the JSON body: `missing_header`, `malformed_header`,
    /// `unknown_key`, `bad_signature`, `stale_timestamp`, `replayed_nonce`, or `internal`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::MalformedHeader(_) => "malformed_header",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::StaleTimestamp { .. } => "stale_timestamp",
            Self::ReplayedNonce(_) => "replayed_nonce",
            Self::Store(_) => "internal",
        }
    }
}

/// The text that is signed:
/// `"{METHOD}\n{path_and_query}\n{timestamp}\n{nonce}\n{hex(sha256(body))}"`.
pub fn canonical_string(
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> String {
    let body_hash = hex::encode(Sha256::digest(body));
    format!(
        "{}\n{path_and_query}\n{timestamp}\n{nonce}\n{body_hash}",
        method.to_ascii_uppercase()
    )
}

fn mac(secret: &SecretString) -> HmacSha256 {
    HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC-SHA256 accepts keys of any length")
}

/// Signs a request to be sent now with a fresh nonce (a UUID v4, simple form).
pub fn sign_request(
    key_id: &KeyId,
    secret: &SecretString,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> SignedHeaders {
    sign_request_at(
        key_id,
        secret,
        method,
        path_and_query,
        body,
        OffsetDateTime::now_utc().unix_timestamp(),
        &Uuid::new_v4().simple().to_string(),
    )
}

/// [`sign_request`] with a given timestamp (Unix seconds) and nonce, for tests and replays.
pub fn sign_request_at(
    key_id: &KeyId,
    secret: &SecretString,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    timestamp: i64,
    nonce: &str,
) -> SignedHeaders {
    let mut mac = mac(secret);
    mac.update(canonical_string(method, path_and_query, timestamp, nonce, body).as_bytes());
    SignedHeaders {
        key_id: key_id.clone(),
        timestamp,
        nonce: nonce.to_owned(),
        signature: hex::encode(mac.finalize().into_bytes()),
    }
}

/// The authentication headers of a request, parsed but not verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// The key id.
    pub key_id: KeyId,
    /// Unix seconds.
    pub timestamp: i64,
    /// The nonce.
    pub nonce: String,
    /// The signature's bytes.
    pub signature: Vec<u8>,
}

/// Parses the four headers without I/O.
///
/// Errors: [`AuthError::MissingHeader`], [`AuthError::MalformedHeader`].
pub fn parse_headers(headers: &HeaderMap) -> Result<Presented, AuthError> {
    let header = |name: &'static str| -> Result<&str, AuthError> {
        headers
            .get(name)
            .ok_or(AuthError::MissingHeader(name))?
            .to_str()
            .map_err(|_| AuthError::MalformedHeader(name))
    };
    let key_id: KeyId = header(KEY_HEADER)?
        .parse()
        .map_err(|_| AuthError::MalformedHeader(KEY_HEADER))?;
    let timestamp: i64 = header(TIMESTAMP_HEADER)?
        .parse()
        .map_err(|_| AuthError::MalformedHeader(TIMESTAMP_HEADER))?;
    let nonce = header(NONCE_HEADER)?;
    let nonce_ok = (NONCE_LEN_MIN..=NONCE_LEN_MAX).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !nonce_ok {
        return Err(AuthError::MalformedHeader(NONCE_HEADER));
    }
    let signature = hex::decode(header(SIGNATURE_HEADER)?)
        .map_err(|_| AuthError::MalformedHeader(SIGNATURE_HEADER))?;
    Ok(Presented {
        key_id,
        timestamp,
        nonce: nonce.to_owned(),
        signature,
    })
}

/// Verifies a parsed request against the key's `secret` and the clock `now` (Unix
/// seconds), without touching the nonce store. Pure.
///
/// Errors: [`AuthError::BadSignature`], then [`AuthError::StaleTimestamp`].
pub fn verify(
    secret: &SecretString,
    presented: &Presented,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now: i64,
    max_skew_secs: u64,
) -> Result<(), AuthError> {
    let mut mac = mac(secret);
    mac.update(
        canonical_string(
            method,
            path_and_query,
            presented.timestamp,
            &presented.nonce,
            body,
        )
        .as_bytes(),
    );
    // Constant-time comparison (`subtle`), whatever the length given.
    mac.verify_slice(&presented.signature)
        .map_err(|_| AuthError::BadSignature)?;
    if presented.timestamp.abs_diff(now) > max_skew_secs {
        return Err(AuthError::StaleTimestamp {
            timestamp: presented.timestamp,
            now,
            max_skew_secs,
        });
    }
    Ok(())
}

/// Who signed a request that [`Verified::record_nonce`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The key used.
    pub key_id: KeyId,
    /// The key's member: every route acts for this member only.
    pub member: MemberId,
}

/// A request whose signature and timestamp verified and whose nonce was unused when
/// checked, its nonce not recorded yet: [`Verified::record_nonce`] spends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    key_id: KeyId,
    member: MemberId,
    nonce: String,
    request_time: OffsetDateTime,
}

impl Verified {
    /// The key that signed the request.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Records the nonce (the request may run after this, never before); a nonce recorded
    /// for this key meanwhile is a replay.
    ///
    /// Errors: [`AuthError::ReplayedNonce`]; [`AuthError::Store`] if the database fails.
    pub async fn record_nonce(self, pool: &PgPool) -> Result<Authenticated, AuthError> {
        let inserted = sqlx::query(
            "INSERT INTO api_nonces (key_id, nonce, request_time) VALUES ($1, $2, $3)
             ON CONFLICT (key_id, nonce) DO NOTHING",
        )
        .bind(self.key_id.as_str())
        .bind(&self.nonce)
        .bind(self.request_time)
        .execute(pool)
        .await
        .map_err(store_error)?;
        if inserted.rows_affected() == 0 {
            return Err(AuthError::ReplayedNonce(self.nonce));
        }
        Ok(Authenticated {
            key_id: self.key_id,
            member: self.member,
        })
    }
}

fn store_error(error: sqlx::Error) -> AuthError {
    AuthError::Store(error.to_string())
}

/// Checks one request without recording anything: parses the headers, loads the key,
/// [`verify`]s at the current time, and checks that the nonce was not used with this key.
///
/// Errors: the [`parse_headers`] and [`verify`] errors; [`AuthError::UnknownKey`];
/// [`AuthError::ReplayedNonce`]; [`AuthError::Store`] if the database or Vault fails.
pub async fn verify_request(
    pool: &PgPool,
    secrets: &ApiSecrets,
    max_skew_secs: u64,
    headers: &HeaderMap,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Result<Verified, AuthError> {
    let presented = parse_headers(headers)?;
    let Some(key) = keys::active(pool, secrets, &presented.key_id)
        .await
        .map_err(|error| AuthError::Store(error.to_string()))?
    else {
        return Err(AuthError::UnknownKey);
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    verify(
        &key.secret,
        &presented,
        method,
        path_and_query,
        body,
        now,
        max_skew_secs,
    )?;
    let request_time = OffsetDateTime::from_unix_timestamp(presented.timestamp)
        .map_err(|_| AuthError::MalformedHeader(TIMESTAMP_HEADER))?;
    let used: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM api_nonces WHERE key_id = $1 AND nonce = $2)",
    )
    .bind(presented.key_id.as_str())
    .bind(&presented.nonce)
    .fetch_one(pool)
    .await
    .map_err(store_error)?;
    if used {
        return Err(AuthError::ReplayedNonce(presented.nonce));
    }
    Ok(Verified {
        key_id: presented.key_id,
        member: key.member,
        nonce: presented.nonce,
        request_time,
    })
}

/// Deletes nonces seen more than `2 × max_skew_secs` ago (a replay of them fails the
/// timestamp check). Returns how many were deleted.
///
/// Errors: the database's.
pub async fn prune_nonces(pool: &PgPool, max_skew_secs: u64) -> Result<u64, sqlx::Error> {
    let keep_secs = i64::try_from(max_skew_secs.saturating_mul(2)).unwrap_or(i64::MAX);
    let deleted = sqlx::query(
        "DELETE FROM api_nonces WHERE seen_at < now() - $1::bigint * interval '1 second'",
    )
    .bind(keep_secs)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(signed: &SignedHeaders) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in signed.pairs() {
            map.insert(name, HeaderValue::from_str(&value).expect("ascii"));
        }
        map
    }

    fn key_id() -> KeyId {
        "ck_0123456789abcdef0123456789abcdef"
            .parse()
            .expect("key id")
    }

    /// A signed request verifies; another secret, path, query, method, body or an old
    /// timestamp does not.
    #[test]
    fn signature_binds_method_target_body_and_time() {
        let secret = SecretString::from("a".repeat(64));
        let other = SecretString::from("b".repeat(64));
        let nonce = "0123456789abcdef";
        let signed = sign_request_at(
            &key_id(),
            &secret,
            "GET",
            "/v1/trades?market=btc/usdt",
            b"",
            1_000,
            nonce,
        );
        let presented = parse_headers(&headers(&signed)).expect("well formed");
        assert_eq!(presented.key_id, key_id());
        let check = |secret: &SecretString, method: &str, target: &str, body: &[u8], now| {
            verify(secret, &presented, method, target, body, now, 30)
        };
        let target = "/v1/trades?market=btc/usdt";
        assert_eq!(check(&secret, "GET", target, b"", 1_030), Ok(()));
        assert_eq!(check(&secret, "get", target, b"", 970), Ok(()));
        let bad = Err(AuthError::BadSignature);
        assert_eq!(check(&other, "GET", target, b"", 1_000), bad);
        assert_eq!(check(&secret, "POST", target, b"", 1_000), bad);
        assert_eq!(
            check(&secret, "GET", "/v1/trades?market=eth/usdt", b"", 1_000),
            bad
        );
        assert_eq!(check(&secret, "GET", "/v1/trades", b"", 1_000), bad);
        assert_eq!(check(&secret, "GET", target, b"{}", 1_000), bad);
        assert!(matches!(
            check(&secret, "GET", target, b"", 1_031),
            Err(AuthError::StaleTimestamp { .. })
        ));
        assert!(matches!(
            check(&secret, "GET", target, b"", 969),
            Err(AuthError::StaleTimestamp { .. })
        ));
    }

    /// The canonical string is the documented one (a client in another language can be
    /// checked against it).
    #[test]
    fn canonical_string_is_documented_layout() {
        assert_eq!(
            canonical_string(
                "post",
                "/v1/orders",
                1_700_000_000,
                "n0nce-n0nce-n0nce",
                b""
            ),
            "POST\n/v1/orders\n1700000000\nn0nce-n0nce-n0nce\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// Missing and malformed headers are named.
    #[test]
    fn headers_are_checked() {
        let secret = SecretString::from("a".repeat(64));
        let signed = sign_request_at(
            &key_id(),
            &secret,
            "GET",
            "/",
            b"",
            1,
            "n".repeat(16).as_str(),
        );
        let full = headers(&signed);
        assert!(parse_headers(&full).is_ok());
        for name in [KEY_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER] {
            let mut map = full.clone();
            map.remove(name);
            assert_eq!(parse_headers(&map), Err(AuthError::MissingHeader(name)));
        }
        for (name, value) in [
            (KEY_HEADER, "key"),
            (TIMESTAMP_HEADER, "yesterday"),
            (NONCE_HEADER, "short"),
            (NONCE_HEADER, "has space in it, too long anyway"),
            (SIGNATURE_HEADER, "zz"),
        ] {
            let mut map = full.clone();
            map.insert(name, HeaderValue::from_static(value));
            assert_eq!(parse_headers(&map), Err(AuthError::MalformedHeader(name)));
        }
    }
}
