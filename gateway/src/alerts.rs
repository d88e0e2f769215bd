//! Alerting: deny, error and rate-limit alerts to webhook, Slack and PagerDuty, in the background.
//!
//! A decision only enqueues (never waits): a bounded queue feeds one dispatcher task, which
//! applies the per-minute throttle, picks the channels whose triggers and minimum severity match,
//! and delivers each with bounded retries and exponential backoff. An alert that still cannot be
//! delivered is kept in the store and listed at `GET /admin/alerts/undelivered`.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use meshguard_api::{AuditEntry, ChannelType, Severity, Trigger};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::store::{ChannelRecord, Store};

/// Alert settings from the environment (`ALERT_*`), as MeshGuard documents them.
#[derive(Debug, Clone)]
pub(crate) struct AlertConfig {
    /// `ALERT_ON`: which triggers the environment-configured channels receive.
    pub(crate) on: Vec<Trigger>,
    pub(crate) webhook_url: Option<String>,
    pub(crate) webhook_secret: Option<String>,
    pub(crate) slack_webhook: Option<String>,
    /// `ALERT_RATE_LIMIT`: alerts per minute; more are dropped with a warning.
    pub(crate) per_minute: u32,
    pub(crate) instance: String,
    pub(crate) environment: String,
    /// Delivery attempts per channel, and the first backoff (doubling).
    pub(crate) attempts: u32,
    pub(crate) backoff: Duration,
    /// The site CA bundle (`CA_BUNDLE_FILE`), for webhooks behind a private CA.
    pub(crate) extra_roots: Vec<reqwest::Certificate>,
    /// The audit log's redaction profile, applied to alerts too (`AUDIT_REDACTION`).
    pub(crate) redaction: crate::redaction::Redaction,
    /// Where alerts may go (`ALERT_DESTINATIONS_ALLOWED`, `destinations.rs`).
    pub(crate) destinations: Arc<crate::destinations::Destinations>,
}

/// One alert, as delivered to webhooks.
#[derive(Debug, Clone)]
pub(crate) struct Alert {
    pub(crate) trigger: Trigger,
    pub(crate) severity: Severity,
    pub(crate) title: String,
    pub(crate) message: String,
    pub(crate) entry: AuditEntry,
}

impl Alert {
    /// The same alert at another severity.
    pub(crate) fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// A gateway-level alert, not about one decision: critical, trigger `error`.
    pub(crate) fn system(title: &str, message: &str) -> Self {
        Self {
            trigger: Trigger::Error,
            severity: Severity::Critical,
            title: title.to_owned(),
            message: message.to_owned(),
            entry: AuditEntry {
                timestamp: crate::clock::now_rfc3339(),
                event: "system".to_owned(),
                reason: Some(message.to_owned()),
                ..AuditEntry::default()
            },
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Alerts {
    tx: mpsc::Sender<Alert>,
    redaction: crate::redaction::Redaction,
    /// Where system alerts are recorded, so they are durable, in the evidence and sent to the
    /// SIEM like every entry.
    audit: Option<crate::audit::AuditLog>,
}

fn trigger_str(t: Trigger) -> &'static str {
    match t {
        Trigger::Deny => "deny",
        Trigger::Error => "error",
        Trigger::RateLimit => "rate_limit",
        Trigger::Allow => "allow",
        Trigger::All => "all",
    }
}

fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

impl Alerts {
    pub(crate) fn start(
        config: AlertConfig,
        store: Arc<dyn Store>,
        audit: Option<crate::audit::AuditLog>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let redaction = config.redaction;
        tokio::spawn(dispatch(config, store, rx));
        Self {
            tx,
            redaction,
            audit,
        }
    }

    /// Queues an alert; never waits. A full queue drops it with a warning.
    pub(crate) fn raise(&self, mut alert: Alert) {
        self.redaction.text(&mut alert.title);
        self.redaction.text(&mut alert.message);
        if alert.entry.event == "system" {
            // Not about a decision: recorded as an entry of its own (`system_alert`), which
            // the alert then refers to.
            alert.entry = system_entry(&alert);
            if let Some(audit) = &self.audit
                && let Err(e) = audit.queue(alert.entry.clone())
            {
                tracing::error!(error = %e, title = %alert.title, "cannot record a system alert in the audit log");
            }
        }
        self.redaction.apply(&mut alert.entry);
        if let Err(e) = self.tx.try_send(alert) {
            tracing::warn!(error = %e, "alert queue full; alert dropped");
        }
    }

    /// The alert a recorded decision calls for, if any: denials (critical for admin actions and
    /// bypass attempts, warning otherwise).
    pub(crate) fn for_entry(entry: &AuditEntry) -> Option<Alert> {
        if entry.decision != "deny" {
            return None;
        }
        let agent = entry
            .agent_name
            .as_deref()
            .or(entry.agent_id.as_deref())
            .unwrap_or("unknown agent");
        let (severity, title) = match entry.event.as_str() {
            "bypass_attempt" => (
                Severity::Critical,
                format!(
                    "Bypass Attempt: {}",
                    entry.path.as_deref().unwrap_or(&entry.action)
                ),
            ),
            "circuit_breaker" => (Severity::Critical, format!("Governance Timeout: {agent}")),
            "rate_limit" => (Severity::Warning, format!("Rate Limit Exceeded: {agent}")),
            "egress_denied" => (
                Severity::Warning,
                format!(
                    "Egress Denied: {}",
                    entry.resource.as_deref().unwrap_or(&entry.action)
                ),
            ),
            _ if entry.action.to_ascii_lowercase().starts_with("admin:") => {
                (Severity::Critical, format!("Policy Denied: {agent}"))
            }
            _ => (Severity::Warning, format!("Policy Denied: {agent}")),
        };
        let trigger = match entry.event.as_str() {
            "circuit_breaker" => Trigger::Error,
            "rate_limit" => Trigger::RateLimit,
            _ => Trigger::Deny,
        };
        Some(Alert {
            trigger,
            severity,
            message: format!(
                "{} {}: {}",
                entry.action,
                if entry.would_deny {
                    "would be denied"
                } else {
                    "denied"
                },
                entry.reason.as_deref().unwrap_or("")
            ),
            title,
            entry: entry.clone(),
        })
    }
}

/// The audit entry of a system alert: event `system_alert`, its title, severity and trigger in
/// `meta`, its message as the reason.
fn system_entry(alert: &Alert) -> AuditEntry {
    let mut meta = serde_json::Map::new();
    meta.insert("title".into(), json!(alert.title));
    meta.insert("severity".into(), json!(severity_str(alert.severity)));
    meta.insert("trigger".into(), json!(trigger_str(alert.trigger)));
    AuditEntry {
        id: crate::ids::new_time_ordered_id("aud"),
        event: "system_alert".to_owned(),
        action: "system:alert".to_owned(),
        trace_id: crate::ids::new_id("trace"),
        meta,
        ..alert.entry.clone()
    }
}

/// A channel to deliver to: from the store, or from the environment.
#[derive(Debug, Clone)]
struct Target {
    id: String,
    kind: ChannelType,
    endpoint: String,
    severity: Option<Severity>,
    triggers: Vec<Trigger>,
    slack_channel: Option<String>,
    secret: Option<String>,
    routing_key: Option<String>,
}

impl Target {
    fn wants(&self, alert: &Alert) -> bool {
        let triggers = if self.triggers.is_empty() {
            &[Trigger::Deny, Trigger::Error, Trigger::RateLimit][..]
        } else {
            &self.triggers[..]
        };
        let trigger_ok = triggers
            .iter()
            .any(|t| *t == Trigger::All || *t == alert.trigger);
        trigger_ok && self.severity.is_none_or(|min| alert.severity >= min)
    }
}

fn from_record(c: ChannelRecord) -> Target {
    Target {
        id: c.id,
        kind: c.kind,
        endpoint: c.endpoint,
        severity: c.severity,
        triggers: c.triggers,
        slack_channel: c.slack_channel,
        secret: c.webhook_secret,
        routing_key: c.pagerduty_routing_key,
    }
}

fn env_targets(cfg: &AlertConfig) -> Vec<Target> {
    let mut out = Vec::new();
    if let Some(url) = &cfg.webhook_url {
        out.push(Target {
            id: "env:ALERT_WEBHOOK_URL".into(),
            kind: ChannelType::Webhook,
            endpoint: url.clone(),
            severity: None,
            triggers: cfg.on.clone(),
            slack_channel: None,
            secret: cfg.webhook_secret.clone(),
            routing_key: None,
        });
    }
    if let Some(url) = &cfg.slack_webhook {
        out.push(Target {
            id: "env:ALERT_SLACK_WEBHOOK".into(),
            kind: ChannelType::Slack,
            endpoint: url.clone(),
            severity: None,
            triggers: cfg.on.clone(),
            slack_channel: None,
            secret: None,
            routing_key: None,
        });
    }
    out
}

/// The webhook payload (MeshGuard's documented shape).
fn webhook_body(cfg: &AlertConfig, id: &str, alert: &Alert) -> Value {
    let e = &alert.entry;
    json!({
        "event": "meshguard.alert",
        "version": "1.0",
        "id": id,
        "timestamp": crate::clock::now_rfc3339(),
        "severity": severity_str(alert.severity),
        "trigger": trigger_str(alert.trigger),
        "title": alert.title,
        "message": alert.message,
        "instance": cfg.instance,
        "environment": cfg.environment,
        "entry": {
            "traceId": e.trace_id,
            "agentId": e.agent_id.clone().unwrap_or_default(),
            "agentName": e.agent_name.clone().unwrap_or_default(),
            "trustTier": e.trust_tier.clone().unwrap_or_default(),
            "action": e.action,
            "method": e.method.clone().unwrap_or_default(),
            "path": e.path.clone().unwrap_or_default(),
            "decision": e.decision,
            "policyName": e.policy.clone().unwrap_or_default(),
            "reason": e.reason.clone().unwrap_or_default(),
            "event": e.event,
            "auditId": e.id,
        },
    })
}

/// At most `max` characters of `s`, ending in an ellipsis when cut. The whole text is in the
/// audit entry the alert points to; the services refuse longer fields.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max.saturating_sub(1)) {
        Some((at, _)) if s.chars().count() > max => format!("{}\u{2026}", &s[..at]),
        _ => s.to_owned(),
    }
}

/// Text for Slack's mrkdwn with its control characters escaped, as Slack asks of text from
/// elsewhere: an agent's action such as `<!channel>` or `<https://x|click>` must show as
/// written, not notify a channel or become a link.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack's incoming-webhook body: a fallback text and two blocks, within Slack's limits (a
/// header's plain text at most 150 characters, a section's text at most 3000).
fn slack_body(target: &Target, alert: &Alert) -> Value {
    let severity = severity_str(alert.severity);
    let message = clip(&slack_escape(&alert.message), 2800);
    let mut body = json!({
        "text": clip(&slack_escape(&format!("[{severity}] {}: {}", alert.title, alert.message)), 3000),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": clip(&alert.title, 150)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*{severity}*\n{message}\ntrace `{}`", slack_escape(&alert.entry.trace_id))}},
        ],
    });
    if let Some(ch) = &target.slack_channel {
        body["channel"] = json!(ch);
    }
    body
}

/// PagerDuty's Events API v2 body (a trigger); its summary at most 1024 characters.
fn pagerduty_body(cfg: &AlertConfig, target: &Target, id: &str, alert: &Alert) -> Value {
    json!({
        "routing_key": target.routing_key.clone().unwrap_or_default(),
        "event_action": "trigger",
        "dedup_key": id,
        "payload": {
            "summary": clip(&format!("{}: {}", alert.title, alert.message), 1024),
            "source": cfg.instance,
            "severity": severity_str(alert.severity),
            "custom_details": webhook_body(cfg, id, alert)["entry"],
        },
    })
}

/// `sha256=<hex HMAC-SHA256 of the exact body>`.
pub(crate) fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn dispatch(cfg: AlertConfig, store: Arc<dyn Store>, mut rx: mpsc::Receiver<Alert>) {
    let client = crate::tls::client_builder(&cfg.extra_roots)
        .dns_resolver(Arc::new(crate::destinations::Resolver(Arc::clone(
            &cfg.destinations,
        ))))
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .user_agent("MeshGuard/1.0")
        .build()
        .expect("a plain HTTP client builds");
    let mut window_start = tokio::time::Instant::now();
    let mut sent_in_window = 0u32;
    let mut dropped = 0u64;
    while let Some(alert) = rx.recv().await {
        if window_start.elapsed() >= Duration::from_secs(60) {
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "alerts dropped by ALERT_RATE_LIMIT in the last minute"
                );
            }
            window_start = tokio::time::Instant::now();
            sent_in_window = 0;
            dropped = 0;
        }
        if sent_in_window >= cfg.per_minute {
            dropped += 1;
            tracing::warn!(
                trigger = trigger_str(alert.trigger),
                "alert over ALERT_RATE_LIMIT ({}/min) dropped",
                cfg.per_minute
            );
            continue;
        }
        sent_in_window += 1;
        let store_for_list = Arc::clone(&store);
        let stored = tokio::task::spawn_blocking(move || store_for_list.list_channels()).await;
        let mut targets: Vec<Target> = match stored {
            Ok(Ok(list)) => list
                .into_iter()
                .filter(|c| c.enabled)
                .map(from_record)
                .collect(),
            _ => {
                tracing::error!("cannot read alert channels; only environment channels are used");
                Vec::new()
            }
        };
        targets.extend(env_targets(&cfg));
        let id = crate::ids::new_id("alert");
        for target in targets.into_iter().filter(|t| t.wants(&alert)) {
            let (client, cfg, alert, id, store) = (
                client.clone(),
                cfg.clone(),
                alert.clone(),
                id.clone(),
                Arc::clone(&store),
            );
            // Each channel on its own task: a slow receiver never holds up another.
            tokio::spawn(async move { deliver(&client, &cfg, &target, &id, &alert, store).await });
        }
    }
}

async fn deliver(
    client: &reqwest::Client,
    cfg: &AlertConfig,
    target: &Target,
    id: &str,
    alert: &Alert,
    store: Arc<dyn Store>,
) {
    let body = match target.kind {
        ChannelType::Slack => slack_body(target, alert),
        ChannelType::Pagerduty => pagerduty_body(cfg, target, id, alert),
        _ => webhook_body(cfg, id, alert),
    };
    let bytes = serde_json::to_vec(&body).expect("alerts serialize");
    // A channel stored before the policy, or a policy narrowed since: checked at every send.
    if let Err(why) = cfg.destinations.check_url(&target.endpoint) {
        tracing::error!(alert = id, channel = %target.id, error = %why, "alert not sent");
        let record = delivery(target, id, alert, "undelivered", 0, Some(&why));
        let _ = tokio::task::spawn_blocking(move || store.record_delivery(&record)).await;
        return;
    }
    let mut last_error = String::new();
    for attempt in 0..cfg.attempts {
        if attempt > 0 {
            tokio::time::sleep(cfg.backoff * 2u32.pow(attempt - 1)).await;
        }
        let mut req = client
            .post(&target.endpoint)
            .header("Content-Type", "application/json")
            .header("X-MeshGuard-Event", "alert")
            .header("X-MeshGuard-Trigger", trigger_str(alert.trigger))
            .body(bytes.clone());
        if let Some(secret) = &target.secret {
            req = req.header("X-MeshGuard-Signature", signature(secret, &bytes));
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(alert = id, channel = %target.id, attempt = attempt + 1, "alert delivered");
                let record = delivery(target, id, alert, "delivered", attempt + 1, None);
                let _ = tokio::task::spawn_blocking(move || store.record_delivery(&record)).await;
                return;
            }
            Ok(r) => last_error = format!("the receiver answered {}", r.status()),
            Err(e) => last_error = format!("cannot reach the receiver: {}", e.without_url()),
        }
    }
    tracing::error!(alert = id, channel = %target.id, error = %last_error, "alert undeliverable after {} attempts; kept", cfg.attempts);
    let record = json!({
        "id": id,
        "channelId": target.id,
        "channelType": match target.kind { ChannelType::Slack => "slack", ChannelType::Pagerduty => "pagerduty", ChannelType::Email => "email", ChannelType::Webhook => "webhook" },
        "attempts": cfg.attempts,
        "lastError": last_error,
        "failedAt": crate::clock::now_rfc3339(),
        "alert": webhook_body(cfg, id, alert),
    });
    let delivered = delivery(
        target,
        id,
        alert,
        "undelivered",
        cfg.attempts,
        Some(&last_error),
    );
    let _ = tokio::task::spawn_blocking(move || {
        store.save_undelivered(&record)?;
        store.record_delivery(&delivered)
    })
    .await;
}

/// What evidence keeps of one alert on one channel: never the endpoint or its secrets.
fn delivery(
    target: &Target,
    id: &str,
    alert: &Alert,
    outcome: &str,
    attempts: u32,
    error: Option<&str>,
) -> Value {
    let mut record = json!({
        "id": id,
        "at": crate::clock::now_rfc3339(),
        "channelId": target.id,
        "outcome": outcome,
        "attempts": attempts,
        "trigger": trigger_str(alert.trigger),
        "severity": severity_str(alert.severity),
        "title": alert.title,
        "entryId": alert.entry.id,
        "traceId": alert.entry.trace_id,
    });
    if let Some(e) = error {
        record["error"] = json!(e);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_text_keeps_whole_characters_and_says_it_was_cut() {
        assert_eq!(super::clip("abc", 3), "abc");
        assert_eq!(super::clip("abcd", 3), "ab\u{2026}");
        assert_eq!(
            super::clip("\u{e9}\u{e9}\u{e9}\u{e9}", 2).chars().count(),
            2
        );
        assert_eq!(
            super::slack_escape("<!channel> & <https://x|y>"),
            "&lt;!channel&gt; &amp; &lt;https://x|y&gt;"
        );
    }

    #[test]
    fn signatures_are_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
