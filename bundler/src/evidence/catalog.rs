//! The control identifiers each regime defines, as its own document numbers and names them,
//! kept here with the source named so that a profile's mapping is checked against the
//! regime's list (the test below), not against memory. Only the parts of each catalogue that
//! the profiles draw on are listed; a control added to a profile must be added here from the
//! named source first.

/// One regime's list: where it comes from, and (label, title): the title as the source gives
/// it, or, where it gives none (the Trust Services Criteria), the criterion's subject.
#[derive(Debug)]
pub struct Catalog {
    pub regime: &'static str,
    pub source: &'static str,
    pub controls: &'static [(&'static str, &'static str)],
}

/// NIST SP 800-53B (October 2020, updated December 2020), the Moderate baseline's controls
/// in the AU, CA, CM and SC families.
pub const NIST_800_53B_MODERATE: Catalog = Catalog {
    regime: "NIST SP 800-53B Moderate baseline (AU, CA, CM, SC families)",
    source: "NIST SP 800-53B, Control Baselines for Information Systems and Organizations, chapter 3, the family tables' Moderate column",
    controls: &[
        ("AU-1", "Policy and Procedures"),
        ("AU-2", "Event Logging"),
        ("AU-3", "Content of Audit Records"),
        ("AU-3(1)", "Additional Audit Information"),
        ("AU-4", "Audit Log Storage Capacity"),
        ("AU-5", "Response to Audit Logging Process Failures"),
        ("AU-6", "Audit Record Review, Analysis, and Reporting"),
        ("AU-6(1)", "Automated Process Integration"),
        ("AU-6(3)", "Correlate Audit Record Repositories"),
        ("AU-7", "Audit Record Reduction and Report Generation"),
        ("AU-7(1)", "Automatic Processing"),
        ("AU-8", "Time Stamps"),
        ("AU-9", "Protection of Audit Information"),
        ("AU-9(4)", "Access by Subset of Privileged Users"),
        ("AU-11", "Audit Record Retention"),
        ("AU-12", "Audit Record Generation"),
        ("CA-1", "Policy and Procedures"),
        ("CA-2", "Control Assessments"),
        ("CA-2(1)", "Independent Assessors"),
        ("CA-3", "Information Exchange"),
        ("CA-5", "Plan of Action and Milestones"),
        ("CA-6", "Authorization"),
        ("CA-7", "Continuous Monitoring"),
        ("CA-7(4)", "Risk Monitoring"),
        ("CA-9", "Internal System Connections"),
        ("CM-1", "Policy and Procedures"),
        ("CM-2", "Baseline Configuration"),
        ("CM-2(2)", "Automation Support for Accuracy and Currency"),
        ("CM-2(3)", "Retention of Previous Configurations"),
        (
            "CM-2(7)",
            "Configure Systems and Components for High-risk Areas",
        ),
        ("CM-3", "Configuration Change Control"),
        (
            "CM-3(2)",
            "Testing, Validation, and Documentation of Changes",
        ),
        ("CM-3(4)", "Security and Privacy Representatives"),
        ("CM-4", "Impact Analyses"),
        ("CM-4(2)", "Verification of Controls"),
        ("CM-5", "Access Restrictions for Change"),
        ("CM-6", "Configuration Settings"),
        ("CM-7", "Least Functionality"),
        ("CM-7(1)", "Periodic Review"),
        ("CM-7(2)", "Prevent Program Execution"),
        ("CM-7(5)", "Authorized Software — Allow-by-exception"),
        ("CM-8", "System Component Inventory"),
        ("CM-8(1)", "Updates During Installation and Removal"),
        ("CM-8(3)", "Automated Unauthorized Component Detection"),
        ("CM-9", "Configuration Management Plan"),
        ("CM-10", "Software Usage Restrictions"),
        ("CM-11", "User-installed Software"),
        ("CM-12", "Information Location"),
        (
            "CM-12(1)",
            "Automated Tools to Support Information Location",
        ),
        ("SC-1", "Policy and Procedures"),
        ("SC-2", "Separation of System and User Functionality"),
        ("SC-4", "Information in Shared System Resources"),
        ("SC-5", "Denial-of-service Protection"),
        ("SC-7", "Boundary Protection"),
        ("SC-7(3)", "Access Points"),
        ("SC-7(4)", "External Telecommunications Services"),
        ("SC-7(5)", "Deny by Default — Allow by Exception"),
        ("SC-7(7)", "Split Tunneling for Remote Devices"),
        ("SC-7(8)", "Route Traffic to Authenticated Proxy Servers"),
        ("SC-8", "Transmission Confidentiality and Integrity"),
        ("SC-8(1)", "Cryptographic Protection"),
        ("SC-10", "Network Disconnect"),
        ("SC-12", "Cryptographic Key Establishment and Management"),
        ("SC-13", "Cryptographic Protection"),
        ("SC-15", "Collaborative Computing Devices and Applications"),
        ("SC-17", "Public Key Infrastructure Certificates"),
        ("SC-18", "Mobile Code"),
        (
            "SC-20",
            "Secure Name/Address Resolution Service (Authoritative Source)",
        ),
        (
            "SC-21",
            "Secure Name/Address Resolution Service (Recursive or Caching Resolver)",
        ),
        (
            "SC-22",
            "Architecture and Provisioning for Name/Address Resolution Service",
        ),
        ("SC-23", "Session Authenticity"),
        ("SC-28", "Protection of Information at Rest"),
        ("SC-28(1)", "Cryptographic Protection"),
        ("SC-39", "Process Isolation"),
    ],
};

/// NIST SP 800-53 rev. 5's catalogue, the controls the air-gapped defense profile selects (a
/// site's own selection, not a baseline: each must exist in the catalogue).
pub const NIST_800_53_REV5: Catalog = Catalog {
    regime: "NIST SP 800-53 rev. 5 catalogue",
    source: "NIST SP 800-53 Rev. 5, Security and Privacy Controls for Information Systems and Organizations (September 2020), chapter 3",
    controls: &[
        ("AU-9", "Protection of Audit Information"),
        ("AU-9(3)", "Cryptographic Protection"),
        ("AU-10", "Non-repudiation"),
        ("CM-14", "Signed Components"),
        ("SC-7", "Boundary Protection"),
    ],
};

pub const HIPAA: Catalog = Catalog {
    regime: "HIPAA",
    source: "45 CFR Part 164: Subpart C (Security Rule) 164.308 and 164.312; Subpart E (Privacy Rule) 164.502",
    controls: &[
        ("164.308(a)(1)(ii)(D)", "Information system activity review"),
        ("164.312(b)", "Audit controls"),
        ("164.312(c)(1)", "Integrity"),
        ("164.312(d)", "Person or entity authentication"),
        ("164.502(b)", "Minimum necessary"),
    ],
};

pub const FINRA: Catalog = Catalog {
    regime: "FINRA / SEC",
    source: "SEC Rule 17a-4 (17 CFR 240.17a-4) paragraph (f); FINRA Rules 3110 and 4511",
    controls: &[
        ("17a-4(f)", "Electronic recordkeeping system requirements"),
        ("Rule 3110", "Supervision"),
        ("Rule 4511", "General Requirements (books and records)"),
    ],
};

pub const SOC2: Catalog = Catalog {
    regime: "SOC 2",
    source: "AICPA, 2017 Trust Services Criteria for Security, Availability, Processing Integrity, Confidentiality, and Privacy (revised points of focus 2022), common criteria CC6-CC8",
    controls: &[
        (
            "CC6.1",
            "Logical access security software, infrastructure, and architectures",
        ),
        ("CC7.2", "Monitoring of system components for anomalies"),
        (
            "CC8.1",
            "Changes are authorized, designed, developed, tested, approved and implemented",
        ),
    ],
};

pub const ISO27001: Catalog = Catalog {
    regime: "ISO/IEC 27001:2022",
    source: "ISO/IEC 27001:2022 Annex A, Table A.1, technological controls 8.1 to 8.34",
    controls: &[
        ("A.8.15", "Logging"),
        ("A.8.16", "Monitoring activities"),
        ("A.8.32", "Change management"),
    ],
};

pub const PCI_DSS: Catalog = Catalog {
    regime: "PCI DSS v4.0",
    source: "PCI DSS v4.0 (March 2022), requirements 6 and 10",
    controls: &[
        (
            "6.5.1",
            "Changes to all system components in the production environment are made according to established procedures",
        ),
        (
            "10.2",
            "Audit logs are implemented to support the detection of anomalies and suspicious activity",
        ),
        (
            "10.3",
            "Audit logs are protected from destruction and unauthorized modifications",
        ),
        (
            "10.7",
            "Failures of critical security control systems are detected, reported, and responded to promptly",
        ),
    ],
};

pub const GDPR: Catalog = Catalog {
    regime: "GDPR",
    source: "Regulation (EU) 2016/679, Articles 30, 32 and 44",
    controls: &[
        ("Art. 30", "Records of processing activities"),
        ("Art. 32", "Security of processing"),
        ("Art. 44", "General principle for transfers"),
    ],
};

/// The catalogue each profile's controls must come from.
pub fn for_profile(profile: &str) -> Option<&'static Catalog> {
    Some(match profile {
        "hipaa" => &HIPAA,
        "fedramp-moderate" => &NIST_800_53B_MODERATE,
        "finra" => &FINRA,
        "soc2" => &SOC2,
        "iso27001" => &ISO27001,
        "pci-dss" => &PCI_DSS,
        "sovereign-eu" => &GDPR,
        "airgapped-defense" => &NIST_800_53_REV5,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::profiles::PROFILES;

    /// Every control of every profile is one its regime's list defines (so AU-10, which is
    /// High only, cannot come back into the Moderate profile), and every profile has a list.
    #[test]
    fn every_profile_control_is_in_its_regimes_list() {
        for p in PROFILES {
            let catalog = for_profile(p.id).unwrap_or_else(|| panic!("no catalogue for {}", p.id));
            for c in p.controls {
                assert!(
                    catalog.controls.iter().any(|(label, _)| *label == c.label),
                    "{} maps {} ({}), which {} does not define (source: {})",
                    p.id,
                    c.label,
                    c.title,
                    catalog.regime,
                    catalog.source
                );
            }
        }
        assert!(
            !NIST_800_53B_MODERATE
                .controls
                .iter()
                .any(|(l, _)| *l == "AU-10" || *l == "AU-9(3)"),
            "AU-10 and AU-9(3) are in the High baseline only"
        );
    }
}
