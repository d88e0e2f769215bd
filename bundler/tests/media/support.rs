//! Fixtures: keys made once per run, images built with umoci, a registry on loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub(crate) use meshguard_testkit::registry::Registry;
pub(crate) use meshguard_testkit::{copy_dir, free_port, root, tool, tools_dir};

pub(crate) const PASSPHRASE: &str = "media-signing-passphrase-for-tests";

/// One of the independent verifiers in `tests/media/verifiers/` (thin scripts over the sigstore
/// and CycloneDX projects' own libraries, which `cargo xtask tools` installs).
pub(crate) fn verifier(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/media/verifiers")
        .join(name);
    assert!(p.is_file(), "{} is missing from the checkout", p.display());
    p
}

pub(crate) fn bundle_bin() -> &'static str {
    env!("CARGO_BIN_EXE_meshguard-bundle")
}

/// Runs meshguard-bundle; the passphrase comes from the environment.
pub(crate) fn bundle(args: &[&str], cwd: &Path) -> Output {
    Command::new(bundle_bin())
        .args(args)
        .current_dir(cwd)
        .env("MESHGUARD_BUNDLE_PASSPHRASE", PASSPHRASE)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("meshguard-bundle runs")
}

pub(crate) fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail; returns stdout + stderr.
pub(crate) fn fails(out: Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "{what} succeeded but should not have:\n{text}"
    );
    text
}

pub(crate) fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e} (run `cargo xtask tools`)"))
}

pub(crate) fn run_ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    ok(run(cmd), &shown)
}

/// Key pairs made once per test run: (ed25519 secret, public, p256 secret, public).
pub(crate) struct Keys {
    pub dir: PathBuf,
}

impl Keys {
    pub(crate) fn ed_secret(&self) -> String {
        self.dir.join("media.key").display().to_string()
    }
    pub(crate) fn ed_public(&self) -> String {
        self.dir.join("media.pub").display().to_string()
    }
    pub(crate) fn p256_secret(&self) -> String {
        self.dir.join("cosign.key").display().to_string()
    }
    pub(crate) fn p256_public(&self) -> String {
        self.dir.join("cosign.pub").display().to_string()
    }
}

pub(crate) fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("media-keys")
            .tempdir()
            .unwrap()
            .keep();
        let d = dir.display().to_string();
        ok(
            bundle(
                &[
                    "keys",
                    "generate",
                    "--secret",
                    &format!("{d}/media.key"),
                    "--public",
                    &format!("{d}/media.pub"),
                ],
                &dir,
            ),
            "keys generate",
        );
        ok(
            bundle(
                &[
                    "keys",
                    "generate",
                    "--kind",
                    "p256",
                    "--secret",
                    &format!("{d}/cosign.key"),
                    "--public",
                    &format!("{d}/cosign.pub"),
                ],
                &dir,
            ),
            "keys generate p256",
        );
        Keys { dir }
    })
}

/// A small real image built offline with umoci: one layer holding `files`.
pub(crate) fn umoci_image(layout: &Path, tag: &str, files: &[(&str, &[u8])]) {
    let l = layout.display().to_string();
    if !layout.join("index.json").exists() {
        run_ok(Command::new("umoci").args(["init", "--layout", &l]));
    }
    run_ok(Command::new("umoci").args(["new", "--image", &format!("{l}:{tag}")]));
    let bundle = layout.with_extension(format!("unpack-{tag}"));
    let b = bundle.display().to_string();
    run_ok(Command::new("umoci").args([
        "unpack",
        "--rootless",
        "--image",
        &format!("{l}:{tag}"),
        &b,
    ]));
    for (name, bytes) in files {
        let p = bundle.join("rootfs").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    run_ok(Command::new("umoci").args(["repack", "--image", &format!("{l}:{tag}"), &b]));
    run_ok(Command::new("umoci").args([
        "config",
        "--image",
        &format!("{l}:{tag}"),
        "--config.env",
        "MESHGUARD_SECRET=do-not-leak",
        "--config.label",
        "org.opencontainers.image.title=test",
    ]));
    run_ok(Command::new("umoci").args(["gc", "--layout", &l]));
    std::fs::remove_dir_all(&bundle).unwrap();
}

/// A manifest over fixtures in `dir`; `extra` is appended YAML.
pub(crate) fn manifest(dir: &Path, version: &str, extra: &str) -> PathBuf {
    let p = dir.join(format!("media-{version}.yaml"));
    std::fs::write(
        &p,
        format!("schema: meshguard.media/v1\nproduct: meshguard\nversion: {version}\n{extra}"),
    )
    .unwrap();
    p
}

/// Flips one byte in the middle of a file.
pub(crate) fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    assert!(!bytes.is_empty(), "{} is empty", path.display());
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}
