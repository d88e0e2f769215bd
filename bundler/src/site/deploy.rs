//! The install's deploy step: renders the chart for the verified media, and puts the version in
//! place: a first start, a restart of a site whose gateway is down, or a staged switch (the new
//! version passes the smoke tests beside the running one before that one stops, with the
//! database snapshotted for a rollback, or restored from such a snapshot when rolling back).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::smoke::{self, Gateway};
use super::tools::Podman;
use super::{
    Deployed, INSTALLED, Installed, PREVIOUS, Run, claim_name, gateway_image, has_egress, now,
    older, schema_version, snapshot, without_claim, write_json,
};
use crate::fsx;
use crate::verify::Verified;

/// The version being put in place, as the deploy's steps need it.
struct Target {
    podman: Podman,
    /// Verify the site registry's TLS when pulling.
    tls: bool,
    version: String,
    /// The rendered chart and where it is written.
    rendered: String,
    manifest: PathBuf,
    /// The gateway's PersistentVolumeClaim in it.
    claim: Option<String>,
    secret: Secret,
}

/// The gateway's secrets, in a file podman reads: private, and removed when dropped.
struct Secret {
    name: String,
    file: tempfile::NamedTempFile,
    /// Not what the running version reads: it is replaced when put.
    changed: bool,
}

impl Secret {
    fn write(state_dir: &Path, name: String, json: &str, changed: bool) -> Result<Self> {
        let file = tempfile::Builder::new()
            .prefix(".secret")
            .tempfile_in(state_dir)?;
        std::fs::write(file.path(), json)?;
        Ok(Secret {
            name,
            file,
            changed,
        })
    }

    /// Creates the podman secret, or replaces it if it changed.
    fn put(&self, podman: &Podman) -> Result<()> {
        if podman.secret_exists(&self.name) {
            if !self.changed {
                return Ok(());
            }
            podman.secret_rm(&self.name)?;
        }
        podman.secret_create(&self.name, self.file.path())
    }
}

/// The gateway's secrets as the podman secret holds them (base64 values).
fn secret_json(admin: &str, jwt: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({"ADMIN_TOKEN": b64(admin), "JWT_SECRET": b64(jwt)}).to_string()
}

impl Run<'_> {
    pub(super) fn deploy(
        &mut self,
        verified: &Verified,
        admin: &str,
        jwt: &str,
    ) -> Result<(Deployed, Value)> {
        let site = self.opts.site.clone();
        let version = verified.doc.version.clone();
        let podman =
            Podman::find()?.pulling_from(&self.opts.site.registry, &self.opts.site.state_dir)?;
        let tls = !site.registry.insecure;
        let (rendered, values) = self.render(verified, &site.release, site.port, false)?;
        let (manifest, manifest_sha256) = self.write_manifest(&version, &rendered)?;
        let secret_json = secret_json(admin, jwt);
        let secret_sha256 = fsx::sha256_hex(secret_json.as_bytes());
        let gateway = Gateway::new(format!("http://127.0.0.1:{}", site.port), admin.to_owned())?;
        let egress_port = has_egress(verified).then(|| site.egress_port());
        let claim = claim_name(&rendered);
        let volume = claim
            .clone()
            .context("the rendered chart has no PersistentVolumeClaim for the gateway's data")?;
        let record = self.installed(verified, &manifest, &manifest_sha256, &secret_sha256);
        let previous = self.previous.clone();
        let running = gateway.healthy();
        let mut detail = json!({
            "manifest": manifest, "manifestSha256": manifest_sha256, "image": record.image,
        });
        let deployed = Deployed {
            gateway,
            values,
            claim: volume,
            egress_port,
        };

        if let Some(prev) = &previous
            && running
            && prev.manifest_sha256 == manifest_sha256
            && prev.secret_sha256 == secret_sha256
        {
            detail["action"] = json!("unchanged: the same manifest already runs and answers");
            return Ok((deployed, detail));
        }
        let secret_changed = previous
            .as_ref()
            .is_none_or(|p| p.secret_sha256 != secret_sha256);
        let target = Target {
            podman,
            tls,
            version,
            rendered,
            manifest,
            claim,
            secret: Secret::write(
                &site.state_dir,
                format!("{}-secrets", site.release),
                &secret_json,
                secret_changed,
            )?,
        };
        match previous.as_ref().filter(|_| running) {
            None => self.start_fresh(&target, previous.as_ref(), &deployed.gateway, &mut detail)?,
            Some(prev) => {
                self.upgrade_staged(verified, admin, &target, prev, &deployed, &mut detail)?
            }
        }
        if let Some(prev) = &previous {
            write_json(&self.opts.site.state_dir.join(PREVIOUS), prev)?;
        }
        write_json(&self.opts.site.state_dir.join(INSTALLED), &record)?;
        self.previous = Some(record);
        Ok((deployed, detail))
    }

    /// Writes the rendered chart, named by content: the same version with other values is
    /// another manifest, and the one running stays on disk to be played back if the new one
    /// fails. Its path and SHA-256.
    fn write_manifest(&self, version: &str, rendered: &str) -> Result<(PathBuf, String)> {
        let site = &self.opts.site;
        let manifest_sha256 = fsx::sha256_hex(rendered.as_bytes());
        let manifest = site.state_dir.join("deploy").join(version).join(format!(
            "{}-{}.yaml",
            site.release,
            &manifest_sha256[..12]
        ));
        fsx::write_atomic(&manifest, rendered.as_bytes())?;
        Ok((manifest, manifest_sha256))
    }

    /// What the site records of the version once it runs.
    fn installed(
        &self,
        verified: &Verified,
        manifest: &Path,
        manifest_sha256: &str,
        secret_sha256: &str,
    ) -> Installed {
        let (_, digest) = gateway_image(verified).expect("checked in verify");
        Installed {
            version: verified.doc.version.clone(),
            media_sha256sums: self.media_sha256sums.clone(),
            image: format!(
                "{}/meshguard/gateway@{digest}",
                self.opts.site.registry.address
            ),
            manifest: manifest.to_owned(),
            manifest_sha256: manifest_sha256.to_owned(),
            secret_sha256: secret_sha256.to_owned(),
            installed_at: now(),
        }
    }

    /// Nothing answers: a first install, or a site whose gateway is down. Starts the version,
    /// and if it does not start, the previous one again.
    fn start_fresh(
        &self,
        t: &Target,
        previous: Option<&Installed>,
        gateway: &Gateway,
        detail: &mut Value,
    ) -> Result<()> {
        let version = &t.version;
        if let Some(prev) = previous {
            let _ = t.podman.down(&prev.manifest);
        }
        t.secret.put(&t.podman)?;
        let played =
            self.play_for_volume(&t.podman, &t.manifest, &t.rendered, t.claim.as_deref())?;
        if let Err(e) = self.start(&t.podman, &played, t.tls, gateway) {
            let restored = previous.map(|p| self.restore(&t.podman, p, t.tls));
            bail!(
                "{version} did not start: {e:#}{}; see `podman logs` of its pod, fix the values and run the install again",
                match restored {
                    Some(Ok(())) => format!(
                        "; the previous {} was started again",
                        previous.map_or("", |p| &p.version)
                    ),
                    Some(Err(r)) =>
                        format!("; starting the previous version again failed too: {r:#}"),
                    None => String::new(),
                }
            );
        }
        detail["action"] = json!(if previous.is_some() {
            "restarted"
        } else {
            "installed"
        });
        Ok(())
    }

    /// Staged: the new version starts beside the running `prev` on a scratch volume and passes
    /// the smoke tests before `prev` is stopped; then the database is snapshotted (upgrade) or
    /// restored (rollback to a lower schema), and the version starts on the site's volume.
    fn upgrade_staged(
        &self,
        verified: &Verified,
        admin: &str,
        t: &Target,
        prev: &Installed,
        deployed: &Deployed,
        detail: &mut Value,
    ) -> Result<()> {
        let version = &t.version;
        let gateway = &deployed.gateway;
        let cand_schema = self.try_candidate(verified, admin, t, prev, &deployed.claim, detail)?;
        let rolling_back = older(version, &prev.version);
        let running_schema = schema_version(gateway);
        // Back to a version with a lower (or unknown) schema: it needs the database as it was
        // before the upgrade; checked before anything stops.
        let restore_from = match (rolling_back, cand_schema, running_schema) {
            (false, _, _) => None,
            (true, Some(c), Some(r)) if c >= r => None,
            (true, _, _) => Some(self.snapshot_for_rollback(version, &prev.version, gateway)?),
        };
        t.podman.down(&prev.manifest)?;
        let on_volume = t.podman.volume_mountpoint(&deployed.claim)?;
        let mut set_aside = None;
        if let Some((snap, not_carried)) = &restore_from {
            set_aside =
                Some(self.restore_database(t, prev, &on_volume, snap, not_carried, detail)?);
        } else if !rolling_back {
            self.snapshot_database(t, prev, &on_volume, running_schema, detail)?;
        }
        self.switch_over(t, prev, &on_volume, set_aside.as_deref(), gateway)?;
        detail["action"] = json!(if older(version, &prev.version) {
            "rolled back"
        } else {
            "upgraded"
        });
        Ok(())
    }

    /// Starts the version as a candidate beside the running `prev`, on a scratch volume and
    /// the candidate port, runs the smoke tests on it and takes it down again. Its schema
    /// version; an error (the running version untouched) when it fails to start or a test.
    fn try_candidate(
        &self,
        verified: &Verified,
        admin: &str,
        t: &Target,
        prev: &Installed,
        running_claim: &str,
        detail: &mut Value,
    ) -> Result<Option<u64>> {
        let (version, podman, tls) = (&t.version, &t.podman, t.tls);
        let site = &self.opts.site;
        let cand_release = format!("{}-next", site.release);
        let cand_port = site.candidate_port();
        let (cand, _) = self.render(verified, &cand_release, cand_port, true)?;
        let cand_path = t.manifest.with_file_name(format!("{cand_release}.yaml"));
        fsx::write_atomic(&cand_path, cand.as_bytes())?;
        let cand_gw = Gateway::new(format!("http://127.0.0.1:{cand_port}"), admin.to_owned())?;
        // What an interrupted earlier run may have left of a candidate.
        let _ = podman.down(&cand_path);
        if let Some(c) = claim_name(&cand) {
            let _ = podman.volume_rm(&c);
        }
        let licensed = self.candidate_license(verified, podman, running_claim, &cand)?;
        let played =
            self.play_for_volume(podman, &cand_path, &cand, claim_name(&cand).as_deref())?;
        // The candidate reads the secret the running version has: a changed secret is put in
        // place only when the running version stops.
        let staged = podman
            .play(&played, tls)
            .and_then(|ids| self.started(podman, &ids, &cand_gw))
            .map(|_| {
                let checks = smoke::run(
                    &cand_gw,
                    "candidate",
                    &smoke::Plan {
                        egress: None,
                        sidecar: None,
                        evidence: None,
                        skip: &[],
                        candidate: true,
                    },
                );
                (checks, schema_version(&cand_gw))
            });
        let _ = podman.down(&cand_path);
        if let Some(c) = claim_name(&cand) {
            let _ = podman.volume_rm(&c);
        }
        let (checks, cand_schema) = staged.map_err(|e| {
            anyhow::anyhow!(
                "{version} did not start beside the running {}: {e:#}; the running version was not touched",
                prev.version
            )
        })?;
        if let Some(bad) = checks.iter().find(|c| !c.passed()) {
            bail!(
                "{version} failed the smoke test '{}' beside the running {} ({}); the running version was not touched",
                bad.name,
                prev.version,
                bad.detail
            );
        }
        detail["candidate"] = json!({
            "release": cand_release, "port": cand_port, "checks": checks, "license": licensed,
        });
        Ok(cand_schema)
    }

    /// A release build licenses whatever its environment says, so a candidate of one on an
    /// empty volume would have its admin writes frozen and fail the smoke tests: its scratch
    /// volume gets a copy of the running installation's license directory (installation id,
    /// license, activation), and it runs licensed as the installation it is to replace. A
    /// development build's candidate runs with licensing off, as before. What was done.
    fn candidate_license(
        &self,
        verified: &Verified,
        podman: &Podman,
        running_claim: &str,
        rendered: &str,
    ) -> Result<String> {
        let release = verified
            .doc
            .build
            .as_ref()
            .is_some_and(|b| b.kind == "release");
        let Some(cand_claim) = claim_name(rendered).filter(|_| release) else {
            return Ok("none: a development build runs its candidate with licensing off".into());
        };
        let from = podman.volume_mountpoint(running_claim)?.join("license");
        if !from.is_dir() {
            return Ok("none: the running installation has no license directory".into());
        }
        podman.volume_create(&cand_claim)?;
        let to = podman.volume_mountpoint(&cand_claim)?.join("license");
        // -a: the files keep the gateway user's ownership and modes.
        let mut cp = std::process::Command::new("cp");
        cp.arg("-a").arg(&from).arg(&to);
        super::tools::run(
            &mut cp,
            "copying the installation's license to the candidate",
        )?;
        Ok(format!(
            "the running installation's license directory copied to the candidate's volume {cand_claim}"
        ))
    }

    /// Rolling back: puts the snapshot of the version's database in place on the stopped
    /// volume, setting the running one's aside (started again if that fails). Where it is set
    /// aside.
    fn restore_database(
        &self,
        t: &Target,
        prev: &Installed,
        on_volume: &Path,
        snap: &snapshot::Snapshot,
        not_carried: &[Value],
        detail: &mut Value,
    ) -> Result<PathBuf> {
        let version = &t.version;
        let label = format!("{}-{}", prev.version, now().replace(':', ""));
        let aside = snapshot::restore(on_volume, &self.opts.site.state_dir, snap, &label)
            .inspect_err(|_| {
                let _ = self.restore(&t.podman, prev, t.tls);
            })?;
        detail["database"] = json!({
            "restored": format!("the snapshot of {version}'s database taken {} before the upgrade to {}", snap.taken_at, prev.version),
            "schemaVersion": snap.schema_version,
            "setAside": aside,
            "controlPlaneChangesNotCarried": not_carried,
            "auditLog": "kept whole: the entries made after the snapshot stay, and the gateway indexes them at start",
        });
        Ok(aside)
    }

    /// Upgrading: a snapshot of the running version's database on the stopped volume, kept to
    /// roll back to (the running version is started again if it cannot be taken).
    fn snapshot_database(
        &self,
        t: &Target,
        prev: &Installed,
        on_volume: &Path,
        running_schema: Option<u64>,
        detail: &mut Value,
    ) -> Result<()> {
        let snap = snapshot::take(
            on_volume,
            &self.opts.site.state_dir,
            &prev.version,
            running_schema,
        )
        .inspect_err(|_| {
            let _ = self.restore(&t.podman, prev, t.tls);
        })?;
        detail["database"] = json!({
            "snapshot": format!("{}'s database, kept to roll back to", prev.version),
            "schemaVersion": snap.schema_version,
            "files": snap.files,
        });
        Ok(())
    }

    /// Starts the version on the site's volume; if it does not start, puts a database set
    /// aside back and starts `prev` again.
    fn switch_over(
        &self,
        t: &Target,
        prev: &Installed,
        on_volume: &Path,
        set_aside: Option<&Path>,
        gateway: &Gateway,
    ) -> Result<()> {
        let version = &t.version;
        t.secret.put(&t.podman)?;
        let played =
            self.play_for_volume(&t.podman, &t.manifest, &t.rendered, t.claim.as_deref())?;
        let Err(e) = self.start(&t.podman, &played, t.tls, gateway) else {
            return Ok(());
        };
        if let Some(aside) = set_aside {
            let _ = t.podman.down(&played);
            if let Err(b) = snapshot::put_back(on_volume, aside) {
                bail!(
                    "{version} did not start on the restored database: {e:#}; putting {}'s database back failed too: {b:#} (its files are in {})",
                    prev.version,
                    aside.display()
                );
            }
        }
        let restored = self.restore(&t.podman, prev, t.tls);
        bail!(
            "{version} passed beside {} but did not start on the site's volume: {e:#}; {}",
            prev.version,
            match restored {
                Ok(()) => format!("{} was started again with its audit log", prev.version),
                Err(r) => format!("starting {} again failed too: {r:#}", prev.version),
            }
        );
    }

    /// The snapshot a rollback to `version` restores, and the control-plane changes made on the
    /// running `from` since it was taken (they are not carried back: the transcript names
    /// them). No snapshot: an error saying why, before anything stops.
    fn snapshot_for_rollback(
        &self,
        version: &str,
        from: &str,
        running: &Gateway,
    ) -> Result<(snapshot::Snapshot, Vec<Value>)> {
        let Some(snap) = snapshot::find(&self.opts.site.state_dir, version)? else {
            bail!(
                "{version} has an older database schema than the running {from}, and this site holds no snapshot of {version}'s database from before an upgrade (it was not upgraded from {version} here); nothing was changed. Roll forward, or restore the state directory and volume from a backup taken under {version}"
            );
        };
        let changes = running.send(
            running.admin(reqwest::Method::GET, "/admin/changes?limit=10000"),
            200,
            "the changes made since the snapshot",
        )?;
        let not_carried: Vec<Value> = changes["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["timestamp"].as_str().is_some_and(|t| t > snap.taken_at.as_str()))
            .map(|c| json!({"id": c["id"], "kind": c["kind"], "objectId": c["objectId"], "operation": c["operation"], "timestamp": c["timestamp"]}))
            .collect();
        Ok((snap, not_carried))
    }

    /// The manifest to play: without its claim when the volume exists already (podman refuses
    /// to create it twice, and the data on it is the site's).
    fn play_for_volume(
        &self,
        podman: &Podman,
        manifest: &Path,
        rendered: &str,
        claim: Option<&str>,
    ) -> Result<PathBuf> {
        match claim {
            Some(c) if podman.exists("volume", c) => {
                let p = manifest.with_extension("noclaim.yaml");
                fsx::write_atomic(&p, without_claim(rendered).as_bytes())?;
                Ok(p)
            }
            _ => Ok(manifest.to_owned()),
        }
    }

    /// Starts the previously installed manifest again, on its volume.
    fn restore(&self, podman: &Podman, prev: &Installed, tls: bool) -> Result<()> {
        let text = std::fs::read_to_string(&prev.manifest)
            .with_context(|| format!("cannot read {}", prev.manifest.display()))?;
        let p =
            self.play_for_volume(podman, &prev.manifest, &text, claim_name(&text).as_deref())?;
        let ids = podman.play(&p, tls)?;
        let gw = Gateway::new(
            format!("http://127.0.0.1:{}", self.opts.site.port),
            String::new(),
        )?;
        self.started(podman, &ids, &gw)
    }

    /// Plays `manifest` and waits for its gateway; a start that fails is taken down again.
    fn start(&self, podman: &Podman, manifest: &Path, tls: bool, gw: &Gateway) -> Result<()> {
        let r = podman
            .play(manifest, tls)
            .and_then(|ids| self.started(podman, &ids, gw));
        if r.is_err() {
            let _ = podman.down(manifest);
        }
        r
    }
}
