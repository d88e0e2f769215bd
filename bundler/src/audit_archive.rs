//! The local audit archive: append-only segments of the gateway's audit log, each proven against
//! a checkpoint signed by the log's key before it is kept, in a directory that verifies on its
//! own (`meshguard-bundle audit-archive verify`, and `sha256sum -c SHA256SUMS` for the files).
//! The chart's archive CronJob runs `pull`; the directory is what goes onto removable evidence
//! media.
//!
//! Layout:
//! - `ARCHIVE.json`: origin, pinned verifier key, archived size, the Merkle frontier (the roots
//!   of the perfect subtrees the archived leaves make, RFC 9162 §2.1.1), each source's chain
//!   head, and the segments and checkpoints held;
//! - `segments/<from>-<to>.jsonl`: the export lines (`{seq, source, prevHash, hash, entry}`) of
//!   entries `from..=to`, exactly as the gateway exported them;
//! - `checkpoints/<size>.note`: the C2SP signed checkpoint each segment was proven against;
//! - `SHA256SUMS`: every segment and checkpoint, as `sha256sum` writes it.
//!
//! A run fetches the latest checkpoint, verifies its signature with the pinned key, fetches the
//! entries after the archived size, checks each source's hash chain, extends the frontier and
//! compares the root with the checkpoint's. Only then are the files written (each atomically,
//! the state last), so an interrupted run leaves the archive as it was, and a log that was
//! rewritten, shrank or changed key is refused, naming what differs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::fsx;
use meshguard_tlog::merkle::{Frontier, leaf_hash as leaf};
use meshguard_tlog::note::{Checkpoint, Note, Vkey};

pub const FORMAT: &str = "meshguard-audit-archive/v1";
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Entries per export request.
const PAGE: u64 = 5000;

/// The archive's state, `ARCHIVE.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub format: String,
    pub origin: String,
    pub vkey: String,
    pub size: u64,
    /// Hex roots of the perfect subtrees of the archived leaves, largest first.
    pub frontier: Vec<String>,
    /// The last hash of each source's chain.
    pub heads: BTreeMap<String, String>,
    pub segments: Vec<Segment>,
    /// Sizes of the checkpoints kept in `checkpoints/`.
    pub checkpoints: Vec<u64>,
    /// Evidence bundles kept in `evidence/<name>/`, never replaced.
    #[serde(default)]
    pub evidence: Vec<EvidenceRecord>,
}

/// An evidence bundle the archive holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceRecord {
    pub name: String,
    pub profile: String,
    pub from: String,
    pub to: String,
    /// SHA-256 of the bundle's MANIFEST.json as exported.
    pub manifest_sha256: String,
    pub checkpoint_size: u64,
    /// The exporter's minisign public key (the `.pub` file's text), pinned when it was added.
    pub pubkey: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    pub file: String,
    pub from: u64,
    pub to: u64,
    pub sha256: String,
}

/// The export line as the gateway writes it (read here and by the evidence bundles).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Line {
    pub(crate) seq: u64,
    pub(crate) source: String,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
    pub(crate) entry: Value,
}

/// The archive's Merkle frontier from `ARCHIVE.json` (hex hashes, largest subtree first).
fn frontier_from_state(s: &State) -> Result<Frontier> {
    let mut bytes = Vec::with_capacity(s.frontier.len() * 32);
    for h in &s.frontier {
        let mut out = [0u8; 32];
        hex::decode_to_slice(h, &mut out)
            .context("ARCHIVE.json: a frontier hash is not 64 hex digits")?;
        bytes.extend_from_slice(&out);
    }
    Frontier::from_bytes(s.size, &bytes)
        .context("ARCHIVE.json: the frontier does not fit the archived size")
}

/// The frontier as `ARCHIVE.json` keeps it.
fn frontier_to_state(tree: &Frontier) -> Vec<String> {
    tree.to_bytes().chunks_exact(32).map(hex::encode).collect()
}

/// Checks one line against the chain of its source and adds it to the tree.
fn take(
    line: &Line,
    expected_seq: u64,
    heads: &mut BTreeMap<String, String>,
    tree: &mut Frontier,
) -> Result<()> {
    if line.seq != expected_seq {
        bail!(
            "entry {expected_seq} is missing (the next line is entry {}); the log or the export is incomplete",
            line.seq
        );
    }
    let body = serde_json::to_string(&line.entry).context("an entry does not serialize")?;
    let head = heads.get(&line.source).map_or(GENESIS, String::as_str);
    if line.prev_hash != head {
        bail!(
            "entry {} does not follow the last entry of source {:?} (prevHash {}, expected {head}): the chain was altered",
            line.seq,
            line.source,
            line.prev_hash
        );
    }
    let mut prev = [0u8; 32];
    hex::decode_to_slice(&line.prev_hash, &mut prev)
        .with_context(|| format!("entry {}: prevHash is not 64 hex digits", line.seq))?;
    let mut h = Sha256::new();
    h.update(prev);
    h.update(body.as_bytes());
    if hex::encode(h.finalize()) != line.hash {
        bail!(
            "entry {}: its hash does not match its content and prevHash: the entry was altered",
            line.seq
        );
    }
    heads.insert(line.source.clone(), line.hash.clone());
    tree.push(leaf(body.as_bytes()));
    Ok(())
}

fn read_state(dir: &Path) -> Result<Option<State>> {
    let path = dir.join("ARCHIVE.json");
    match std::fs::read(&path) {
        Ok(b) => {
            let s: State = serde_json::from_slice(&b)
                .with_context(|| format!("{} is not an audit archive state", path.display()))?;
            if s.format != FORMAT {
                bail!(
                    "{}: format {:?}, expected {FORMAT}",
                    path.display(),
                    s.format
                );
            }
            Ok(Some(s))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn verified_checkpoint(note: &str, vkey: &Vkey) -> Result<Checkpoint> {
    let parsed = Note::parse(note).context("the checkpoint is not a signed note")?;
    parsed
        .verify(vkey)
        .context("the checkpoint is not signed by the pinned log key")?;
    Ok(Checkpoint::parse(parsed.text)?)
}

/// What a pull did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pulled {
    pub origin: String,
    pub from: u64,
    pub to: u64,
    pub segment: Option<String>,
}

/// Where the archive pulls from: the gateway and its admin token.
pub struct Source {
    pub url: String,
    pub admin_token: String,
    /// A PEM bundle of the site's CAs, for a gateway serving HTTPS with a private CA.
    pub ca_bundle: Option<PathBuf>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("url", &self.url)
            .field("admin_token", &"<redacted>")
            .finish()
    }
}

impl Source {
    /// An HTTP client for the gateway, trusting the site CAs when given.
    pub(crate) fn client(&self) -> Result<reqwest::blocking::Client> {
        let mut builder =
            reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(120));
        if let Some(p) = &self.ca_bundle {
            let pem = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            for c in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} is not a PEM bundle", p.display()))?
            {
                builder = builder.add_root_certificate(c);
            }
        }
        Ok(builder.build()?)
    }

    pub(crate) fn get(
        &self,
        client: &reqwest::blocking::Client,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::blocking::Response> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let r = client
            .request(method, &url)
            .header("X-Admin-Token", &self.admin_token)
            .send()
            .with_context(|| format!("the gateway at {} did not answer", self.url))?;
        if !r.status().is_success() {
            let status = r.status();
            let body: String = r.text().unwrap_or_default().chars().take(300).collect();
            bail!("{url} answered {status}: {body}");
        }
        Ok(r)
    }
}

/// Archives what the gateway's log holds beyond the archive, proven against a fresh signed
/// checkpoint. `vkey` pins the log's key on the first run (else the gateway's is taken and
/// printed, to be checked out of band); later runs refuse another key.
pub fn pull(dir: &Path, source: &Source, vkey: Option<&str>) -> Result<Pulled> {
    let client = source.client()?;
    std::fs::create_dir_all(dir.join("segments"))
        .and_then(|()| std::fs::create_dir_all(dir.join("checkpoints")))
        .with_context(|| format!("cannot create the archive in {}", dir.display()))?;
    let _lock = fsx::lock_exclusive(&dir.join(".lock"))?;
    let state = read_state(dir)?;
    // Signs a checkpoint over everything durable now, and returns it with the log's key.
    let cp: Value = source
        .get(&client, reqwest::Method::POST, "/admin/audit/checkpoint")?
        .json()
        .context("the checkpoint answer is not JSON")?;
    let note = cp["checkpoint"].as_str().unwrap_or_default().to_owned();
    let pinned = pinned_key(
        state.as_ref(),
        vkey,
        cp["vkey"].as_str().unwrap_or_default(),
    )?;
    let key = Vkey::parse(&pinned)?;
    let mut state = state.unwrap_or(State {
        format: FORMAT.into(),
        origin: key.name.clone(),
        vkey: pinned.clone(),
        size: 0,
        frontier: Vec::new(),
        heads: BTreeMap::new(),
        segments: Vec::new(),
        checkpoints: Vec::new(),
        evidence: Vec::new(),
    });
    if note.is_empty() {
        return Ok(nothing_new(state));
    }
    let checkpoint = verified_checkpoint(&note, &key)?;
    if checkpoint.origin != state.origin {
        bail!(
            "the checkpoint is for origin {:?}, the archive for {:?}",
            checkpoint.origin,
            state.origin
        );
    }
    let mut tree = frontier_from_state(&state)?;
    if !grown(&checkpoint, &state, &tree)? {
        return Ok(nothing_new(state));
    }
    let from = state.size + 1;
    let mut heads = state.heads.clone();
    let text = export_run(
        source,
        &client,
        from,
        checkpoint.size,
        &mut heads,
        &mut tree,
    )?;
    if tree.root() != checkpoint.root {
        bail!(
            "the {} entries do not make the tree the checkpoint signs (root differs): the export does not match the signed log; nothing was archived",
            checkpoint.size
        );
    }
    state.heads = heads;
    state.frontier = frontier_to_state(&tree);
    let file = add_segment(dir, &mut state, from, checkpoint.size, &text, &note)?;
    Ok(Pulled {
        origin: state.origin,
        from,
        to: checkpoint.size,
        segment: Some(file),
    })
}

/// Whether the signed log holds entries beyond the archive; an error when it holds fewer, or
/// the same number with another root (a truncated or rewritten history).
fn grown(checkpoint: &Checkpoint, state: &State, tree: &Frontier) -> Result<bool> {
    if checkpoint.size < state.size {
        bail!(
            "the log's signed size ({}) is smaller than what is archived ({}): the log was truncated or replaced; nothing was archived",
            checkpoint.size,
            state.size
        );
    }
    if checkpoint.size == state.size {
        if checkpoint.root != tree.root() {
            bail!(
                "the log's signed root at {} entries differs from the archived one: its history was rewritten",
                state.size
            );
        }
        return Ok(false);
    }
    Ok(true)
}

/// Writes the segment of entries `from..=to` and the checkpoint note that proves them, then the
/// state that lists them: the segment's file name.
fn add_segment(
    dir: &Path,
    state: &mut State,
    from: u64,
    to: u64,
    text: &str,
    note: &str,
) -> Result<String> {
    let file = format!("segments/{from:020}-{to:020}.jsonl");
    fsx::write_atomic(&dir.join(&file), text.as_bytes())?;
    fsx::write_atomic(&dir.join(format!("checkpoints/{to}.note")), note.as_bytes())?;
    state.segments.push(Segment {
        file: file.clone(),
        from,
        to,
        sha256: fsx::sha256_hex(text.as_bytes()),
    });
    state.checkpoints.push(to);
    state.size = to;
    write_state(dir, state)?;
    Ok(file)
}

/// The log key the archive follows: the one it was started with (another given is refused),
/// else the one given, else the one the gateway serves; the gateway must sign with it.
fn pinned_key(state: Option<&State>, vkey: Option<&str>, served_vkey: &str) -> Result<String> {
    let pinned = match (state, vkey) {
        (Some(s), Some(v)) if s.vkey != v => bail!(
            "--vkey is not the key this archive was started with ({}); an archive follows one log",
            s.vkey
        ),
        (Some(s), _) => s.vkey.clone(),
        (None, Some(v)) => v.to_owned(),
        (None, None) => served_vkey.to_owned(),
    };
    if served_vkey != pinned {
        bail!(
            "the gateway signs with {served_vkey}, not the archive's key {pinned}: the log key changed; nothing was archived (start a new archive for a new log)"
        );
    }
    Ok(pinned)
}

/// A pull that found nothing beyond the archive.
fn nothing_new(state: State) -> Pulled {
    Pulled {
        origin: state.origin,
        from: state.size,
        to: state.size,
        segment: None,
    }
}

/// The log's entries `from..=to`, page by page from the gateway's export, each taken into the
/// chains (`heads`) and the tree: the segment's text.
fn export_run(
    source: &Source,
    client: &reqwest::blocking::Client,
    from: u64,
    to: u64,
    heads: &mut BTreeMap<String, String>,
    tree: &mut Frontier,
) -> Result<String> {
    let mut text = String::new();
    let mut next = from;
    while next <= to {
        let page: String = source
            .get(
                client,
                reqwest::Method::GET,
                &format!("/admin/audit/export?after={}&limit={PAGE}", next - 1),
            )?
            .text()?;
        let mut got = 0;
        for raw in page.lines().filter(|l| !l.trim().is_empty()) {
            let line: Line = serde_json::from_str(raw)
                .with_context(|| format!("entry {next}: not an export line"))?;
            if line.seq > to {
                break;
            }
            take(&line, next, heads, tree)?;
            text.push_str(raw);
            text.push('\n');
            next += 1;
            got += 1;
        }
        if got == 0 {
            bail!(
                "the gateway exported nothing after entry {} although its checkpoint covers {to}",
                next - 1,
            );
        }
    }
    Ok(text)
}

/// `SHA256SUMS`, then `ARCHIVE.json` (last: it names what the archive holds).
fn write_state(dir: &Path, state: &State) -> Result<()> {
    write_sums(dir, state)?;
    let mut bytes = serde_json::to_vec_pretty(state)?;
    bytes.push(b'\n');
    fsx::write_atomic(&dir.join("ARCHIVE.json"), &bytes)?;
    Ok(())
}

fn write_sums(dir: &Path, state: &State) -> Result<()> {
    let mut sums = String::new();
    for s in &state.segments {
        sums.push_str(&format!("{}  {}\n", s.sha256, s.file));
    }
    for c in &state.checkpoints {
        let name = format!("checkpoints/{c}.note");
        let (hash, _) = fsx::sha256_file(&dir.join(&name))?;
        sums.push_str(&format!("{hash}  {name}\n"));
    }
    for e in &state.evidence {
        let root = format!("evidence/{}", e.name);
        for file in fsx::walk(&dir.join(&root))? {
            let name = format!("{root}/{file}");
            let (hash, _) = fsx::sha256_file(&dir.join(&name))?;
            sums.push_str(&format!("{hash}  {name}\n"));
        }
    }
    fsx::write_atomic(&dir.join("SHA256SUMS"), sums.as_bytes())?;
    Ok(())
}

/// What a verification found.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub origin: String,
    pub entries: u64,
    pub segments: usize,
    pub checkpoints: usize,
    /// The root of the archived tree, base64 as in a checkpoint.
    pub root: String,
    /// The evidence bundles held, each verified and its checkpoint's root found in the archive.
    pub evidence: Vec<EvidenceRecord>,
    /// The archived entries' root at each held bundle's checkpoint size.
    #[serde(skip)]
    evidence_roots: BTreeMap<u64, [u8; 32]>,
}

/// Verifies an archive directory with no network: every segment's digest, every chain, and the
/// tree at every kept checkpoint against its signature by `vkey` (default: the pinned key,
/// which the caller should compare with the one they trust).
pub fn verify(dir: &Path, vkey: Option<&str>) -> Result<Verified> {
    let state = read_state(dir)?.with_context(|| {
        format!(
            "{} holds no ARCHIVE.json: not an audit archive",
            dir.display()
        )
    })?;
    if let Some(v) = vkey
        && v != state.vkey
    {
        bail!(
            "the archive is pinned to {}, not to the key given; it is another log's archive, or its state was altered",
            state.vkey
        );
    }
    let key = Vkey::parse(vkey.unwrap_or(&state.vkey))?;
    let notes = signed_roots(dir, &state, &key)?;
    // The roots the evidence bundles' checkpoints must have, found as the tree grows.
    let mut wanted: BTreeMap<u64, Option<[u8; 32]>> = state
        .evidence
        .iter()
        .map(|e| (e.checkpoint_size, None))
        .collect();
    let tree = replay_segments(dir, &state, &notes, &mut wanted)?;
    if tree.size() != state.size || state.checkpoints.last() != Some(&state.size) {
        bail!(
            "ARCHIVE.json says {} entries, the segments hold {}",
            state.size,
            tree.size()
        );
    }
    for e in &state.evidence {
        let root = wanted.get(&e.checkpoint_size).copied().flatten();
        check_evidence(&dir.join("evidence").join(&e.name), e, &state.vkey, root)?;
    }
    let evidence_roots = wanted
        .into_iter()
        .filter_map(|(size, root)| Some((size, root?)))
        .collect();
    Ok(Verified {
        origin: state.origin,
        entries: tree.size(),
        segments: state.segments.len(),
        checkpoints: state.checkpoints.len(),
        root: B64.encode(tree.root()),
        evidence: state.evidence,
        evidence_roots,
    })
}

/// The root each kept checkpoint signs, by size: each note signed by `key`, of its size and of
/// the archive's origin.
fn signed_roots(dir: &Path, state: &State, key: &Vkey) -> Result<BTreeMap<u64, [u8; 32]>> {
    let mut notes = BTreeMap::new();
    for size in &state.checkpoints {
        let path = dir.join(format!("checkpoints/{size}.note"));
        let note = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let cp = verified_checkpoint(&note, key).with_context(|| format!("{}", path.display()))?;
        if cp.size != *size || cp.origin != state.origin {
            bail!(
                "{} is not the checkpoint of {size} entries of {}",
                path.display(),
                state.origin
            );
        }
        notes.insert(*size, cp.root);
    }
    Ok(notes)
}

/// Every segment, in order: its digest, each entry's place in its chain, and the tree at each
/// signed size against the signed root (`notes`); the roots at the sizes in `wanted` are
/// filled in. The tree of all the entries.
fn replay_segments(
    dir: &Path,
    state: &State,
    notes: &BTreeMap<u64, [u8; 32]>,
    wanted: &mut BTreeMap<u64, Option<[u8; 32]>>,
) -> Result<Frontier> {
    let mut heads = BTreeMap::new();
    let mut tree = Frontier::default();
    let mut next = 1;
    for s in &state.segments {
        let path: PathBuf = dir.join(&s.file);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if fsx::sha256_hex(&bytes) != s.sha256 {
            bail!(
                "{}: its content is not what was archived (SHA-256 differs)",
                s.file
            );
        }
        let text = String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", s.file))?;
        for raw in text.lines() {
            let line: Line = serde_json::from_str(raw)
                .with_context(|| format!("{}: entry {next} is not an export line", s.file))?;
            take(&line, next, &mut heads, &mut tree).with_context(|| s.file.clone())?;
            next += 1;
            if let Some(slot) = wanted.get_mut(&tree.size()) {
                *slot = Some(tree.root());
            }
            if let Some(root) = notes.get(&tree.size())
                && *root != tree.root()
            {
                bail!(
                    "the archived entries up to {} do not make the tree its signed checkpoint covers: an entry was altered",
                    tree.size()
                );
            }
        }
        if tree.size() != s.to {
            bail!(
                "{} should end at entry {}, but ends at {}",
                s.file,
                s.to,
                tree.size()
            );
        }
    }
    Ok(tree)
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A held (or arriving) evidence bundle: it verifies with its pinned exporter key and the
/// archive's log key, its manifest is the one recorded, and its checkpoint's root is the root
/// of the archived entries at that size (`root`; None when the archive does not reach it).
fn check_evidence(
    bundle: &Path,
    record: &EvidenceRecord,
    log_vkey: &str,
    root: Option<[u8; 32]>,
) -> Result<crate::evidence::Verified> {
    let pubkey = crate::keys::MediaPublicKey::from_text(&record.pubkey, "the exporter key")?;
    let v = crate::evidence::verify(
        bundle,
        &crate::evidence::VerifyOptions {
            pubkey: &pubkey,
            log_vkey: Some(log_vkey),
            witnesses: &[],
            quorum: 0,
            transcript_pubkey: None,
            list_denials: false,
            // The bundle's checkpoint is checked below against the archive's own entries and
            // log key; witnesses and the transcript are the bundle's own verify's to check.
            accept_unchecked: &[
                crate::evidence::Unchecked::Witness,
                crate::evidence::Unchecked::Transcript,
            ],
        },
    )?;
    if !v.ok {
        bail!(
            "the evidence bundle {} does not verify:\n{}",
            record.name,
            v.text()
        );
    }
    let (manifest_sha, _) = fsx::sha256_file(&bundle.join("MANIFEST.json"))?;
    if manifest_sha != record.manifest_sha256 {
        bail!(
            "the evidence bundle {}'s MANIFEST.json is not the one archived (SHA-256 {manifest_sha}, archived {})",
            record.name,
            record.manifest_sha256
        );
    }
    let note = std::fs::read_to_string(bundle.join("audit/checkpoint.note"))?;
    let cp = Checkpoint::parse(Note::parse(&note)?.text)?;
    let Some(root) = root else {
        bail!(
            "the evidence bundle {} is proven in a checkpoint of {} entries, beyond what the archive holds; pull first",
            record.name,
            cp.size
        );
    };
    if cp.root != root {
        bail!(
            "the evidence bundle {}'s checkpoint of {} entries has another root than the archived entries: the log it was exported from is not the one archived",
            record.name,
            cp.size
        );
    }
    Ok(v)
}

/// Calls `f(seq, source, body)` for every archived entry in order, `body` the entry's bytes as
/// the log holds them (what its leaf hashes). For a verified archive.
pub fn for_each_line(dir: &Path, mut f: impl FnMut(u64, &str, &str) -> Result<()>) -> Result<()> {
    let state = read_state(dir)?.context("no ARCHIVE.json: not an audit archive")?;
    for s in &state.segments {
        let text = std::fs::read_to_string(dir.join(&s.file))
            .with_context(|| format!("cannot read {}", s.file))?;
        for raw in text.lines() {
            let line: Line = serde_json::from_str(raw)
                .with_context(|| format!("{}: a line is not an export line", s.file))?;
            let body = serde_json::to_string(&line.entry)?;
            f(line.seq, &line.source, &body)?;
        }
    }
    Ok(())
}

/// The sizes of the signed checkpoints the archive keeps, ascending.
pub fn checkpoint_sizes(dir: &Path) -> Result<Vec<u64>> {
    let state = read_state(dir)?.context("no ARCHIVE.json: not an audit archive")?;
    let mut sizes = state.checkpoints.clone();
    sizes.sort_unstable();
    Ok(sizes)
}

/// The signed checkpoint of `size` the archive keeps.
pub fn checkpoint_note(dir: &Path, size: u64) -> Result<String> {
    let path = dir.join("checkpoints").join(format!("{size}.note"));
    std::fs::read_to_string(&path).with_context(|| {
        format!(
            "the archive keeps no checkpoint of size {size} ({})",
            path.display()
        )
    })
}

/// The archived entries' root at `size` (at most the archived size), from the segments.
fn root_at(dir: &Path, state: &State, size: u64) -> Result<[u8; 32]> {
    let mut tree = Frontier::default();
    for s in &state.segments {
        let text = std::fs::read_to_string(dir.join(&s.file))
            .with_context(|| format!("cannot read {}", s.file))?;
        for raw in text.lines() {
            if tree.size() == size {
                return Ok(tree.root());
            }
            let line: Line = serde_json::from_str(raw)
                .with_context(|| format!("{}: a line is not an export line", s.file))?;
            let body = serde_json::to_string(&line.entry)?;
            tree.push(leaf(body.as_bytes()));
        }
    }
    if tree.size() == size {
        return Ok(tree.root());
    }
    bail!(
        "the archive holds {} entries, fewer than {size}; pull first",
        tree.size()
    )
}

/// What the archive records of the evidence bundle `bundle` (to be held as `name`): its
/// manifest's profile, period and checkpoint, the manifest's digest and the exporter's key
/// (from `pubkey_file`). The bundle must be evidence of the archive's log.
fn evidence_record(
    bundle: &Path,
    name: &str,
    pubkey_file: &Path,
    state: &State,
) -> Result<EvidenceRecord> {
    let pubkey = std::fs::read_to_string(pubkey_file)
        .with_context(|| format!("cannot read {}", pubkey_file.display()))?;
    let manifest: crate::evidence::Manifest = serde_json::from_slice(
        &std::fs::read(bundle.join("MANIFEST.json"))
            .with_context(|| format!("{} is not an evidence bundle", bundle.display()))?,
    )
    .context("MANIFEST.json is not an evidence manifest")?;
    if manifest.origin != state.origin {
        bail!(
            "the bundle is evidence of {}, the archive holds {}",
            manifest.origin,
            state.origin
        );
    }
    let (manifest_sha256, _) = fsx::sha256_file(&bundle.join("MANIFEST.json"))?;
    let record = EvidenceRecord {
        name: name.to_owned(),
        profile: manifest.profile.clone(),
        from: manifest.from.clone(),
        to: manifest.to.clone(),
        manifest_sha256,
        checkpoint_size: manifest.checkpoint_size,
        pubkey,
    };
    Ok(record)
}

/// Adds an evidence bundle to the archive (WORM: never replacing one): it must verify with the
/// exporter's key and the archive's log key, and its checkpoint's root must be the archived
/// entries' root at that size. Copied read-only into `evidence/<name>/`, then recorded.
pub fn add_evidence(dir: &Path, bundle: &Path, pubkey_file: &Path) -> Result<EvidenceRecord> {
    let _lock = fsx::lock_exclusive(&dir.join(".lock"))?;
    let mut state = read_state(dir)?.with_context(|| {
        format!(
            "{} holds no ARCHIVE.json: pull the log into it first",
            dir.display()
        )
    })?;
    let name = bundle
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| fsx::safe_relative(n).is_some() && !n.contains('/'))
        .with_context(|| format!("{} has no usable directory name", bundle.display()))?
        .to_owned();
    let target = dir.join("evidence").join(&name);
    if state.evidence.iter().any(|e| e.name == name) || target.exists() {
        bail!(
            "the archive already holds an evidence bundle named {name}; archived evidence is never replaced (rename the new bundle's directory)"
        );
    }
    let record = evidence_record(bundle, &name, pubkey_file, &state)?;
    let root = if record.checkpoint_size <= state.size {
        Some(root_at(dir, &state, record.checkpoint_size)?)
    } else {
        None
    };
    check_evidence(bundle, &record, &state.vkey, root)?;
    // Staged, made read-only, then renamed into place; recorded last.
    let staging = dir.join("evidence").join(format!(".{name}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    for file in fsx::walk(bundle)? {
        let to = staging.join(&file);
        fsx::copy_hashed(&bundle.join(&file), &to)?;
    }
    check_evidence(&staging, &record, &state.vkey, root)?;
    read_only(&staging)?;
    std::fs::rename(&staging, &target)
        .with_context(|| format!("cannot move the bundle to {}", target.display()))?;
    meshguard_common::fsx::sync_dir(&dir.join("evidence"))?;
    state.evidence.push(record.clone());
    write_sums(dir, &state)?;
    fsx::write_atomic(
        &dir.join("ARCHIVE.json"),
        &serde_json::to_vec_pretty(&state)?,
    )?;
    Ok(record)
}

/// Files 0444, directories 0555: the archive's evidence is not edited in place.
fn read_only(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for file in fsx::walk(root)? {
        std::fs::set_permissions(root.join(&file), std::fs::Permissions::from_mode(0o444))?;
    }
    let mut dirs: Vec<PathBuf> = vec![root.to_owned()];
    let mut i = 0;
    while i < dirs.len() {
        for e in std::fs::read_dir(&dirs[i])? {
            let e = e?;
            if e.file_type()?.is_dir() {
                dirs.push(e.path());
            }
        }
        i += 1;
    }
    for d in dirs.iter().rev() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555))?;
    }
    Ok(())
}

/// What retrieval returns: the archive's root and, when asked, one bundle copied out.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Retrieved {
    pub origin: String,
    pub size: u64,
    pub root: String,
    /// (size, base64 root) of the bundle's checkpoint, as the archive's entries give it.
    pub evidence: Option<RetrievedEvidence>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrievedEvidence {
    pub name: String,
    pub manifest_sha256: String,
    pub checkpoint_size: u64,
    pub checkpoint_root: String,
    pub out: String,
}

/// Verifies the archive, then (with `evidence`) copies that bundle to `out` and checks the copy.
pub fn retrieve(dir: &Path, evidence: Option<(&str, &Path)>) -> Result<Retrieved> {
    let v = verify(dir, None)?;
    let state = read_state(dir)?.context("no ARCHIVE.json")?;
    let evidence = match evidence {
        None => None,
        Some((name, out)) => {
            let record = state
                .evidence
                .iter()
                .find(|e| e.name == name)
                .with_context(|| {
                    format!(
                        "the archive holds no evidence bundle {name:?}; it holds: {}",
                        state
                            .evidence
                            .iter()
                            .map(|e| e.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
            if out.exists() {
                bail!("{} exists; retrieve into a new directory", out.display());
            }
            let from = dir.join("evidence").join(name);
            // Staged beside `out` and renamed once it verifies: no half copy left looking whole.
            let mut staged = out.as_os_str().to_owned();
            staged.push(format!(".partial-{}", std::process::id()));
            let staged = PathBuf::from(staged);
            let _ = std::fs::remove_dir_all(&staged);
            // `verify` above rebuilt the tree, and found this root on the way.
            let root = *v
                .evidence_roots
                .get(&record.checkpoint_size)
                .context("the archive does not reach the bundle's checkpoint")?;
            let copied = (|| -> Result<()> {
                for file in fsx::walk(&from)? {
                    fsx::copy_hashed(&from.join(&file), &staged.join(&file))?;
                }
                check_evidence(&staged, record, &state.vkey, Some(root))?;
                Ok(())
            })();
            if let Err(e) = copied {
                let _ = std::fs::remove_dir_all(&staged);
                return Err(e);
            }
            std::fs::rename(&staged, out)
                .with_context(|| format!("cannot move the bundle to {}", out.display()))?;
            Some(RetrievedEvidence {
                name: name.to_owned(),
                manifest_sha256: record.manifest_sha256.clone(),
                checkpoint_size: record.checkpoint_size,
                checkpoint_root: B64.encode(root),
                out: out.display().to_string(),
            })
        }
    };
    Ok(Retrieved {
        origin: v.origin,
        size: v.entries,
        root: v.root,
        evidence,
    })
}
