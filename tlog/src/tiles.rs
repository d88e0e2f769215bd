//! The audit log on disk, in the C2SP tlog-tiles layout: the log itself, of which SQLite only
//! keeps an index.
//!
//! ```text
//! <AUDIT_LOG_DIR>/checkpoint               the latest signed checkpoint (a signed note)
//! <AUDIT_LOG_DIR>/tile/<L>/<N>[.p/<W>]     hash tiles: 256 hashes of level L (partial: W)
//! <AUDIT_LOG_DIR>/tile/entries/<N>[.p/<W>] entry bundles: 256 uint16-length-prefixed entries
//! <AUDIT_LOG_DIR>/staging/<N>              bundle N while it fills (the same format)
//! <AUDIT_LOG_DIR>/sources                  runs of entries ingested from other logs
//! ```
//!
//! The writer appends every entry to `staging/<N>`; a group of them is made durable with one
//! `fdatasync` (by the gateway's group leader) and only then are their requests answered. When
//! a bundle is full, the sync of the group that filled it also renames it into
//! `tile/entries/` and syncs both directories before answering anything in it. Hash tiles
//! follow from the entries: the writer writes each as it completes, and they are synced before
//! a checkpoint covering them is signed; at start the ones past the last checkpoint are written
//! again from the entries. A torn tail of the staging bundle (a crash mid-write, or a group
//! whose sync failed and was cut off) is cut back to the last complete entry at start.
//!
//! Entries of this gateway's own chain are listed nowhere else; entries ingested from another
//! log (a sidecar's) are listed as runs in `sources` (`<first seq> <count> <source>` lines,
//! synced before the entries themselves), so the directory alone gives every entry's chain.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};

use crate::merkle::{self, Frontier, Hash};

/// Leaves (or hashes) per tile, as a height: C2SP tiles have height 8.
pub const HEIGHT: u32 = 8;
/// Hashes per full tile.
pub const WIDTH: u64 = 1 << HEIGHT;

const STAGING: &str = "staging";
const SOURCES: &str = "sources";
pub const CHECKPOINT: &str = "checkpoint";

/// `N` as the spec writes it: 3-digit groups, all but the last prefixed `x`
/// (`1234067` is `x001/x234/067`).
pub fn index_path(n: u64) -> String {
    let digits = n.to_string();
    let pad = (3 - digits.len() % 3) % 3;
    let digits = format!("{}{digits}", "0".repeat(pad));
    let groups: Vec<&str> = (0..digits.len() / 3)
        .map(|i| &digits[i * 3..i * 3 + 3])
        .collect();
    let last = groups.len() - 1;
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            if i < last {
                format!("x{g}")
            } else {
                (*g).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Which tile: `level` None is the entry bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileId {
    pub level: Option<u8>,
    pub index: u64,
    /// Below [`WIDTH`] for a partial tile.
    pub width: u64,
}

impl TileId {
    /// The path under the log directory, as the spec names it.
    pub fn path(&self) -> String {
        let level = self
            .level
            .map_or_else(|| "entries".to_owned(), |l| l.to_string());
        let mut p = format!("tile/{level}/{}", index_path(self.index));
        if self.width < WIDTH {
            p.push_str(&format!(".p/{}", self.width));
        }
        p
    }

    /// Parses a path after `tile/` strictly (the spec's spelling only, so no other file of the
    /// directory can be named by a request).
    pub fn parse(path: &str) -> Option<Self> {
        let (path, width) = match path.split_once(".p/") {
            Some((p, w)) => {
                if w.len() > 3 || w.starts_with('0') || !w.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let w: u64 = w.parse().ok()?;
                if !(1..WIDTH).contains(&w) {
                    return None;
                }
                (p, w)
            }
            None => (path, WIDTH),
        };
        let mut parts = path.split('/');
        let level = match parts.next()? {
            "entries" => None,
            l if !l.is_empty() && l.len() <= 2 && l.bytes().all(|b| b.is_ascii_digit()) => {
                if l.len() > 1 && l.starts_with('0') {
                    return None;
                }
                Some(l.parse::<u8>().ok()?)
            }
            _ => return None,
        };
        let groups: Vec<&str> = parts.collect();
        if groups.is_empty() || groups.len() > 7 {
            return None;
        }
        let mut index = 0u64;
        for (i, g) in groups.iter().enumerate() {
            let digits = if i + 1 < groups.len() {
                g.strip_prefix('x')?
            } else {
                g
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            index = index
                .checked_mul(1000)?
                .checked_add(digits.parse::<u64>().ok()?)?;
        }
        let id = Self {
            level,
            index,
            width,
        };
        // `x000/001` and `001` are the same N; only the spec's shortest spelling is a path.
        (id.path() == format!("tile/{path}{}", partial_suffix(width))).then_some(id)
    }
}

fn partial_suffix(width: u64) -> String {
    if width < WIDTH {
        format!(".p/{width}")
    } else {
        String::new()
    }
}

/// Appends one entry to a bundle.
pub fn frame(out: &mut Vec<u8>, entry: &[u8]) {
    let len = u16::try_from(entry.len()).expect("entries are checked to fit in 65,535 bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(entry);
}

/// The entries of a bundle, and the length of the bytes they use: the parse stops at the
/// first incomplete or empty entry (a torn tail) or one that is not a JSON object.
pub fn unframe(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut entries = Vec::new();
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let len = u16::from_be_bytes([bytes[at], bytes[at + 1]]) as usize;
        let Some(entry) = bytes.get(at + 2..at + 2 + len) else {
            break;
        };
        if len == 0 || entry[0] != b'{' || entry[len - 1] != b'}' {
            break;
        }
        entries.push(entry);
        at += 2 + len;
    }
    (entries, at)
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, synced, renamed. The
/// directory is synced by the caller (one sync for many files).
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("tile paths have a parent");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().expect("a file name").to_string_lossy()
    ));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A staging bundle written by a flush, as its sync needs it.
#[derive(Debug, Clone)]
pub struct Segment {
    pub file: Arc<File>,
    /// Which bundle it is.
    pub bundle: u64,
    /// Bytes written to it by the end of the flush.
    pub len: u64,
    /// Full: once synced, it is renamed into `tile/entries/`.
    pub sealed: bool,
}

/// A run of ingested entries: `count` entries from `first` (a seq) of log `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub count: u64,
    pub source: String,
}

/// Every run of ingested entries, by first seq.
pub type Sources = BTreeMap<u64, Run>;

/// Reads `sources`; lines past `size` (written before their entries, which never arrived) are
/// dropped.
pub fn read_sources(dir: &Path, size: u64) -> anyhow::Result<Sources> {
    let path = dir.join(SOURCES);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Sources::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut runs = Sources::new();
    for (i, line) in text.lines().enumerate() {
        let mut parts = line.splitn(3, ' ');
        let (Some(first), Some(count), Some(source)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!(
                "{} line {}: not `<first seq> <count> <source>`",
                path.display(),
                i + 1
            );
        };
        let (first, count): (u64, u64) = (
            first
                .parse()
                .with_context(|| format!("{} line {}", path.display(), i + 1))?,
            count
                .parse()
                .with_context(|| format!("{} line {}", path.display(), i + 1))?,
        );
        if first > size {
            continue;
        }
        runs.insert(
            first,
            Run {
                count: count.min(size + 1 - first),
                source: source.to_owned(),
            },
        );
    }
    Ok(runs)
}

/// The source of the entry `seq`: a run's, or `own`.
pub fn source_of<'a>(runs: &'a Sources, seq: u64, own: &'a str) -> &'a str {
    match runs.range(..=seq).next_back() {
        Some((first, run)) if seq < first + run.count => &run.source,
        _ => own,
    }
}

fn staging_path(dir: &Path, bundle: u64) -> PathBuf {
    dir.join(STAGING).join(bundle.to_string())
}

fn entries_path(dir: &Path, bundle: u64) -> PathBuf {
    dir.join(
        TileId {
            level: None,
            index: bundle,
            width: WIDTH,
        }
        .path(),
    )
}

fn hash_tile_path(dir: &Path, level: u8, index: u64) -> PathBuf {
    dir.join(
        TileId {
            level: Some(level),
            index,
            width: WIDTH,
        }
        .path(),
    )
}

/// Moves a synced full bundle from `staging/` into `tile/entries/` and syncs both directories.
/// Done by a group's sync for each bundle that fills, and at start for one a crash left behind.
pub fn seal(dir: &Path, bundle: u64) -> std::io::Result<()> {
    let to = entries_path(dir, bundle);
    let parent = to.parent().expect("a parent");
    std::fs::create_dir_all(parent)?;
    std::fs::rename(staging_path(dir, bundle), &to)?;
    sync_dir(parent)?;
    sync_dir(&dir.join(STAGING))
}

/// Syncs the staging directory (a new staging bundle's name).
pub fn sync_staging(dir: &Path) -> std::io::Result<()> {
    sync_dir(&dir.join(STAGING))
}

/// The size recorded in the `checkpoint` file, 0 without one.
pub fn published_size(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join(CHECKPOINT))
        .ok()
        .and_then(|t| t.lines().nth(1).and_then(|l| l.parse().ok()))
        .unwrap_or(0)
}

/// The log directory's writer: appends entries, completes hash tiles, publishes checkpoints.
#[derive(Debug)]
pub struct TileWriter {
    dir: PathBuf,
    /// `staging/<bundle>`, open for appending.
    open: Arc<File>,
    bundle: u64,
    /// Bytes of the staging bundle written to its file.
    open_len: u64,
    /// Entries written to files (the staging bundle holds `size % WIDTH` of them).
    size: u64,
    /// Frames appended since the last flush, not written yet, and their leaf hashes.
    buf: Vec<(Vec<u8>, Hash)>,
    /// `partial[L]`: the hashes of level L's incomplete tile (fewer than 256).
    partial: Vec<Vec<Hash>>,
    /// Hash tiles written since the last checkpoint, to sync before the next is signed.
    unsynced: Vec<PathBuf>,
}

fn open_staging(dir: &Path, bundle: u64) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(staging_path(dir, bundle))
}

impl TileWriter {
    /// Opens (creating) the log in `dir`: seals a full staging bundle a crash left behind, cuts
    /// a torn tail off the one being filled, and writes again every hash tile past the size of
    /// the published checkpoint (tiles below it were synced before it was signed).
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join(STAGING))
            .with_context(|| format!("cannot create the audit log directory {}", dir.display()))?;
        std::fs::create_dir_all(dir.join("tile/entries"))?;
        let mut full = full_bundles(dir);
        // Staging bundles below `full` are leftovers of a rename that did reach the disk.
        for entry in std::fs::read_dir(dir.join(STAGING))? {
            let entry = entry?;
            let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if n < full {
                std::fs::remove_file(entry.path())?;
            }
        }
        let (file, open_len, leaves) = loop {
            let mut file = open_staging(dir, full)
                .with_context(|| format!("cannot open {}", staging_path(dir, full).display()))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            let (entries, used) = unframe(&bytes);
            if entries.len() as u64 >= WIDTH {
                // Full and synced (a bundle fills only through a sync) but not renamed yet.
                let end = frames_len(&entries[..WIDTH as usize]);
                file.set_len(end as u64)?;
                file.sync_all()?;
                seal(dir, full)?;
                full += 1;
                continue;
            }
            if used < bytes.len() {
                tracing::warn!(
                    kept = entries.len(),
                    cut_bytes = bytes.len() - used,
                    "the audit log's staging bundle ends in an incomplete entry (a crash mid-write, or a write that was never synced); it is cut back to the last complete entry, which was the last one acknowledged"
                );
                file.set_len(used as u64)?;
                file.sync_all()?;
            }
            let leaves = entries
                .iter()
                .map(|e| merkle::leaf_hash(e))
                .collect::<Vec<_>>();
            sync_staging(dir)?;
            break (file, used as u64, leaves);
        };
        let size = full * WIDTH + leaves.len() as u64;
        let mut writer = Self {
            dir: dir.to_owned(),
            open: Arc::new(file),
            bundle: full,
            open_len,
            size,
            buf: Vec::new(),
            partial: Vec::new(),
            unsynced: Vec::new(),
        };
        writer.rebuild_tiles(leaves, published_size(dir).min(size))?;
        Ok(writer)
    }

    /// Writes again the hash tiles covering leaves past `synced`, and fills `partial`.
    fn rebuild_tiles(&mut self, open: Vec<Hash>, synced: u64) -> anyhow::Result<()> {
        let reader = TileReader::new(&self.dir);
        let mut complete = self.size / WIDTH; // complete tiles at this level
        let mut level = 0u8;
        self.partial = vec![open];
        let mut span = WIDTH; // leaves under one tile of this level
        while complete > 0 {
            let from = (synced / span).min(complete);
            for n in from..complete {
                let hashes = reader.build_tile(level, n, self.size)?;
                let path = hash_tile_path(&self.dir, level, n);
                write_tile(&path, &hashes)?;
                self.unsynced.push(path);
            }
            let first = complete - complete % WIDTH;
            let mut up = Vec::new();
            for n in first..complete {
                up.push(merkle::root_of(&reader.hashes(level, n, self.size)?));
            }
            self.partial.push(up);
            complete /= WIDTH;
            level += 1;
            span = span.saturating_mul(WIDTH);
        }
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size + self.buf.len() as u64
    }

    /// Where the staging bundle's written bytes end: (bundle, bytes).
    pub fn position(&self) -> (u64, u64) {
        (self.bundle, self.open_len)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues an entry for the next [`Self::flush`].
    pub fn append(&mut self, entry: &[u8], leaf: Hash) {
        self.buf.push((entry.to_vec(), leaf));
    }

    /// Drops the entries queued since the last flush.
    pub fn discard(&mut self) {
        self.buf.clear();
    }

    /// Writes the queued entries to their staging bundles (opening the next when one fills)
    /// and the hash tiles they complete. Nothing is synced: the caller syncs the segments.
    pub fn flush(&mut self) -> std::io::Result<Vec<Segment>> {
        let mut segments = Vec::new();
        let mut queued = std::mem::take(&mut self.buf).into_iter().peekable();
        while queued.peek().is_some() {
            let room = (WIDTH - self.size % WIDTH) as usize;
            let mut bytes = Vec::new();
            let mut leaves = Vec::new();
            for (entry, leaf) in queued.by_ref().take(room) {
                frame(&mut bytes, &entry);
                leaves.push(leaf);
            }
            (&*self.open).write_all(&bytes)?;
            self.open_len += bytes.len() as u64;
            self.size += leaves.len() as u64;
            let sealed = self.size.is_multiple_of(WIDTH);
            segments.push(Segment {
                file: Arc::clone(&self.open),
                bundle: self.bundle,
                len: self.open_len,
                sealed,
            });
            self.partial[0].extend(leaves);
            if sealed {
                self.complete_tiles()?;
                self.bundle += 1;
                self.open = Arc::new(open_staging(&self.dir, self.bundle)?);
                self.open_len = 0;
            }
        }
        Ok(segments)
    }

    /// Level 0's tile is full: writes it, and every tile above that it completes in turn.
    fn complete_tiles(&mut self) -> std::io::Result<()> {
        let mut level = 0usize;
        let mut nodes = self.size;
        while self.partial[level].len() as u64 == WIDTH {
            nodes /= WIDTH;
            let tile = std::mem::take(&mut self.partial[level]);
            let path = hash_tile_path(&self.dir, level as u8, nodes - 1);
            write_tile(&path, &tile)?;
            self.unsynced.push(path);
            if self.partial.len() == level + 1 {
                self.partial.push(Vec::new());
            }
            self.partial[level + 1].push(merkle::root_of(&tile));
            level += 1;
        }
        Ok(())
    }

    /// The frontier of the written log, from the incomplete tiles.
    pub fn frontier(&self) -> Frontier {
        let size = self.size;
        let mut bytes = Vec::new();
        for h in (0..64u32).rev().filter(|h| size >> h & 1 == 1) {
            let level = h / HEIGHT;
            let start = (size >> (h + 1)) << (h + 1);
            let node = start >> (HEIGHT * level);
            let base = (size >> (HEIGHT * (level + 1))) << HEIGHT;
            let j = (node - base) as usize;
            let hashes = &self.partial[level as usize][j..j + (1 << (h % HEIGHT))];
            bytes.extend_from_slice(&merkle::root_of(hashes));
        }
        Frontier::from_bytes(size, &bytes).expect("one hash per set bit of the size")
    }

    /// Cuts the staging bundles back to `(bundle, len)`, the last position a sync covered:
    /// after a failed sync, the entries past it were refused and must not reappear at start.
    pub fn cut_back(&mut self, bundle: u64, len: u64) -> std::io::Result<()> {
        self.buf.clear();
        for n in bundle..=self.bundle {
            let keep = if n == bundle { len } else { 0 };
            let f = OpenOptions::new()
                .write(true)
                .open(staging_path(&self.dir, n));
            if let Ok(f) = f {
                f.set_len(keep)?;
                f.sync_all()?;
            }
        }
        Ok(())
    }

    /// Records that `count` entries from `first` were ingested from `source`; synced before
    /// they are written.
    pub fn add_run(&mut self, first: u64, count: u64, source: &str) -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.join(SOURCES))?;
        writeln!(f, "{first} {count} {source}")?;
        f.sync_data()?;
        sync_dir(&self.dir)
    }

    /// Publishes `note`, a checkpoint over every written entry, here and now (the entries
    /// must be durable already).
    pub fn publish(&mut self, note: &str) -> std::io::Result<()> {
        self.publication(note.to_owned()).publish()
    }

    /// What publishing `note`, a checkpoint over every entry written so far (not those
    /// appended since the last flush), needs: taken now, published by
    /// [`Publication::publish`] once the entries are durable, on another thread while this
    /// writer goes on.
    pub fn publication(&mut self, note: String) -> Publication {
        Publication {
            dir: self.dir.clone(),
            note,
            size: self.size,
            bundle: self.bundle,
            open_len: self.open_len,
            partial: self.partial.clone(),
            unsynced: std::mem::take(&mut self.unsynced),
        }
    }
}

/// A checkpoint to publish in the log directory, with the state of the tiles it covers.
#[derive(Debug)]
pub struct Publication {
    dir: PathBuf,
    note: String,
    pub size: u64,
    bundle: u64,
    open_len: u64,
    partial: Vec<Vec<Hash>>,
    unsynced: Vec<PathBuf>,
}

impl Publication {
    /// Writes the partial tiles the checkpoint needs, syncs every hash tile written since the
    /// last one, then writes the `checkpoint` file, each synced. The entries it covers must
    /// be durable.
    pub fn publish(self) -> std::io::Result<()> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for path in &self.unsynced {
            File::open(path)?.sync_data()?;
            dirs.push(path.parent().expect("a parent").to_owned());
        }
        let width = self.size % WIDTH;
        if width > 0 {
            // The bundle may have filled and been sealed since.
            let mut bytes = read_bundle(&self.dir, self.bundle)?;
            bytes.truncate(self.open_len as usize);
            let id = TileId {
                level: None,
                index: self.bundle,
                width,
            };
            write_atomic(&self.dir.join(id.path()), &bytes)?;
            dirs.push(
                self.dir
                    .join(id.path())
                    .parent()
                    .expect("a parent")
                    .to_owned(),
            );
        }
        let mut nodes = self.size;
        for (level, hashes) in self.partial.iter().enumerate() {
            if !hashes.is_empty() {
                let id = TileId {
                    level: Some(level as u8),
                    index: nodes >> HEIGHT,
                    width: hashes.len() as u64,
                };
                let path = self.dir.join(id.path());
                let bytes: Vec<u8> = hashes.iter().flatten().copied().collect();
                write_atomic(&path, &bytes)?;
                dirs.push(path.parent().expect("a parent").to_owned());
            }
            nodes >>= HEIGHT;
        }
        dirs.sort();
        dirs.dedup();
        for d in &dirs {
            sync_dir(d)?;
        }
        write_atomic(&self.dir.join(CHECKPOINT), self.note.as_bytes())?;
        sync_dir(&self.dir)
    }
}

fn write_tile(path: &Path, hashes: &[Hash]) -> std::io::Result<()> {
    let dir = path.parent().expect("tile paths have a parent");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().expect("a file name").to_string_lossy()
    ));
    let bytes: Vec<u8> = hashes.iter().flatten().copied().collect();
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The bytes of bundle `n`, sealed in `tile/entries/` or still in `staging/`.
fn read_bundle(dir: &Path, n: u64) -> std::io::Result<Vec<u8>> {
    let not_found = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    match std::fs::read(entries_path(dir, n)) {
        Err(e) if not_found(&e) => match std::fs::read(staging_path(dir, n)) {
            // Sealed between the two reads.
            Err(e) if not_found(&e) => std::fs::read(entries_path(dir, n)),
            read => read,
        },
        read => read,
    }
}

fn frames_len(entries: &[&[u8]]) -> usize {
    entries.iter().map(|e| 2 + e.len()).sum()
}

/// How many full bundles `dir` holds: they are sealed in order, so the first missing index is
/// found by a binary search over existence.
fn full_bundles(dir: &Path) -> u64 {
    let exists = |n: u64| entries_path(dir, n).is_file();
    if !exists(0) {
        return 0;
    }
    let mut hi = 1u64;
    while exists(hi) {
        hi *= 2;
    }
    let mut lo = hi / 2;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if exists(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Reads the log directory: entries and hashes of the first `size` entries, a size the caller
/// knows is durable.
#[derive(Debug, Clone)]
pub struct TileReader {
    dir: PathBuf,
}

impl TileReader {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entries of bundle `n` within the first `size` entries.
    pub fn bundle(&self, n: u64, size: u64) -> std::io::Result<Vec<Vec<u8>>> {
        let want = size.saturating_sub(n * WIDTH).min(WIDTH) as usize;
        if want == 0 {
            return Ok(Vec::new());
        }
        let bytes = read_bundle(&self.dir, n)?;
        let (entries, _) = unframe(&bytes);
        if entries.len() < want {
            return Err(std::io::Error::other(format!(
                "audit log bundle {n} holds {} entries, {want} expected; the log directory was altered or truncated (GET /admin/audit/verify)",
                entries.len()
            )));
        }
        Ok(entries[..want].iter().map(|e| e.to_vec()).collect())
    }

    /// Calls `f(seq, entry)` for the entries `from..=to` (seqs count from 1).
    pub fn for_each(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, &[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if from > to {
            return Ok(());
        }
        let mut seq = from;
        while seq <= to {
            let n = (seq - 1) / WIDTH;
            let entries = self.bundle(n, to)?;
            for (i, e) in entries.iter().enumerate() {
                let s = n * WIDTH + i as u64 + 1;
                if s >= seq {
                    f(s, e)?;
                }
            }
            seq = (n + 1) * WIDTH + 1;
        }
        Ok(())
    }

    /// The hashes of tile `n` of `level` within a log of `size` entries: read when the full
    /// tile is on disk, computed from the level below otherwise.
    pub fn hashes(&self, level: u8, n: u64, size: u64) -> std::io::Result<Vec<Hash>> {
        let nodes = size >> (HEIGHT * level as u32);
        if nodes >= (n + 1) * WIDTH
            && let Ok(bytes) = std::fs::read(hash_tile_path(&self.dir, level, n))
            && bytes.len() as u64 == WIDTH * 32
        {
            return Ok(bytes
                .chunks_exact(32)
                .map(|c| c.try_into().expect("32-byte chunks"))
                .collect());
        }
        self.build_tile(level, n, size)
    }

    /// Tile `n` of `level` computed from the level below (from the entries at level 0).
    pub fn build_tile(&self, level: u8, n: u64, size: u64) -> std::io::Result<Vec<Hash>> {
        if level == 0 {
            return Ok(self
                .bundle(n, size)?
                .iter()
                .map(|e| merkle::leaf_hash(e))
                .collect());
        }
        let below = size >> (HEIGHT * (level as u32 - 1));
        let children = (below / WIDTH).saturating_sub(n * WIDTH).min(WIDTH);
        (0..children)
            .map(|i| {
                self.hashes(level - 1, n * WIDTH + i, size)
                    .map(|h| merkle::root_of(&h))
            })
            .collect()
    }

    /// The hash of the complete subtree of `2^height` leaves from leaf `start`, in a log of
    /// `size` entries.
    pub fn complete(&self, start: u64, height: u32, size: u64) -> std::io::Result<Hash> {
        let level = height / HEIGHT;
        let node = start >> (HEIGHT * level);
        let tile = self.hashes(level as u8, node / WIDTH, size)?;
        let j = (node % WIDTH) as usize;
        let k = 1usize << (height % HEIGHT);
        tile.get(j..j + k)
            .map(merkle::root_of)
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "the audit log has no complete subtree of {} leaves at {start} within {size} entries",
                    1u64 << height
                ))
            })
    }

    /// MTH of the first `size` entries.
    pub fn root(&self, size: u64) -> std::io::Result<Hash> {
        merkle::range_root(0, size, &mut |s, h| self.complete(s, h, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_paths_are_the_specs() {
        assert_eq!(index_path(0), "000");
        assert_eq!(index_path(5), "005");
        assert_eq!(index_path(1000), "x001/000");
        assert_eq!(index_path(1234067), "x001/x234/067");
        let id = TileId {
            level: Some(1),
            index: 1234067,
            width: 5,
        };
        assert_eq!(id.path(), "tile/1/x001/x234/067.p/5");
        assert_eq!(TileId::parse("1/x001/x234/067.p/5"), Some(id));
        assert_eq!(
            TileId::parse("entries/012"),
            Some(TileId {
                level: None,
                index: 12,
                width: WIDTH
            })
        );
        for bad in [
            "0/x000/001",
            "0/12",
            "0/../000",
            "0/000.p/0",
            "0/000.p/256",
            "0/000.p/05",
            "01/000",
            "staging/000",
            "0/000/",
            "/0/000",
            "0/x001",
            "0/001.p/5/x",
        ] {
            assert_eq!(TileId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_torn_tail_stops_the_parse() {
        let mut b = Vec::new();
        frame(&mut b, b"{\"a\":1}");
        frame(&mut b, b"{\"b\":2}");
        let whole = b.len();
        assert_eq!(unframe(&b).0.len(), 2);
        b.extend_from_slice(&[0, 9, b'{']);
        assert_eq!(unframe(&b), (vec![&b"{\"a\":1}"[..], b"{\"b\":2}"], whole));
        b.truncate(whole);
        b.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(unframe(&b).1, whole);
    }

    #[test]
    fn a_crash_before_the_rename_or_mid_write_is_mended_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TileWriter::open(dir.path()).unwrap();
        let mut leaves = Vec::new();
        for i in 0..300 {
            let e = format!("{{\"n\":{i}}}");
            leaves.push(merkle::leaf_hash(e.as_bytes()));
            w.append(e.as_bytes(), leaves[i]);
        }
        // Written and synced, but the crash came before the full bundle was renamed.
        for s in w.flush().unwrap() {
            s.file.sync_data().unwrap();
        }
        drop(w);
        assert!(dir.path().join("staging/0").is_file());
        // And the next bundle's last write was torn.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("staging/1"))
            .unwrap();
        f.write_all(&[0, 40, b'{', b'"']).unwrap();
        let w = TileWriter::open(dir.path()).unwrap();
        assert_eq!(w.size(), 300);
        assert!(dir.path().join("tile/entries/000").is_file());
        assert!(!dir.path().join("staging/0").exists());
        assert_eq!(w.frontier().root(), merkle::root_of(&leaves));
        // The torn bytes are gone: the bundle is its 44 entries.
        let bytes = std::fs::read(dir.path().join("staging/1")).unwrap();
        let (entries, used) = unframe(&bytes);
        assert_eq!((entries.len(), used), (44, bytes.len()));
        // The sealed bundle holds its entries and nothing else.
        let sealed = std::fs::read(dir.path().join("tile/entries/000")).unwrap();
        let (entries, used) = unframe(&sealed);
        assert_eq!((entries.len(), used), (256, sealed.len()));
    }

    #[test]
    fn written_tiles_give_the_trees_root_and_reopen_to_the_same_frontier() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TileWriter::open(dir.path()).unwrap();
        let mut all = Vec::new();
        let mut frontier = Frontier::default();
        for round in [1usize, 255, 1, 300, 256 * 256 - 300, 3] {
            for _ in 0..round {
                let e = format!("{{\"n\":{}}}", all.len());
                let leaf = merkle::leaf_hash(e.as_bytes());
                w.append(e.as_bytes(), leaf);
                all.push(leaf);
                frontier.push(leaf);
            }
            for s in w.flush().unwrap() {
                s.file.sync_data().unwrap();
                if s.sealed {
                    seal(dir.path(), s.bundle).unwrap();
                }
            }
            assert_eq!(w.frontier().root(), frontier.root(), "{}", all.len());
            let r = TileReader::new(dir.path());
            assert_eq!(r.root(all.len() as u64).unwrap(), merkle::root_of(&all));
            let again = TileWriter::open(dir.path()).unwrap();
            assert_eq!(again.size(), all.len() as u64);
            assert_eq!(again.frontier().root(), frontier.root());
        }
        let r = TileReader::new(dir.path());
        let n = all.len() as u64;
        assert_eq!(r.root(65000).unwrap(), merkle::root_of(&all[..65000]));
        assert_eq!(
            r.complete(65536, 8, n).unwrap(),
            merkle::root_of(&all[65536..65792])
        );
        w.publish("origin\n65796\nroot\n\n").unwrap();
        assert_eq!(published_size(dir.path()), 65796);
        assert!(dir.path().join("tile/entries/257.p/4").is_file());
        assert!(dir.path().join("tile/0/257.p/4").is_file());
        assert!(dir.path().join("tile/1/001.p/1").is_file());
        assert!(dir.path().join("tile/2/000.p/1").is_file());
    }
}
