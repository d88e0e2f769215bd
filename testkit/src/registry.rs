//! A registry (distribution 2.8, Debian's `docker-registry`) on loopback, plain or with TLS
//! and either htpasswd users or a token service, as sites run it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A docker-registry (distribution 2.8) on a free loopback port; stopped when dropped.
#[derive(Debug)]
pub struct Registry {
    child: std::process::Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// Where it keeps blobs and manifests.
    pub storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// A plain-HTTP registry on a free port.
    pub fn start() -> Self {
        Self::start_on(&format!("127.0.0.1:{}", crate::free_port()))
    }

    /// A plain-HTTP registry on `addr` (a fixed address, for a test in its own network
    /// namespace where the site's configuration names it).
    pub fn start_on(addr: &str) -> Self {
        Self::start_with(addr, "", |addr| {
            reqwest::blocking::get(format!("http://{addr}/v2/"))
                .is_ok_and(|r| r.status().is_success())
        })
    }

    /// A registry serving TLS with `cert`/`key` (issued by the CA `ca`) that wants the users
    /// of the bcrypt `htpasswd` file (HTTP Basic), as sites run distribution.
    pub fn start_secured(htpasswd: &Path, cert: &Path, key: &Path, ca: &Path) -> Self {
        Self::start_secured_on(
            &format!("127.0.0.1:{}", crate::free_port()),
            htpasswd,
            cert,
            key,
            ca,
        )
    }

    /// [`Registry::start_secured`] on `addr` (a fixed address, for a test in its own network
    /// namespace where the site's configuration names it).
    pub fn start_secured_on(
        addr: &str,
        htpasswd: &Path,
        cert: &Path,
        key: &Path,
        ca: &Path,
    ) -> Self {
        let auth = format!(
            "htpasswd:\n    realm: site\n    path: {}\n",
            htpasswd.display()
        );
        Self::start_tls(addr, &auth, cert, key, ca)
    }

    /// A registry serving TLS that takes bearer tokens from the token service at `realm`,
    /// signed by the certificate `token_cert`.
    pub fn start_with_token_auth(
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
        Self::start_tls(
            &format!("127.0.0.1:{}", crate::free_port()),
            &auth,
            cert,
            key,
            ca,
        )
    }

    /// TLS on `addr` with `cert`/`key` (issued by `ca`) and the `auth:` section `auth`; ready
    /// when `/v2/` asks for credentials.
    fn start_tls(addr: &str, auth: &str, cert: &Path, key: &Path, ca: &Path) -> Self {
        let client = reqwest::blocking::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap(),
            )
            .build()
            .unwrap();
        Self::start_with(
            addr,
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
    fn start_with(addr: &str, http_extra: &str, ready: impl Fn(&str) -> bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = addr.to_owned();
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
        crate::wait_for("the registry to start", || ready(&addr));
        Self {
            child,
            addr,
            storage,
            _dir: dir,
        }
    }

    /// `skopeo inspect` of an image in this registry: its digest, or None when absent.
    pub fn digest(&self, name: &str) -> Option<String> {
        let out = Command::new("skopeo")
            .args([
                "inspect",
                "--tls-verify=false",
                &format!("docker://{}/{name}", self.addr),
            ])
            .output()
            .expect("skopeo runs");
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
