//! YAML policy documents into checked [`PolicyDoc`]s, with every problem named by field and line.
//!
//! The walk over the marked YAML tree is written by hand (on top of `marked-yaml`, which gives
//! each node its line) rather than through serde, so that one pass can report *all* problems, each
//! with its path (`rules[1].effect`), its line and what is expected, and can tell a hard error from
//! a warning (an unknown condition key is a warning: that rule just never matches).

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoadError, LoaderOptions, Node};
use meshguard_api::{TrustTier, ValidationIssue};

use super::glob::Pattern;
use super::{
    AppliesTo, Condition, ContextTest, Delegation, Effect, MAX_DELEGATION_DEPTH, PolicyDoc,
    RateLimits, Rule,
};

/// The result of parsing one document: a checked document when there are no errors.
#[derive(Debug)]
pub struct ParsedPolicy {
    pub doc: Option<PolicyDoc>,
    pub errors: Vec<ValidationIssue>,
    pub warnings: Vec<ValidationIssue>,
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "name",
    "version",
    "description",
    "appliesTo",
    "rules",
    "defaultEffect",
    "delegation",
    "rateLimits",
    "humanInTheLoop",
    "metadata",
    "apiVersion",
    "kind",
    "spec",
    "id",
    "tags",
    "enabled",
];

const RULE_KEYS: &[&str] = &[
    "id",
    "name",
    "effect",
    "decision",
    "actions",
    "action",
    "conditions",
    "reason",
    "description",
    "alert",
];

/// Parses a policy document (YAML; JSON is YAML too).
pub fn parse_policy(text: &str) -> ParsedPolicy {
    let mut cx = Cx::default();
    let doc = match parse_tree(text) {
        Ok(Node::Mapping(map)) => cx.document(&map),
        Ok(other) => {
            cx.error(
                "",
                &other,
                "the policy document must be a mapping with name, rules and defaultEffect",
            );
            None
        }
        Err(issue) => {
            cx.errors.push(issue);
            None
        }
    };
    ParsedPolicy {
        doc: if cx.errors.is_empty() { doc } else { None },
        errors: cx.errors,
        warnings: cx.warnings,
    }
}

fn parse_tree(text: &str) -> Result<Node, ValidationIssue> {
    if text.trim().is_empty() {
        return Err(issue(
            "",
            None,
            "the policy document is empty; expected a YAML mapping with name, rules and defaultEffect",
        ));
    }
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    marked_yaml::parse_yaml_with_options(0, text, options).map_err(|e| {
        let line = load_error_line(&e);
        let message = match &e {
            LoadError::TopLevelMustBeMapping(_) => {
                "the policy document must be a mapping with name, rules and defaultEffect"
                    .to_owned()
            }
            other => format!("invalid YAML: {other}"),
        };
        issue("", line, &message)
    })
}

fn load_error_line(e: &LoadError) -> Option<u64> {
    let marker = match e {
        LoadError::TopLevelMustBeMapping(m)
        | LoadError::TopLevelMustBeSequence(m)
        | LoadError::UnexpectedAnchor(m)
        | LoadError::MappingKeyMustBeScalar(m)
        | LoadError::UnexpectedTag(m)
        | LoadError::ScanError(m, _) => Some(m),
        LoadError::DuplicateKey(inner) => inner.key.span().start(),
    };
    marker.map(|m| m.line() as u64)
}

fn issue(path: &str, line: Option<u64>, message: &str) -> ValidationIssue {
    ValidationIssue {
        path: path.to_owned(),
        line,
        message: message.to_owned(),
    }
}

fn line_of(node: &Node) -> Option<u64> {
    node.span().start().map(|m| m.line() as u64)
}

fn key_line(key: &MarkedScalarNode) -> Option<u64> {
    key.span().start().map(|m| m.line() as u64)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

#[derive(Default)]
struct Cx {
    errors: Vec<ValidationIssue>,
    warnings: Vec<ValidationIssue>,
}

impl Cx {
    fn error(&mut self, path: &str, at: &Node, message: &str) {
        let message = if path.is_empty() {
            message.to_owned()
        } else {
            format!("{path}: {message}")
        };
        self.errors.push(issue(path, line_of(at), &message));
    }

    fn warn(&mut self, path: &str, line: Option<u64>, message: &str) {
        self.warnings
            .push(issue(path, line, &format!("{path}: {message}")));
    }

    fn scalar(&mut self, path: &str, node: &Node, expected: &str) -> Option<String> {
        match node {
            Node::Scalar(s) => Some(s.as_str().to_owned()),
            _ => {
                self.error(
                    path,
                    node,
                    &format!("expected {expected}, found a {}", kind(node)),
                );
                None
            }
        }
    }

    /// A list of strings; a single string is read as a list of one.
    fn string_list(&mut self, path: &str, node: &Node, expected: &str) -> Option<Vec<String>> {
        match node {
            Node::Scalar(s) => Some(vec![s.as_str().to_owned()]),
            Node::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.scalar(&format!("{path}[{i}]"), item, expected)?);
                }
                Some(out)
            }
            Node::Mapping(_) => {
                self.error(
                    path,
                    node,
                    &format!("expected a list of {expected}, found a mapping"),
                );
                None
            }
        }
    }

    fn document(&mut self, top: &MarkedMappingNode) -> Option<PolicyDoc> {
        // The AGT envelope (`apiVersion`, `kind`, `metadata`, `spec`) carries the body in `spec`.
        let (body, name_source) = match top.get_node("spec") {
            Some(Node::Mapping(spec)) => (spec, top.get_mapping("metadata")),
            Some(other) => {
                self.error(
                    "spec",
                    other,
                    "expected a mapping holding rules, appliesTo and defaultEffect",
                );
                return None;
            }
            None => (top, None),
        };
        for (key, _) in top.iter() {
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                self.warn(key.as_str(), key_line(key), "unknown key, ignored");
            }
        }

        let (name, version) = self.name_and_version(name_source.unwrap_or(top));
        let description = top
            .get_node("description")
            .and_then(|n| self.scalar("description", n, "a string"));

        let applies_to = match body.get_node("appliesTo") {
            None => AppliesTo::All,
            Some(node) => self.applies_to(node)?,
        };
        let default_effect = match body.get_node("defaultEffect") {
            None => Effect::Deny,
            Some(node) => self.effect("defaultEffect", node)?,
        };
        let rules = self.rules(body);
        let delegation = body
            .get_node("delegation")
            .and_then(|node| self.delegation(node));
        let rate_limits = body
            .get_node("rateLimits")
            .map(|node| self.rate_limits(node))
            .unwrap_or_default();

        let rules = rules?;
        if !self.errors.is_empty() {
            return None;
        }
        Some(PolicyDoc {
            name,
            version,
            description,
            applies_to,
            rules,
            default_effect,
            rate_limits,
            delegation,
        })
    }

    /// The policy's name (not empty) and version (a missing one is a warning), from the
    /// envelope's `metadata` or the top level.
    fn name_and_version(
        &mut self,
        name_map: &MarkedMappingNode,
    ) -> (Option<String>, Option<String>) {
        let name = name_map
            .get_node("name")
            .and_then(|n| self.scalar("name", n, "a string"));
        if name.as_deref() == Some("") {
            self.error(
                "name",
                name_map.get_node("name").expect("present"),
                "must not be empty",
            );
        }
        let version = name_map
            .get_node("version")
            .and_then(|n| self.scalar("version", n, "a string such as \"1.0\""));
        if version.is_none() && name_map.get_node("version").is_none() {
            self.warnings.push(issue(
                "version",
                None,
                "version: missing; set a version such as \"1.0\" to tell revisions apart",
            ));
        }
        (name, version)
    }

    /// `rules`: a non-empty list, each rule parsed (every rule's problems are reported, not
    /// only the first's).
    fn rules(&mut self, body: &MarkedMappingNode) -> Option<Vec<Rule>> {
        match body.get_node("rules") {
            None => {
                self.errors.push(issue("rules", None, "rules: missing; expected a non-empty list of rules, each with effect and actions"));
                None
            }
            Some(Node::Sequence(items)) if items.is_empty() => {
                self.error(
                    "rules",
                    body.get_node("rules").expect("present"),
                    "must not be empty; add at least one rule with effect and actions",
                );
                None
            }
            Some(Node::Sequence(items)) => {
                let mut rules = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    if let Some(rule) = self.rule(i, item) {
                        rules.push(rule);
                    }
                }
                Some(rules)
            }
            Some(other) => {
                self.error(
                    "rules",
                    other,
                    &format!("expected a list of rules, found a {}", kind(other)),
                );
                None
            }
        }
    }

    fn applies_to(&mut self, node: &Node) -> Option<AppliesTo> {
        match node {
            Node::Sequence(_) | Node::Scalar(_) => {
                let names = self.string_list("appliesTo", node, "agent names, ids or tags")?;
                Some(AppliesTo::Names(names))
            }
            Node::Mapping(map) => {
                let mut trust_tiers = None;
                let mut tags = None;
                let mut agent_ids = None;
                for (key, value) in map.iter() {
                    let path = join("appliesTo", key.as_str());
                    match key.as_str() {
                        "trustTiers" => {
                            let names = self.string_list(&path, value, "trust tier names")?;
                            let mut tiers = Vec::with_capacity(names.len());
                            for (i, name) in names.iter().enumerate() {
                                match TrustTier::parse(name) {
                                    Ok(t) => tiers.push(t),
                                    Err(e) => {
                                        let at = match value {
                                            Node::Sequence(items) => &items[i],
                                            _ => value,
                                        };
                                        self.error(&format!("{path}[{i}]"), at, &e.to_string());
                                    }
                                }
                            }
                            trust_tiers = Some(tiers);
                        }
                        "tags" => tags = Some(self.string_list(&path, value, "tags")?),
                        "agentIds" => agent_ids = Some(self.string_list(&path, value, "agent ids")?),
                        "orgIds" => self.warn(&path, key_line(key), "this gateway is single-tenant; orgIds is ignored"),
                        _ => self.error(
                            &path,
                            value,
                            "unknown selector; expected trustTiers, tags or agentIds (a typo here would widen the policy, so it is refused)",
                        ),
                    }
                }
                if trust_tiers.is_none() && tags.is_none() && agent_ids.is_none() {
                    self.warn(
                        "appliesTo",
                        line_of(node),
                        "has no selector, so this policy applies to no agent",
                    );
                }
                Some(AppliesTo::Selector {
                    trust_tiers,
                    tags,
                    agent_ids,
                })
            }
        }
    }

    fn effect(&mut self, path: &str, node: &Node) -> Option<Effect> {
        let text = self.scalar(path, node, "allow, deny or require_approval")?;
        match text.to_ascii_lowercase().as_str() {
            "allow" => Some(Effect::Allow),
            "deny" => Some(Effect::Deny),
            "require_approval" | "approval_required" => Some(Effect::RequireApproval),
            _ => {
                self.error(
                    path,
                    node,
                    &format!("expected allow, deny or require_approval, found {text:?}"),
                );
                None
            }
        }
    }

    fn rule(&mut self, index: usize, node: &Node) -> Option<Rule> {
        let path = format!("rules[{index}]");
        let Node::Mapping(map) = node else {
            self.error(
                &path,
                node,
                &format!(
                    "expected a rule mapping with effect and actions, found a {}",
                    kind(node)
                ),
            );
            return None;
        };
        for (key, _) in map.iter() {
            if !RULE_KEYS.contains(&key.as_str()) {
                self.warn(
                    &join(&path, key.as_str()),
                    key_line(key),
                    "unknown rule key, ignored",
                );
            }
        }
        let id = map
            .get_node("id")
            .and_then(|n| self.scalar(&join(&path, "id"), n, "a string"));
        let name = map
            .get_node("name")
            .and_then(|n| self.scalar(&join(&path, "name"), n, "a string"));
        let effect_node = map.get_node("effect").or_else(|| map.get_node("decision"));
        let effect = match effect_node {
            Some(n) => self.effect(&join(&path, "effect"), n),
            None => {
                self.error(
                    &path,
                    node,
                    "effect: missing; expected allow, deny or require_approval",
                );
                None
            }
        };
        let mut actions = Vec::new();
        if let Some(n) = map.get_node("actions").or_else(|| map.get_node("action")) {
            let apath = join(&path, "actions");
            if let Some(list) = self.string_list(&apath, n, "action patterns such as read:*") {
                if list.is_empty() {
                    self.error(
                        &apath,
                        n,
                        "must not be empty; list action patterns such as read:*",
                    );
                }
                actions = list.iter().map(|p| Pattern::new(p)).collect();
            }
        }
        let mut conditions = Vec::new();
        if let Some(n) = map.get_node("conditions") {
            conditions = self.conditions(&join(&path, "conditions"), n);
        }
        let has_verb = conditions.iter().any(|c| matches!(c, Condition::Verb(_)));
        if actions.is_empty() && !has_verb && map.get_node("actions").is_none() {
            self.error(
                &path,
                node,
                "needs actions (a list of patterns such as read:*) or conditions.action (a list of verbs such as read)",
            );
        }
        let reason = map
            .get_node("reason")
            .and_then(|n| self.scalar(&join(&path, "reason"), n, "a string"));
        if let Some(n) = map.get_node("alert")
            && let Some(level) = self.scalar(&join(&path, "alert"), n, "info, warning or critical")
            && !["info", "warning", "critical"].contains(&level.as_str())
        {
            self.error(
                &join(&path, "alert"),
                n,
                &format!("expected info, warning or critical, found {level:?}"),
            );
        }
        Some(Rule {
            id: id.or(name).unwrap_or_else(|| format!("rule-{index}")),
            effect: effect?,
            actions,
            conditions,
            reason,
        })
    }

    fn conditions(&mut self, path: &str, node: &Node) -> Vec<Condition> {
        let Node::Mapping(map) = node else {
            self.error(
                path,
                node,
                &format!("expected a mapping of conditions, found a {}", kind(node)),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, value) in map.iter() {
            let cpath = join(path, key.as_str());
            match key.as_str() {
                "action" => {
                    if let Some(verbs) =
                        self.string_list(&cpath, value, "verbs such as read or write")
                    {
                        out.push(Condition::Verb(verbs));
                    }
                }
                "path" => {
                    if let Some(globs) =
                        self.string_list(&cpath, value, "path globs such as /api/repos/*")
                    {
                        out.push(Condition::Path(
                            globs.iter().map(|g| Pattern::new(g)).collect(),
                        ));
                    }
                }
                "resource" => self.resource_conditions(&cpath, value, &mut out),
                "context" => match value {
                    Node::Mapping(ctx) => {
                        for (ckey, cvalue) in ctx.iter() {
                            let kpath = join(&cpath, ckey.as_str());
                            if let Some(test) = self.context_test(&kpath, cvalue) {
                                out.push(Condition::Context {
                                    key: ckey.as_str().to_owned(),
                                    test,
                                });
                            }
                        }
                    }
                    other => self.error(
                        &cpath,
                        other,
                        "expected a mapping of context keys to values",
                    ),
                },
                dotted if dotted.starts_with("context.") => {
                    if let Some(test) = self.context_test(&cpath, value) {
                        out.push(Condition::Context {
                            key: dotted["context.".len()..].to_owned(),
                            test,
                        });
                    }
                }
                _ => {
                    self.warn(
                        &cpath,
                        key_line(key),
                        "condition not understood by this gateway; this rule will never match",
                    );
                    out.push(Condition::Unknown);
                }
            }
        }
        out
    }

    fn resource_conditions(&mut self, path: &str, node: &Node, out: &mut Vec<Condition>) {
        match node {
            Node::Mapping(map) => {
                for (key, value) in map.iter() {
                    let kpath = join(path, key.as_str());
                    match key.as_str() {
                        "matches" => {
                            if let Some(globs) = self.string_list(&kpath, value, "globs") {
                                out.push(Condition::ResourceMatches(
                                    globs.iter().map(|g| Pattern::new(g)).collect(),
                                ));
                            }
                        }
                        "startsWith" => {
                            if let Some(prefixes) = self.string_list(&kpath, value, "prefixes") {
                                out.push(Condition::ResourceStartsWith(prefixes));
                            }
                        }
                        "contains" => {
                            if let Some(s) = self.scalar(&kpath, value, "a string") {
                                out.push(Condition::ResourceContains(s));
                            }
                        }
                        _ => {
                            self.warn(&kpath, key_line(key), "resource test not understood (expected matches, startsWith or contains); this rule will never match");
                            out.push(Condition::Unknown);
                        }
                    }
                }
            }
            _ => {
                if let Some(globs) = self.string_list(path, node, "globs") {
                    out.push(Condition::ResourceMatches(
                        globs.iter().map(|g| Pattern::new(g)).collect(),
                    ));
                }
            }
        }
    }

    fn context_test(&mut self, path: &str, node: &Node) -> Option<ContextTest> {
        match node {
            Node::Scalar(s) => Some(ContextTest::Equals(s.as_str().to_owned())),
            Node::Sequence(_) => self.string_list(path, node, "values").map(ContextTest::In),
            Node::Mapping(map) => {
                if let Some(v) = map.get_node("equals") {
                    return self
                        .scalar(&join(path, "equals"), v, "a value")
                        .map(ContextTest::Equals);
                }
                if let Some(v) = map.get_node("in") {
                    return self
                        .string_list(&join(path, "in"), v, "values")
                        .map(ContextTest::In);
                }
                if let Some(v) = map.get_node("exists") {
                    let epath = join(path, "exists");
                    return match self.scalar(&epath, v, "true or false")?.as_str() {
                        "true" => Some(ContextTest::Exists(true)),
                        "false" => Some(ContextTest::Exists(false)),
                        other => {
                            self.error(
                                &epath,
                                v,
                                &format!("expected true or false, found {other:?}"),
                            );
                            None
                        }
                    };
                }
                self.warn(path, line_of(node), "context test not understood (expected equals, in or exists); this rule will never match");
                None
            }
        }
    }

    fn delegation(&mut self, node: &Node) -> Option<Delegation> {
        let Node::Mapping(map) = node else {
            self.error(
                "delegation",
                node,
                "expected a mapping with maxDepth and permissionCeiling",
            );
            return None;
        };
        let mut max_depth = MAX_DELEGATION_DEPTH;
        if let Some(n) = map.get_node("maxDepth") {
            match self
                .scalar("delegation.maxDepth", n, "a whole number from 0 to 5")
                .and_then(|s| s.parse::<u8>().ok())
            {
                Some(d @ 0..=MAX_DELEGATION_DEPTH) => max_depth = d,
                _ => self.error(
                    "delegation.maxDepth",
                    n,
                    "expected a whole number from 0 to 5 (the gateway caps delegation at 5 hops)",
                ),
            }
        }
        let ceiling = match map.get_node("permissionCeiling") {
            Some(n) => self
                .string_list("delegation.permissionCeiling", n, "action patterns")
                .unwrap_or_default()
                .iter()
                .map(|p| Pattern::new(p))
                .collect(),
            None => {
                self.warn(
                    "delegation",
                    line_of(node),
                    "has no permissionCeiling, so no delegated action is allowed",
                );
                Vec::new()
            }
        };
        Some(Delegation { max_depth, ceiling })
    }

    fn rate_limits(&mut self, node: &Node) -> RateLimits {
        let mut out = RateLimits::default();
        let Node::Mapping(map) = node else {
            self.error(
                "rateLimits",
                node,
                "expected a mapping with requestsPerMinute and/or requestsPerHour",
            );
            return out;
        };
        for (key, value) in map.iter() {
            let path = join("rateLimits", key.as_str());
            let slot = match key.as_str() {
                "requestsPerMinute" => &mut out.per_minute,
                "requestsPerHour" => &mut out.per_hour,
                _ => {
                    self.warn(&path, key_line(key), "unknown rate limit, ignored (expected requestsPerMinute or requestsPerHour)");
                    continue;
                }
            };
            match self
                .scalar(&path, value, "a positive whole number")
                .and_then(|s| s.parse::<u32>().ok())
            {
                Some(n) if n > 0 => *slot = Some(n),
                _ => self.error(&path, value, "expected a positive whole number"),
            }
        }
        out
    }
}

fn kind(node: &Node) -> &'static str {
    match node {
        Node::Scalar(_) => "string",
        Node::Sequence(_) => "list",
        Node::Mapping(_) => "mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<ValidationIssue> {
        let parsed = parse_policy(text);
        assert!(parsed.doc.is_none(), "expected errors for {text}");
        parsed.errors
    }

    #[test]
    fn canonical_document_parses() {
        let parsed = parse_policy(
            "name: p\nversion: \"1.0\"\nappliesTo:\n  trustTiers: [verified, trusted]\nrules:\n  - name: r\n    effect: allow\n    actions: [\"read:*\"]\ndefaultEffect: deny\n",
        );
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let doc = parsed.doc.unwrap();
        assert_eq!(doc.rules[0].id, "r");
        assert_eq!(doc.default_effect, Effect::Deny);
    }

    #[test]
    fn terraform_dialect_parses_from_yamlencode_output() {
        let text = "\"appliesTo\":\n- \"code-reviewer\"\n\"defaultEffect\": \"deny\"\n\"name\": \"code-review-policy\"\n\"rules\":\n- \"conditions\":\n    \"action\":\n    - \"read\"\n    \"path\":\n    - \"/api/repos/*\"\n  \"effect\": \"allow\"\n  \"name\": \"allow-read-repos\"\n\"version\": \"1.0\"\n";
        let parsed = parse_policy(text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert!(
            matches!(parsed.doc.unwrap().applies_to, AppliesTo::Names(ref n) if n == &["code-reviewer"])
        );
    }

    #[test]
    fn bad_effect_is_named_with_path_and_line() {
        let errs =
            errors("name: p\nrules:\n  - name: r\n    effect: permit\n    actions: [\"read:*\"]\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "rules[0].effect");
        assert_eq!(errs[0].line, Some(4));
        assert!(
            errs[0].message.contains("allow, deny or require_approval"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let errs = errors("name: p\nrules:\n  - effect: allow\n   actions: [\n");
        assert!(errs[0].line.is_some(), "{:?}", errs);
        assert!(errs[0].message.starts_with("invalid YAML"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errs = errors(
            "name: p\nappliesTo: {tag: [x]}\nrules:\n  - effect: allow\n  - effect: maybe\n    actions: [a]\n",
        );
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["appliesTo.tag", "rules[0]", "rules[1].effect"]);
    }

    #[test]
    fn unknown_condition_warns_and_never_matches() {
        let parsed = parse_policy(
            "name: p\nrules:\n  - effect: allow\n    actions: [\"*\"]\n    conditions:\n      amount_max: 100\n",
        );
        assert!(parsed.errors.is_empty());
        assert_eq!(
            parsed
                .warnings
                .iter()
                .filter(|w| w.path == "rules[0].conditions.amount_max")
                .count(),
            1
        );
        assert!(matches!(
            parsed.doc.unwrap().rules[0].conditions[0],
            Condition::Unknown
        ));
    }

    #[test]
    fn duplicate_keys_and_missing_rules_are_errors() {
        assert_eq!(errors("name: a\nname: b\nrules: []\n")[0].line, Some(2));
        assert_eq!(errors("name: a\n")[0].path, "rules");
        assert_eq!(errors("- a\n- b\n")[0].path, "");
        assert_eq!(errors("   \n")[0].path, "");
    }
}
