//! The evidence profiles: for each regime, which of the bundle's artifacts evidences which
//! control. Control ids are OSCAL tokens (letters, digits, `.`, `-`); `label` is the regime's own
//! spelling. The FedRAMP and air-gapped defense ids are NIST SP 800-53 rev. 5's.

/// An artifact of the bundle: its path, and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    /// `audit/entries.jsonl`: the period's audit entries, with their hash chain.
    Entries,
    /// `audit/checkpoint.note` and `audit/range-proof.json`: the entries proven in a checkpoint
    /// signed by the log's key and cosigned by the site's witnesses.
    Proof,
    /// `changes.json`: policy and configuration changes (digests, approver, ticket, deployment,
    /// rollback reference).
    Changes,
    /// `policies/versions.json`: the policy snapshots active in the period.
    PolicyVersions,
    /// `alerts/deliveries.json` and `alerts/undelivered.json`: each alert's outcome per channel
    /// in the period, and those no channel accepted.
    Alerts,
    /// `license.json`: the license state (deployment mode, region pinning).
    License,
    /// `install/transcript.*`: the signed installation transcript of the site.
    InstallTranscript,
    /// `gateway.json`: the gateway's settings that bear on compliance (redaction, approval,
    /// region pinning, witnesses, SIEM).
    Settings,
}

/// What a control asks of the data. Each is decided from the bundle's files
/// ([`super::assess`]), with the numbers it was decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Every decision of the period is an entry naming its time, action and outcome.
    Recorded,
    /// The entries rebuild the root of a checkpoint signed by the log's key.
    Proven,
    /// The checkpoint is cosigned by at least one witness outside the site.
    Witnessed,
    /// Every denial of the period has an alert that a channel accepted (or there was none).
    AlertsDelivered,
    /// Every allowed agent decision names an authenticated agent.
    Authenticated,
    /// The policy versions the decisions were made under are kept.
    PolicyVersionsKept,
    /// The egress proxy ran with a signed allowlist in every configuration in force over the
    /// period (read from the log's configuration entries).
    EgressEnforced,
    /// The gateway ran in one region with egress pinned to regions over the whole period, and
    /// no transfer left them (read from the entries).
    RegionPinned,
    /// Every policy change of the period names a change ticket and an approver on the site's
    /// signed approver list in force at the time.
    ChangesApproved,
    /// Every entry of this log was written under the HIPAA redaction profile, and none holds a
    /// recognisable ePHI identifier.
    EntriesRedacted,
    /// The installation transcript records the media's signatures verified and every smoke
    /// test passed.
    SignedComponents,
}

impl Requirement {
    pub fn name(self) -> &'static str {
        match self {
            Self::Recorded => "every decision recorded with its time, action and outcome",
            Self::Proven => "entries proven in a checkpoint signed by the log's key",
            Self::Witnessed => "checkpoint cosigned by a witness outside the site",
            Self::AlertsDelivered => "every denial alerted and delivered",
            Self::Authenticated => "every allowed decision for an authenticated agent",
            Self::PolicyVersionsKept => "the policy versions in force kept",
            Self::EgressEnforced => "egress proxy with a signed allowlist over the whole period",
            Self::RegionPinned => "gateway and egress pinned to regions over the whole period",
            Self::ChangesApproved => {
                "every policy change approved by a listed approver, with a change ticket"
            }
            Self::EntriesRedacted => {
                "entries written under the HIPAA redaction profile, no ePHI identifier"
            }
            Self::SignedComponents => "signed components verified at installation",
        }
    }
}

impl Artifact {
    pub fn name(self) -> &'static str {
        match self {
            Self::Entries => "audit entries",
            Self::Proof => "checkpoint and range proof",
            Self::Changes => "change records",
            Self::PolicyVersions => "policy versions",
            Self::Alerts => "alert deliveries",
            Self::License => "license state",
            Self::InstallTranscript => "installation transcript",
            Self::Settings => "gateway settings",
        }
    }

    /// The bundle files that carry it.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            Self::Entries => &["audit/entries.jsonl"],
            Self::Proof => &["audit/checkpoint.note", "audit/range-proof.json"],
            Self::Changes => &["changes.json"],
            Self::PolicyVersions => &["policies/versions.json"],
            Self::Alerts => &["alerts/deliveries.json", "alerts/undelivered.json"],
            Self::License => &["license.json"],
            Self::InstallTranscript => {
                &["install/transcript.json", "install/transcript.json.minisig"]
            }
            Self::Settings => &["gateway.json"],
        }
    }
}

#[derive(Debug)]
pub struct Control {
    pub id: &'static str,
    pub label: &'static str,
    pub title: &'static str,
    pub evidence: &'static [Artifact],
    pub requires: &'static [Requirement],
}

#[derive(Debug)]
pub struct Profile {
    pub id: &'static str,
    pub title: &'static str,
    pub controls: &'static [Control],
}

use Artifact::*;

const fn c(
    id: &'static str,
    label: &'static str,
    title: &'static str,
    evidence: &'static [Artifact],
    requires: &'static [Requirement],
) -> Control {
    Control {
        id,
        label,
        title,
        evidence,
        requires,
    }
}

use Requirement::*;

pub const PROFILES: &[Profile] = &[
    Profile {
        id: "hipaa",
        title: "HIPAA Security Rule (45 CFR Part 164 Subpart C) and the Privacy Rule's minimum necessary standard (164.502(b), Subpart E)",
        controls: &[
            c(
                "hipaa-164.312.b",
                "164.312(b)",
                "Audit controls",
                &[Entries, Proof],
                &[Recorded, Proven],
            ),
            c(
                "hipaa-164.312.c.1",
                "164.312(c)(1)",
                "Integrity",
                &[Proof],
                &[Proven],
            ),
            c(
                "hipaa-164.308.a.1.ii.d",
                "164.308(a)(1)(ii)(D)",
                "Information system activity review",
                &[Entries, Alerts],
                &[AlertsDelivered],
            ),
            c(
                "hipaa-164.312.d",
                "164.312(d)",
                "Person or entity authentication",
                &[Entries],
                &[Authenticated],
            ),
            c(
                "hipaa-164.502.b",
                "164.502(b)",
                "Minimum necessary: metadata-only payloads, ePHI redacted before logging",
                &[Entries, Settings],
                &[EntriesRedacted],
            ),
        ],
    },
    Profile {
        id: "fedramp-moderate",
        title: "FedRAMP Moderate (NIST SP 800-53 rev. 5)",
        controls: &[
            c("au-2", "AU-2", "Event logging", &[Entries], &[Recorded]),
            c(
                "au-9",
                "AU-9",
                "Protection of audit information",
                &[Proof],
                &[Proven],
            ),
            // AU-10 (non-repudiation) is in SP 800-53B's High baseline, not Moderate's.
            c(
                "au-6",
                "AU-6",
                "Audit record review, analysis, and reporting",
                &[Entries, Alerts],
                &[AlertsDelivered],
            ),
            c(
                "cm-3",
                "CM-3",
                "Configuration change control",
                &[Changes, PolicyVersions, Entries],
                &[ChangesApproved],
            ),
            c(
                "sc-7",
                "SC-7",
                "Boundary protection",
                &[Entries],
                &[EgressEnforced],
            ),
            c(
                "ca-7",
                "CA-7",
                "Continuous monitoring",
                &[Entries, Alerts],
                &[AlertsDelivered],
            ),
        ],
    },
    Profile {
        id: "finra",
        title: "FINRA / SEC Rule 17a-4",
        controls: &[
            c(
                "finra-17a-4.f",
                "17a-4(f)",
                "Records preserved non-rewriteable and verifiable",
                &[Entries, Proof],
                &[Proven, Witnessed],
            ),
            c(
                "finra-3110",
                "Rule 3110",
                "Supervision (approval of policy changes)",
                &[Changes, Entries],
                &[ChangesApproved],
            ),
            c(
                "finra-4511",
                "Rule 4511",
                "Books and records",
                &[Entries, PolicyVersions],
                &[Recorded, PolicyVersionsKept],
            ),
        ],
    },
    Profile {
        id: "soc2",
        title: "SOC 2 (AICPA Trust Services Criteria 2017)",
        controls: &[
            c(
                "soc2-cc6.1",
                "CC6.1",
                "Logical access security",
                &[Entries],
                &[Authenticated],
            ),
            c(
                "soc2-cc7.2",
                "CC7.2",
                "Monitoring of system components",
                &[Entries, Alerts],
                &[AlertsDelivered],
            ),
            c(
                "soc2-cc8.1",
                "CC8.1",
                "Change management",
                &[Changes, PolicyVersions, Entries],
                &[ChangesApproved],
            ),
        ],
    },
    Profile {
        id: "iso27001",
        title: "ISO/IEC 27001:2022 Annex A",
        controls: &[
            c(
                "iso27001-a.8.15",
                "A.8.15",
                "Logging",
                &[Entries, Proof],
                &[Recorded, Proven],
            ),
            c(
                "iso27001-a.8.16",
                "A.8.16",
                "Monitoring activities",
                &[Entries, Alerts],
                &[AlertsDelivered],
            ),
            c(
                "iso27001-a.8.32",
                "A.8.32",
                "Change management",
                &[Changes, PolicyVersions, Entries],
                &[ChangesApproved],
            ),
        ],
    },
    Profile {
        id: "pci-dss",
        title: "PCI DSS v4.0",
        controls: &[
            c(
                "pci-dss-10.2",
                "10.2",
                "Audit logs capture events",
                &[Entries],
                &[Recorded],
            ),
            c(
                "pci-dss-10.3",
                "10.3",
                "Audit logs are protected from modification",
                &[Proof],
                &[Proven],
            ),
            c(
                "pci-dss-10.7",
                "10.7",
                "Failures of critical security controls are detected",
                &[Entries, Alerts],
                &[AlertsDelivered],
            ),
            c(
                "pci-dss-6.5.1",
                "6.5.1",
                "Changes are managed",
                &[Changes, Entries],
                &[ChangesApproved],
            ),
        ],
    },
    Profile {
        id: "sovereign-eu",
        title: "Sovereign EU (GDPR)",
        controls: &[
            c(
                "gdpr-art30",
                "Art. 30",
                "Records of processing activities",
                &[Entries],
                &[Recorded],
            ),
            c(
                "gdpr-art32",
                "Art. 32",
                "Security of processing",
                &[Proof],
                &[Proven],
            ),
            c(
                "gdpr-art44",
                "Art. 44",
                "Transfers: data residency and region pinning",
                &[Entries, Proof],
                &[RegionPinned],
            ),
        ],
    },
    Profile {
        id: "airgapped-defense",
        title: "Air-gapped defense (NIST SP 800-53 rev. 5)",
        controls: &[
            c(
                "au-9.3",
                "AU-9(3)",
                "Cryptographic protection of audit information",
                &[Proof],
                &[Proven],
            ),
            c(
                "au-10",
                "AU-10",
                "Non-repudiation",
                &[Proof],
                &[Proven, Witnessed],
            ),
            c(
                "cm-14",
                "CM-14",
                "Signed components",
                &[InstallTranscript],
                &[SignedComponents],
            ),
            c(
                "sc-7",
                "SC-7",
                "Boundary protection",
                &[Entries],
                &[EgressEnforced],
            ),
        ],
    },
];

/// The profile of `id`, or an error listing the profiles there are.
pub fn find(id: &str) -> Result<&'static Profile, String> {
    PROFILES.iter().find(|p| p.id == id).ok_or_else(|| {
        format!(
            "unknown evidence profile {id:?}; use one of {}",
            PROFILES.iter().map(|p| p.id).collect::<Vec<_>>().join(", ")
        )
    })
}
