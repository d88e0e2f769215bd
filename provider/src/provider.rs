//! The provider block: where the gateway is, how to authenticate, how to reach it on a private
//! network. Resources are built before `configure` runs, so they share the configured client
//! through [`Shared`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{
    Attribute, AttributeConstraint, AttributeType, Block, Description, Schema,
};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, DynamicDataSource, DynamicResource, Provider};

use crate::client::{Client, ClientConfig};

/// The configured client, set by `configure` and read by every resource.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shared(Arc<RwLock<Option<Arc<Client>>>>);

impl Shared {
    pub(crate) fn get(&self, diags: &mut Diagnostics) -> Option<Arc<Client>> {
        let slot = self.0.read().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            diags.root_error(
                "the meshguard provider is not configured",
                "set gateway_url and admin_token in the provider block, or MESHGUARD_GATEWAY_URL and MESHGUARD_ADMIN_TOKEN",
            );
        }
        slot.clone()
    }
}

#[derive(Debug, Default)]
pub struct MeshguardProvider {
    client: Shared,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProviderConfig {
    gateway_url: Value<String>,
    admin_token: Value<String>,
    ca_cert_file: Value<String>,
    ca_cert_pem: Value<String>,
    client_cert_file: Value<String>,
    client_key_file: Value<String>,
    request_timeout: Value<i64>,
    max_retries: Value<i64>,
}

pub(crate) fn attr(
    t: AttributeType,
    constraint: AttributeConstraint,
    description: &str,
) -> Attribute {
    Attribute {
        attr_type: t,
        description: Description::markdown(description),
        constraint,
        sensitive: false,
        deprecated: false,
    }
}

pub(crate) fn sensitive(mut a: Attribute) -> Attribute {
    a.sensitive = true;
    a
}

/// A known string from the configuration, else the environment variable, else `None`.
fn setting(
    diags: &mut Diagnostics,
    value: &Value<String>,
    attribute: &'static str,
    env: &str,
) -> Option<Option<String>> {
    match value {
        Value::Value(v) => Some(Some(v.clone())),
        Value::Null => Some(std::env::var(env).ok().filter(|v| !v.is_empty())),
        Value::Unknown => {
            diags.error(
                format!("{attribute} is not known yet"),
                "the provider needs it to plan; give it a value known before apply (a variable or a literal)",
                AttributePath::new(attribute),
            );
            None
        }
    }
}

#[async_trait]
impl Provider for MeshguardProvider {
    type Config<'a> = ProviderConfig;
    type MetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use AttributeConstraint::Optional;
        let attributes: HashMap<String, Attribute> = HashMap::from([
            (
                "gateway_url".into(),
                attr(
                    AttributeType::String,
                    Optional,
                    "URL of the MeshGuard gateway, e.g. `https://gw.example.com`. Falls back to `MESHGUARD_GATEWAY_URL`.",
                ),
            ),
            (
                "admin_token".into(),
                sensitive(attr(
                    AttributeType::String,
                    Optional,
                    "Admin API token. Falls back to `MESHGUARD_ADMIN_TOKEN`.",
                )),
            ),
            (
                "ca_cert_file".into(),
                attr(
                    AttributeType::String,
                    Optional,
                    "Path to a PEM bundle of CA certificates to trust, for a gateway behind a private CA. Falls back to `MESHGUARD_CA_CERT_FILE`.",
                ),
            ),
            (
                "ca_cert_pem".into(),
                attr(
                    AttributeType::String,
                    Optional,
                    "PEM CA certificates to trust, given inline.",
                ),
            ),
            (
                "client_cert_file".into(),
                attr(
                    AttributeType::String,
                    Optional,
                    "Path to a PEM client certificate to present, for a gateway that requires one for its admin API (`ADMIN_CLIENT_CA_FILE`). Needs `client_key_file`. Falls back to `MESHGUARD_CLIENT_CERT_FILE`.",
                ),
            ),
            (
                "client_key_file".into(),
                attr(
                    AttributeType::String,
                    Optional,
                    "Path to the PEM private key of `client_cert_file` (PKCS#8, PKCS#1 or SEC1). Falls back to `MESHGUARD_CLIENT_KEY_FILE`.",
                ),
            ),
            (
                "request_timeout".into(),
                attr(
                    AttributeType::Number,
                    Optional,
                    "Seconds to wait for each gateway request (default 30).",
                ),
            ),
            (
                "max_retries".into(),
                attr(
                    AttributeType::Number,
                    Optional,
                    "Retries, with exponential backoff, on connection errors, 429 and 5xx answers (default 4).",
                ),
            ),
        ]);
        Some(Schema {
            version: 1,
            block: Block {
                version: 1,
                attributes,
                description: Description::markdown(
                    "Manages agents, policies and alert channels on a MeshGuard gateway.",
                ),
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::Config<'a>) -> Option<()> {
        if let Value::Value(t) = config.request_timeout
            && !(1..=3600).contains(&t)
        {
            diags.error_short(
                "request_timeout must be between 1 and 3600 seconds",
                AttributePath::new("request_timeout"),
            );
        }
        if let Value::Value(r) = config.max_retries
            && !(0..=20).contains(&r)
        {
            diags.error_short(
                "max_retries must be between 0 and 20",
                AttributePath::new("max_retries"),
            );
        }
        Some(())
    }

    async fn configure<'a>(
        &self,
        diags: &mut Diagnostics,
        _terraform_version: String,
        config: Self::Config<'a>,
    ) -> Option<()> {
        let url = setting(
            diags,
            &config.gateway_url,
            "gateway_url",
            "MESHGUARD_GATEWAY_URL",
        )?;
        let token = setting(
            diags,
            &config.admin_token,
            "admin_token",
            "MESHGUARD_ADMIN_TOKEN",
        )?;
        let ca_file = setting(
            diags,
            &config.ca_cert_file,
            "ca_cert_file",
            "MESHGUARD_CA_CERT_FILE",
        )?;
        let cert_file = setting(
            diags,
            &config.client_cert_file,
            "client_cert_file",
            "MESHGUARD_CLIENT_CERT_FILE",
        )?;
        let key_file = setting(
            diags,
            &config.client_key_file,
            "client_key_file",
            "MESHGUARD_CLIENT_KEY_FILE",
        )?;
        let identity = client_identity(diags, cert_file, key_file)?;
        let url = required(diags, url, "gateway_url", "MESHGUARD_GATEWAY_URL")?;
        let token = required(diags, token, "admin_token", "MESHGUARD_ADMIN_TOKEN")?;
        let mut ca_pem = match ca_file {
            Some(path) => Some(read_file(diags, &path, "the CA bundle", "ca_cert_file")?),
            None => None,
        };
        if let Value::Value(pem) = &config.ca_cert_pem {
            ca_pem
                .get_or_insert_with(Vec::new)
                .extend_from_slice(pem.as_bytes());
        }
        let cfg = ClientConfig {
            gateway_url: url,
            admin_token: token,
            ca_pem,
            identity,
            timeout: Duration::from_secs(
                config
                    .request_timeout
                    .as_option()
                    .unwrap_or(30)
                    .clamp(1, 3600) as u64,
            ),
            max_retries: config.max_retries.as_option().unwrap_or(4).clamp(0, 20) as u32,
        };
        match Client::new(cfg) {
            Ok(client) => {
                *self.client.0.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(client));
                Some(())
            }
            Err(e) => {
                diags.root_error("cannot configure the meshguard provider", e);
                None
            }
        }
    }

    fn get_resources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicResource>>> {
        Some(HashMap::from([
            (
                "agent".to_owned(),
                Box::new(crate::resources::agent::AgentResource::new(
                    self.client.clone(),
                )) as Box<dyn DynamicResource>,
            ),
            (
                "policy".to_owned(),
                Box::new(crate::resources::policy::PolicyResource::new(
                    self.client.clone(),
                )),
            ),
            (
                "alert_channel".to_owned(),
                Box::new(crate::resources::alert_channel::AlertChannelResource::new(
                    self.client.clone(),
                )),
            ),
        ]))
    }

    fn get_data_sources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicDataSource>>> {
        Some(HashMap::from([
            (
                "agents".to_owned(),
                Box::new(crate::data_sources::agents::AgentsDataSource::new(
                    self.client.clone(),
                )) as Box<dyn DynamicDataSource>,
            ),
            (
                "policies".to_owned(),
                Box::new(crate::data_sources::policies::PoliciesDataSource::new(
                    self.client.clone(),
                )),
            ),
        ]))
    }
}

/// A setting the provider cannot work without, from its attribute or its environment variable.
fn required(
    diags: &mut Diagnostics,
    value: Option<String>,
    attribute: &'static str,
    env: &str,
) -> Option<String> {
    if value.is_none() {
        diags.error(
            format!("{attribute} is not set"),
            format!("set {attribute} in the provider block or {env}"),
            AttributePath::new(attribute),
        );
    }
    value
}

/// A file a setting names, read whole; one that cannot be read is an error on that attribute.
fn read_file(
    diags: &mut Diagnostics,
    path: &str,
    what: &str,
    attribute: &'static str,
) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            diags.error(
                format!("cannot read {what} {path}"),
                e.to_string(),
                AttributePath::new(attribute),
            );
            None
        }
    }
}

/// The client certificate and key for mutual TLS, as one PEM: both files or neither.
fn client_identity(
    diags: &mut Diagnostics,
    cert_file: Option<String>,
    key_file: Option<String>,
) -> Option<Option<crate::client::Pem>> {
    match (cert_file, key_file) {
        (None, None) => Some(None),
        (Some(cert), Some(key)) => {
            let mut pem = Vec::new();
            for (path, attribute) in [(cert, "client_cert_file"), (key, "client_key_file")] {
                pem.extend_from_slice(&read_file(diags, &path, attribute, attribute)?);
                pem.push(b'\n');
            }
            Some(Some(crate::client::Pem(pem)))
        }
        (Some(_), None) | (None, Some(_)) => {
            diags.error(
                "client_cert_file and client_key_file go together",
                "set both (or MESHGUARD_CLIENT_CERT_FILE and MESHGUARD_CLIENT_KEY_FILE), or neither",
                AttributePath::new("client_cert_file"),
            );
            None
        }
    }
}
