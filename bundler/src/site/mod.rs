//! `meshguard-bundle install`: the product's air-gapped install runbook as one command, on a
//! disconnected host with the site's own helm, podman and terraform:
//!
//! 1. verify the media (signatures, checksums, expected version, no downgrade unless asked);
//! 2. import images into the site registry, the provider into a Terraform mirror, chart,
//!    modules, policies and license into the site's state directory;
//! 3. render the chart for the site's profile and start it (`podman kube play`); a new version
//!    is first started beside the running one and smoke-tested, then replaces it; a failed start
//!    puts the previous version back;
//! 4. apply the environment values (the license for the site's region, the rest recorded);
//! 5. apply the bootstrap module with Terraform from the imported mirror;
//! 6. smoke tests ([`smoke`]);
//! 7. a transcript of all of it, signed with the site's key (checkable with stock minisign).
//!
//! Every run writes a transcript, also a failed one, naming the step that failed and what to do.
//! Step 3's starting, staging and rolling back is in `deploy.rs`.

pub mod config;
mod deploy;
pub mod smoke;
pub mod snapshot;
pub mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::keys::{MediaKey, MediaPublicKey};
use crate::verify::{self, Verified};
use crate::{fsx, import, media, registry};
pub use config::SiteConfig;
use smoke::Gateway;
use tools::{Podman, run};

/// What `install` needs beyond the site file.
#[derive(Debug)]
pub struct Options<'a> {
    pub media: PathBuf,
    pub site: SiteConfig,
    /// The publisher's key, trusted out of band; it also verifies the policy bundle in the pod.
    pub pubkey: &'a MediaPublicKey,
    pub pubkey_file: PathBuf,
    /// The license vendor's key file: the license on the media is checked and installed.
    pub license_pubkey_file: Option<PathBuf>,
    pub verify: verify::Options,
    /// Allow media older than what runs (rollback media).
    pub rollback: bool,
    /// The site's key that signs the transcript.
    pub transcript_key: &'a MediaKey,
    /// Smoke tests the operator skips by name (`--skip-smoke`); the transcript says so.
    pub skip_smoke: Vec<String>,
}

/// What is installed, kept in STATE/installed.json (the previous one in installed.previous.json).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Installed {
    pub version: String,
    /// SHA-256 of the media's SHA256SUMS: which media this was.
    pub media_sha256sums: String,
    pub image: String,
    /// The rendered manifest podman runs.
    pub manifest: PathBuf,
    pub manifest_sha256: String,
    pub secret_sha256: String,
    pub installed_at: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub step: u8,
    pub name: String,
    /// passed | failed | skipped
    pub status: String,
    pub seconds: f64,
    pub detail: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transcript {
    pub format: &'static str,
    pub tool: String,
    pub site: String,
    pub profile: String,
    pub media: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub seconds: f64,
    pub ok: bool,
    pub steps: Vec<StepRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Transcript {
    /// The smoke tests the operator skipped by name, from the smoke step's record.
    fn skipped_smoke_tests(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|st| st.name == "smoke tests")
            .flat_map(|st| st.detail["checks"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["result"] == smoke::SKIPPED)
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    }

    pub fn text(&self) -> String {
        let skipped = self.skipped_smoke_tests();
        let result = match (self.ok, skipped.is_empty()) {
            (false, _) => "FAILED".to_owned(),
            (true, true) => "INSTALLED".to_owned(),
            (true, false) => format!(
                "INSTALLED, with {} smoke test(s) skipped by the operator: {}",
                skipped.len(),
                skipped.join(", ")
            ),
        };
        let mut s = format!(
            "meshguard site installation transcript\nsite:     {} ({} profile)\nmedia:    {}\nversion:  {}{}\nstarted:  {}\nfinished: {} ({:.1}s)\nresult:   {}\n\n",
            self.site,
            self.profile,
            self.media,
            self.version.as_deref().unwrap_or("?"),
            self.previous_version
                .as_deref()
                .map(|p| format!(" (was {p})"))
                .unwrap_or_default(),
            self.started_at,
            self.finished_at,
            self.seconds,
            result
        );
        for st in &self.steps {
            s.push_str(&format!(
                "{}. {:<28} {:<7} {:>7.1}s\n",
                st.step, st.name, st.status, st.seconds
            ));
            if st.name == "smoke tests" {
                for c in st.detail["checks"].as_array().into_iter().flatten() {
                    s.push_str(&format!(
                        "     {:<32} {:<14} {}\n",
                        c["name"].as_str().unwrap_or(""),
                        c["result"].as_str().unwrap_or(""),
                        c["detail"].as_str().unwrap_or("")
                    ));
                }
            }
        }
        if let Some(e) = &self.error {
            s.push_str(&format!("\nerror: {e}\n"));
        }
        s
    }
}

/// The result of one run: the transcript is always written and signed.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub transcript_json: PathBuf,
    pub transcript_text: String,
}

const INSTALLED: &str = "installed.json";
const PREVIOUS: &str = "installed.previous.json";

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn read_installed(state: &Path, name: &str) -> Result<Option<Installed>> {
    let p = state.join(name);
    match std::fs::read(&p) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
            format!(
                "{} is damaged; restore it from a backup of the state directory",
                p.display()
            )
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

fn write_json(path: &Path, v: &impl Serialize) -> Result<()> {
    let mut b = serde_json::to_vec_pretty(v)?;
    b.push(b'\n');
    fsx::write_atomic(path, &b)?;
    Ok(())
}

/// Runs the runbook. Errors before the transcript can be written (a state directory that
/// cannot be created or locked) are returned; everything after lands in the transcript.
pub fn install(opts: &Options) -> Result<Outcome> {
    let state = &opts.site.state_dir;
    std::fs::create_dir_all(state.join("transcripts"))
        .with_context(|| format!("cannot create the state directory {}", state.display()))?;
    // One install at a time per state directory.
    let _lock = fsx::lock_exclusive(&state.join(".lock"))?;
    let previous = read_installed(state, INSTALLED)?;
    let started = Instant::now();
    let mut run = Run {
        opts,
        previous: previous.clone(),
        media_sha256sums: String::new(),
        t: Transcript {
            format: "meshguard.site-install/v1",
            tool: format!("meshguard-bundle {}", env!("CARGO_PKG_VERSION")),
            site: opts.site.release.clone(),
            profile: opts.site.profile.clone(),
            media: std::fs::canonicalize(&opts.media)
                .unwrap_or(opts.media.clone())
                .display()
                .to_string(),
            version: None,
            previous_version: previous.as_ref().map(|p| p.version.clone()),
            started_at: now(),
            finished_at: String::new(),
            seconds: 0.0,
            ok: false,
            steps: Vec::new(),
            error: None,
        },
    };
    let result = run.all();
    let mut t = run.t;
    t.finished_at = now();
    t.seconds = started.elapsed().as_secs_f64();
    t.ok = result.is_ok();
    if let Err(e) = &result {
        t.error = Some(format!("{e:#}"));
    }
    t.steps.push(StepRecord {
        step: 7,
        name: "signed transcript".into(),
        status: "passed".into(),
        seconds: 0.0,
        detail: json!({"signedBy": opts.transcript_key.public().key_id()}),
    });
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let base = format!(
        "{stamp}-{}-{}",
        t.version.as_deref().unwrap_or("unknown"),
        if t.ok { "installed" } else { "failed" }
    );
    let json_path = state.join("transcripts").join(format!("{base}.json"));
    let text_path = state.join("transcripts").join(format!("{base}.txt"));
    let mut bytes = serde_json::to_vec_pretty(&t)?;
    bytes.push(b'\n');
    fsx::write_atomic(&json_path, &bytes)?;
    let text = t.text();
    fsx::write_atomic(&text_path, text.as_bytes())?;
    let sig = opts.transcript_key.sign(
        &bytes,
        &format!(
            "meshguard site install {} {} {}",
            t.site,
            t.version.as_deref().unwrap_or("?"),
            if t.ok { "installed" } else { "failed" }
        ),
    )?;
    let mut sig_path = json_path.clone().into_os_string();
    sig_path.push(".minisig");
    fsx::write_atomic(Path::new(&sig_path), sig.as_bytes())?;
    Ok(Outcome {
        ok: t.ok,
        transcript_json: json_path,
        transcript_text: text,
    })
}

struct Run<'a> {
    opts: &'a Options<'a>,
    previous: Option<Installed>,
    /// SHA-256 of the media's SHA256SUMS, taken when it was verified.
    media_sha256sums: String,
    t: Transcript,
}

/// What the deploy step decided, for the steps after it.
struct Deployed {
    gateway: Gateway,
    values: Value,
    /// The volume holding the gateway's database, audit log and license.
    claim: String,
    /// The egress proxy's port, when the media carries an allowlist.
    egress_port: Option<u16>,
}

impl Run<'_> {
    fn step<T>(
        &mut self,
        n: u8,
        name: &str,
        f: impl FnOnce(&mut Self) -> Result<(T, Value)>,
    ) -> Result<T> {
        eprintln!("meshguard-bundle install: step {n}: {name}");
        let start = Instant::now();
        let r = f(self);
        let seconds = start.elapsed().as_secs_f64();
        match r {
            Ok((v, detail)) => {
                let status = if detail.get("skipped").is_some() {
                    "skipped"
                } else {
                    "passed"
                };
                self.t.steps.push(StepRecord {
                    step: n,
                    name: name.into(),
                    status: status.into(),
                    seconds,
                    detail,
                });
                Ok(v)
            }
            Err(e) => {
                self.t.steps.push(StepRecord {
                    step: n,
                    name: name.into(),
                    status: "failed".into(),
                    seconds,
                    detail: json!({"error": format!("{e:#}")}),
                });
                Err(e.context(format!("step {n} ({name}) failed")))
            }
        }
    }

    fn all(&mut self) -> Result<()> {
        let site = &self.opts.site;
        let admin = SiteConfig::read_secret(&site.secrets.admin_token_file, "admin token")?;
        let jwt = SiteConfig::read_secret(&site.secrets.jwt_secret_file, "JWT secret")?;
        let (verified, vt) = self.step(1, "verify media", |r| r.verify())?;
        let version = verified.doc.version.clone();
        self.step(2, "import", |r| r.import(&verified, &vt))?;
        let deployed = self.step(3, "render and start", |r| r.deploy(&verified, &admin, &jwt))?;
        self.step(4, "environment values", |r| {
            r.environment(&deployed, &verified)
        })?;
        self.step(5, "terraform bootstrap", |r| r.bootstrap(&version, &admin))?;
        self.step(6, "smoke tests", |r| {
            let nonce = hex::encode(rand::random::<[u8; 6]>());
            let sidecar = |id: &str, token: &str| r.sidecar_smoke(&verified, &deployed, id, token);
            let checks = smoke::run(
                &deployed.gateway,
                &nonce,
                &smoke::Plan {
                    egress: deployed.egress_port,
                    sidecar: Some(&sidecar),
                    evidence: Some(smoke::EvidenceSmoke {
                        key: r.opts.transcript_key,
                        dir: r.opts.site.state_dir.join("evidence"),
                    }),
                    skip: &r.opts.skip_smoke,
                    candidate: false,
                },
            );
            let failed: Vec<String> = checks
                .iter()
                .filter(|c| !c.passed())
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            if !failed.is_empty() {
                bail!(
                    "{} smoke test(s) failed ({}); the site runs {version} but is not accepted: fix what failed and run the install again",
                    failed.len(),
                    failed.join("; ")
                );
            }
            Ok(((), json!({"checks": checks, "values": deployed.values})))
        })?;
        Ok(())
    }

    fn start_timeout(&self) -> Duration {
        Duration::from_secs(self.opts.site.start_timeout_seconds)
    }

    fn releases(&self, version: &str) -> PathBuf {
        self.opts.site.state_dir.join("releases").join(version)
    }

    fn verify(&mut self) -> Result<((Verified, verify::Transcript), Value)> {
        let (vt, res) = verify::verify(&self.opts.media, self.opts.pubkey, &self.opts.verify);
        let detail = serde_json::to_value(&vt)?;
        let verified = res.map_err(|e| {
            anyhow::anyhow!(
                "the media does not verify: {e}; do not install it: obtain the media from the publisher again and check the public key"
            )
        })?;
        let version = verified.doc.version.clone();
        self.t.version = Some(version.clone());
        if let Some(prev) = &self.previous
            && older(&version, &prev.version)
            && !self.opts.rollback
        {
            bail!(
                "the media holds {version}, older than the installed {}; to roll back to it, run the install again with --rollback",
                prev.version
            );
        }
        if gateway_image(&verified).is_none() {
            bail!("the media carries no meshguard/gateway image, so there is nothing to run");
        }
        let sums = fsx::sha256_file(&self.opts.media.join("SHA256SUMS"))?.0;
        self.media_sha256sums = sums.clone();
        let mut detail = detail;
        detail["sha256sums"] = json!(sums);
        detail["sboms"] = json!(
            verified
                .doc
                .items
                .iter()
                .filter(|i| i.kind == "sbom")
                .map(|i| json!({"path": i.path, "sha256": i.sha256}))
                .collect::<Vec<_>>()
        );
        Ok(((verified, vt), detail))
    }

    fn import(&mut self, verified: &Verified, vt: &verify::Transcript) -> Result<((), Value)> {
        let site = &self.opts.site;
        let receipt = import::import_verified(
            &self.opts.media,
            verified,
            vt,
            &import::Options {
                registry: Some(site.registry.address.clone()),
                access: site.registry.access(),
                terraform_mirror: Some(site.state_dir.join("terraform-mirror")),
                dest: self.releases(&verified.doc.version),
                verify: verify::Options::default(),
            },
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}; nothing runs from this media yet: fix the registry or disk and run the install again"
            )
        })?;
        Ok(((), serde_json::to_value(&receipt)?))
    }

    /// The chart values this install sets (after the profile's and the site's files).
    /// A candidate (a new version smoke-tested beside the running one) runs on a scratch
    /// volume with no license: the license binds to the site's installation, whose volume the
    /// running version holds.
    fn values(&self, verified: &Verified, release: &str, port: u16, candidate: bool) -> Value {
        let site = &self.opts.site;
        let base = &site.release;
        let (_, digest) = gateway_image(verified).expect("checked in verify");
        let license =
            !candidate && self.opts.license_pubkey_file.is_some() && verified.doc.license.is_some();
        let tools = image_of(verified, "meshguard/tools");
        let mut values = json!({
            "global": {"imageRegistry": site.registry.address},
            "image": {"digest": digest, "tag": verified.doc.version},
            "toolsImage": {"digest": tools.map(|(_, d)| d).unwrap_or_default(), "tag": verified.doc.version},
            "existingSecret": format!("{base}-secrets"),
            "port": port,
            "audit": {"origin": format!("{release}.{}/meshguard-audit", site.namespace)},
            "license": {
                "enabled": license,
                "deploymentMode": site.profile,
                "region": site.environment.region.clone().unwrap_or_default(),
                "publicKeyConfigMap": format!("{base}-license-key"),
            },
            "policyBundle": {
                "enabled": has_policy_bundle(verified),
                "configMap": format!("{base}-policy-bundle"),
                "publicKeyConfigMap": format!("{base}-media-key"),
            },
            // The candidate runs no egress proxy: its port is the running version's.
            "egressProxy": {
                "enabled": has_egress(verified) && !candidate,
                "port": site.egress_port(),
                "allowlistConfigMap": format!("{base}-egress-allowlist"),
                "publicKeyConfigMap": format!("{base}-media-key"),
                "regions": site.environment.region.iter().collect::<Vec<_>>(),
            },
        });
        if tools.is_none() || candidate {
            // Media without the tools image cannot run the archive job; a candidate archives
            // nothing (its scratch volume is dropped).
            values["archive"] = json!({"enabled": false});
        }
        values
    }

    /// `helm template` of the imported chart, with the ConfigMaps the values name appended.
    fn render(
        &self,
        verified: &Verified,
        release: &str,
        port: u16,
        candidate: bool,
    ) -> Result<(String, Value)> {
        let site = &self.opts.site;
        let version = &verified.doc.version;
        let dir = site.state_dir.join("deploy").join(version);
        std::fs::create_dir_all(&dir)?;
        let chart = self.releases(version).join("charts/meshguard-gateway");
        let profile = chart.join(format!("values-{}.yaml", site.profile));
        if !profile.is_file() {
            bail!(
                "the chart on the media has no {} profile ({} is missing)",
                site.profile,
                profile.display()
            );
        }
        let values = self.values(verified, release, port, candidate);
        let generated = dir.join(format!("{release}.values.json"));
        write_json(&generated, &values)?;
        let mut out = self.helm_template(version, release, &generated, None)?;
        out.push_str(&self.config_maps(verified)?);
        Ok((out, values))
    }

    /// `helm template` of the imported chart: the profile's values, the site's values files,
    /// then `generated`; only `show_only` when given.
    fn helm_template(
        &self,
        version: &str,
        release: &str,
        generated: &Path,
        show_only: Option<&str>,
    ) -> Result<String> {
        let site = &self.opts.site;
        let chart = self.releases(version).join("charts/meshguard-gateway");
        let mut cmd = Command::new(tools::find("helm")?);
        cmd.args(["template", release])
            .arg(&chart)
            .args(["--namespace", &site.namespace, "-f"])
            .arg(chart.join(format!("values-{}.yaml", site.profile)));
        for f in &site.values_files {
            cmd.arg("-f").arg(f);
        }
        cmd.arg("-f").arg(generated);
        // podman enforces no NetworkPolicy (on one host, the host's firewall is the boundary):
        // none is rendered, so a restricted-egress profile does not ask for cluster
        // destinations this host does not have. Kept out of the values file written beside the
        // manifest, which docs/site-install.md reuses against a cluster.
        cmd.args(["--set", "networkPolicy.enabled=false"]);
        if let Some(t) = show_only {
            cmd.args(["--show-only", t]);
        }
        run(&mut cmd, "helm template")
    }

    fn config_maps(&self, verified: &Verified) -> Result<String> {
        let base = &self.opts.site.release;
        let imported = self.releases(&verified.doc.version);
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
        };
        // A file the gateway loads only with its minisign signature beside it.
        let signed_map = |name: String, path: &str| -> Result<Value> {
            let file = path.rsplit('/').next().unwrap_or(path);
            let sig = format!("{file}.minisig");
            Ok(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name},
                "data": {
                    file: read(&imported.join(path))?,
                    sig: read(&imported.join(format!("{path}.minisig")))?,
                },
            }))
        };
        let mut maps = Vec::new();
        if has_egress(verified) {
            maps.push(signed_map(
                format!("{base}-egress-allowlist"),
                media::EGRESS_ALLOWLIST,
            )?);
        }
        if has_policy_bundle(verified) {
            maps.push(signed_map(
                format!("{base}-policy-bundle"),
                media::POLICY_BUNDLE,
            )?);
        }
        if has_policy_bundle(verified) || has_egress(verified) {
            maps.push(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("{base}-media-key")},
                "data": {"meshguard.pub": read(&self.opts.pubkey_file)?},
            }));
        }
        if let (Some(k), Some(_)) = (&self.opts.license_pubkey_file, &verified.doc.license) {
            maps.push(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("{base}-license-key")},
                "data": {"vendor.pub": read(k)?},
            }));
        }
        Ok(maps
            .iter()
            .map(|m| format!("\n---\n{m}\n"))
            .collect::<String>())
    }

    /// The smoke test of the guardian sidecar: the chart's example agent pod for the smoke
    /// agent, enforcing the control plane's current policy set (its signed export), on the
    /// host's loopback; passes once the control plane holds, by heartbeat, an allowed and a
    /// denied decision the sidecar made. The pod, its ConfigMaps and its secret are removed
    /// whatever the outcome.
    fn sidecar_smoke(
        &self,
        verified: &Verified,
        deployed: &Deployed,
        agent_id: &str,
        token: &str,
    ) -> Result<String> {
        let site = &self.opts.site;
        let base = &site.release;
        let gw = &deployed.gateway;
        let podman =
            Podman::find()?.pulling_from(&self.opts.site.registry, &self.opts.site.state_dir)?;
        let exported = gw.send(
            gw.admin(reqwest::Method::GET, "/admin/policies/bundle"),
            200,
            "exporting the signed policy bundle for the sidecar",
        )?;
        let path = self.sidecar_manifest(verified, gw, agent_id, &exported)?;
        let secret = format!("{base}-smoke-agent");
        // What an interrupted earlier run may have left.
        let _ = podman.down(&path);
        if podman.secret_exists(&secret) {
            podman.secret_rm(&secret)?;
        }
        let secret_file = tempfile::Builder::new()
            .prefix(".secret")
            .tempfile_in(&site.state_dir)?;
        {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD.encode(token);
            std::fs::write(secret_file.path(), json!({ "token": b64 }).to_string())?;
        }
        podman.secret_create(&secret, secret_file.path())?;
        drop(secret_file);
        let started = Instant::now();
        let result = podman
            .play(&path, !site.registry.insecure)
            .and_then(|ids| self.sidecar_heard(&podman, &ids, gw, agent_id));
        let down = podman.down(&path);
        let rm = podman.secret_rm(&secret);
        let _ = std::fs::remove_file(&path);
        let detail = result?;
        down.context("removing the smoke test's sidecar pod")?;
        rm.context("removing the smoke test's agent secret")?;
        Ok(format!(
            "{detail}, {:.1} s after the pod started (the example agent and its sidecar, enforcing the control plane's signed policy export; pod removed)",
            started.elapsed().as_secs_f64()
        ))
    }

    /// The smoke sidecar's pod (the chart's example agent with its guardian) and the
    /// ConfigMaps of the policy export it enforces, rendered and written: the manifest's path.
    fn sidecar_manifest(
        &self,
        verified: &Verified,
        gw: &Gateway,
        agent_id: &str,
        exported: &Value,
    ) -> Result<PathBuf> {
        let site = &self.opts.site;
        let base = &site.release;
        let mut values = self.values(verified, base, site.port, false);
        values["exampleAgent"] = json!({
            "enabled": true,
            "agentId": agent_id,
            "tokenSecret": format!("{base}-smoke-agent"),
            "calls": "GET /meshguard-smoke/status, DELETE /meshguard-smoke/status",
            "intervalSeconds": 1,
            "hostNetwork": true,
        });
        values["guardian"] = json!({
            "port": site.sidecar_port(),
            "gatewayUrl": gw.url,
            "syncIntervalSeconds": 1,
            "bundleConfigMap": format!("{base}-smoke-bundle"),
            "bundleKeyConfigMap": format!("{base}-smoke-bundle-key"),
        });
        let version = &verified.doc.version;
        let dir = site.state_dir.join("deploy").join(version);
        let generated = dir.join(format!("{base}-smoke-sidecar.values.json"));
        write_json(&generated, &values)?;
        let mut manifest = self
            .helm_template(
                version,
                base,
                &generated,
                Some("templates/example-agent.yaml"),
            )
            .context("rendering the smoke test's sidecar pod")?;
        for m in [
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": format!("{base}-smoke-bundle")},
                   "data": {"policy-bundle.json": exported["bundle"], "policy-bundle.json.minisig": exported["minisig"]}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": format!("{base}-smoke-bundle-key")},
                   "data": {"meshguard.pub": exported["publicKey"]}}),
        ] {
            manifest.push_str(&format!("\n---\n{m}\n"));
        }
        let path = dir.join(format!("{base}-smoke-sidecar.yaml"));
        fsx::write_atomic(&path, manifest.as_bytes())?;
        Ok(path)
    }

    /// Waits for the smoke sidecar's heartbeat to bring an allowed and a denied decision.
    fn sidecar_heard(
        &self,
        podman: &Podman,
        ids: &[String],
        gw: &Gateway,
        agent_id: &str,
    ) -> Result<String> {
        use reqwest::Method;
        let deadline = Instant::now() + self.start_timeout();
        let mut last = String::from("no heartbeat yet");
        loop {
            let list = gw.send(
                gw.admin(Method::GET, "/admin/sidecars"),
                200,
                "listing the sidecars",
            )?;
            if let Some(row) = list["sidecars"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["agentId"] == agent_id))
            {
                let origin = row["origin"].as_str().unwrap_or_default();
                let text = gw
                    .admin(Method::GET, &format!("/admin/audit/export?source={origin}"))
                    .send()
                    .and_then(|r| r.text())
                    .unwrap_or_default();
                let has = |action: &str, decision: &str| {
                    text.lines().any(|l| {
                        serde_json::from_str::<Value>(l).is_ok_and(|v| {
                            v["entry"]["action"] == action && v["entry"]["decision"] == decision
                        })
                    })
                };
                let allow = has("read:meshguard-smoke/status", "allow");
                let deny = has("delete:meshguard-smoke/status", "deny");
                if allow && deny && row["policiesCurrent"] == true {
                    return Ok(format!(
                        "sidecar {origin} registered by heartbeat; the control plane holds {} of its entries, among them its allow and its deny, and it enforces the current policies",
                        row["entriesHeld"]
                    ));
                }
                last = format!(
                    "sidecar {origin}: {} entries held, allow seen: {allow}, deny seen: {deny}, policies current: {}",
                    row["entriesHeld"], row["policiesCurrent"]
                );
            }
            if let Some(crash) = podman.crashed(ids) {
                bail!("the smoke test's sidecar pod stopped: {crash}");
            }
            if Instant::now() > deadline {
                bail!(
                    "no heartbeat with the sidecar's decisions within {} s ({last}); see `podman logs {}-example-agent-pod-0-guardian`",
                    self.start_timeout().as_secs(),
                    self.opts.site.release
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits for a played gateway to answer /health; fails at once when its container exits.
    fn started(&self, podman: &Podman, ids: &[String], gw: &Gateway) -> Result<()> {
        let deadline = Instant::now() + self.start_timeout();
        loop {
            if gw.healthy() {
                return Ok(());
            }
            if let Some(why) = podman.crashed(ids) {
                bail!("the gateway stopped while starting: {why}");
            }
            if Instant::now() > deadline {
                bail!(
                    "the gateway did not answer /health at {} within {}s",
                    gw.url,
                    self.opts.site.start_timeout_seconds
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn environment(&mut self, deployed: &Deployed, verified: &Verified) -> Result<((), Value)> {
        let version = &verified.doc.version;
        let env = &self.opts.site.environment;
        let mut applied = serde_json::Map::new();
        // The license from the media, for this site's mode and region.
        let lic = self.releases(version).join("license");
        let license_file = std::fs::read_dir(&lic).ok().and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.extension().is_none_or(|x| x != "age"))
        });
        match (&self.opts.license_pubkey_file, license_file) {
            (Some(vendor_pub), Some(f)) => {
                let how = self.license(deployed, verified, vendor_pub, &f)?;
                applied.insert(
                    "license".into(),
                    installed_license(&deployed.gateway, &f, &how)?,
                );
            }
            (None, Some(_)) => {
                applied.insert(
                    "license".into(),
                    json!("on the media but not installed: pass --license-pubkey to check and install it"),
                );
            }
            _ => {
                applied.insert("license".into(), json!("none on the media"));
            }
        }
        let recorded =
            "recorded in this transcript; this release has no gateway setting for it yet";
        let mut rec = |k: &str, v: Option<String>, how: &str| {
            if let Some(v) = v {
                applied.insert(k.into(), json!({"value": v, "applied": how}));
            }
        };
        rec(
            "region",
            env.region.clone(),
            "REGION: the license must name this region",
        );
        rec("identityProvider", env.identity_provider.clone(), recorded);
        rec("keyManagement", env.key_management.clone(), recorded);
        rec("archive", env.archive.clone(), recorded);
        rec("siem", env.siem.clone(), recorded);
        if !env.destinations.is_empty() {
            rec(
                "destinations",
                Some(env.destinations.join(", ")),
                "recorded in this transcript; the egress proxy that enforces it is not in this release",
            );
        }
        Ok(((), Value::Object(applied)))
    }

    /// Installs the media's license. A first install has no activation yet (it binds to the
    /// installation id, which exists only once the gateway ran): the activation request is
    /// made with the tools image on the gateway's volume and the step stops, saying what to
    /// take to the vendor and what to do with the answer.
    fn license(
        &self,
        deployed: &Deployed,
        verified: &Verified,
        vendor_pub: &Path,
        license: &Path,
    ) -> Result<String> {
        let gw = &deployed.gateway;
        let site = &self.opts.site;
        let read_json = |p: &Path| -> Result<Value> {
            serde_json::from_slice(
                &std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
            )
            .with_context(|| format!("{} is not JSON", p.display()))
        };
        let body = match &site.license_activation {
            Some(a) => serde_json::to_vec(
                &json!({"license": read_json(license)?, "activation": read_json(a)?}),
            )?,
            None => std::fs::read(license)?,
        };
        let resp = gw
            .admin(reqwest::Method::POST, "/admin/license")
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .context("installing the license: the gateway did not answer")?;
        let status = resp.status().as_u16();
        let r: Value = resp.json().unwrap_or(Value::Null);
        if status == 200 {
            return Ok(format!(
                "installed ({})",
                r["result"].as_str().unwrap_or("?")
            ));
        }
        if status != 400
            || r["error"].as_str() != Some("activation")
            || site.license_activation.is_some()
        {
            bail!(
                "the gateway refused the license on the media ({status}): {}; check that the license names this site's mode and region{}",
                r["message"].as_str().unwrap_or(&r.to_string()),
                if site.license_activation.is_some() {
                    " and that the activation answers this site's latest request"
                } else {
                    ""
                }
            );
        }
        let request = self.activation_request(deployed, verified, vendor_pub, license)?;
        bail!(
            "the license on the media needs activation for this installation: take {} to the vendor (meshguard-license activate), set licenseActivation in the site file to the file the vendor returns, and run the install again. The gateway runs and enforces; admin writes stay frozen until the license is installed",
            request.display()
        )
    }

    fn activation_request(
        &self,
        deployed: &Deployed,
        verified: &Verified,
        vendor_pub: &Path,
        license: &Path,
    ) -> Result<PathBuf> {
        let site = &self.opts.site;
        let tools_image = verified
            .images
            .iter()
            .find(|i| registry::split_ref(&i.reference).0 == "meshguard/tools")
            .context(
                "the media has no meshguard/tools image to make the activation request with",
            )?;
        let inputs = tempfile::Builder::new()
            .prefix(".license")
            .tempdir_in(&site.state_dir)?;
        std::fs::copy(vendor_pub, inputs.path().join("vendor.pub"))?;
        std::fs::copy(license, inputs.path().join("license"))?;
        let mut perms = std::fs::metadata(inputs.path())?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(inputs.path(), perms)?;
        let image = format!(
            "{}/meshguard/tools@{}",
            site.registry.address, tools_image.digest
        );
        // Pulled first, with the registry's credentials and CAs: `podman run` takes
        // `--authfile` but not `--cert-dir`, so it runs the image already pulled.
        let mut pull = Command::new(tools::find("podman")?);
        pull.args([
            "pull",
            "--quiet",
            &format!("--tls-verify={}", !site.registry.insecure),
        ])
        .args(site.registry.podman_args(&site.state_dir)?)
        .arg(&image);
        run(&mut pull, "podman pull of the tools image")?;
        let mut cmd = Command::new(tools::find("podman")?);
        cmd.args(["run", "--rm", "--pull=never", "--network=none"]);
        cmd.args([
            "-v",
            &format!("{}:/data", deployed.claim),
            "-v",
            &format!("{}:/in:ro", inputs.path().display()),
            &image,
            "/usr/local/bin/meshguard-license",
            "request",
            "--data-dir",
            "/data/license",
            "--pubkey",
            "/in/vendor.pub",
            "--license",
            "/in/license",
            "--mode",
            &site.profile,
        ]);
        if let Some(r) = &site.environment.region {
            cmd.args(["--region", r]);
        }
        let request = run(&mut cmd, "meshguard-license request (in the tools image)")?;
        let out = site.state_dir.join("license/request.json");
        std::fs::create_dir_all(out.parent().expect("a parent"))?;
        fsx::write_atomic(&out, request.as_bytes())?;
        Ok(out)
    }

    /// The Terraform working directory of the bootstrap: the media's module `module` copied
    /// in, replacing the previous configuration (the state stays).
    fn bootstrap_workdir(&self, version: &str, module_name: &str) -> Result<PathBuf> {
        let modules = self.releases(version).join("terraform/modules");
        let module = modules.join(module_name);
        if !module.is_dir() {
            let have: Vec<String> = std::fs::read_dir(&modules)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            bail!(
                "the media has no Terraform module {:?} (it has: {}); fix bootstrap.module in the site file",
                module_name,
                have.join(", ")
            );
        }
        let work = self.opts.site.state_dir.join("terraform");
        std::fs::create_dir_all(&work)?;
        // The module's configuration replaces the previous one; the state stays.
        for e in std::fs::read_dir(&work)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "tf") {
                std::fs::remove_file(&p)?;
            }
        }
        for e in std::fs::read_dir(&module)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "tf") {
                std::fs::copy(&p, work.join(p.file_name().expect("a file")))?;
            }
        }
        Ok(work)
    }

    fn bootstrap(&mut self, version: &str, admin: &str) -> Result<((), Value)> {
        let site = &self.opts.site;
        let Some(b) = &site.bootstrap else {
            return Ok(((), json!({"skipped": "the site file has no bootstrap"})));
        };
        let work = self.bootstrap_workdir(version, &b.module)?;
        let cli_config = work.join("terraformrc");
        fsx::write_atomic(&cli_config, b"")?;
        let terraform = tools::find("terraform")?;
        let tf = |args: &[&str]| -> Result<String> {
            let mut c = Command::new(&terraform);
            c.args(args)
                .current_dir(&work)
                .env("CHECKPOINT_DISABLE", "1")
                .env("TF_IN_AUTOMATION", "1")
                .env("TF_CLI_CONFIG_FILE", &cli_config)
                .env(
                    "MESHGUARD_GATEWAY_URL",
                    format!("http://127.0.0.1:{}", site.port),
                )
                .env("MESHGUARD_ADMIN_TOKEN", admin);
            run(&mut c, &format!("terraform {}", args[0]))
        };
        let mirror = site.state_dir.join("terraform-mirror");
        tf(&[
            "init",
            "-input=false",
            // The lock file follows the provider the media brings (an upgrade or a rollback).
            "-upgrade",
            "-no-color",
            &format!("-plugin-dir={}", mirror.display()),
        ])?;
        let mut plan_args = vec![
            "plan".to_owned(),
            "-input=false".into(),
            "-no-color".into(),
            "-out=bootstrap.tfplan".into(),
        ];
        if let Some(f) = &b.var_file {
            plan_args.push(format!("-var-file={}", f.display()));
        }
        let plan = tf(&plan_args.iter().map(String::as_str).collect::<Vec<_>>())?;
        let apply = tf(&["apply", "-input=false", "-no-color", "bootstrap.tfplan"])?;
        let outputs = tf(&["output", "-json", "-no-color"])?;
        let outputs = without_sensitive(&outputs);
        Ok((
            (),
            json!({"module": b.module, "workdir": work, "plan": plan, "apply": apply, "outputs": outputs}),
        ))
    }
}

/// The license as the gateway holds it once installed, for the transcript: its id, the vendor
/// key it verifies with, its expiry, and the gateway's own word on its build.
fn installed_license(gw: &Gateway, file: &Path, how: &str) -> Result<Value> {
    let status = gw.send(
        gw.admin(reqwest::Method::GET, "/admin/license"),
        200,
        "reading the installed license",
    )?;
    let info = gw.send(
        gw.admin(reqwest::Method::GET, "/admin/info"),
        200,
        "reading the gateway's build",
    )?;
    Ok(json!({
        "file": file,
        "applied": how,
        "licenseId": status["licenseId"],
        "vendorKeyId": status["vendorKeyId"],
        "expires": status["expires"],
        "state": status["state"],
        "build": info["build"],
    }))
}

fn gateway_image(v: &Verified) -> Option<(&str, &str)> {
    image_of(v, "meshguard/gateway")
}

/// The reference and digest of the media's image of `repository`.
fn image_of<'a>(v: &'a Verified, repository: &str) -> Option<(&'a str, &'a str)> {
    v.images.iter().find_map(|i| {
        let (repo, _) = registry::split_ref(&i.reference);
        (repo == repository).then_some((i.reference.as_str(), i.digest.as_str()))
    })
}

/// `terraform output -json`, with the values of sensitive outputs (agent tokens, printed in the
/// clear) replaced: the transcript keeps their names only.
fn without_sensitive(outputs: &str) -> Value {
    let mut outputs: Value = serde_json::from_str(outputs).unwrap_or(Value::Null);
    if let Some(map) = outputs.as_object_mut() {
        for o in map.values_mut() {
            if o["sensitive"] == Value::Bool(true) {
                o["value"] = json!("(sensitive)");
            }
        }
    }
    outputs
}

fn has_egress(v: &Verified) -> bool {
    v.doc
        .items
        .iter()
        .any(|i| i.path == media::EGRESS_ALLOWLIST)
}

fn has_policy_bundle(v: &Verified) -> bool {
    v.doc.items.iter().any(|i| i.path == media::POLICY_BUNDLE)
}

/// Whether version `a` is older than `b` (dotted numbers; a pre-release suffix sorts first).
/// The database schema version a gateway reports (`/admin/info`); None when it does not say
/// (a build older than the field).
fn schema_version(gw: &Gateway) -> Option<u64> {
    gw.send(gw.admin(reqwest::Method::GET, "/admin/info"), 200, "info")
        .ok()?["schemaVersion"]
        .as_u64()
}

pub fn older(a: &str, b: &str) -> bool {
    fn key(v: &str) -> (Vec<u64>, bool) {
        let (core, pre) = match v.split_once('-') {
            Some((c, _)) => (c, true),
            None => (v, false),
        };
        (
            core.split('.').map(|p| p.parse().unwrap_or(0)).collect(),
            !pre,
        )
    }
    key(a) < key(b)
}

/// The PersistentVolumeClaim's name in a rendered manifest (podman names the volume after it).
fn claim_name(rendered: &str) -> Option<String> {
    // The claim the gateway's Deployment mounts (the chart renders others, e.g. the archive's).
    rendered
        .split("\n---")
        .find(|d| d.contains("\nkind: Deployment"))
        .and_then(|d| {
            let line = d
                .lines()
                .find(|l| l.trim_start().starts_with("claimName:"))?;
            Some(
                line.trim_start()["claimName:".len()..]
                    .trim()
                    .trim_matches('"')
                    .to_owned(),
            )
        })
}

/// The rendered manifest without its claim (playing a claim again fails: its volume exists, and
/// the data on it is the site's).
pub fn without_claim(rendered: &str) -> String {
    rendered
        .split("\n---")
        .filter(|doc| !doc.contains("\nkind: PersistentVolumeClaim"))
        .collect::<Vec<_>>()
        .join("\n---")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_numbers() {
        assert!(older("0.1.0", "0.1.1"));
        assert!(older("0.9.0", "0.10.0"));
        assert!(older("1.0.0-rc1", "1.0.0"));
        assert!(!older("0.1.1", "0.1.0"));
        assert!(!older("0.1.0", "0.1.0"));
    }

    #[test]
    fn the_claim_is_found_and_dropped() {
        // The archive's claim comes first in the render; the gateway's is the one it mounts.
        let r = "---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: mg-archive\n---\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  template:\n    spec:\n      volumes:\n        - name: data\n          persistentVolumeClaim:\n            claimName: mg-data\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: mg-data\n  labels: {}\n";
        assert_eq!(claim_name(r).as_deref(), Some("mg-data"));
        assert!(!without_claim(r).contains("PersistentVolumeClaim"));
        assert!(without_claim(r).contains("kind: Deployment"));
    }
}

#[cfg(test)]
mod transcript_tests {
    use super::*;

    fn transcript(checks: Value) -> Transcript {
        Transcript {
            format: "test",
            tool: "meshguard-bundle".into(),
            site: "s".into(),
            profile: "air-gapped".into(),
            media: "m".into(),
            version: Some("0.1.0".into()),
            previous_version: None,
            started_at: "t0".into(),
            finished_at: "t1".into(),
            seconds: 1.0,
            ok: true,
            steps: vec![StepRecord {
                step: 6,
                name: "smoke tests".into(),
                status: "passed".into(),
                seconds: 1.0,
                detail: json!({ "checks": checks }),
            }],
            error: None,
        }
    }

    #[test]
    fn the_result_line_names_the_smoke_tests_the_operator_skipped() {
        let all = transcript(json!([{"name": "policy allow", "result": "passed", "detail": ""}]));
        assert!(
            all.text().contains("result:   INSTALLED\n"),
            "{}",
            all.text()
        );
        let skipped = transcript(json!([
            {"name": "policy allow", "result": "passed", "detail": ""},
            {"name": "egress denial", "result": smoke::SKIPPED, "detail": ""},
        ]));
        assert!(
            skipped.text().contains(
                "result:   INSTALLED, with 1 smoke test(s) skipped by the operator: egress denial"
            ),
            "{}",
            skipped.text()
        );
    }
}
