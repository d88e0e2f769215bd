//! Step 17, the demo's last act: the site installs MeshGuard from the signed media with one
//! command (`meshguard-bundle install`), as a disconnected site does: a registry on loopback,
//! podman running the chart, Terraform from the imported mirror, smoke tests and a signed
//! transcript.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::{Demo, random_hex, step, write_private};

/// The smoke tests of the runbook, every one of which the install's transcript must show passed.
const SMOKE_TESTS: [&str; 7] = [
    "policy allow",
    "policy deny",
    "audit write",
    "offline signature verification",
    "sidecar heartbeat",
    "egress denial",
    "evidence export",
];

/// The site file's bootstrap variables: one agent, created by the install's Terraform step.
const BOOTSTRAP_VARS: &str =
    r#"{"agents": {"clinical-assistant": {"trust_tier": "verified", "tags": ["hipaa"]}}}"#;

/// What the site install started; stopped and removed when dropped (unless kept for --serve).
pub(crate) struct Site {
    dir: PathBuf,
    conf: PathBuf,
    registry: Child,
    registry_addr: String,
    port: u16,
    pub(crate) url: String,
    pub(crate) transcript: PathBuf,
}

impl Drop for Site {
    fn drop(&mut self) {
        down(&self.dir, &self.conf);
        let _ = self.registry.kill();
        let _ = self.registry.wait();
    }
}

fn podman(conf: &Path) -> Command {
    let mut c = Command::new("podman");
    // podman's defaults on this kind of host (no systemd, no ulimit changes, runc): the
    // configuration the tests use; a site's own podman configuration replaces it.
    if std::env::var_os("CONTAINERS_CONF").is_none() {
        c.env("CONTAINERS_CONF", conf);
    }
    c
}

/// Stops and removes what an earlier demo's site install left (pods, volume, secret).
pub(crate) fn down(dir: &Path, conf: &Path) {
    let deploy = dir.join("state/deploy");
    for v in fs::read_dir(&deploy).into_iter().flatten().flatten() {
        for f in fs::read_dir(v.path()).into_iter().flatten().flatten() {
            if f.path().extension().is_some_and(|x| x == "yaml") {
                let _ = podman(conf).args(["kube", "down"]).arg(f.path()).output();
            }
        }
    }
    // The data volume, and the volumes podman makes for the chart's ConfigMaps.
    if let Ok(out) = podman(conf).args(["volume", "ls", "-q"]).output() {
        for v in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|v| v.starts_with("demo-site-"))
        {
            let _ = podman(conf).args(["volume", "rm", "-f", v]).output();
        }
    }
    let _ = podman(conf)
        .args(["secret", "rm", "demo-site-secrets"])
        .output();
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Step 17: installs the site from the demo's media, with the vendor's keys in demo/vendor. The
/// first run stops for the license's activation, the vendor answers, the second run installs;
/// its transcript must verify and show every smoke test passed.
pub(crate) fn install(demo: &Demo) -> anyhow::Result<Site> {
    step(
        "the site installs MeshGuard from the media with one command (meshguard-bundle install): verify, import into a registry on loopback, podman runs the chart, Terraform bootstrap from the imported mirror, smoke tests, a signed transcript",
    );
    let mut site = Site::start_registry(&demo.dir.join("site-install"))?;
    site.write_secrets_and_key(demo)?;
    let request = site.first_run_stops_for_activation(demo)?;
    site.vendor_activates(demo, &request)?;
    site.transcript = site.second_run_installs(demo)?;
    site.verify_transcript_signature()?;
    check_smoke_tests_passed(&site.transcript)?;
    site.show_pods()?;
    Ok(site)
}

impl Site {
    /// The site's registry (docker-registry on a free port of 127.0.0.1), answering when this
    /// returns, and the port the site's gateway will listen on.
    fn start_registry(dir: &Path) -> anyhow::Result<Site> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let conf = dir.join("containers.conf");
        fs::write(
            &conf,
            "[containers]\ndefault_ulimits = []\ncgroupns = \"host\"\n[engine]\nruntime = \"runc\"\n",
        )
        .with_context(|| format!("cannot write {}", conf.display()))?;
        let registry_addr = format!("127.0.0.1:{}", free_port()?);
        let registry = spawn_registry(dir, &registry_addr)?;
        let port = free_port()?;
        let site = Site {
            dir: dir.to_owned(),
            conf,
            registry,
            registry_addr,
            port,
            url: format!("http://127.0.0.1:{port}"),
            transcript: PathBuf::new(),
        };
        site.wait_for_registry()?;
        println!(
            "    site registry: docker-registry on {}",
            site.registry_addr
        );
        Ok(site)
    }

    fn wait_for_registry(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::blocking::get(format!("http://{}/v2/", self.registry_addr)).is_err() {
            if Instant::now() > deadline {
                bail!("the site registry did not start on {}", self.registry_addr);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The site's own secrets and transcript key; nothing of the vendor's but its public keys.
    fn write_secrets_and_key(&self, demo: &Demo) -> anyhow::Result<()> {
        let dir = &self.dir;
        write_private(
            &dir.join("admin-token"),
            &format!("msat_{}", random_hex(24)?),
        )?;
        write_private(&dir.join("jwt-secret"), &random_hex(32)?)?;
        write_private(&dir.join("passphrase"), &random_hex(16)?)?;
        let out = self
            .bundle(
                demo,
                &[
                    "keys", "generate", "--secret", "site.key", "--public", "site.pub",
                ],
            )
            .output()
            .context("cannot run meshguard-bundle keys generate")?;
        if !out.status.success() {
            bail!(
                "cannot make the site key: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let vars = dir.join("bootstrap.tfvars.json");
        fs::write(&vars, BOOTSTRAP_VARS).with_context(|| format!("cannot write {}", vars.display()))
    }

    /// The first run, without an activation: the gateway runs, and the install stops at step 4
    /// with this installation's license request, whose path this returns.
    fn first_run_stops_for_activation(&self, demo: &Demo) -> anyhow::Result<PathBuf> {
        self.write_site_file(false)?;
        let (done, text) = self.run_install(demo)?;
        let request = self.dir.join("state/license/request.json");
        if done || !request.is_file() {
            bail!("the first install should stop for the license activation:\n{text}");
        }
        println!(
            "    first run: the gateway runs; the license needs this installation's activation, so the install stopped at step 4 and wrote {}",
            request.display()
        );
        Ok(request)
    }

    /// The vendor answers the request (`meshguard-license activate`) into activation.json.
    fn vendor_activates(&self, demo: &Demo, request: &Path) -> anyhow::Result<()> {
        let out = Command::new(demo.bin("meshguard-license"))
            .args([
                "activate",
                "--key",
                "vendor/vendor.key",
                "--passphrase-file",
                "vendor/passphrase",
                "--license",
                "vendor/demo.license",
                "--request",
            ])
            .arg(request)
            .arg("--out")
            .arg(self.dir.join("activation.json"))
            .current_dir(&demo.dir)
            .output()
            .context("cannot run meshguard-license activate")?;
        if !out.status.success() {
            bail!(
                "the vendor could not activate: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        println!(
            "    the vendor answered (meshguard-license activate); site.yaml names the activation; second run:"
        );
        Ok(())
    }

    /// The second run, with the activation: it must install; returns the transcript it names.
    fn second_run_installs(&self, demo: &Demo) -> anyhow::Result<PathBuf> {
        self.write_site_file(true)?;
        let (done, text) = self.run_install(demo)?;
        for line in text.lines() {
            println!("    {line}");
        }
        if !done {
            bail!("the site install failed (transcript above)");
        }
        text.lines()
            .find_map(|l| l.strip_prefix("transcript: "))
            .and_then(|l| l.split(" (signed").next())
            .map(PathBuf::from)
            .context("the install named no transcript")
    }

    /// The transcript's signature verifies with the site's key (`minisign -Vm`).
    fn verify_transcript_signature(&self) -> anyhow::Result<()> {
        let out = Command::new("minisign")
            .arg("-Vm")
            .arg(&self.transcript)
            .arg("-p")
            .arg(self.dir.join("site.pub"))
            .output()
            .context("cannot run minisign")?;
        println!(
            "    minisign -Vm {} -p site.pub: {}",
            self.transcript.display(),
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("")
        );
        if !out.status.success() {
            bail!("the transcript's signature does not verify");
        }
        Ok(())
    }

    /// The site's containers, as podman lists them.
    fn show_pods(&self) -> anyhow::Result<()> {
        let ps = podman(&self.conf)
            .args(["ps", "--format", "{{.Names}}  {{.Image}}  {{.Status}}"])
            .output()
            .context("cannot run podman ps")?;
        for line in String::from_utf8_lossy(&ps.stdout)
            .lines()
            .filter(|l| l.starts_with("demo-site"))
        {
            println!("    podman: {line}");
        }
        Ok(())
    }

    /// site.yaml, the site file: what this site decides (docs/site-install.md); with
    /// `activation`, it names the vendor's activation.
    fn write_site_file(&self, activation: bool) -> anyhow::Result<()> {
        let path = self.dir.join("site.yaml");
        let text = format!(
            "# The site file: what this site decides (docs/site-install.md).
release: demo-site
profile: air-gapped
registry: {{address: \"{registry_addr}\", insecure: true}}
port: {port}
candidatePort: {}
stateDir: state
secrets: {{adminTokenFile: admin-token, jwtSecretFile: jwt-secret}}
transcriptKey: site.key
environment:
  region: local
  identityProvider: https://idp.enclave.internal
  destinations: [records.enclave.internal:443]
bootstrap: {{module: bootstrap, varFile: bootstrap.tfvars.json}}
{}",
            free_port().unwrap_or(self.port + 1),
            if activation {
                "licenseActivation: activation.json\n"
            } else {
                ""
            },
            registry_addr = self.registry_addr,
            port = self.port,
        );
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    /// `meshguard-bundle install` of the demo's media with site.yaml: whether it succeeded, and
    /// what it printed.
    fn run_install(&self, demo: &Demo) -> anyhow::Result<(bool, String)> {
        let out = self
            .bundle(
                demo,
                &[
                    "install",
                    "../media",
                    "--site",
                    "site.yaml",
                    "--pubkey",
                    "../vendor/media.pub",
                    "--license-pubkey",
                    "../vendor/vendor.pub",
                ],
            )
            .output()
            .context("cannot run meshguard-bundle install")?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }

    /// `meshguard-bundle ARGS` in the site's directory, with the site's passphrase file, the
    /// tools on PATH and the demo's podman configuration.
    fn bundle(&self, demo: &Demo, args: &[&str]) -> Command {
        let mut c = Command::new(demo.bin("meshguard-bundle"));
        c.args(args)
            .current_dir(&self.dir)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    demo.tools.bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env_remove("MESHGUARD_BUNDLE_PASSPHRASE")
            .args(["--passphrase-file", "passphrase"]);
        if std::env::var_os("CONTAINERS_CONF").is_none() {
            c.env("CONTAINERS_CONF", &self.conf);
        }
        c
    }
}

/// docker-registry serving `dir`/registry on `addr`, configured by `dir`/registry.yml.
fn spawn_registry(dir: &Path, addr: &str) -> anyhow::Result<Child> {
    let config = dir.join("registry.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("registry").display()
        ),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start docker-registry (apt docker-registry) as the site registry")
}

/// Every smoke test of the runbook ran and passed (none skipped, none missing), as the signed
/// transcript records them.
fn check_smoke_tests_passed(transcript: &Path) -> anyhow::Result<()> {
    let bytes =
        fs::read(transcript).with_context(|| format!("cannot read {}", transcript.display()))?;
    let transcript: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", transcript.display()))?;
    let checks = transcript["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "smoke tests")
        .map(|s| s["detail"]["checks"].clone())
        .unwrap_or_default();
    let passed: Vec<&str> = checks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["result"] == "passed")
        .filter_map(|c| c["name"].as_str())
        .collect();
    let missing: Vec<&&str> = SMOKE_TESTS.iter().filter(|n| !passed.contains(n)).collect();
    if !missing.is_empty() {
        bail!("the install's transcript does not show these smoke tests passed: {missing:?}");
    }
    println!(
        "    the signed transcript shows all {} smoke tests of the runbook passed",
        SMOKE_TESTS.len()
    );
    Ok(())
}
