//! Trust tiers: the canonical ordered set and the aliases real clients send.

use std::fmt;

/// A trust tier rank: `unverified < verified < trusted < privileged`.
///
/// The gateway stores and echoes the exact string a client sent (so Terraform sees no drift) and
/// compares ranks when it evaluates policies. Aliases found in MeshGuard's own SDKs and docs
/// (`untrusted`, `anonymous`, `sandboxed`, `basic`) map to rank 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrustTier {
    Unverified,
    Verified,
    Trusted,
    Privileged,
}

/// The canonical names, lowest first, as listed in error messages.
pub const CANONICAL_TIERS: [&str; 4] = ["unverified", "verified", "trusted", "privileged"];

/// A tier string that is neither canonical nor a known alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTier(pub String);

impl fmt::Display for UnknownTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown trust tier {:?}; expected one of unverified, verified, trusted, privileged \
             (untrusted is accepted as an alias of unverified)",
            self.0
        )
    }
}

impl std::error::Error for UnknownTier {}

impl TrustTier {
    /// Parses a tier name as a client sent it. Matching is exact (case-sensitive), like every
    /// other string comparison on the wire.
    pub fn parse(s: &str) -> Result<Self, UnknownTier> {
        match s {
            "unverified" | "untrusted" | "anonymous" | "sandboxed" | "basic" => {
                Ok(Self::Unverified)
            }
            "verified" => Ok(Self::Verified),
            "trusted" => Ok(Self::Trusted),
            "privileged" => Ok(Self::Privileged),
            other => Err(UnknownTier(other.to_owned())),
        }
    }

    /// The canonical name of this rank.
    pub fn as_str(self) -> &'static str {
        CANONICAL_TIERS[self as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_ordered_and_aliases_map_to_the_bottom() {
        assert!(TrustTier::parse("unverified").unwrap() < TrustTier::parse("verified").unwrap());
        assert!(TrustTier::parse("trusted").unwrap() < TrustTier::parse("privileged").unwrap());
        assert_eq!(
            TrustTier::parse("untrusted").unwrap(),
            TrustTier::Unverified
        );
        assert_eq!(
            TrustTier::parse("privileged").unwrap().as_str(),
            "privileged"
        );
    }

    #[test]
    fn unknown_and_wrong_case_tiers_are_rejected_with_the_list() {
        let err = TrustTier::parse("Trusted").unwrap_err();
        assert!(
            err.to_string()
                .contains("unverified, verified, trusted, privileged")
        );
        assert!(TrustTier::parse("admin").is_err());
    }
}
