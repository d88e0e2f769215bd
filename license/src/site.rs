//! The site side: one installation's license directory.
//!
//! ```text
//! DIR/installation-id   made once (create-new), never changed
//! DIR/request.json      the pending activation request, if any
//! DIR/installed.json    license + activation envelopes, replaced whole on install
//! DIR/clock.json        the latest time seen (the clock's high-water mark)
//! DIR/site.agekey       optional age identity for files sent to this site (mode 0600)
//! ```
//!
//! Every file is written atomically; every read of `installed.json` verifies both signatures
//! again, so a file changed on disk is caught, not trusted.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::document::{
    ActivationRequest, DeploymentMode, REQUEST_SCHEMA, SignedActivation, SignedLicense, timestamp,
};
use crate::dsse::Envelope;
use crate::fsutil::write_atomic;
use crate::status::{ClockRollback, State, Status};
use crate::{LicenseError, VendorPublicKey};

/// A clock this far behind its high-water mark is reported as set back.
pub const ROLLBACK_TOLERANCE_SECS: i64 = 300;

/// What this installation is: checked against the license.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    pub mode: Option<DeploymentMode>,
    pub region: Option<String>,
}

/// A verified, installed license with its activation.
#[derive(Debug, Clone)]
pub struct Installed {
    pub license: SignedLicense,
    pub activation: SignedActivation,
    pub installed_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstalledFile {
    license: Envelope,
    activation: Envelope,
    #[serde(with = "timestamp")]
    installed_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClockFile {
    #[serde(with = "timestamp")]
    last_seen: DateTime<Utc>,
}

/// Outcome of an install, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallKind {
    /// A license activated for this installation.
    Activated,
    /// A renewal of the installed license (same id, higher sequence).
    Renewed { from_sequence: u64 },
    /// The same license was installed already; nothing changed.
    Unchanged,
}

/// Where an installation's records live: the files of a license directory ([`DirRecords`]),
/// or a database several gateways share (the gateway's PostgreSQL control plane). Records are
/// named after the files: `installation-id`, `request.json`, `installed.json`, `clock.json`.
pub trait Records: Send + Sync + std::fmt::Debug {
    /// The record's bytes; `None` when there is none.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, LicenseError>;
    /// Replaces the record whole: a reader sees the old bytes or the new, never a mix.
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), LicenseError>;
    /// Stores `bytes` unless the record exists (one writer wins a race); returns what the
    /// record holds afterwards.
    fn create(&self, name: &str, bytes: &[u8]) -> Result<Vec<u8>, LicenseError>;
    fn remove(&self, name: &str) -> Result<(), LicenseError>;
    /// Where the record lives, for messages.
    fn locate(&self, name: &str) -> String;
}

/// Records as files in a directory, each written atomically.
#[derive(Debug, Clone)]
pub struct DirRecords {
    dir: PathBuf,
}

impl DirRecords {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Records for DirRecords {
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, LicenseError> {
        let path = self.file(name);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LicenseError::io("read", &path, e)),
        }
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), LicenseError> {
        write_atomic(&self.file(name), bytes, false)
    }

    fn create(&self, name: &str, bytes: &[u8]) -> Result<Vec<u8>, LicenseError> {
        if let Some(held) = self.get(name)? {
            return Ok(held);
        }
        fs::create_dir_all(&self.dir).map_err(|e| LicenseError::io("create", &self.dir, e))?;
        let path = self.file(name);
        let tmp = self.file(&format!(
            "{name}.partial-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 6]>())
        ));
        write_atomic(&tmp, bytes, false)?;
        // hard_link fails if another process made the record first: then theirs stands.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                fs::File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| LicenseError::io("sync", &self.dir, e))?;
                Ok(bytes.to_vec())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(self.get(name)?.unwrap_or_default())
            }
            Err(e) => Err(LicenseError::io("create", &path, e)),
        }
    }

    fn remove(&self, name: &str) -> Result<(), LicenseError> {
        match fs::remove_file(self.file(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(LicenseError::io("remove", &self.file(name), e))
            }
            _ => Ok(()),
        }
    }

    fn locate(&self, name: &str) -> String {
        self.file(name).display().to_string()
    }
}

/// One installation: its records, and the directory holding its age identity (which stays with
/// each gateway, never in a shared database).
#[derive(Debug, Clone)]
pub struct SiteDir {
    dir: PathBuf,
    records: std::sync::Arc<dyn Records>,
}

impl SiteDir {
    /// An installation kept in the files of `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            records: std::sync::Arc::new(DirRecords::new(dir.clone())),
            dir,
        }
    }

    /// An installation kept in `records`, with its age identity in `dir`.
    pub fn with_records(dir: impl Into<PathBuf>, records: std::sync::Arc<dyn Records>) -> Self {
        Self {
            dir: dir.into(),
            records,
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn records(&self) -> &dyn Records {
        self.records.as_ref()
    }

    pub fn identity_path(&self) -> PathBuf {
        self.dir.join("site.agekey")
    }

    /// This installation's id, made on first use and never changed.
    pub fn installation_id(&self) -> Result<String, LicenseError> {
        let name = "installation-id";
        let fresh = format!("inst_{}\n", hex::encode(rand::random::<[u8; 16]>()));
        let held = match self.records.get(name)? {
            Some(b) => b,
            None => self.records.create(name, fresh.as_bytes())?,
        };
        let id = String::from_utf8_lossy(&held).trim().to_owned();
        if id.is_empty() {
            return Err(LicenseError::Invalid(format!(
                "{} is empty; restore it from backup (a new id needs a new activation)",
                self.records.locate(name)
            )));
        }
        Ok(id)
    }

    /// The site's age identity (made on first use): returns its `age1…` recipient.
    pub fn ensure_identity(&self) -> Result<String, LicenseError> {
        let path = self.identity_path();
        if path.exists() {
            let mut ids = crate::seal::Identities::default();
            ids.add_file(&path)?;
            let text = fs::read_to_string(&path).map_err(|e| LicenseError::io("read", &path, e))?;
            let recipient = text
                .lines()
                .find_map(|l| l.strip_prefix("# public key: "))
                .ok_or_else(|| {
                    LicenseError::Age(format!("{} has no '# public key:' line", path.display()))
                })?;
            return Ok(recipient.trim().to_owned());
        }
        let (text, recipient) = crate::seal::generate_identity();
        write_atomic(&path, text.as_bytes(), true)?;
        Ok(recipient)
    }

    /// Makes a new activation request for `license`, replacing any pending one.
    pub fn create_request(
        &self,
        license: &SignedLicense,
        expect: &Expect,
        software_version: &str,
        now: DateTime<Utc>,
    ) -> Result<ActivationRequest, LicenseError> {
        check_fit(&license.license, expect)?;
        let request = ActivationRequest {
            schema: REQUEST_SCHEMA.into(),
            license_id: license.license.id.clone(),
            installation_id: self.installation_id()?,
            nonce: hex::encode(rand::random::<[u8; 16]>()),
            created_at: now,
            deployment_mode: expect.mode,
            region: expect.region.clone(),
            software_version: software_version.to_owned(),
        };
        let mut bytes = serde_json::to_vec_pretty(&request).expect("a request serializes");
        bytes.push(b'\n');
        self.records.put("request.json", &bytes)?;
        Ok(request)
    }

    pub fn pending_request(&self) -> Result<Option<ActivationRequest>, LicenseError> {
        let Some(bytes) = self.records.get("request.json")? else {
            return Ok(None);
        };
        ActivationRequest::parse(&bytes, &self.records.locate("request.json")).map(Some)
    }

    /// The installed license, verified again; `None` when nothing is installed.
    pub fn installed(&self, key: &VendorPublicKey) -> Result<Option<Installed>, LicenseError> {
        let Some(bytes) = self.records.get("installed.json")? else {
            return Ok(None);
        };
        let what = self.records.locate("installed.json");
        let file: InstalledFile =
            serde_json::from_slice(&bytes).map_err(|e| LicenseError::Format {
                what: what.clone(),
                kind: "installed license",
                detail: e.to_string(),
            })?;
        let license =
            SignedLicense::verify_envelope(file.license, key, &format!("{what} (license)"))?;
        let activation = SignedActivation::verify_envelope(
            file.activation,
            key,
            &format!("{what} (activation)"),
        )?;
        let installation = self.installation_id()?;
        check_activation(&license, &activation, &installation)?;
        Ok(Some(Installed {
            license,
            activation,
            installed_at: file.installed_at,
        }))
    }

    /// The clock's high-water mark, if any time was recorded.
    pub fn last_seen(&self) -> Result<Option<DateTime<Utc>>, LicenseError> {
        let Some(bytes) = self.records.get("clock.json")? else {
            return Ok(None);
        };
        let file: ClockFile = serde_json::from_slice(&bytes).map_err(|e| LicenseError::Format {
            what: self.records.locate("clock.json"),
            kind: "clock record",
            detail: e.to_string(),
        })?;
        Ok(Some(file.last_seen))
    }

    /// Records `now` when it is later than the mark; returns the effective time (the later of
    /// the two) and the rollback, if the clock reads earlier than the mark allows.
    pub fn observe_clock(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(DateTime<Utc>, Option<ClockRollback>), LicenseError> {
        let last = self.last_seen()?;
        match last {
            Some(last) if now < last => {
                let rollback = (last - now > Duration::seconds(ROLLBACK_TOLERANCE_SECS)).then_some(
                    ClockRollback {
                        last_seen: last,
                        now,
                    },
                );
                Ok((last, rollback))
            }
            _ => {
                let bytes = serde_json::to_vec(&ClockFile { last_seen: now })
                    .expect("a clock record serializes");
                self.records.put("clock.json", &bytes)?;
                Ok((now, None))
            }
        }
    }

    /// Verifies and installs a license (with its activation, unless it renews the installed
    /// license). Refuses, changing nothing, on any failed check.
    pub fn install(
        &self,
        key: &VendorPublicKey,
        license_bytes: &[u8],
        activation_bytes: Option<&[u8]>,
        expect: &Expect,
        now: DateTime<Utc>,
    ) -> Result<(Installed, InstallKind), LicenseError> {
        let license = SignedLicense::verify(license_bytes, key, "the license")?;
        let (now, _) = self.observe_clock(now)?;
        let l = &license.license;
        check_fit(l, expect)?;
        check_in_force(l, now)?;
        let current = match self.installed(key) {
            Ok(c) => c,
            // A damaged install must not block installing a good license over it.
            Err(LicenseError::Io { cause: source, .. }) => {
                return Err(LicenseError::Invalid(format!(
                    "cannot read the installed license: {source}"
                )));
            }
            Err(_) => None,
        };
        let installation = self.installation_id()?;
        let (activation, kind) = match (&current, activation_bytes) {
            (Some(cur), None) if cur.license.license.id == l.id => {
                (cur.activation.clone(), renewal_kind(cur, &license)?)
            }
            (cur, Some(bytes)) => {
                let given = Given {
                    key,
                    license: &license,
                    installation: &installation,
                };
                self.activation_for(cur.as_ref(), given, bytes)?
            }
            (_, None) => {
                return Err(LicenseError::Activation(format!(
                    "license {} is not activated on this installation ({installation}); make a \
                     request with `meshguard-license request`, have the vendor activate it, and \
                     install the license with the activation",
                    l.id
                )));
            }
        };
        let installed = Installed {
            license,
            activation,
            installed_at: now,
        };
        if kind != InstallKind::Unchanged {
            self.save(&installed, &kind)?;
        }
        Ok((installed, kind))
    }

    /// The activation given with a license: signed by the vendor, for this license and this
    /// installation, and the answer to this installation's pending request (or the one already
    /// installed). Returns it with what installing it does.
    fn activation_for(
        &self,
        current: Option<&Installed>,
        given: Given<'_>,
        bytes: &[u8],
    ) -> Result<(SignedActivation, InstallKind), LicenseError> {
        let Given {
            key,
            license,
            installation,
        } = given;
        let same_license = current.filter(|c| c.license.license.id == license.license.id);
        if let Some(cur) = same_license {
            renewal_kind(cur, license)?;
        }
        let activation = SignedActivation::verify(bytes, key, "the activation")?;
        check_activation(license, &activation, installation)?;
        let pending = self.pending_request()?;
        let answered = pending.as_ref().is_some_and(|p| {
            p.nonce == activation.activation.nonce
                && p.digest().ok().as_deref() == Some(activation.activation.request_sha256.as_str())
        });
        let reinstall = current.is_some_and(|c| c.activation == activation);
        if !answered && !reinstall {
            return Err(LicenseError::Activation(format!(
                "the activation answers request nonce {}, which is not this \
                 installation's pending request ({}); it is an old or copied \
                 activation: make a new request with `meshguard-license request` and \
                 send that to the vendor",
                activation.activation.nonce,
                pending.map_or_else(|| "none".to_owned(), |p| p.nonce)
            )));
        }
        let kind = match same_license {
            Some(c) => renewal_kind(c, license)?,
            None => InstallKind::Activated,
        };
        Ok((activation, kind))
    }

    /// Writes the install atomically; a first activation retires the pending request.
    fn save(&self, installed: &Installed, kind: &InstallKind) -> Result<(), LicenseError> {
        let file = InstalledFile {
            license: installed.license.envelope.clone(),
            activation: installed.activation.envelope.clone(),
            installed_at: installed.installed_at,
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("an install serializes");
        bytes.push(b'\n');
        self.records.put("installed.json", &bytes)?;
        if *kind == InstallKind::Activated {
            let _ = self.records.remove("request.json");
        }
        Ok(())
    }

    /// The license status now: verifies what is installed, moves the clock mark, evaluates.
    pub fn check(&self, key: &VendorPublicKey, expect: &Expect, now: DateTime<Utc>) -> Status {
        let installation = self.installation_id().ok();
        let (effective, rollback) = match self.observe_clock(now) {
            Ok(v) => v,
            Err(e) => {
                let mut s = Status::bare(State::Invalid, e.to_string(), now);
                s.installation_id = installation;
                return s;
            }
        };
        let mut status = match self.installed(key) {
            Ok(None) => Status::bare(
                State::Missing,
                "no license is installed: admin writes are frozen until one is (enforcement \
                 and audit continue); see `meshguard-license request`",
                effective,
            ),
            Err(e) => Status::bare(
                State::Invalid,
                format!(
                    "the installed license is not usable: {e}; admin writes are frozen \
                     (enforcement and audit continue)"
                ),
                effective,
            ),
            Ok(Some(installed)) => match check_fit(&installed.license.license, expect) {
                Ok(()) => Status::of(&installed.license, effective),
                Err(e) => Status::bare(State::Invalid, e.to_string(), effective),
            },
        };
        status.installation_id = installation;
        if let Some(r) = &rollback {
            status.warnings.push(format!(
                "the system clock reads {} but {} was already seen: the clock was set back; \
                 license times are judged at the later time",
                timestamp::format(&r.now),
                timestamp::format(&r.last_seen)
            ));
        }
        status.clock_rollback = rollback;
        status
    }
}

fn renewal_kind(current: &Installed, offered: &SignedLicense) -> Result<InstallKind, LicenseError> {
    let (cur, new) = (&current.license.license, &offered.license);
    if new.sequence < cur.sequence {
        return Err(LicenseError::Replayed {
            id: new.id.clone(),
            offered: new.sequence,
            installed: cur.sequence,
        });
    }
    if new.sequence == cur.sequence {
        return if current.license.payload == offered.payload {
            Ok(InstallKind::Unchanged)
        } else {
            Err(LicenseError::SequenceReused {
                id: new.id.clone(),
                sequence: new.sequence,
            })
        };
    }
    Ok(InstallKind::Renewed {
        from_sequence: cur.sequence,
    })
}

fn check_activation(
    license: &SignedLicense,
    activation: &SignedActivation,
    installation: &str,
) -> Result<(), LicenseError> {
    let a = &activation.activation;
    if a.license_id != license.license.id {
        return Err(LicenseError::Activation(format!(
            "the activation is for license {}, not {}; install the activation made for this \
             license",
            a.license_id, license.license.id
        )));
    }
    if a.installation_id != installation {
        return Err(LicenseError::Activation(format!(
            "the activation was made for installation {}, and this is {installation}; an \
             activation works only where its request was made",
            a.installation_id
        )));
    }
    Ok(())
}

fn check_fit(license: &crate::License, expect: &Expect) -> Result<(), LicenseError> {
    if let Some(mode) = expect.mode
        && mode != license.deployment_mode
    {
        return Err(LicenseError::WrongMode {
            id: license.id.clone(),
            licensed: license.deployment_mode.as_str().into(),
            configured: mode.as_str().into(),
        });
    }
    if let Some(region) = &expect.region
        && !license.allows_region(region)
    {
        return Err(LicenseError::WrongRegion {
            id: license.id.clone(),
            allowed: license.regions.join(", "),
            configured: region.clone(),
        });
    }
    Ok(())
}

/// Writes bytes to stdout or a file (atomically), for the command-line tool.
pub fn write_output(path: Option<&Path>, bytes: &[u8], private: bool) -> Result<(), LicenseError> {
    match path {
        Some(p) if p != Path::new("-") => write_atomic(p, bytes, private),
        _ => std::io::stdout()
            .write_all(bytes)
            .map_err(|e| LicenseError::io("write", Path::new("<stdout>"), e)),
    }
}

/// What an activation is checked against: the vendor's key, the license it activates and
/// this installation.
struct Given<'a> {
    key: &'a VendorPublicKey,
    license: &'a SignedLicense,
    installation: &'a str,
}

/// A license is in force from its start until the end of its grace period.
fn check_in_force(l: &crate::License, now: DateTime<Utc>) -> Result<(), LicenseError> {
    if now < l.not_before {
        return Err(LicenseError::NotYetValid {
            id: l.id.clone(),
            not_before: timestamp::format(&l.not_before),
        });
    }
    if now > l.grace_end() {
        return Err(LicenseError::Expired {
            id: l.id.clone(),
            expires: timestamp::format(&l.expires),
            grace_end: timestamp::format(&l.grace_end()),
        });
    }
    Ok(())
}
