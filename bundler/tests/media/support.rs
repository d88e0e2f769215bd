//! Fixtures: keys made once per run, images built with umoci, a registry on loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub(crate) const PASSPHRASE: &str = "media-signing-passphrase-for-tests";

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One of the independent verifiers in `tests/media/verifiers/` (thin scripts over the sigstore
/// and CycloneDX projects' own libraries, which `cargo xtask tools` installs).
pub(crate) fn verifier(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/media/verifiers")
        .join(name);
    assert!(p.is_file(), "{} is missing from the checkout", p.display());
    p
}

pub(crate) fn tools_dir() -> PathBuf {
    std::env::var_os("MESHGUARD_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools"))
}

/// A tool from `.tools/` (installed by `cargo xtask tools`) or the system.
pub(crate) fn tool(name: &str) -> PathBuf {
    let local = tools_dir().join("bin").join(name);
    if local.exists() {
        local
    } else {
        PathBuf::from(name)
    }
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

/// Copies a directory tree (for tampering with a copy).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// A loopback port free at the time of asking.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A docker-registry (distribution 2.8) on a free loopback port; stopped when dropped.
pub(crate) struct Registry {
    child: std::process::Child,
    pub addr: String,
    pub storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub(crate) fn start() -> Self {
        Self::start_with("", |addr| {
            reqwest::blocking::get(format!("http://{addr}/v2/"))
                .is_ok_and(|r| r.status().is_success())
        })
    }

    /// A registry serving TLS with `cert`/`key` (issued by the CA `ca`) that wants the users
    /// of the bcrypt `htpasswd` file (HTTP Basic), as sites run distribution.
    pub(crate) fn start_secured(htpasswd: &Path, cert: &Path, key: &Path, ca: &Path) -> Self {
        let auth = format!(
            "htpasswd:\n    realm: site\n    path: {}\n",
            htpasswd.display()
        );
        Self::start_tls(&auth, cert, key, ca)
    }

    /// A registry serving TLS that takes bearer tokens from the token service at `realm`,
    /// signed by the certificate `token_cert`.
    pub(crate) fn start_with_token_auth(
        realm: &str,
        token_cert: &Path,
        cert: &Path,
        key: &Path,
        ca: &Path,
    ) -> Self {
        let auth = format!(
            "token:\n    realm: {realm}\n    service: site-registry\n    issuer: site-token-issuer\n    rootcertbundle: {}\n",
            token_cert.display()
        );
        Self::start_tls(&auth, cert, key, ca)
    }

    /// TLS with `cert`/`key` (issued by `ca`) and the `auth:` section `auth`; ready when
    /// `/v2/` asks for credentials.
    fn start_tls(auth: &str, cert: &Path, key: &Path, ca: &Path) -> Self {
        let client = reqwest::blocking::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap(),
            )
            .build()
            .unwrap();
        Self::start_with(
            &format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  {auth}",
                cert.display(),
                key.display()
            ),
            move |addr| {
                client
                    .get(format!("https://{addr}/v2/"))
                    .send()
                    .is_ok_and(|r| r.status() == 401)
            },
        )
    }

    /// `http_extra` goes under `http:` (indented two spaces) and may open more top-level keys.
    fn start_with(http_extra: &str, ready: impl Fn(&str) -> bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let storage = dir.path().join("data");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{http_extra}",
                storage.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry is installed (apt docker-registry)");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ready(&addr) {
                break;
            }
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            addr,
            storage,
            _dir: dir,
        }
    }

    /// `skopeo inspect` of an image in this registry: its digest, or None when absent.
    pub(crate) fn digest(&self, name: &str) -> Option<String> {
        let out = run(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/{name}", self.addr),
        ]));
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Digest"].as_str().map(str::to_owned)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
