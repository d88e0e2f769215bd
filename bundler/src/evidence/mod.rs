//! Evidence bundles: what an auditor of one regime needs for one period, in a directory that
//! verifies offline with keys the site holds.
//!
//! `export` reads the gateway's admin API: the audit entries of the period (as one contiguous
//! run of the log, with their hash chains), a checkpoint that covers them, signed by the log's
//! key and cosigned by the site's witnesses, the inclusion proofs of the run's first and last
//! entries in it (which, with the entries between, prove every entry: see [`range_root`]), the
//! change records, the policy versions, undelivered alerts, the license state and, when given,
//! the site's signed installation transcript. It writes the profile's control mapping
//! (`controls.json`) and the same as NIST OSCAL assessment results, then `SHA256SUMS` and
//! `MANIFEST.json`, signed with the exporter's minisign key. Everything is written into a
//! sibling directory and renamed into place at the end: an interrupted export leaves nothing
//! that looks like a bundle.
//!
//! `verify` needs no network: the manifest's signature, every file's digest, each entry's chain
//! hash, the range proof against the checkpoint's root, the checkpoint's signature by the log key
//! and the witnesses' cosignatures against a quorum, and that the control mapping names only
//! files the bundle holds. It returns a transcript (text and JSON) a site stores.
//!
//! This module holds the bundle's types (manifest, proofs, options, the verification
//! transcript) and what export and verify share; [`export`](fn@export) is in `export.rs`, the
//! OSCAL documents in `oscal.rs`, [`verify`](fn@verify) in `verify.rs`, and the one pass over
//! the run of entries both make (each line parsed once: chains, leaves, facts, counts, digest)
//! in `entries.rs`.

pub mod assess;
pub mod catalog;
mod entries;
mod export;
mod oscal;
pub mod profiles;
mod verify;

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::audit_archive::Source;
use crate::keys::{MediaKey, MediaPublicKey};
use meshguard_tlog::merkle::RunHashes;

pub use export::export;
pub use verify::verify;

pub const FORMAT: &str = "meshguard-evidence/v1";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `MANIFEST.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub profile: String,
    pub from: String,
    pub to: String,
    pub created_at: String,
    pub origin: String,
    /// The log's verifier key, as the gateway served it.
    pub log_vkey: String,
    /// The size of the checkpoint the entries are proven in.
    pub checkpoint_size: u64,
    /// The witnesses whose cosignatures the checkpoint carries.
    pub witnesses: Vec<String>,
    /// The seqs of the run of entries held (inclusive), and how many fall in the period.
    pub first_seq: u64,
    pub last_seq: u64,
    pub in_period: u64,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// `audit/range-proof.json`: inclusion proofs of the run's first and last entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RangeProof {
    pub size: u64,
    pub first: Inclusion,
    pub last: Inclusion,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inclusion {
    /// Leaf index (seq - 1).
    pub index: u64,
    /// Base64 hashes, leaf to root (RFC 9162 §2.1.3).
    pub hashes: Vec<String>,
}

/// What `export` needs.
#[derive(Debug)]
pub struct ExportOptions<'a> {
    pub source: &'a Source,
    pub profile: &'a str,
    /// RFC 3339 bounds of the period: `from` included, `to` excluded.
    pub from: &'a str,
    pub to: &'a str,
    pub out: &'a Path,
    pub key: &'a MediaKey,
    /// The site's signed installation transcript (`.json`, its `.minisig` beside it).
    pub transcript: Option<&'a Path>,
    /// Accept a checkpoint no witness cosigned (when witnesses are configured).
    pub allow_unwitnessed: bool,
}

/// `YYYY-MM` as (its first day, the next month's first day).
pub fn month_bounds(month: &str) -> Result<(String, String)> {
    let first = chrono::NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
        .map_err(|_| anyhow::anyhow!("--month {month:?} is not a month such as 2026-11"))?;
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .context("a month past the calendar")?;
    Ok((
        first.format("%Y-%m-%d").to_string(),
        next.format("%Y-%m-%d").to_string(),
    ))
}

fn parse_time(s: &str, what: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    bail!("{what} {s:?} is not a date (2026-11-01) or an RFC 3339 time (2026-11-01T00:00:00Z)")
}

fn pretty<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    let mut b = serde_json::to_vec_pretty(v)?;
    b.push(b'\n');
    Ok(b)
}

/// The root of the tree of `size` leaves, from the run of leaves `first.index..=last.index`
/// (as it streamed in) and the two inclusion proofs (base64 as the gateway serves them): see
/// [`meshguard_tlog::merkle::run_root_of`].
pub fn range_root(
    size: u64,
    first: &Inclusion,
    last: &Inclusion,
    run: &RunHashes,
) -> std::result::Result<[u8; 32], String> {
    let decode = |p: &Inclusion| -> std::result::Result<Vec<[u8; 32]>, String> {
        p.hashes
            .iter()
            .map(|h| {
                B64.decode(h)
                    .ok()
                    .and_then(|v| <[u8; 32]>::try_from(v).ok())
                    .ok_or_else(|| format!("a proof hash {h:?} is not 32 bytes of base64"))
            })
            .collect()
    };
    meshguard_tlog::merkle::run_root_of(
        size,
        (first.index, &decode(first)?),
        (last.index, &decode(last)?),
        run,
    )
}

/// Keys the verifier trusts.
#[derive(Debug)]
pub struct VerifyOptions<'a> {
    /// The exporter's key (minisign public key).
    pub pubkey: &'a MediaPublicKey,
    /// The log's verifier key; None takes the one in the (signed) manifest.
    pub log_vkey: Option<&'a str>,
    /// Witness verifier keys (cosignature/v1) and how many must have cosigned.
    pub witnesses: &'a [String],
    pub quorum: usize,
    /// The key that signed the installation transcript.
    pub transcript_pubkey: Option<&'a MediaPublicKey>,
    /// List every denial in the transcript (else only count them: a check that keeps no
    /// transcript, such as the export's own, needs no list).
    pub list_denials: bool,
    /// Checks the caller knowingly accepts not running (`--accept-unwitnessed`,
    /// `--accept-unsigned-transcript`). Any other check that cannot run makes the result
    /// UNVERIFIED.
    pub accept_unchecked: &'a [Unchecked],
}

/// A check `verify` cannot run without a key the caller did not give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unchecked {
    /// No `--witness` key: the checkpoint's cosignatures are not checked.
    Witness,
    /// No `--transcript-pubkey`: the installation transcript's signature is not checked.
    Transcript,
}

/// One check of the transcript.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    /// Whether it counts as met: it ran and passed, or it could not run and the caller
    /// accepted that by name.
    pub ok: bool,
    /// Whether it ran at all.
    pub ran: bool,
    pub detail: String,
}

/// The verification transcript.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub format: &'static str,
    pub bundle: String,
    pub verified_at: String,
    pub ok: bool,
    /// VERIFIED, UNVERIFIED (a check could not run and was not accepted) or FAILED.
    pub result: &'static str,
    pub manifest: Option<Manifest>,
    pub checks: Vec<Check>,
    /// What the verified entries decided: the denials one by one.
    pub decisions: Decisions,
    /// Each control of the profile, as the bundle's data shows it.
    pub controls: Vec<ControlStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ControlStatus {
    pub id: String,
    pub label: String,
    pub satisfied: bool,
    /// satisfied, not-satisfied or not-assessed.
    pub state: String,
    /// What each requirement found, with its numbers, and any missing evidence.
    pub why: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Decisions {
    pub allowed: u64,
    pub denied: u64,
    pub denials: Vec<Denial>,
}

/// A denial in the bundle, as the transcript lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Denial {
    pub seq: u64,
    pub id: String,
    pub timestamp: String,
    pub event: String,
    pub agent: String,
    pub action: String,
    pub resource: String,
    pub policy: String,
    pub rule: String,
    pub reason: String,
}

/// Denials the text transcript lists (the JSON one lists all).
const DENIALS_IN_TEXT: usize = 50;

impl Verified {
    /// VERIFIED when every check ran and passed (or the caller accepted by name that one could
    /// not run); FAILED when a check that ran failed; else UNVERIFIED, naming nothing false but
    /// something not shown.
    pub fn result(&self) -> &'static str {
        if self.checks.iter().any(|c| c.ran && !c.ok) {
            "FAILED"
        } else if self.ok {
            "VERIFIED"
        } else {
            "UNVERIFIED"
        }
    }

    pub fn text(&self) -> String {
        let mut out = format!(
            "meshguard evidence verification of {} at {}\n",
            self.bundle, self.verified_at
        );
        if let Some(m) = &self.manifest {
            out.push_str(&format!(
                "profile {} from {} to {}; log {} entries {}..={} ({} in the period) in checkpoint {}\n",
                m.profile, m.from, m.to, m.origin, m.first_seq, m.last_seq, m.in_period, m.checkpoint_size
            ));
        }
        let d = &self.decisions;
        out.push_str(&format!(
            "decisions: {} allowed, {} denied\n",
            d.allowed, d.denied
        ));
        for x in d.denials.iter().take(DENIALS_IN_TEXT) {
            out.push_str(&format!(
                "  DENY seq {} {} {} event {} agent {} action {} resource {} policy {} rule {}: {}\n",
                x.seq,
                x.id,
                x.timestamp,
                x.event,
                x.agent,
                x.action,
                x.resource,
                x.policy,
                x.rule,
                x.reason
            ));
        }
        if d.denials.len() > DENIALS_IN_TEXT {
            out.push_str(&format!(
                "  … and {} more denials (the JSON transcript lists every one)\n",
                d.denials.len() - DENIALS_IN_TEXT
            ));
        }
        for c in &self.controls {
            out.push_str(&format!(
                "CONTROL {} ({}): {}: {}\n",
                c.label,
                c.id,
                c.state.to_uppercase().replace('-', " "),
                c.why
            ));
        }
        for c in &self.checks {
            out.push_str(&format!(
                "{} {}: {}\n",
                match (c.ran, c.ok) {
                    (true, true) => "PASS",
                    (true, false) => "FAIL",
                    (false, true) => "NOT RUN (accepted)",
                    (false, false) => "NOT RUN",
                },
                c.check,
                c.detail
            ));
        }
        out.push_str(&format!("RESULT: {}\n", self.result()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::export::active_in;
    use super::oscal::uuid;
    use super::*;
    use meshguard_tlog::merkle::leaf_hash;
    use serde_json::json;

    fn leaves(n: u64) -> Vec<[u8; 32]> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// The inclusion proof of leaf `m` in `all`, computed from all the leaves.
    fn proof(m: u64, all: &[[u8; 32]]) -> Inclusion {
        let hashes = meshguard_tlog::merkle::inclusion_proof(m as usize, all)
            .iter()
            .map(|h| B64.encode(h))
            .collect();
        Inclusion { index: m, hashes }
    }

    #[test]
    fn every_run_rebuilds_the_root_and_an_altered_leaf_does_not() {
        for size in 1..=17u64 {
            let all = leaves(size);
            let root = meshguard_tlog::merkle::root_of(&all);
            for a in 0..size {
                for b in a..size {
                    let run = &all[a as usize..=b as usize];
                    let streamed = RunHashes::of(a, run);
                    let got = range_root(size, &proof(a, &all), &proof(b, &all), &streamed);
                    assert_eq!(got.unwrap(), root, "size {size}, run {a}..={b}");
                    let mut bad = run.to_vec();
                    bad[0][0] ^= 1;
                    let bad = RunHashes::of(a, &bad);
                    let got = range_root(size, &proof(a, &all), &proof(b, &all), &bad).unwrap();
                    assert_ne!(got, root);
                }
            }
        }
    }

    #[test]
    fn a_proof_of_the_wrong_length_or_a_run_that_does_not_fit_is_refused() {
        let all = leaves(8);
        let mut short = proof(2, &all);
        short.hashes.pop();
        let run = |a: u64, b: u64| RunHashes::of(a, &all[a as usize..=b as usize]);
        assert!(range_root(8, &short, &proof(5, &all), &run(2, 5)).is_err());
        assert!(range_root(8, &proof(2, &all), &proof(5, &all), &run(2, 4)).is_err());
        assert!(range_root(8, &proof(2, &all), &proof(5, &all), &run(1, 4)).is_err());
        assert!(range_root(8, &proof(2, &all), &proof(5, &all), &run(2, 5)).is_ok());
    }

    #[test]
    fn the_policy_versions_kept_are_those_active_in_the_period() {
        let doc = json!({"active": 4, "versions": [
            {"version": 1, "activatedAt": "2026-10-01T00:00:00Z"},
            {"version": 2, "activatedAt": "2026-10-20T00:00:00Z"},
            {"version": 3, "activatedAt": "2026-11-10T00:00:00Z"},
            {"version": 4, "activatedAt": "2026-12-05T00:00:00Z"},
        ]});
        let t = |s: &str| parse_time(s, "t").unwrap();
        let got = active_in(&doc, t("2026-11-01"), t("2026-12-01"));
        let versions: Vec<u64> = got["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_u64().unwrap())
            .collect();
        assert_eq!(
            versions,
            vec![2, 3],
            "in force at the start, and activated during"
        );
    }

    #[test]
    fn a_month_is_its_first_day_to_the_next_months() {
        assert_eq!(
            month_bounds("2026-12").unwrap(),
            ("2026-12-01".to_owned(), "2027-01-01".to_owned())
        );
        assert!(month_bounds("2026-13").is_err());
    }

    #[test]
    fn uuids_are_version_5_shaped_and_stable() {
        let u = uuid(&["a", "b"]);
        assert_eq!(u, uuid(&["a", "b"]));
        assert_ne!(u, uuid(&["ab"]));
        assert_eq!(&u[14..15], "5");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }
}
