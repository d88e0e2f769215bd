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

pub mod assess;
pub mod catalog;
pub mod profiles;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::audit_archive::{Line, Source};
use crate::keys::{MediaKey, MediaPublicKey};
use meshguard_tlog::merkle::leaf_hash;
use meshguard_tlog::note::{Checkpoint, Note, Vkey};

pub const FORMAT: &str = "meshguard-evidence/v1";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Export lines per request.
const PAGE: u64 = 10_000;

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

/// Exports the bundle of `opts.profile` for the period into `opts.out` (which must not exist).
pub fn export(opts: &ExportOptions<'_>) -> Result<Manifest> {
    let profile = profiles::find(opts.profile).map_err(anyhow::Error::msg)?;
    let (from, to) = (
        parse_time(opts.from, "--from")?,
        parse_time(opts.to, "--to")?,
    );
    if from >= to {
        bail!("--from {} is not before --to {}", opts.from, opts.to);
    }
    if opts.out.exists() {
        bail!(
            "{} exists; choose a new directory for the bundle (nothing was overwritten)",
            opts.out.display()
        );
    }
    let staging = staging_dir(opts.out)?;
    match export_into(opts, profile, from, to, &staging) {
        Ok(m) => {
            std::fs::rename(&staging, opts.out)
                .with_context(|| format!("cannot move the bundle to {}", opts.out.display()))?;
            meshguard_common::fsx::sync_dir(opts.out.parent().unwrap_or(Path::new(".")))?;
            Ok(m)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// (seq, id) of an entry.
type Entry = (u64, String);
/// The first and last entry of a run, how many of its entries are in the period, and the last
/// configuration entry before the run (the settings in force when it began), if any.
type Run = (Entry, Entry, u64, BTreeMap<String, Line>);

/// The period's entries, streamed from the gateway's export into `path`: from the first entry
/// in the period to the last (those between included, whatever their time: the run must be
/// contiguous to be proven). Returns (first, last) as (seq, id), and how many are in the period.
fn fetch_run(
    src: &Source,
    client: &reqwest::blocking::Client,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    path: &Path,
) -> Result<Option<Run>> {
    use std::io::Write as _;
    std::fs::create_dir_all(path.parent().expect("a file in the bundle"))?;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let (mut first, mut last): (Option<Entry>, Option<Entry>) = (None, None);
    // The last configuration entry of each source before the run; the caller keeps the log's
    // own (an ingested sidecar's entry is not the gateway's configuration).
    let mut configuration: BTreeMap<String, Line> = BTreeMap::new();
    let (mut written, mut kept_end, mut in_period) = (0u64, 0u64, 0u64);
    let mut after = 0u64;
    loop {
        let text = src
            .get(
                client,
                reqwest::Method::GET,
                &format!("/admin/audit/export?after={after}&limit={PAGE}"),
            )?
            .text()?;
        let mut n = 0;
        for raw in text.lines().filter(|l| !l.is_empty()) {
            n += 1;
            let line: Line = serde_json::from_str(raw).context("an export line is not JSON")?;
            after = line.seq;
            let inside = line.entry["timestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t.to_utc() >= from && t.to_utc() < to);
            if !inside && first.is_none() {
                if line.entry["event"] == "configuration" {
                    configuration.insert(line.source.clone(), line);
                }
                continue;
            }
            out.write_all(raw.as_bytes())?;
            out.write_all(b"\n")?;
            written += raw.len() as u64 + 1;
            if inside {
                in_period += 1;
                let id = line.entry["id"].as_str().unwrap_or_default().to_owned();
                if first.is_none() {
                    first = Some((line.seq, id.clone()));
                }
                last = Some((line.seq, id));
                kept_end = written;
            }
        }
        if n == 0 {
            break;
        }
    }
    // Entries after the period's last are cut off.
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.set_len(kept_end)?;
    file.sync_all()?;
    Ok(first
        .zip(last)
        .map(|(f, l)| (f, l, in_period, configuration)))
}

fn export_into(
    opts: &ExportOptions<'_>,
    profile: &'static profiles::Profile,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    staging: &Path,
) -> Result<Manifest> {
    let src = opts.source;
    let client = src.client()?;
    let get_json = |path: &str| -> Result<Value> {
        src.get(&client, reqwest::Method::GET, path)?
            .json()
            .with_context(|| format!("{path} did not answer JSON"))
    };
    let entries_path = staging.join("audit/entries.jsonl");
    let Some(((first_seq, first_id), (last_seq, last_id), in_period, mut configurations)) =
        fetch_run(src, &client, from, to, &entries_path)?
    else {
        bail!(
            "the log holds no audit entry from {} to {}; nothing to export",
            opts.from,
            opts.to
        );
    };

    // A checkpoint that covers the run: the latest one enough witnesses cosigned, if the site
    // has witnesses; else a fresh one.
    let fresh = src
        .get(&client, reqwest::Method::POST, "/admin/audit/checkpoint")?
        .json::<Value>()?;
    let origin = fresh["origin"].as_str().unwrap_or_default().to_owned();
    let log_vkey = fresh["vkey"].as_str().unwrap_or_default().to_owned();
    let cos = get_json("/admin/audit/cosignatures")?;
    let configured = cos["witnesses"]["configured"]
        .as_array()
        .map_or(0, Vec::len);
    let witnessed = cos["witnesses"]["latestWitnessedSize"].as_u64();
    let size = match witnessed {
        Some(s) if s >= last_seq => s,
        _ if configured > 0 && !opts.allow_unwitnessed => bail!(
            "no checkpoint that covers entry {last_seq} (the period's last) is cosigned by a quorum of the site's witnesses yet: carry `GET /admin/audit/consistency?format=tlog-witness` to them (docs/witness.md), hand their cosignatures to the gateway, and export again (or pass --allow-unwitnessed)"
        ),
        _ => {
            Checkpoint::parse(
                Note::parse(fresh["checkpoint"].as_str().unwrap_or_default())
                    .context("the gateway's checkpoint is not a signed note")?
                    .text,
            )?
            .size
        }
    };
    let proof_of = |id: &str| -> Result<(Inclusion, String)> {
        let text = src
            .get(
                &client,
                reqwest::Method::GET,
                &format!("/admin/audit/proof?id={id}&size={size}"),
            )?
            .text()?;
        parse_tlog_proof(&text)
    };
    let (first_proof, note) = proof_of(&first_id)?;
    let (last_proof, _) = proof_of(&last_id)?;
    let configuration = configurations.remove(&origin);
    let configuration_before = match &configuration {
        Some(line) => {
            let id = line.entry["id"].as_str().unwrap_or_default();
            let (proof, _) = proof_of(id)?;
            Some(json!({"line": line, "proof": proof}))
        }
        None => None,
    };
    let mut cosigned_note = note;
    let mut witnesses = Vec::new();
    for c in cos["cosignatures"].as_array().into_iter().flatten() {
        if c["size"].as_u64() == Some(size) {
            let line = c["line"].as_str().unwrap_or_default();
            cosigned_note.push_str(line.trim_end());
            cosigned_note.push('\n');
            witnesses.push(c["witness"].as_str().unwrap_or_default().to_owned());
        }
    }

    // The other files, small enough to hold; the entries are on disk already.
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert("audit/checkpoint.note".into(), cosigned_note.into_bytes());
    let proof = RangeProof {
        size,
        first: first_proof,
        last: last_proof,
    };
    files.insert("audit/range-proof.json".into(), pretty(&proof)?);
    if let Some(c) = &configuration_before {
        files.insert(assess::CONFIGURATION_BEFORE.into(), pretty(c)?);
    }
    let changes = all_changes(&get_json)?;
    files.insert(
        "changes.json".into(),
        pretty(&in_window(&changes, "changes", from, to))?,
    );
    files.insert(
        "policies/versions.json".into(),
        pretty(&active_in(&get_json("/admin/policies/versions")?, from, to))?,
    );
    files.insert(
        "alerts/undelivered.json".into(),
        pretty(&get_json("/admin/alerts/undelivered")?)?,
    );
    let stamp =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    files.insert(
        "alerts/deliveries.json".into(),
        // Up to now: an alert for a denial late in the period is delivered after it ends.
        pretty(&get_json(&format!(
            "/admin/alerts/deliveries?from={}&to={}&limit=100000",
            stamp(from),
            stamp(chrono::Utc::now() + chrono::Duration::seconds(1))
        ))?)?,
    );
    let license = match src.get(&client, reqwest::Method::GET, "/admin/license") {
        Ok(r) => r.json::<Value>()?,
        Err(e) => json!({"licensing": "unavailable", "why": e.to_string()}),
    };
    files.insert("license.json".into(), pretty(&license)?);
    files.insert("gateway.json".into(), pretty(&get_json("/admin/info")?)?);
    if let Some(t) = opts.transcript {
        let sig = PathBuf::from(format!("{}.minisig", t.display()));
        files.insert(
            "install/transcript.json".into(),
            std::fs::read(t).with_context(|| format!("cannot read {}", t.display()))?,
        );
        files.insert(
            "install/transcript.json.minisig".into(),
            std::fs::read(&sig).with_context(|| {
                format!("cannot read {}: the transcript's signature", sig.display())
            })?,
        );
    }
    let mut digests: BTreeMap<String, (String, u64)> = BTreeMap::new();
    digests.insert(
        "audit/entries.jsonl".into(),
        crate::fsx::sha256_file(&entries_path)?,
    );
    for (path, bytes) in &files {
        digests.insert(
            path.clone(),
            (hex::encode(Sha256::digest(bytes)), bytes.len() as u64),
        );
    }
    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let held: Vec<String> = digests.keys().cloned().collect();
    let mut facts = assess::Facts::new(&origin, profile);
    // The settings in force when the run began come first: every entry is judged under them.
    if let Some(line) = &configuration {
        facts.before(line.seq, &line.entry);
    }
    let mut leaves = Vec::new();
    {
        use std::io::BufRead as _;
        let f = std::fs::File::open(&entries_path)?;
        for raw in std::io::BufReader::with_capacity(1 << 20, f).lines() {
            let line: Line = serde_json::from_str(&raw?)?;
            let body = serde_json::to_string(&line.entry)?;
            leaves.push(leaf_hash(body.as_bytes()));
            facts.entry(line.seq, &line.source, &body, &line.entry);
        }
    }
    let note_text = String::from_utf8_lossy(&files["audit/checkpoint.note"]).into_owned();
    let signed = Note::parse(&note_text)
        .ok()
        .and_then(|n| Checkpoint::parse(n.text).ok());
    let proven = signed.as_ref().is_some_and(|c| {
        range_root(c.size, &proof.first, &proof.last, &leaves).is_ok_and(|r| r == c.root)
    });
    facts.finish(assess::Inputs {
        changes: serde_json::from_slice(&files["changes.json"])?,
        deliveries: serde_json::from_slice(&files["alerts/deliveries.json"])?,
        versions: serde_json::from_slice(&files["policies/versions.json"])?,
        checkpoint: signed.map(|c| (c.size, B64.encode(c.root))),
        checkpoint_note: note_text,
        proven,
        transcript: files
            .get("install/transcript.json")
            .and_then(|b| serde_json::from_slice(b).ok()),
    });
    let controls = assess::control_mapping(profile, &held, &facts);
    let controls_bytes = pretty(&controls)?;
    digests.insert(
        "controls.json".into(),
        (
            hex::encode(Sha256::digest(&controls_bytes)),
            controls_bytes.len() as u64,
        ),
    );
    files.insert("controls.json".into(), controls_bytes);
    let oscal = assessment_results(
        profile,
        opts.from,
        opts.to,
        &created_at,
        &controls,
        &digests,
    );
    let oscal_bytes = pretty(&oscal)?;
    digests.insert(
        "oscal/assessment-results.json".into(),
        (
            hex::encode(Sha256::digest(&oscal_bytes)),
            oscal_bytes.len() as u64,
        ),
    );
    files.insert("oscal/assessment-results.json".into(), oscal_bytes);
    if let Some(poam) = poam(profile, &oscal, &origin, &created_at) {
        let bytes = pretty(&poam)?;
        digests.insert(
            "oscal/poam.json".into(),
            (hex::encode(Sha256::digest(&bytes)), bytes.len() as u64),
        );
        files.insert("oscal/poam.json".into(), bytes);
    }

    for (path, bytes) in &files {
        crate::fsx::write_atomic(&staging.join(path), bytes)?;
    }
    let mut listed = Vec::new();
    for (path, (sha, size)) in &digests {
        listed.push(FileEntry {
            path: path.clone(),
            sha256: sha.clone(),
            size: *size,
        });
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        profile: profile.id.into(),
        from: opts.from.into(),
        to: opts.to.into(),
        created_at,
        origin,
        log_vkey,
        checkpoint_size: size,
        witnesses,
        first_seq,
        last_seq,
        in_period,
        files: listed,
    };
    let bytes = pretty(&manifest)?;
    let sig = opts.key.sign(
        &bytes,
        &format!(
            "meshguard evidence {} {} {}",
            profile.id, opts.from, opts.to
        ),
    )?;
    crate::fsx::write_atomic(&staging.join("MANIFEST.json"), &bytes)?;
    crate::fsx::write_atomic(&staging.join("MANIFEST.json.minisig"), sig.as_bytes())?;
    // SHA256SUMS lists every file, the manifest too, and is signed itself: the stock-tool check
    // (`minisign -V` of it, then `sha256sum -c`, then no file it does not list) detects an
    // altered file even with SHA256SUMS rewritten, and an added one.
    let mut sums = String::new();
    let mut all: Vec<(&str, &str)> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.sha256.as_str()))
        .collect();
    let manifest_sha = hex::encode(Sha256::digest(&bytes));
    all.push(("MANIFEST.json", &manifest_sha));
    all.sort();
    for (path, sha) in all {
        sums.push_str(&format!("{sha}  {path}\n"));
    }
    let sums_sig = opts.key.sign(
        sums.as_bytes(),
        &format!(
            "meshguard evidence SHA256SUMS {} {} {}",
            profile.id, opts.from, opts.to
        ),
    )?;
    crate::fsx::write_atomic(&staging.join("SHA256SUMS"), sums.as_bytes())?;
    crate::fsx::write_atomic(&staging.join("SHA256SUMS.minisig"), sums_sig.as_bytes())?;
    // Never hand out a bundle that does not verify.
    let check = verify(
        staging,
        &VerifyOptions {
            pubkey: &opts.key.public(),
            log_vkey: None,
            witnesses: &[],
            quorum: 0,
            transcript_pubkey: None,
            list_denials: false,
            // What the export wrote is checked here; the witnesses' cosignatures and the
            // transcript's signature are the auditor's to check with the site's keys.
            accept_unchecked: &[Unchecked::Witness, Unchecked::Transcript],
        },
    )?;
    if !check.ok {
        bail!(
            "the bundle does not verify; nothing was written:\n{}",
            check.text()
        );
    }
    Ok(manifest)
}

/// Every change record, page by page (the API answers at most 1,000, oldest first): a period's
/// changes are never missed because the log holds more than one page before it.
fn all_changes(get_json: &dyn Fn(&str) -> Result<Value>) -> Result<Value> {
    let mut all = Vec::new();
    let mut after = 0i64;
    loop {
        let page = get_json(&format!("/admin/changes?after={after}&limit=1000"))?;
        let items = page["changes"].as_array().cloned().unwrap_or_default();
        let Some(last) = items.last().and_then(|c| c["seq"].as_i64()) else {
            break;
        };
        if last <= after {
            bail!("/admin/changes did not move past seq {after}: the gateway's paging is broken");
        }
        after = last;
        all.extend(items);
    }
    Ok(json!({ "changes": all }))
}

fn staging_dir(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .with_context(|| format!("{} has no directory name", out.display()))?;
    let mut staged = name.to_owned();
    staged.push(format!(".partial-{}", std::process::id()));
    let staging = out.with_file_name(staged);
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    Ok(staging)
}

fn pretty<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    let mut b = serde_json::to_vec_pretty(v)?;
    b.push(b'\n');
    Ok(b)
}

/// The records of `list[key]` whose `timestamp` falls in the period.
fn in_window(
    doc: &Value,
    key: &str,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Value {
    let kept: Vec<&Value> = doc[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["timestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t.to_utc() >= from && t.to_utc() < to)
        })
        .collect();
    json!({ key: kept })
}

/// The policy snapshots active at some time in the period: the last one activated before it
/// (in force when it began) and those activated during it.
fn active_in(
    doc: &Value,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Value {
    let at = |r: &Value| {
        r["activatedAt"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.to_utc())
    };
    let all: Vec<&Value> = doc["versions"].as_array().into_iter().flatten().collect();
    let before = all
        .iter()
        .filter(|r| at(r).is_some_and(|t| t < from))
        .max_by_key(|r| at(r));
    let kept: Vec<&Value> = before
        .into_iter()
        .copied()
        .chain(
            all.iter()
                .copied()
                .filter(|r| at(r).is_some_and(|t| t >= from && t < to)),
        )
        .collect();
    json!({"active": doc["active"], "versions": kept})
}

/// Parses a `c2sp.org/tlog-proof@v1` text: the proof and the checkpoint note after it.
fn parse_tlog_proof(text: &str) -> Result<(Inclusion, String)> {
    let mut rest = text
        .strip_prefix("c2sp.org/tlog-proof@v1\n")
        .context("the gateway's proof is not a c2sp.org/tlog-proof@v1")?;
    let (index_line, r) = rest.split_once('\n').context("a truncated proof")?;
    let index: u64 = index_line
        .strip_prefix("index ")
        .and_then(|i| i.parse().ok())
        .context("the proof has no index line")?;
    rest = r;
    let mut hashes = Vec::new();
    loop {
        let (line, r) = rest.split_once('\n').context("a truncated proof")?;
        rest = r;
        if line.is_empty() {
            break;
        }
        hashes.push(line.to_owned());
    }
    Ok((Inclusion { index, hashes }, rest.to_owned()))
}

/// A UUID (version 5 layout) derived from `parts`: the same bundle gives the same document.
fn uuid(parts: &[&str]) -> String {
    let mut seed = Vec::new();
    for p in parts {
        seed.extend_from_slice(p.as_bytes());
        seed.push(0);
    }
    crate::sbom::uuid_from(&seed)
}

fn rfc3339(s: &str) -> String {
    parse_time(s, "time")
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|_| s.to_owned())
}

/// The control mapping as NIST OSCAL assessment results (OSCAL 1.1): one observation per
/// artifact, pointing at its files with their digests, and one finding per control.
fn assessment_results(
    profile: &profiles::Profile,
    from: &str,
    to: &str,
    created_at: &str,
    controls: &Value,
    digests: &BTreeMap<String, (String, u64)>,
) -> Value {
    let seed = [profile.id, from, to, created_at];
    let mut observations = Vec::new();
    let mut artifact_obs: BTreeMap<&str, String> = BTreeMap::new();
    for control in profile.controls {
        for a in control.evidence {
            if artifact_obs.contains_key(a.name()) {
                continue;
            }
            let id = uuid(&[&seed[..], &["observation", a.name()]].concat());
            let evidence: Vec<Value> = a
                .files()
                .iter()
                .filter_map(|f| {
                    let (sha, _) = digests.get(*f)?;
                    Some(json!({
                        "href": f,
                        "description": format!("{} (sha256 {sha})", a.name()),
                    }))
                })
                .collect();
            let mut obs = json!({
                "uuid": id,
                "title": a.name(),
                "description": format!("The bundle's {}.", a.name()),
                "methods": ["EXAMINE"],
                "collected": created_at,
            });
            if !evidence.is_empty() {
                obs["relevant-evidence"] = json!(evidence);
            }
            observations.push(obs);
            artifact_obs.insert(a.name(), id);
        }
    }
    let findings: Vec<Value> = controls["controls"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(profile.controls)
        .map(|(c, control)| {
            let related: Vec<Value> = control
                .evidence
                .iter()
                .map(|a| json!({"observation-uuid": artifact_obs[a.name()]}))
                .collect();
            let findings: String = c["requirements"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    format!(
                        " {} ({}): {}.",
                        r["requirement"].as_str().unwrap_or_default(),
                        r["state"].as_str().unwrap_or_default(),
                        r["finding"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            let state = c["state"].as_str().unwrap_or_default();
            // OSCAL's objective status is satisfied or not; a control that could not be
            // assessed is not satisfied, with the reason `other` and a remark saying so.
            let status = match state {
                "satisfied" => json!({"state": "satisfied", "reason": "pass"}),
                "not-assessed" => json!({
                    "state": "not-satisfied",
                    "reason": "other",
                    "remarks": format!("Not assessed:{findings}"),
                }),
                _ => json!({"state": "not-satisfied", "reason": "fail"}),
            };
            json!({
                "uuid": uuid(&[&seed[..], &["finding", control.id]].concat()),
                "title": format!("{} {}", control.label, control.title),
                "description": format!(
                    "{} {}: evidenced by {}.{findings}",
                    control.label,
                    control.title,
                    control.evidence.iter().map(|a| a.name()).collect::<Vec<_>>().join(", "),
                ),
                "target": {
                    "type": "objective-id",
                    "target-id": format!("{}_obj", control.id),
                    "status": status,
                },
                "related-observations": related,
            })
        })
        .collect();
    let include: Vec<Value> = profile
        .controls
        .iter()
        .map(|c| json!({"control-id": c.id}))
        .collect();
    json!({"assessment-results": {
        "uuid": uuid(&[&seed[..], &["assessment-results"]].concat()),
        "metadata": {
            "title": format!("MeshGuard evidence: {} from {from} to {to}", profile.title),
            "last-modified": created_at,
            "version": FORMAT,
            "oscal-version": "1.1.2",
        },
        // The assessment plan is the bundle's control mapping, named in the back matter so the
        // reference resolves in this document.
        "import-ap": {"href": format!("#{}", uuid(&[&seed[..], &["assessment-plan"]].concat()))},
        "results": [{
            "uuid": uuid(&[&seed[..], &["result"]].concat()),
            "title": format!("{} evidence", profile.title),
            "description": "Evidence exported by meshguard-bundle evidence export; verify it offline with meshguard-bundle evidence verify.",
            "start": rfc3339(from),
            "end": rfc3339(to),
            "reviewed-controls": {"control-selections": [{"include-controls": include}]},
            "observations": observations,
            "findings": findings,
        }],
        "back-matter": {"resources": [{
            "uuid": uuid(&[&seed[..], &["assessment-plan"]].concat()),
            "title": "The assessment plan: the profile's control mapping in this bundle",
            "rlinks": [{"href": "../controls.json", "media-type": "application/json"}],
        }]},
    }})
}

/// Profiles whose regime tracks gaps in a plan of action and milestones (NIST SP 800-53).
const POAM_PROFILES: &[&str] = &["fedramp-moderate", "airgapped-defense"];

/// For a NIST profile with gaps: an OSCAL plan of action and milestones with one item per
/// control not satisfied, each linked to its finding (the same UUID as in the assessment
/// results). None when there is nothing to plan (OSCAL requires at least one item).
fn poam(profile: &profiles::Profile, ar: &Value, origin: &str, created_at: &str) -> Option<Value> {
    if !POAM_PROFILES.contains(&profile.id) {
        return None;
    }
    let gaps: Vec<&Value> = ar["assessment-results"]["results"][0]["findings"]
        .as_array()?
        .iter()
        .filter(|f| f["target"]["status"]["state"] == "not-satisfied")
        .collect();
    if gaps.is_empty() {
        return None;
    }
    let items: Vec<Value> = gaps
        .iter()
        .map(|f| {
            let finding = f["uuid"].as_str().unwrap_or_default();
            json!({
                "uuid": uuid(&["poam-item", finding]),
                "title": format!("Remediate: {}", f["title"].as_str().unwrap_or_default()),
                "description": f["description"],
                "related-findings": [{"finding-uuid": finding}],
            })
        })
        .collect();
    let findings: Vec<Value> = gaps.iter().map(|f| (*f).clone()).collect();
    // The observations those findings cite, so every reference in the plan resolves in it.
    let cited: Vec<&str> = findings
        .iter()
        .flat_map(|f| f["related-observations"].as_array().into_iter().flatten())
        .filter_map(|o| o["observation-uuid"].as_str())
        .collect();
    let observations: Vec<Value> = ar["assessment-results"]["results"][0]["observations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["uuid"].as_str().is_some_and(|u| cited.contains(&u)))
        .cloned()
        .collect();
    Some(json!({"plan-of-action-and-milestones": {
        "uuid": uuid(&["poam", ar["assessment-results"]["uuid"].as_str().unwrap_or_default()]),
        "metadata": {
            "title": format!("MeshGuard plan of action and milestones: {}", profile.title),
            "last-modified": created_at,
            "version": FORMAT,
            "oscal-version": "1.1.2",
        },
        "system-id": {"identifier-type": "https://meshguard.dev/ns/audit-origin", "id": origin},
        "observations": observations,
        "findings": findings,
        "poam-items": items,
    }}))
}

/// The root of the tree of `size` leaves, from the leaves `first.index..=last.index` and the
/// two inclusion proofs (base64 as the gateway serves them): see
/// [`meshguard_tlog::merkle::run_root`].
pub fn range_root(
    size: u64,
    first: &Inclusion,
    last: &Inclusion,
    leaves: &[[u8; 32]],
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
    meshguard_tlog::merkle::run_root(
        size,
        (first.index, &decode(first)?),
        (last.index, &decode(last)?),
        leaves,
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

/// Checks `audit/configuration-before.json`: a configuration entry of the bundle's log, its
/// chain hash right, before the run, and proven in the verified checkpoint. Its (seq, entry).
/// `audit/configuration-before.json`.
#[derive(Deserialize)]
struct ConfigurationBefore {
    line: Line,
    proof: Inclusion,
}

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
    match range_root(c.size, &b.proof, &b.proof, &[leaf_hash(body.as_bytes())]) {
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
    let mut checks = Vec::new();
    let mut add = |check: &str, r: std::result::Result<String, String>| {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        checks.push(Check {
            check: check.to_owned(),
            ok,
            ran: true,
            detail,
        });
        ok
    };
    // Checks that cannot run for want of a key: met only if the caller accepted each by name.
    let mut unrun: Vec<Check> = Vec::new();
    let not_run = |check: &str, what: Unchecked, why: String, flag: &str| Check {
        check: check.to_owned(),
        ok: opts.accept_unchecked.contains(&what),
        ran: false,
        detail: if opts.accept_unchecked.contains(&what) {
            format!("not checked: {why} (accepted with {flag})")
        } else {
            format!("not checked: {why}; give the key, or accept this explicitly with {flag}")
        },
    };
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
    let signed = add(
        "manifest signature",
        opts.pubkey
            .verify(&bytes, &sig, "MANIFEST.json")
            .map(|c| format!("signed by key {} ({c})", opts.pubkey.key_id()))
            .map_err(|e| e.to_string()),
    );
    let manifest: Manifest = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            add(
                "manifest",
                Err(format!("MANIFEST.json is not an evidence manifest: {e}")),
            );
            out.checks = checks;
            return Ok(out);
        }
    };
    add(
        "format",
        if manifest.format == FORMAT {
            Ok(FORMAT.to_owned())
        } else {
            Err(format!("format {:?}, expected {FORMAT}", manifest.format))
        },
    );

    // Every file listed, with its digest; nothing else in the bundle.
    let mut bad = Vec::new();
    for f in &manifest.files {
        let Some(rel) = crate::fsx::safe_relative(&f.path) else {
            bad.push(format!("{:?} is not a plain relative path", f.path));
            continue;
        };
        // Hashed as it is read: the entries of a long period run to gigabytes.
        match crate::fsx::sha256_file(&dir.join(rel)) {
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
    add(
        "file digests",
        if bad.is_empty() {
            Ok(format!(
                "{} files match the signed manifest",
                manifest.files.len()
            ))
        } else {
            Err(bad.join("; "))
        },
    );

    add(
        "SHA256SUMS",
        sums_match(dir, opts.pubkey, &manifest, &bytes),
    );

    let read = |p: &str| std::fs::read(dir.join(p)).unwrap_or_default();
    // Entries: each chain hash, and the leaves of the run.
    let entries: Box<dyn std::io::BufRead> =
        match std::fs::File::open(dir.join("audit/entries.jsonl")) {
            Ok(f) => Box::new(std::io::BufReader::with_capacity(1 << 20, f)),
            Err(_) => Box::new(std::io::empty()),
        };
    let mut leaves = Vec::new();
    let mut heads: BTreeMap<String, String> = BTreeMap::new();
    let mut chain_problem = None;
    let mut expected = manifest.first_seq;
    let mut facts = profiles::find(&manifest.profile)
        .map(|p| assess::Facts::new(&manifest.origin, p))
        .unwrap_or_default();
    // The settings in force when the run began come first (as at export); whether that entry
    // is proven in the checkpoint is its own check below, which fails the bundle if not.
    let before_bytes = listed
        .contains(&assess::CONFIGURATION_BEFORE)
        .then(|| read(assess::CONFIGURATION_BEFORE));
    if let Some(Ok(b)) = before_bytes
        .as_deref()
        .map(|b| serde_json::from_slice::<ConfigurationBefore>(b))
    {
        facts.before(b.line.seq, &b.line.entry);
    }
    for raw in std::io::BufRead::lines(entries) {
        let Ok(raw) = raw else {
            chain_problem.get_or_insert("audit/entries.jsonl is not UTF-8 text".to_owned());
            break;
        };
        let line: Line = match serde_json::from_str(&raw) {
            Ok(l) => l,
            Err(e) => {
                chain_problem.get_or_insert(format!("a line is not an export line: {e}"));
                break;
            }
        };
        if line.seq != expected {
            chain_problem.get_or_insert(format!(
                "entry {expected} is missing (the next line is entry {})",
                line.seq
            ));
        }
        expected = line.seq + 1;
        let body = serde_json::to_string(&line.entry).unwrap_or_default();
        if let Some(head) = heads.get(&line.source)
            && *head != line.prev_hash
        {
            chain_problem.get_or_insert(format!(
                "entry {} does not follow the previous entry of {}",
                line.seq, line.source
            ));
        }
        let mut h = Sha256::new();
        h.update(hex::decode(&line.prev_hash).unwrap_or_default());
        h.update(body.as_bytes());
        if hex::encode(h.finalize()) != line.hash {
            chain_problem.get_or_insert(format!(
                "entry {}: its hash does not match its content: the entry was altered",
                line.seq
            ));
        }
        heads.insert(line.source.clone(), line.hash.clone());
        leaves.push(leaf_hash(body.as_bytes()));
        facts.entry(line.seq, &line.source, &body, &line.entry);
        let e = &line.entry;
        let scan = facts.scan_ephi;
        // Under a profile that keeps ePHI out, the transcript does not repeat any that got in.
        let text = |k: &str| {
            let v = e[k].as_str().unwrap_or("-");
            if scan {
                meshguard_common::ephi::redact(v).into_owned()
            } else {
                v.to_owned()
            }
        };
        match e["decision"].as_str() {
            Some("deny") => {
                out.decisions.denied += 1;
                if opts.list_denials {
                    out.decisions.denials.push(Denial {
                        seq: line.seq,
                        id: text("id"),
                        timestamp: text("timestamp"),
                        event: text("event"),
                        agent: e["agentName"]
                            .as_str()
                            .or(e["agentId"].as_str())
                            .unwrap_or("-")
                            .to_owned(),
                        action: text("action"),
                        resource: text("resource"),
                        policy: e["policyName"]
                            .as_str()
                            .or(e["policy"].as_str())
                            .unwrap_or("-")
                            .to_owned(),
                        rule: text("rule"),
                        reason: text("reason"),
                    });
                }
            }
            Some("allow") => out.decisions.allowed += 1,
            _ => {}
        }
    }
    if expected != manifest.last_seq + 1 && chain_problem.is_none() {
        chain_problem = Some(format!(
            "the bundle ends at entry {}, the manifest says {}",
            expected - 1,
            manifest.last_seq
        ));
    }
    add(
        "audit entries",
        match chain_problem {
            None => Ok(format!(
                "{} entries {}..={}, every hash chain intact",
                leaves.len(),
                manifest.first_seq,
                manifest.last_seq
            )),
            Some(p) => Err(p),
        },
    );

    // The checkpoint: signed by the log, cosigned by the witnesses.
    let note_text = String::from_utf8(read("audit/checkpoint.note")).unwrap_or_default();
    let vkey_text = opts.log_vkey.unwrap_or(&manifest.log_vkey);
    let checkpoint = (|| -> std::result::Result<Checkpoint, String> {
        let vkey = Vkey::parse(vkey_text).map_err(|e| format!("the log key: {e}"))?;
        let note = Note::parse(&note_text).map_err(|e| e.to_string())?;
        note.verify(&vkey).map_err(|e| e.to_string())?;
        let c = Checkpoint::parse(note.text).map_err(|e| e.to_string())?;
        if c.size != manifest.checkpoint_size || c.origin != manifest.origin {
            return Err(format!(
                "the checkpoint is of {} at {}, the manifest says {} at {}",
                c.origin, c.size, manifest.origin, manifest.checkpoint_size
            ));
        }
        Ok(c)
    })();
    add(
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
        match meshguard_tlog::note::cosigned_by(&note_text, &vkey) {
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
        unrun.push(not_run(
            "witness cosignatures",
            Unchecked::Witness,
            format!("no --witness key given ({named})"),
            "--accept-unwitnessed",
        ));
    } else {
        add(
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

    // The run of entries in the checkpoint.
    let proof: std::result::Result<RangeProof, String> =
        serde_json::from_slice(&read("audit/range-proof.json")).map_err(|e| e.to_string());
    let proven = add(
        "inclusion",
        match (&checkpoint, proof) {
            (Ok(c), Ok(p)) => {
                if p.first.index + 1 != manifest.first_seq
                    || p.last.index + 1 != manifest.last_seq
                    || p.size != c.size
                {
                    Err(
                        "the range proof is not for the manifest's entries and checkpoint"
                            .to_owned(),
                    )
                } else {
                    match range_root(p.size, &p.first, &p.last, &leaves) {
                        Ok(root) if root == c.root => Ok(format!(
                            "entries {}..={} rebuild the root of the signed checkpoint of {}",
                            manifest.first_seq, manifest.last_seq, c.size
                        )),
                        Ok(_) => Err("the entries do not rebuild the signed root: an entry was altered, added or removed".to_owned()),
                        Err(e) => Err(e),
                    }
                }
            }
            (Err(_), _) => Err("no verified checkpoint to prove the entries in".to_owned()),
            (_, Err(e)) => Err(format!("audit/range-proof.json: {e}")),
        },
    );

    // The settings in force when the period began: an entry of the same log, before the run,
    // in the same checkpoint.
    if let Some(bytes) = &before_bytes {
        let r = configuration_before(bytes, checkpoint.as_ref().ok(), &manifest);
        add(
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
        changes: serde_json::from_slice(&read("changes.json")).unwrap_or(Value::Null),
        deliveries: serde_json::from_slice(&read("alerts/deliveries.json")).unwrap_or(Value::Null),
        versions: serde_json::from_slice(&read("policies/versions.json")).unwrap_or(Value::Null),
        checkpoint: checkpoint
            .as_ref()
            .ok()
            .map(|c| (c.size, B64.encode(c.root))),
        checkpoint_note: note_text.clone(),
        proven,
        transcript: listed
            .contains(&"install/transcript.json")
            .then(|| serde_json::from_slice(&read("install/transcript.json")).ok())
            .flatten(),
    });
    let controls: Value = serde_json::from_slice(&read("controls.json")).unwrap_or(Value::Null);
    let oscal: Value =
        serde_json::from_slice(&read("oscal/assessment-results.json")).unwrap_or(Value::Null);
    let mapping = match profiles::find(&manifest.profile) {
        Err(e) => Err(e),
        Ok(profile) => {
            let held: Vec<String> = listed.iter().map(|f| (*f).to_owned()).collect();
            let expected = assess::control_mapping(profile, &held, &facts);
            let mut problems = Vec::new();
            if controls != expected {
                problems.push(format!(
                    "controls.json does not say what the bundle shows for {}",
                    manifest.profile
                ));
            }
            let findings = oscal["assessment-results"]["results"][0]["findings"].as_array();
            for c in expected["controls"].as_array().into_iter().flatten() {
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
                out.controls.push(ControlStatus {
                    id: id.to_owned(),
                    label: c["label"].as_str().unwrap_or_default().to_owned(),
                    satisfied,
                    state: control_state,
                    why: why.join("; "),
                });
            }
            if problems.is_empty() {
                let met = out.controls.iter().filter(|c| c.satisfied).count();
                Ok(format!(
                    "{} controls of {}: {met} satisfied, {} not; controls.json and the OSCAL findings say the same",
                    out.controls.len(),
                    manifest.profile,
                    out.controls.len() - met
                ))
            } else {
                Err(problems.join("; "))
            }
        }
    };
    add("control mapping", mapping);
    if POAM_PROFILES.contains(&manifest.profile.as_str()) {
        let gaps: Vec<&ControlStatus> = out.controls.iter().filter(|c| !c.satisfied).collect();
        let poam: Value = serde_json::from_slice(&read("oscal/poam.json")).unwrap_or(Value::Null);
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
        add(
            "POA&M",
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
            },
        );
    }
    if facts.scan_ephi {
        add(
            "ePHI",
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
            },
        );
    }

    if listed.contains(&"install/transcript.json") {
        let t = read("install/transcript.json");
        let s = String::from_utf8(read("install/transcript.json.minisig")).unwrap_or_default();
        match opts.transcript_pubkey {
            Some(k) => {
                add(
                    "installation transcript",
                    k.verify(&t, &s, "install/transcript.json")
                        .map(|c| format!("signed by the site key {} ({c})", k.key_id()))
                        .map_err(|e| e.to_string()),
                );
            }
            None => unrun.push(not_run(
                "installation transcript",
                Unchecked::Transcript,
                "the bundle holds a transcript and no --transcript-pubkey (the site's key) was given".to_owned(),
                "--accept-unsigned-transcript",
            )),
        }
    }
    let _ = signed;
    checks.extend(unrun);
    out.ok = checks.iter().all(|c| c.ok);
    out.manifest = Some(manifest);
    out.checks = checks;
    out.result = out.result();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
                    let got = range_root(size, &proof(a, &all), &proof(b, &all), run).unwrap();
                    assert_eq!(got, root, "size {size}, run {a}..={b}");
                    let mut bad = run.to_vec();
                    bad[0][0] ^= 1;
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
        assert!(range_root(8, &short, &proof(5, &all), &all[2..=5]).is_err());
        assert!(range_root(8, &proof(2, &all), &proof(5, &all), &all[2..=4]).is_err());
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
