//! `cargo xtask bench-media`: the offline media verbs on about 2 GiB of image blobs, each
//! against what a user would otherwise run on the same files, in one run:
//! verify vs `sha256sum -c` and `openssl dgst -sha256`; pack vs `tar -c | zstd -3 -T0`;
//! import vs `skopeo copy` into a fresh registry. Times are the best of `--runs`, with warm
//! page cache; peak RSS from GNU time.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{root, run_checked};

#[derive(Debug, clap::Args)]
pub(crate) struct BenchMediaArgs {
    /// MiB of image blobs (split into 256 MiB layers).
    #[arg(long, default_value_t = 2048)]
    mib: u64,
    /// Runs per command; the best is reported.
    #[arg(long, default_value_t = 3)]
    runs: u32,
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An OCI layout with uncompressed, incompressible layers, written directly (fast and exact):
/// each layer a real tar holding one file of random bytes (the SBOM lists and hashes it).
fn layout(dir: &Path, mib: u64) -> anyhow::Result<()> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut layers = Vec::new();
    let layer_mib = 256u64;
    for _ in 0..mib.div_ceil(layer_mib) {
        let tmp = dir.join("layer.tmp");
        let mut f = std::io::BufWriter::new(fs::File::create(&tmp)?);
        let mut h = Sha256::new();
        let mut header = tar::Header::new_ustar();
        header.set_path(format!("data/layer-{}.bin", layers.len()))?;
        header.set_size(layer_mib << 20);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        h.update(header.as_bytes());
        f.write_all(header.as_bytes())?;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..layer_mib {
            for chunk in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            h.update(&buf);
            f.write_all(&buf)?;
        }
        // The end of the archive: two zero blocks.
        let end = [0u8; 1024];
        h.update(end);
        f.write_all(&end)?;
        f.flush()?;
        drop(f);
        let hex = hex::encode(h.finalize());
        fs::rename(&tmp, blobs.join(&hex))?;
        layers.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{hex}"), "size": (layer_mib << 20) + 1536}));
    }
    let config = serde_json::to_vec(
        &json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l["digest"].clone()).collect::<Vec<_>>()}, "config": {}}),
    )?;
    let chex = hex::encode(Sha256::digest(&config));
    fs::write(blobs.join(&chex), &config)?;
    let manifest = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{chex}"), "size": config.len()}, "layers": layers}),
    )?;
    let mhex = hex::encode(Sha256::digest(&manifest));
    fs::write(blobs.join(&mhex), &manifest)?;
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(
            &json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{mhex}"), "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}),
        )?,
    )?;
    Ok(())
}

/// Best wall time of `runs` runs of `make()`, and the peak RSS (KiB) of the last.
fn best(
    runs: u32,
    mut before: impl FnMut() -> anyhow::Result<()>,
    mut make: impl FnMut() -> Command,
) -> anyhow::Result<(Duration, u64)> {
    let mut best = Duration::MAX;
    let mut rss = 0;
    for _ in 0..runs {
        before()?;
        let inner = make();
        let mut cmd = Command::new("/usr/bin/time");
        cmd.arg("-f")
            .arg("MAXRSS %M")
            .arg(inner.get_program())
            .args(inner.get_args());
        if let Some(d) = inner.get_current_dir() {
            cmd.current_dir(d);
        }
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let t = Instant::now();
        let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
        let took = t.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("{:?} failed: {err}", inner);
        }
        rss = err
            .lines()
            .find_map(|l| l.strip_prefix("MAXRSS "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        best = best.min(took);
    }
    Ok((best, rss))
}

fn sh(script: &str, dir: &Path) -> Command {
    let mut c = Command::new("bash");
    c.args(["-c", script]).current_dir(dir);
    c
}

fn registry(dir: &Path) -> anyhow::Result<(Killed, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    fs::write(
        dir.join("config.yml"),
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        ),
    )?;
    let child = Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::blocking::get(format!("http://{addr}/v2/")).is_err() {
        if Instant::now() > deadline {
            bail!("the registry did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((Killed(child), addr))
}

pub(crate) fn run(args: BenchMediaArgs) -> anyhow::Result<()> {
    let _tools = crate::tools::install_all()?;
    let tool = crate::build_binaries(true)?.join("meshguard-bundle");
    let work = root().join(".bench-media");
    write_sources(&work, args.mib)?;
    let bench = Bench {
        media: work.join("media"),
        tool,
        work,
        runs: args.runs,
    };
    bench.generate_key()?;
    let create = bench.create()?;
    let (files, bytes) = media_size(&bench.media)?;
    // Warm the page cache once, as every contender reads the same files after it.
    run_checked(&mut sh(
        "cat $(cut -c67- SHA256SUMS) > /dev/null",
        &bench.media,
    ))?;
    let (verify, sha256sum, openssl) = bench.verify()?;
    let (pack, tarzstd) = bench.pack()?;
    let (import, skopeo) = bench.import()?;
    let results = Results {
        create,
        verify,
        sha256sum,
        openssl,
        pack,
        tarzstd,
        import,
        skopeo,
    };
    results.print(args.runs, files, bytes);
    Ok(())
}

/// The sources of the media in an emptied `work`: the layout of `mib` MiB, media.yaml and the
/// key's passphrase.
fn write_sources(work: &Path, mib: u64) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(work)?;
    eprintln!("bench-media: writing {mib} MiB of image layers");
    layout(&work.join("layout"), mib)?;
    fs::write(
        work.join("media.yaml"),
        "schema: meshguard.media/v1\nproduct: meshguard\nversion: 0.0.0-bench\nimages:\n  - ref: meshguard/bench:1\n    from: oci:layout:bench\n",
    )?;
    fs::write(work.join("pass"), "bench-passphrase")?;
    Ok(())
}

/// The number of files on the media and their bytes, from its SHA256SUMS.
fn media_size(media: &Path) -> anyhow::Result<(u64, u64)> {
    let files: u64 = fs::read_to_string(media.join("SHA256SUMS"))?
        .lines()
        .count() as u64;
    let bytes: u64 = fs::read_to_string(media.join("SHA256SUMS"))?
        .lines()
        .filter_map(|l| l.get(66..))
        .map(|p| media.join(p).metadata().map_or(0, |m| m.len()))
        .sum();
    Ok((files, bytes))
}

/// Each verb of `meshguard-bundle` in `work`, timed against its peers, best of `runs`.
struct Bench {
    tool: PathBuf,
    work: PathBuf,
    media: PathBuf,
    runs: u32,
}

/// (best wall time, peak RSS in KiB)
type Timed = (Duration, u64);

impl Bench {
    fn bundle(&self, a: &[&str]) -> Command {
        let mut c = Command::new(&self.tool);
        c.args(a).current_dir(&self.work);
        c
    }

    fn generate_key(&self) -> anyhow::Result<()> {
        run_checked(
            self.bundle(&[
                "keys",
                "generate",
                "--secret",
                "k.key",
                "--public",
                "k.pub",
                "--passphrase-file",
                "pass",
            ])
            .stdout(Stdio::null()),
        )
    }

    /// `meshguard-bundle create`, run once (it writes the media the others read).
    fn create(&self) -> anyhow::Result<(Duration, u64)> {
        best(
            1,
            || Ok(()),
            || {
                self.bundle(&[
                    "create",
                    "--manifest",
                    "media.yaml",
                    "--out",
                    "media",
                    "--key",
                    "k.key",
                    "--passphrase-file",
                    "pass",
                ])
            },
        )
    }

    /// `meshguard-bundle verify`, `sha256sum -c` and `openssl dgst -sha256` of every file.
    fn verify(&self) -> anyhow::Result<(Timed, Timed, Timed)> {
        let none = || Ok(());
        let verify = best(self.runs, none, || {
            self.bundle(&["verify", "media", "--pubkey", "k.pub"])
        })?;
        let sha256sum = best(self.runs, none, || {
            sh("sha256sum -c --quiet SHA256SUMS", &self.media)
        })?;
        let openssl = best(self.runs, none, || {
            sh(
                "cut -c67- SHA256SUMS | xargs openssl dgst -sha256 > /dev/null",
                &self.media,
            )
        })?;
        Ok((verify, sha256sum, openssl))
    }

    /// `meshguard-bundle pack` and `tar -c | zstd -3 -T0`, each writing afresh.
    fn pack(&self) -> anyhow::Result<(Timed, Timed)> {
        let pack = best(
            self.runs,
            || {
                let _ = sh("rm -f ../m.tar.zst*", &self.media).status();
                Ok(())
            },
            || {
                self.bundle(&[
                    "pack",
                    "media",
                    "--out",
                    "m.tar.zst",
                    "--key",
                    "k.key",
                    "--passphrase-file",
                    "pass",
                ])
            },
        )?;
        let tarzstd = best(
            self.runs,
            || {
                let _ = sh("rm -f ../peer.tar.zst", &self.media).status();
                Ok(())
            },
            || {
                sh(
                    "tar -cf - media | zstd -3 -T0 -q -o peer.tar.zst",
                    &self.work,
                )
            },
        )?;
        Ok((pack, tarzstd))
    }

    /// `meshguard-bundle import` and `skopeo copy`, each into a fresh registry every run.
    fn import(&self) -> anyhow::Result<(Timed, Duration)> {
        let none = || Ok(());
        let mut import_best = (Duration::MAX, 0u64);
        let mut skopeo_best = Duration::MAX;
        for _ in 0..self.runs {
            let (_reg, addr) = registry(&self.work.join("reg-ours"))?;
            let _ = fs::remove_dir_all(self.work.join("site"));
            let r = best(1, none, || {
                self.bundle(&[
                    "import",
                    "media",
                    "--pubkey",
                    "k.pub",
                    "--registry",
                    &addr,
                    "--insecure",
                    "--dest",
                    "site",
                ])
            })?;
            import_best = (import_best.0.min(r.0), r.1);
            let (_reg2, addr2) = registry(&self.work.join("reg-skopeo"))?;
            let s = best(1, none, || {
                let mut c = Command::new("skopeo");
                c.args(["copy", "--quiet", "--dest-tls-verify=false"])
                    .arg(format!(
                        "oci:{}:meshguard/bench:1",
                        self.media.join("images").display()
                    ))
                    .arg(format!("docker://{addr2}/meshguard/bench:1"));
                c
            })?;
            skopeo_best = skopeo_best.min(s.0);
        }
        Ok((import_best, skopeo_best))
    }
}

struct Results {
    create: Timed,
    verify: Timed,
    sha256sum: Timed,
    openssl: Timed,
    pack: Timed,
    tarzstd: Timed,
    import: Timed,
    skopeo: Duration,
}

impl Results {
    /// The media's size, the table of best times, throughput and peak RSS, and the ratios.
    fn print(&self, runs: u32, files: u64, bytes: u64) {
        let gib = bytes as f64 / (1u64 << 30) as f64;
        let row = |name: &str, d: Duration, rss: Option<u64>| {
            println!(
                "| {name} | {:.2} s | {:.2} GiB/s | {} |",
                d.as_secs_f64(),
                gib / d.as_secs_f64(),
                rss.map_or("—".into(), |k| format!("{} MiB", k / 1024))
            );
        };
        println!(
            "\nmedia: {files} files, {bytes} bytes ({gib:.2} GiB); {} cores",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        println!("| command | best of {runs} | throughput | peak RSS |\n|---|---|---|---|");
        row(
            "meshguard-bundle create (1 run)",
            self.create.0,
            Some(self.create.1),
        );
        row(
            "meshguard-bundle verify",
            self.verify.0,
            Some(self.verify.1),
        );
        row(
            "sha256sum -c SHA256SUMS",
            self.sha256sum.0,
            Some(self.sha256sum.1),
        );
        row("openssl dgst -sha256 (all files)", self.openssl.0, None);
        row("meshguard-bundle pack", self.pack.0, Some(self.pack.1));
        row("tar -c | zstd -3 -T0", self.tarzstd.0, None);
        row(
            "meshguard-bundle import (fresh registry)",
            self.import.0,
            Some(self.import.1),
        );
        row(
            "skopeo copy oci: → docker:// (fresh registry)",
            self.skopeo,
            None,
        );
        println!(
            "\nverify is {:.1}x sha256sum -c and {:.1}x openssl; pack takes {:.2}x tar|zstd; import takes {:.2}x skopeo",
            self.sha256sum.0.as_secs_f64() / self.verify.0.as_secs_f64(),
            self.openssl.0.as_secs_f64() / self.verify.0.as_secs_f64(),
            self.pack.0.as_secs_f64() / self.tarzstd.0.as_secs_f64(),
            self.import.0.as_secs_f64() / self.skopeo.as_secs_f64()
        );
    }
}
