//! What the end-to-end tests share: the workspace's binaries, and a real gateway process started
//! on 127.0.0.1 with a database of its own.

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

const WITNESS_PASSPHRASE: &str = "witness-passphrase-for-tests-only";
pub(crate) const ADMIN: &str = "e2e-admin-token-0123456789abcdef0123";
const JWT_SECRET: &str = "e2e-jwt-secret-0123456789abcdef0123456";

/// The directory of the workspace's binaries, checking `names` are built.
pub(crate) fn bins(names: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_owned();
    for b in names {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: run the tests with `cargo xtask test` (or build the workspace first)",
            dir.join(b).display()
        );
    }
    dir
}

/// A running gateway; killed when dropped.
pub(crate) struct Gateway {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) http: reqwest::blocking::Client,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the gateway on `dir` (database, `gateway.log`) with the test's secrets and `env`;
/// returns the process and the address it printed.
pub(crate) fn spawn_gateway(dir: &Path, env: &[(&str, std::ffi::OsString)]) -> (Child, String) {
    std::fs::create_dir_all(dir).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("gateway.log"))
        .unwrap();
    let mut child = Command::new(bins(&["meshguard-gateway"]).join("meshguard-gateway"))
        .env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("ADMIN_TOKEN", ADMIN)
        .env("JWT_SECRET", JWT_SECRET)
        .env("DB_PATH", dir.join("meshguard.db"))
        // The tests' alert receivers run on loopback, which alerts go to only when allowed.
        .env("ALERT_DESTINATIONS_ALLOWED", "127.0.0.1")
        // Far above any stall of a loaded machine: outcomes must not depend on load.
        .env("CIRCUIT_BREAKER_MS", "60000")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let Some(line) = lines.next() else {
            panic!(
                "the gateway stopped before listening:\n{}",
                std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default()
            );
        };
        if let Some(u) = line.unwrap().strip_prefix("listening on ") {
            break u.to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (child, url)
}

impl Gateway {
    pub(crate) fn spawn(dir: &Path, env: &[(&str, std::ffi::OsString)]) -> Self {
        let (child, url) = spawn_gateway(dir, env);
        Self {
            child,
            url,
            http: reqwest::blocking::Client::new(),
        }
    }

    /// An admin API call: (status, body).
    pub(crate) fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("X-Admin-Token", ADMIN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }

    /// An admin GET that must succeed, as JSON.
    pub(crate) fn get(&self, path: &str) -> Value {
        let (s, body) = self.admin(reqwest::Method::GET, path, None);
        assert_eq!(s, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// A new agent's token.
    pub(crate) fn agent(&self, name: &str, tier: &str) -> String {
        let (s, body) = self.admin(
            reqwest::Method::POST,
            "/admin/agents",
            Some(json!({"name": name, "trustTier": tier})),
        );
        assert_eq!(s, 201, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `/proxy/check` for `action` as the agent holding `token`: the status code.
    pub(crate) fn check(&self, token: &str, action: &str) -> u16 {
        self.http
            .get(format!("{}/proxy/check", self.url))
            .bearer_auth(token)
            .header("X-MeshGuard-Action", action)
            .send()
            .unwrap()
            .status()
            .as_u16()
    }
}

impl Gateway {
    /// Hands a witness's response.txt to the gateway (the witness proof cache).
    pub(crate) fn add_cosignatures(&self, response: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/admin/audit/cosignatures", self.url))
            .header("X-Admin-Token", ADMIN)
            .body(response.to_owned())
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    }

    /// Signs a checkpoint; returns (note, vkey).
    pub(crate) fn checkpoint(&self) -> (String, String) {
        let (s, body) = self.admin(reqwest::Method::POST, "/admin/audit/checkpoint", None);
        assert_eq!(s, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        (
            v["checkpoint"].as_str().unwrap().to_owned(),
            v["vkey"].as_str().unwrap().to_owned(),
        )
    }

    /// The tlog-witness request body from `old` to the latest checkpoint.
    pub(crate) fn request(&self, old: u64) -> String {
        let (s, body) = self.admin(
            reqwest::Method::GET,
            &format!("/admin/audit/consistency?from={old}&format=tlog-witness"),
            None,
        );
        assert_eq!(s, 200, "{body}");
        body
    }
}

/// `meshguard-witness` with a state directory of its own.
pub(crate) struct WitnessCli {
    pub(crate) dir: tempfile::TempDir,
}

impl WitnessCli {
    pub(crate) fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(bins(&["meshguard-witness"]).join("meshguard-witness"))
            .arg("--state")
            .arg(self.dir.path())
            .args(args)
            .env("MESHGUARD_WITNESS_PASSPHRASE", WITNESS_PASSPHRASE)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Cosigns `request`; returns (exit code, response file, stderr).
    pub(crate) fn cosign(&self, request: &str) -> (i32, String, String) {
        let req = self.dir.path().join("request.txt");
        let resp = self.dir.path().join("response.txt");
        let _ = std::fs::remove_file(&resp);
        std::fs::write(&req, request).unwrap();
        let (code, _, err) = self.run(&[
            "cosign",
            req.to_str().unwrap(),
            "--out",
            resp.to_str().unwrap(),
        ]);
        (
            code,
            std::fs::read_to_string(&resp).unwrap_or_default(),
            err,
        )
    }
}

/// `meshguard-witness serve`; killed when dropped.
pub(crate) struct ServedWitness {
    child: Child,
    pub(crate) url: String,
}

impl Drop for ServedWitness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WitnessCli {
    /// `meshguard-witness serve` on 127.0.0.1:`port`.
    pub(crate) fn serve(&self, port: u16) -> ServedWitness {
        let mut child = Command::new(bins(&["meshguard-witness"]).join("meshguard-witness"))
            .arg("--state")
            .arg(self.dir.path())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("MESHGUARD_WITNESS_PASSPHRASE", WITNESS_PASSPHRASE)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines
            .next()
            .expect("the witness printed its address")
            .unwrap();
        let url = line
            .split("listening on ")
            .nth(1)
            .unwrap_or_else(|| panic!("{line}"))
            .to_owned();
        std::thread::spawn(move || lines.for_each(drop));
        ServedWitness { child, url }
    }
}
