//! `cargo xtask demo`: the main job end to end on embedded defaults.
//!
//! Builds the gateway, starts it on 127.0.0.1 with embedded SQLite under `.demo/`, registers an
//! agent, a policy and an alert channel through the admin API (after activating an offline
//! license), asks for an allowed and a denied
//! decision as the agent, shows the change record of those writes, builds signed media of the
//! product, and ends with the site installed from it (`site.rs`); says where everything is.
//!
//! [`run`] is the list of the demo's numbered steps; each step is a function in the file of its
//! phase, prints what it shows and fails, naming what went wrong, when the product does not do
//! what the demo says it does.

mod admin;
mod audit;
mod decisions;
mod gateway;
mod media;
mod quickstart;
mod site;
mod vendor;
mod witness;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::root;
use crate::tools::Tools;

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Keep the gateway running after the walkthrough, until Ctrl-C.
    #[arg(long)]
    serve: bool,
    /// Where the demo keeps its data (emptied first).
    #[arg(long, default_value = ".demo")]
    dir: PathBuf,
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<()> {
    let demo = Demo::prepare(&args.dir)?;
    let vendor = vendor::Vendor::issue_license(&demo)?;
    let witness = witness::Witness::init(&demo)?;
    let upstream = gateway::start_upstream(&demo)?;
    let gateway = gateway::start(&demo, &upstream, &witness)?;
    vendor.activate(&gateway.api)?;
    let agent_token = admin::register_agent(&gateway.api)?;
    admin::add_policy(&gateway.api)?;
    let receiver = admin::add_alert_channel(&gateway.api)?;
    decisions::check(&gateway.api, &agent_token, &receiver)?;
    admin::show_changes(&gateway.api)?;
    media::create(&demo)?;
    media::verify_and_import(&demo)?;
    quickstart::apply(&demo, &gateway, &receiver)?;
    let checkpoint = audit::show_trail(&gateway.api)?;
    witness.cosign(&gateway.api, &checkpoint)?;
    let site = site::install(&demo)?;
    print_summary(&demo, &gateway, &upstream, &site);
    if args.serve {
        serve_forever();
    }
    drop(gateway);
    drop(site);
    println!("\ngateway and site stopped; run `cargo xtask demo --serve` to keep them running");
    Ok(())
}

/// The demo's directory, the tools it drives, the product binaries it runs and the admin token;
/// every path under the directory is named here once.
struct Demo {
    dir: PathBuf,
    tools: Tools,
    bins: PathBuf,
    admin_token: String,
}

impl Demo {
    /// Step 1: installs what is missing, builds the product and empties the demo's directory.
    fn prepare(dir: &Path) -> anyhow::Result<Demo> {
        let dir = if dir.is_absolute() {
            dir.to_owned()
        } else {
            root().join(dir)
        };
        step(
            "installing what is missing (Debian tools, Terraform, helm, verifiers) and building the gateway, licensing and media tools",
        );
        let tools = crate::tools::install_all()?;
        let bins = crate::build_binaries(false)?;
        empty(&dir)?;
        let demo = Demo {
            dir,
            tools,
            bins,
            admin_token: format!("msat_{}", random_hex(24)?),
        };
        demo.lay_out_files()?;
        Ok(demo)
    }

    /// The file policies and the admin token, which the gateway starts from.
    fn lay_out_files(&self) -> anyhow::Result<()> {
        let policies = self.policies_dir();
        fs::create_dir_all(&policies)
            .with_context(|| format!("cannot create {}", policies.display()))?;
        let baseline = root().join("examples/policies/baseline.yaml");
        fs::copy(&baseline, policies.join("baseline.yaml")).with_context(|| {
            format!(
                "cannot copy {} into {}; is the checkout complete?",
                baseline.display(),
                policies.display()
            )
        })?;
        write_private(&self.admin_token_file(), &self.admin_token)
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bins.join(name)
    }

    fn policies_dir(&self) -> PathBuf {
        self.dir.join("policies")
    }

    fn admin_token_file(&self) -> PathBuf {
        self.dir.join("admin-token")
    }

    fn db(&self) -> PathBuf {
        self.dir.join("data/meshguard.db")
    }

    fn gateway_log(&self) -> PathBuf {
        self.dir.join("gateway.log")
    }

    fn vendor_dir(&self) -> PathBuf {
        self.dir.join("vendor")
    }

    fn witness_dir(&self) -> PathBuf {
        self.dir.join("witness")
    }

    fn media_dir(&self) -> PathBuf {
        self.dir.join("media")
    }

    fn mirror(&self) -> PathBuf {
        self.dir.join("site/terraform-mirror")
    }

    fn quickstart_dir(&self) -> PathBuf {
        self.dir.join("quickstart")
    }
}

/// Empties `dir`, an earlier demo's site (pods, volume, secret) first.
fn empty(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let site = dir.join("site-install");
        site::down(&site, &site.join("containers.conf"));
        fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    Ok(())
}

fn print_summary(
    demo: &Demo,
    gateway: &gateway::Gateway,
    upstream: &gateway::Upstream,
    site: &site::Site,
) {
    let base = &gateway.api.base;
    let dir = &demo.dir;
    println!("\nWhat the demo did and where the data lives:");
    println!(
        "  gateway        {base}  (binary {})",
        gateway.binary.display()
    );
    println!("  database       {}  (SQLite, WAL)", demo.db().display());
    println!("  file policies  {}", demo.policies_dir().display());
    println!(
        "  admin token    {}  (mode 0600)",
        demo.admin_token_file().display()
    );
    println!("  gateway log    {}", demo.gateway_log().display());
    println!(
        "  upstream       {}  (python3 -m http.server on {})",
        upstream.url,
        upstream.root.display()
    );
    println!(
        "  audit key      {}  (Ed25519, signs checkpoints)",
        dir.join("data/audit-log.key").display()
    );
    println!(
        "  license        {}  (vendor key, license, request, activation)",
        demo.vendor_dir().display()
    );
    println!(
        "  media          {}  (signed; verification transcript in media-verification.txt)",
        demo.media_dir().display()
    );
    println!(
        "  witness        {}  (its key, state, request.txt and response.txt)",
        demo.witness_dir().display()
    );
    println!(
        "  provider       {}  (imported mirror)",
        demo.mirror().display()
    );
    println!(
        "  terraform      {}  (state in terraform.tfstate)",
        demo.quickstart_dir().display()
    );
    println!(
        "  with --serve   curl -H \"X-Admin-Token: $(cat {})\" {base}/admin/agents",
        demo.admin_token_file().display()
    );
    println!(
        "  site install   {}  (podman, from the media; transcript {})",
        site.url,
        site.transcript.display()
    );
}

fn serve_forever() -> ! {
    println!("\nserving until Ctrl-C");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A child process the demo started, stopped when dropped.
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM first so the gateway shuts down cleanly; kill if it does not.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Prints the next numbered step.
fn step(text: &str) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    println!("\n[{n}] {text}");
}

/// Runs a command that must succeed and prints what it said, indented under the step.
fn run_indented(cmd: &mut Command) -> anyhow::Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    for line in text.lines() {
        println!("    {line}");
    }
    if !out.status.success() {
        bail!("{program} failed ({})", out.status);
    }
    Ok(())
}

pub(crate) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
