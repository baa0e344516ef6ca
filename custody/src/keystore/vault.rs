//! The OpenBao/Vault client: health check and the two transit calls envelope encryption needs.
//!
//! OpenBao implements the Vault HTTP API, so one client serves both. Transit calls follow the
//! [transit secrets engine API](https://openbao.org/api-docs/secret/transit/):
//! `POST {mount}/datakey/plaintext/{name}` and `POST {mount}/decrypt/{name}`.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use secrecy::{ExposeSecret, SecretString};
use vaultrs::api::transit::requests::{DataKeyType, GenerateDataKeyRequest};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use zeroize::Zeroizing;

use super::KeystoreError;
use super::envelope::{DATA_KEY_LEN_BYTES, DataKey};

/// Timeout of every Vault request unless the caller picks another one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A Vault/OpenBao client for one address and token.
///
/// Every request has a timeout (connect + response). The token is sent in the
/// `X-Vault-Token` header; it is never logged or put in an error. `vaultrs` keeps its own
/// copy of the token in a plain `String` for the life of this value. TLS certificates are
/// always verified; a private CA can be given with `VAULT_CACERT`, as for the `vault` CLI.
pub struct Vault {
    address: String,
    timeout: Duration,
    client: VaultClient,
}

impl Vault {
    /// Builds a client for `address` (`http://` or `https://`, host, optional port, no
    /// credentials, e.g. `http://127.0.0.1:8200`). Makes no request.
    ///
    /// # Errors
    /// [`KeystoreError::InvalidAddress`] for a malformed address;
    /// [`KeystoreError::Other`] if the HTTP client cannot be built.
    pub fn new(
        address: &str,
        token: SecretString,
        timeout: Duration,
    ) -> Result<Self, KeystoreError> {
        let url = parse_address(address)?;
        let settings = VaultClientSettingsBuilder::default()
            // Validated above, so the builder's panicking setter cannot panic.
            .address(url.as_str())
            .token(token.expose_secret())
            .timeout(Some(timeout))
            .verify(true)
            .build()
            .map_err(|e| KeystoreError::Other(format!("invalid vault client settings: {e}")))?;
        let client = VaultClient::new(settings)
            .map_err(|e| KeystoreError::Other(format!("cannot build vault client: {e}")))?;
        Ok(Self {
            address: address.trim_end_matches('/').to_owned(),
            timeout,
            client,
        })
    }

    /// The address this client talks to, as given (without a trailing `/`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The timeout of each request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Asks `GET /v1/sys/health` (unauthenticated) whether Vault can serve requests. Call it
    /// at start and before writing anything. Active and standby nodes count as healthy (standby
    /// nodes forward requests). It does not check the token: a bad token shows as
    /// [`KeystoreError::PermissionDenied`] on the first transit call.
    ///
    /// # Errors
    /// [`KeystoreError::Unreachable`], [`KeystoreError::Sealed`], or
    /// [`KeystoreError::Other`] (e.g. not initialized).
    pub async fn check(&self) -> Result<(), KeystoreError> {
        // Not `vaultrs::sys::health`: its response type requires fields OpenBao does not send.
        match vaultrs::api::exec_with_no_result(&self.client, HealthRequest).await {
            Ok(health) if health.sealed => Err(self.sealed()),
            Ok(health) if !health.initialized => Err(self.not_initialized()),
            Ok(_) => Ok(()),
            Err(error) => match status_of(&error) {
                // 429: unsealed standby; 473: performance standby.
                Some(429 | 473) => Ok(()),
                Some(501) => Err(self.not_initialized()),
                _ => Err(self.map_error(error, "sys/health", None)),
            },
        }
    }

    /// Asks transit for a new 256-bit data key, returning it in plaintext (zeroized on drop)
    /// and wrapped by the transit key (`vault:v1:…`).
    pub(crate) async fn generate_data_key(
        &self,
        mount: &str,
        key: &str,
    ) -> Result<(DataKey, String), KeystoreError> {
        let path = format!("{mount}/datakey/plaintext/{key}");
        let mut options = GenerateDataKeyRequest::builder();
        options.bits(256u16);
        let response = vaultrs::transit::generate::data_key(
            &self.client,
            mount,
            key,
            DataKeyType::Plaintext,
            Some(&mut options),
        )
        .await
        .map_err(|e| self.map_error(e, &path, Some(format!("{mount}/{key}"))))?;
        let plaintext = Zeroizing::new(response.plaintext.ok_or_else(|| {
            KeystoreError::Other(format!("{path} returned no plaintext data key"))
        })?);
        let data_key = decode_data_key(&plaintext, &path)?;
        if !response.ciphertext.starts_with("vault:v") {
            return Err(KeystoreError::Other(format!(
                "{path} returned a wrapped key without the vault:v prefix"
            )));
        }
        Ok((data_key, response.ciphertext))
    }

    /// Unwraps a data key with `transit/decrypt`.
    pub(crate) async fn unwrap_data_key(
        &self,
        mount: &str,
        key: &str,
        wrapped: &str,
    ) -> Result<DataKey, KeystoreError> {
        let path = format!("{mount}/decrypt/{key}");
        let response = vaultrs::transit::data::decrypt(&self.client, mount, key, wrapped, None)
            .await
            .map_err(|e| self.map_error(e, &path, Some(format!("{mount}/{key}"))))?;
        let plaintext = Zeroizing::new(response.plaintext);
        decode_data_key(&plaintext, &path)
    }

    /// The underlying `vaultrs` client, for test fixtures.
    #[cfg(feature = "testing")]
    pub(crate) fn client(&self) -> &VaultClient {
        &self.client
    }

    /// Maps a `vaultrs` error to a [`KeystoreError`]. `transit_key` is `mount/name` for transit
    /// calls. Only `Display` of the error is used, never `Debug`: rustify's parse errors carry
    /// the response body, which can hold a plaintext data key.
    pub(crate) fn map_error(
        &self,
        error: ClientError,
        path: &str,
        transit_key: Option<String>,
    ) -> KeystoreError {
        let address = self.address.clone();
        let (code, messages) = match &error {
            ClientError::APIError { code, errors } => (*code, errors.join("; ")),
            ClientError::RestClientError { source } => match source {
                rustify::errors::ClientError::ServerResponseError { code, .. } => {
                    // The body is not Vault's JSON error list (e.g. a proxy page): omit it.
                    (*code, String::new())
                }
                rustify::errors::ClientError::RequestError { .. }
                | rustify::errors::ClientError::ResponseError { .. } => {
                    return KeystoreError::Unreachable { address };
                }
                other => {
                    return KeystoreError::Other(format!(
                        "vault request {path} at {address} failed: {other}"
                    ));
                }
            },
            other => {
                return KeystoreError::Other(format!(
                    "vault request {path} at {address} failed: {other}"
                ));
            }
        };
        match (code, transit_key) {
            (503, _) => KeystoreError::Sealed { address },
            (403, _) => KeystoreError::PermissionDenied {
                address,
                path: path.to_owned(),
            },
            // 404: the mount does not exist ("no handler for route").
            (404, Some(key)) => KeystoreError::TransitKeyMissing { key },
            (400, Some(key)) if messages.contains("not found") => {
                KeystoreError::TransitKeyMissing { key }
            }
            // transit/decrypt of an altered or malformed wrapped data key.
            (400, Some(_))
                if messages.contains("message authentication failed")
                    || messages.contains("invalid ciphertext") =>
            {
                KeystoreError::Corrupt
            }
            _ => KeystoreError::Other(format!(
                "vault at {address} answered http {code} to {path}: {messages}"
            )),
        }
    }

    fn sealed(&self) -> KeystoreError {
        KeystoreError::Sealed {
            address: self.address.clone(),
        }
    }

    fn not_initialized(&self) -> KeystoreError {
        KeystoreError::Other(format!("vault at {} is not initialized", self.address))
    }
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// `GET /v1/sys/health` ([API](https://openbao.org/api-docs/system/health/)), unauthenticated.
struct HealthRequest;

/// The fields of the health answer this crate reads; others are ignored.
#[derive(serde::Deserialize)]
struct HealthResponse {
    initialized: bool,
    sealed: bool,
}

impl rustify::endpoint::Endpoint for HealthRequest {
    type Response = HealthResponse;
    const REQUEST_BODY_TYPE: rustify::enums::RequestType = rustify::enums::RequestType::JSON;
    const RESPONSE_BODY_TYPE: rustify::enums::ResponseType = rustify::enums::ResponseType::JSON;

    fn path(&self) -> String {
        "sys/health".to_owned()
    }

    fn method(&self) -> rustify::enums::RequestMethod {
        rustify::enums::RequestMethod::GET
    }
}

/// HTTP status of a server-side error, if the error has one.
fn status_of(error: &ClientError) -> Option<u16> {
    match error {
        ClientError::APIError { code, .. } => Some(*code),
        ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code, .. },
        } => Some(*code),
        _ => None,
    }
}

/// Checks that `address` is an `http(s)` URL with a host and no credentials.
fn parse_address(address: &str) -> Result<url::Url, KeystoreError> {
    let invalid = |reason: &str| KeystoreError::InvalidAddress {
        address: address.to_owned(),
        reason: reason.to_owned(),
    };
    let url = url::Url::parse(address).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(invalid("missing host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(KeystoreError::InvalidAddress {
            address: format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default()),
            reason: "must not contain credentials".to_owned(),
        });
    }
    Ok(url)
}

/// Decodes transit's base64 plaintext into a 32-byte data key without leaving copies outside
/// zeroizing buffers.
fn decode_data_key(base64_text: &str, path: &str) -> Result<DataKey, KeystoreError> {
    let mut buffer = Zeroizing::new([0u8; 2 * DATA_KEY_LEN_BYTES]);
    let len = BASE64
        .decode_slice(base64_text.as_bytes(), buffer.as_mut_slice())
        .map_err(|_| KeystoreError::Other(format!("{path} returned a malformed data key")))?;
    if len != DATA_KEY_LEN_BYTES {
        return Err(KeystoreError::Other(format!(
            "{path} returned a {len}-byte data key, expected {DATA_KEY_LEN_BYTES}"
        )));
    }
    let mut key = Zeroizing::new([0u8; DATA_KEY_LEN_BYTES]);
    key.copy_from_slice(&buffer[..DATA_KEY_LEN_BYTES]);
    Ok(DataKey::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves that malformed or credential-bearing addresses are refused and the password is
    /// not echoed.
    #[test]
    fn rejects_bad_addresses() {
        let token = || SecretString::from("t");
        for address in ["", "127.0.0.1:8200", "ftp://vault", "http://[::1"] {
            let err = Vault::new(address, token(), DEFAULT_TIMEOUT).expect_err(address);
            assert!(
                matches!(err, KeystoreError::InvalidAddress { .. }),
                "{address}"
            );
        }
        let err = Vault::new("http://u:hunter2@vault:8200", token(), DEFAULT_TIMEOUT)
            .expect_err("credentials");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let vault = Vault::new("http://127.0.0.1:8200/", token(), DEFAULT_TIMEOUT).expect("ok");
        assert_eq!(vault.address(), "http://127.0.0.1:8200");
        assert!(!format!("{vault:?}").contains("\"t\""));
    }

    /// Proves base64 data keys of the wrong length are refused.
    #[test]
    fn decode_data_key_checks_length() {
        assert!(decode_data_key(&BASE64.encode([1u8; 32]), "p").is_ok());
        assert!(decode_data_key(&BASE64.encode([1u8; 16]), "p").is_err());
        assert!(decode_data_key("not base64!", "p").is_err());
    }
}
