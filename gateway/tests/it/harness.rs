//! Starts the gateway binary on a free loopback port with its own data directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;

pub(crate) const ADMIN_TOKEN: &str = "it-admin-token-4f9c2a7e1b3d5f60";
pub(crate) const JWT_SECRET: &str = "it-jwt-secret-9d8c7b6a5f4e3d2c1b0a99887766";

pub(crate) struct Gateway {
    child: Child,
    /// The gateway's log (its stderr), shown only when the test fails: tests that provoke
    /// refusals would otherwise fill passing runs with warnings that read like real errors.
    log: std::path::PathBuf,
    pub(crate) base: String,
    pub(crate) stdout_lines: Vec<String>,
    client: Client,
}

pub(crate) struct Options<'a> {
    pub(crate) env: Vec<(&'a str, String)>,
    pub(crate) args: Vec<&'a str>,
    /// Another gateway binary than the one cargo built (a stamped copy).
    pub(crate) program: Option<std::path::PathBuf>,
}

impl<'a> Options<'a> {
    /// The default secrets plus `extra` environment variables.
    pub(crate) fn with(extra: Vec<(&'a str, String)>) -> Self {
        let mut o = Self::default();
        o.env.extend(extra);
        o
    }
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            env: vec![
                ("ADMIN_TOKEN", ADMIN_TOKEN.into()),
                ("JWT_SECRET", JWT_SECRET.into()),
                // The tests' alert receivers run on loopback, which the destination policy
                // refuses unless allowed by name.
                ("ALERT_DESTINATIONS_ALLOWED", "127.0.0.1".into()),
            ],
            args: Vec::new(),
            program: None,
        }
    }
}

pub(crate) fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_meshguard-gateway")
}

/// A command for the gateway with a clean environment: only what the test sets.
pub(crate) fn command(dir: &Path, opts: &Options<'_>) -> Command {
    let mut cmd = Command::new(opts.program.as_deref().unwrap_or(Path::new(binary())));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("DB_PATH", dir.join("data/meshguard.db"))
        .env("POLICIES_DIR", dir.join("policies"))
        .env("LOG_LEVEL", "warn")
        // A decision's budget far above any stall of a loaded machine: a test's outcome must
        // not depend on how busy the machine is. The breaker's own tests set theirs.
        .env("CIRCUIT_BREAKER_MS", "60000");
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    cmd.args(&opts.args);
    cmd
}

impl Gateway {
    pub(crate) fn start(dir: &Path) -> Self {
        Self::start_with(dir, Options::default())
    }

    pub(crate) fn start_with(dir: &Path, opts: Options<'_>) -> Self {
        Self::start_with_client(
            dir,
            opts,
            Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        )
    }

    /// A gateway serving HTTPS, reached by a client trusting only the PEM CA `ca`.
    pub(crate) fn start_tls(dir: &Path, opts: Options<'_>, ca: &Path) -> Self {
        Self::start_with_client(dir, opts, tls_client(ca, None))
    }

    /// A TLS gateway whose test client presents `identity` (certificate and key PEM).
    pub(crate) fn start_tls_as(dir: &Path, opts: Options<'_>, ca: &Path, identity: &[u8]) -> Self {
        Self::start_with_client(dir, opts, tls_client(ca, Some(identity)))
    }

    fn start_with_client(dir: &Path, opts: Options<'_>, client: Client) -> Self {
        let log = dir.join(format!(
            "gateway-{}.log",
            LOGS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = command(dir, &opts)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("a log file in the test directory"))
            .spawn()
            .expect("the gateway binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stdout);
        let base = loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("read gateway stdout");
            assert!(
                n > 0,
                "gateway exited before listening; printed {lines:?}; logged {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            let line = line.trim_end().to_owned();
            if let Some(url) = line.strip_prefix("listening on ") {
                break url.to_owned();
            }
            lines.push(line);
        };
        // Keep draining stdout so the gateway never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        let gw = Self {
            child,
            log,
            base,
            stdout_lines: lines,
            client,
        };
        gw.wait_ready();
        gw
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.client.get(format!("{}/ready", self.base)).send()
                && r.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "gateway never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn raw(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// An admin request with `X-Admin-Token`.
    pub(crate) fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.raw(method, path).header("X-Admin-Token", ADMIN_TOKEN)
    }

    pub(crate) fn get(&self, path: &str) -> (u16, Value) {
        json(self.admin(Method::GET, path).send().unwrap())
    }

    /// An admin GET whose answer is text (exports, proofs), not JSON.
    pub(crate) fn get_text(&self, path: &str) -> String {
        self.admin(Method::GET, path)
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    pub(crate) fn post(&self, path: &str, body: Value) -> (u16, Value) {
        json(self.admin(Method::POST, path).json(&body).send().unwrap())
    }

    pub(crate) fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        json(self.admin(Method::PATCH, path).json(&body).send().unwrap())
    }

    pub(crate) fn put(&self, path: &str, body: Value) -> (u16, Value) {
        json(self.admin(Method::PUT, path).json(&body).send().unwrap())
    }

    pub(crate) fn delete(&self, path: &str) -> (u16, Value) {
        json(self.admin(Method::DELETE, path).send().unwrap())
    }

    /// `GET /proxy/check` as an agent.
    pub(crate) fn check(&self, token: &str, action: &str) -> (u16, Value) {
        json(
            self.raw(Method::GET, "/proxy/check")
                .bearer_auth(token)
                .header("X-MeshGuard-Action", action)
                .send()
                .unwrap(),
        )
    }

    /// `POST /api/v1/governance/batch` as an agent.
    pub(crate) fn batch(&self, token: &str, body: &Value) -> (u16, Value) {
        json(
            self.raw(Method::POST, "/api/v1/governance/batch")
                .bearer_auth(token)
                .json(body)
                .send()
                .unwrap(),
        )
    }

    /// What the gateway has logged so far (its stderr, at `LOG_LEVEL=warn` unless set).
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until one of the gateway's threads has been blocked in the kernel (state `D`,
    /// uninterruptible: for example writing to a frozen filesystem) for 200 ms, as `/proc`
    /// says. A thread waiting on a frozen disk stays blocked; one waiting on a sync of
    /// another disk does not for that long. (Which thread writes a group of the audit log
    /// depends on who leads it: a request's worker or the writer thread.)
    pub(crate) fn wait_until_a_thread_blocks(&self) {
        let tasks = format!("/proc/{}/task", self.child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut since: std::collections::HashMap<std::ffi::OsString, std::time::Instant> =
            std::collections::HashMap::new();
        loop {
            let blocked: Vec<std::ffi::OsString> = std::fs::read_dir(&tasks)
                .unwrap()
                .flatten()
                .filter(|t| {
                    let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                    // The state is the field after the parenthesised command name.
                    stat.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('D'))
                })
                .map(|t| t.file_name())
                .collect();
            since.retain(|tid, _| blocked.contains(tid));
            let now = std::time::Instant::now();
            for tid in blocked {
                since.entry(tid).or_insert(now);
            }
            if since
                .values()
                .any(|t| now.duration_since(*t) >= std::time::Duration::from_millis(200))
            {
                return;
            }
            assert!(
                now < deadline,
                "no thread of the gateway stayed blocked in the kernel (see {tasks})"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Ends the process the hard way: no shutdown hook runs.
    pub(crate) fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking()
            && let Ok(text) = std::fs::read_to_string(&self.log)
        {
            eprintln!(
                "--- gateway log ({}) ---\n{text}--- end of gateway log ---",
                self.log.display()
            );
        }
    }
}

/// Starts a gateway that must refuse to start: it exits with a failure within 30 s (else the
/// test fails); what it printed and logged.
pub(crate) fn refused_start(dir: &Path, opts: &Options<'_>) -> String {
    let log = dir.join(format!(
        "refused-{}.log",
        LOGS.fetch_add(1, Ordering::Relaxed)
    ));
    let mut child = command(dir, opts)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .expect("the gateway binary starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway started, and was meant to refuse to");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "the gateway exited 0");
    std::fs::read_to_string(&log).unwrap_or_default()
        + &std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
}

/// Runs the stock `minisign` in `dir`; a failure fails the test with its message.
pub(crate) fn minisign(args: &[&str], dir: &Path) {
    let out = Command::new("minisign")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("minisign (apt minisign) runs");
    assert!(
        out.status.success(),
        "minisign {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

static LOGS: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn json(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON body ({e}): {text}"));
    assert_no_nulls(&value, "$");
    (status, value)
}

/// MeshGuard's typed SDKs fail on `null` where they expect strings or lists; no answer has one.
pub(crate) fn assert_no_nulls(v: &Value, at: &str) {
    match v {
        Value::Null => panic!("null at {at}"),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, x)| assert_no_nulls(x, &format!("{at}[{i}]"))),
        Value::Object(map) => map
            .iter()
            .for_each(|(k, x)| assert_no_nulls(x, &format!("{at}.{k}"))),
        _ => {}
    }
}

pub(crate) fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Creates an agent and returns (id, token).
pub(crate) fn agent(gw: &Gateway, name: &str, tier: &str, tags: &[&str]) -> (String, String) {
    let (status, body) = gw.post(
        "/admin/agents",
        serde_json::json!({"name": name, "trustTier": tier, "tags": tags}),
    );
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().to_owned(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

/// Creates a policy from YAML text and returns its id.
pub(crate) fn policy(gw: &Gateway, name: &str, yaml: &str) -> String {
    let (status, body) = gw.post(
        "/admin/policies",
        serde_json::json!({"name": name, "content": yaml}),
    );
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// A real HTTP server from `tests/it/support/<script>` (Python's http.server), on a free
/// loopback port it prints first; stopped when dropped.
pub(crate) struct PythonServer {
    child: std::process::Child,
    pub(crate) url: String,
}

impl PythonServer {
    pub(crate) fn start(script: &str, args: &[&str]) -> Self {
        let path = format!("{}/tests/it/support/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("python3")
            .arg(path)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Self {
            child,
            url: format!("http://127.0.0.1:{}", line.trim()),
        }
    }
}

impl PythonServer {
    /// What a recording server (`receiver.py`) got, once it holds at least `n` requests (waits
    /// up to 20 s, then returns what it has).
    pub(crate) fn received(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let got: Vec<serde_json::Value> =
                reqwest::blocking::get(format!("{}/received", self.url))
                    .unwrap()
                    .json()
                    .unwrap();
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client trusting only the CA in `ca`, presenting `identity` (PEM certificate and key) if
/// given.
pub(crate) fn tls_client(ca: &Path, identity: Option<&[u8]>) -> Client {
    let pem = std::fs::read(ca).unwrap();
    let mut b = Client::builder()
        .timeout(Duration::from_secs(30))
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    if let Some(id) = identity {
        b = b.identity(reqwest::Identity::from_pem(id).unwrap());
    }
    b.build().unwrap()
}

/// A real disk that can be made slow or failing on demand: an ext4 filesystem on a loop device
/// whose image lives on a small tmpfs. `freeze` blocks every write and sync on it
/// (`fsfreeze`, as a stalled disk does); `fill` fills the tmpfs under the image, so the next
/// write that reaches the image fails and `fsync` on the ext4 above returns EIO (a failed
/// disk, as the kernel reports one). Needs root (mount, losetup), as the tests run in CI.
pub(crate) struct LoopDisk {
    base: std::path::PathBuf,
    /// The ext4 mount point.
    pub(crate) mount: std::path::PathBuf,
    mounted: bool,
}

/// Runs `cmd` with `args`; its output, or the test fails with its message.
pub(crate) fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} runs: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl LoopDisk {
    /// `errors` is ext4's behaviour on an I/O error: `remount-ro` (mkfs's default) or
    /// `continue`.
    pub(crate) fn new(dir: &Path, errors: &str) -> Self {
        Self::with_image(dir, errors, 64)
    }

    /// The same with an image of `mib` MiB: under the tmpfs's 24 MiB, the filesystem fills
    /// (ENOSPC) before the device under it does.
    pub(crate) fn with_image(dir: &Path, errors: &str, mib: u64) -> Self {
        let base = dir.join("loopdisk");
        let (backing, mount) = (base.join("backing"), base.join("mnt"));
        std::fs::create_dir_all(&backing).unwrap();
        std::fs::create_dir_all(&mount).unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=24M",
                "tmpfs",
                backing.to_str().unwrap(),
            ],
        );
        let image = backing.join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-e",
                errors,
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                image.to_str().unwrap(),
            ],
        );
        let mut disk = Self {
            base,
            mount,
            mounted: false,
        };
        disk.mount_image();
        disk
    }

    fn mount_image(&mut self) {
        let image = self.base.join("backing/disk.img");
        run(
            "mount",
            &[
                "-o",
                "loop",
                image.to_str().unwrap(),
                self.mount.to_str().unwrap(),
            ],
        );
        self.mounted = true;
    }

    /// Unmounts (every dirty page written or dropped by the kernel) and mounts again: what a
    /// restarted machine reads.
    pub(crate) fn remount(&mut self) {
        run("umount", &[self.mount.to_str().unwrap()]);
        self.mounted = false;
        self.mount_image();
    }

    pub(crate) fn freeze(&self) {
        run("fsfreeze", &["--freeze", self.mount.to_str().unwrap()]);
    }

    pub(crate) fn thaw(&self) {
        run("fsfreeze", &["--unfreeze", self.mount.to_str().unwrap()]);
    }

    /// Fills the tmpfs under the image: the next new block written to the image fails.
    pub(crate) fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.base.join("backing/fill")).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
    }

    pub(crate) fn free(&self) {
        std::fs::remove_file(self.base.join("backing/fill")).unwrap();
    }

    /// Fills the filesystem itself until no block is free: the next write that needs one fails
    /// with ENOSPC.
    pub(crate) fn fill_filesystem(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.mount.join("fill")).unwrap();
        let chunk = vec![0u8; 1 << 16];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    pub(crate) fn free_filesystem(&self) {
        std::fs::remove_file(self.mount.join("fill")).unwrap();
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze")
            .args(["--unfreeze", self.mount.to_str().unwrap()])
            .output();
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mount).output();
        }
        let _ = Command::new("umount")
            .arg(self.base.join("backing"))
            .output();
    }
}
