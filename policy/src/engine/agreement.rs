//! The indexed engine against the linear one it replaces: on random policy sets and random
//! requests, `evaluate` and `linear_evaluate` (every applicable policy in name order, every rule
//! in document order, no index) give the same decision, field for field.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::glob::Pattern;

/// The evaluation as it was before the indexes: the specification `evaluate` must keep.
fn linear_evaluate(set: &PolicySet, req: &EvalRequest<'_>) -> Decision {
    let mut first_allow: Option<(&str, &Rule)> = None;
    let mut default_deny: Option<&str> = None;
    let mut applicable = 0usize;
    for (name, doc) in &set.policies {
        if !applies(&doc.applies_to, req) {
            continue;
        }
        applicable += 1;
        match doc.rules.iter().find(|r| rule_matches(r, req)) {
            Some(rule) if rule.effect != Effect::Allow => {
                return Decision {
                    outcome: Outcome::Deny,
                    policy: Some(name.clone()),
                    rule: Some(rule.id.clone()),
                    reason: deny_reason(rule),
                    snapshot: set.version,
                };
            }
            Some(rule) => {
                first_allow.get_or_insert((name, rule));
            }
            None => {
                if doc.default_effect != Effect::Allow && default_deny.is_none() {
                    default_deny = Some(name);
                }
            }
        }
    }
    let (outcome, policy, rule, reason) = if let Some((policy, rule)) = first_allow {
        let reason = format!("Allowed by rule: {}", rule.id);
        (Outcome::Allow, Some(policy), Some(rule.id.clone()), reason)
    } else if let Some(policy) = default_deny {
        let reason = format!(
            "No rule allows {}; policy {policy} defaults to deny",
            req.action
        );
        (Outcome::Deny, Some(policy), None, reason)
    } else if applicable == 0 {
        let reason = "No policy applies to this agent".to_owned();
        (Outcome::Deny, None, None, reason)
    } else {
        (
            Outcome::Allow,
            None,
            None,
            "Allowed by policy defaults".to_owned(),
        )
    };
    Decision {
        outcome,
        policy: policy.map(str::to_owned),
        rule,
        reason,
        snapshot: set.version,
    }
}

/// Few letters, so prefixes overlap and patterns match often; `*` anywhere, `:` and `/` as in
/// real actions, a two-byte character (a trie over bytes must not split it wrongly), and glob
/// characters other tools give a meaning to (`?`, `[`), which are plain characters here.
fn text(max: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => Just("a"), 3 => Just("b"), 3 => Just(":"), 2 => Just("/"),
        4 => Just("*"), 1 => Just("é"), 1 => Just("?"), 1 => Just("["),
    ];
    prop::collection::vec(piece, 0..=max).prop_map(|p| p.concat())
}

fn effect() -> impl Strategy<Value = Effect> {
    prop_oneof![
        Just(Effect::Allow),
        Just(Effect::Deny),
        Just(Effect::RequireApproval)
    ]
}

fn tier() -> impl Strategy<Value = TrustTier> {
    prop_oneof![
        Just(TrustTier::Unverified),
        Just(TrustTier::Verified),
        Just(TrustTier::Trusted),
        Just(TrustTier::Privileged),
    ]
}

/// The names, ids and tags requests and `appliesTo` draw from.
fn who() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["me", "agent_1", "agent_2", "ci", "prod"]).prop_map(str::to_owned)
}

fn condition() -> impl Strategy<Value = Condition> {
    let verb = prop::sample::select(vec!["a", "b", "ab", "a:b", "*", "", "é"]);
    prop_oneof![
        3 => prop::collection::vec(verb.prop_map(str::to_owned), 0..3).prop_map(Condition::Verb),
        1 => prop::collection::vec(text(4).prop_map(|g| Pattern::new(&g)), 0..2)
            .prop_map(Condition::Path),
        1 => prop::collection::vec(text(2), 0..2).prop_map(Condition::ResourceStartsWith),
        1 => Just(Condition::Unknown),
    ]
}

/// Mostly rules with patterns and no conditions (so rules match and shadow each other), some
/// with conditions, some in the Terraform dialect (no patterns), a few with neither.
fn rule() -> impl Strategy<Value = Rule> {
    let actions = prop::collection::vec(text(5).prop_map(|p| Pattern::new(&p)), 0..3);
    let conditions = prop_oneof![
        3 => Just(Vec::new()),
        1 => prop::collection::vec(condition(), 1..3),
    ];
    (effect(), actions, conditions).prop_map(|(effect, actions, conditions)| Rule {
        id: String::new(),
        effect,
        actions,
        conditions,
        reason: None,
    })
}

/// Some values, or the key absent.
fn some<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<Vec<T>>> {
    prop::option::of(prop::collection::vec(s, 0..3))
}

fn applies_to() -> impl Strategy<Value = AppliesTo> {
    let selector =
        (some(tier()), some(who()), some(who())).prop_map(|(trust_tiers, tags, agent_ids)| {
            AppliesTo::Selector {
                trust_tiers,
                tags,
                agent_ids,
            }
        });
    prop_oneof![
        2 => Just(AppliesTo::All),
        1 => prop::collection::vec(who(), 0..3).prop_map(AppliesTo::Names),
        2 => selector,
    ]
}

fn policy() -> impl Strategy<Value = PolicyDoc> {
    let default_effect = prop_oneof![Just(Effect::Allow), Just(Effect::Deny)];
    let rules = prop::collection::vec(rule(), 0..8);
    (applies_to(), default_effect, rules).prop_map(|(applies_to, default_effect, mut rules)| {
        for (i, r) in rules.iter_mut().enumerate() {
            r.id = format!("rule-{i}");
        }
        PolicyDoc {
            name: None,
            version: None,
            description: None,
            applies_to,
            rules,
            default_effect,
            rate_limits: crate::RateLimits::default(),
            delegation: None,
        }
    })
}

/// Policies named so that name order is not the order they were given in.
fn policy_set() -> impl Strategy<Value = PolicySet> {
    let named = (prop::sample::select(vec!["x", "m", "b"]), policy());
    prop::collection::vec(named, 0..6).prop_map(|docs| {
        let policies = docs
            .into_iter()
            .enumerate()
            .map(|(i, (prefix, doc))| (format!("{prefix}{i}"), Arc::new(doc)))
            .collect();
        PolicySet::new(3, policies)
    })
}

#[derive(Debug)]
struct Asked {
    name: String,
    id: String,
    tier: TrustTier,
    tags: Vec<String>,
    actions: Vec<String>,
    resource: Option<String>,
}

fn asked() -> impl Strategy<Value = Asked> {
    (
        who(),
        who(),
        tier(),
        prop::collection::vec(who(), 0..3),
        prop::collection::vec(text(7), 1..12),
        prop::option::of(text(3)),
    )
        .prop_map(|(name, id, tier, tags, actions, resource)| Asked {
            name,
            id,
            tier,
            tags,
            actions,
            resource,
        })
}

/// Actions made from the set's own patterns (each `*` as nothing, and as `a:b`), so that exact
/// and wildcard matches happen in every case, not only when a random action hits one.
fn instances(set: &PolicySet) -> Vec<String> {
    let patterns = set
        .policies
        .iter()
        .flat_map(|(_, doc)| &doc.rules)
        .flat_map(|r| &r.actions);
    patterns
        .flat_map(|p| [p.as_str().replace('*', ""), p.as_str().replace('*', "a:b")])
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_indexed_engine_decides_as_the_linear_one(set in policy_set(), asked in asked()) {
        for action in asked.actions.iter().chain(&instances(&set)) {
            let req = EvalRequest {
                agent_id: &asked.id,
                agent_name: &asked.name,
                tier: asked.tier,
                tags: &asked.tags,
                action,
                resource: asked.resource.as_deref(),
                context: None,
            };
            prop_assert_eq!(evaluate(&set, &req), linear_evaluate(&set, &req), "action {:?}", action);
        }
    }
}
