//! What the tests that run the product under podman share: the product's images built from
//! this run's binaries, podman with a configuration of the test's own, what a test created in it
//! (removed when dropped, also when the test fails), and the gateway's admin and decision calls.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use meshguard_bundler::image::{ProductBuild, build, product_specs};
use meshguard_bundler::oci::Layout;

use crate::support::{Registry, run, run_ok};

pub(crate) const ADMIN: &str = "site-admin-token-0123456789abcdef";
pub(crate) const JWT: &str = "site-jwt-secret-0123456789abcdef0123456789";

/// The directory holding the workspace's binaries this test run was built with.
pub(crate) fn bin_dir() -> PathBuf {
    Path::new(crate::support::bundle_bin())
        .parent()
        .unwrap()
        .to_owned()
}

pub(crate) fn product(created: i64) -> ProductBuild {
    ProductBuild {
        bin_dir: bin_dir(),
        namespace: "meshguard".into(),
        version: "0.1.0".into(),
        revision: "0123456789abcdef0123456789abcdef01234567".into(),
        source: "https://example.invalid/meshguard-deploy".into(),
        license: "Apache-2.0".into(),
        created,
        ca_bundle: "/etc/ssl/certs/ca-certificates.crt".into(),
        vendor_key: None,
    }
}

/// Builds the product's images into a new layout; returns (reference, manifest digest). The
/// gateway is a development build: these tests run it unlicensed.
pub(crate) fn build_images(dir: &Path, created: i64) -> Vec<(String, String)> {
    let mut layout = Layout::create(dir).unwrap();
    let mut out = Vec::new();
    for spec in product_specs(&product(created)).unwrap().0 {
        let b = build(&mut layout, &spec).unwrap();
        out.push((spec.reference.clone(), b.manifest.digest));
    }
    layout.write_index().unwrap();
    out
}

/// podman with a configuration of the test's own (runc, host cgroup namespace, no ulimits).
pub(crate) struct Podman {
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Podman {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("containers.conf");
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = []\ncgroupns = \"host\"\n[engine]\nruntime = \"runc\"\n",
        )
        .unwrap();
        Self { conf, _dir: dir }
    }

    pub(crate) fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf);
        c
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        run_ok(self.cmd().args(args))
    }

    pub(crate) fn quiet(&self, args: &[&str]) {
        let _ = run(self.cmd().args(args));
    }
}

/// What one test run created in podman, removed when dropped (also when the test fails).
pub(crate) struct Site<'a> {
    pub(crate) podman: &'a Podman,
    pub(crate) release: String,
    /// The files played, brought down in turn.
    pub(crate) played: Vec<PathBuf>,
    /// Volumes named otherwise than after the release (a sidecar's, named after its agent; a
    /// StatefulSet's claims, `data-<pod>`).
    pub(crate) volumes: Vec<String>,
    /// The podman secrets made for the site.
    secrets: Vec<String>,
}

impl<'a> Site<'a> {
    /// A site for `release`, with nothing of an earlier run under that name left in podman: a
    /// volume left behind (a sidecar's cache naming another agent, an old log) would be
    /// mounted by the pods played now.
    pub(crate) fn new(podman: &'a Podman, release: String) -> Self {
        let site = Self {
            podman,
            release,
            played: Vec::new(),
            volumes: Vec::new(),
            secrets: Vec::new(),
        };
        site.remove_volumes();
        site
    }

    /// A podman secret `name` holding `values` (what a `secretKeyRef` reads: podman 4.3 takes a
    /// JSON object of base64 values), written through `file`; removed with the site.
    pub(crate) fn secret(&mut self, name: &str, values: &[(&str, &str)], file: &Path) {
        let object: serde_json::Map<String, serde_json::Value> = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), b64(v).into()))
            .collect();
        std::fs::write(file, serde_json::Value::Object(object).to_string()).unwrap();
        self.podman
            .ok(&["secret", "create", name, file.to_str().unwrap()]);
        self.secrets.push(name.to_owned());
    }

    /// Every volume the release's pods made: those named after the release (`<release>-data`,
    /// `-archive`, `-bundle`, whatever the chart names next) and the sidecars' (named after
    /// their agents, recorded in `volumes`).
    fn remove_volumes(&self) {
        // Not `ok`: this runs in `drop`, where a panic would abort instead of cleaning up.
        let listed = self
            .podman
            .cmd()
            .args(["volume", "ls", "--quiet", "--filter"])
            .arg(format!("name=^{}-", self.release))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let listed = listed.lines().map(str::trim).filter(|v| !v.is_empty());
        for volume in listed.chain(self.volumes.iter().map(String::as_str)) {
            self.podman.quiet(&["volume", "rm", "-f", volume]);
        }
    }
}

impl Drop for Site<'_> {
    fn drop(&mut self) {
        for f in &self.played {
            self.podman.quiet(&["kube", "down", f.to_str().unwrap()]);
        }
        self.remove_volumes();
        for secret in &self.secrets {
            self.podman.quiet(&["secret", "rm", secret]);
        }
    }
}

pub(crate) fn wait_healthy(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if reqwest::blocking::get(format!("{url}/health")).is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway in the pod did not answer /health at {url}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn admin(method: reqwest::Method, url: &str) -> reqwest::blocking::RequestBuilder {
    reqwest::blocking::Client::new()
        .request(method, url)
        .header("X-Admin-Token", ADMIN)
}

pub(crate) fn check(url: &str, token: &str, action: &str) -> u16 {
    reqwest::blocking::Client::new()
        .get(format!("{url}/proxy/check"))
        .bearer_auth(token)
        .header("X-MeshGuard-Action", action)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

pub(crate) fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The gateway image, built from this run's binaries, pushed to the site registry with skopeo;
/// returns its digest there.
pub(crate) fn push_the_gateway_image(d: &Path, reg: &Registry) -> String {
    let layout = d.join("images");
    build_images(&layout, 1_780_000_000);
    run_ok(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:meshguard/gateway:0.1.0", layout.display()),
        &format!("docker://{}/meshguard/gateway:0.1.0", reg.addr),
    ]));
    reg.digest("meshguard/gateway:0.1.0")
        .expect("the gateway image is in the site registry")
}

/// A policy allowing reads (201), and an agent `name` made through the gateway at `url`:
/// the agent and its token.
pub(crate) fn reads_policy_and_agent(url: &str, name: &str) -> (serde_json::Value, String) {
    let resp = admin(reqwest::Method::POST, &format!("{url}/admin/policies"))
        .json(&serde_json::json!({"name": "reads", "content": "name: reads\nrules:\n  - name: allow-read\n    effect: allow\n    actions: [\"read:*\"]\n"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201);
    let agent: serde_json::Value = admin(reqwest::Method::POST, &format!("{url}/admin/agents"))
        .json(&serde_json::json!({"name": name, "trustTier": "verified"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let token = agent["token"]
        .as_str()
        .expect("the agent's token")
        .to_owned();
    (agent, token)
}
