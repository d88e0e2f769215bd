//! The action index: every rule of every policy in a set, by the literal prefix of its action
//! patterns, so a decision tries only the rules that can match the asked action.
//!
//! A pattern can match an action only if the action starts with the pattern's literal prefix
//! (the text before its first `*`), or, for a pattern with no `*`, only if the action is that
//! text. The index is a byte trie over those prefixes: walking the action through it from the
//! root passes exactly the nodes of the action's own prefixes, and each node lists the rules
//! with a pattern whose literal prefix ends there. A rule is listed under each of its patterns.
//! Rules without action patterns (the Terraform dialect) are listed under the verbs of their
//! first `conditions.action` (a rule that needs verb `read` can only match `read` or `read:…`);
//! a rule that pins nothing (a pattern starting with `*`, a verb `*`, no verb at all) sits at the
//! root, which every walk passes.
//!
//! The index only narrows: the candidates are a superset of the rules that match, and every
//! candidate is still checked with the full rule test (`glob::Pattern::matches`, conditions),
//! so the patterns mean exactly what they meant without it. Candidates come out in (policy,
//! rule) order, which is name order, then document order: the order the engine tries rules in.
//!
//! Written by hand rather than with `globset`, `aho-corasick` or `regex-automata`: a prefix trie
//! is some sixty lines, whereas a glob crate would bring its own meaning of `?`, `[`, `{`, `\`
//! and `**` that our patterns treat as plain characters, and a prefix test is all the narrowing
//! that the patterns people write (`read:*`, `svc-a:*`, `*`) need.

use crate::{Condition, PolicyDoc, Rule};

/// A rule of the set: its policy's position (name order) and its own position in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RuleRef {
    pub(crate) policy: u32,
    pub(crate) rule: u32,
}

/// The trie; node 0 is the root (the empty prefix).
#[derive(Debug)]
pub(crate) struct ActionIndex {
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    /// Child nodes by the next byte of the prefix, sorted by byte.
    children: Vec<(u8, u32)>,
    /// Rules with a pattern `<this prefix>*…`: candidates for every action that passes here.
    prefixed: Vec<RuleRef>,
    /// Rules with a pattern that is exactly this text: candidates only for an action that ends here.
    exact: Vec<RuleRef>,
}

/// What a rule needs an action to look like, before the full test.
enum Key<'a> {
    Prefix(&'a str),
    Exact(&'a str),
}

impl Default for ActionIndex {
    fn default() -> Self {
        Self {
            nodes: vec![Node::default()],
        }
    }
}

impl ActionIndex {
    /// Indexes every rule of `policies`, which are in the order the engine tries them.
    pub(crate) fn build<'a>(policies: impl IntoIterator<Item = &'a PolicyDoc>) -> Self {
        let mut index = Self::default();
        for (p, doc) in policies.into_iter().enumerate() {
            for (r, rule) in doc.rules.iter().enumerate() {
                let at = RuleRef {
                    policy: u32::try_from(p).expect("fewer than 2^32 policies"),
                    rule: u32::try_from(r).expect("fewer than 2^32 rules in a policy"),
                };
                for key in keys(rule) {
                    index.insert(key, at);
                }
            }
        }
        index
    }

    /// The rules that can match `action`, in (policy, rule) order, each once.
    pub(crate) fn candidates(&self, action: &str) -> Vec<RuleRef> {
        let mut node = &self.nodes[0];
        let mut out = node.prefixed.clone();
        let mut walked_all = true;
        for byte in action.bytes() {
            match node.child(byte) {
                Some(next) => node = &self.nodes[next as usize],
                None => {
                    walked_all = false;
                    break;
                }
            }
            out.extend_from_slice(&node.prefixed);
        }
        if walked_all {
            out.extend_from_slice(&node.exact);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn insert(&mut self, key: Key<'_>, at: RuleRef) {
        let text = match key {
            Key::Prefix(t) | Key::Exact(t) => t,
        };
        let mut node = 0usize;
        for byte in text.bytes() {
            node = match self.nodes[node].child(byte) {
                Some(next) => next as usize,
                None => self.add_child(node, byte),
            };
        }
        match key {
            Key::Prefix(_) => self.nodes[node].prefixed.push(at),
            Key::Exact(_) => self.nodes[node].exact.push(at),
        }
    }

    fn add_child(&mut self, parent: usize, byte: u8) -> usize {
        let child = self.nodes.len();
        self.nodes.push(Node::default());
        let id = u32::try_from(child).expect("fewer than 2^32 trie nodes");
        let children = &mut self.nodes[parent].children;
        let at = children.partition_point(|(b, _)| *b < byte);
        children.insert(at, (byte, id));
        child
    }
}

impl Node {
    fn child(&self, byte: u8) -> Option<u32> {
        self.children
            .binary_search_by_key(&byte, |(b, _)| *b)
            .ok()
            .map(|i| self.children[i].1)
    }
}

/// The keys a rule is listed under: one per action pattern, else one per verb of its first
/// `conditions.action`, else the root.
fn keys(rule: &Rule) -> Vec<Key<'_>> {
    if !rule.actions.is_empty() {
        return rule
            .actions
            .iter()
            .map(|p| match p.as_str().split_once('*') {
                Some((prefix, _)) => Key::Prefix(prefix),
                None => Key::Exact(p.as_str()),
            })
            .collect();
    }
    let verbs = rule.conditions.iter().find_map(|c| match c {
        Condition::Verb(v) => Some(v),
        _ => None,
    });
    match verbs {
        // `verb == v` means the action is `v` or starts with `v:`: `v` is a prefix of it.
        Some(v) if !v.iter().any(|x| x == "*") => v.iter().map(|x| Key::Prefix(x)).collect(),
        _ => vec![Key::Prefix("")],
    }
}
