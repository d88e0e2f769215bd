//! An alert channel as both backends store it: one JSON body (its secrets sealed with the
//! gateway's secrets key) beside the columns concurrency control needs, and the start-up pass
//! that seals secrets stored in clear or under a previous key.

use std::path::Path;

use super::ChannelRecord;
use super::secrets::SecretBox;

/// Alert channels are stored as one JSON body (secrets included, sealed at rest: see
/// `store/secrets.rs`) plus the columns needed for concurrency control.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct ChannelBody {
    pub(super) kind: meshguard_api::ChannelType,
    pub(super) endpoint: String,
    pub(super) name: Option<String>,
    pub(super) severity: Option<meshguard_api::Severity>,
    pub(super) triggers: Vec<meshguard_api::Trigger>,
    pub(super) slack_channel: Option<String>,
    pub(super) webhook_secret: Option<String>,
    pub(super) pagerduty_routing_key: Option<String>,
    pub(super) enabled: bool,
}

/// The fields of a channel that are secrets: its webhook secret, its PagerDuty routing key and,
/// for Slack, the webhook URL itself.
fn secret_fields(b: &ChannelBody) -> [Option<&str>; 3] {
    [
        b.webhook_secret.as_deref(),
        b.pagerduty_routing_key.as_deref(),
        (b.kind == meshguard_api::ChannelType::Slack).then_some(b.endpoint.as_str()),
    ]
}

/// Seals the body's secrets with `sb`: clear ones, and those `old` sealed.
fn reseal_body(b: &mut ChannelBody, sb: &SecretBox, old: Option<&SecretBox>) -> Result<(), String> {
    if let Some(s) = &b.webhook_secret {
        b.webhook_secret = Some(sb.reseal(s, old)?);
    }
    if let Some(s) = &b.pagerduty_routing_key {
        b.pagerduty_routing_key = Some(sb.reseal(s, old)?);
    }
    if b.kind == meshguard_api::ChannelType::Slack {
        b.endpoint = sb.reseal(&b.endpoint, old)?;
    }
    Ok(())
}

pub(super) fn open_body(b: &mut ChannelBody, sb: &SecretBox) -> Result<(), String> {
    if let Some(s) = &b.webhook_secret {
        b.webhook_secret = Some(sb.open(s)?);
    }
    if let Some(s) = &b.pagerduty_routing_key {
        b.pagerduty_routing_key = Some(sb.open(s)?);
    }
    b.endpoint = sb.open(&b.endpoint)?;
    Ok(())
}

pub(super) fn encode(
    c: &ChannelRecord,
    secrets: Option<&SecretBox>,
) -> Result<String, super::StoreError> {
    let mut body = ChannelBody {
        kind: c.kind,
        endpoint: c.endpoint.clone(),
        name: c.name.clone(),
        severity: c.severity,
        triggers: c.triggers.clone(),
        slack_channel: c.slack_channel.clone(),
        webhook_secret: c.webhook_secret.clone(),
        pagerduty_routing_key: c.pagerduty_routing_key.clone(),
        enabled: c.enabled,
    };
    if let Some(sb) = secrets {
        reseal_body(&mut body, sb, None).map_err(|e| {
            super::StoreError::Backend(format!("cannot seal the channel's secrets: {e}"))
        })?;
    }
    Ok(serde_json::to_string(&body).expect("plain data serializes"))
}

/// What [`plan_sealing`] decided: the key to seal with from now on, and the bodies to rewrite
/// (in one transaction, by the caller).
pub(super) struct Sealing {
    sb: SecretBox,
    /// The key file's box, when secrets sealed under it move into a token's key.
    old: Option<SecretBox>,
    pub(super) updates: Vec<(String, String)>,
}

impl Sealing {
    /// The key id secrets are sealed with from now on.
    pub(super) fn key_id(&self) -> &str {
        self.sb.id()
    }

    /// The key id secrets were moved from (the key file's, on the first start with a token).
    pub(super) fn moved_from(&self) -> Option<&str> {
        self.old.as_ref().map(SecretBox::id)
    }

    /// Logs what the rewrite did, once the caller committed it; returns the key to use.
    pub(super) fn report(self, key_path: &Path) -> SecretBox {
        if !self.updates.is_empty() {
            tracing::info!(
                channels = self.updates.len(),
                key = self.sb.id(),
                "alert-channel secrets stored in clear or under the previous key were sealed with the current key"
            );
        }
        if self.old.is_some() {
            tracing::warn!(file = %key_path.display(), "the secrets key file is no longer needed: every secret is sealed in the token; remove it once the database backup taken before this start is retired");
        }
        self.sb
    }
}

/// Reads the stored channel bodies `(id, body)` and decides how to seal them with the key `key`
/// names (a token's, the value given, or the file's). Refuses a missing or different key when sealed
/// secrets exist; with `uri`, secrets sealed under the key file are moved into the token.
pub(super) fn plan_sealing(
    rows: Vec<(String, String)>,
    key: &super::KeySource,
) -> Result<Sealing, String> {
    let (key_path, uri) = (key.file.as_path(), key.uri.as_deref());
    let mut ids = Vec::new();
    let mut bodies = Vec::new();
    for (id, body) in rows {
        let b: ChannelBody = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        for v in secret_fields(&b).into_iter().flatten() {
            if let Some(k) = super::secrets::sealed_with(v)
                && !ids.iter().any(|i| i == k)
            {
                ids.push(k.to_owned());
            }
        }
        bodies.push((id, b));
    }
    let (sb, old) = match uri {
        None => match &key.value {
            Some(v) => (SecretBox::from_value(v, &ids)?, None),
            None => (SecretBox::load_or_create(key_path, &ids)?, None),
        },
        Some(uri) => {
            let sb = SecretBox::from_token(uri)?;
            let others: Vec<String> = ids.iter().filter(|i| *i != sb.id()).cloned().collect();
            let old = if others.is_empty() {
                None
            } else if key_path.exists() {
                Some(SecretBox::load_or_create(key_path, &others)?)
            } else {
                return Err(format!(
                    "the database holds alert-channel secrets sealed with key {} and the token's key is {}; for the first start with SECRETS_KEY_URI, keep the key file they were sealed with at {} (SECRETS_KEY_FILE) so they can be moved into the token",
                    others[0],
                    sb.id(),
                    key_path.display()
                ));
            };
            (sb, old)
        }
    };
    let mut updates = Vec::new();
    for (id, mut b) in bodies {
        let before = serde_json::to_string(&b).map_err(|e| e.to_string())?;
        reseal_body(&mut b, &sb, old.as_ref())?;
        let after = serde_json::to_string(&b).map_err(|e| e.to_string())?;
        if after != before {
            updates.push((id, after));
        }
    }
    Ok(Sealing { sb, old, updates })
}
