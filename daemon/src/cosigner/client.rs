//! coinhubd's client of the cosigner: signed (HMAC-SHA256, see [`super::auth`]) JSON
//! requests with a timeout, and typed answers.

use std::time::Duration;

use alloy::primitives::Address;
use coinhub_custody::safe::{SIGNATURE_LEN, SafeTx};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde::Deserialize;
use uuid::Uuid;

use super::auth;
use super::server::{SIGN_EVM_PATH, SIGN_UTXO_PATH};
use super::verify::{EvmSignReply, EvmSignRequest, UtxoSignReply, UtxoSignRequest};

/// Why the cosigner did not sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CosignerError {
    /// A rule refused the spend (HTTP 422); `rule` is its snake_case name (e.g. `over_24h`).
    #[error("cosigner refused ({rule}): {reason}")]
    Refused {
        /// The rule.
        rule: String,
        /// Why, naming the numbers.
        reason: String,
    },
    /// The cosigner did not accept our authentication (HTTP 401): wrong secret, clock skew,
    /// replayed nonce.
    #[error("cosigner refused our authentication: {0}")]
    Unauthorized(String),
    /// No answer: connection refused, timeout, TLS, or a 5xx (e.g. Vault sealed on its side).
    /// Retrying later may succeed.
    #[error("cosigner unreachable or failing: {0}")]
    Transport(String),
    /// An answer that is not the documented shape, or a signature that does not check out.
    #[error("unexpected answer from the cosigner: {0}")]
    BadReply(String),
}

#[derive(Deserialize)]
struct ErrorReply {
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// A client of one cosigner.
#[derive(Debug, Clone)]
pub struct CosignerClient {
    base_url: String,
    secret: SecretString,
    http: reqwest::Client,
}

impl CosignerClient {
    /// A client for `base_url` (e.g. `http://10.0.0.7:8790`) with the shared HMAC `secret`
    /// and a `timeout` per request (connect + answer). Makes no request.
    ///
    /// # Errors
    /// [`CosignerError::Transport`] if the HTTP client cannot be built (TLS backend).
    pub fn new(
        base_url: &str,
        secret: SecretString,
        timeout: Duration,
    ) -> Result<Self, CosignerError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| CosignerError::Transport(format!("building the http client: {e}")))?;
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret,
            http,
        })
    }

    /// Asks the cosigner to add key B's signatures to `psbt_base64`, a spend on `chain` of
    /// `asset` paying `request_ids`. Returns the PSBT (base64) with B's partial signatures.
    ///
    /// # Errors
    /// [`CosignerError::Refused`] (the rule named), [`CosignerError::Unauthorized`],
    /// [`CosignerError::Transport`], [`CosignerError::BadReply`].
    pub async fn sign_utxo(
        &self,
        chain: &str,
        asset: &str,
        request_ids: &[Uuid],
        psbt_base64: &str,
    ) -> Result<String, CosignerError> {
        let body = UtxoSignRequest {
            chain: chain.to_owned(),
            asset: asset.to_owned(),
            request_ids: request_ids.to_vec(),
            psbt: psbt_base64.to_owned(),
        };
        let reply: UtxoSignReply = self.post(SIGN_UTXO_PATH, &body).await?;
        Ok(reply.psbt)
    }

    /// Asks the cosigner to sign `safe_tx` (on `chain`, paying request `request_id` of
    /// `asset`) with key B's Safe owner key. Returns the owner and its 65-byte `r ‖ s ‖ v`
    /// signature over the SafeTx hash.
    ///
    /// # Errors
    /// As [`CosignerClient::sign_utxo`]; [`CosignerError::BadReply`] also if the signature is
    /// not 65 bytes of hex.
    pub async fn sign_evm(
        &self,
        chain: &str,
        asset: &str,
        request_id: Uuid,
        safe_tx: &SafeTx,
    ) -> Result<(Address, [u8; SIGNATURE_LEN]), CosignerError> {
        let body = EvmSignRequest {
            chain: chain.to_owned(),
            asset: asset.to_owned(),
            request_ids: vec![request_id],
            safe_tx: safe_tx.clone(),
        };
        let reply: EvmSignReply = self.post(SIGN_EVM_PATH, &body).await?;
        let bytes = hex::decode(reply.signature.trim_start_matches("0x"))
            .map_err(|e| CosignerError::BadReply(format!("signature is not hex: {e}")))?;
        let signature: [u8; SIGNATURE_LEN] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            CosignerError::BadReply(format!("signature has {} bytes, not 65", bytes.len()))
        })?;
        Ok((reply.owner, signature))
    }

    async fn post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, CosignerError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| CosignerError::BadReply(format!("encoding the request: {e}")))?;
        let signed = auth::sign_request(&self.secret, "POST", path, &body);
        let mut request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in signed.pairs() {
            request = request.header(name, value);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| CosignerError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| CosignerError::Transport(e.without_url().to_string()))?;
        let reason = || {
            serde_json::from_str::<ErrorReply>(&text)
                .ok()
                .and_then(|reply| reply.reason)
                .unwrap_or_else(|| format!("http {status}"))
        };
        match status {
            StatusCode::OK => serde_json::from_str(&text)
                .map_err(|e| CosignerError::BadReply(format!("{e}: {text:.200}"))),
            StatusCode::UNPROCESSABLE_ENTITY => {
                let reply: ErrorReply = serde_json::from_str(&text)
                    .map_err(|e| CosignerError::BadReply(format!("{e}: {text:.200}")))?;
                Err(CosignerError::Refused {
                    rule: reply.rule.unwrap_or_else(|| "unknown".to_owned()),
                    reason: reply.reason.unwrap_or_default(),
                })
            }
            StatusCode::UNAUTHORIZED => Err(CosignerError::Unauthorized(reason())),
            status if status.is_server_error() => Err(CosignerError::Transport(format!(
                "http {status}: {}",
                reason()
            ))),
            status => Err(CosignerError::BadReply(format!(
                "http {status}: {}",
                reason()
            ))),
        }
    }
}
