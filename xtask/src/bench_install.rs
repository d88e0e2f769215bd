//! `cargo xtask bench-install`: how long a disconnected site takes to install from media, per
//! step, with no network (`unshare -n`, loopback only). The product's acceptance target is 60
//! minutes including data initialization; ours is 10 minutes on a 2-core machine.
//!
//! The media is built first (not timed as the site's: it is the release engineer's side), then
//! one fresh install runs inside the namespace: a site registry on loopback, `meshguard-bundle
//! install` through every step (no license on this media, so no activation round trip), and
//! the per-step times are read from the signed transcript.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchInstallArgs {
    /// Use the debug binaries (faster to build); the default is the release build, what ships.
    #[arg(long)]
    debug: bool,
    /// Work directory (emptied first).
    #[arg(long, default_value = "target/bench-install")]
    dir: PathBuf,
}

pub(crate) fn run(args: BenchInstallArgs) -> anyhow::Result<()> {
    let tools = crate::tools::install_all()?;
    let profile = if args.debug { "debug" } else { "release" };
    let bins = crate::build_binaries(!args.debug)?;
    let dir = crate::root().join(&args.dir);
    empty(&dir)?;
    let bundle = bins.join("meshguard-bundle");
    let media_bytes = build_media(&bins, &dir)?;
    write_site_files(&dir)?;
    let (out, wall) = install_under_unshare(&tools.bin, &bundle, &dir)?;
    let transcript = read_transcript(&out)?;
    print_results(profile, media_bytes, &transcript, wall);
    Ok(())
}

const PASSPHRASE: &str = "bench-install-passphrase-not-secret";

fn empty(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// The release engineer's side, timed apart: the product images, a media and a site key, and
/// the signed media; returns the media's size in bytes. The gateway is a development build
/// (`create --development`, whatever MESHGUARD_VENDOR_PUBKEY says): the install runs with no
/// license, and a release build would freeze the admin writes its smoke tests make.
fn build_media(bins: &Path, dir: &Path) -> anyhow::Result<u64> {
    let t = Instant::now();
    crate::run_checked(
        crate::images::images_command(bins, &dir.join("layout"), "meshguard")?
            .env_remove("MESHGUARD_VENDOR_PUBKEY"),
    )?;
    write_manifest(bins, dir)?;
    fs::write(dir.join("passphrase"), PASSPHRASE)?;
    let bundle_cmd = |args: &[&str]| {
        let mut c = Command::new(bins.join("meshguard-bundle"));
        c.args(args)
            .current_dir(dir)
            .env("MESHGUARD_BUNDLE_PASSPHRASE", PASSPHRASE)
            .env_remove("SOURCE_DATE_EPOCH");
        c
    };
    for (sk, pk) in [("media.key", "media.pub"), ("site.key", "site.pub")] {
        crate::run_checked(&mut bundle_cmd(&[
            "keys", "generate", "--secret", sk, "--public", pk,
        ]))?;
    }
    crate::run_checked(&mut bundle_cmd(&[
        "create",
        "--manifest",
        "media.yaml",
        "--out",
        "media",
        "--key",
        "media.key",
        "--development",
    ]))?;
    println!(
        "media built in {:.1}s (images, chart, provider, modules, SBOMs, signatures)",
        t.elapsed().as_secs_f64()
    );
    Ok(walk_size(&dir.join("media")))
}

/// media.yaml: the images from the layout, the chart, the provider, modules, policies and the
/// egress allowlist (the air-gapped profile runs the egress proxy, and the install's smoke test
/// checks it denies); no license, so the install needs no activation round trip.
fn write_manifest(bins: &Path, dir: &Path) -> anyhow::Result<()> {
    let r = crate::root();
    let v = env!("CARGO_PKG_VERSION");
    let egress = dir.join("egress.json");
    fs::write(&egress, EGRESS).context("cannot write egress.json")?;
    fs::write(
        dir.join("media.yaml"),
        format!(
            "schema: meshguard.media/v1\nproduct: meshguard\nversion: {v}\nprofile: air-gapped\nimages:\n  - ref: meshguard/gateway:{v}\n    from: oci:{l}:meshguard/gateway:{v}\n  - ref: meshguard/tools:{v}\n    from: oci:{l}:meshguard/tools:{v}\nchart: {r}/helm/meshguard-gateway\nterraform:\n  provider:\n    version: {v}\n    binaries: {{linux_amd64: {p}}}\n  modules: {r}/modules\npolicies: {r}/examples/policies\negress: {e}\n",
            l = dir.join("layout").display(),
            r = r.display(),
            p = bins.join("terraform-provider-meshguard").display(),
            e = egress.display()
        ),
    )
    .context("cannot write media.yaml")
}

/// The site's egress allowlist: one destination its agents may reach.
const EGRESS: &str = r#"{"format": "meshguard-egress-allowlist/v1", "version": 1, "destinations": [{"host": "records.site.internal", "ports": [443], "region": "local"}]}"#;

/// The site's side: its secrets, bootstrap variables, site file, registry and podman
/// configuration.
fn write_site_files(dir: &Path) -> anyhow::Result<()> {
    let files = [
        ("admin-token", "bench-admin-token-0123456789abcdef0123".to_owned()),
        ("jwt-secret", "bench-jwt-secret-0123456789abcdef01234567".to_owned()),
        (
            "agents.tfvars.json",
            r#"{"agents": {"clinical-assistant": {"trust_tier": "verified"}, "records-bot": {"trust_tier": "unverified"}}}"#.to_owned(),
        ),
        (
            "site.yaml",
            "release: bench-site\nprofile: air-gapped\nregistry: {address: \"127.0.0.1:5000\", insecure: true}\nport: 18090\nstateDir: state\nsecrets: {adminTokenFile: admin-token, jwtSecretFile: jwt-secret}\ntranscriptKey: site.key\nenvironment: {region: local}\nbootstrap: {module: bootstrap, varFile: agents.tfvars.json}\n".to_owned(),
        ),
        (
            "registry.yml",
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:5000\n",
                dir.join("registry").display()
            ),
        ),
        (
            "containers.conf",
            "[containers]\ndefault_ulimits = []\ncgroupns = \"host\"\n[engine]\nruntime = \"runc\"\n".to_owned(),
        ),
    ];
    for (name, text) in files {
        fs::write(dir.join(name), text).with_context(|| format!("cannot write {name}"))?;
    }
    Ok(())
}

/// Inside a network namespace with loopback only: the registry, the install (timed), then
/// everything removed. Returns what the install printed and its wall-clock seconds.
fn install_under_unshare(
    tools_bin: &Path,
    bundle: &Path,
    dir: &Path,
) -> anyhow::Result<(String, f64)> {
    let script = format!(
        r#"set -u
ip link set lo up
docker-registry serve registry.yml >/dev/null 2>&1 & REG=$!
for i in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/5000) 2>/dev/null && break; sleep 0.05; done
start=$(date +%s.%N)
{bundle} install media --site site.yaml --pubkey media.pub > install.out 2>&1; rc=$?
end=$(date +%s.%N)
echo "$start $end" > install.time
for f in state/deploy/*/*.yaml; do podman kube down "$f" >/dev/null 2>&1; done
podman volume ls -q | grep '^bench-site' | xargs -r podman volume rm -f >/dev/null
podman secret rm bench-site-secrets >/dev/null 2>&1
kill $REG
exit $rc
"#,
        bundle = bundle.display()
    );
    fs::write(dir.join("install.sh"), script)?;
    let status = Command::new("unshare")
        .args(["-n", "bash", "install.sh"])
        .current_dir(dir)
        .env("CONTAINERS_CONF", dir.join("containers.conf"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                tools_bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("MESHGUARD_BUNDLE_PASSPHRASE", PASSPHRASE)
        .status()
        .context("cannot run unshare -n")?;
    let out = fs::read_to_string(dir.join("install.out")).unwrap_or_default();
    if !status.success() {
        bail!("the install failed:\n{out}");
    }
    let times = fs::read_to_string(dir.join("install.time"))?;
    let mut it = times
        .split_whitespace()
        .map(|s| s.parse::<f64>().unwrap_or(0.0));
    let wall = match (it.next(), it.next()) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    Ok((out, wall))
}

/// The signed transcript the install named in its output.
fn read_transcript(out: &str) -> anyhow::Result<Value> {
    let json = out
        .lines()
        .find_map(|l| l.strip_prefix("transcript: "))
        .and_then(|l| l.split(" (signed").next())
        .context("no transcript")?;
    Ok(serde_json::from_slice(&fs::read(json)?)?)
}

fn print_results(profile: &str, media_bytes: u64, transcript: &Value, wall: f64) {
    println!(
        "\nfresh install under unshare -n, {profile} binaries, media of {:.1} MiB:",
        media_bytes as f64 / 1048576.0
    );
    for s in transcript["steps"].as_array().into_iter().flatten() {
        println!(
            "  {}. {:<24} {:>7.2}s",
            s["step"],
            s["name"].as_str().unwrap_or(""),
            s["seconds"].as_f64().unwrap_or(0.0)
        );
    }
    println!("  whole command (wall clock) {wall:>7.2}s   target 600 s (the product's: 3600 s)");
}

fn walk_size(p: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(p).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            total += walk_size(&path);
        } else if let Ok(m) = e.metadata() {
            total += m.len();
        }
    }
    total
}
