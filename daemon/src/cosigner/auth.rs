//! The authenticated channel between coinhubd and the cosigner: HMAC-SHA256 request signing
//! with a shared secret, a timestamp window and single-use nonces.
//!
//! Every request carries three headers:
//! - [`TIMESTAMP_HEADER`] `x-coinhub-timestamp`: Unix seconds (UTC) when it was signed;
//! - [`NONCE_HEADER`] `x-coinhub-nonce`: a fresh UUID (hyphenated text);
//! - [`SIGNATURE_HEADER`] `x-coinhub-signature`: lowercase hex of
//!   `HMAC-SHA256(secret, "{METHOD}\n{path}\n{timestamp}\n{nonce}\n{hex(sha256(body))}")`
//!   ([RFC 2104](https://www.rfc-editor.org/rfc/rfc2104), [FIPS 180-4] SHA-256), where
//!   `path` is the URI path without the query.
//!
//! The cosigner refuses (HTTP 401, `{"error":"unauthorized","reason":…}`) a request with a
//! missing or malformed header, a signature that does not verify (compared in constant time
//! by `hmac`'s `verify_slice`), a timestamp more than `max_clock_skew_secs` away from its own
//! clock, or a nonce it has seen before. Nonces are stored in `cosigner_nonces` (unique) after
//! the signature verified, and pruned once older than twice the skew: by then a replay's
//! timestamp is out of the window anyway.
//!
//! [FIPS 180-4]: https://csrc.nist.gov/pubs/fips/180-4/upd1/final

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// Header with the signing time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-coinhub-timestamp";
/// Header with the request's single-use nonce (a UUID).
pub const NONCE_HEADER: &str = "x-coinhub-nonce";
/// Header with the hex HMAC-SHA256 signature.
pub const SIGNATURE_HEADER: &str = "x-coinhub-signature";

type HmacSha256 = Hmac<Sha256>;

/// The three authentication headers of one request, as `(name, value)` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// Unix seconds.
    pub timestamp: i64,
    /// The nonce.
    pub nonce: Uuid,
    /// Lowercase hex HMAC-SHA256.
    pub signature: String,
}

impl SignedHeaders {
    /// The headers as `(name, value)` pairs, ready to add to a request.
    pub fn pairs(&self) -> [(&'static str, String); 3] {
        [
            (TIMESTAMP_HEADER, self.timestamp.to_string()),
            (NONCE_HEADER, self.nonce.hyphenated().to_string()),
            (SIGNATURE_HEADER, self.signature.clone()),
        ]
    }
}

/// Why a request is not authenticated. `Display` is the reason sent back to the caller
/// (it never contains the secret or the expected signature).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A header is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is not of its documented shape.
    #[error("malformed header {0}")]
    MalformedHeader(&'static str),
    /// The signature does not verify with the shared secret.
    #[error("bad signature")]
    BadSignature,
    /// The timestamp is outside the allowed window around the cosigner's clock.
    #[error("timestamp {timestamp} is more than {max_skew_secs} s from the cosigner's clock {now}")]
    StaleTimestamp {
        /// The request's timestamp, Unix seconds.
        timestamp: i64,
        /// The cosigner's clock, Unix seconds.
        now: i64,
        /// The allowed skew, seconds.
        max_skew_secs: u64,
    },
    /// The nonce was used before (a replay).
    #[error("nonce {0} was already used")]
    ReplayedNonce(Uuid),
    /// The nonce store failed (HTTP 500, not 401).
    #[error("nonce store unavailable")]
    Store(String),
}

/// The text that is signed: `"{METHOD}\n{path}\n{timestamp}\n{nonce}\n{hex(sha256(body))}"`.
pub fn canonical_string(
    method: &str,
    path: &str,
    timestamp: i64,
    nonce: &Uuid,
    body: &[u8],
) -> String {
    let body_hash = hex::encode(Sha256::digest(body));
    format!(
        "{}\n{path}\n{timestamp}\n{}\n{body_hash}",
        method.to_uppercase(),
        nonce.hyphenated()
    )
}

fn mac(secret: &SecretString) -> HmacSha256 {
    HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC-SHA256 accepts keys of any length")
}

/// Signs a request to be sent now with a fresh nonce: the headers the client adds.
/// `path` is the URI path without query (e.g. `/v1/sign/utxo`).
pub fn sign_request(secret: &SecretString, method: &str, path: &str, body: &[u8]) -> SignedHeaders {
    sign_request_at(
        secret,
        method,
        path,
        body,
        OffsetDateTime::now_utc().unix_timestamp(),
        Uuid::new_v4(),
    )
}

/// [`sign_request`] with a given timestamp (Unix seconds) and nonce, for tests and replays.
pub fn sign_request_at(
    secret: &SecretString,
    method: &str,
    path: &str,
    body: &[u8],
    timestamp: i64,
    nonce: Uuid,
) -> SignedHeaders {
    let mut mac = mac(secret);
    mac.update(canonical_string(method, path, timestamp, &nonce, body).as_bytes());
    SignedHeaders {
        timestamp,
        nonce,
        signature: hex::encode(mac.finalize().into_bytes()),
    }
}

/// Checks the headers of one request against `secret` and the clock `now` (Unix seconds),
/// without touching the nonce store. Pure; see [`authenticate`] for the whole check.
///
/// # Errors
/// [`AuthError::MissingHeader`], [`AuthError::MalformedHeader`], [`AuthError::BadSignature`],
/// [`AuthError::StaleTimestamp`], in that order.
pub fn verify_headers(
    secret: &SecretString,
    headers: &axum::http::HeaderMap,
    method: &str,
    path: &str,
    body: &[u8],
    now: i64,
    max_skew_secs: u64,
) -> Result<(i64, Uuid), AuthError> {
    let header = |name: &'static str| -> Result<&str, AuthError> {
        headers
            .get(name)
            .ok_or(AuthError::MissingHeader(name))?
            .to_str()
            .map_err(|_| AuthError::MalformedHeader(name))
    };
    let timestamp: i64 = header(TIMESTAMP_HEADER)?
        .parse()
        .map_err(|_| AuthError::MalformedHeader(TIMESTAMP_HEADER))?;
    let nonce = Uuid::parse_str(header(NONCE_HEADER)?)
        .map_err(|_| AuthError::MalformedHeader(NONCE_HEADER))?;
    let signature = hex::decode(header(SIGNATURE_HEADER)?)
        .map_err(|_| AuthError::MalformedHeader(SIGNATURE_HEADER))?;
    let mut mac = mac(secret);
    mac.update(canonical_string(method, path, timestamp, &nonce, body).as_bytes());
    // Constant-time comparison (`subtle`), whatever the length given.
    mac.verify_slice(&signature)
        .map_err(|_| AuthError::BadSignature)?;
    let skew = timestamp.abs_diff(now);
    if skew > max_skew_secs {
        return Err(AuthError::StaleTimestamp {
            timestamp,
            now,
            max_skew_secs,
        });
    }
    Ok((timestamp, nonce))
}

/// Authenticates one request: [`verify_headers`] at the current time, then records the nonce
/// in `cosigner_nonces`; a nonce already there is a replay.
///
/// # Errors
/// The [`verify_headers`] errors; [`AuthError::ReplayedNonce`]; [`AuthError::Store`] if the
/// database fails.
pub async fn authenticate(
    pool: &PgPool,
    secret: &SecretString,
    max_skew_secs: u64,
    headers: &axum::http::HeaderMap,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(), AuthError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let (timestamp, nonce) =
        verify_headers(secret, headers, method, path, body, now, max_skew_secs)?;
    let request_time = OffsetDateTime::from_unix_timestamp(timestamp)
        .map_err(|_| AuthError::MalformedHeader(TIMESTAMP_HEADER))?;
    let inserted = sqlx::query(
        "INSERT INTO cosigner_nonces (nonce, request_time) VALUES ($1, $2)
         ON CONFLICT (nonce) DO NOTHING",
    )
    .bind(nonce)
    .bind(request_time)
    .execute(pool)
    .await
    .map_err(|e| AuthError::Store(e.to_string()))?;
    if inserted.rows_affected() == 0 {
        return Err(AuthError::ReplayedNonce(nonce));
    }
    Ok(())
}

/// Deletes nonces seen more than `2 × max_skew_secs` ago (a replay of them would fail the
/// timestamp check). Returns how many were deleted.
///
/// # Errors
/// The database's.
pub async fn prune_nonces(pool: &PgPool, max_skew_secs: u64) -> Result<u64, sqlx::Error> {
    let keep = format!("{} seconds", max_skew_secs.saturating_mul(2));
    let deleted = sqlx::query("DELETE FROM cosigner_nonces WHERE seen_at < now() - $1::interval")
        .bind(keep)
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn headers(signed: &SignedHeaders) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in signed.pairs() {
            map.insert(name, HeaderValue::from_str(&value).expect("ascii"));
        }
        map
    }

    /// A signed request verifies; another secret, path, body or an old timestamp does not.
    #[test]
    fn signature_binds_method_path_body_and_time() {
        let secret = SecretString::from("k".repeat(32));
        let other = SecretString::from("x".repeat(32));
        let signed = sign_request_at(&secret, "POST", "/v1/sign/utxo", b"{}", 1_000, Uuid::nil());
        let map = headers(&signed);
        let check = |secret: &SecretString, path: &str, body: &[u8], now: i64| {
            verify_headers(secret, &map, "POST", path, body, now, 300)
        };
        assert_eq!(
            check(&secret, "/v1/sign/utxo", b"{}", 1_100),
            Ok((1_000, Uuid::nil()))
        );
        assert_eq!(
            check(&other, "/v1/sign/utxo", b"{}", 1_100),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            check(&secret, "/v1/sign/evm", b"{}", 1_100),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            check(&secret, "/v1/sign/utxo", b"{ }", 1_100),
            Err(AuthError::BadSignature)
        );
        assert!(matches!(
            check(&secret, "/v1/sign/utxo", b"{}", 1_301),
            Err(AuthError::StaleTimestamp { .. })
        ));
        assert_eq!(
            verify_headers(&secret, &HeaderMap::new(), "POST", "/", b"", 0, 300),
            Err(AuthError::MissingHeader(TIMESTAMP_HEADER))
        );
    }
}
