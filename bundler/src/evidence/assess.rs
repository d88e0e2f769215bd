//! Deciding each control from the bundle's own data. Every requirement of a control is a check
//! over what the bundle holds (the period's entries, the configuration entry in force when the
//! period began, the change records, the alert deliveries, the checkpoint, the transcript); its
//! finding states the numbers it was decided on. A requirement with no data to decide on is
//! `not-met` with the reason, or `not-assessed` when the check could not run; never `met`.
//!
//! The export and `verify` feed the same facts from the same files, so an auditor's verify
//! recomputes every finding and fails the bundle if `controls.json` says otherwise.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::profiles::{self, Requirement};

/// The bundle file holding the last configuration entry before the run, with its inclusion
/// proof: the settings in force when the period began.
pub const CONFIGURATION_BEFORE: &str = "audit/configuration-before.json";

/// The outcome of one requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Met,
    NotMet,
    NotAssessed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::NotMet => "not-met",
            Self::NotAssessed => "not-assessed",
        }
    }
}

/// A requirement decided: its state, the numbers, and a sentence that states them.
#[derive(Debug, Clone)]
pub struct Assessed {
    pub state: State,
    pub numbers: Value,
    pub finding: String,
}

fn met(numbers: Value, finding: String) -> Assessed {
    Assessed {
        state: State::Met,
        numbers,
        finding,
    }
}

fn not_met(numbers: Value, finding: String) -> Assessed {
    Assessed {
        state: State::NotMet,
        numbers,
        finding,
    }
}

fn not_assessed(numbers: Value, finding: String) -> Assessed {
    Assessed {
        state: State::NotAssessed,
        numbers,
        finding,
    }
}

/// A configuration entry: when, and the settings it recorded.
#[derive(Debug, Clone)]
struct Setting {
    seq: u64,
    at: String,
    meta: Value,
}

/// What the bundle's files say, gathered once.
#[derive(Debug, Default)]
pub struct Inputs {
    pub changes: Value,
    pub deliveries: Value,
    pub versions: Value,
    /// The checkpoint note as the bundle holds it (with any cosignatures).
    pub checkpoint_note: String,
    /// The checkpoint's size and root (base64) once its signature verified; None otherwise.
    pub checkpoint: Option<(u64, String)>,
    /// Whether the run of entries rebuilt the checkpoint's root.
    pub proven: bool,
    /// The installation transcript, when the bundle holds one.
    pub transcript: Option<Value>,
}

/// What the bundle's data shows, for the controls' requirements.
#[derive(Debug, Default)]
pub struct Facts {
    origin: String,
    /// Scan every entry for ePHI identifiers (the HIPAA profile).
    pub scan_ephi: bool,
    first_seq: Option<u64>,
    last_seq: u64,
    pub(crate) entries: u64,
    allowed: u64,
    denied: u64,
    /// Decision entries lacking a time, an action or an outcome.
    incomplete: Seqs,
    /// Denials by entry id (for matching alert deliveries), with their seq.
    denials: Denials,
    /// Allowed agent decisions (not egress) that name no agent.
    anonymous_allows: Seqs,
    agents: BTreeSet<String>,
    refused_unauthenticated: u64,
    egress_allowed: u64,
    egress_denied: u64,
    /// Allowed transfers by the destination's region.
    transfers: BTreeMap<String, u64>,
    /// How many transfers went to a region outside the pinned ones in force, and the first
    /// ten of them as (seq, region).
    foreign_transfers: u64,
    first_foreign_transfers: Vec<(u64, String)>,
    decisions_naming_policy: u64,
    /// The configuration in force when the run began (from the entry before it), and those in
    /// the run, in order.
    before: Option<Setting>,
    settings: Vec<Setting>,
    /// This log's own entries written without the HIPAA redaction profile.
    unredacted: u64,
    /// (seq, kind) of the first entries holding a recognisable ePHI identifier.
    pub(crate) ephi: Vec<(u64, &'static str)>,
    pub(crate) ephi_total: u64,
    inputs: Inputs,
}

/// The policy changes of the period by approval (see `Facts::approvals`): how many were
/// approved by a listed approver, and the ids of the others.
#[derive(Default)]
struct Approvals {
    approved: u64,
    unlisted: Vec<String>,
    missing: Vec<String>,
    without_list: Vec<String>,
}

impl Approvals {
    /// What keeps the changes from being shown approved: configurations over the period with
    /// no approver list in force (`listless`, their seqs), then each kind of change not approved.
    fn gaps(&self, changes: usize, listless: &[u64]) -> Vec<String> {
        let mut why = Vec::new();
        if !listless.is_empty() {
            why.push(format!(
                "no signed approver list (CHANGE_APPROVERS) was in force in {} of the configurations over the period (configuration entries seq {})",
                listless.len(),
                list(listless)
            ));
        }
        for (ids, what) in [
            (&self.missing, "name no approver or no change ticket"),
            (
                &self.unlisted,
                "were approved by someone not on the signed approver list in force",
            ),
            (
                &self.without_list,
                "were made with no approver list in force",
            ),
        ] {
            if !ids.is_empty() {
                why.push(format!(
                    "{} of {changes} policy changes {what}: {}",
                    ids.len(),
                    ids.join(", ")
                ));
            }
        }
        why
    }
}

impl Facts {
    pub fn new(origin: &str, profile: &profiles::Profile) -> Self {
        Self {
            origin: origin.to_owned(),
            scan_ephi: profile
                .controls
                .iter()
                .any(|c| c.requires.contains(&Requirement::EntriesRedacted)),
            ..Self::default()
        }
    }

    /// The configuration entry in force before the run (already checked by the caller: in the
    /// checkpoint, before the run's first entry).
    pub fn before(&mut self, seq: u64, entry: &Value) {
        self.before = Some(Setting {
            seq,
            at: entry["timestamp"].as_str().unwrap_or_default().to_owned(),
            meta: entry["meta"].clone(),
        });
    }

    /// One entry of the run, in order.
    pub fn entry(&mut self, seq: u64, source: &str, body: &str, entry: &Value) {
        self.entries += 1;
        self.first_seq.get_or_insert(seq);
        self.last_seq = seq;
        let event = entry["event"].as_str().unwrap_or_default();
        let decision = entry["decision"].as_str().unwrap_or_default();
        // Only the log's own configuration entries (an entry ingested from a sidecar's log,
        // or any other source, says nothing of this gateway's settings).
        if event == "configuration" && source == self.origin {
            self.settings.push(Setting {
                seq,
                at: entry["timestamp"].as_str().unwrap_or_default().to_owned(),
                meta: entry["meta"].clone(),
            });
        }
        if decision == "allow" || decision == "deny" {
            if decision == "allow" {
                self.allowed += 1;
            } else {
                self.denied += 1;
                // A denial without an id cannot be matched to a delivery: keyed by its seq, it
                // counts as never alerted.
                match entry["id"].as_str().filter(|i| !i.is_empty()) {
                    Some(id) => self.denials.insert(id, seq),
                    None => self.denials.insert(&format!("seq:{seq}"), seq),
                }
            }
            let named = |k: &str| entry[k].as_str().is_some_and(|v| !v.is_empty());
            if !named("timestamp") || !named("action") || !named("outcome") {
                self.incomplete.push(seq);
            }
            if named("policy") {
                self.decisions_naming_policy += 1;
            }
            match event {
                "egress" if decision == "allow" => {
                    self.egress_allowed += 1;
                    let region = entry["meta"]["region"].as_str().unwrap_or("none");
                    *self.transfers.entry(region.to_owned()).or_default() += 1;
                    let pinned = self
                        .in_force()
                        .map(|s| regions(&s.meta))
                        .unwrap_or_default();
                    if !pinned.is_empty() && !pinned.iter().any(|r| r == region) {
                        self.foreign_transfers += 1;
                        if self.first_foreign_transfers.len() < LISTED {
                            self.first_foreign_transfers.push((seq, region.to_owned()));
                        }
                    }
                }
                "egress_denied" => self.egress_denied += 1,
                "bypass_attempt" if !named("agentId") => self.refused_unauthenticated += 1,
                _ if decision == "allow" && !named("agentId") => self.anonymous_allows.push(seq),
                _ => {}
            }
            if let Some(a) = entry["agentId"].as_str() {
                self.agents.insert(a.to_owned());
            }
        }
        if !self.scan_ephi {
            return;
        }
        if source == self.origin && entry["meta"]["redaction"] != meshguard_common::ephi::PROFILE {
            self.unredacted += 1;
        }
        if let Some(kind) = meshguard_common::ephi::scan(body) {
            self.ephi_total += 1;
            if self.ephi.len() < 10 {
                self.ephi.push((seq, kind));
            }
        }
    }

    /// The bundle's other files.
    pub fn finish(&mut self, inputs: Inputs) {
        self.denials.seal();
        self.inputs = inputs;
    }

    /// The configuration in force now (the last one seen).
    fn in_force(&self) -> Option<&Setting> {
        self.settings.last().or(self.before.as_ref())
    }

    /// Whether the settings in force at the run's start are known: a configuration entry
    /// before it, or the run opens with one (a log that began in the period).
    fn start_known(&self) -> bool {
        self.before.is_some()
            || self
                .settings
                .first()
                .is_some_and(|s| Some(s.seq) == self.first_seq)
    }

    /// Every configuration in force over the run.
    fn in_force_over_run(&self) -> Vec<&Setting> {
        self.before.iter().chain(self.settings.iter()).collect()
    }

    /// The setting in force at time `at` (RFC 3339; compared as instants).
    fn in_force_at(&self, at: &str) -> Option<&Setting> {
        let t = instant(at)?;
        self.in_force_over_run()
            .into_iter()
            .rfind(|s| instant(&s.at).is_some_and(|st| st <= t))
    }

    pub fn assess(&self, req: Requirement) -> Assessed {
        match req {
            Requirement::Recorded => self.recorded(),
            Requirement::Proven => self.proven(),
            Requirement::Witnessed => self.witnessed(),
            Requirement::AlertsDelivered => self.alerts_delivered(),
            Requirement::Authenticated => self.authenticated(),
            Requirement::PolicyVersionsKept => self.policy_versions_kept(),
            Requirement::EgressEnforced => self.egress_enforced(),
            Requirement::RegionPinned => self.region_pinned(),
            Requirement::ChangesApproved => self.changes_approved(),
            Requirement::EntriesRedacted => self.entries_redacted(),
            Requirement::SignedComponents => self.signed_components(),
        }
    }

    fn recorded(&self) -> Assessed {
        let numbers = json!({
            "entries": self.entries,
            "firstSeq": self.first_seq,
            "lastSeq": self.last_seq,
            "decisions": self.allowed + self.denied,
            "allowed": self.allowed,
            "denied": self.denied,
            "incomplete": self.incomplete.len(),
        });
        let text = format!(
            "{} entries (seq {}..={}): {} decisions, {} allowed and {} denied",
            self.entries,
            self.first_seq.unwrap_or(0),
            self.last_seq,
            self.allowed + self.denied,
            self.allowed,
            self.denied
        );
        if self.entries == 0 {
            not_met(numbers, "the bundle holds no audit entry".to_owned())
        } else if !self.incomplete.is_empty() {
            not_met(
                numbers,
                format!(
                    "{text}; {} decisions lack a time, an action or an outcome (seq {})",
                    self.incomplete.len(),
                    self.incomplete.list()
                ),
            )
        } else {
            met(
                numbers,
                format!("{text}; each names its time, action and outcome"),
            )
        }
    }

    fn proven(&self) -> Assessed {
        let Some((size, root)) = &self.inputs.checkpoint else {
            return not_met(
                json!({"entries": self.entries}),
                "no checkpoint signed by the log's key covers the entries".to_owned(),
            );
        };
        let numbers = json!({
            "entries": self.entries,
            "checkpointSize": size,
            "rootHash": root,
            "proven": self.inputs.proven,
        });
        if self.inputs.proven {
            met(
                numbers,
                format!(
                    "entries {}..={} rebuild the root {root} of the checkpoint of {size} entries signed by the log's key",
                    self.first_seq.unwrap_or(0),
                    self.last_seq
                ),
            )
        } else {
            not_met(
                numbers,
                format!("the entries do not rebuild the root of the checkpoint of {size} entries"),
            )
        }
    }

    fn witnessed(&self) -> Assessed {
        // Checked here against the witness keys the log's own configuration names (the
        // configuration in force at the run's end), not merely counted.
        let keys: Vec<String> = self
            .in_force()
            .map(|s| {
                s.meta["witnessKeys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let lines = cosigners(&self.inputs.checkpoint_note, &self.origin);
        let cosigners: Vec<String> = keys
            .iter()
            .filter_map(|k| meshguard_tlog::note::Vkey::parse(k).ok())
            .filter(|vkey| {
                meshguard_tlog::note::cosigned_by(&self.inputs.checkpoint_note, vkey).is_ok()
            })
            .map(|v| v.name)
            .collect();
        let numbers = json!({
            "cosignatureLines": lines.len(),
            "witnessKeysConfigured": keys.len(),
            "validCosignatures": cosigners.len(),
            "witnesses": cosigners,
        });
        let size = self.inputs.checkpoint.as_ref().map_or(0, |(s, _)| *s);
        if keys.is_empty() && !lines.is_empty() {
            return not_assessed(
                numbers,
                format!(
                    "the checkpoint of {size} entries carries {} cosignature line(s), but the log's configuration names no witness key to check them with (a gateway older than witness keys in its configuration entries); check them with verify --witness",
                    lines.len()
                ),
            );
        }
        if cosigners.is_empty() {
            not_met(
                numbers,
                format!(
                    "the checkpoint of {size} entries carries no witness cosignature: no party outside the site attests the log was not rewritten (configure AUDIT_WITNESSES, docs/witness.md)"
                ),
            )
        } else {
            met(
                numbers,
                format!(
                    "the checkpoint of {size} entries is cosigned by {} of the {} witness(es) the log's configuration names: {} (each cosignature verified with its key)",
                    cosigners.len(),
                    keys.len(),
                    cosigners.join(", ")
                ),
            )
        }
    }

    fn alerts_delivered(&self) -> Assessed {
        let mut delivered: BTreeSet<&str> = BTreeSet::new();
        let mut failed: BTreeSet<&str> = BTreeSet::new();
        for d in self.inputs.deliveries["deliveries"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let id = d["entryId"].as_str().unwrap_or_default();
            if !self.denials.contains(id) {
                continue;
            }
            if d["outcome"] == "delivered" {
                delivered.insert(id);
            } else {
                failed.insert(id);
            }
        }
        // In the ids' order, as before (the lists name the first ten).
        let (mut undelivered, mut unsent) = (Seqs::default(), Seqs::default());
        self.denials.for_each(|id, seq| {
            if delivered.contains(id) {
            } else if failed.contains(id) {
                undelivered.push(seq);
            } else {
                unsent.push(seq);
            }
        });
        let numbers = json!({
            "denials": self.denials.len(),
            "alertedAndDelivered": delivered.len(),
            "undelivered": undelivered.len(),
            "neverSent": unsent.len(),
        });
        if self.denials.is_empty() {
            return met(
                numbers,
                "no denial in the period, so no alert was due".to_owned(),
            );
        }
        if undelivered.is_empty() && unsent.is_empty() {
            return met(
                numbers,
                format!(
                    "each of the {} denials has an alert a channel accepted",
                    self.denials.len()
                ),
            );
        }
        let mut why = Vec::new();
        if !undelivered.is_empty() {
            why.push(format!(
                "{} no channel accepted (seq {})",
                undelivered.len(),
                undelivered.list()
            ));
        }
        if !unsent.is_empty() {
            why.push(format!(
                "{} were never sent: no channel wanted them, or ALERT_RATE_LIMIT dropped them (seq {})",
                unsent.len(),
                unsent.list()
            ));
        }
        not_met(
            numbers,
            format!(
                "{} denials, {} alerted and delivered; {}",
                self.denials.len(),
                delivered.len(),
                why.join("; ")
            ),
        )
    }

    fn authenticated(&self) -> Assessed {
        let numbers = json!({
            "allowed": self.allowed.saturating_sub(self.egress_allowed),
            "agents": self.agents.len(),
            "allowedWithoutAgent": self.anonymous_allows.len(),
            "refusedWithoutValidIdentity": self.refused_unauthenticated,
        });
        if self.anonymous_allows.is_empty() {
            met(
                numbers,
                format!(
                    "{} allowed decisions, each for one of {} authenticated agents; {} calls without a valid identity were refused (egress transfers are identified by client address and counted under boundary protection)",
                    self.allowed.saturating_sub(self.egress_allowed),
                    self.agents.len(),
                    self.refused_unauthenticated
                ),
            )
        } else {
            not_met(
                numbers,
                format!(
                    "{} allowed decisions name no authenticated agent (seq {})",
                    self.anonymous_allows.len(),
                    self.anonymous_allows.list()
                ),
            )
        }
    }

    fn policy_versions_kept(&self) -> Assessed {
        let versions = self.inputs.versions["versions"]
            .as_array()
            .map_or(0, Vec::len);
        let numbers = json!({
            "decisionsNamingAPolicy": self.decisions_naming_policy,
            "policyVersionsKept": versions,
        });
        if self.decisions_naming_policy > 0 && versions == 0 {
            not_met(
                numbers,
                format!(
                    "{} decisions name a policy, and the bundle keeps no policy version active in the period",
                    self.decisions_naming_policy
                ),
            )
        } else {
            met(
                numbers,
                format!(
                    "{} decisions name a policy; the bundle keeps the {versions} policy version(s) active in the period",
                    self.decisions_naming_policy
                ),
            )
        }
    }

    fn egress_enforced(&self) -> Assessed {
        let settings = self.in_force_over_run();
        let off: Vec<u64> = settings
            .iter()
            .filter(|s| {
                s.meta["egressProxy"] != true || s.meta["egressAllowlist"]["signed"] != true
            })
            .map(|s| s.seq)
            .collect();
        let versions: BTreeSet<u64> = settings
            .iter()
            .filter_map(|s| s.meta["egressAllowlist"]["version"].as_u64())
            .collect();
        let numbers = json!({
            "configurationRecords": settings.len(),
            "withoutEgressProxy": off.len(),
            "allowlistVersions": versions,
            "egressAllowed": self.egress_allowed,
            "egressDenied": self.egress_denied,
        });
        if !self.start_known() {
            return not_assessed(
                numbers,
                "the log holds no configuration entry in force when the period began (a gateway older than configuration entries), so the egress proxy cannot be shown on over the whole period".to_owned(),
            );
        }
        if !off.is_empty() {
            return not_met(
                numbers,
                format!(
                    "{} of {} configurations in force over the period ran without the egress proxy or without a signed allowlist (configuration entries seq {})",
                    off.len(),
                    settings.len(),
                    list(&off)
                ),
            );
        }
        met(
            numbers,
            format!(
                "the egress proxy ran with a signed allowlist (versions {}) in each of the {} configurations in force over the period; {} transfers allowed, {} refused",
                versions
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                settings.len(),
                self.egress_allowed,
                self.egress_denied
            ),
        )
    }

    fn region_pinned(&self) -> Assessed {
        let settings = self.in_force_over_run();
        let gateway_regions: BTreeSet<&str> = settings
            .iter()
            .map(|s| s.meta["region"].as_str().unwrap_or(""))
            .collect();
        let unpinned: Vec<u64> = settings
            .iter()
            .filter(|s| {
                s.meta["region"].as_str().is_none_or(str::is_empty)
                    || s.meta["egressProxy"] != true
                    || regions(&s.meta).is_empty()
            })
            .map(|s| s.seq)
            .collect();
        let numbers = json!({
            "configurationRecords": settings.len(),
            "gatewayRegions": gateway_regions.iter().filter(|r| !r.is_empty()).collect::<Vec<_>>(),
            "unpinnedConfigurations": unpinned.len(),
            "transfersByRegion": self.transfers,
            "transfersOutsidePinnedRegions": self.foreign_transfers,
        });
        if !self.start_known() {
            return not_assessed(
                numbers,
                "the log holds no configuration entry in force when the period began, so the region cannot be shown over the whole period".to_owned(),
            );
        }
        let mut why = Vec::new();
        if !unpinned.is_empty() {
            why.push(format!(
                "{} of {} configurations in force were not pinned (REGION, the egress proxy and EGRESS_REGIONS; configuration entries seq {})",
                unpinned.len(),
                settings.len(),
                list(&unpinned)
            ));
        }
        if gateway_regions.len() > 1 {
            why.push(format!(
                "the gateway ran in {} regions over the period ({})",
                gateway_regions.len(),
                gateway_regions
                    .iter()
                    .map(|r| if r.is_empty() { "none" } else { r })
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if self.foreign_transfers > 0 {
            why.push(format!(
                "{} transfers went outside the pinned regions ({})",
                self.foreign_transfers,
                self.first_foreign_transfers
                    .iter()
                    .map(|(seq, r)| format!("seq {seq} to {r}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if why.is_empty() {
            met(
                numbers,
                format!(
                    "the gateway ran in {} with egress pinned to {} in each of the {} configurations in force; {} transfers, all inside the pinned regions",
                    gateway_regions.iter().next().copied().unwrap_or_default(),
                    settings
                        .last()
                        .map(|s| regions(&s.meta).join(", "))
                        .unwrap_or_default(),
                    settings.len(),
                    self.egress_allowed
                ),
            )
        } else {
            not_met(numbers, why.join("; "))
        }
    }

    /// Each policy change sorted by its approval: by an approver on the signed list in force
    /// when it was made, by someone not on it, with no list in force, or with no approver or
    /// change ticket at all.
    fn approvals(&self, changes: &[&Value]) -> Approvals {
        let mut a = Approvals::default();
        for c in changes {
            let id = c["id"].as_str().unwrap_or("?").to_owned();
            let approver = c["approver"].as_str().filter(|a| !a.is_empty());
            let ticket = c["changeTicket"].as_str().is_some_and(|t| !t.is_empty());
            let list = c["timestamp"]
                .as_str()
                .and_then(|t| self.in_force_at(t))
                .and_then(|s| s.meta["changeApprovers"]["approvers"].as_array());
            match (approver, list) {
                (None, _) => a.missing.push(id),
                (Some(_), _) if !ticket => a.missing.push(id),
                (Some(_), None) => a.without_list.push(id),
                (Some(name), Some(names)) if names.iter().any(|n| n == name) => a.approved += 1,
                (Some(_), Some(_)) => a.unlisted.push(id),
            }
        }
        a
    }

    fn changes_approved(&self) -> Assessed {
        let changes: Vec<&Value> = self.inputs.changes["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["kind"] == "policy")
            .collect();
        let a = self.approvals(&changes);
        let lists: BTreeSet<u64> = self
            .in_force_over_run()
            .iter()
            .filter_map(|s| s.meta["changeApprovers"]["version"].as_u64())
            .collect();
        let listless: Vec<u64> = self
            .in_force_over_run()
            .iter()
            .filter(|s| s.meta["changeApprovers"].is_null())
            .map(|s| s.seq)
            .collect();
        let numbers = json!({
            "policyChanges": changes.len(),
            "approvedByListedApprover": a.approved,
            "approverNotListed": a.unlisted.len(),
            "withoutApproverOrTicket": a.missing.len(),
            "withoutApproverListInForce": a.without_list.len(),
            "approverListVersions": lists,
        });
        if !self.start_known() {
            return not_assessed(
                numbers,
                "the log holds no configuration entry in force when the period began, so the approver list in force cannot be shown".to_owned(),
            );
        }
        let why = a.gaps(changes.len(), &listless);
        if why.is_empty() {
            met(
                numbers,
                format!(
                    "{} policy changes, each with a change ticket and approved by an approver on the site's signed list in force (versions {})",
                    changes.len(),
                    lists
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        } else {
            not_met(numbers, why.join("; "))
        }
    }

    fn entries_redacted(&self) -> Assessed {
        let numbers = json!({
            "entries": self.entries,
            "writtenWithoutRedaction": self.unredacted,
            "holdingEphiIdentifiers": self.ephi_total,
        });
        if self.ephi_total > 0 {
            not_met(
                numbers,
                format!(
                    "{} entries hold ePHI identifiers (first: {})",
                    self.ephi_total,
                    self.ephi
                        .iter()
                        .map(|(seq, kind)| format!("seq {seq} {kind}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        } else if self.unredacted > 0 {
            not_met(
                numbers,
                format!(
                    "{} of {} entries were written without the HIPAA redaction profile (AUDIT_REDACTION=hipaa)",
                    self.unredacted, self.entries
                ),
            )
        } else {
            met(
                numbers,
                format!(
                    "all {} entries were written under the HIPAA redaction profile, and none holds a recognisable ePHI identifier",
                    self.entries
                ),
            )
        }
    }

    fn signed_components(&self) -> Assessed {
        let Some(t) = &self.inputs.transcript else {
            return not_assessed(
                json!({"transcript": false}),
                "the bundle holds no installation transcript (export with --transcript)".to_owned(),
            );
        };
        let steps = t["steps"].as_array().cloned().unwrap_or_default();
        let step = |name: &str| steps.iter().find(|s| s["name"] == name);
        let media = step("verify media").map(|s| s["status"].as_str().unwrap_or("?").to_owned());
        let checks = step("smoke tests")
            .and_then(|s| s["detail"]["checks"].as_array().cloned())
            .unwrap_or_default();
        let passed = checks.iter().filter(|c| c["result"] == "passed").count();
        let numbers = json!({
            "transcript": true,
            "mediaVerification": media,
            "smokeTests": checks.len(),
            "smokeTestsPassed": passed,
        });
        if media.as_deref() != Some("passed") {
            return not_met(
                numbers,
                format!(
                    "the installation transcript does not record a passed media signature verification (it says {})",
                    media.as_deref().unwrap_or("nothing")
                ),
            );
        }
        if checks.is_empty() || passed != checks.len() {
            return not_met(
                numbers,
                format!(
                    "the media's signatures verified, but {passed} of {} smoke tests of the install passed",
                    checks.len()
                ),
            );
        }
        met(
            numbers,
            format!(
                "the installation transcript records the media's signatures verified offline and all {} smoke tests passed (its own signature is checked by verify with the site's key)",
                checks.len()
            ),
        )
    }
}

fn instant(t: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.to_utc())
}

fn regions(meta: &Value) -> Vec<String> {
    meta["egressRegions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect()
}

/// The names of the witnesses whose signature lines the note carries (any key name but the
/// log's own).
fn cosigners(note: &str, origin: &str) -> Vec<String> {
    let Some((_, sigs)) = note.split_once("\n\n") else {
        return Vec::new();
    };
    let mut names: Vec<String> = sigs
        .lines()
        .filter_map(|l| l.strip_prefix("\u{2014} "))
        .filter_map(|l| l.split_once(' ').map(|(name, _)| name.to_owned()))
        .filter(|name| name != origin)
        .collect();
    names.dedup();
    names
}

/// How many seqs a finding names before "and N more".
const LISTED: usize = 10;

/// At most ten seqs, then how many more.
fn list(seqs: &[u64]) -> String {
    let mut s: Vec<String> = seqs.iter().take(LISTED).map(u64::to_string).collect();
    if seqs.len() > LISTED {
        s.push(format!("and {} more", seqs.len() - LISTED));
    }
    s.join(", ")
}

/// Seqs a finding counts and names the first ten of ([`list`]): held as those ten and the
/// count, not one per entry.
#[derive(Debug, Default)]
struct Seqs {
    len: usize,
    first: Vec<u64>,
}

impl Seqs {
    fn push(&mut self, seq: u64) {
        self.len += 1;
        if self.first.len() < LISTED {
            self.first.push(seq);
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// As [`list`] of every seq pushed.
    fn list(&self) -> String {
        let mut s = list(&self.first);
        if self.len > LISTED {
            s.push_str(&format!(", and {} more", self.len - LISTED));
        }
        s
    }
}

/// Ids up to this many bytes are held inline (the gateway's `aud_` ids are 24).
const SHORT_ID: usize = 24;

/// The run's denials by entry id, each with its seq, as a map from id to seq would hold them
/// (a later entry with the same id replaces the earlier) and in the ids' order, in 32 bytes a
/// denial instead of a `String` in a map node: an id of at most [`SHORT_ID`] bytes and no NUL
/// is kept zero-padded in an array, where it orders as its text does; any other in a map.
/// Pushed in run order; [`Denials::seal`] sorts before any look-up.
#[derive(Debug, Default)]
struct Denials {
    short: Vec<([u8; SHORT_ID], u64)>,
    long: BTreeMap<String, u64>,
    sealed: bool,
}

impl Denials {
    fn short(id: &str) -> Option<[u8; SHORT_ID]> {
        let b = id.as_bytes();
        if b.len() > SHORT_ID || b.contains(&0) {
            return None;
        }
        let mut key = [0u8; SHORT_ID];
        key[..b.len()].copy_from_slice(b);
        Some(key)
    }

    fn text(key: &[u8; SHORT_ID]) -> &str {
        let n = key.iter().position(|&c| c == 0).unwrap_or(SHORT_ID);
        std::str::from_utf8(&key[..n]).expect("the bytes of a str, cut before its padding")
    }

    fn insert(&mut self, id: &str, seq: u64) {
        match Self::short(id) {
            Some(key) => {
                self.short.push((key, seq));
                self.sealed = false;
            }
            None => {
                self.long.insert(id.to_owned(), seq);
            }
        }
    }

    /// Sorts the inline ids, keeping the last seq of each (the sort is stable: an id's
    /// entries stay in run order).
    fn seal(&mut self) {
        self.short.sort_by(|a, b| a.0.cmp(&b.0));
        self.short.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = later.1;
            }
            same
        });
        self.short.shrink_to_fit();
        self.sealed = true;
    }

    fn len(&self) -> usize {
        debug_assert!(self.sealed || self.short.is_empty(), "Facts::finish seals");
        self.short.len() + self.long.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn contains(&self, id: &str) -> bool {
        debug_assert!(self.sealed || self.short.is_empty(), "Facts::finish seals");
        match Self::short(id) {
            Some(key) => self.short.binary_search_by(|(k, _)| k.cmp(&key)).is_ok(),
            None => self.long.contains_key(id),
        }
    }

    /// Each (id, seq), in the ids' order.
    fn for_each(&self, mut f: impl FnMut(&str, u64)) {
        debug_assert!(self.sealed || self.short.is_empty(), "Facts::finish seals");
        let mut long = self.long.iter().peekable();
        for (key, seq) in &self.short {
            let text = Self::text(key);
            while let Some((id, s)) = long.next_if(|(id, _)| id.as_str() < text) {
                f(id, *s);
            }
            f(text, *seq);
        }
        long.for_each(|(id, s)| f(id, *s));
    }
}

/// `controls.json`: for each control of the profile, the artifacts that evidence it, whether the
/// bundle holds them, and each requirement decided from the data with its numbers.
pub fn control_mapping(profile: &profiles::Profile, held: &[String], facts: &Facts) -> Value {
    let controls: Vec<Value> = profile
        .controls
        .iter()
        .map(|c| {
            let artifacts: Vec<Value> = c
                .evidence
                .iter()
                .map(|a| {
                    let present = a.files().iter().all(|f| held.iter().any(|h| h == f));
                    json!({"artifact": a.name(), "files": a.files(), "present": present})
                })
                .collect();
            let decided: Vec<Assessed> = c.requires.iter().map(|r| facts.assess(*r)).collect();
            let requirements: Vec<Value> = c
                .requires
                .iter()
                .zip(&decided)
                .map(|(r, a)| {
                    json!({
                        "requirement": r.name(),
                        "state": a.state.as_str(),
                        "numbers": a.numbers,
                        "finding": a.finding,
                    })
                })
                .collect();
            let missing = artifacts.iter().any(|a| a["present"] != true);
            let state = if missing || decided.iter().any(|a| a.state == State::NotMet) {
                "not-satisfied"
            } else if decided.iter().any(|a| a.state == State::NotAssessed) {
                "not-assessed"
            } else {
                "satisfied"
            };
            json!({
                "controlId": c.id, "label": c.label, "title": c.title,
                "evidence": artifacts, "requirements": requirements, "state": state,
            })
        })
        .collect();
    json!({"profile": profile.id, "title": profile.title, "controls": controls})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_held_compactly_are_the_map_they_replace() {
        // Short and long ids, ids that are prefixes of others, a NUL, non-ASCII text,
        // repeated ids (the later seq wins), out of order.
        let ids = [
            "aud_0mxdkilasrsbj0we1ug4",
            "aud_0mxdkilasegpsf357rb0",
            "aud_0mxdkilas",
            "aud_0mxdkilasrsbj0we1ug4x",
            "aud_0mxdkilasrsbj0we1ug",
            "3f2c1a7e-9b4d-4c1e-8f00-1234567890ab",
            "seq:17",
            "a\0b",
            "a",
            "é-ü",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            "aud_0mxdkilasegpsf357rb0",
            "a",
        ];
        let mut held = Denials::default();
        let mut map = BTreeMap::new();
        for (seq, id) in ids.iter().enumerate() {
            held.insert(id, seq as u64);
            map.insert(id.to_string(), seq as u64);
        }
        held.seal();
        let mut got = Vec::new();
        held.for_each(|id, seq| got.push((id.to_owned(), seq)));
        let want: Vec<(String, u64)> = map.into_iter().collect();
        assert_eq!(got, want);
        assert_eq!(held.len(), want.len());
        for id in ids {
            assert!(held.contains(id), "{id}");
        }
        for id in ["aud_0mxdkilasrsbj0we1ug5", "", "a\0", "aud_", "seq:1"] {
            assert!(!held.contains(id), "{id:?}");
        }
    }

    #[test]
    fn seqs_counted_list_as_every_seq_would() {
        for n in [0u64, 1, 9, 10, 11, 25] {
            let all: Vec<u64> = (1..=n).map(|i| i * 3).collect();
            let mut seqs = Seqs::default();
            all.iter().for_each(|s| seqs.push(*s));
            assert_eq!(seqs.list(), list(&all), "{n}");
            assert_eq!((seqs.len(), seqs.is_empty()), (all.len(), all.is_empty()));
        }
    }
}
