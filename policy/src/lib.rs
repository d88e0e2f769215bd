//! Policy documents: parsing, validation and evaluation.
//!
//! `parse` turns YAML (or a JSON policy object) into a checked [`PolicyDoc`], collecting every
//! problem with its field path and line. `engine` evaluates a request against a [`PolicySet`]; it is
//! a pure function of its inputs (no I/O, no clock), so the same snapshot and request always give
//! the same decision.

mod action_index;
mod engine;
mod glob;
mod parse;

pub use engine::{EvalRequest, Outcome, PolicySet, delegation_allows, evaluate, rate_limits_for};
pub use parse::{ParsedPolicy, parse_policy};

use meshguard_api::TrustTier;

/// What a matched rule (or a policy default) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
    /// `require_approval`: no approval workflow exists yet, so it denies and says why.
    RequireApproval,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::RequireApproval => "require_approval",
        }
    }
}

/// A checked policy document.
#[derive(Debug, Clone)]
pub struct PolicyDoc {
    pub name: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub applies_to: AppliesTo,
    pub rules: Vec<Rule>,
    pub default_effect: Effect,
    /// `rateLimits`: requests per minute and per hour for each agent the policy applies to.
    pub rate_limits: RateLimits,
    /// `delegation`: what agents it applies to may do on another agent's behalf.
    pub delegation: Option<Delegation>,
}

/// The gateway's hard cap on delegation chains, whatever a policy says.
pub const MAX_DELEGATION_DEPTH: u8 = 5;

#[derive(Debug, Clone)]
pub struct Delegation {
    /// Longest chain of delegators allowed.
    pub max_depth: u8,
    /// A delegated action must match one of these.
    pub ceiling: Vec<glob::Pattern>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    pub per_minute: Option<u32>,
    pub per_hour: Option<u32>,
}

/// Which agents a policy governs.
#[derive(Debug, Clone)]
pub enum AppliesTo {
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
pub struct Rule {
    /// `id`, else `name`, else `rule-<index>`: what decisions report as `rule`.
    pub id: String,
    pub effect: Effect,
    pub actions: Vec<glob::Pattern>,
    pub conditions: Vec<Condition>,
    pub reason: Option<String>,
}

/// One condition of a rule; all of a rule's conditions must hold for it to match.
#[derive(Debug, Clone)]
pub enum Condition {
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
pub enum ContextTest {
    Equals(String),
    In(Vec<String>),
    Exists(bool),
}
