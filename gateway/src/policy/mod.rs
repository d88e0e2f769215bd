//! Policy documents: parsing, validation and evaluation.
//!
//! `parse` turns YAML (or a JSON policy object) into a checked [`PolicyDoc`], collecting every
//! problem with its field path and line. `engine` evaluates a request against a [`PolicySet`]; it is
//! a pure function of its inputs (no I/O, no clock), so the same snapshot and request always give
//! the same decision.

mod engine;
mod glob;
mod parse;

pub(crate) use engine::{
    EvalRequest, Outcome, PolicySet, delegation_allows, evaluate, rate_limits_for,
};
pub(crate) use parse::{ParsedPolicy, parse_policy};

use meshguard_api::TrustTier;

/// What a matched rule (or a policy default) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    Allow,
    Deny,
    /// `require_approval`: no approval workflow exists yet, so it denies and says why.
    RequireApproval,
}

impl Effect {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::RequireApproval => "require_approval",
        }
    }
}

/// A checked policy document.
#[derive(Debug, Clone)]
pub(crate) struct PolicyDoc {
    pub(crate) name: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) applies_to: AppliesTo,
    pub(crate) rules: Vec<Rule>,
    pub(crate) default_effect: Effect,
    /// `rateLimits`: requests per minute and per hour for each agent the policy applies to.
    pub(crate) rate_limits: RateLimits,
    /// `delegation`: what agents it applies to may do on another agent's behalf.
    pub(crate) delegation: Option<Delegation>,
}

/// The gateway's hard cap on delegation chains, whatever a policy says.
pub(crate) const MAX_DELEGATION_DEPTH: u8 = 5;

#[derive(Debug, Clone)]
pub(crate) struct Delegation {
    /// Longest chain of delegators allowed.
    pub(crate) max_depth: u8,
    /// A delegated action must match one of these.
    pub(crate) ceiling: Vec<glob::Pattern>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RateLimits {
    pub(crate) per_minute: Option<u32>,
    pub(crate) per_hour: Option<u32>,
}

/// Which agents a policy governs.
#[derive(Debug, Clone)]
pub(crate) enum AppliesTo {
    /// `appliesTo` absent: every agent.
    All,
    /// List form: an agent whose name, id or any tag equals an entry.
    Names(Vec<String>),
    /// Object form: AND across the keys present, OR within a key. No keys: no agent.
    Selector {
        trust_tiers: Option<Vec<TrustTier>>,
        tags: Option<Vec<String>>,
        agent_ids: Option<Vec<String>>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// `id`, else `name`, else `rule-<index>`: what decisions report as `rule`.
    pub(crate) id: String,
    pub(crate) effect: Effect,
    pub(crate) actions: Vec<glob::Pattern>,
    pub(crate) conditions: Vec<Condition>,
    pub(crate) reason: Option<String>,
}

/// One condition of a rule; all of a rule's conditions must hold for it to match.
#[derive(Debug, Clone)]
pub(crate) enum Condition {
    /// Terraform dialect: the verb (before `:`) is one of these (`*` allows any).
    Verb(Vec<String>),
    /// Terraform dialect: `/` + the resource matches one of these globs.
    Path(Vec<glob::Pattern>),
    ResourceMatches(Vec<glob::Pattern>),
    ResourceStartsWith(Vec<String>),
    ResourceContains(String),
    /// A key of the request context (dotted path) equals, is in, or exists.
    Context {
        key: String,
        test: ContextTest,
    },
    /// A key this engine does not understand: the rule never matches (validate warns).
    Unknown,
}

#[derive(Debug, Clone)]
pub(crate) enum ContextTest {
    Equals(String),
    In(Vec<String>),
    Exists(bool),
}
