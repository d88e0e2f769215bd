//! Evaluation: a pure function of (policy set, request).
//!
//! Within a policy, rules run in document order and the first match wins, else the policy's
//! `defaultEffect`. Across the policies that apply to the agent, in name order: any explicit deny
//! wins; else any explicit allow; else deny if any applicable policy defaults to deny; else allow.
//! No applicable policy denies (fail closed).
//!
//! Two indexes keep a decision from looking at what cannot change it. The action index
//! (`action_index`: every rule of the set by the literal prefix of its action patterns) names
//! the rules that can match the asked action, so a decision tries those, in name order and then
//! document order, and none of the others: with 10,000 rules that all apply to an agent, a
//! decision costs what the few rules sharing its action's prefixes cost, not all 10,000. The
//! agent index (below: policies by what their `appliesTo` names) serves the rest: the defaults
//! when no rule matches, delegation and rate limits. Both only narrow; every candidate is still
//! tested in full, so they change no decision (a property test checks this against the linear
//! evaluation, in `agreement`).

use std::sync::Arc;

use meshguard_api::TrustTier;
use serde_json::{Map, Value};

use super::{AppliesTo, Condition, ContextTest, Effect, PolicyDoc, Rule};
use crate::action_index::ActionIndex;

/// An immutable snapshot of every active policy, sorted by name.
#[derive(Debug, Default)]
pub struct PolicySet {
    pub version: u64,
    policies: Vec<(String, Arc<PolicyDoc>)>,
    /// Which rules of which policies can match a given action.
    actions: ActionIndex,
    /// Which policies can apply to a given agent.
    agents: AgentIndex,
}

/// Policies by the agent names, ids, tags and tiers their `appliesTo` names, so the policies
/// that cannot apply to an agent are never looked at. Every candidate is still checked with
/// the full `appliesTo` test (object selectors AND their keys).
#[derive(Debug, Default)]
struct AgentIndex {
    /// `appliesTo` absent: every agent.
    all: Vec<usize>,
    /// List entries and `agentIds`/`tags` selector values: matched against name, id and tags.
    by_key: std::collections::HashMap<String, Vec<usize>>,
    /// Selectors with only `trustTiers`.
    by_tier: std::collections::HashMap<TrustTier, Vec<usize>>,
}

impl AgentIndex {
    fn build(policies: &[(String, Arc<PolicyDoc>)]) -> Self {
        let mut index = Self::default();
        for (i, (_, doc)) in policies.iter().enumerate() {
            match &doc.applies_to {
                AppliesTo::All => index.all.push(i),
                AppliesTo::Names(names) => {
                    for n in names {
                        index.by_key.entry(n.clone()).or_default().push(i);
                    }
                }
                AppliesTo::Selector {
                    trust_tiers,
                    tags,
                    agent_ids,
                } => {
                    // Index by the most selective key present; an empty selector matches no one.
                    if let Some(ids) = agent_ids {
                        for id in ids {
                            index.by_key.entry(id.clone()).or_default().push(i);
                        }
                    } else if let Some(tags) = tags {
                        for t in tags {
                            index.by_key.entry(t.clone()).or_default().push(i);
                        }
                    } else if let Some(tiers) = trust_tiers {
                        for t in tiers {
                            index.by_tier.entry(*t).or_default().push(i);
                        }
                    }
                }
            }
        }
        index
    }

    /// Candidate policies for the agent, in policy-name order, without duplicates.
    fn candidates(&self, req: &EvalRequest<'_>) -> Vec<usize> {
        let mut out = self.all.clone();
        for key in [req.agent_name, req.agent_id]
            .into_iter()
            .chain(req.tags.iter().map(String::as_str))
        {
            if let Some(v) = self.by_key.get(key) {
                out.extend_from_slice(v);
            }
        }
        if let Some(v) = self.by_tier.get(&req.tier) {
            out.extend_from_slice(v);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl PolicySet {
    pub fn new(version: u64, mut policies: Vec<(String, Arc<PolicyDoc>)>) -> Self {
        policies.sort_by(|a, b| a.0.cmp(&b.0));
        let actions = ActionIndex::build(policies.iter().map(|(_, doc)| doc.as_ref()));
        let agents = AgentIndex::build(&policies);
        Self {
            version,
            policies,
            actions,
            agents,
        }
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

/// What is being decided.
#[derive(Debug, Clone, Copy)]
pub struct EvalRequest<'a> {
    pub agent_id: &'a str,
    pub agent_name: &'a str,
    pub tier: TrustTier,
    pub tags: &'a [String],
    /// `verb:resource`, e.g. `read:api/users/123`.
    pub action: &'a str,
    /// `X-MeshGuard-Resource`, when the caller sent one.
    pub resource: Option<&'a str>,
    pub context: Option<&'a Map<String, Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub policy: Option<String>,
    pub rule: Option<String>,
    pub reason: String,
    pub snapshot: u64,
}

pub fn evaluate(set: &PolicySet, req: &EvalRequest<'_>) -> Decision {
    let (outcome, policy, rule, reason) = match deciding_rule(set, req) {
        Some((policy, rule)) if rule.effect != Effect::Allow => (
            Outcome::Deny,
            Some(policy.to_owned()),
            Some(rule.id.clone()),
            deny_reason(rule),
        ),
        Some((policy, rule)) => (
            Outcome::Allow,
            Some(policy.to_owned()),
            Some(rule.id.clone()),
            format!("Allowed by rule: {}", rule.id),
        ),
        None => by_defaults(set, req),
    };
    Decision {
        outcome,
        policy,
        rule,
        reason,
        snapshot: set.version,
    }
}

/// The rule that decides, with its policy: among the policies that apply, in name order, the
/// first-matching rule of the first policy whose first match denies, else of the first whose
/// first match allows. Only the rules the action index names are tried (in name order, then
/// document order): the others cannot match, so the first match of each policy is the same.
/// After the first allow, a policy is looked at only if one of its candidates does not allow.
fn deciding_rule<'s>(set: &'s PolicySet, req: &EvalRequest<'_>) -> Option<(&'s str, &'s Rule)> {
    let candidates = set.actions.candidates(req.action);
    let mut first_allow = None;
    for same_policy in candidates.chunk_by(|a, b| a.policy == b.policy) {
        let (name, doc) = &set.policies[same_policy[0].policy as usize];
        let rules = || same_policy.iter().map(|c| &doc.rules[c.rule as usize]);
        // Once a policy allows, one whose candidates all allow cannot change the decision.
        let only_allows = || rules().all(|r| r.effect == Effect::Allow);
        if (first_allow.is_some() && only_allows()) || !applies(&doc.applies_to, req) {
            continue;
        }
        let first = rules().find(|r| rule_matches(r, req));
        match first {
            Some(rule) if rule.effect != Effect::Allow => return Some((name, rule)),
            Some(rule) => {
                first_allow.get_or_insert((name.as_str(), rule));
            }
            None => {}
        }
    }
    first_allow
}

/// The decision when no rule of an applicable policy matches: deny if one of them (the first in
/// name order) defaults to deny, else allow if any applies, else deny (fail closed).
fn by_defaults(
    set: &PolicySet,
    req: &EvalRequest<'_>,
) -> (Outcome, Option<String>, Option<String>, String) {
    let mut applicable = false;
    for i in set.agents.candidates(req) {
        let (name, doc) = &set.policies[i];
        if !applies(&doc.applies_to, req) {
            continue;
        }
        if doc.default_effect != Effect::Allow {
            let reason = format!(
                "No rule allows {}; policy {name} defaults to deny",
                req.action
            );
            return (Outcome::Deny, Some(name.clone()), None, reason);
        }
        applicable = true;
    }
    if applicable {
        let reason = "Allowed by policy defaults".to_owned();
        (Outcome::Allow, None, None, reason)
    } else {
        let reason = "No policy applies to this agent".to_owned();
        (Outcome::Deny, None, None, reason)
    }
}

/// Whether the applicable policies let the agent take `req.action` on behalf of a chain of
/// `depth` delegators: some policy's `delegation` must have a `permissionCeiling` pattern that
/// matches the action and a `maxDepth` of at least `depth`. `Err` says why not.
pub fn delegation_allows(
    set: &PolicySet,
    req: &EvalRequest<'_>,
    depth: usize,
) -> Result<String, String> {
    let mut any = false;
    for i in set.agents.candidates(req) {
        let (name, doc) = &set.policies[i];
        let Some(d) = doc
            .delegation
            .as_ref()
            .filter(|_| applies(&doc.applies_to, req))
        else {
            continue;
        };
        any = true;
        if depth <= usize::from(d.max_depth) && d.ceiling.iter().any(|p| p.matches(req.action)) {
            return Ok(name.clone());
        }
    }
    Err(if any {
        format!(
            "Delegation refused: {} is above the permission ceiling, or a chain of {depth} exceeds maxDepth",
            req.action
        )
    } else {
        "Delegation refused: no policy allows this agent to act on another agent's behalf"
            .to_owned()
    })
}

/// The tightest `rateLimits` among the policies that apply to the agent.
pub fn rate_limits_for(set: &PolicySet, req: &EvalRequest<'_>) -> super::RateLimits {
    let mut out = super::RateLimits::default();
    for i in set.agents.candidates(req) {
        let doc = &set.policies[i].1;
        if !applies(&doc.applies_to, req) {
            continue;
        }
        let tighter = |a: Option<u32>, b: Option<u32>| match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        out.per_minute = tighter(out.per_minute, doc.rate_limits.per_minute);
        out.per_hour = tighter(out.per_hour, doc.rate_limits.per_hour);
    }
    out
}

fn deny_reason(rule: &Rule) -> String {
    if let Some(reason) = &rule.reason {
        return reason.clone();
    }
    let pattern = rule
        .actions
        .first()
        .map(|p| p.as_str())
        .unwrap_or("conditions");
    match rule.effect {
        Effect::RequireApproval => format!("Approval required by rule: {} {pattern}", rule.id),
        _ => format!("Denied by rule: {} {pattern}", rule.effect.as_str()),
    }
}

fn applies(applies_to: &AppliesTo, req: &EvalRequest<'_>) -> bool {
    match applies_to {
        AppliesTo::All => true,
        AppliesTo::Names(names) => names
            .iter()
            .any(|n| n == req.agent_name || n == req.agent_id || req.tags.contains(n)),
        AppliesTo::Selector {
            trust_tiers,
            tags,
            agent_ids,
        } => {
            if trust_tiers.is_none() && tags.is_none() && agent_ids.is_none() {
                return false;
            }
            trust_tiers.as_ref().is_none_or(|t| t.contains(&req.tier))
                && tags
                    .as_ref()
                    .is_none_or(|t| t.iter().any(|tag| req.tags.contains(tag)))
                && agent_ids
                    .as_ref()
                    .is_none_or(|ids| ids.iter().any(|id| id == req.agent_id))
        }
    }
}

fn rule_matches(rule: &Rule, req: &EvalRequest<'_>) -> bool {
    if !rule.actions.is_empty() && !rule.actions.iter().any(|p| p.matches(req.action)) {
        return false;
    }
    rule.conditions.iter().all(|c| condition_holds(c, req))
}

fn condition_holds(cond: &Condition, req: &EvalRequest<'_>) -> bool {
    let (verb, object) = req.action.split_once(':').unwrap_or((req.action, ""));
    let resource = req.resource.unwrap_or(object);
    match cond {
        Condition::Verb(verbs) => verbs.iter().any(|v| v == "*" || v == verb),
        Condition::Path(globs) => {
            let from_action = format!("/{}", object.trim_start_matches('/'));
            let from_header = req
                .resource
                .map(|r| format!("/{}", r.trim_start_matches('/')));
            globs.iter().any(|g| {
                g.matches(&from_action) || from_header.as_deref().is_some_and(|h| g.matches(h))
            })
        }
        Condition::ResourceMatches(globs) => globs.iter().any(|g| g.matches(resource)),
        Condition::ResourceStartsWith(prefixes) => {
            prefixes.iter().any(|p| resource.starts_with(p.as_str()))
        }
        Condition::ResourceContains(needle) => resource.contains(needle.as_str()),
        Condition::Context { key, test } => {
            let found = req.context.and_then(|ctx| lookup(ctx, key));
            match test {
                ContextTest::Exists(want) => found.is_some() == *want,
                ContextTest::Equals(want) => {
                    found.is_some_and(|v| scalar_text(v).as_deref() == Some(want))
                }
                ContextTest::In(options) => found
                    .and_then(scalar_text)
                    .is_some_and(|v| options.contains(&v)),
            }
        }
        Condition::Unknown => false,
    }
}

fn lookup<'a>(ctx: &'a Map<String, Value>, dotted: &str) -> Option<&'a Value> {
    let mut parts = dotted.split('.');
    let mut current = ctx.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod agreement;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_policy;

    fn set(docs: &[&str]) -> PolicySet {
        let policies = docs
            .iter()
            .map(|text| {
                let parsed = parse_policy(text);
                let doc = parsed.doc.unwrap_or_else(|| panic!("{:?}", parsed.errors));
                (doc.name.clone().unwrap(), Arc::new(doc))
            })
            .collect();
        PolicySet::new(7, policies)
    }

    fn req<'a>(action: &'a str, tags: &'a [String]) -> EvalRequest<'a> {
        EvalRequest {
            agent_id: "agent_1",
            agent_name: "code-reviewer",
            tier: TrustTier::Verified,
            tags,
            action,
            resource: None,
            context: None,
        }
    }

    const READS: &str = "name: reads\nrules:\n  - name: allow-read\n    effect: allow\n    actions: [\"read:*\"]\n  - name: deny-admin\n    effect: deny\n    actions: [\"admin:*\"]\n    reason: admin is off limits\n";

    #[test]
    fn first_match_within_a_policy_then_default() {
        let s = set(&[READS]);
        let d = evaluate(&s, &req("read:api/users/1", &[]));
        assert_eq!(
            (d.outcome, d.rule.as_deref(), d.snapshot),
            (Outcome::Allow, Some("allow-read"), 7)
        );
        let d = evaluate(&s, &req("admin:delete", &[]));
        assert_eq!(
            (d.outcome, d.reason.as_str()),
            (Outcome::Deny, "admin is off limits")
        );
        let d = evaluate(&s, &req("write:x", &[]));
        assert_eq!(
            (d.outcome, d.policy.as_deref(), d.rule),
            (Outcome::Deny, Some("reads"), None)
        );
    }

    #[test]
    fn explicit_deny_in_any_policy_beats_an_allow() {
        let deny = "name: a-deny\nrules:\n  - name: no-secrets\n    effect: deny\n    actions: [\"read:secrets*\"]\n";
        let s = set(&[READS, deny]);
        let d = evaluate(&s, &req("read:secrets/db", &[]));
        assert_eq!(
            (d.outcome, d.policy.as_deref()),
            (Outcome::Deny, Some("a-deny"))
        );
    }

    #[test]
    fn no_applicable_policy_fails_closed() {
        let s = set(&[
            "name: other\nappliesTo: [someone-else]\nrules:\n  - effect: allow\n    actions: [\"*\"]\n",
        ]);
        let d = evaluate(&s, &req("read:x", &[]));
        assert_eq!(
            (d.outcome, d.reason.as_str(), d.policy),
            (Outcome::Deny, "No policy applies to this agent", None)
        );
    }

    #[test]
    fn terraform_dialect_matches_verb_and_path() {
        let s = set(&[
            "name: tf\nappliesTo: [code-reviewer]\ndefaultEffect: deny\nrules:\n  - name: allow-read-repos\n    effect: allow\n    conditions:\n      action: [read]\n      path: [\"/api/repos/*\"]\n",
        ]);
        assert_eq!(
            evaluate(&s, &req("read:api/repos/x", &[])).outcome,
            Outcome::Allow
        );
        assert_eq!(
            evaluate(&s, &req("write:api/repos/x", &[])).outcome,
            Outcome::Deny
        );
        assert_eq!(
            evaluate(&s, &req("read:api/users", &[])).outcome,
            Outcome::Deny
        );
    }

    #[test]
    fn the_verb_index_keeps_document_order_and_wildcard_rules() {
        let s = set(&[
            "name: order\nrules:\n  - name: any-first\n    effect: deny\n    actions: [\"*:secrets\"]\n  - name: read\n    effect: allow\n    actions: [\"read:*\"]\n  - name: star-verb\n    effect: deny\n    actions: [\"re*:x\"]\n",
        ]);
        assert_eq!(
            evaluate(&s, &req("read:secrets", &[])).rule.as_deref(),
            Some("any-first")
        );
        assert_eq!(
            evaluate(&s, &req("read:x", &[])).rule.as_deref(),
            Some("read")
        );
        assert_eq!(
            evaluate(&s, &req("rewrite:x", &[])).rule.as_deref(),
            Some("star-verb")
        );
        assert_eq!(evaluate(&s, &req("write:y", &[])).rule, None);
    }

    #[test]
    fn the_agent_index_finds_every_kind_of_appliesto() {
        let s = set(&[
            "name: a-all\nrules:\n  - effect: allow\n    actions: [\"all:*\"]\n",
            "name: b-name\nappliesTo: [code-reviewer]\nrules:\n  - effect: allow\n    actions: [\"name:*\"]\n",
            "name: c-tag\nappliesTo:\n  tags: [ci]\nrules:\n  - effect: allow\n    actions: [\"tag:*\"]\n",
            "name: d-tier\nappliesTo:\n  trustTiers: [verified]\nrules:\n  - effect: allow\n    actions: [\"tier:*\"]\n",
            "name: e-id\nappliesTo:\n  agentIds: [agent_1]\n  trustTiers: [privileged]\nrules:\n  - effect: allow\n    actions: [\"id:*\"]\n",
            "name: f-other\nappliesTo: [someone-else]\nrules:\n  - effect: deny\n    actions: [\"*\"]\n",
        ]);
        let ci = vec!["ci".to_owned()];
        for (action, rule_policy) in [
            ("all:x", "a-all"),
            ("name:x", "b-name"),
            ("tag:x", "c-tag"),
            ("tier:x", "d-tier"),
        ] {
            assert_eq!(
                evaluate(&s, &req(action, &ci)).policy.as_deref(),
                Some(rule_policy),
                "{action}"
            );
        }
        // e-id names agent_1 but also requires privileged (AND), so it does not apply to this
        // verified agent: the applicable policies default to deny.
        let d = evaluate(&s, &req("id:x", &ci));
        assert_eq!((d.outcome, d.rule), (Outcome::Deny, None));
        assert_ne!(d.policy.as_deref(), Some("e-id"));
        // f-other never applies: its deny-everything rule does not touch this agent.
        assert_eq!(evaluate(&s, &req("all:x", &ci)).outcome, Outcome::Allow);
    }

    #[test]
    fn selector_is_and_across_keys_or_within() {
        let s = set(&[
            "name: sel\nappliesTo:\n  trustTiers: [verified]\n  tags: [prod, ci]\nrules:\n  - effect: allow\n    actions: [\"*\"]\n",
        ]);
        let ci = vec!["ci".to_owned()];
        assert_eq!(evaluate(&s, &req("x:y", &ci)).outcome, Outcome::Allow);
        assert_eq!(
            evaluate(&s, &req("x:y", &[])).reason,
            "No policy applies to this agent"
        );
    }
}
