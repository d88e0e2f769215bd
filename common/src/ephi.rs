//! Identifiers of HIPAA's Safe Harbor list (45 CFR 164.514(b)(2)) that can be recognised in free
//! text: social security numbers, e-mail addresses, telephone numbers, medical record numbers,
//! full dates and IP addresses. The gateway's `hipaa` redaction profile replaces them before an
//! audit entry is written; the evidence verifier scans a bundle for any that got through.
//!
//! Recognition is by pattern, so it errs on the side of redacting (a version string that looks
//! like an IP address is redacted too); names and addresses cannot be recognised this way and
//! are kept out by logging the agent's payload as metadata only.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

/// The profile's name, recorded in every entry it was applied to (`meta.redaction`).
pub const PROFILE: &str = "hipaa/v1";

static PATTERNS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    [
        ("ssn", r"\b\d{3}-\d{2}-\d{4}\b"),
        ("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
        ("mrn", r"(?i)\bMRN[:#=\s-]*\d{4,}\b"),
        (
            "phone",
            r"(?:\+1[-. ]?)?\(?\b\d{3}\)?[-. ]\d{3}[-. ]\d{4}\b",
        ),
        (
            "date",
            r"\b(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])\b",
        ),
        (
            "date",
            r"\b(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])/(?:19|20)\d{2}\b",
        ),
        (
            "ip",
            r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b",
        ),
    ]
    .into_iter()
    .map(|(kind, re)| (kind, Regex::new(re).expect("the patterns compile")))
    .collect()
});

/// `text` with every recognised identifier replaced by `[REDACTED:<kind>]`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    for (kind, re) in PATTERNS.iter() {
        if re.is_match(&out) {
            out = Cow::Owned(
                re.replace_all(&out, format!("[REDACTED:{kind}]").as_str())
                    .into_owned(),
            );
        }
    }
    out
}

/// The kind of the first identifier found in `text`, if any (never the identifier itself).
pub fn scan(text: &str) -> Option<&'static str> {
    PATTERNS
        .iter()
        .find(|(_, re)| re.is_match(text))
        .map(|(kind, _)| *kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_replaced_by_their_kind() {
        let got = redact(
            "read:patients/123-45-6789 for jane.doe@clinic.example, call (555) 123-4567, MRN: 0048213, born 1984-07-02 or 7/2/1984, from 10.1.2.3",
        );
        assert_eq!(
            got,
            "read:patients/[REDACTED:ssn] for [REDACTED:email], call [REDACTED:phone], [REDACTED:mrn], born [REDACTED:date] or [REDACTED:date], from [REDACTED:ip]"
        );
        assert_eq!(scan(&got), None, "what redact leaves, scan passes");
    }

    #[test]
    fn ordinary_actions_are_left_alone() {
        for text in [
            "read:contacts",
            "write:api/repos/meshguard",
            "admin:policies/7",
            "No rule allows write:x",
        ] {
            assert!(matches!(redact(text), Cow::Borrowed(_)), "{text}");
            assert_eq!(scan(text), None);
        }
        assert_eq!(scan("ssn 078-05-1120"), Some("ssn"));
    }
}
