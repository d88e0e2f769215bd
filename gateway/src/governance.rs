//! The governance step every data-plane call goes through: evaluate against one policy snapshot,
//! record the decision durably, and answer; within a circuit breaker (`CIRCUIT_BREAKER_MS`,
//! 100 ms by default).
//!
//! If the decision is not durable in time, the caller withdraws it from the audit queue:
//! enforce mode fails closed (deny, saying why), audit mode fails open, and that verdict is the
//! one recorded, durably, before the answer. If the writer already holds the decision, it
//! cannot be withdrawn: the caller waits for it and answers with it. Either way one decision
//! is one entry, written once, with the outcome the caller received.
//!
//! Why the data-plane handlers (`/proxy/check`, `/proxy/*`, the batch, the sidecar's enforce
//! routes and heartbeat, audit ingest) take the whole `AppState` where every other handler takes
//! the parts it uses: each decides and records through this module, which reads the policy
//! snapshot, the agent cache, the audit log, the limits, the metrics, the alerts, the SIEM and
//! the license. Narrowing them means this module taking those parts first.

use std::time::{Duration, Instant};

use meshguard_api::{AuditEntry, TrustTier};
use serde_json::{Map, Value};

use crate::config::Mode;
use crate::policy::{EvalRequest, Outcome, PolicySet, evaluate};
use crate::state::AppState;
use crate::store::AgentRecord;

/// What the caller is asking to do.
#[derive(Debug, Clone)]
pub(crate) struct Ask {
    pub(crate) action: String,
    pub(crate) resource: Option<String>,
    pub(crate) method: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) context: Option<Map<String, Value>>,
    pub(crate) trace_id: String,
    /// The agents on whose behalf the caller acts, the original delegator first
    /// (`X-MeshGuard-Delegated-By`, or `delegatedBy` in a batch).
    pub(crate) delegated_by: Vec<String>,
    /// The delegators' standing, checked before evaluation (`Err` says why the chain is refused).
    pub(crate) delegators_ok: Result<(), String>,
    /// On `/proxy/*`: the caller's own, more specific description of the forwarded call (its
    /// `X-MeshGuard-Action` and `X-MeshGuard-Resource`, already checked to agree with the method
    /// and path). `action` stays the one derived from the request; this view must be allowed
    /// too, so a header can only ever narrow what the request itself is permitted.
    pub(crate) narrowed: Option<Narrowed>,
}

/// A caller-supplied refinement of a forwarded call (see [`Ask::narrowed`]).
#[derive(Debug, Clone)]
pub(crate) struct Narrowed {
    pub(crate) action: String,
    pub(crate) resource: Option<String>,
}

/// `a, b, c` → `[a, b, c]`, blanks dropped.
pub(crate) fn parse_chain(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checks a delegation chain against the store: at most 5 hops, no cycle, and every delegator
/// an active agent of tier `verified` or above.
pub(crate) async fn check_delegators(
    state: &AppState,
    agent: &AgentRecord,
    chain: &[String],
) -> Result<(), String> {
    if chain.len() > usize::from(crate::policy::MAX_DELEGATION_DEPTH) {
        return Err(format!(
            "Delegation refused: a chain of {} hops exceeds the gateway's cap of 5",
            chain.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for id in chain {
        if id == &agent.id || !seen.insert(id.as_str()) {
            return Err(format!(
                "Delegation refused: {id} appears twice in the chain (self-delegation or a cycle)"
            ));
        }
        match state.db.agent(id).await {
            Ok(Some(a)) if a.revoked_at.is_none() => {
                if TrustTier::parse(&a.trust_tier).unwrap_or(TrustTier::Unverified)
                    < TrustTier::Verified
                {
                    return Err(format!(
                        "Delegation refused: {id} is {} and only verified agents and above may delegate",
                        a.trust_tier
                    ));
                }
            }
            Ok(_) => {
                return Err(format!(
                    "Delegation refused: delegator {id} is unknown or revoked"
                ));
            }
            Err(_) => {
                return Err("Delegation refused: the delegators could not be checked".to_owned());
            }
        }
    }
    Ok(())
}

/// The answer, as the endpoints render it.
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    /// What the caller gets.
    pub(crate) allowed: bool,
    /// The real decision (differs from `allowed` in audit mode).
    pub(crate) decision: Outcome,
    pub(crate) policy: Option<String>,
    pub(crate) rule: Option<String>,
    pub(crate) reason: String,
    pub(crate) mode: Mode,
    pub(crate) would_deny: bool,
    pub(crate) latency: Duration,
    /// The audit row's sequence number, when it was durably written.
    pub(crate) audit_seq: Option<u64>,
    /// Set when the agent's rate limit refused the call (answer 429).
    pub(crate) rate_limited: Option<crate::limits::Limited>,
}

impl Ask {
    /// What the engine sees: the agent's current tier and tags, and this ask.
    fn eval_request<'a>(&'a self, agent: &'a AgentRecord) -> EvalRequest<'a> {
        self.eval_request_as(agent, &self.action, self.resource.as_deref())
    }

    /// The same, for another description of the call (the narrowed view).
    fn eval_request_as<'a>(
        &'a self,
        agent: &'a AgentRecord,
        action: &'a str,
        resource: Option<&'a str>,
    ) -> EvalRequest<'a> {
        EvalRequest {
            agent_id: &agent.id,
            agent_name: &agent.name,
            tier: TrustTier::parse(&agent.trust_tier).unwrap_or(TrustTier::Unverified),
            tags: &agent.tags,
            action,
            resource,
            context: self.context.as_ref(),
        }
    }

    /// An audit entry for this ask: a deny with nothing known yet; callers fill in the rest.
    fn entry(&self, event: &str, mode: Mode) -> AuditEntry {
        AuditEntry {
            id: crate::ids::new_time_ordered_id("aud"),
            timestamp: crate::clock::now_rfc3339(),
            event: event.to_owned(),
            agent_id: None,
            agent_name: None,
            trust_tier: None,
            action: self.action.clone(),
            resource: self.resource.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            decision: "deny".to_owned(),
            outcome: "deny".to_owned(),
            policy: None,
            policy_name: None,
            rule: None,
            reason: None,
            trace_id: self.trace_id.clone(),
            mode: mode.as_str().to_owned(),
            snapshot: 0,
            meta: Map::new(),
            would_deny: false,
            truncated: std::collections::BTreeMap::new(),
        }
    }
}

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Allow => "allow",
        Outcome::Deny => "deny",
    }
}

/// Evaluates `ask` for `agent` against `snapshot` and builds the verdict and its audit entry.
pub(crate) fn decide(
    mode: Mode,
    snapshot: &PolicySet,
    agent: &AgentRecord,
    ask: &Ask,
) -> (Verdict, AuditEntry) {
    let started = Instant::now();
    let (decision, policy, rule, reason) =
        if let (false, Err(why)) = (ask.delegated_by.is_empty(), &ask.delegators_ok) {
            (Outcome::Deny, None, None, why.clone())
        } else if mode == Mode::Bypass {
            (
                Outcome::Allow,
                None,
                None,
                "bypass mode: policies are not evaluated".to_owned(),
            )
        } else {
            let derived = judge(snapshot, ask, &ask.eval_request(agent));
            match (&derived.0, &ask.narrowed) {
                // The caller's narrower description must be allowed as well: a header can
                // only take permissions away, never add them.
                (Outcome::Allow, Some(n)) => {
                    let narrowed = judge(
                        snapshot,
                        ask,
                        &ask.eval_request_as(agent, &n.action, n.resource.as_deref()),
                    );
                    if narrowed.0 == Outcome::Deny {
                        narrowed
                    } else {
                        derived
                    }
                }
                _ => derived,
            }
        };
    let allowed = decision == Outcome::Allow || mode != Mode::Enforce;
    let would_deny = decision == Outcome::Deny && mode == Mode::Audit;
    let verdict = Verdict {
        allowed,
        decision,
        policy: policy.clone(),
        rule: rule.clone(),
        reason: reason.clone(),
        mode,
        would_deny,
        latency: started.elapsed(),
        audit_seq: None,
        rate_limited: None,
    };
    let entry = AuditEntry {
        agent_id: Some(agent.id.clone()),
        agent_name: Some(agent.name.clone()),
        trust_tier: Some(agent.trust_tier.clone()),
        decision: outcome_str(decision).to_owned(),
        outcome: if allowed { "allow" } else { "deny" }.to_owned(),
        policy_name: policy.clone(),
        policy,
        rule,
        reason: Some(reason),
        snapshot: snapshot.version,
        meta: {
            let mut meta = ask.context.clone().unwrap_or_default();
            if let Some(n) = &ask.narrowed {
                let mut view = Map::new();
                view.insert("action".to_owned(), Value::from(n.action.clone()));
                if let Some(r) = &n.resource {
                    view.insert("resource".to_owned(), Value::from(r.clone()));
                }
                meta.insert("narrowedTo".to_owned(), Value::Object(view));
            }
            if !ask.delegated_by.is_empty() {
                meta.insert(
                    "delegatedBy".to_owned(),
                    Value::from(ask.delegated_by.clone()),
                );
            }
            meta
        },
        would_deny,
        ..ask.entry("decision", mode)
    };
    (verdict, entry)
}

/// One evaluation of `req`, with the delegation ceiling applied when the call is delegated.
fn judge(
    snapshot: &PolicySet,
    ask: &Ask,
    req: &EvalRequest<'_>,
) -> (Outcome, Option<String>, Option<String>, String) {
    let d = evaluate(snapshot, req);
    match (ask.delegated_by.is_empty(), d.outcome) {
        (false, Outcome::Allow) => {
            match crate::policy::delegation_allows(snapshot, req, ask.delegated_by.len()) {
                Ok(_) => (d.outcome, d.policy, d.rule, d.reason),
                Err(why) => (Outcome::Deny, d.policy, None, why),
            }
        }
        _ => (d.outcome, d.policy, d.rule, d.reason),
    }
}

/// Decides and records one ask, within the circuit breaker.
pub(crate) async fn govern(state: &AppState, agent: &AgentRecord, ask: &Ask) -> Verdict {
    use tracing::Instrument as _;
    // One span per decision (exported over OTLP when the `otel` feature is on and configured;
    // free when nothing listens at INFO for this target).
    let span = tracing::info_span!(
        "meshguard.decision",
        agent.id = %agent.id,
        action = %ask.action,
        trace_id = %ask.trace_id,
        allowed = tracing::field::Empty,
        policy = tracing::field::Empty,
        audit.seq = tracing::field::Empty,
    );
    let verdict = decide_and_record(state, agent, ask)
        .instrument(span.clone())
        .await;
    span.record("allowed", verdict.allowed);
    if let Some(p) = &verdict.policy {
        span.record("policy", p.as_str());
    }
    if let Some(seq) = verdict.audit_seq {
        span.record("audit.seq", seq);
    }
    verdict
}

async fn decide_and_record(state: &AppState, agent: &AgentRecord, ask: &Ask) -> Verdict {
    let started = Instant::now();
    let mode = state.config.mode;
    let snapshot = state.policies.snapshot();
    if let Some(verdict) = agent_rate_limit(state, &snapshot, agent, ask).await {
        return verdict;
    }
    let (mut verdict, entry) = decide(mode, &snapshot, agent, ask);
    let alert = crate::alerts::Alerts::for_entry(&entry);
    let deadline = tokio::time::Instant::now() + state.config.circuit_breaker;
    let recorded = record_by(state, state.audit.queue(entry), deadline).await;
    match recorded {
        Ok(seq) => {
            if let Some(alert) = alert {
                state.alerts.raise(alert);
            }
            verdict.audit_seq = Some(seq);
            verdict.latency = started.elapsed();
            state
                .metrics
                .decision(verdict.allowed, verdict.would_deny, verdict.latency, true);
            verdict
        }
        Err(why) => breaker(state, agent, ask, verdict, &why, started).await,
    }
}

/// Waits until `deadline` for a queued decision to be durable. Ok: it is written as decided (in
/// time, or later because the writer already held it and it cannot be taken back). Err: it
/// will never be written (withdrawn in time, or refused), saying why; the breaker answers.
pub(crate) async fn record_by(
    state: &AppState,
    queued: Result<crate::audit::Queued, crate::audit::AuditError>,
    deadline: tokio::time::Instant,
) -> Result<u64, String> {
    let refused = |e: crate::audit::AuditError| format!("the audit log refused the decision ({e})");
    let mut queued = queued.map_err(refused)?;
    match tokio::time::timeout_at(deadline, queued.durable()).await {
        Ok(r) => r.map_err(refused),
        Err(_) if queued.withdraw() => Err(format!(
            "the decision was not durable within the {} ms circuit breaker",
            state.config.circuit_breaker.as_millis()
        )),
        Err(_) => queued.durable().await.map_err(refused),
    }
}

/// The verdict of the circuit breaker for `verdict`: enforce fails closed, audit and bypass
/// fail open, both saying why; and the audit entry that records it.
pub(crate) fn breaker_verdict(
    agent: &AgentRecord,
    ask: &Ask,
    mut verdict: Verdict,
    why: &str,
) -> (Verdict, AuditEntry) {
    let closed = verdict.mode == Mode::Enforce;
    verdict.allowed = !closed;
    verdict.reason = if closed {
        format!("{why}; failing closed (enforce mode)")
    } else {
        format!("{why}; failing open ({} mode)", verdict.mode.as_str())
    };
    let entry = AuditEntry {
        agent_id: Some(agent.id.clone()),
        agent_name: Some(agent.name.clone()),
        trust_tier: Some(agent.trust_tier.clone()),
        decision: outcome_str(verdict.decision).to_owned(),
        outcome: if verdict.allowed { "allow" } else { "deny" }.to_owned(),
        policy: verdict.policy.clone(),
        policy_name: verdict.policy.clone(),
        rule: verdict.rule.clone(),
        reason: Some(verdict.reason.clone()),
        ..ask.entry("circuit_breaker", verdict.mode)
    };
    (verdict, entry)
}

/// The breaker tripped: the decision was not recorded, so the breaker's verdict is, durably,
/// before the answer (it may take longer than the budget: an answer nothing records is worse).
pub(crate) async fn breaker(
    state: &AppState,
    agent: &AgentRecord,
    ask: &Ask,
    verdict: Verdict,
    why: &str,
    started: Instant,
) -> Verdict {
    let (mut verdict, entry) = breaker_verdict(agent, ask, verdict, why);
    tracing::warn!(agent = %agent.id, action = %ask.action, reason = %verdict.reason, "circuit breaker tripped");
    if let Some(alert) = crate::alerts::Alerts::for_entry(&entry) {
        state.alerts.raise(alert);
    }
    match state.audit.append(entry).await {
        Ok(seq) => verdict.audit_seq = Some(seq),
        Err(e) => {
            // No entry records this answer, so it cannot be an allow: nothing is forwarded
            // or allowed that the log does not hold, in any mode.
            tracing::error!(error = %e, "cannot record the circuit breaker's verdict; refusing the call");
            verdict.allowed = false;
            verdict.reason = format!(
                "{}; the audit log could not record this answer either ({e}), so the call is refused",
                verdict.reason
            );
        }
    }
    verdict.latency = started.elapsed();
    state
        .metrics
        .decision(verdict.allowed, verdict.would_deny, verdict.latency, false);
    verdict
}

impl Verdict {
    /// The answer to a call refused by a rate limit (429 in every mode).
    pub(crate) fn rate_limited(
        state: &AppState,
        reason: String,
        limited: crate::limits::Limited,
    ) -> Self {
        Verdict {
            allowed: false,
            decision: Outcome::Deny,
            policy: None,
            rule: None,
            reason,
            mode: state.config.mode,
            would_deny: false,
            latency: Duration::ZERO,
            audit_seq: None,
            rate_limited: Some(limited),
        }
    }
}

/// Applies the tightest `rateLimits` of the agent's policies. A refused call is a recorded
/// deny (event `rate_limit`) and raises a `rate_limit` alert; it answers 429 in every mode.
pub(crate) async fn agent_rate_limit(
    state: &AppState,
    snapshot: &PolicySet,
    agent: &AgentRecord,
    ask: &Ask,
) -> Option<Verdict> {
    let req = ask.eval_request(agent);
    let limits = crate::policy::rate_limits_for(snapshot, &req);
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let limited = state
        .limiter
        .hit(
            format_args!("agent:{}", agent.id),
            limits.per_minute,
            limits.per_hour,
            now,
        )
        .err()?;
    let reason = format!("Rate limit exceeded ({})", limited.limit);
    let who = Some((agent.name.clone(), agent.trust_tier.clone()));
    record_refusal(
        state,
        ask,
        "rate_limit",
        &reason,
        Some(agent.id.clone()),
        who,
    )
    .await;
    Some(Verdict::rate_limited(state, reason, limited))
}

/// Records a data-plane call that presented no valid agent token: a deny event (the regulated
/// acceptance tests require that a sidecar bypass attempt is both audited and alerted).
pub(crate) async fn record_bypass_attempt(
    state: &AppState,
    ask: &Ask,
    why: &str,
    claimed_agent: Option<String>,
) {
    tracing::warn!(action = %ask.action, reason = why, "data-plane call without a valid agent token (bypass attempt)");
    record_refusal(state, ask, "bypass_attempt", why, claimed_agent, None).await;
}

/// Records a call refused before any policy was evaluated (a bypass attempt, a rate limit) as
/// a deny row, and raises its alert; or, past the first of its kind in a window, counts it into
/// the window's aggregate row (`refusals.rs`).
pub(crate) async fn record_refusal(
    state: &AppState,
    ask: &Ask,
    event: &str,
    why: &str,
    agent_id: Option<String>,
    name_and_tier: Option<(String, String)>,
) {
    let (agent_name, trust_tier) = name_and_tier.unzip();
    state.metrics.refusal(event);
    let entry = AuditEntry {
        agent_id,
        agent_name,
        trust_tier,
        reason: Some(why.to_owned()),
        ..ask.entry(event, state.config.mode)
    };
    // Not the first of its kind in this window: counted into the window's aggregate row.
    if state.refusals.note(&entry) == crate::refusals::Note::Counted {
        return;
    }
    if let Some(alert) = crate::alerts::Alerts::for_entry(&entry) {
        state.alerts.raise(alert);
    }
    // A refusal is the same answer whether or not its row is durable yet: the row is written
    // either way, and a slow disk does not hold the refusal back past the budget.
    match tokio::time::timeout(state.config.circuit_breaker, state.audit.append(entry)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, event, "cannot record a refused call"),
        Err(_) => tracing::warn!(
            event,
            "a refused call's row was not durable within the circuit breaker; it is still written"
        ),
    }
}
