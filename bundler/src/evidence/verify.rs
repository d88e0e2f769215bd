//! `evidence verify`: checks a bundle offline, one named check after another, and returns the
//! transcript of every check, the decisions the entries record and each control's status.

use std::path::Path;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::entries::{self, ENTRIES, Scanned};
use super::oscal::POAM_PROFILES;
use super::{
    B64, Check, ControlStatus, Decisions, FORMAT, Inclusion, Manifest, RangeProof, Unchecked,
    Verified, VerifyOptions, assess, profiles, range_root,
};
use crate::audit_archive::Line;
use crate::keys::MediaPublicKey;
use meshguard_tlog::merkle::{RunHashes, leaf_hash};
use meshguard_tlog::note::{Checkpoint, Note, Vkey};

/// `audit/configuration-before.json`.
#[derive(Deserialize)]
struct ConfigurationBefore {
    line: Line,
    proof: Inclusion,
}

/// Checks `audit/configuration-before.json`: a configuration entry of the bundle's log, its
/// chain hash right, before the run, and proven in the verified checkpoint. Its (seq, entry).
fn configuration_before(
    bytes: &[u8],
    checkpoint: Option<&Checkpoint>,
    manifest: &Manifest,
) -> std::result::Result<(u64, Value), String> {
    let b: ConfigurationBefore = serde_json::from_slice(bytes)
        .map_err(|e| format!("{}: {e}", assess::CONFIGURATION_BEFORE))?;
    let c = checkpoint.ok_or("no verified checkpoint to prove it in")?;
    if b.line.entry["event"] != "configuration" || b.line.source != manifest.origin {
        return Err("it is not a configuration entry of this log".to_owned());
    }
    if b.line.seq >= manifest.first_seq || b.proof.index + 1 != b.line.seq {
        return Err(format!(
            "entry {} is not before the run ({}..={}) or not the entry its proof is for",
            b.line.seq, manifest.first_seq, manifest.last_seq
        ));
    }
    let body = serde_json::to_string(&b.line.entry).map_err(|e| e.to_string())?;
    let mut h = Sha256::new();
    h.update(hex::decode(&b.line.prev_hash).unwrap_or_default());
    h.update(body.as_bytes());
    if hex::encode(h.finalize()) != b.line.hash {
        return Err("its hash does not match its content: the entry was altered".to_owned());
    }
    let leaf = RunHashes::of(b.proof.index, &[leaf_hash(body.as_bytes())]);
    match range_root(c.size, &b.proof, &b.proof, &leaf) {
        Ok(root) if root == c.root => Ok((b.line.seq, b.line.entry)),
        Ok(_) => Err("it does not rebuild the signed root: the entry was altered".to_owned()),
        Err(e) => Err(e),
    }
}

/// `SHA256SUMS` is signed by the exporter's key and lists exactly the manifest's files with
/// their digests, and the manifest itself: what the stock-tool check relies on.
fn sums_match(
    dir: &Path,
    pubkey: &MediaPublicKey,
    manifest: &Manifest,
    manifest_bytes: &[u8],
) -> std::result::Result<String, String> {
    let sums = std::fs::read(dir.join("SHA256SUMS"))
        .map_err(|e| format!("SHA256SUMS cannot be read: {e}"))?;
    let sig = std::fs::read_to_string(dir.join("SHA256SUMS.minisig"))
        .map_err(|_| "SHA256SUMS is not signed (SHA256SUMS.minisig is missing)".to_owned())?;
    pubkey
        .verify(&sums, &sig, "SHA256SUMS")
        .map_err(|e| format!("SHA256SUMS: {e}"))?;
    let text = String::from_utf8(sums).map_err(|_| "SHA256SUMS is not text".to_owned())?;
    let mut expected: Vec<(String, String)> = manifest
        .files
        .iter()
        .map(|f| (f.path.clone(), f.sha256.clone()))
        .collect();
    expected.push((
        "MANIFEST.json".to_owned(),
        hex::encode(Sha256::digest(manifest_bytes)),
    ));
    expected.sort();
    let mut got: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (sha, path) = l.split_once("  ").unwrap_or((l, ""));
            (path.to_owned(), sha.to_owned())
        })
        .collect();
    got.sort();
    if got != expected {
        return Err(
            "SHA256SUMS does not list exactly the signed manifest's files and the manifest"
                .to_owned(),
        );
    }
    Ok(format!(
        "signed by key {}; lists the {} files and the manifest",
        pubkey.key_id(),
        manifest.files.len()
    ))
}

/// Verifies a bundle with no network. Every check runs and is reported; `ok` is their
/// conjunction. Only an unreadable manifest stops early.
pub fn verify(dir: &Path, opts: &VerifyOptions<'_>) -> Result<Verified> {
    verify_with(dir, opts, None)
}

/// [`verify`], with the entries file already scanned by the caller (the export, which wrote
/// it from the lines it scanned): every other file is read and checked as `verify` does.
pub(super) fn verify_scanned(
    dir: &Path,
    opts: &VerifyOptions<'_>,
    scanned: Scanned,
) -> Result<Verified> {
    verify_with(dir, opts, Some(scanned))
}

fn verify_with(dir: &Path, opts: &VerifyOptions<'_>, scanned: Option<Scanned>) -> Result<Verified> {
    let mut checks = Checks::new(opts.accept_unchecked);
    let mut out = Verified {
        format: "meshguard-evidence-verification/v1",
        bundle: dir.display().to_string(),
        verified_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ok: false,
        result: "FAILED",
        manifest: None,
        checks: Vec::new(),
        decisions: Decisions::default(),
        controls: Vec::new(),
    };
    let bytes = std::fs::read(dir.join("MANIFEST.json")).with_context(|| {
        format!(
            "{} holds no MANIFEST.json: not an evidence bundle",
            dir.display()
        )
    })?;
    let sig = std::fs::read_to_string(dir.join("MANIFEST.json.minisig")).unwrap_or_default();
    checks.add(
        "manifest signature",
        opts.pubkey
            .verify(&bytes, &sig, "MANIFEST.json")
            .map(|c| format!("signed by key {} ({c})", opts.pubkey.key_id()))
            .map_err(|e| e.to_string()),
    );
    let manifest: Manifest = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            checks.add(
                "manifest",
                Err(format!("MANIFEST.json is not an evidence manifest: {e}")),
            );
            out.checks = checks.ran;
            return Ok(out);
        }
    };
    let listed: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let (facts, before_bytes) = facts_at_start(dir, &manifest, &listed);
    let scanned = scanned.unwrap_or_else(|| {
        let run = (manifest.first_seq, manifest.last_seq);
        entries::scan_file(dir, run, facts, opts.list_denials)
    });
    checks.add("format", format_check(&manifest));
    checks.add(
        "file digests",
        file_digests(dir, &manifest, scanned.digest.as_ref())?,
    );
    checks.add(
        "SHA256SUMS",
        sums_match(dir, opts.pubkey, &manifest, &bytes),
    );
    let start = (scanned, before_bytes.as_deref());
    verify_contents(dir, opts, &manifest, start, &mut checks, &mut out);
    out.ok = checks.ran.iter().chain(&checks.unrun).all(|c| c.ok);
    out.manifest = Some(manifest);
    out.checks = checks.into_vec();
    out.result = out.result();
    Ok(out)
}

/// The checks of what the signed manifest lists, in order: the entries and their chains, the
/// checkpoint and its witnesses, the run's inclusion, the configuration before the period, the
/// control mapping and OSCAL documents, the POA&M, ePHI, and the installation transcript.
fn verify_contents(
    dir: &Path,
    opts: &VerifyOptions<'_>,
    manifest: &Manifest,
    (scanned, before_bytes): (Scanned, Option<&[u8]>),
    checks: &mut Checks<'_>,
    out: &mut Verified,
) {
    let listed: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let Scanned {
        run,
        result,
        mut facts,
        decisions,
        ..
    } = scanned;
    out.decisions = decisions;
    checks.add("audit entries", result);

    // The checkpoint: signed by the log, cosigned by the witnesses.
    let note_text = String::from_utf8(read(dir, "audit/checkpoint.note")).unwrap_or_default();
    let checkpoint = checkpoint_signature(checks, opts, manifest, &note_text);
    witness_cosignatures(checks, opts, manifest, &note_text);

    // The run of entries in the checkpoint.
    let proof: std::result::Result<RangeProof, String> =
        serde_json::from_slice(&read(dir, "audit/range-proof.json")).map_err(|e| e.to_string());
    let proven = checks.add("inclusion", inclusion(&checkpoint, proof, manifest, &run));

    // The settings in force when the period began: an entry of the same log, before the run,
    // in the same checkpoint.
    if let Some(bytes) = before_bytes {
        let r = configuration_before(bytes, checkpoint.as_ref().ok(), manifest);
        checks.add(
            "configuration before the period",
            r.map(|(seq, _)| {
                format!(
                    "the configuration entry in force when the period began (seq {seq}) is proven in the checkpoint"
                )
            }),
        );
    }

    // The control mapping says what the bundle's data shows, and so do the OSCAL findings.
    facts.finish(assess::Inputs {
        changes: serde_json::from_slice(&read(dir, "changes.json")).unwrap_or(Value::Null),
        deliveries: serde_json::from_slice(&read(dir, "alerts/deliveries.json"))
            .unwrap_or(Value::Null),
        versions: serde_json::from_slice(&read(dir, "policies/versions.json"))
            .unwrap_or(Value::Null),
        checkpoint: checkpoint
            .as_ref()
            .ok()
            .map(|c| (c.size, B64.encode(c.root))),
        checkpoint_note: note_text.clone(),
        proven,
        transcript: listed
            .contains(&"install/transcript.json")
            .then(|| serde_json::from_slice(&read(dir, "install/transcript.json")).ok())
            .flatten(),
    });
    check_controls(dir, manifest, &listed, &facts, checks, out);

    if listed.contains(&"install/transcript.json") {
        installation_transcript(dir, opts, checks);
    }
}

/// The assessment's facts before the entries are read: the settings in force when the run
/// began come first (as at export); whether that entry is proven in the checkpoint is its own
/// check, which fails the bundle if not. The facts, and `audit/configuration-before.json` if
/// the bundle lists it.
fn facts_at_start(
    dir: &Path,
    manifest: &Manifest,
    listed: &[&str],
) -> (assess::Facts, Option<Vec<u8>>) {
    let mut facts = profiles::find(&manifest.profile)
        .map(|p| assess::Facts::new(&manifest.origin, p))
        .unwrap_or_default();
    let before_bytes = listed
        .contains(&assess::CONFIGURATION_BEFORE)
        .then(|| read(dir, assess::CONFIGURATION_BEFORE));
    if let Some(Ok(b)) = before_bytes
        .as_deref()
        .map(serde_json::from_slice::<ConfigurationBefore>)
    {
        facts.before(b.line.seq, &b.line.entry);
    }
    (facts, before_bytes)
}

/// The checkpoint, signed by the log's key (the one given, else the signed manifest's).
fn checkpoint_signature(
    checks: &mut Checks<'_>,
    opts: &VerifyOptions<'_>,
    manifest: &Manifest,
    note_text: &str,
) -> std::result::Result<Checkpoint, String> {
    let vkey_text = opts.log_vkey.unwrap_or(&manifest.log_vkey);
    let checkpoint = signed_checkpoint(note_text, vkey_text, manifest);
    checks.add(
        "checkpoint signature",
        checkpoint
            .as_ref()
            .map(|c| {
                format!(
                    "{} entries of {} signed by {}{}",
                    c.size,
                    c.origin,
                    vkey_text.split('+').next().unwrap_or_default(),
                    if opts.log_vkey.is_some() {
                        " (the key you gave)"
                    } else {
                        " (the key in the signed manifest; pass --log-key to pin your own)"
                    }
                )
            })
            .map_err(Clone::clone),
    );
    checkpoint
}

/// The control mapping and the OSCAL findings against what the bundle shows (each control's
/// status into `out`), the POA&M under a NIST profile, and ePHI under a profile that scans.
fn check_controls(
    dir: &Path,
    manifest: &Manifest,
    listed: &[&str],
    facts: &assess::Facts,
    checks: &mut Checks<'_>,
    out: &mut Verified,
) {
    let controls: Value =
        serde_json::from_slice(&read(dir, "controls.json")).unwrap_or(Value::Null);
    let oscal: Value =
        serde_json::from_slice(&read(dir, "oscal/assessment-results.json")).unwrap_or(Value::Null);
    let mapping = control_mapping(
        manifest,
        listed,
        facts,
        &controls,
        &oscal,
        &mut out.controls,
    );
    checks.add("control mapping", mapping);
    if POAM_PROFILES.contains(&manifest.profile.as_str()) {
        let poam: Value =
            serde_json::from_slice(&read(dir, "oscal/poam.json")).unwrap_or(Value::Null);
        checks.add("POA&M", poam_plans_every_gap(&out.controls, &poam, &oscal));
    }
    if facts.scan_ephi {
        checks.add("ePHI", no_ephi(facts));
    }
}

/// A file of the bundle; empty when it cannot be read (the digest check has said why).
fn read(dir: &Path, p: &str) -> Vec<u8> {
    std::fs::read(dir.join(p)).unwrap_or_default()
}

/// The transcript's checks as they are made, in order; those that could not run come last.
struct Checks<'o> {
    /// Checks the caller accepted not running.
    accepted: &'o [Unchecked],
    ran: Vec<Check>,
    unrun: Vec<Check>,
}

impl<'o> Checks<'o> {
    fn new(accepted: &'o [Unchecked]) -> Self {
        Checks {
            accepted,
            ran: Vec::new(),
            unrun: Vec::new(),
        }
    }

    /// Records a check that ran; whether it passed.
    fn add(&mut self, check: &str, r: std::result::Result<String, String>) -> bool {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.ran.push(Check {
            check: check.to_owned(),
            ok,
            ran: true,
            detail,
        });
        ok
    }

    /// Records a check that cannot run for want of a key: met only if the caller accepted it
    /// by name (with `flag`).
    fn not_run(&mut self, check: &str, what: Unchecked, why: String, flag: &str) {
        let accepted = self.accepted.contains(&what);
        self.unrun.push(Check {
            check: check.to_owned(),
            ok: accepted,
            ran: false,
            detail: if accepted {
                format!("not checked: {why} (accepted with {flag})")
            } else {
                format!("not checked: {why}; give the key, or accept this explicitly with {flag}")
            },
        });
    }

    fn into_vec(mut self) -> Vec<Check> {
        self.ran.append(&mut self.unrun);
        self.ran
    }
}

fn format_check(manifest: &Manifest) -> std::result::Result<String, String> {
    if manifest.format == FORMAT {
        Ok(FORMAT.to_owned())
    } else {
        Err(format!("format {:?}, expected {FORMAT}", manifest.format))
    }
}

/// Every file listed, with its digest; nothing else in the bundle. The entries' digest is the
/// scan's (`entries`: the file hashed as it was parsed) when it read the file whole. Errs
/// (stopping the verification) only when the bundle's directory cannot be walked.
fn file_digests(
    dir: &Path,
    manifest: &Manifest,
    entries: Option<&(String, u64)>,
) -> Result<std::result::Result<String, String>> {
    let mut bad = Vec::new();
    for f in &manifest.files {
        let Some(rel) = crate::fsx::safe_relative(&f.path) else {
            bad.push(format!("{:?} is not a plain relative path", f.path));
            continue;
        };
        let digest = match entries {
            Some(d) if f.path == ENTRIES => Ok(d.clone()),
            // Hashed as it is read: a file may be large.
            _ => crate::fsx::sha256_file(&dir.join(rel)),
        };
        match digest {
            Ok((sha, size)) if sha == f.sha256 && size == f.size => {}
            Ok(_) => bad.push(format!("{} does not match its digest", f.path)),
            Err(e) => bad.push(format!("{} cannot be read: {e}", f.path)),
        }
    }
    let listed: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    for extra in crate::fsx::walk(dir)? {
        let known = [
            "MANIFEST.json",
            "MANIFEST.json.minisig",
            "SHA256SUMS",
            "SHA256SUMS.minisig",
        ];
        if !listed.contains(&extra.as_str()) && !known.contains(&extra.as_str()) {
            bad.push(format!("{extra} is in the bundle but not in its manifest"));
        }
    }
    Ok(if bad.is_empty() {
        Ok(format!(
            "{} files match the signed manifest",
            manifest.files.len()
        ))
    } else {
        Err(bad.join("; "))
    })
}

/// The checkpoint note, signed by the log's key, and of the manifest's log and size.
fn signed_checkpoint(
    note_text: &str,
    vkey_text: &str,
    manifest: &Manifest,
) -> std::result::Result<Checkpoint, String> {
    let vkey = Vkey::parse(vkey_text).map_err(|e| format!("the log key: {e}"))?;
    let note = Note::parse(note_text).map_err(|e| e.to_string())?;
    note.verify(&vkey).map_err(|e| e.to_string())?;
    let c = Checkpoint::parse(note.text).map_err(|e| e.to_string())?;
    if c.size != manifest.checkpoint_size || c.origin != manifest.origin {
        return Err(format!(
            "the checkpoint is of {} at {}, the manifest says {} at {}",
            c.origin, c.size, manifest.origin, manifest.checkpoint_size
        ));
    }
    Ok(c)
}

/// The witnesses' cosignatures on the checkpoint against the quorum; not run (and then met
/// only if accepted) when no witness key and no quorum were given.
fn witness_cosignatures(
    checks: &mut Checks<'_>,
    opts: &VerifyOptions<'_>,
    manifest: &Manifest,
    note_text: &str,
) {
    let mut cosigners = Vec::new();
    let mut cosign_problems = Vec::new();
    for w in opts.witnesses {
        let vkey = match Vkey::parse(w) {
            Ok(v) => v,
            Err(e) => {
                cosign_problems.push(format!("witness key {w:?}: {e}"));
                continue;
            }
        };
        match meshguard_tlog::note::cosigned_by(note_text, &vkey) {
            Ok(()) => cosigners.push(vkey.name.clone()),
            Err(why) => cosign_problems.push(why),
        }
    }
    if opts.witnesses.is_empty() && opts.quorum == 0 {
        let named = if manifest.witnesses.is_empty() {
            "the bundle names no witness".to_owned()
        } else {
            format!("the bundle names {}", manifest.witnesses.join(", "))
        };
        checks.not_run(
            "witness cosignatures",
            Unchecked::Witness,
            format!("no --witness key given ({named})"),
            "--accept-unwitnessed",
        );
        return;
    }
    checks.add(
        "witness cosignatures",
        if opts.witnesses.is_empty() {
            Err(format!(
                "a quorum of {} was asked for, but no --witness key given",
                opts.quorum
            ))
        } else if cosigners.len() >= opts.quorum.max(1) {
            Ok(format!(
                "cosigned by {} ({} of quorum {}){}",
                cosigners.join(", "),
                cosigners.len(),
                opts.quorum.max(1),
                if cosign_problems.is_empty() {
                    String::new()
                } else {
                    format!("; {}", cosign_problems.join("; "))
                }
            ))
        } else {
            Err(format!(
                "{} of the quorum of {} cosigned: {}",
                cosigners.len(),
                opts.quorum.max(1),
                cosign_problems.join("; ")
            ))
        },
    );
}

/// The run of entries rebuilds the verified checkpoint's root with the range proof, which is
/// for the manifest's first and last entries and checkpoint.
fn inclusion(
    checkpoint: &std::result::Result<Checkpoint, String>,
    proof: std::result::Result<RangeProof, String>,
    manifest: &Manifest,
    run: &RunHashes,
) -> std::result::Result<String, String> {
    let (c, p) = match (checkpoint, proof) {
        (Ok(c), Ok(p)) => (c, p),
        (Err(_), _) => return Err("no verified checkpoint to prove the entries in".to_owned()),
        (_, Err(e)) => return Err(format!("audit/range-proof.json: {e}")),
    };
    if p.first.index + 1 != manifest.first_seq
        || p.last.index + 1 != manifest.last_seq
        || p.size != c.size
    {
        return Err("the range proof is not for the manifest's entries and checkpoint".to_owned());
    }
    match range_root(p.size, &p.first, &p.last, run) {
        Ok(root) if root == c.root => Ok(format!(
            "entries {}..={} rebuild the root of the signed checkpoint of {}",
            manifest.first_seq, manifest.last_seq, c.size
        )),
        Ok(_) => Err(
            "the entries do not rebuild the signed root: an entry was altered, added or removed"
                .to_owned(),
        ),
        Err(e) => Err(e),
    }
}

/// `controls.json` and the OSCAL findings say what the bundle's data shows for each control of
/// the profile; each control's status goes into `statuses`.
fn control_mapping(
    manifest: &Manifest,
    listed: &[&str],
    facts: &assess::Facts,
    controls: &Value,
    oscal: &Value,
    statuses: &mut Vec<ControlStatus>,
) -> std::result::Result<String, String> {
    let profile = profiles::find(&manifest.profile)?;
    let held: Vec<String> = listed.iter().map(|f| (*f).to_owned()).collect();
    let expected = assess::control_mapping(profile, &held, facts);
    let mut problems = Vec::new();
    if *controls != expected {
        problems.push(format!(
            "controls.json does not say what the bundle shows for {}",
            manifest.profile
        ));
    }
    let findings = oscal["assessment-results"]["results"][0]["findings"].as_array();
    for c in expected["controls"].as_array().into_iter().flatten() {
        statuses.push(control_status(c, findings, &mut problems));
    }
    if problems.is_empty() {
        let met = statuses.iter().filter(|c| c.satisfied).count();
        Ok(format!(
            "{} controls of {}: {met} satisfied, {} not; controls.json and the OSCAL findings say the same",
            statuses.len(),
            manifest.profile,
            statuses.len() - met
        ))
    } else {
        Err(problems.join("; "))
    }
}

/// A control as the bundle's data shows it (`c`, from the expected mapping); a problem when
/// its OSCAL finding says otherwise.
fn control_status(
    c: &Value,
    findings: Option<&Vec<Value>>,
    problems: &mut Vec<String>,
) -> ControlStatus {
    let id = c["controlId"].as_str().unwrap_or_default();
    let control_state = c["state"].as_str().unwrap_or_default().to_owned();
    let satisfied = control_state == "satisfied";
    let state = findings.into_iter().flatten().find_map(|f| {
        (f["target"]["target-id"] == format!("{id}_obj"))
            .then(|| f["target"]["status"]["state"].as_str().unwrap_or_default())
    });
    let want = if satisfied {
        "satisfied"
    } else {
        "not-satisfied"
    };
    if state != Some(want) {
        problems.push(format!(
            "the OSCAL finding for {id} says {}, the bundle shows {want}",
            state.unwrap_or("nothing")
        ));
    }
    let why: Vec<String> = c["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["present"] != true)
        .map(|a| format!("no {}", a["artifact"].as_str().unwrap_or("?")))
        .chain(c["requirements"].as_array().into_iter().flatten().map(|r| {
            format!(
                "{} ({})",
                r["finding"].as_str().unwrap_or_default(),
                r["state"].as_str().unwrap_or_default()
            )
        }))
        .collect();
    ControlStatus {
        id: id.to_owned(),
        label: c["label"].as_str().unwrap_or_default().to_owned(),
        satisfied,
        state: control_state,
        why: why.join("; "),
    }
}

/// Every control not satisfied has a POA&M item linked to its OSCAL finding.
fn poam_plans_every_gap(
    statuses: &[ControlStatus],
    poam: &Value,
    oscal: &Value,
) -> std::result::Result<String, String> {
    let gaps: Vec<&ControlStatus> = statuses.iter().filter(|c| !c.satisfied).collect();
    let items = poam["plan-of-action-and-milestones"]["poam-items"].as_array();
    let findings = oscal["assessment-results"]["results"][0]["findings"].as_array();
    let mut unplanned = Vec::new();
    for g in &gaps {
        let finding = findings.into_iter().flatten().find_map(|f| {
            (f["target"]["target-id"] == format!("{}_obj", g.id)).then(|| f["uuid"].clone())
        });
        let planned = finding.is_some_and(|uuid| {
            items.into_iter().flatten().any(|i| {
                i["related-findings"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["finding-uuid"] == uuid)
            })
        });
        if !planned {
            unplanned.push(g.label.clone());
        }
    }
    if !unplanned.is_empty() {
        Err(format!(
            "controls not satisfied without a POA&M item linked to their finding: {}",
            unplanned.join(", ")
        ))
    } else if gaps.is_empty() {
        Ok("no control to plan for".to_owned())
    } else {
        Ok(format!(
            "oscal/poam.json plans for every control not satisfied ({})",
            gaps.iter()
                .map(|g| g.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Under a profile that keeps ePHI out of the bundle: no entry holds an ePHI identifier.
fn no_ephi(facts: &assess::Facts) -> std::result::Result<String, String> {
    if facts.ephi_total == 0 {
        Ok(format!(
            "no recognisable ePHI identifier in {} entries",
            facts.entries
        ))
    } else {
        Err(format!(
            "{} entries hold ePHI identifiers (first: {}); this bundle must not leave the covered entity",
            facts.ephi_total,
            facts
                .ephi
                .iter()
                .map(|(seq, kind)| format!("seq {seq} {kind}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// The installation transcript the bundle holds is signed by the site's key; not run (and
/// then met only if accepted) without that key.
fn installation_transcript(dir: &Path, opts: &VerifyOptions<'_>, checks: &mut Checks<'_>) {
    let t = read(dir, "install/transcript.json");
    let s = String::from_utf8(read(dir, "install/transcript.json.minisig")).unwrap_or_default();
    match opts.transcript_pubkey {
        Some(k) => {
            checks.add(
                "installation transcript",
                k.verify(&t, &s, "install/transcript.json")
                    .map(|c| format!("signed by the site key {} ({c})", k.key_id()))
                    .map_err(|e| e.to_string()),
            );
        }
        None => checks.not_run(
            "installation transcript",
            Unchecked::Transcript,
            "the bundle holds a transcript and no --transcript-pubkey (the site's key) was given"
                .to_owned(),
            "--accept-unsigned-transcript",
        ),
    }
}
