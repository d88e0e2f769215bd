//! `evidence export`: reads the period's run of entries, its proofs and the gateway's records
//! from the admin API, and writes the signed bundle into a staging directory renamed into place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::entries::{ENTRIES, Scan, Scanned};
use super::verify::verify_scanned;
use super::{
    B64, ExportOptions, FORMAT, FileEntry, Inclusion, Manifest, RangeProof, Unchecked,
    VerifyOptions, assess, oscal, parse_time, pretty, profiles, range_root,
};
use crate::audit_archive::{Line, Source};
use meshguard_tlog::note::{Checkpoint, Note};

/// Export lines per request: the gateway streams a page as it reads it from its index, and the
/// export reads it as it comes (one line at a time, never a page), so a page costs no memory;
/// fewer pages are fewer pauses between them, when neither side works.
const PAGE: u64 = 100_000;

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

/// The run of entries written to the bundle: its first and last entry, how many of its entries
/// are in the period, the log's last configuration entry before it (the settings in force when
/// it began), if any, and what the one scan of its lines found.
struct Run {
    first: Entry,
    last: Entry,
    in_period: u64,
    configuration: Option<Line>,
    scanned: Scanned,
}

/// The period's entries, streamed from the gateway's export into `w`'s file: from the first
/// entry in the period to the last (those between included, whatever their time: the run must
/// be contiguous to be proven).
///
/// Each page is read as the gateway sends it, a line at a time: the gateway reads its next lines
/// while these are scanned (the socket's buffers between), and no page is held whole.
fn fetch_run(gw: &Gateway<'_>, mut w: RunWriter<'_>) -> Result<Option<Run>> {
    use std::io::BufRead as _;
    let mut after = 0u64;
    let mut buf = Vec::new();
    loop {
        let page = gw.src.get(
            &gw.client,
            reqwest::Method::GET,
            &format!("/admin/audit/export?after={after}&limit={PAGE}"),
        )?;
        let mut page = std::io::BufReader::with_capacity(1 << 18, page);
        let mut n = 0;
        loop {
            buf.clear();
            let read = page
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("the gateway's export broke off after entry {after}"))?;
            if read == 0 {
                break;
            }
            // A line as `str::lines` cuts it: without its "\n" or "\r\n".
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            let raw = std::str::from_utf8(line)
                .with_context(|| format!("the export line after entry {after} is not UTF-8"))?;
            n += 1;
            after = w.line(raw)?;
        }
        if n == 0 {
            break;
        }
    }
    w.finish()
}

/// Lines held in memory after the period's last entry so far, waiting to learn whether an
/// entry in the period follows them; past this they are read back from the file if one does.
const HELD: usize = 1024;

/// Writes the run as its lines come, each parsed once. Lines before the run are skipped (the
/// log's last configuration entry kept); from the run's first entry on, each line is written,
/// and joins the scan once an entry in the period follows it (or is it): the lines after the
/// period's last entry are cut off at the end.
struct RunWriter<'a> {
    origin: &'a str,
    profile: &'static profiles::Profile,
    period: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    configuration: Option<Line>,
    scan: Option<Scan>,
    first: Option<Entry>,
    last: Option<Entry>,
    in_period: u64,
    /// Bytes written, and the end of the last entry in the period.
    written: u64,
    kept_end: u64,
    /// The lines after `kept_end`, parsed; or, past `held_max` of them, none (read back).
    held: Vec<(String, Line)>,
    held_max: usize,
    spilled: bool,
}

impl<'a> RunWriter<'a> {
    fn create(
        path: &Path,
        origin: &'a str,
        profile: &'static profiles::Profile,
        period: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    ) -> Result<Self> {
        std::fs::create_dir_all(path.parent().expect("a file in the bundle"))?;
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(RunWriter {
            origin,
            profile,
            period,
            path: path.to_owned(),
            out: std::io::BufWriter::with_capacity(1 << 20, file),
            configuration: None,
            scan: None,
            first: None,
            last: None,
            in_period: 0,
            written: 0,
            kept_end: 0,
            held: Vec::new(),
            held_max: HELD,
            spilled: false,
        })
    }

    /// One line of the gateway's export, in order; its seq.
    fn line(&mut self, raw: &str) -> Result<u64> {
        use std::io::Write as _;
        let line: Line = serde_json::from_str(raw).context("an export line is not JSON")?;
        let seq = line.seq;
        let inside = self.in_period(&line);
        if self.scan.is_none() && !inside {
            self.keep_configuration(line);
            return Ok(seq);
        }
        if inside {
            self.scan_held()?;
        }
        self.out.write_all(raw.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.written += raw.len() as u64 + 1;
        if inside {
            self.scan_in_period(raw, &line);
        } else {
            self.hold(raw, line);
        }
        Ok(seq)
    }

    fn in_period(&self, line: &Line) -> bool {
        let (from, to) = self.period;
        line.entry["timestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t.to_utc() >= from && t.to_utc() < to)
    }

    /// Before the run: the log's own last configuration entry (an ingested sidecar's entry is
    /// not the gateway's configuration).
    fn keep_configuration(&mut self, line: Line) {
        if line.entry["event"] == "configuration" && line.source == self.origin {
            self.configuration = Some(line);
        }
    }

    /// An entry in the period: the scan starts with the run's first (after the settings in
    /// force when it began), and the run now ends here.
    fn scan_in_period(&mut self, raw: &str, line: &Line) {
        let scan = self.scan.get_or_insert_with(|| {
            let mut facts = assess::Facts::new(self.origin, self.profile);
            if let Some(c) = &self.configuration {
                facts.before(c.seq, &c.entry);
            }
            Scan::new(line.seq, facts, false)
        });
        scan.bytes(raw.as_bytes());
        scan.bytes(b"\n");
        scan.entry(line);
        self.in_period += 1;
        let id = line.entry["id"].as_str().unwrap_or_default().to_owned();
        self.first.get_or_insert_with(|| (line.seq, id.clone()));
        self.last = Some((line.seq, id));
        self.kept_end = self.written;
    }

    /// A line of the run outside the period, kept until an entry in the period follows.
    fn hold(&mut self, raw: &str, line: Line) {
        if self.spilled {
            return;
        }
        if self.held.len() < self.held_max {
            self.held.push((raw.to_owned(), line));
        } else {
            self.held.clear();
            self.spilled = true;
        }
    }

    /// The held lines join the scan: an entry in the period follows them.
    fn scan_held(&mut self) -> Result<()> {
        let Some(scan) = self.scan.as_mut() else {
            return Ok(());
        };
        if self.spilled {
            self.spilled = false;
            std::io::Write::flush(&mut self.out)?;
            return read_back(&self.path, (self.kept_end, self.written), scan);
        }
        for (raw, line) in self.held.drain(..) {
            scan.bytes(raw.as_bytes());
            scan.bytes(b"\n");
            scan.entry(&line);
        }
        Ok(())
    }

    /// Cuts off the entries after the period's last, and ends the scan.
    fn finish(self) -> Result<Option<Run>> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.set_len(self.kept_end)?;
        file.sync_all()?;
        let (Some(scan), Some(first), Some(last)) = (self.scan, self.first, self.last) else {
            return Ok(None);
        };
        let scanned = scan.finish(last.0, true);
        Ok(Some(Run {
            first,
            last,
            in_period: self.in_period,
            configuration: self.configuration,
            scanned,
        }))
    }
}

/// The lines of `path` from byte `start` to `end` into `scan`: held lines too many to keep in
/// memory, parsed a second time (only a long stretch out of the period inside the run is).
fn read_back(path: &Path, (start, end): (u64, u64), scan: &mut Scan) -> Result<()> {
    use std::io::{BufRead as _, Read as _, Seek as _};
    let mut f = std::fs::File::open(path)?;
    f.seek(std::io::SeekFrom::Start(start))?;
    for raw in std::io::BufReader::new(f.take(end - start)).lines() {
        let raw = raw?;
        let line: Line = serde_json::from_str(&raw).context("an export line is not JSON")?;
        scan.bytes(raw.as_bytes());
        scan.bytes(b"\n");
        scan.entry(&line);
    }
    Ok(())
}

/// The gateway's admin API, as the export reads it.
struct Gateway<'a> {
    src: &'a Source,
    client: reqwest::blocking::Client,
}

impl Gateway<'_> {
    fn get_json(&self, path: &str) -> Result<Value> {
        self.src
            .get(&self.client, reqwest::Method::GET, path)?
            .json()
            .with_context(|| format!("{path} did not answer JSON"))
    }

    /// The inclusion proof of entry `id` in the checkpoint of `size`, and that checkpoint.
    fn proof(&self, id: &str, size: u64) -> Result<(Inclusion, String)> {
        let text = self
            .src
            .get(
                &self.client,
                reqwest::Method::GET,
                &format!("/admin/audit/proof?id={id}&size={size}"),
            )?
            .text()?;
        parse_tlog_proof(&text)
    }
}

/// The checkpoint the run is proven in, with what the gateway said of its log and witnesses.
struct Covering {
    origin: String,
    log_vkey: String,
    /// `GET /admin/audit/cosignatures`.
    cosignatures: Value,
    size: u64,
}

/// What proves the run in the covering checkpoint.
struct Proofs {
    range: RangeProof,
    /// The checkpoint note with the cosignature lines of its size.
    cosigned_note: String,
    witnesses: Vec<String>,
    /// The log's last configuration entry before the run with its proof.
    configuration_before: Option<Value>,
}

/// A file's (hex SHA-256, size).
type Digests = BTreeMap<String, (String, u64)>;

/// Writes the bundle into `staging`: the run of entries, its proofs, the gateway's records, the
/// control mapping and OSCAL documents, then the signed manifest and `SHA256SUMS`, and checks
/// that what it wrote verifies.
fn export_into(
    opts: &ExportOptions<'_>,
    profile: &'static profiles::Profile,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    staging: &Path,
) -> Result<Manifest> {
    let gw = Gateway {
        src: opts.source,
        client: opts.source.client()?,
    };
    let (run, covering, proofs) = proven_run(&gw, opts, profile, (from, to), staging)?;
    let mut files = bundle_files(&gw, opts, &proofs, from, to)?;
    let mut digests = digests_of(&run.scanned, &files)?;
    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut scanned = run.scanned;
    finish_facts(&mut scanned, &proofs, &files)?;
    add_assessment(
        opts,
        profile,
        &covering.origin,
        &created_at,
        &scanned.facts,
        &mut files,
        &mut digests,
    )?;

    for (path, bytes) in &files {
        crate::fsx::write_atomic(&staging.join(path), bytes)?;
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        profile: profile.id.into(),
        from: opts.from.into(),
        to: opts.to.into(),
        created_at,
        origin: covering.origin,
        log_vkey: covering.log_vkey,
        checkpoint_size: covering.size,
        witnesses: proofs.witnesses,
        first_seq: run.first.0,
        last_seq: run.last.0,
        in_period: run.in_period,
        files: digests
            .iter()
            .map(|(path, (sha, size))| FileEntry {
                path: path.clone(),
                sha256: sha.clone(),
                size: *size,
            })
            .collect(),
    };
    write_signed_manifest(opts, profile, &manifest, staging)?;
    check_written(opts, staging, scanned)?;
    Ok(manifest)
}

/// The period's run of entries written into `staging` as it streams in, scanned once, and the
/// checkpoint and proofs that cover it.
fn proven_run(
    gw: &Gateway<'_>,
    opts: &ExportOptions<'_>,
    profile: &'static profiles::Profile,
    period: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    staging: &Path,
) -> Result<(Run, Covering, Proofs)> {
    // The log's origin first: each entry is judged as the log's own or another source's.
    let origin = gw.get_json("/admin/audit/checkpoint")?["origin"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let writer = RunWriter::create(&staging.join(ENTRIES), &origin, profile, period)?;
    let Some(run) = fetch_run(gw, writer)? else {
        bail!(
            "the log holds no audit entry from {} to {}; nothing to export",
            opts.from,
            opts.to
        );
    };
    let covering = covering_checkpoint(gw, run.last.0, opts.allow_unwitnessed)?;
    if covering.origin != origin {
        bail!(
            "the gateway's log is {} now, {origin} when the export began; export again",
            covering.origin
        );
    }
    let configuration = run.configuration.as_ref();
    let proofs = prove_run(gw, &covering, &run.first.1, &run.last.1, configuration)?;
    Ok((run, covering, proofs))
}

/// The bundle's files besides the entries (on disk already), small enough to hold: the
/// proofs, the gateway's records, and the installation transcript if given.
fn bundle_files(
    gw: &Gateway<'_>,
    opts: &ExportOptions<'_>,
    proofs: &Proofs,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert(
        "audit/checkpoint.note".into(),
        proofs.cosigned_note.clone().into_bytes(),
    );
    files.insert("audit/range-proof.json".into(), pretty(&proofs.range)?);
    if let Some(c) = &proofs.configuration_before {
        files.insert(assess::CONFIGURATION_BEFORE.into(), pretty(c)?);
    }
    gateway_records(gw, from, to, &mut files)?;
    if let Some(t) = opts.transcript {
        transcript_files(t, &mut files)?;
    }
    Ok(files)
}

/// The digest of every file: the entries' from their scan, the others' in memory.
fn digests_of(scanned: &Scanned, files: &BTreeMap<String, Vec<u8>>) -> Result<Digests> {
    let mut digests: Digests = BTreeMap::new();
    let entries = scanned
        .digest
        .clone()
        .context("the entries were not hashed whole")?;
    digests.insert(ENTRIES.into(), entries);
    for (path, bytes) in files {
        digests.insert(path.clone(), digest(bytes));
    }
    Ok(digests)
}

/// A checkpoint that covers the run: the latest one enough witnesses cosigned, if the site has
/// witnesses; else a fresh one.
fn covering_checkpoint(
    gw: &Gateway<'_>,
    last_seq: u64,
    allow_unwitnessed: bool,
) -> Result<Covering> {
    let fresh = gw
        .src
        .get(&gw.client, reqwest::Method::POST, "/admin/audit/checkpoint")?
        .json::<Value>()?;
    let origin = fresh["origin"].as_str().unwrap_or_default().to_owned();
    let log_vkey = fresh["vkey"].as_str().unwrap_or_default().to_owned();
    let cos = gw.get_json("/admin/audit/cosignatures")?;
    let configured = cos["witnesses"]["configured"]
        .as_array()
        .map_or(0, Vec::len);
    let witnessed = cos["witnesses"]["latestWitnessedSize"].as_u64();
    let size = match witnessed {
        Some(s) if s >= last_seq => s,
        _ if configured > 0 && !allow_unwitnessed => bail!(
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
    Ok(Covering {
        origin,
        log_vkey,
        cosignatures: cos,
        size,
    })
}

/// The inclusion proofs of the run's first and last entries (and of the log's configuration
/// entry before the run, if any), and the checkpoint note with its witnesses' cosignatures.
fn prove_run(
    gw: &Gateway<'_>,
    covering: &Covering,
    first_id: &str,
    last_id: &str,
    configuration: Option<&Line>,
) -> Result<Proofs> {
    let size = covering.size;
    let (first_proof, note) = gw.proof(first_id, size)?;
    let (last_proof, _) = gw.proof(last_id, size)?;
    let configuration_before = match configuration {
        Some(line) => {
            let id = line.entry["id"].as_str().unwrap_or_default();
            let (proof, _) = gw.proof(id, size)?;
            Some(json!({"line": line, "proof": proof}))
        }
        None => None,
    };
    let mut cosigned_note = note;
    let mut witnesses = Vec::new();
    for c in covering.cosignatures["cosignatures"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if c["size"].as_u64() == Some(size) {
            let line = c["line"].as_str().unwrap_or_default();
            cosigned_note.push_str(line.trim_end());
            cosigned_note.push('\n');
            witnesses.push(c["witness"].as_str().unwrap_or_default().to_owned());
        }
    }
    Ok(Proofs {
        range: RangeProof {
            size,
            first: first_proof,
            last: last_proof,
        },
        cosigned_note,
        witnesses,
        configuration_before,
    })
}

/// The gateway's records of the period: changes, policy versions, alerts, license, info.
fn gateway_records(
    gw: &Gateway<'_>,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    files: &mut BTreeMap<String, Vec<u8>>,
) -> Result<()> {
    let changes = all_changes(&|p| gw.get_json(p))?;
    files.insert(
        "changes.json".into(),
        pretty(&in_window(&changes, "changes", from, to))?,
    );
    files.insert(
        "policies/versions.json".into(),
        pretty(&active_in(
            &gw.get_json("/admin/policies/versions")?,
            from,
            to,
        ))?,
    );
    files.insert(
        "alerts/undelivered.json".into(),
        pretty(&gw.get_json("/admin/alerts/undelivered")?)?,
    );
    let stamp =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    files.insert(
        "alerts/deliveries.json".into(),
        // Up to now: an alert for a denial late in the period is delivered after it ends.
        pretty(&gw.get_json(&format!(
            "/admin/alerts/deliveries?from={}&to={}&limit=100000",
            stamp(from),
            stamp(chrono::Utc::now() + chrono::Duration::seconds(1))
        ))?)?,
    );
    let license = match gw
        .src
        .get(&gw.client, reqwest::Method::GET, "/admin/license")
    {
        Ok(r) => r.json::<Value>()?,
        Err(e) => json!({"licensing": "unavailable", "why": e.to_string()}),
    };
    files.insert("license.json".into(), pretty(&license)?);
    files.insert("gateway.json".into(), pretty(&gw.get_json("/admin/info")?)?);
    Ok(())
}

/// The site's signed installation transcript `t` and its `.minisig`.
fn transcript_files(t: &Path, files: &mut BTreeMap<String, Vec<u8>>) -> Result<()> {
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
    Ok(())
}

fn digest(bytes: &[u8]) -> (String, u64) {
    (hex::encode(Sha256::digest(bytes)), bytes.len() as u64)
}

/// Adds a file the export derived, with its digest.
fn add_file(
    files: &mut BTreeMap<String, Vec<u8>>,
    digests: &mut Digests,
    path: &str,
    bytes: Vec<u8>,
) {
    digests.insert(path.into(), digest(&bytes));
    files.insert(path.into(), bytes);
}

/// What the bundle's data shows, as the verifier will judge it: the scan's facts (every entry
/// of the run, after the settings in force when it began), whether the run is proven, and the
/// gateway's records.
fn finish_facts(
    scanned: &mut Scanned,
    proofs: &Proofs,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<()> {
    let note_text = String::from_utf8_lossy(&files["audit/checkpoint.note"]).into_owned();
    let signed = Note::parse(&note_text)
        .ok()
        .and_then(|n| Checkpoint::parse(n.text).ok());
    let proof = &proofs.range;
    let proven = signed.as_ref().is_some_and(|c| {
        range_root(c.size, &proof.first, &proof.last, &scanned.run).is_ok_and(|r| r == c.root)
    });
    scanned.facts.finish(assess::Inputs {
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
    Ok(())
}

/// The control mapping of what the bundle shows (`controls.json`) and the same as OSCAL
/// assessment results, with a plan of action and milestones where the profile wants one.
fn add_assessment(
    opts: &ExportOptions<'_>,
    profile: &'static profiles::Profile,
    origin: &str,
    created_at: &str,
    facts: &assess::Facts,
    files: &mut BTreeMap<String, Vec<u8>>,
    digests: &mut Digests,
) -> Result<()> {
    let held: Vec<String> = digests.keys().cloned().collect();
    let controls = assess::control_mapping(profile, &held, facts);
    add_file(files, digests, "controls.json", pretty(&controls)?);
    let oscal =
        oscal::assessment_results(profile, opts.from, opts.to, created_at, &controls, digests);
    add_file(
        files,
        digests,
        "oscal/assessment-results.json",
        pretty(&oscal)?,
    );
    if let Some(poam) = oscal::poam(profile, &oscal, origin, created_at) {
        add_file(files, digests, "oscal/poam.json", pretty(&poam)?);
    }
    Ok(())
}

/// Writes `MANIFEST.json` and `SHA256SUMS`, each with its minisign signature.
fn write_signed_manifest(
    opts: &ExportOptions<'_>,
    profile: &profiles::Profile,
    manifest: &Manifest,
    staging: &Path,
) -> Result<()> {
    let bytes = pretty(manifest)?;
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
    Ok(())
}

/// Never hand out a bundle that does not verify: every file is read back and checked, but the
/// entries, which were scanned (chains, leaves, facts, digest) as they were written.
fn check_written(opts: &ExportOptions<'_>, staging: &Path, scanned: Scanned) -> Result<()> {
    let check = verify_scanned(
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
        scanned,
    )?;
    if !check.ok {
        bail!(
            "the bundle does not verify; nothing was written:\n{}",
            check.text()
        );
    }
    Ok(())
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
pub(super) fn active_in(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::entries::scan_file;

    /// A chained run of `n` entries of one source; entry `i` is in the period when `inside(i)`.
    fn lines(n: u64, inside: impl Fn(u64) -> bool) -> Vec<String> {
        let mut prev = String::new();
        (1..=n)
            .map(|seq| {
                let day = if inside(seq) { "2026-11-10" } else { "2026-12-10" };
                let entry = json!({"id": format!("e{seq}"), "timestamp": format!("{day}T00:00:00Z"),
                    "event": "decision", "decision": if seq % 2 == 0 { "deny" } else { "allow" },
                    "action": "read:x", "outcome": "ok", "agentId": "a"});
                let mut h = Sha256::new();
                h.update(hex::decode(&prev).unwrap());
                h.update(serde_json::to_string(&entry).unwrap().as_bytes());
                let hash = hex::encode(h.finalize());
                let line = json!({"seq": seq, "source": "log", "prevHash": prev, "hash": hash, "entry": entry});
                prev = hash;
                line.to_string()
            })
            .collect()
    }

    #[test]
    fn the_one_scan_of_the_export_is_the_verifiers_scan_of_the_file_it_wrote() {
        let profile = profiles::find("fedramp-moderate").unwrap();
        let period = (
            parse_time("2026-11-01", "from").unwrap(),
            parse_time("2026-12-01", "to").unwrap(),
        );
        // Out of the period before the run, in stretches inside it, and after its last entry.
        type InPeriod = fn(u64) -> bool;
        let patterns: [(&str, InPeriod); 3] = [
            ("all in", |_| true),
            ("gaps", |s| {
                !(1..=2).contains(&s) && !(5..=9).contains(&s) && s < 15
            }),
            ("one", |s| s == 7),
        ];
        for (name, inside) in patterns {
            for held_max in [0, 1, 3, 100] {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join(ENTRIES);
                let mut w = RunWriter::create(&path, "log", profile, period).unwrap();
                w.held_max = held_max;
                for l in lines(20, inside) {
                    w.line(&l).unwrap();
                }
                let run = w.finish().unwrap().unwrap();
                let want = lines(20, inside)
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| (run.first.0..=run.last.0).contains(&(*i as u64 + 1)))
                    .map(|(_, l)| l + "\n")
                    .collect::<String>();
                let case = format!("{name}, {held_max} held");
                assert_eq!(std::fs::read_to_string(&path).unwrap(), want, "{case}");
                let facts = assess::Facts::new("log", profile);
                let read = scan_file(dir.path(), (run.first.0, run.last.0), facts, false);
                let got = &run.scanned;
                assert_eq!(got.digest, read.digest, "{case}");
                assert_eq!(got.digest, Some(crate::fsx::sha256_file(&path).unwrap()));
                assert_eq!(got.run, read.run, "{case}");
                let leaves: Vec<[u8; 32]> = want
                    .lines()
                    .map(|l| serde_json::from_str::<Line>(l).unwrap())
                    .map(|l| serde_json::to_string(&l.entry).unwrap())
                    .map(|body| meshguard_tlog::merkle::leaf_hash(body.as_bytes()))
                    .collect();
                let all = meshguard_tlog::merkle::RunHashes::of(run.first.0 - 1, &leaves);
                assert_eq!(got.run, all, "{case}: the leaves of the file written");
                assert_eq!(got.result, read.result, "{case}");
                assert!(got.result.is_ok(), "{case}: {:?}", got.result);
                let counts = |d: &super::super::Decisions| (d.allowed, d.denied);
                assert_eq!(counts(&got.decisions), counts(&read.decisions), "{case}");
                assert_eq!(got.facts.entries, read.facts.entries, "{case}");
            }
        }
    }
}
