//! The demo's last act: the site installs MeshGuard from the signed media with one command
//! (`meshguard-bundle install`), as a disconnected site does: a registry on loopback, podman
//! running the chart, Terraform from the imported mirror, smoke tests and a signed transcript.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::demo::{random_hex, write_private};

/// What the site install started; stopped and removed when dropped (unless kept for --serve).
pub(crate) struct Site {
    dir: PathBuf,
    conf: PathBuf,
    registry: Child,
    pub(crate) url: String,
    pub(crate) transcript: PathBuf,
}

impl Site {
    fn podman(&self) -> Command {
        podman(&self.conf)
    }
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

/// Installs the site from `media` (relative to `demo`), with the vendor's keys in demo/vendor.
pub(crate) fn install(
    demo: &Path,
    tools_bin: &Path,
    bundle_tool: &Path,
    license_tool: &Path,
) -> anyhow::Result<Site> {
    let dir = demo.join("site-install");
    fs::create_dir_all(&dir)?;
    let conf = dir.join("containers.conf");
    fs::write(
        &conf,
        "[containers]\ndefault_ulimits = []\ncgroupns = \"host\"\n[engine]\nruntime = \"runc\"\n",
    )?;
    let reg_port = free_port()?;
    let registry_addr = format!("127.0.0.1:{reg_port}");
    fs::write(
        dir.join("registry.yml"),
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {registry_addr}\n",
            dir.join("registry").display()
        ),
    )?;
    let registry = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("registry.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start docker-registry (apt docker-registry) as the site registry")?;
    let port = free_port()?;
    let mut site = Site {
        dir: dir.clone(),
        conf: conf.clone(),
        registry,
        url: format!("http://127.0.0.1:{port}"),
        transcript: PathBuf::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::blocking::get(format!("http://{registry_addr}/v2/")).is_err() {
        if Instant::now() > deadline {
            bail!("the site registry did not start on {registry_addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("    site registry: docker-registry on {registry_addr}");

    // The site's own secrets and transcript key; nothing of the vendor's but its public keys.
    write_private(
        &dir.join("admin-token"),
        &format!("msat_{}", random_hex(24)?),
    )?;
    write_private(&dir.join("jwt-secret"), &random_hex(32)?)?;
    write_private(&dir.join("passphrase"), &random_hex(16)?)?;
    let bundle = |args: &[&str]| {
        let mut c = Command::new(bundle_tool);
        c.args(args)
            .current_dir(&dir)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    tools_bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env_remove("MESHGUARD_BUNDLE_PASSPHRASE")
            .args(["--passphrase-file", "passphrase"]);
        if std::env::var_os("CONTAINERS_CONF").is_none() {
            c.env("CONTAINERS_CONF", &conf);
        }
        c
    };
    let out = bundle(&[
        "keys", "generate", "--secret", "site.key", "--public", "site.pub",
    ])
    .output()?;
    if !out.status.success() {
        bail!(
            "cannot make the site key: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::write(
        dir.join("bootstrap.tfvars.json"),
        r#"{"agents": {"clinical-assistant": {"trust_tier": "verified", "tags": ["hipaa"]}}}"#,
    )?;
    let write_site = |activation: bool| {
        fs::write(
            dir.join("site.yaml"),
            format!(
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
                free_port().unwrap_or(port + 1),
                if activation {
                    "licenseActivation: activation.json\n"
                } else {
                    ""
                }
            ),
        )
    };
    write_site(false)?;
    let install = || -> anyhow::Result<(bool, String)> {
        let out = bundle(&[
            "install",
            "../media",
            "--site",
            "site.yaml",
            "--pubkey",
            "../vendor/media.pub",
            "--license-pubkey",
            "../vendor/vendor.pub",
        ])
        .output()
        .context("cannot run meshguard-bundle install")?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    };
    let (done, text) = install()?;
    let request = dir.join("state/license/request.json");
    if done || !request.is_file() {
        bail!("the first install should stop for the license activation:\n{text}");
    }
    println!(
        "    first run: the gateway runs; the license needs this installation's activation, so the install stopped at step 4 and wrote {}",
        request.display()
    );
    let out = Command::new(license_tool)
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
        .arg(&request)
        .arg("--out")
        .arg(dir.join("activation.json"))
        .current_dir(demo)
        .output()?;
    if !out.status.success() {
        bail!(
            "the vendor could not activate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!(
        "    the vendor answered (meshguard-license activate); site.yaml names the activation; second run:"
    );
    write_site(true)?;
    let (done, text) = install()?;
    for line in text.lines() {
        println!("    {line}");
    }
    if !done {
        bail!("the site install failed (transcript above)");
    }
    site.transcript = text
        .lines()
        .find_map(|l| l.strip_prefix("transcript: "))
        .and_then(|l| l.split(" (signed").next())
        .map(PathBuf::from)
        .context("the install named no transcript")?;
    let out = Command::new("minisign")
        .arg("-Vm")
        .arg(&site.transcript)
        .arg("-p")
        .arg(dir.join("site.pub"))
        .output()
        .context("cannot run minisign")?;
    println!(
        "    minisign -Vm {} -p site.pub: {}",
        site.transcript.display(),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
    );
    if !out.status.success() {
        bail!("the transcript's signature does not verify");
    }
    // Every smoke test of the runbook ran and passed (none skipped, none missing).
    let transcript: serde_json::Value = serde_json::from_slice(&std::fs::read(&site.transcript)?)?;
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
    let expected = [
        "policy allow",
        "policy deny",
        "audit write",
        "offline signature verification",
        "sidecar heartbeat",
        "egress denial",
        "evidence export",
    ];
    let missing: Vec<&&str> = expected.iter().filter(|n| !passed.contains(n)).collect();
    if !missing.is_empty() {
        bail!("the install's transcript does not show these smoke tests passed: {missing:?}");
    }
    println!(
        "    the signed transcript shows all {} smoke tests of the runbook passed",
        expected.len()
    );
    let ps = site
        .podman()
        .args(["ps", "--format", "{{.Names}}  {{.Image}}  {{.Status}}"])
        .output()?;
    for line in String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.starts_with("demo-site"))
    {
        println!("    podman: {line}");
    }
    Ok(site)
}
