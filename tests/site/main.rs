//! A site installed from offline media with one command, in a network namespace with no route
//! out (issue #14): media -> install (stopping for the license activation, as a first install
//! of a licensed profile must) -> smoke tests -> a re-run that changes nothing -> a staged
//! upgrade -> a broken upgrade that leaves the running version alone -> rollback media, with
//! the audit log intact throughout. Every run's transcript is checked with the stock minisign.
//!
//! The real tools: podman (`kube play`), helm, terraform, Docker's registry (serving TLS from
//! the site's own CA, with an htpasswd user: the install pushes and podman pulls with the site
//! file's `caBundle` and `authFile`), minisign. The test re-runs itself under `unshare -n`
//! (loopback only), so nothing in it can reach a network.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const NETNS: &str = "MESHGUARD_E2E_NETNS";
const PASSPHRASE: &str = "e2e-passphrase-not-a-secret-anywhere";
const REGISTRY: &str = "127.0.0.1:5000";
/// The site registry's htpasswd user's password (the user is `site-puller`).
const REGISTRY_PASSWORD: &str = "site-registry-pass-7c1d";
const PORT: u16 = 18080;

/// Runs `body` inside a new network namespace with only loopback up: the test binary runs
/// itself again there, for this one test.
fn offline(test: &str, body: impl FnOnce()) {
    meshguard_testkit::netns::isolated(test, NETNS, body);
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// target/<profile>/, where this workspace's binaries were built with this test.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_owned();
    for b in [
        "meshguard-gateway",
        "meshguard-example-agent",
        "meshguard-bundle",
        "meshguard-license",
        "terraform-provider-meshguard",
    ] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: run the tests with `cargo xtask test` (or build the workspace first)",
            dir.join(b).display()
        );
    }
    dir
}

fn tools_path() -> String {
    let tools = std::env::var_os("MESHGUARD_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools"));
    format!(
        "{}:{}",
        tools.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn output(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e} (run `cargo xtask tools`)"))
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The site: its directory, files, registry and podman configuration; what it ran is removed
/// when dropped, also when the test fails.
struct Site {
    dir: tempfile::TempDir,
    bins: PathBuf,
    release: String,
    containers_conf: PathBuf,
    /// Serves the site's images for as long as the site lives; stopped when dropped.
    _registry: meshguard_testkit::registry::Registry,
}

impl Site {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.current_dir(self.path())
            .env("PATH", tools_path())
            .env("CONTAINERS_CONF", &self.containers_conf)
            .env("MESHGUARD_BUNDLE_PASSPHRASE", PASSPHRASE)
            .env("MESHGUARD_LICENSE_PASSPHRASE", PASSPHRASE)
            .env_remove("SOURCE_DATE_EPOCH");
        c
    }

    fn bundle(&self, args: &[&str]) -> Output {
        output(self.cmd(self.bins.join("meshguard-bundle")).args(args))
    }

    fn license(&self, args: &[&str]) -> String {
        ok(
            output(self.cmd(self.bins.join("meshguard-license")).args(args)),
            &format!("meshguard-license {}", args[0]),
        )
    }

    fn podman(&self, args: &[&str]) -> Output {
        output(self.cmd("podman").args(args))
    }

    /// `meshguard-bundle install`; returns (succeeded, stdout+stderr, the transcript).
    fn install(&self, media: &str, extra: &[&str]) -> (bool, String, Value) {
        let mut args = vec![
            "install",
            media,
            "--site",
            "site.yaml",
            "--pubkey",
            "media.pub",
            "--license-pubkey",
            "vendor.pub",
        ];
        args.extend_from_slice(extra);
        let out = self.bundle(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("transcript: "))
            .unwrap_or_else(|| panic!("no transcript named:\n{text}"));
        let json = line.split(" (signed").next().unwrap();
        // The stock minisign checks the transcript with the site's public key.
        ok(
            output(
                Command::new("minisign")
                    .args(["-Vm", json, "-p"])
                    .arg(self.path().join("site.pub")),
            ),
            "minisign -V of the transcript",
        );
        let t: Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
        assert_eq!(t["ok"], out.status.success(), "{text}");
        (out.status.success(), text, t)
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self.path().join("admin-token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn get(&self, path: &str) -> Value {
        reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{PORT}{path}"))
            .header("X-Admin-Token", self.admin_token())
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// An admin POST whatever it answers: its status and JSON body.
    fn try_post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = reqwest::blocking::Client::new()
            .post(format!("http://127.0.0.1:{PORT}{path}"))
            .header("X-Admin-Token", self.admin_token())
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.try_post(path, body);
        assert!((200..300).contains(&status), "POST {path}: {status} {body}");
        body
    }

    /// `n` decisions as the agent holding `token` (reads allowed, writes denied); how many were
    /// answered (each answered one must be in the log at the end).
    fn decide(&self, token: &str, n: usize) -> u64 {
        let client = reqwest::blocking::Client::new();
        (0..n)
            .filter(|i| {
                let action = if i % 3 == 0 {
                    "write:ledger"
                } else {
                    "read:ledger"
                };
                client
                    .get(format!("http://127.0.0.1:{PORT}/proxy/check"))
                    .bearer_auth(token)
                    .header("X-MeshGuard-Action", action)
                    .send()
                    .is_ok_and(|r| matches!(r.status().as_u16(), 200 | 403))
            })
            .count() as u64
    }

    fn healthy(&self) -> bool {
        reqwest::blocking::get(format!("http://127.0.0.1:{PORT}/health"))
            .is_ok_and(|r| r.status().is_success())
    }

    /// The image the site's gateway container runs.
    fn running_image(&self) -> String {
        let out = ok(
            self.podman(&["ps", "--format", "{{.Image}} {{.Names}}"]),
            "podman ps",
        );
        out.lines()
            .find(|l| l.contains(&format!("{}-", self.release)) && !l.contains("-next-"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_default()
            .to_owned()
    }

    fn installed_version(&self) -> String {
        let v: Value = serde_json::from_slice(
            &std::fs::read(self.path().join("state/installed.json")).unwrap(),
        )
        .unwrap();
        v["version"].as_str().unwrap().to_owned()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let deploy = self.path().join("state/deploy");
        for v in std::fs::read_dir(&deploy).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(v.path()).into_iter().flatten().flatten() {
                if f.path().extension().is_some_and(|x| x == "yaml") {
                    let _ = self.podman(&["kube", "down", f.path().to_str().unwrap()]);
                }
            }
        }
        let volumes = self.podman(&["volume", "ls", "-q"]).stdout;
        for v in String::from_utf8_lossy(&volumes)
            .lines()
            .filter(|v| v.starts_with(&self.release))
        {
            let _ = self.podman(&["volume", "rm", "-f", v]);
        }
        let _ = self.podman(&["secret", "rm", &format!("{}-secrets", self.release)]);
    }
}

/// Builds the product's images for `version` from `bins` into `layout` with `meshguard-bundle
/// images`; a release build, stamped with the vendor's key, when `keyed`.
fn images(site: &Site, bins: &Path, layout: &Path, version: &str, keyed: bool) {
    let mut args = vec![
        "images",
        "--bin-dir",
        bins.to_str().unwrap(),
        "--out",
        layout.to_str().unwrap(),
        "--version",
        version,
        "--revision",
        "0123456789abcdef0123456789abcdef01234567",
        "--created",
        "1780000000",
    ];
    if keyed {
        args.extend(["--vendor-pubkey", "vendor.pub"]);
    }
    let started = std::time::Instant::now();
    let out = ok(site.bundle(&args), &format!("images {version}"));
    let build = out.lines().find(|l| l.starts_with("gateway: ")).unwrap();
    assert_eq!(build.contains("release build"), keyed, "{out}");
    eprintln!(
        "images {version}: {build} ({:.1} s for the images in all)",
        started.elapsed().as_secs_f64()
    );
}

/// Signed media for `version`, its images built from `bins`: a release build when `keyed`, else
/// media not for customers (`create --development`).
fn media(site: &Site, version: &str, bins: &Path, keyed: bool) {
    let d = site.path();
    let layout = d.join(format!("layout-{version}"));
    images(site, bins, &layout, version, keyed);
    let r = root();
    std::fs::write(
        d.join(format!("media-{version}.yaml")),
        format!(
            "schema: meshguard.media/v1
product: meshguard
version: {version}
profile: air-gapped
images:
  - ref: meshguard/gateway:{version}
    from: oci:{l}:meshguard/gateway:{version}
  - ref: meshguard/tools:{version}
    from: oci:{l}:meshguard/tools:{version}
chart: {r}/helm/meshguard-gateway
terraform:
  provider:
    version: 0.1.0
    binaries: {{linux_amd64: {p}}}
  modules: {r}/modules
policies: {r}/examples/policies
egress: {egress}
license: {{file: {lic}}}
",
            l = layout.display(),
            r = r.display(),
            p = site.bins.join("terraform-provider-meshguard").display(),
            lic = d.join("site.license").display(),
            egress = d.join("egress.json").display(),
        ),
    )
    .unwrap();
    let manifest = format!("media-{version}.yaml");
    let out = format!("media-{version}");
    let mut args = vec![
        "create",
        "--manifest",
        &manifest,
        "--out",
        &out,
        "--key",
        "media.key",
    ];
    if !keyed {
        args.push("--development");
    }
    ok(site.bundle(&args), &format!("create media {version}"));
    let build = &media_doc(site, version)["build"];
    assert_eq!(
        build["kind"],
        if keyed { "release" } else { "development" },
        "{build}"
    );
}

fn media_doc(site: &Site, version: &str) -> Value {
    serde_json::from_slice(
        &std::fs::read(site.path().join(format!("media-{version}/MEDIA.json"))).unwrap(),
    )
    .unwrap()
}

/// The key id of the vendor's public key.
fn vendor_key_id(site: &Site) -> String {
    meshguard_license::VendorPublicKey::from_file(&site.path().join("vendor.pub"))
        .unwrap()
        .key_id()
}

fn setup() -> Site {
    let bins = bin_dir();
    let dir = tempfile::Builder::new()
        .prefix("site-e2e")
        .tempdir_in(bins.parent().unwrap())
        .unwrap();
    let conf = dir.path().join("containers.conf");
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = []\ncgroupns = \"host\"\n[engine]\nruntime = \"runc\"\n",
    )
    .unwrap();
    let registry = authenticated_registry(dir.path());
    let site = Site {
        release: format!("e2e{}", std::process::id()),
        dir,
        bins,
        containers_conf: conf,
        _registry: registry,
    };
    let d = site.path();
    // The vendor: media key, license key, a license for this air-gapped site.
    ok(
        site.bundle(&[
            "keys",
            "generate",
            "--secret",
            "media.key",
            "--public",
            "media.pub",
        ]),
        "media key",
    );
    site.license(&[
        "keys",
        "generate",
        "--secret",
        "vendor.key",
        "--public",
        "vendor.pub",
    ]);
    site.license(&[
        "issue",
        "--key",
        "vendor.key",
        "--customer",
        "E2E Site",
        "--mode",
        "air-gapped",
        "--region",
        "enclave-1",
        "--max-agents",
        "25",
        "--valid-for",
        "30d",
        "--out",
        "site.license",
    ]);
    // The site: its own transcript key, secrets in files, the site file.
    ok(
        site.bundle(&[
            "keys", "generate", "--secret", "site.key", "--public", "site.pub",
        ]),
        "site key",
    );
    std::fs::write(
        d.join("admin-token"),
        "e2e-admin-token-0123456789abcdef0123",
    )
    .unwrap();
    std::fs::write(
        d.join("jwt-secret"),
        "e2e-jwt-secret-0123456789abcdef0123456",
    )
    .unwrap();
    std::fs::write(
        d.join("bootstrap.tfvars.json"),
        r#"{"agents": {"clinical-assistant": {"trust_tier": "verified", "tags": ["hipaa"]}}}"#,
    )
    .unwrap();
    // The destinations the site's agents may reach, signed onto the media.
    std::fs::write(
        d.join("egress.json"),
        r#"{"format": "meshguard-egress-allowlist/v1", "version": 1, "destinations": [{"host": "records.enclave.internal", "ports": [443], "region": "enclave-1"}]}"#,
    )
    .unwrap();
    write_site(&site, None);
    site
}

/// The site registry as sites run it: distribution serving TLS from the site's own CA
/// (`registry-ca/ca.pem`), with an htpasswd user; the site file names the CA (podman
/// `--cert-dir`) and an auth file (podman `--authfile`) with that user's credentials.
fn authenticated_registry(dir: &Path) -> meshguard_testkit::registry::Registry {
    use base64::Engine as _;
    let pki = dir.join("registry-ca");
    std::fs::create_dir_all(&pki).unwrap();
    meshguard_testkit::ca::make_ca(&pki, "registry", "IP:127.0.0.1,DNS:localhost");
    let htpasswd = ok(
        output(Command::new("htpasswd").args(["-Bbn", "site-puller", REGISTRY_PASSWORD])),
        "htpasswd",
    );
    std::fs::write(pki.join("htpasswd"), htpasswd).unwrap();
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("site-puller:{REGISTRY_PASSWORD}"));
    std::fs::write(
        dir.join("registry-auth.json"),
        serde_json::json!({"auths": {REGISTRY: {"auth": auth}}}).to_string(),
    )
    .unwrap();
    meshguard_testkit::registry::Registry::start_secured_on(
        REGISTRY,
        &pki.join("htpasswd"),
        &pki.join("registry.pem"),
        &pki.join("registry.key"),
        &pki.join("ca.pem"),
    )
}

fn write_site(site: &Site, activation: Option<&str>) {
    std::fs::write(
        site.path().join("site.yaml"),
        format!(
            "release: {}
profile: air-gapped
registry: {{address: \"{REGISTRY}\", insecure: false, caBundle: registry-ca/ca.pem, authFile: registry-auth.json}}
port: {PORT}
candidatePort: {}
startTimeoutSeconds: 60
stateDir: state
secrets: {{adminTokenFile: admin-token, jwtSecretFile: jwt-secret}}
transcriptKey: site.key
environment:
  region: enclave-1
  identityProvider: https://idp.enclave.internal
  archive: /srv/meshguard/archive
  destinations: [records.enclave.internal:443]
bootstrap: {{module: bootstrap, varFile: bootstrap.tfvars.json}}
{}",
            site.release,
            PORT + 1,
            activation
                .map(|a| format!("licenseActivation: {a}\n"))
                .unwrap_or_default()
        ),
    )
    .unwrap();
}

fn step<'a>(t: &'a Value, name: &str) -> &'a Value {
    t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {t}"))
}

fn failed_step(t: &Value) -> String {
    t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["status"] == "failed")
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn digest_of(site: &Site, version: &str) -> String {
    media_doc(site, version)["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["ref"].as_str().unwrap().starts_with("meshguard/gateway:"))
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The previous release's binaries: this workspace's, with the gateway `cargo xtask test` built
/// from the commit before the last schema change (`MESHGUARD_PREVIOUS_GATEWAY`). Without it
/// (a plain `cargo test`, or a clone without that history) the test says it skips the
/// cross-version part and installs the same build under both versions.
fn previous_release(site: &Site) -> Option<PathBuf> {
    let Some(gateway) = std::env::var_os("MESHGUARD_PREVIOUS_GATEWAY") else {
        eprintln!(
            "SKIPPED: the upgrade and rollback across a schema migration: no previous release was built (run through `cargo xtask test`, in a clone with its history); 0.1.0 and 0.1.1 are the same build here"
        );
        return None;
    };
    let dir = site.path().join("previous-bins");
    std::fs::create_dir_all(&dir).unwrap();
    for b in [
        "meshguard-bundle",
        "meshguard-license",
        "meshguard-example-agent",
        "terraform-provider-meshguard",
    ] {
        std::fs::copy(site.bins.join(b), dir.join(b)).unwrap();
    }
    std::fs::copy(&gateway, dir.join("meshguard-gateway")).unwrap();
    eprintln!(
        "0.1.0 is the previous release ({}), 0.1.1 this build",
        std::env::var("MESHGUARD_PREVIOUS_COMMIT").unwrap_or_default()
    );
    Some(dir)
}

fn audit_entries(site: &Site) -> u64 {
    let v = site.get("/admin/audit/verify");
    assert_eq!(v["valid"], true, "the audit log verifies: {v}");
    v["entries"].as_u64().unwrap()
}

#[test]
fn a_site_installs_from_media_upgrades_and_rolls_back_with_no_network() {
    offline(
        "a_site_installs_from_media_upgrades_and_rolls_back_with_no_network",
        run,
    );
}

fn run() {
    let site = setup();
    let previous = previous_release(&site);
    // Release builds, keyed with the vendor's key; but the previous release predates keyed
    // builds (its gateway has no slot to stamp), so its media is a development build.
    let keyed_first = previous.is_none();
    if !keyed_first {
        eprintln!(
            "SKIPPED: the keyed first install: 0.1.0 is the previous release, built before keyed builds; 0.1.1 is keyed"
        );
    }
    media(
        &site,
        "0.1.0",
        previous.as_deref().unwrap_or(&site.bins),
        keyed_first,
    );
    media(&site, "0.1.1", &site.bins, true);
    tampered_media_is_refused_at_step_one(&site);
    wrong_registry_credentials_are_refused_at_import(&site);
    the_first_install_waits_for_activation(&site, keyed_first);
    the_activated_install_passes_every_step(&site, keyed_first);
    let before = audit_entries(&site);
    let (bot_id, bot_token) = an_agent_whose_decisions_are_counted(&site);
    let mut answered = site.decide(&bot_token, 30);
    the_same_media_again_changes_nothing(&site);
    newer_media_is_swapped_in_with_the_log(&site, previous.is_some(), before);
    answered += site.decide(&bot_token, 30);
    let upgraded = audit_entries(&site);
    broken_media_leaves_the_running_version(&site);
    rollback_restores_the_old_version_with_the_log(&site, previous.is_some(), upgraded);
    // Zero answered decisions lost across upgrade and rollback: every one the agent got an
    // answer to is an entry of the log the rolled-back gateway serves.
    answered += site.decide(&bot_token, 30);
    let logged = site.get(&format!("/admin/audit?agentId={bot_id}&limit=1000"))["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "decision")
        .count() as u64;
    assert_eq!(
        logged, answered,
        "answered decisions and their entries, across 0.1.0, 0.1.1 and back"
    );
    assert!(
        site.get("/admin/agents")
            .to_string()
            .contains("clinical-assistant")
    );
}

/// Tampered media: refused at step 1, nothing imported, nothing started; the failure is in a
/// signed transcript.
fn tampered_media_is_refused_at_step_one(site: &Site) {
    let d = site.path().to_owned();
    ok(
        output(
            Command::new("cp")
                .args(["-a", "media-0.1.1", "media-tampered"])
                .current_dir(&d),
        ),
        "copy media",
    );
    let chart = d.join("media-tampered/charts/meshguard-gateway/values.yaml");
    let mut text = std::fs::read_to_string(&chart).unwrap();
    text.push_str("\nmode: bypass\n");
    std::fs::write(&chart, text).unwrap();
    let (done, out, t) = site.install("media-tampered", &[]);
    assert!(!done);
    assert_eq!(failed_step(&t), "verify media", "{out}");
    assert!(out.contains("does not verify"), "{out}");
    assert!(!d.join("state/releases/0.1.1").exists(), "nothing imported");
    assert!(!site.healthy(), "nothing started");
}

/// The site's auth file with a wrong password: the registry refuses the push at step 2,
/// nothing is imported or started, and the transcript says so; the right file is put back.
fn wrong_registry_credentials_are_refused_at_import(site: &Site) {
    use base64::Engine as _;
    let auth_file = site.path().join("registry-auth.json");
    let right = std::fs::read(&auth_file).unwrap();
    let wrong = base64::engine::general_purpose::STANDARD.encode("site-puller:not-the-password");
    std::fs::write(
        &auth_file,
        serde_json::json!({"auths": {REGISTRY: {"auth": wrong}}}).to_string(),
    )
    .unwrap();
    let (done, out, t) = site.install("media-0.1.0", &[]);
    std::fs::write(&auth_file, right).unwrap();
    assert!(!done, "{out}");
    assert_eq!(failed_step(&t), "import", "{out}");
    assert!(
        !out.contains("not-the-password"),
        "no credential in the output: {out}"
    );
    assert!(!site.healthy(), "nothing started");
}

/// First install: the gateway runs, and the license on the media needs this installation's
/// activation: the install stops at step 4 with the request to take to the vendor. Until then
/// admin writes are frozen (402 license_required; the previous release said 403), while the
/// data plane decides and audits: a call with no valid agent token is refused (401, not a
/// license answer) and its refusal is a durable entry of the log, which verifies. A keyed
/// gateway says it is a release build for the vendor's key.
fn the_first_install_waits_for_activation(site: &Site, keyed: bool) {
    let d = site.path().to_owned();
    let (done, out, t) = site.install("media-0.1.0", &[]);
    assert!(!done, "{out}");
    assert_eq!(failed_step(&t), "environment values", "{out}");
    assert!(out.contains("needs activation"), "{out}");
    let request = d.join("state/license/request.json");
    assert!(request.is_file(), "{out}");
    assert!(site.healthy(), "the gateway runs while the license waits");
    if keyed {
        let build = &site.get("/admin/info")["build"];
        assert_eq!(build["kind"], "release", "{build}");
        assert_eq!(
            build["vendorKeyId"].as_str(),
            Some(vendor_key_id(site).as_str())
        );
        assert_eq!(build["licensing"], "on", "{build}");
    }
    let (status, body) = site.try_post(
        "/admin/agents",
        serde_json::json!({"name": "too-early", "trustTier": "verified"}),
    );
    assert_eq!(status, if keyed { 402 } else { 403 }, "{body}");
    assert_eq!(body["error"], "license_required", "{body}");
    let before = audit_entries(site);
    let refused = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{PORT}/proxy/check"))
        .bearer_auth("not-an-agent-token")
        .header("X-MeshGuard-Action", "read:ledger")
        .send()
        .unwrap()
        .status();
    assert_eq!(refused.as_u16(), 401, "the data plane answers as ever");
    assert!(audit_entries(site) > before, "the refusal is in the log");
}

/// The vendor answers; the site names the answer and installs again: every step passes, the
/// smoke tests with them, the license is applied, no secret is in the transcript, Terraform
/// applied the bootstrap and the media's image runs.
fn the_activated_install_passes_every_step(site: &Site, keyed: bool) {
    let request = site.path().join("state/license/request.json");
    site.license(&[
        "activate",
        "--key",
        "vendor.key",
        "--license",
        "site.license",
        "--request",
        request.to_str().unwrap(),
        "--out",
        "activation.json",
    ]);
    write_site(site, Some("activation.json"));
    let (done, out, t) = site.install("media-0.1.0", &[]);
    assert!(done, "{out}");
    eprintln!("{out}");
    for s in t["steps"].as_array().unwrap() {
        assert_ne!(s["status"], "failed", "{s}");
    }
    let checks = &step(&t, "smoke tests")["detail"]["checks"];
    for name in [
        "policy allow",
        "policy deny",
        "audit write",
        "offline signature verification",
        "egress denial",
        "sidecar heartbeat",
        "evidence export",
    ] {
        let c = checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap();
        assert_eq!(c["result"], "passed", "{c}");
    }
    let env = &step(&t, "environment values")["detail"];
    assert!(
        env["license"]["applied"]
            .as_str()
            .unwrap()
            .starts_with("installed"),
        "{env}"
    );
    // The transcript names the license, the vendor key and the expiry.
    let license = site.get("/admin/license");
    assert_eq!(env["license"]["licenseId"], license["licenseId"], "{env}");
    assert!(env["license"]["licenseId"].is_string(), "{env}");
    assert!(env["license"]["expires"].is_string(), "{env}");
    if keyed {
        assert_eq!(
            env["license"]["vendorKeyId"].as_str(),
            Some(vendor_key_id(site).as_str()),
            "{env}"
        );
        assert_eq!(env["license"]["build"]["kind"], "release", "{env}");
    }
    assert!(
        !serde_json::to_string(&t)
            .unwrap()
            .contains(&site.admin_token()),
        "no secret in the transcript"
    );
    let license = site.get("/admin/license");
    assert_eq!(license["state"], "valid", "{license}");
    assert_eq!(license["adminWritesAllowed"], true, "{license}");
    let agents = site.get("/admin/agents");
    assert!(
        agents.to_string().contains("clinical-assistant"),
        "Terraform applied the bootstrap: {agents}"
    );
    assert_eq!(
        site.running_image(),
        format!("{REGISTRY}/meshguard/gateway@{}", digest_of(site, "0.1.0"))
    );
}

/// An agent whose every answered decision, across upgrade and rollback, is counted: its id
/// and token.
fn an_agent_whose_decisions_are_counted(site: &Site) -> (String, String) {
    site.post(
        "/admin/policies",
        serde_json::json!({"name": "ledger", "content": "name: ledger\nappliesTo: [ledger-bot]\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n"}),
    );
    let bot = site.post(
        "/admin/agents",
        serde_json::json!({"name": "ledger-bot", "trustTier": "verified"}),
    );
    let (bot_id, bot_token) = (
        bot["id"].as_str().unwrap().to_owned(),
        bot["token"].as_str().unwrap().to_owned(),
    );

    (bot_id, bot_token)
}

/// Again, same media: nothing to change.
fn the_same_media_again_changes_nothing(site: &Site) {
    let (done, out, t) = site.install("media-0.1.0", &[]);
    assert!(done, "{out}");
    assert!(
        step(&t, "render and start")["detail"]["action"]
            .as_str()
            .unwrap()
            .starts_with("unchanged"),
        "{out}"
    );
    assert!(
        step(&t, "terraform bootstrap")["detail"]["apply"]
            .as_str()
            .unwrap()
            .contains("0 added, 0 changed, 0 destroyed"),
        "{out}"
    );
}

/// Newer media: started beside the running version, smoke-tested, then swapped in; the audit
/// log carries over and, with a previous release, 0.1.0's database is kept to roll back to.
fn newer_media_is_swapped_in_with_the_log(site: &Site, has_previous: bool, before: u64) {
    let (done, out, t) = site.install("media-0.1.1", &[]);
    assert!(done, "{out}");
    let deploy = &step(&t, "render and start")["detail"];
    assert_eq!(deploy["action"], "upgraded", "{out}");
    assert!(deploy["candidate"]["checks"].to_string().contains("passed"));
    // 0.1.1 is a release build: its candidate ran licensed as this installation.
    assert!(
        deploy["candidate"]["license"]
            .as_str()
            .unwrap()
            .contains("copied"),
        "{deploy}"
    );
    assert_eq!(
        site.running_image(),
        format!("{REGISTRY}/meshguard/gateway@{}", digest_of(site, "0.1.1"))
    );
    assert!(audit_entries(site) > before, "the audit log carried over");
    if has_previous {
        let db = &deploy["database"];
        assert!(
            db["snapshot"]
                .as_str()
                .unwrap_or_default()
                .contains("0.1.0"),
            "the upgrade kept 0.1.0's database to roll back to: {db}"
        );
        let info = site.get("/admin/info");
        assert!(info["schemaVersion"].as_u64().is_some(), "{info}");
    }
}

/// Broken newer media (its "gateway" exits at once): the candidate never answers, the running
/// version is not touched.
fn broken_media_leaves_the_running_version(site: &Site) {
    let broken = tempfile::Builder::new()
        .prefix("broken-bins")
        .tempdir_in(site.bins.parent().unwrap())
        .unwrap();
    for b in [
        "meshguard-bundle",
        "meshguard-license",
        "meshguard-example-agent",
        "terraform-provider-meshguard",
    ] {
        std::fs::copy(site.bins.join(b), broken.path().join(b)).unwrap();
    }
    std::fs::copy(
        site.bins.join("meshguard-license"),
        broken.path().join("meshguard-gateway"),
    )
    .unwrap();
    // Its "gateway" (the license tool) has no vendor-key slot to stamp: a development build.
    media(site, "0.1.2", broken.path(), false);
    let (done, out, t) = site.install("media-0.1.2", &[]);
    assert!(!done, "{out}");
    assert_eq!(failed_step(&t), "render and start", "{out}");
    assert!(out.contains("the running version was not touched"), "{out}");
    assert!(out.contains("the gateway stopped while starting"), "{out}");
    assert!(site.healthy());
    assert_eq!(site.installed_version(), "0.1.1");
    assert_eq!(
        site.running_image(),
        format!("{REGISTRY}/meshguard/gateway@{}", digest_of(site, "0.1.1"))
    );
}

/// Rollback media: refused without --rollback, then restores 0.1.0 with the audit log; with a
/// previous release, 0.1.0 cannot open 0.1.1's migrated database: the snapshot went back, the
/// migrated files were set aside, and the transcript names the change made after the snapshot.
fn rollback_restores_the_old_version_with_the_log(site: &Site, has_previous: bool, upgraded: u64) {
    let (done, out, t) = site.install("media-0.1.0", &[]);
    assert!(!done);
    assert_eq!(failed_step(&t), "verify media");
    assert!(out.contains("--rollback"), "{out}");
    let (done, out, t) = site.install("media-0.1.0", &["--rollback"]);
    assert!(done, "{out}");
    let deploy = &step(&t, "render and start")["detail"];
    assert_eq!(deploy["action"], "rolled back", "{out}");
    if has_previous {
        // 0.1.0 cannot open 0.1.1's migrated database: the snapshot went back, the migrated
        // files were set aside, and the transcript names the change made after the snapshot.
        let db = &deploy["database"];
        assert!(
            db["restored"]
                .as_str()
                .unwrap_or_default()
                .contains("0.1.0"),
            "{db}"
        );
        assert!(
            Path::new(db["setAside"].as_str().unwrap())
                .join("meshguard.db")
                .is_file(),
            "{db}"
        );
        assert!(db["controlPlaneChangesNotCarried"].is_array(), "{db}");
    }
    assert_eq!(site.installed_version(), "0.1.0");
    assert_eq!(
        site.running_image(),
        format!("{REGISTRY}/meshguard/gateway@{}", digest_of(site, "0.1.0"))
    );
    assert!(
        audit_entries(site) > upgraded,
        "the audit log survived the rollback"
    );
}
