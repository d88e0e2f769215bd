//! Step 4: an upstream service on 127.0.0.1 and the gateway in front of it, and the admin API
//! client the later steps talk to the gateway with.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::Value;

use super::witness::Witness;
use super::{Demo, Running, random_hex, step};

/// The gateway's admin API, as the demo's admin.
pub(super) struct Api {
    pub(super) client: Client,
    pub(super) base: String,
    token: String,
}

impl Api {
    pub(super) fn admin(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("X-Admin-Token", &self.token)
    }

    /// Sends `req` and returns the JSON answer, or an error if the status is not `expect`.
    pub(super) fn send(&self, req: RequestBuilder, expect: u16) -> anyhow::Result<Value> {
        let resp = req.send().context("the gateway did not answer")?;
        let status = resp.status().as_u16();
        let body: Value = resp
            .json()
            .context("the gateway answered something other than JSON")?;
        if status != expect {
            bail!("expected HTTP {expect}, got {status}: {body}");
        }
        Ok(body)
    }

    /// GET `path` as the admin, which must answer 200.
    pub(super) fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.admin(reqwest::Method::GET, path), 200)
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = self.client.get(format!("{}/ready", self.base)).send()
                && r.status().is_success()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the gateway did not become ready within 30 s")
    }
}

/// The upstream the gateway proxies to: Python's http.server, stopped when dropped.
pub(super) struct Upstream {
    pub(super) url: String,
    pub(super) root: PathBuf,
    _running: Running,
}

/// The running gateway, stopped when dropped.
pub(super) struct Gateway {
    pub(super) api: Api,
    pub(super) binary: PathBuf,
    _running: Running,
}

/// Step 4, first half: a real upstream, Python's http.server serving .demo/upstream (the repos
/// API of the story).
pub(super) fn start_upstream(demo: &Demo) -> anyhow::Result<Upstream> {
    step("starting an upstream service and the gateway in front of it, on 127.0.0.1");
    let root = demo.dir.join("upstream");
    let repos = root.join("api/repos");
    fs::create_dir_all(&repos).with_context(|| format!("cannot create {}", repos.display()))?;
    fs::write(
        repos.join("meshguard"),
        "{\"name\": \"meshguard\", \"stars\": 42}\n",
    )
    .with_context(|| format!("cannot write the upstream's data in {}", repos.display()))?;
    let mut child = Command::new("python3")
        .args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start python3 -m http.server as the demo upstream")?;
    let stdout = child.stdout.take().expect("piped");
    let running = Running { child };
    let port = http_server_port(stdout)?;
    Ok(Upstream {
        url: format!("http://127.0.0.1:{port}"),
        root,
        _running: running,
    })
}

/// The port http.server says it serves on, in its first line.
fn http_server_port(stdout: ChildStdout) -> anyhow::Result<String> {
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    Ok(line
        .split("port ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .context("http.server did not print its port")?
        .to_owned())
}

/// Step 4, second half: the gateway on 127.0.0.1 in front of `upstream`, on embedded SQLite, with
/// the vendor's license key and the witness to trust; ready when this returns.
pub(super) fn start(
    demo: &Demo,
    upstream: &Upstream,
    witness: &Witness,
) -> anyhow::Result<Gateway> {
    let binary = demo.bin("meshguard-gateway");
    let mut child = spawn(demo, &binary, upstream, witness)?;
    let stdout = child.stdout.take().expect("piped");
    let running = Running { child };
    let base = listening_url(demo, stdout)?;
    let api = Api {
        client: Client::builder().timeout(Duration::from_secs(10)).build()?,
        base,
        token: demo.admin_token.clone(),
    };
    api.wait_ready()?;
    println!(
        "    gateway at {} (mode enforce), database {}",
        api.base,
        demo.db().display()
    );
    Ok(Gateway {
        api,
        binary,
        _running: running,
    })
}

fn spawn(
    demo: &Demo,
    binary: &Path,
    upstream: &Upstream,
    witness: &Witness,
) -> anyhow::Result<Child> {
    let log = demo.gateway_log();
    let log = fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    Command::new(binary)
        .env("PROXY_TARGET", &upstream.url)
        .env("HOST", "127.0.0.1")
        .env("PORT", std::env::var("PORT").unwrap_or_else(|_| "0".into()))
        .env("ADMIN_TOKEN", &demo.admin_token)
        .env("JWT_SECRET", random_hex(32)?)
        .env("DB_PATH", demo.db())
        .env("POLICIES_DIR", demo.policies_dir())
        .env("LICENSE_PUBKEY", demo.vendor_dir().join("vendor.pub"))
        .env("DEPLOYMENT_MODE", "air-gapped")
        .env("REGION", "local")
        .env("AUDIT_WITNESSES", &witness.vkey)
        // The demo's alert receiver runs on loopback, which alerts go to only when allowed.
        .env("ALERT_DESTINATIONS_ALLOWED", "127.0.0.1")
        .env("LOG_LEVEL", "error")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))
}

/// The URL the gateway prints when it listens; the rest of its output is read and dropped, so
/// it never blocks on a full pipe.
fn listening_url(demo: &Demo, stdout: ChildStdout) -> anyhow::Result<String> {
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("listening on ") {
                    break url.to_owned();
                }
            }
            _ => bail!(
                "the gateway stopped before listening; see {}",
                demo.gateway_log().display()
            ),
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Ok(base)
}
