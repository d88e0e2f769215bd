//! How to reach a registry: plain HTTP or TLS with the site's CAs, and the credentials users
//! already keep for it.
//!
//! Credentials come from the auth files podman, skopeo and docker write
//! (containers-auth.json(5)), first match wins: `--authfile`, `REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`, `$HOME/.config/containers/auth.json`,
//! `$DOCKER_CONFIG/config.json` (default `$HOME/.docker/config.json`). Within a file the most
//! specific key wins (`host/ns/repo` before `host/ns` before `host`). Only `auth`
//! (base64 `user:password`) entries are used; a registry whose credentials sit in a credential
//! helper is named with what to do, not silently reached anonymously. The file lookup is
//! written here (about 80 lines) because the crates that read these files (`docker_credential`)
//! cover docker's file only and run credential helpers, which a disconnected site has no use for.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::BundleError;

/// A registry's transport and credentials.
#[derive(Clone, Default)]
pub struct Access {
    /// Plain HTTP (a registry on loopback or inside the enclave without TLS).
    pub insecure: bool,
    /// PEM CAs trusted besides the built-in roots (the site's private CA).
    pub ca_bundle: Option<PathBuf>,
    /// An auth file to use before the standard ones.
    pub auth_file: Option<PathBuf>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("insecure", &self.insecure)
            .field("ca_bundle", &self.ca_bundle)
            .field("auth_file", &self.auth_file)
            .finish()
    }
}

/// A user name and password for one registry: never printed.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// The auth file they came from, for messages.
    pub from: PathBuf,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, Entry>,
    #[serde(default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl Access {
    /// The auth files to look in, in order.
    fn auth_files(&self) -> Vec<PathBuf> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let mut files: Vec<PathBuf> = self.auth_file.iter().cloned().collect();
        files.extend(env("REGISTRY_AUTH_FILE"));
        files.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
        let home = env("HOME");
        files.extend(
            home.as_ref()
                .map(|h| h.join(".config/containers/auth.json")),
        );
        files.extend(
            env("DOCKER_CONFIG")
                .or_else(|| home.map(|h| h.join(".docker")))
                .map(|d| d.join("config.json")),
        );
        files
    }

    /// The credentials for `repo` on `registry` (`host:port`), if an auth file has them.
    pub fn credentials(
        &self,
        registry: &str,
        repo: &str,
    ) -> Result<Option<Credentials>, BundleError> {
        for (i, path) in self.auth_files().into_iter().enumerate() {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                // The explicit --authfile must exist; the standard places need not.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && (i > 0 || self.auth_file.is_none()) =>
                {
                    continue;
                }
                Err(e) => return Err(BundleError::io("read the registry auth file", &path, e)),
            };
            let file: AuthFile = serde_json::from_slice(&bytes).map_err(|e| {
                BundleError::Input(format!(
                    "the registry auth file {} is not JSON in the containers-auth.json format: {e}",
                    path.display()
                ))
            })?;
            if let Some(c) = lookup(&file, &path, registry, repo)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// The site CAs as DER certificates (none without `ca_bundle`).
    pub fn ca_certs(&self) -> Result<Vec<Vec<u8>>, BundleError> {
        let Some(path) = &self.ca_bundle else {
            return Ok(Vec::new());
        };
        let pem =
            std::fs::read(path).map_err(|e| BundleError::io("read the CA bundle", path, e))?;
        let certs = rustls_pemfile::certs(&mut pem.as_slice())
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                BundleError::Input(format!("the CA bundle {} is not PEM: {e}", path.display()))
            })?;
        if certs.is_empty() {
            return Err(BundleError::Input(format!(
                "the CA bundle {} holds no certificate",
                path.display()
            )));
        }
        Ok(certs)
    }
}

/// Registry keys as users write them: `https://host:port/v1/` and `host:port` name the same.
fn normalize(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.trim_end_matches('/')
        .trim_end_matches("/v1")
        .trim_end_matches("/v2")
}

fn lookup(
    file: &AuthFile,
    path: &Path,
    registry: &str,
    repo: &str,
) -> Result<Option<Credentials>, BundleError> {
    // host/a/b/c, host/a/b, host/a, host: the most specific first.
    let full = format!("{registry}/{repo}");
    let mut scopes = vec![full.as_str()];
    let mut rest = full.as_str();
    while let Some((head, _)) = rest.rsplit_once('/') {
        scopes.push(head);
        rest = head;
    }
    for scope in scopes {
        let entry = file.auths.iter().find(|(k, _)| normalize(k) == scope);
        if let Some((key, entry)) = entry {
            match credentials(key, entry, path, registry)? {
                Some(c) => return Ok(Some(c)),
                None => continue,
            }
        }
        if file.cred_helpers.keys().any(|k| normalize(k) == scope) {
            return Err(BundleError::Input(format!(
                "{}: the credentials for {scope} are in a credential helper, which this tool does \
                 not run; write them to an auth file (podman login --authfile FILE {registry}) \
                 and pass --authfile FILE or set REGISTRY_AUTH_FILE",
                path.display()
            )));
        }
    }
    if let Some(store) = &file.creds_store
        && file.auths.keys().any(|k| normalize(k) == registry)
    {
        return Err(BundleError::Input(format!(
            "{}: the credentials for {registry} are in the credential store {store:?}, which \
             this tool does not run; write them to an auth file (podman login --authfile FILE \
             {registry}) and pass --authfile FILE or set REGISTRY_AUTH_FILE",
            path.display()
        )));
    }
    Ok(None)
}

/// The user name and password of the auth file's entry `key`; None when it holds none (an
/// entry with an identity token only is refused: this tool does not use one).
fn credentials(
    key: &str,
    entry: &Entry,
    path: &Path,
    registry: &str,
) -> Result<Option<Credentials>, BundleError> {
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        if entry.identitytoken.is_some() {
            return Err(BundleError::Input(format!(
                "{}: the entry {key:?} holds an identity token only, which this tool does \
                 not use; log in with a user name and password (podman login \
                 --authfile {} {registry})",
                path.display(),
                path.display()
            )));
        }
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Err(BundleError::Input(format!(
            "{}: the \"auth\" of {key:?} is not base64 of user:password; log in again \
             (podman login --authfile {} {registry})",
            path.display(),
            path.display()
        )));
    };
    Ok(Some(Credentials {
        username: user.to_owned(),
        password: password.to_owned(),
        from: path.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> AuthFile {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_most_specific_key_wins_and_docker_style_keys_match() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let f = file(&format!(
            r#"{{"auths": {{"https://reg.example:5000/v1/": {{"auth": "{}"}},
                 "reg.example:5000/team": {{"auth": "{}"}}}}}}"#,
            b64("everyone:one"),
            b64("team:two:with-colon")
        ));
        let p = Path::new("auth.json");
        let c = lookup(&f, p, "reg.example:5000", "team/app")
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("team", "two:with-colon")
        );
        let c = lookup(&f, p, "reg.example:5000", "other/app")
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "everyone");
        assert!(
            lookup(&f, p, "elsewhere:5000", "team/app")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_credential_helper_is_named_not_skipped() {
        let f = file(r#"{"auths": {}, "credHelpers": {"reg.example:5000": "secretservice"}}"#);
        let e = lookup(&f, Path::new("c.json"), "reg.example:5000", "a/b").unwrap_err();
        assert!(e.to_string().contains("credential helper"), "{e}");
        let f = file(r#"{"auths": {"reg.example:5000": {"auth": "bm90LWJhc2U2NA=="}}}"#);
        let e = lookup(&f, Path::new("c.json"), "reg.example:5000", "a/b").unwrap_err();
        assert!(e.to_string().contains("not base64 of user:password"), "{e}");
    }
}
