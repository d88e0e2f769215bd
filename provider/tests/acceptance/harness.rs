//! The gateway on loopback, a packed provider mirror, and Terraform working directories.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use meshguard_bundler::tfmirror::{PackedProvider, ProviderId, pack};
use serde_json::Value;

pub(crate) const ADMIN_TOKEN: &str = "acc-admin-token-7c1e9b2d4a6f8e03";

/// The two Terraform versions the provider supports: the current one and the oldest.
pub(crate) const TERRAFORMS: [&str; 2] = ["terraform", "terraform-1.0.3"];

fn target_dir() -> PathBuf {
    // target/debug/deps/acceptance-<hash> -> target/debug
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_owned()
}

/// The gateway binary, rebuilt if stale (a no-op when `cargo test --workspace` built it).
fn gateway_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "meshguard-gateway",
                "--bin",
                "meshguard-gateway",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building meshguard-gateway failed");
        target_dir().join("meshguard-gateway")
    })
}

/// The provider packed once per test run into a mirror directory.
pub(crate) fn mirror() -> &'static (tempfile::TempDir, PackedProvider) {
    static MIRROR: OnceLock<(tempfile::TempDir, PackedProvider)> = OnceLock::new();
    MIRROR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let id = ProviderId::meshguard(env!("CARGO_PKG_VERSION"), "linux_amd64");
        let packed = pack(
            Path::new(env!("CARGO_BIN_EXE_terraform-provider-meshguard")),
            &id,
            dir.path(),
        )
        .unwrap();
        (dir, packed)
    })
}

pub(crate) struct Gateway {
    child: Child,
    pub(crate) base: String,
    pub(crate) log: PathBuf,
    http: reqwest::blocking::Client,
}

impl Gateway {
    pub(crate) fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[], reqwest::blocking::Client::new())
    }

    /// A gateway with more settings (`env`), checked for readiness with `http`.
    pub(crate) fn start_with(
        dir: &Path,
        env: &[(&str, String)],
        http: reqwest::blocking::Client,
    ) -> Self {
        let log = dir.join("gateway.log");
        let mut child = Command::new(gateway_binary())
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env(
                "JWT_SECRET",
                "acc-jwt-secret-0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            )
            .env("DB_PATH", dir.join("gw/meshguard.db"))
            .env("POLICIES_DIR", dir.join("gw/policies"))
            .env("LOG_LEVEL", "debug")
            // Far above any stall of a loaded machine: outcomes must not depend on load.
            .env("CIRCUIT_BREAKER_MS", "60000")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            let line = lines.next().expect("gateway printed its address").unwrap();
            if let Some(url) = line.strip_prefix("listening on ") {
                break url.to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        let gw = Self {
            child,
            base,
            log,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while gw
            .http
            .get(format!("{}/ready", gw.base))
            .send()
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "gateway never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        gw
    }

    pub(crate) fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("X-Admin-Token", ADMIN_TOKEN)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    }

    pub(crate) fn delete(&self, path: &str) -> u16 {
        self.http
            .delete(format!("{}{path}", self.base))
            .header("X-Admin-Token", ADMIN_TOKEN)
            .send()
            .unwrap()
            .status()
            .as_u16()
    }

    pub(crate) fn patch(&self, path: &str, body: Value) -> u16 {
        self.http
            .patch(format!("{}{path}", self.base))
            .header("X-Admin-Token", ADMIN_TOKEN)
            .json(&body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    }

    /// Names of what the gateway holds: active agents, API policies, alert channels.
    pub(crate) fn names(&self, what: &str) -> Vec<String> {
        let (path, key, field) = match what {
            "agents" => ("/admin/agents", "agents", "name"),
            "policies" => ("/admin/policies", "policies", "name"),
            "channels" => ("/admin/alert-channels", "channels", "type"),
            _ => unreachable!(),
        };
        let (status, body) = self.get(path);
        assert_eq!(status, 200);
        let mut names: Vec<String> = body[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[field].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Terraform working directory bound to one Terraform binary.
pub(crate) struct Workdir {
    pub(crate) dir: PathBuf,
    terraform: &'static str,
    cli_config: PathBuf,
}

/// What a Terraform command printed, and how it exited.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub(crate) fn ok(self) -> Self {
        assert_eq!(self.code, 0, "terraform failed:\n{}", self.all());
        self
    }
}

impl Workdir {
    pub(crate) fn new(dir: &Path, terraform: &'static str) -> Self {
        let dir = dir.join("tf");
        std::fs::create_dir_all(&dir).unwrap();
        let cli_config = dir.join("cli.tfrc");
        std::fs::write(&cli_config, "").unwrap();
        Self {
            dir,
            terraform,
            cli_config,
        }
    }

    pub(crate) fn write(&self, name: &str, text: &str) {
        let path = self.dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let program = which(self.terraform);
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&self.dir)
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("MESHGUARD_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("TF_LOG")
            .env_remove("MESHGUARD_GATEWAY_URL")
            .stdin(Stdio::null());
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        output(self.command(args).output().unwrap())
    }

    /// `terraform init -plugin-dir=MIRROR` inside a network namespace with no interfaces at all:
    /// the provider must install from the mirror alone.
    pub(crate) fn init_offline(&self) -> Run {
        let mirror = mirror().0.path().display().to_string();
        let mut cmd = Command::new("unshare");
        let inner = self.command(&["init", "-no-color", &format!("-plugin-dir={mirror}")]);
        cmd.arg("-n")
            .arg(inner.get_program())
            .args(inner.get_args())
            .current_dir(&self.dir);
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        output(cmd.stdin(Stdio::null()).output().unwrap())
    }
}

fn output(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Finds a Terraform binary: in `$MESHGUARD_TOOLS_DIR/bin` (set by `cargo xtask test`), else on
/// PATH.
pub(crate) fn which(name: &str) -> PathBuf {
    let tools = std::env::var_os("MESHGUARD_TOOLS_DIR").map(|d| PathBuf::from(d).join("bin"));
    tools
        .into_iter()
        .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH; run the tests with `cargo xtask test`, which installs Terraform into .tools/bin"))
}
