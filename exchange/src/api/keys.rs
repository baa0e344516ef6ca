//! Per-member API keys (table `api_keys`, `migrations/0005_api_keys.sql`).
//!
//! A key is an id (`ck_` + 32 hex digits, public, sent with every request) and a secret
//! (64 hex digits = 32 random bytes from the OS, the HMAC-SHA256 key). [`create`] returns
//! the secret exactly once; it is printed to the operator by `coinhub-exchange api-key
//! create` and never logged. The secret cannot be stored hashed (checking an HMAC needs the
//! key itself), so it is stored envelope-encrypted with the `[vault]` transit key
//! ([`ApiSecrets`], `migrations/0011_api_secrets_sealed.sql`): reading the database alone
//! does not give the power to sign as a member. Keys created before 0011 are sealed by
//! [`seal_stored`] when the service starts. A revoked key is refused like an unknown one.

use std::fmt;
use std::str::FromStr;

use coinhub_custody::keystore::{Envelope, KeystoreError};
use coinhub_events::MemberId;
use rand::RngCore;
use secrecy::SecretString;
use serde::Serialize;
use sqlx::{PgPool, Row};
use time::OffsetDateTime;

use super::secrets::ApiSecrets;

/// Prefix of every key id.
pub const KEY_ID_PREFIX: &str = "ck_";
/// Random bytes in a key id.
const KEY_ID_BYTES: usize = 16;
/// Random bytes in a secret.
const SECRET_BYTES: usize = 32;
/// Longest label, in characters.
pub const LABEL_MAX_CHARS: usize = 100;

/// An API key id: `ck_` followed by 32 lowercase hex digits. Public.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn random() -> Self {
        let mut bytes = [0_u8; KEY_ID_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(format!("{KEY_ID_PREFIX}{}", hex::encode(bytes)))
    }
}

impl FromStr for KeyId {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let valid = value.strip_prefix(KEY_ID_PREFIX).is_some_and(|digits| {
            digits.len() == 2 * KEY_ID_BYTES
                && digits
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(format!(
                "invalid api key id {value:?}: expected {KEY_ID_PREFIX} and 32 lowercase hex digits"
            ))
        }
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key just created: the only time its secret is available to print.
#[derive(Debug)]
pub struct NewApiKey {
    /// The key id.
    pub key_id: KeyId,
    /// The member it acts for.
    pub member: MemberId,
    /// The signing secret (64 hex digits). Shown once; `Debug` redacts it.
    pub secret: SecretString,
}

/// A key's public facts (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyInfo {
    /// The key id.
    pub key_id: KeyId,
    /// The member it acts for.
    pub member: MemberId,
    /// The operator's label, if any.
    pub label: Option<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was revoked, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// An active key as the authenticator needs it.
#[derive(Debug)]
pub(crate) struct ActiveKey {
    pub(crate) member: MemberId,
    pub(crate) secret: SecretString,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The label is empty or longer than [`LABEL_MAX_CHARS`].
    #[error("label must be 1 to {LABEL_MAX_CHARS} characters")]
    InvalidLabel,
    /// No key has this id.
    #[error("no api key {0}")]
    UnknownKey(KeyId),
    /// Vault could not seal or open a secret (unreachable, sealed, token refused, or a
    /// stored envelope that does not open).
    #[error("vault: {0}")]
    Vault(#[from] KeystoreError),
    /// PostgreSQL failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Creates a key for `member` with fresh random id and secret (from the OS's generator),
/// storing the secret sealed by `secrets` (nothing is written if Vault refuses).
///
/// Errors: [`KeyError::InvalidLabel`]; [`KeyError::Vault`]; [`KeyError::Database`].
pub async fn create(
    pool: &PgPool,
    secrets: &ApiSecrets,
    member: &MemberId,
    label: Option<&str>,
) -> Result<NewApiKey, KeyError> {
    if let Some(label) = label {
        let chars = label.chars().count();
        if chars == 0 || chars > LABEL_MAX_CHARS {
            return Err(KeyError::InvalidLabel);
        }
    }
    let key_id = KeyId::random();
    let mut bytes = [0_u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = SecretString::from(hex::encode(bytes));
    bytes.fill(0);
    let sealed = secrets.seal(&key_id, &secret).await?;
    sqlx::query(
        "INSERT INTO api_keys (key_id, member_id, secret_sealed, label) VALUES ($1, $2, $3, $4)",
    )
    .bind(key_id.as_str())
    .bind(member.as_str())
    .bind(sqlx::types::Json(&sealed))
    .bind(label)
    .execute(pool)
    .await?;
    tracing::info!(%key_id, %member, "api key created");
    Ok(NewApiKey {
        key_id,
        member: member.clone(),
        secret,
    })
}

/// Revokes `key_id`: requests signed with it are refused from now on. Returns false if it
/// was already revoked (nothing changed).
///
/// Errors: [`KeyError::UnknownKey`]; [`KeyError::Database`].
pub async fn revoke(pool: &PgPool, key_id: &KeyId) -> Result<bool, KeyError> {
    let row = sqlx::query(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE key_id = $1
         RETURNING revoked_at = now() AS revoked_now",
    )
    .bind(key_id.as_str())
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Err(KeyError::UnknownKey(key_id.clone()));
    };
    let revoked_now: bool = row.try_get("revoked_now")?;
    if revoked_now {
        tracing::info!(%key_id, "api key revoked");
    }
    Ok(revoked_now)
}

/// The keys of `member`, oldest first, revoked ones included.
///
/// Errors: the database's.
pub async fn list(pool: &PgPool, member: &MemberId) -> Result<Vec<ApiKeyInfo>, KeyError> {
    let rows = sqlx::query(
        "SELECT key_id, member_id, label, created_at, revoked_at FROM api_keys
         WHERE member_id = $1 ORDER BY created_at, key_id",
    )
    .bind(member.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let key_id: String = row.try_get("key_id")?;
            let member: String = row.try_get("member_id")?;
            Ok(ApiKeyInfo {
                key_id: KeyId(key_id),
                member: member
                    .parse()
                    .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
                label: row.try_get("label")?,
                created_at: row.try_get("created_at")?,
                revoked_at: row.try_get("revoked_at")?,
            })
        })
        .collect()
}

/// The member and secret of `key_id` if it exists and is not revoked. A sealed secret is
/// opened by `secrets` (from memory after the first time); a key found revoked or unknown is
/// forgotten there.
///
/// Errors: [`KeyError::Vault`] (e.g. Vault unreachable, or an envelope that does not open
/// for this key); [`KeyError::Database`].
pub(crate) async fn active(
    pool: &PgPool,
    secrets: &ApiSecrets,
    key_id: &KeyId,
) -> Result<Option<ActiveKey>, KeyError> {
    let row = sqlx::query(
        "SELECT member_id, secret, secret_sealed FROM api_keys
         WHERE key_id = $1 AND revoked_at IS NULL",
    )
    .bind(key_id.as_str())
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        secrets.forget(key_id);
        return Ok(None);
    };
    let member: String = row.try_get("member_id")?;
    let plaintext: Option<String> = row.try_get("secret")?;
    let sealed: Option<sqlx::types::Json<Envelope>> = row.try_get("secret_sealed")?;
    let secret = match (plaintext, sealed) {
        (_, Some(sealed)) => secrets.open(key_id, &sealed.0).await?,
        // Created before 0011 and not sealed yet (the service seals these at start).
        (Some(plaintext), None) => SecretString::from(plaintext),
        (None, None) => {
            // api_keys_secret_stored_once rules this out.
            return Err(
                sqlx::Error::Decode(format!("api key {key_id} has no secret").into()).into(),
            );
        }
    };
    Ok(Some(ActiveKey {
        member: member
            .parse()
            .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        secret,
    }))
}

/// Seals every secret still stored in plaintext (keys created before migration 0011) and
/// clears the plaintext in the same `UPDATE`. Idempotent; returns how many it sealed. Run
/// at start, before the member API serves.
///
/// Errors: [`KeyError::Vault`] (nothing is changed for the key that failed, nor for later
/// ones); [`KeyError::Database`].
pub async fn seal_stored(pool: &PgPool, secrets: &ApiSecrets) -> Result<u64, KeyError> {
    let rows = sqlx::query("SELECT key_id, secret FROM api_keys WHERE secret IS NOT NULL")
        .fetch_all(pool)
        .await?;
    let mut sealed_count = 0;
    for row in rows {
        let key_id = KeyId(row.try_get("key_id")?);
        let secret = SecretString::from(row.try_get::<String, _>("secret")?);
        let sealed = secrets.seal(&key_id, &secret).await?;
        let updated = sqlx::query(
            "UPDATE api_keys SET secret = NULL, secret_sealed = $2
             WHERE key_id = $1 AND secret IS NOT NULL",
        )
        .bind(key_id.as_str())
        .bind(sqlx::types::Json(&sealed))
        .execute(pool)
        .await?;
        sealed_count += updated.rows_affected();
    }
    if sealed_count > 0 {
        tracing::info!(
            keys = sealed_count,
            "api key secrets sealed with the vault transit key"
        );
    }
    Ok(sealed_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_prefixed_lowercase_hex() {
        let id = KeyId::random();
        assert_eq!(id.as_str().len(), KEY_ID_PREFIX.len() + 32);
        assert_eq!(id.as_str().parse::<KeyId>(), Ok(id.clone()));
        assert_ne!(id, KeyId::random());
        for bad in [
            "",
            "ck_",
            "ck_0123456789ABCDEF0123456789abcdef",
            "xx_0123456789abcdef0123456789abcdef",
            "ck_0123456789abcdef0123456789abcde",
        ] {
            assert!(bad.parse::<KeyId>().is_err(), "{bad}");
        }
    }
}
