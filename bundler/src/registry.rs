//! Registries: pulling images into the media (through `oci-client`), and pushing the media's
//! images into a site registry.
//!
//! The push is written here on `reqwest` (about 150 lines of the distribution spec) because
//! `oci-client` 0.15 pushes a blob from one in-memory buffer, has no existence check before
//! upload, and cannot resume an upload: import must skip blobs the registry has, keep memory
//! flat on multi-GiB layers, and continue an interrupted upload where the registry says it
//! stopped. Upload sessions are recorded in a state file, so resuming works across runs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use reqwest::StatusCode;
use reqwest::blocking::Client as Http;
use serde::{Deserialize, Serialize};

use crate::access::{Access, Credentials};
use crate::oci::{self, Descriptor, Layout};
use crate::{BundleError, fsx};

const ACCEPT: &[&str] = &[
    oci::MANIFEST_MEDIA_TYPE,
    oci::INDEX_MEDIA_TYPE,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

fn reg_err(what: &str, e: impl std::fmt::Display) -> BundleError {
    BundleError::Registry(format!("{what}: {e}"))
}

/// Pulls `reference` (`HOST[:PORT]/REPO:TAG` or `@sha256:…`) into `layout`; returns the top
/// descriptor. Every blob is checked against its digest. `insecure` registries are reached over
/// plain HTTP; `access` gives the site CAs and where credentials are.
pub fn pull(
    reference: &str,
    layout: &Layout,
    insecure: &[String],
    access: &Access,
) -> Result<Descriptor, BundleError> {
    let r: Reference = reference
        .parse()
        .map_err(|e| BundleError::Input(format!("{reference:?} is not an image reference: {e}")))?;
    let (client, auth, creds) = oci_session(
        access,
        ClientProtocol::HttpsExcept(insecure.to_vec()),
        r.resolve_registry(),
        r.repository(),
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| reg_err("cannot start the I/O runtime", e))?;
    rt.block_on(async {
        let (bytes, digest) = client
            .pull_manifest_raw(&r, &auth, ACCEPT)
            .await
            .map_err(|e| pull_err(reference, creds.as_ref(), e))?;
        let top = descriptor_of(&bytes, &digest, reference)?;
        pull_tree(&client, &r, &auth, layout, &top, &bytes, reference).await?;
        Ok(top)
    })
}

fn descriptor_of(bytes: &[u8], digest: &str, what: &str) -> Result<Descriptor, BundleError> {
    let got = format!("sha256:{}", fsx::sha256_hex(bytes));
    if !digest.is_empty() && digest != got {
        return Err(BundleError::Integrity(format!(
            "the registry served a manifest for {what} with digest {got}, not {digest}; the \
             registry or the path to it is corrupt"
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| BundleError::Layout(format!("{what}: manifest does not parse: {e}")))?;
    let media_type = v["mediaType"]
        .as_str()
        .unwrap_or(oci::MANIFEST_MEDIA_TYPE)
        .to_owned();
    Ok(Descriptor {
        media_type,
        digest: got,
        size: bytes.len() as u64,
        annotations: BTreeMap::new(),
        platform: None,
    })
}

/// An `oci-client` speaking `protocol` and trusting the site CAs, with the auth for `repo` on
/// `registry` from the auth files (and the credentials it came from, for messages).
fn oci_session(
    access: &Access,
    protocol: ClientProtocol,
    registry: &str,
    repo: &str,
) -> Result<(Client, RegistryAuth, Option<Credentials>), BundleError> {
    let client = Client::new(ClientConfig {
        protocol,
        extra_root_certificates: access
            .ca_certs()?
            .into_iter()
            .map(|data| Certificate {
                encoding: CertificateEncoding::Der,
                data,
            })
            .collect(),
        ..Default::default()
    });
    let creds = access.credentials(registry, repo)?;
    let auth = match &creds {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    };
    Ok((client, auth, creds))
}

/// Whether an error's lower-cased text says the registry's certificate is not trusted (rustls
/// reports it only as text through reqwest).
fn untrusted_certificate(lower: &str) -> bool {
    lower.contains("certificate") || lower.contains("unknownissuer")
}

/// Why a manifest could not be pulled, with what to do about a refusal or an unknown CA.
fn pull_err(
    reference: &str,
    creds: Option<&Credentials>,
    e: oci_client::errors::OciDistributionError,
) -> BundleError {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode};
    let text = chain(&e);
    let lower = text.to_ascii_lowercase();
    // By the error's kind, not its text: a port such as 44015 holds "401", and a TLS failure
    // must not read as a refusal.
    let untrusted = untrusted_certificate(&lower);
    let refused = match &e {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => true,
        E::ServerError { code, .. } => *code == 401 || *code == 403,
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|x| matches!(x.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
        _ => false,
    };
    let hint = if untrusted {
        "; the registry's certificate is not trusted: pass the site CA with --ca-bundle".to_owned()
    } else if refused {
        match creds {
            Some(c) => format!(
                "; the registry refused the credentials of {} from {}",
                c.username,
                c.from.display()
            ),
            None => "; the registry wants credentials: log in (podman login HOST) or pass \
                     --authfile / set REGISTRY_AUTH_FILE"
                .to_owned(),
        }
    } else {
        String::new()
    };
    reg_err(
        &format!("cannot pull the manifest of {reference}"),
        format!("{text}{hint}"),
    )
}

/// An error with its causes (`reqwest` says "error sending request" and keeps the why, an
/// unknown certificate issuer for one, in its sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text = format!("{text}: {s}");
        }
        cause = c.source();
    }
    text
}

async fn pull_tree(
    client: &Client,
    r: &Reference,
    auth: &RegistryAuth,
    layout: &Layout,
    d: &Descriptor,
    bytes: &[u8],
    what: &str,
) -> Result<(), BundleError> {
    if d.is_index() {
        let idx: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| BundleError::Layout(format!("{what}: {e}")))?;
        for child in idx["manifests"].as_array().into_iter().flatten() {
            let child: Descriptor = serde_json::from_value(child.clone())
                .map_err(|e| BundleError::Layout(format!("{what}: {e}")))?;
            let cr = Reference::with_digest(
                r.registry().to_owned(),
                r.repository().to_owned(),
                child.digest.clone(),
            );
            let (cb, _) = client
                .pull_manifest_raw(&cr, auth, ACCEPT)
                .await
                .map_err(|e| reg_err(&format!("cannot pull {what}@{}", child.digest), e))?;
            let got = descriptor_of(&cb, &child.digest, what)?;
            Box::pin(pull_tree(client, r, auth, layout, &got, &cb, what)).await?;
        }
    } else {
        let m: oci::ManifestDoc = serde_json::from_slice(bytes)
            .map_err(|e| BundleError::Layout(format!("{what}: manifest does not parse: {e}")))?;
        for blob in std::iter::once(&m.config).chain(m.layers.iter()) {
            let dst = layout.blob_path(blob.hex()?);
            if dst.exists() {
                continue;
            }
            let tmp = dst.with_extension("download");
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| BundleError::io("write", &tmp, e))?;
            let mut pulled = client.pull_blob(r, blob.digest.as_str(), &mut file).await;
            if pulled.is_ok() {
                use tokio::io::AsyncWriteExt as _;
                // tokio writes in the background: the bytes are only on disk after a flush.
                if let Err(e) = file.flush().await.and(file.sync_all().await) {
                    pulled = Err(oci_client::errors::OciDistributionError::IoError(e));
                }
            }
            drop(file);
            if let Err(e) = pulled {
                let _ = std::fs::remove_file(&tmp);
                return Err(BundleError::Integrity(format!(
                    "blob {} of {what} could not be pulled intact: {e}; the registry served \
                     content that does not match its digest, or the connection failed",
                    blob.digest
                )));
            }
            let adopted = layout.add_blob_file(&tmp, blob, &format!("the registry ({what})"));
            let _ = std::fs::remove_file(&tmp);
            adopted?;
        }
    }
    layout.add_blob_bytes(bytes)?;
    Ok(())
}

/// Where a push goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`
    pub registry: String,
    /// Plain HTTP or TLS with the site CAs, and where the credentials are.
    pub access: Access,
    /// Resumable upload sessions, kept across runs.
    pub state_file: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct UploadState {
    /// digest → upload URL
    uploads: BTreeMap<String, String>,
}

/// What a push did.
#[derive(Debug, Default, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushStats {
    pub blobs_pushed: usize,
    pub blobs_skipped: usize,
    pub blobs_resumed: usize,
    pub bytes_sent: u64,
    pub manifests: usize,
}

const CHUNK: u64 = 16 << 20;
const ATTEMPTS: u32 = 5;

pub struct Pusher {
    /// Advanced by every byte sent; hidden unless stderr is a terminal.
    pub progress: Option<indicatif::ProgressBar>,
    http: Http,
    base: String,
    target: Target,
    state: UploadState,
    pub stats: PushStats,
    /// The `Authorization` header for the repository last logged in to, and when.
    authorization: Option<(String, Option<String>, std::time::Instant)>,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Pusher {
    pub fn new(target: Target) -> Result<Self, BundleError> {
        let mut http = Http::builder()
            .timeout(Duration::from_secs(600))
            .connect_timeout(Duration::from_secs(10));
        for der in target.access.ca_certs()? {
            let cert = reqwest::Certificate::from_der(&der)
                .map_err(|e| reg_err("the CA bundle holds a certificate that does not load", e))?;
            http = http.add_root_certificate(cert);
        }
        let http = http
            .build()
            .map_err(|e| reg_err("cannot build the HTTP client", e))?;
        let scheme = if target.access.insecure {
            "http"
        } else {
            "https"
        };
        let state = std::fs::read(&target.state_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let base = format!("{scheme}://{}", target.registry);
        let p = Self {
            progress: None,
            http,
            base,
            target,
            state,
            stats: PushStats::default(),
            authorization: None,
        };
        p.retry("reach the registry", || {
            let r = p.http.get(format!("{}/v2/", p.base)).send()?;
            Ok(r.status())
        })
        .and_then(|s| {
            if s.is_success() || s == StatusCode::UNAUTHORIZED {
                Ok(())
            } else {
                Err(BundleError::Registry(format!(
                    "{} answered {s} at /v2/; is it an OCI registry?",
                    p.base
                )))
            }
        })?;
        Ok(p)
    }

    /// Gets the `Authorization` for pushing to `repo`: the registry's challenge is answered by
    /// `oci-client` (HTTP Basic, or the bearer-token flow with the credentials sent to the
    /// token realm), with the credentials of the auth files. Tokens are short-lived, so a
    /// login older than a minute is done again before each blob.
    fn login(&mut self, repo: &str) -> Result<(), BundleError> {
        if let Some((r, _, at)) = &self.authorization
            && r == repo
            && at.elapsed() < Duration::from_secs(60)
        {
            return Ok(());
        }
        let access = &self.target.access;
        let protocol = if access.insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let (client, auth, creds) = oci_session(access, protocol, &self.target.registry, repo)?;
        let reference = Reference::with_tag(
            self.target.registry.clone(),
            repo.to_owned(),
            "latest".to_owned(),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| reg_err("cannot start the I/O runtime", e))?;
        let token = rt
            .block_on(client.auth(&reference, &auth, oci_client::RegistryOperation::Push))
            .map_err(|e| self.refused(repo, creds.as_ref(), &e.to_string()))?;
        let header = match (token, creds) {
            (Some(t), _) => Some(format!("Bearer {t}")),
            (None, Some(c)) => {
                use base64::Engine as _;
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{}:{}", c.username, c.password))
                ))
            }
            (None, None) => None,
        };
        self.authorization = Some((repo.to_owned(), header, std::time::Instant::now()));
        Ok(())
    }

    /// What a 401 or 403 means, and what to do.
    fn refused(&self, repo: &str, creds: Option<&Credentials>, detail: &str) -> BundleError {
        let reg = &self.target.registry;
        BundleError::Registry(match creds {
            Some(c) => format!(
                "{reg} refused the credentials of {:?} (from {}) for pushing to {repo}: {detail}; \
                 check the user's password and its push rights",
                c.username,
                c.from.display()
            ),
            None => format!(
                "{reg} wants credentials to push to {repo} and none were found: log in \
                 (podman login {reg}), or pass --authfile FILE / set REGISTRY_AUTH_FILE \
                 ({detail})"
            ),
        })
    }

    /// A request carrying the current `Authorization`.
    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::blocking::RequestBuilder {
        let rb = self.http.request(method, url);
        match self.authorization.as_ref().and_then(|a| a.1.as_ref()) {
            Some(h) => rb.header("authorization", h),
            None => rb,
        }
    }

    /// Refuses a 401 or 403 answer with what to do.
    fn check_auth(&self, repo: &str, status: StatusCode) -> Result<(), BundleError> {
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let creds = self
                .target
                .access
                .credentials(&self.target.registry, repo)?;
            return Err(self.refused(repo, creds.as_ref(), &status.to_string()));
        }
        Ok(())
    }

    fn save_state(&self) -> Result<(), BundleError> {
        let bytes = serde_json::to_vec_pretty(&self.state).expect("serializes");
        fsx::write_atomic(&self.target.state_file, &bytes)
    }

    /// Runs `f` up to five times, backing off, while it fails to connect or gets a 5xx.
    fn retry<T>(
        &self,
        what: &str,
        mut f: impl FnMut() -> Result<T, reqwest::Error>,
    ) -> Result<T, BundleError> {
        let mut delay = Duration::from_millis(200);
        let mut last = None;
        for attempt in 1..=ATTEMPTS {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let why = chain(&e);
                    let lower = why.to_ascii_lowercase();
                    if untrusted_certificate(&lower) {
                        // Not transient: say so at once.
                        return Err(BundleError::Registry(format!(
                            "cannot {what} at {}: {why}; the registry's certificate is not \
                             trusted: pass the site CA with --ca-bundle (or the site file's \
                             registry.caBundle)",
                            self.base
                        )));
                    }
                    last = Some(e);
                    if attempt < ATTEMPTS {
                        std::thread::sleep(delay);
                        delay *= 2;
                    }
                }
            }
        }
        Err(BundleError::Registry(format!(
            "cannot {what} at {} after {ATTEMPTS} attempts: {}",
            self.base,
            last.map(|e| chain(&e)).unwrap_or_default()
        )))
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base)
        }
    }

    pub fn has_blob(&mut self, repo: &str, digest: &str) -> Result<bool, BundleError> {
        self.login(repo)?;
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let s = self.retry("check a blob", || {
            Ok(self.req(reqwest::Method::HEAD, &url).send()?.status())
        })?;
        self.check_auth(repo, s)?;
        Ok(s.is_success())
    }

    /// Uploads `file` as `digest` unless the registry has it, resuming a recorded session. A
    /// session the registry no longer accepts (a chunk broke off mid-way, which distribution
    /// cannot resume) is started again, once, from the first byte.
    pub fn push_blob(
        &mut self,
        repo: &str,
        d: &Descriptor,
        file: &Path,
    ) -> Result<(), BundleError> {
        if self.has_blob(repo, &d.digest)? {
            self.stats.blobs_skipped += 1;
            return Ok(());
        }
        if self.upload(repo, d, file)? {
            return Ok(());
        }
        self.state.uploads.remove(&d.digest);
        self.save_state()?;
        if self.upload(repo, d, file)? {
            return Ok(());
        }
        Err(BundleError::Registry(format!(
            "{} keeps dropping the upload of {}; check its logs",
            self.base, d.digest
        )))
    }

    /// One upload session; `Ok(false)` when the registry dropped the session.
    fn upload(&mut self, repo: &str, d: &Descriptor, file: &Path) -> Result<bool, BundleError> {
        let (mut location, offset) = match self.resume_upload(repo, d)? {
            Some(resumed) => resumed,
            None => (self.start_upload(repo)?, 0),
        };
        self.remember_upload(d, &location)?;
        if !self.send_chunks(repo, d, file, offset, &mut location)? {
            return Ok(false);
        }
        self.finish_upload(repo, d, &location)?;
        Ok(true)
    }

    /// The session of an interrupted upload of `d`, if the registry still holds it: its
    /// location and the offset to go on from.
    fn resume_upload(
        &mut self,
        repo: &str,
        d: &Descriptor,
    ) -> Result<Option<(String, u64)>, BundleError> {
        let Some(url) = self.state.uploads.get(&d.digest).cloned() else {
            return Ok(None);
        };
        let status = self.retry("query an upload", || {
            let r = self.req(reqwest::Method::GET, &url).send()?;
            Ok((r.status(), header(&r, "range"), header(&r, "location")))
        })?;
        self.check_auth(repo, status.0)?;
        if !(status.0 == StatusCode::NO_CONTENT || status.0.is_success()) {
            return Ok(None);
        }
        // `Range: 0-N` holds bytes 0..=N; distribution also says `0-0` for an empty upload, so
        // that one restarts from 0 (a wrong guess is refused, not stored).
        let offset = status
            .1
            .and_then(|r| r.split('-').nth(1).and_then(|e| e.parse::<u64>().ok()))
            .map_or(0, |end| if end == 0 { 0 } else { end + 1 });
        let location = status.2.map_or(url, |l| self.absolute(&l));
        self.stats.blobs_resumed += 1;
        Ok(Some((location, offset)))
    }

    /// A new upload session in `repo`: its location.
    fn start_upload(&mut self, repo: &str) -> Result<String, BundleError> {
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let (status, loc) = self.retry("start an upload", || {
            let r = self
                .req(reqwest::Method::POST, &url)
                .header("content-length", "0")
                .send()?;
            Ok((r.status(), header(&r, "location")))
        })?;
        self.check_auth(repo, status)?;
        if status != StatusCode::ACCEPTED {
            return Err(BundleError::Registry(format!(
                "{} refused an upload to {repo}: {status}",
                self.base
            )));
        }
        let loc = loc
            .ok_or_else(|| BundleError::Registry("the registry gave no upload location".into()))?;
        Ok(self.absolute(&loc))
    }

    /// Keeps the session's location in the state file, for a later run to resume.
    fn remember_upload(&mut self, d: &Descriptor, location: &str) -> Result<(), BundleError> {
        self.state
            .uploads
            .insert(d.digest.clone(), location.to_owned());
        self.save_state()
    }

    /// The blob's bytes from `offset`, chunk by chunk, following the location the registry
    /// gives after each; `Ok(false)` when the registry dropped the session.
    fn send_chunks(
        &mut self,
        repo: &str,
        d: &Descriptor,
        file: &Path,
        mut offset: u64,
        location: &mut String,
    ) -> Result<bool, BundleError> {
        let mut f = File::open(file).map_err(|e| BundleError::io("read", file, e))?;
        let size = d.size;
        let mut buf = Vec::with_capacity(CHUNK as usize);
        while offset < size {
            let len = CHUNK.min(size - offset);
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| BundleError::io("read", file, e))?;
            buf.clear();
            (&mut f)
                .take(len)
                .read_to_end(&mut buf)
                .map_err(|e| BundleError::io("read", file, e))?;
            let end = offset + len - 1;
            let (status, loc) = self.retry("upload a chunk", || {
                let r = self
                    .req(reqwest::Method::PATCH, location.as_str())
                    .header("content-type", "application/octet-stream")
                    .header("content-range", format!("{offset}-{end}"))
                    .header("content-length", len.to_string())
                    .body(buf.clone())
                    .send()?;
                Ok((r.status(), header(&r, "location")))
            })?;
            self.check_auth(repo, status)?;
            if status == StatusCode::NOT_FOUND || status == StatusCode::RANGE_NOT_SATISFIABLE {
                return Ok(false);
            }
            if status != StatusCode::ACCEPTED {
                return Err(BundleError::Registry(format!(
                    "{} refused bytes {offset}-{end} of {}: {status}",
                    self.base, d.digest
                )));
            }
            if let Some(l) = loc {
                *location = self.absolute(&l);
                self.remember_upload(d, location)?;
            }
            self.stats.bytes_sent += len;
            if let Some(p) = &self.progress {
                p.inc(len);
            }
            offset += len;
        }
        Ok(true)
    }

    /// Closes the session with the blob's digest; the registry must accept it as that blob.
    fn finish_upload(
        &mut self,
        repo: &str,
        d: &Descriptor,
        location: &str,
    ) -> Result<(), BundleError> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={}", d.digest);
        let status = self.retry("finish an upload", || {
            Ok(self
                .req(reqwest::Method::PUT, &url)
                .header("content-length", "0")
                .send()?
                .status())
        })?;
        self.check_auth(repo, status)?;
        if status != StatusCode::CREATED {
            return Err(BundleError::Registry(format!(
                "{} did not accept {} ({status}); its content may not match the digest",
                self.base, d.digest
            )));
        }
        self.state.uploads.remove(&d.digest);
        self.save_state()?;
        self.stats.blobs_pushed += 1;
        Ok(())
    }

    pub fn push_manifest(
        &mut self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, BundleError> {
        self.login(repo)?;
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let (status, digest) = self.retry("push a manifest", || {
            let r = self
                .req(reqwest::Method::PUT, &url)
                .header("content-type", media_type)
                .body(bytes.to_vec())
                .send()?;
            Ok((r.status(), header(&r, "docker-content-digest")))
        })?;
        self.check_auth(repo, status)?;
        if status != StatusCode::CREATED {
            return Err(BundleError::Registry(format!(
                "{} refused manifest {repo}:{reference}: {status}",
                self.base
            )));
        }
        self.stats.manifests += 1;
        Ok(digest.unwrap_or_default())
    }

    /// Pushes one image of a media layout (children before parents), tagged `tag`.
    pub fn push_image(
        &mut self,
        layout: &Path,
        repo: &str,
        tag: &str,
        top: &Descriptor,
    ) -> Result<(), BundleError> {
        self.push_tree(layout, repo, top)?;
        let bytes = std::fs::read(layout.join("blobs/sha256").join(top.hex()?))
            .map_err(|e| BundleError::io("read", layout, e))?;
        let digest = self.push_manifest(repo, tag, &top.media_type, &bytes)?;
        if !digest.is_empty() && digest != top.digest {
            return Err(BundleError::Registry(format!(
                "the registry stored {repo}:{tag} as {digest}, not {}",
                top.digest
            )));
        }
        Ok(())
    }

    fn push_tree(&mut self, layout: &Path, repo: &str, d: &Descriptor) -> Result<(), BundleError> {
        let blob = |hex: &str| layout.join("blobs/sha256").join(hex);
        let top_path = blob(d.hex()?);
        let bytes = std::fs::read(&top_path).map_err(|e| BundleError::io("read", &top_path, e))?;
        if d.is_index() {
            let idx: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| BundleError::Layout(e.to_string()))?;
            for child in idx["manifests"].as_array().into_iter().flatten() {
                let child: Descriptor = serde_json::from_value(child.clone())
                    .map_err(|e| BundleError::Layout(e.to_string()))?;
                self.push_tree(layout, repo, &child)?;
                let child_path = blob(child.hex()?);
                let cb = std::fs::read(&child_path)
                    .map_err(|e| BundleError::io("read", &child_path, e))?;
                self.push_manifest(repo, &child.digest, &child.media_type, &cb)?;
            }
        } else {
            let m: oci::ManifestDoc =
                serde_json::from_slice(&bytes).map_err(|e| BundleError::Layout(e.to_string()))?;
            for b in std::iter::once(&m.config).chain(m.layers.iter()) {
                let path = blob(b.hex()?);
                if !path.exists() {
                    // Differential media: the layer came with an older media.
                    if self.has_blob(repo, &b.digest)? {
                        self.stats.blobs_skipped += 1;
                        continue;
                    }
                    return Err(BundleError::Registry(format!(
                        "{} is not on this differential media and not in {}; import the older \
                         media it builds on first",
                        b.digest, self.base
                    )));
                }
                self.push_blob(repo, b, &path)?;
            }
        }
        Ok(())
    }
}

/// A response header as text, when present and printable.
fn header(r: &reqwest::blocking::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `meshguard/gateway:1.4.0` → (`meshguard/gateway`, `1.4.0`).
pub fn split_ref(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    }
}
