//! `meshguard_alert_channel`: where the gateway sends alerts. Secrets are write-only on the
//! gateway, so the provider keeps them from state and cannot see them drift.

use std::collections::HashMap;

use async_trait::async_trait;
use meshguard_api::{AlertChannel, AlertChannelInput, ChannelType, Severity, Trigger};
use serde::{Deserialize, Serialize};
use tf_provider::schema::{
    Attribute, AttributeConstraint, AttributeType, Block, Description, Schema,
};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

use super::{StrList, known, known_list, list_like, required};
use crate::client::ClientError;
use crate::diag::report;
use crate::provider::{Shared, attr, sensitive};

const ATTRIBUTES: &[&str] = &[
    "type",
    "endpoint",
    "severity",
    "triggers",
    "slack_channel",
    "pagerduty_routing_key",
    "webhook_secret",
];

// ---- model ----

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AlertChannelState {
    id: Value<String>,
    #[serde(rename = "type")]
    kind: Value<String>,
    endpoint: Value<String>,
    severity: Value<String>,
    triggers: StrList,
    slack_channel: Value<String>,
    pagerduty_routing_key: Value<String>,
    webhook_secret: Value<String>,
}

#[derive(Debug)]
pub(crate) struct AlertChannelResource {
    client: Shared,
}

impl AlertChannelResource {
    pub(crate) fn new(client: Shared) -> Self {
        Self { client }
    }
}

fn parse_enum<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

fn enum_text<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The request body for a create or a full update. Secrets are sent as planned; an empty string
/// clears one on the gateway.
fn input(planned: &AlertChannelState) -> Option<AlertChannelInput> {
    let triggers = known_list(&planned.triggers)?
        .iter()
        .map(|t| parse_enum::<Trigger>(t))
        .collect::<Option<Vec<_>>>()?;
    Some(AlertChannelInput {
        kind: parse_enum(known(&planned.kind)?),
        endpoint: Some(known(&planned.endpoint)?.to_owned()),
        name: None,
        severity: known(&planned.severity).and_then(parse_enum::<Severity>),
        triggers: Some(triggers),
        slack_channel: known(&planned.slack_channel).map(str::to_owned),
        pagerduty_routing_key: Some(
            known(&planned.pagerduty_routing_key)
                .unwrap_or_default()
                .to_owned(),
        ),
        webhook_secret: Some(
            known(&planned.webhook_secret)
                .unwrap_or_default()
                .to_owned(),
        ),
        enabled: None,
    })
}

/// The endpoint to keep in state. A Slack webhook URL is a secret the gateway never returns:
/// it gives the host and a digest, so the URL in state is kept while the digest matches it, and
/// a URL changed on the gateway shows as the gateway's redacted form (a diff to apply).
fn endpoint_of(c: &AlertChannel, shape: &AlertChannelState) -> String {
    use sha2::Digest as _;
    match (&c.endpoint_digest, known(&shape.endpoint)) {
        (Some(digest), Some(held))
            if *digest == format!("sha256:{}", hex::encode(sha2::Sha256::digest(held))) =>
        {
            held.to_owned()
        }
        _ => c.endpoint.clone(),
    }
}

fn from_gateway(c: &AlertChannel, shape: &AlertChannelState) -> AlertChannelState {
    AlertChannelState {
        id: Value::Value(c.id.clone()),
        kind: Value::Value(enum_text(&c.kind)),
        endpoint: Value::Value(endpoint_of(c, shape)),
        severity: c.severity.as_ref().map(enum_text).into(),
        triggers: list_like(&shape.triggers, c.triggers.iter().map(enum_text).collect()),
        slack_channel: c.slack_channel.clone().into(),
        pagerduty_routing_key: shape.pagerduty_routing_key.clone(),
        webhook_secret: shape.webhook_secret.clone(),
    }
}

// ---- schema and CRUD ----

#[async_trait]
impl Resource for AlertChannelResource {
    type State<'a> = AlertChannelState;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use AttributeConstraint::{Computed, Optional, Required};
        let attributes: HashMap<String, Attribute> = HashMap::from([
            (
                "id".into(),
                attr(
                    AttributeType::String,
                    Computed,
                    "Channel id assigned by the gateway (`channel_…`).",
                ),
            ),
            (
                "type".into(),
                attr(
                    AttributeType::String,
                    Required,
                    "`slack`, `pagerduty` or `webhook`.",
                ),
            ),
            (
                "endpoint".into(),
                sensitive(attr(
                    AttributeType::String,
                    Required,
                    "The http(s) URL alerts are sent to. Sensitive: a Slack webhook URL is a secret; the gateway returns only its host and digest, and the provider keeps the URL from state while the digest matches.",
                )),
            ),
            (
                "severity".into(),
                attr(
                    AttributeType::String,
                    Optional,
                    "Minimum severity sent: `info`, `warning` or `critical`.",
                ),
            ),
            (
                "triggers".into(),
                attr(
                    AttributeType::List(Box::new(AttributeType::String)),
                    Optional,
                    "Events that alert: `deny`, `error`, `rate_limit` (also `allow`, `all`).",
                ),
            ),
            (
                "slack_channel".into(),
                attr(
                    AttributeType::String,
                    Optional,
                    "Slack channel, e.g. `#meshguard-alerts`; required when `type = \"slack\"`.",
                ),
            ),
            (
                "pagerduty_routing_key".into(),
                sensitive(attr(
                    AttributeType::String,
                    Optional,
                    "PagerDuty Events API v2 routing key; required when `type = \"pagerduty\"`. Write-only on the gateway.",
                )),
            ),
            (
                "webhook_secret".into(),
                sensitive(attr(
                    AttributeType::String,
                    Optional,
                    "Secret that signs webhook deliveries (`X-MeshGuard-Signature: sha256=…`). Write-only on the gateway.",
                )),
            ),
        ]);
        Some(Schema {
            version: 1,
            block: Block {
                version: 1,
                attributes,
                description: Description::markdown(
                    "An alert notification channel on the MeshGuard gateway.",
                ),
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        let kind = known(&config.kind).map(|k| (k, parse_enum::<ChannelType>(k)));
        match kind {
            Some((_, Some(ChannelType::Slack))) if config.slack_channel.is_null() => {
                diags.error("slack_channel is required when type is slack", "set slack_channel, e.g. \"#meshguard-alerts\"", AttributePath::new("slack_channel"));
            }
            Some((_, Some(ChannelType::Pagerduty))) if config.pagerduty_routing_key.is_null() => diags.error(
                "pagerduty_routing_key is required when type is pagerduty",
                "set it to the Events API v2 integration key, ideally from a sensitive variable",
                AttributePath::new("pagerduty_routing_key"),
            ),
            Some((_, Some(ChannelType::Email))) | Some((_, None)) => {
                let k = kind.map(|(k, _)| k).unwrap_or_default();
                diags.error(format!("unsupported type {k:?}"), "expected slack, pagerduty or webhook", AttributePath::new("type"));
            }
            _ => {}
        }
        if let Some(endpoint) = known(&config.endpoint)
            && (!(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
                || endpoint.split("://").nth(1).is_none_or(str::is_empty))
        {
            diags.error(
                "endpoint must be an http:// or https:// URL",
                format!("got {endpoint:?}"),
                AttributePath::new("endpoint"),
            );
        }
        if let Some(sev) = known(&config.severity)
            && parse_enum::<Severity>(sev).is_none()
        {
            diags.error(
                format!("invalid severity {sev:?}"),
                "expected info, warning or critical",
                AttributePath::new("severity"),
            );
        }
        if let Value::Value(items) = &config.triggers {
            for (i, t) in items.iter().enumerate() {
                if let Some(t) = known(t)
                    && parse_enum::<Trigger>(t).is_none()
                {
                    diags.error(
                        format!("invalid trigger {t:?}"),
                        "expected deny, error or rate_limit (or allow, all)",
                        AttributePath::new("triggers").index(i as i64),
                    );
                }
            }
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let client = self.client.get(diags)?;
        let id = required(diags, &state.id, "id")?.to_owned();
        match client.get_channel(&id).await {
            Ok(c) => Some((from_gateway(&c, &state), private)),
            Err(ClientError::NotFound) => None,
            Err(e) => {
                report(
                    diags,
                    &format!("cannot read alert channel {id}"),
                    &e,
                    ATTRIBUTES,
                );
                Some((state, private))
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut planned = proposed;
        planned.id = Value::Unknown;
        Some((planned, ValueEmpty::default()))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior: Self::State<'a>,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let mut planned = proposed;
        planned.id = prior.id.clone();
        Some((planned, private, Vec::new()))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        Some(private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let client = self.client.get(diags)?;
        let Some(body) = input(&planned) else {
            diags.root_error_short("the alert channel's arguments are not all known at apply time");
            return None;
        };
        match client.create_channel(&body).await {
            Ok(c) => Some((from_gateway(&c, &planned), private)),
            Err(e) => {
                report(diags, "cannot create the alert channel", &e, ATTRIBUTES);
                None
            }
        }
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let client = self.client.get(diags)?;
        let id = required(diags, &prior.id, "id")?.to_owned();
        let Some(body) = input(&planned) else {
            diags.root_error_short("the alert channel's arguments are not all known at apply time");
            return None;
        };
        match client.update_channel(&id, &body).await {
            Ok(c) => Some((from_gateway(&c, &planned), private)),
            Err(e) => {
                report(
                    diags,
                    &format!("cannot update alert channel {id}"),
                    &e,
                    ATTRIBUTES,
                );
                None
            }
        }
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        let client = self.client.get(diags)?;
        let id = required(diags, &prior.id, "id")?.to_owned();
        match client.delete_channel(&id).await {
            Ok(()) | Err(ClientError::NotFound) => Some(()),
            Err(e) => {
                report(
                    diags,
                    &format!("cannot delete alert channel {id}"),
                    &e,
                    ATTRIBUTES,
                );
                None
            }
        }
    }

    async fn import<'a>(
        &self,
        _diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        Some((
            AlertChannelState {
                id: Value::Value(id),
                ..Default::default()
            },
            ValueEmpty::default(),
        ))
    }
}
