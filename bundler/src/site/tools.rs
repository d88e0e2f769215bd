//! The site's own tools, driven as a site admin would run them: helm renders the chart, podman
//! runs it, terraform applies the bootstrap. Each is found on PATH (or MESHGUARD_HELM,
//! MESHGUARD_PODMAN, MESHGUARD_TERRAFORM); podman reads its own configuration (CONTAINERS_CONF).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context as _, Result, bail};

/// A tool by name: the MESHGUARD_<NAME> variable, else PATH.
pub fn find(name: &str) -> Result<PathBuf> {
    let var = format!("MESHGUARD_{}", name.to_ascii_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "{name} is not installed (not on PATH and {var} is not set); the site install needs helm, podman and terraform"
    )
}

/// Runs a command; fails with what it printed, which never holds a secret (secrets reach
/// tools through files and environment variables only).
pub fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = output(cmd, what)?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn output(cmd: &mut Command, what: &str) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("cannot run {what} ({:?})", cmd.get_program()))
}

#[derive(Debug)]
pub struct Podman {
    bin: PathBuf,
    /// `--authfile` and `--cert-dir` for pulls from the site registry.
    pull_args: Vec<String>,
}

impl Podman {
    pub fn find() -> Result<Self> {
        Ok(Self {
            bin: find("podman")?,
            pull_args: Vec::new(),
        })
    }

    /// Pulls from `registry` with its credentials and CAs (`--authfile`, `--cert-dir`).
    pub fn pulling_from(
        mut self,
        registry: &super::config::Registry,
        state_dir: &Path,
    ) -> Result<Self> {
        self.pull_args = registry.podman_args(state_dir)?;
        Ok(self)
    }

    fn cmd(&self) -> Command {
        Command::new(&self.bin)
    }

    /// `podman kube play` of a rendered manifest, pulling from the site registry; returns the
    /// ids of the containers it started (it prints them under "Container:").
    pub fn play(&self, manifest: &Path, tls_verify: bool) -> Result<Vec<String>> {
        let out = run(
            self.cmd()
                .args(["kube", "play", &format!("--tls-verify={tls_verify}")])
                .args(&self.pull_args)
                .arg(manifest),
            "podman kube play",
        )?;
        let mut ids = Vec::new();
        let mut in_containers = false;
        for line in out.lines().map(str::trim) {
            match line {
                "Container:" | "Containers:" => in_containers = true,
                l if l.ends_with(':') => in_containers = false,
                l if in_containers && l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    ids.push(l.to_owned())
                }
                _ => {}
            }
        }
        Ok(ids)
    }

    /// Whether one of `ids` has exited or been restarted (a gateway that stops while it
    /// starts will not answer): the container, its state and the end of its log.
    pub fn crashed(&self, ids: &[String]) -> Option<String> {
        for id in ids {
            let Ok(out) = self
                .cmd()
                .args([
                    "inspect",
                    "--format",
                    "{{.Name}} {{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}",
                    id,
                ])
                .output()
            else {
                continue;
            };
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut f = text.split_whitespace();
            let (Some(name), Some(status), Some(restarts)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            // An init container (the sidecar's bundle check) is done when it exits 0.
            if name.ends_with("-guardian-verify-bundle")
                && status == "exited"
                && f.next() == Some("0")
            {
                continue;
            }
            if status == "exited" || restarts != "0" {
                let logs = self
                    .cmd()
                    .args(["logs", "--tail", "5", id])
                    .output()
                    .map(|o| {
                        format!(
                            "{}{}",
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        )
                    })
                    .unwrap_or_default();
                return Some(format!(
                    "container {name} {status} (restarts: {restarts}); its last log lines:\n{}",
                    logs.trim_end()
                ));
            }
        }
        None
    }

    /// `podman kube down`: stops and removes the pods of a manifest (volumes stay).
    /// `podman kube down`, tried three times: podman 4.3 sometimes fails to remove a container
    /// it has just stopped (`unlinkat …/shm: device or resource busy`); a second run removes
    /// what the first left, and one that finds nothing left to remove has succeeded.
    pub fn down(&self, manifest: &Path) -> Result<()> {
        let mut last = None;
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            match run(
                self.cmd().args(["kube", "down"]).arg(manifest),
                "podman kube down",
            ) {
                Ok(_) => return Ok(()),
                Err(e) if attempt > 0 && format!("{e:#}").contains("no such pod") => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("three attempts failed"))
    }

    pub fn exists(&self, kind: &str, name: &str) -> bool {
        self.cmd()
            .args([kind, "exists", name])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Whether a secret of that name exists (podman has no `secret exists` before 4.5).
    pub fn secret_exists(&self, name: &str) -> bool {
        self.cmd()
            .args(["secret", "inspect", name])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Where the volume's files are on this machine.
    pub fn volume_mountpoint(&self, name: &str) -> Result<std::path::PathBuf> {
        let out = run(
            self.cmd()
                .args(["volume", "inspect", "--format", "{{.Mountpoint}}", name]),
            "podman volume inspect",
        )?;
        Ok(std::path::PathBuf::from(out.trim()))
    }

    pub fn volume_create(&self, name: &str) -> Result<()> {
        run(
            self.cmd().args(["volume", "create", name]),
            "podman volume create",
        )?;
        Ok(())
    }

    pub fn volume_rm(&self, name: &str) -> Result<()> {
        run(
            self.cmd().args(["volume", "rm", "-f", name]),
            "podman volume rm",
        )?;
        Ok(())
    }

    pub fn secret_rm(&self, name: &str) -> Result<()> {
        run(self.cmd().args(["secret", "rm", name]), "podman secret rm")?;
        Ok(())
    }

    /// A Kubernetes-style Secret for `kube play`: a JSON object of base64 values, from a file
    /// (mode 0600, removed by the caller).
    pub fn secret_create(&self, name: &str, file: &Path) -> Result<()> {
        run(
            self.cmd().args(["secret", "create", name]).arg(file),
            "podman secret create",
        )?;
        Ok(())
    }
}
