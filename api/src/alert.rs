//! Alert channels: where the gateway sends deny, error and rate-limit alerts.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelType {
    Webhook,
    Slack,
    Pagerduty,
    Email,
}

/// Minimum severity a channel receives: `info < warning < critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Deny,
    Error,
    RateLimit,
    Allow,
    All,
}

/// An alert channel as the admin API returns it. Secrets are write-only: a read says only
/// whether one is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertChannel {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: ChannelType,
    /// The URL alerts go to; for Slack, whose webhook URL is itself a secret, only its scheme
    /// and host (`https://hooks.slack.com/…`), with `endpoint_digest` to tell a change.
    pub endpoint: String,
    /// `sha256:<hex>` of a Slack webhook URL, which is never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_channel: Option<String>,
    #[serde(default)]
    pub webhook_secret_set: bool,
    #[serde(default)]
    pub pagerduty_routing_key_set: bool,
    pub enabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// Body of `POST` (all required fields present) and `PATCH`/`PUT` (any subset) on
/// `/admin/alert-channels`. Snake-case names, as Terraform spells them, are accepted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertChannelInput {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<ChannelType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Vec<Trigger>>,
    #[serde(
        default,
        alias = "slack_channel",
        skip_serializing_if = "Option::is_none"
    )]
    pub slack_channel: Option<String>,
    #[serde(
        default,
        alias = "pagerduty_routing_key",
        skip_serializing_if = "Option::is_none"
    )]
    pub pagerduty_routing_key: Option<String>,
    #[serde(
        default,
        alias = "webhook_secret",
        alias = "secret",
        skip_serializing_if = "Option::is_none"
    )]
    pub webhook_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}
