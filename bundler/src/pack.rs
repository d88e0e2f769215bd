//! `pack` and `unpack`: one deterministic tar, compressed with multi-threaded zstd, split into
//! volumes by plain byte ranges (`cat F.tar.zst.[0-9][0-9][0-9] | zstd -d | tar -x` works with stock tools),
//! plus a signed index naming each volume's size and hash.
//!
//! The tar is reproducible: entries sorted by path, owner 0:0, mode 0644 (0755 for
//! executables), modification time `SOURCE_DATE_EPOCH` (or 0), no directory entries. `unpack`
//! checks the index signature and every volume's hash before it extracts a single byte, and
//! refuses an archive that would expand past the size the signed index records.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys::{MediaKey, MediaPublicKey};
use crate::{BundleError, archive, fsx};

pub const INDEX_FORMAT: &str = "meshguard.volumes/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeIndex {
    pub format: String,
    /// The directory name inside the tar.
    pub media: String,
    /// Bytes of the uncompressed tar: the most `unpack` will ever expand to.
    pub tar_size: u64,
    pub compressed_size: u64,
    pub volumes: Vec<Volume>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// Parses `512M`, `4G`, `650MiB`, or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 4G or 650M"))?;
    let mult = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use K, M, G or T")),
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if v < 1 << 20 {
        return Err(format!(
            "{s:?} is under 1 MiB; volumes that small are a mistake"
        ));
    }
    Ok(v)
}

/// Counts what passes through into a tar stream.
struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hands what is written to another thread in pieces of about 1 MiB.
struct ChannelWriter {
    tx: Option<mpsc::SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
}

const PIECE: usize = 1 << 20;

impl ChannelWriter {
    fn new(tx: mpsc::SyncSender<Vec<u8>>) -> Self {
        Self {
            tx: Some(tx),
            buf: Vec::with_capacity(PIECE),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE));
        self.tx
            .as_ref()
            .ok_or_else(|| io::Error::other("the channel is closed"))?
            .send(piece)
            .map_err(|_| io::Error::other("the next stage stopped"))
    }

    /// Sends the rest and closes the channel, so the next stage sees the end.
    fn finish(&mut self) -> io::Result<()> {
        self.send()?;
        self.tx = None;
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = PIECE - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == PIECE {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Splits a byte stream into `.partial` volume files of `size` bytes, hashing each.
struct Volumes {
    base: PathBuf,
    size: Option<u64>,
    current: Option<(File, Sha256, u64, PathBuf)>,
    done: Vec<(PathBuf, Volume)>,
}

impl Volumes {
    fn name(&self, i: usize) -> PathBuf {
        match self.size {
            None => self.base.clone(),
            Some(_) => {
                let mut n = self.base.as_os_str().to_owned();
                n.push(format!(".{i:03}"));
                PathBuf::from(n)
            }
        }
    }

    fn open_next(&mut self) -> io::Result<()> {
        let final_path = self.name(self.done.len());
        let mut partial = final_path.as_os_str().to_owned();
        partial.push(".partial");
        let f = File::create(PathBuf::from(&partial))?;
        self.current = Some((f, Sha256::new(), 0, final_path));
        Ok(())
    }

    fn close_current(&mut self) -> io::Result<()> {
        if let Some((f, h, n, final_path)) = self.current.take() {
            f.sync_all()?;
            let name = final_path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            self.done.push((
                final_path,
                Volume {
                    name,
                    size: n,
                    sha256: hex::encode(h.finalize()),
                },
            ));
        }
        Ok(())
    }
}

impl Write for Volumes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.current.is_none() {
            self.open_next()?;
        }
        let limit = self.size.unwrap_or(u64::MAX);
        let (f, h, n, _) = self.current.as_mut().expect("opened");
        let room = (limit - *n).min(buf.len() as u64) as usize;
        f.write_all(&buf[..room])?;
        h.update(&buf[..room]);
        *n += room as u64;
        if *n == limit {
            self.close_current()?;
        }
        Ok(room)
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.current {
            Some((f, ..)) => f.flush(),
            None => Ok(()),
        }
    }
}

fn partial_of(p: &Path) -> PathBuf {
    let mut n = p.as_os_str().to_owned();
    n.push(".partial");
    PathBuf::from(n)
}

/// What `pack` wrote.
#[derive(Debug)]
pub struct Packed {
    pub index: PathBuf,
    pub volumes: Vec<PathBuf>,
    pub info: VolumeIndex,
}

pub fn pack(
    media_dir: &Path,
    out: &Path,
    volume_size: Option<u64>,
    source_date_epoch: Option<i64>,
    level: i32,
    key: &MediaKey,
) -> Result<Packed, BundleError> {
    let name = media_dir
        .canonicalize()
        .map_err(|e| BundleError::io("open", media_dir, e))?
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let files = fsx::walk(media_dir)?;
    let total: u64 = files
        .iter()
        .map(|f| media_dir.join(f).metadata().map_or(0, |m| m.len()))
        .sum();
    fsx::ensure_space(
        out.parent().unwrap_or(Path::new(".")),
        total,
        "the packed archive",
    )?;
    let index_path = index_path(out);
    if out.exists() || index_path.exists() {
        return Err(BundleError::Input(format!(
            "{} exists; choose another --out",
            out.display()
        )));
    }
    let mtime = source_date_epoch.unwrap_or(0).max(0) as u64;
    let vols = Volumes {
        base: out.to_owned(),
        size: volume_size,
        current: None,
        done: Vec::new(),
    };
    let bar = crate::progress::bytes(total, "packing");
    let tar = TarOf {
        media_dir,
        files: &files,
        name: &name,
        mtime,
        bar: &bar,
    };
    let (tar_size, vols) = pipeline(&tar, vols, level, out)?;
    bar.finish_and_clear();
    let info = VolumeIndex {
        format: INDEX_FORMAT.into(),
        media: name,
        tar_size,
        compressed_size: vols.done.iter().map(|(_, v)| v.size).sum(),
        volumes: vols.done.iter().map(|(_, v)| v.clone()).collect(),
    };
    let volumes = finish(&vols, &info, &index_path, mtime, key)?;
    Ok(Packed {
        index: index_path,
        volumes,
        info,
    })
}

/// What the tar stream holds: the media's files under its directory's name.
struct TarOf<'a> {
    media_dir: &'a Path,
    files: &'a [String],
    name: &'a str,
    /// The one mtime of every entry.
    mtime: u64,
    bar: &'a indicatif::ProgressBar,
}

/// Three stages, so reading and framing, compressing, and hashing and writing the volumes
/// overlap as `tar | zstd > file` does across processes: a tar thread, this thread feeding
/// zstd (which compresses on its own worker threads), and a volume thread. The tar's size and
/// the volumes written.
fn pipeline(
    tar: &TarOf<'_>,
    vols: Volumes,
    level: i32,
    out: &Path,
) -> Result<(u64, Volumes), BundleError> {
    let (tar_tx, tar_rx) = mpsc::sync_channel::<Vec<u8>>(8);
    let (vol_tx, vol_rx) = mpsc::sync_channel::<Vec<u8>>(8);
    std::thread::scope(|scope| -> Result<(u64, Volumes), BundleError> {
        let framing = scope.spawn(|| frame_tar(tar, tar_tx));
        let writing = scope.spawn(move || -> io::Result<Volumes> {
            let mut vols = vols;
            for chunk in vol_rx {
                vols.write_all(&chunk)?;
            }
            vols.close_current()?;
            Ok(vols)
        });
        let compressed = compress(tar_rx, vol_tx, level);
        // A stage that stops makes the one before it fail with "the next stage stopped", so
        // the cause is the furthest stage downstream that failed.
        let tar_size = framing.join().expect("the tar thread does not panic");
        let vols = writing
            .join()
            .expect("the volume thread does not panic")
            .map_err(|e| BundleError::io("write", out, e))?;
        compressed.map_err(|e| BundleError::Archive(format!("zstd: {e}")))?;
        Ok((tar_size?, vols))
    })
}

/// The tar stage: every file as a deterministic entry, into `tx`. The tar's size.
fn frame_tar(t: &TarOf<'_>, tx: mpsc::SyncSender<Vec<u8>>) -> Result<u64, BundleError> {
    let counting = CountingWriter {
        inner: ChannelWriter::new(tx),
        count: 0,
    };
    let mut tar = tar::Builder::new(counting);
    tar.mode(tar::HeaderMode::Deterministic);
    for rel in t.files {
        let path = t.media_dir.join(rel);
        let meta = path
            .metadata()
            .map_err(|e| BundleError::io("read", &path, e))?;
        let mut header = entry_header(&meta, t.mtime);
        let f = t
            .bar
            .wrap_read(File::open(&path).map_err(|e| BundleError::io("read", &path, e))?);
        tar.append_data(
            &mut header,
            format!("{}/{rel}", t.name),
            BufReader::with_capacity(1 << 20, f),
        )
        .map_err(|e| BundleError::Archive(format!("cannot add {rel} to the archive: {e}")))?;
    }
    let mut counting = tar
        .into_inner()
        .map_err(|e| BundleError::Archive(format!("tar: {e}")))?;
    counting
        .inner
        .finish()
        .map_err(|e| BundleError::Archive(format!("tar: {e}")))?;
    Ok(counting.count)
}

/// A regular file's entry: its size, the one mtime, owner 0, mode 0755 or 0644.
fn entry_header(meta: &fs::Metadata, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(meta.len());
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    #[cfg(unix)]
    let exec = {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    };
    #[cfg(not(unix))]
    let exec = false;
    header.set_mode(if exec { 0o755 } else { 0o644 });
    header.set_entry_type(tar::EntryType::Regular);
    header
}

/// The zstd stage (with a checksum, on every core): from `rx` into `tx`.
fn compress(
    rx: mpsc::Receiver<Vec<u8>>,
    tx: mpsc::SyncSender<Vec<u8>>,
    level: i32,
) -> io::Result<()> {
    let mut enc = zstd::stream::write::Encoder::new(ChannelWriter::new(tx), level)?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    enc.multithread(workers)?;
    enc.include_checksum(true)?;
    for chunk in rx {
        enc.write_all(&chunk)?;
    }
    enc.finish()?.finish()
}

/// Signs the index, renames the volumes into place, then writes the signature and the index
/// (last: an index means a whole archive). The volumes' paths.
fn finish(
    vols: &Volumes,
    info: &VolumeIndex,
    index_path: &Path,
    mtime: u64,
    key: &MediaKey,
) -> Result<Vec<PathBuf>, BundleError> {
    let mut index_bytes = serde_json::to_vec_pretty(info).expect("serializes");
    index_bytes.push(b'\n');
    let sig = key.sign(
        &index_bytes,
        &format!(
            "timestamp:{mtime}\tfile:{}",
            index_path.file_name().unwrap_or_default().to_string_lossy()
        ),
    )?;
    let mut paths = Vec::new();
    for (final_path, _) in &vols.done {
        fs::rename(partial_of(final_path), final_path)
            .map_err(|e| BundleError::io("rename", final_path, e))?;
        paths.push(final_path.clone());
    }
    fsx::write_atomic(&sig_path(index_path), sig.as_bytes())?;
    fsx::write_atomic(index_path, &index_bytes)?;
    Ok(paths)
}

/// `F.tar.zst` → `F.tar.zst.index.json`
pub fn index_path(out: &Path) -> PathBuf {
    let mut n = out.as_os_str().to_owned();
    n.push(".index.json");
    PathBuf::from(n)
}

fn sig_path(index: &Path) -> PathBuf {
    let mut n = index.as_os_str().to_owned();
    n.push(".minisig");
    PathBuf::from(n)
}

/// Checks the signed index and every volume (size, hash) before anything is extracted.
pub fn check_volumes(
    archive: &Path,
    key: &MediaPublicKey,
) -> Result<(VolumeIndex, Vec<PathBuf>), BundleError> {
    let index_path = index_path(archive);
    let what = index_path.display().to_string();
    let bytes = fs::read(&index_path).map_err(|e| BundleError::io("read", &index_path, e))?;
    let sig = fs::read_to_string(sig_path(&index_path))
        .map_err(|e| BundleError::io("read", &sig_path(&index_path), e))?;
    key.verify(&bytes, &sig, &what)?;
    let info: VolumeIndex =
        serde_json::from_slice(&bytes).map_err(|e| BundleError::Archive(format!("{what}: {e}")))?;
    if info.format != INDEX_FORMAT {
        return Err(BundleError::Archive(format!(
            "{what}: format {:?} is not {INDEX_FORMAT}",
            info.format
        )));
    }
    let dir = archive.parent().unwrap_or(Path::new("."));
    let mut paths = Vec::new();
    for (i, v) in info.volumes.iter().enumerate() {
        if fsx::safe_relative(&v.name).is_none_or(|p| p.components().count() != 1) {
            return Err(BundleError::Archive(format!(
                "{what}: volume name {:?} is not a plain file name",
                v.name
            )));
        }
        let p = dir.join(&v.name);
        let (hex, size) = match fsx::sha256_file(&p) {
            Ok(h) => h,
            Err(_) => {
                return Err(BundleError::Archive(format!(
                    "volume {} of {} ({}) is missing; copy it from the original media",
                    i + 1,
                    info.volumes.len(),
                    v.name
                )));
            }
        };
        if size != v.size || hex != v.sha256 {
            return Err(BundleError::Archive(format!(
                "volume {} of {} ({}) is damaged or out of order: {size} bytes with sha256 {hex}, \
                 the signed index says {} bytes with sha256 {}; copy that volume again",
                i + 1,
                info.volumes.len(),
                v.name,
                v.size,
                v.sha256
            )));
        }
        paths.push(p);
    }
    Ok((info, paths))
}

/// Reads volumes one after another.
struct Chain {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<File>,
}

impl Read for Chain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                match self.files.next() {
                    Some(p) => self.current = Some(File::open(p)?),
                    None => return Ok(0),
                }
            }
            let n = self.current.as_mut().expect("set").read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            self.current = None;
        }
    }
}

/// Verifies the volumes, then extracts the media into `dest` (created; must not exist).
pub fn unpack(
    archive: &Path,
    dest: &Path,
    key: &MediaPublicKey,
) -> Result<(VolumeIndex, PathBuf), BundleError> {
    let (info, paths) = check_volumes(archive, key)?;
    fsx::ensure_space(dest, info.tar_size, "unpacking")?;
    let count = Arc::new(AtomicU64::new(0));
    let chained = archive::Counting {
        inner: Chain {
            files: paths.into_iter(),
            current: None,
        },
        count: Arc::clone(&count),
    };
    let decoder = zstd::stream::read::Decoder::new(chained)
        .map_err(|e| BundleError::Archive(format!("zstd: {e}")))?;
    let limits = archive::Limits {
        // The signed index says how large the tar is; file content is strictly less.
        max_bytes: info.tar_size,
        max_ratio: u64::MAX,
        ..archive::Limits::default()
    };
    let staging = dest.join(".unpack");
    fs::create_dir_all(dest).map_err(|e| BundleError::io("create", dest, e))?;
    archive::extract(
        decoder,
        &staging,
        limits,
        Some(count),
        &archive.display().to_string(),
    )?;
    let inner = staging.join(&info.media);
    if fsx::safe_relative(&info.media).is_none_or(|p| p.components().count() != 1)
        || !inner.is_dir()
    {
        let _ = fs::remove_dir_all(&staging);
        return Err(BundleError::Archive(format!(
            "the archive does not hold the directory {} its index names",
            info.media
        )));
    }
    let target = dest.join(&info.media);
    if target.exists() {
        let _ = fs::remove_dir_all(&staging);
        return Err(BundleError::Input(format!(
            "{} exists; unpack into an empty directory",
            target.display()
        )));
    }
    fs::rename(&inner, &target).map_err(|e| BundleError::io("rename", &target, e))?;
    let _ = fs::remove_dir_all(&staging);
    Ok((info, target))
}
