//! HTTP client of the admin API, used by the `coinhub` CLI.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Client of one coinhubd's admin API.
pub struct AdminClient {
    base: String,
    token: SecretString,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client of `base` (e.g. `http://127.0.0.1:8780`) with the admin bearer token; every
    /// request times out after 30 s.
    pub fn new(base: &str, token: SecretString) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request
            .bearer_auth(self.token.expose_secret())
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach coinhubd at {}: {e}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("no error message");
            anyhow::bail!("coinhubd answered {status}: {message}");
        }
        Ok(serde_json::from_value(body)?)
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}/v1/status", self.base)))
            .await
    }

    /// `POST /v1/addresses`: the member's deposit address on the chain.
    pub async fn new_address(&self, member: &str, chain: &str) -> anyhow::Result<Value> {
        let body = serde_json::json!({"member": member, "chain": chain});
        self.send(
            self.http
                .post(format!("{}/v1/addresses", self.base))
                .json(&body),
        )
        .await
    }

    /// `GET /v1/deposits` with optional filters.
    pub async fn deposits(
        &self,
        member: Option<&str>,
        chain: Option<&str>,
        status: Option<&str>,
    ) -> anyhow::Result<Vec<Value>> {
        let mut query = Vec::new();
        for (key, value) in [("member", member), ("chain", chain), ("status", status)] {
            if let Some(value) = value {
                query.push((key, value));
            }
        }
        self.send(
            self.http
                .get(format!("{}/v1/deposits", self.base))
                .query(&query),
        )
        .await
    }

    /// `GET /v1/withdrawals` with optional filters.
    pub async fn withdrawals(
        &self,
        member: Option<&str>,
        status: Option<&str>,
    ) -> anyhow::Result<Vec<Value>> {
        let mut query = Vec::new();
        for (key, value) in [("member", member), ("status", status)] {
            if let Some(value) = value {
                query.push((key, value));
            }
        }
        self.send(
            self.http
                .get(format!("{}/v1/withdrawals", self.base))
                .query(&query),
        )
        .await
    }

    /// `GET /v1/withdrawals/{id}`.
    pub async fn withdrawal(&self, id: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}/v1/withdrawals/{id}", self.base)))
            .await
    }

    /// `POST /v1/withdrawals/{id}/cancel`: fails a withdrawal that is not signed yet.
    pub async fn cancel_withdrawal(
        &self,
        id: &str,
        reason: &str,
        operator: &str,
    ) -> anyhow::Result<Value> {
        let body = serde_json::json!({"reason": reason, "operator": operator});
        self.send(
            self.http
                .post(format!("{}/v1/withdrawals/{id}/cancel", self.base))
                .json(&body),
        )
        .await
    }
}
