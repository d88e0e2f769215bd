//! `*` wildcard patterns, compiled once when a policy is loaded.
//!
//! `*` stands for any run of characters, `/` and `:` included; everything else matches itself,
//! case-sensitively. Written by hand rather than with a glob crate because file-system glob crates
//! stop `*` at `/`, which is the opposite of what MeshGuard's action patterns mean.

/// A compiled pattern: the literal pieces between the `*`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    pieces: Vec<String>,
    wildcard: bool,
}

impl Pattern {
    pub fn new(source: &str) -> Self {
        let pieces: Vec<String> = source.split('*').map(str::to_owned).collect();
        Self {
            source: source.to_owned(),
            wildcard: pieces.len() > 1,
            pieces,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, text: &str) -> bool {
        if !self.wildcard {
            return self.source == text;
        }
        let (first, rest) = self
            .pieces
            .split_first()
            .expect("split yields one piece at least");
        let (last, middle) = rest
            .split_last()
            .expect("a wildcard pattern has two pieces at least");
        let Some(mut remaining) = text.strip_prefix(first.as_str()) else {
            return false;
        };
        for piece in middle {
            match remaining.find(piece.as_str()) {
                Some(at) => remaining = &remaining[at + piece.len()..],
                None => return false,
            }
        }
        remaining.len() >= last.len() && remaining.ends_with(last.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn m(p: &str, t: &str) -> bool {
        Pattern::new(p).matches(t)
    }

    #[test]
    fn star_crosses_slashes_and_colons() {
        assert!(m("read:*", "read:api/users/123"));
        assert!(m("*", "delete:x:y/z"));
        assert!(m("*:email", "send:email"));
        assert!(m("/api/repos/*/comments", "/api/repos/a/b/comments"));
    }

    #[test]
    fn literals_are_exact_and_case_sensitive() {
        assert!(m("read:contacts", "read:contacts"));
        assert!(!m("read:contacts", "read:Contacts"));
        assert!(!m("read:*", "write:contacts"));
        assert!(!m("a*b", "ab_"));
        assert!(m("a*b", "ab"));
        assert!(!m("ab*ba", "aba"));
        assert!(m("a**b", "a/x/b"));
    }
}
