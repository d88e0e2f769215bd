//! The gateway admin API client: timeouts, a private CA, and retries with backoff.
//!
//! Retries cover what a private network throws at a long `terraform apply`: connection errors,
//! 429 and 5xx answers, each retried with exponential backoff (honouring `Retry-After`). A create
//! (`POST`) is retried only when the request cannot have reached the gateway (connection refused)
//! or the gateway said so explicitly (429, 503), and every attempt carries the same
//! `Idempotency-Key`: a 503 whose outcome is unknown (the gateway lost its database connection
//! while the create committed) is answered on the retry with the object the first attempt made,
//! so a retry never creates a second object.

use std::time::Duration;

use meshguard_api::{
    Agent, AgentCreated, AgentList, AlertChannel, AlertChannelInput, CreateAgent, ErrorBody,
    Policy, PolicyList, TokenIssued, UpdateAgent, ValidationReport,
};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Settings from the provider block.
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    pub(crate) gateway_url: String,
    pub(crate) admin_token: String,
    /// PEM certificates to trust in addition to the system's web PKI roots.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// The client certificate and its private key (PEM), presented to the gateway.
    pub(crate) identity: Option<Pem>,
    pub(crate) timeout: Duration,
    pub(crate) max_retries: u32,
}

/// PEM text holding a private key: never printed.
#[derive(Clone)]
pub(crate) struct Pem(pub(crate) Vec<u8>);

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pem([redacted])")
    }
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    max_retries: u32,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Why a call failed, in terms a Terraform user can act on.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// 404: the object does not exist (or, for agents, was revoked).
    NotFound,
    /// The gateway refused the request; `field` names the attribute at fault when it knows.
    Refused { status: u16, body: ErrorBody },
    /// The gateway could not be reached or answered nonsense; `detail` says what happened.
    Transport { detail: String },
}

impl ClientError {
    pub(crate) fn summary(&self) -> String {
        match self {
            ClientError::NotFound => "not found on the gateway".to_owned(),
            ClientError::Refused { status: 401, body }
                if body.message.contains("client certificate") =>
            {
                format!("the gateway refused the request (401): {}", body.message)
            }
            ClientError::Refused { status: 401, .. } => {
                "the gateway refused the admin token; check admin_token or MESHGUARD_ADMIN_TOKEN"
                    .to_owned()
            }
            ClientError::Refused { status, body } => format!(
                "the gateway refused the request ({status}): {}",
                body.message
            ),
            ClientError::Transport { detail } => detail.clone(),
        }
    }
}

impl Client {
    pub(crate) fn new(cfg: ClientConfig) -> Result<Self, String> {
        let base = cfg.gateway_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "gateway_url {base:?} must start with http:// or https://"
            ));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!(
                "terraform-provider-meshguard/",
                env!("CARGO_PKG_VERSION")
            ));
        if let Some(pem) = &cfg.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("the CA bundle is not valid PEM: {e}"))?;
            if certs.is_empty() {
                return Err("the CA bundle holds no certificate".to_owned());
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(pem) = &cfg.identity {
            let identity = reqwest::Identity::from_pem(&pem.0).map_err(|e| {
                format!(
                    "client_cert_file and client_key_file do not make a client identity \
                     (a PEM certificate and its PEM private key): {e}"
                )
            })?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(Self {
            http,
            base,
            token: cfg.admin_token,
            max_retries: cfg.max_retries,
        })
    }

    /// Sends with retries; answers the final status and body.
    async fn send<B: Serialize + ?Sized>(
        &self,
        method: &Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let url = format!("{}{path}", self.base);
        let idempotent = *method != Method::POST;
        // One key for every attempt of this call (the gateway honours it on creates).
        let key = (!idempotent).then(idempotency_key);
        let mut attempt = 0u32;
        loop {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("X-Admin-Token", &self.token);
            if let Some(key) = &key {
                req = req.header("Idempotency-Key", key);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let outcome = req.send().await;
            let (retry, wait_hint) = match &outcome {
                Err(e) => (
                    e.is_connect() || (idempotent && (e.is_timeout() || e.is_request())),
                    None,
                ),
                Ok(resp) => {
                    let s = resp.status();
                    let retryable = s == StatusCode::TOO_MANY_REQUESTS
                        || s == StatusCode::SERVICE_UNAVAILABLE
                        || (idempotent && s.is_server_error());
                    let hint = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    (retryable, hint)
                }
            };
            if retry && attempt < self.max_retries {
                let backoff =
                    Duration::from_millis(250 * 2u64.pow(attempt)).min(Duration::from_secs(8));
                tokio::time::sleep(wait_hint.unwrap_or(backoff).min(Duration::from_secs(30))).await;
                attempt += 1;
                continue;
            }
            let resp = outcome.map_err(|e| ClientError::Transport {
                detail: format!(
                    "cannot reach the MeshGuard gateway at {} ({}{}); check gateway_url and that the gateway is running",
                    self.base,
                    describe(&e),
                    if attempt > 0 { format!(", after {} attempts", attempt + 1) } else { String::new() }
                ),
            })?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| ClientError::Transport {
                detail: format!(
                    "the gateway at {} closed the answer early: {}",
                    self.base,
                    describe(&e)
                ),
            })?;
            return Ok((status, bytes.to_vec()));
        }
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.send(&method, path, body).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(ClientError::NotFound);
        }
        if !status.is_success() {
            return Err(refused(status, &bytes, &method, path));
        }
        not_the_api(&self.base, &method, path, &bytes)
    }

    pub(crate) async fn create_agent(
        &self,
        body: &CreateAgent,
    ) -> Result<AgentCreated, ClientError> {
        self.call(Method::POST, "/admin/agents", Some(body)).await
    }

    pub(crate) async fn get_agent(&self, id: &str) -> Result<Agent, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/admin/agents/{}", seg(id)), None)
            .await
    }

    pub(crate) async fn update_agent(
        &self,
        id: &str,
        body: &UpdateAgent,
    ) -> Result<Agent, ClientError> {
        self.call(
            Method::PATCH,
            &format!("/admin/agents/{}", seg(id)),
            Some(body),
        )
        .await
    }

    pub(crate) async fn revoke_agent(&self, id: &str) -> Result<(), ClientError> {
        self.call::<(), serde_json::Value>(
            Method::DELETE,
            &format!("/admin/agents/{}", seg(id)),
            None,
        )
        .await
        .map(drop)
    }

    pub(crate) async fn reissue_token(&self, id: &str) -> Result<TokenIssued, ClientError> {
        self.call(
            Method::POST,
            &format!("/admin/agents/{}/token", seg(id)),
            Some(&json!({})),
        )
        .await
    }

    pub(crate) async fn list_agents(&self) -> Result<Vec<Agent>, ClientError> {
        Ok(self
            .call::<(), AgentList>(Method::GET, "/admin/agents", None)
            .await?
            .agents)
    }

    /// The gateway's verdict on a policy document; 400 carries the same report as 200.
    pub(crate) async fn validate_policy(
        &self,
        name: Option<&str>,
        content: &str,
    ) -> Result<ValidationReport, ClientError> {
        let path = "/admin/policies/validate";
        let body = json!({ "name": name, "content": content });
        let (status, bytes) = self.send(&Method::POST, path, Some(&body)).await?;
        match status {
            StatusCode::OK | StatusCode::BAD_REQUEST => {
                match serde_json::from_slice::<ValidationReport>(&bytes) {
                    Ok(report) => Ok(report),
                    Err(_) => Err(refused(status, &bytes, &Method::POST, path)),
                }
            }
            _ => Err(refused(status, &bytes, &Method::POST, path)),
        }
    }

    pub(crate) async fn create_policy(
        &self,
        name: &str,
        content: &str,
    ) -> Result<Policy, ClientError> {
        self.call(
            Method::POST,
            "/admin/policies",
            Some(&json!({"name": name, "content": content})),
        )
        .await
    }

    pub(crate) async fn get_policy(&self, id: &str) -> Result<Policy, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/admin/policies/{}", seg(id)), None)
            .await
    }

    pub(crate) async fn update_policy(
        &self,
        id: &str,
        name: &str,
        content: &str,
    ) -> Result<Policy, ClientError> {
        self.call(
            Method::PUT,
            &format!("/admin/policies/{}", seg(id)),
            Some(&json!({"name": name, "content": content})),
        )
        .await
    }

    pub(crate) async fn delete_policy(&self, id: &str) -> Result<(), ClientError> {
        self.call::<(), serde_json::Value>(
            Method::DELETE,
            &format!("/admin/policies/{}", seg(id)),
            None,
        )
        .await
        .map(drop)
    }

    pub(crate) async fn list_policies(&self) -> Result<Vec<Policy>, ClientError> {
        Ok(self
            .call::<(), PolicyList>(Method::GET, "/admin/policies", None)
            .await?
            .policies)
    }

    pub(crate) async fn create_channel(
        &self,
        body: &AlertChannelInput,
    ) -> Result<AlertChannel, ClientError> {
        self.call(Method::POST, "/admin/alert-channels", Some(body))
            .await
    }

    pub(crate) async fn get_channel(&self, id: &str) -> Result<AlertChannel, ClientError> {
        self.call::<(), _>(
            Method::GET,
            &format!("/admin/alert-channels/{}", seg(id)),
            None,
        )
        .await
    }

    pub(crate) async fn update_channel(
        &self,
        id: &str,
        body: &AlertChannelInput,
    ) -> Result<AlertChannel, ClientError> {
        self.call(
            Method::PUT,
            &format!("/admin/alert-channels/{}", seg(id)),
            Some(body),
        )
        .await
    }

    pub(crate) async fn delete_channel(&self, id: &str) -> Result<(), ClientError> {
        self.call::<(), serde_json::Value>(
            Method::DELETE,
            &format!("/admin/alert-channels/{}", seg(id)),
            None,
        )
        .await
        .map(drop)
    }
}

/// A fresh `Idempotency-Key`: 128 random bits in hex, prefixed so the gateway's change log
/// shows where it came from.
fn idempotency_key() -> String {
    format!("terraform-{:032x}", rand::random::<u128>())
}

fn refused(status: StatusCode, bytes: &[u8], method: &Method, path: &str) -> ClientError {
    let body = serde_json::from_slice::<ErrorBody>(bytes).unwrap_or_else(|_| ErrorBody {
        outcome: None,
        error: "unexpected".to_owned(),
        message: format!("HTTP {status} from {method} {path}"),
        field: None,
        line: None,
        errors: Vec::new(),
    });
    ClientError::Refused {
        status: status.as_u16(),
        body,
    }
}

fn not_the_api<T: DeserializeOwned>(
    base: &str,
    method: &Method,
    path: &str,
    bytes: &[u8],
) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Transport {
        detail: format!(
            "the server at {base} answered {method} {path} with something that is not the MeshGuard API ({e}); is gateway_url right?"
        ),
    })
}

/// Percent-encodes one path segment (ids and names may hold any character).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The innermost cause of a transport error, without the URL (already in the message).
fn describe(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    if e.is_timeout() {
        format!("timed out: {text}")
    } else {
        text
    }
}
