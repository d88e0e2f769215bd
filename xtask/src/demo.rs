//! `cargo xtask demo`: the main job end to end on embedded defaults.
//!
//! Builds the gateway, starts it on 127.0.0.1 with embedded SQLite under `.demo/`, registers an
//! agent, a policy and an alert channel through the admin API (after activating an offline
//! license), asks for an allowed and a denied
//! decision as the agent, shows the change record of those writes, builds signed media of the
//! product, and ends with the site installed from it (`demo_site.rs`); says where everything is.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{Value, json};

use crate::root;

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Keep the gateway running after the walkthrough, until Ctrl-C.
    #[arg(long)]
    serve: bool,
    /// Where the demo keeps its data (emptied first).
    #[arg(long, default_value = ".demo")]
    dir: PathBuf,
}

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

struct Api {
    client: Client,
    base: String,
    token: String,
}

impl Api {
    fn admin(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("X-Admin-Token", &self.token)
    }

    fn send(&self, req: RequestBuilder, expect: u16) -> anyhow::Result<Value> {
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
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = if args.dir.is_absolute() {
        args.dir.clone()
    } else {
        root().join(&args.dir)
    };

    step(
        "installing what is missing (Debian tools, Terraform, helm, verifiers) and building the gateway, licensing and media tools",
    );
    let tools = crate::tools::install_all()?;
    let bins = crate::build_binaries(false)?;
    let binary = bins.join("meshguard-gateway");
    let license_tool = bins.join("meshguard-license");

    if dir.exists() {
        // An earlier demo's site (pods, volume, secret) goes first.
        let site = dir.join("site-install");
        crate::demo_site::down(&site, &site.join("containers.conf"));
        fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    let policies_dir = dir.join("policies");
    fs::create_dir_all(&policies_dir)?;
    fs::copy(
        root().join("examples/policies/baseline.yaml"),
        policies_dir.join("baseline.yaml"),
    )?;
    let admin_token = format!("msat_{}", random_hex(24)?);
    write_private(&dir.join("admin-token"), &admin_token)?;
    let db = dir.join("data/meshguard.db");
    step("the vendor's side of licensing: a signing key (encrypted at rest) and a license");
    let vendor = dir.join("vendor");
    fs::create_dir_all(&vendor)?;
    // The key's passphrase goes in a file, never on a command line or in the environment of
    // a command whose description an error message might print.
    write_private(&vendor.join("passphrase"), &random_hex(16)?)?;
    let license_cmd = |args: &[&str]| {
        let mut c = Command::new(&license_tool);
        c.args(args).current_dir(&dir);
        if ["keys", "issue", "activate", "renew"].contains(&args[0]) {
            c.args(["--passphrase-file", "vendor/passphrase"]);
        }
        c
    };
    run_indented(&mut license_cmd(&[
        "keys",
        "generate",
        "--secret",
        "vendor/vendor.key",
        "--public",
        "vendor/vendor.pub",
    ]))?;
    run_indented(&mut license_cmd(&[
        "issue",
        "--key",
        "vendor/vendor.key",
        "--customer",
        "Demo Site",
        "--mode",
        "air-gapped",
        "--region",
        "local",
        "--max-agents",
        "25",
        "--valid-for",
        "365d",
        "--out",
        "vendor/demo.license",
    ]))?;

    step(
        "a site witness on its own key (meshguard-witness init), which the gateway is told to trust",
    );
    let witness_tool = bins.join("meshguard-witness");
    let witness_dir = dir.join("witness");
    fs::create_dir_all(&witness_dir)?;
    write_private(&witness_dir.join("passphrase"), &random_hex(16)?)?;
    let witness = |args: &[&str]| -> anyhow::Result<(bool, String)> {
        let out = Command::new(&witness_tool)
            .arg("--state")
            .arg(&witness_dir)
            .arg("--passphrase-file")
            .arg(witness_dir.join("passphrase"))
            .args(args)
            .output()
            .context("cannot run meshguard-witness")?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    };
    let (ok, witness_vkey) = witness(&["init", "--name", "witness.demo.local/w1"])?;
    if !ok {
        bail!("meshguard-witness init failed: {witness_vkey}");
    }
    let witness_vkey = witness_vkey.trim().to_owned();
    println!("    witness key {witness_vkey}");

    step("starting an upstream service and the gateway in front of it, on 127.0.0.1");
    // A real upstream: Python's http.server serving .demo/upstream (the repos API of the story).
    let upstream_root = dir.join("upstream/api/repos");
    fs::create_dir_all(&upstream_root)?;
    fs::write(
        upstream_root.join("meshguard"),
        "{\"name\": \"meshguard\", \"stars\": 42}\n",
    )?;
    let mut upstream_child = Command::new("python3")
        .args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir.join("upstream"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start python3 -m http.server as the demo upstream")?;
    let upstream_url = {
        let out = upstream_child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        let port = line
            .split("port ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .context("http.server did not print its port")?
            .to_owned();
        format!("http://127.0.0.1:{port}")
    };
    let _upstream = Running {
        child: upstream_child,
    };
    let mut child = Command::new(&binary)
        .env("PROXY_TARGET", &upstream_url)
        .env("HOST", "127.0.0.1")
        .env("PORT", std::env::var("PORT").unwrap_or_else(|_| "0".into()))
        .env("ADMIN_TOKEN", &admin_token)
        .env("JWT_SECRET", random_hex(32)?)
        .env("DB_PATH", &db)
        .env("POLICIES_DIR", &policies_dir)
        .env("LICENSE_PUBKEY", vendor.join("vendor.pub"))
        .env("DEPLOYMENT_MODE", "air-gapped")
        .env("REGION", "local")
        .env("AUDIT_WITNESSES", &witness_vkey)
        // The demo's alert receiver runs on loopback, which alerts go to only when allowed.
        .env("ALERT_DESTINATIONS_ALLOWED", "127.0.0.1")
        .env("LOG_LEVEL", "error")
        .stdout(Stdio::piped())
        .stderr(fs::File::create(dir.join("gateway.log"))?)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let running = Running { child };
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
                dir.join("gateway.log").display()
            ),
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let api = Api {
        client: Client::builder().timeout(Duration::from_secs(10)).build()?,
        base: base.clone(),
        token: admin_token.clone(),
    };
    wait_ready(&api)?;
    println!(
        "    gateway at {base} (mode enforce), database {}",
        db.display()
    );

    step(
        "activating an offline license (meshguard-license request / activate, POST /admin/license)",
    );
    let before = api.send(api.admin(reqwest::Method::GET, "/admin/license"), 200)?;
    println!(
        "    before: {} (admin writes allowed: {})",
        before["state"].as_str().unwrap_or("?"),
        before["adminWritesAllowed"]
    );
    let license_dir = dir.join("data/license");
    let license_dir = license_dir.to_str().context("the demo path is not UTF-8")?;
    run_indented(&mut license_cmd(&[
        "request",
        "--data-dir",
        license_dir,
        "--pubkey",
        "vendor/vendor.pub",
        "--license",
        "vendor/demo.license",
        "--mode",
        "air-gapped",
        "--region",
        "local",
        "--out",
        "vendor/request.json",
    ]))?;
    run_indented(&mut license_cmd(&[
        "activate",
        "--key",
        "vendor/vendor.key",
        "--license",
        "vendor/demo.license",
        "--request",
        "vendor/request.json",
        "--out",
        "vendor/activation.json",
    ]))?;
    let read = |name: &str| -> anyhow::Result<Value> {
        Ok(serde_json::from_slice(&fs::read(vendor.join(name))?)?)
    };
    let installed = api.send(
        api.admin(reqwest::Method::POST, "/admin/license")
            .json(&json!({
                "license": read("demo.license")?, "activation": read("activation.json")?
            })),
        200,
    )?;
    let lic = &installed["license"];
    println!(
        "    {}: {} ({} agents, installation {}); enforcement never depends on it",
        installed["result"].as_str().unwrap_or("?"),
        lic["message"].as_str().unwrap_or("?"),
        lic["maxAgents"],
        lic["installationId"].as_str().unwrap_or("?")
    );

    step("registering an agent (POST /admin/agents)");
    let agent = api.send(
        api.admin(reqwest::Method::POST, "/admin/agents")
            .json(&json!({
                "name": "code-reviewer", "trustTier": "verified", "tags": ["ci", "code-review"],
                "metadata": {"team": "platform"}
            })),
        201,
    )?;
    let agent_id = agent["id"].as_str().unwrap_or_default().to_owned();
    let agent_token = agent["token"].as_str().unwrap_or_default().to_owned();
    println!(
        "    agent {agent_id} ({}), token issued (shown once, kept in memory only)",
        agent["trustTier"]
    );

    step("adding a policy with an approver and a change ticket (POST /admin/policies)");
    let content = fs::read_to_string(root().join("examples/policies/code-review.yaml"))?;
    let policy = api.send(
        api.admin(reqwest::Method::POST, "/admin/policies")
            .header("X-MeshGuard-Approver", "alice@example.com")
            .header("X-MeshGuard-Change-Ticket", "CHG-1001")
            .json(&json!({"name": "code-review-policy", "content": content})),
        201,
    )?;
    println!(
        "    policy {} ({}), {} rules, digest {}",
        policy["id"],
        policy["name"],
        policy["rules"].as_array().map_or(0, Vec::len),
        policy["digest"]
    );

    step(
        "adding an alert channel with a write-only secret (POST /admin/alert-channels), to a receiver on 127.0.0.1 that checks the signature",
    );
    // A real receiver on loopback (the one the gateway's alerting tests use): it records every
    // alert and checks X-MeshGuard-Signature with Python's hmac. Nothing leaves the machine.
    let webhook_secret = random_hex(16)?;
    let mut receiver_child = Command::new("python3")
        .arg(root().join("gateway/tests/it/support/receiver.py"))
        .arg(&webhook_secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the alert receiver (python3)")?;
    let receiver_url = {
        let out = receiver_child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        format!("http://127.0.0.1:{}", line.trim())
    };
    let _receiver = Running {
        child: receiver_child,
    };
    let channel = api.send(
        api.admin(reqwest::Method::POST, "/admin/alert-channels").json(&json!({
            "type": "webhook", "endpoint": format!("{receiver_url}/meshguard"),
            "severity": "warning", "triggers": ["deny", "rate_limit"], "webhookSecret": webhook_secret
        })),
        201,
    )?;
    println!(
        "    channel {} ({}), webhookSecretSet={}",
        channel["id"], channel["type"], channel["webhookSecretSet"]
    );

    step("asking for decisions as the agent (GET /proxy/check)");
    // What examples/policies/code-review.yaml decides for its agent; the demo fails if the
    // gateway answers otherwise.
    let mut differences = Vec::new();
    for (action, want) in [
        ("read:api/repos/meshguard", 200),
        ("delete:prod/customers", 403),
        ("write:api/repos/meshguard/settings", 403),
    ] {
        let resp = api
            .client
            .get(format!("{base}/proxy/check"))
            .bearer_auth(&agent_token)
            .header("X-MeshGuard-Action", action)
            .send()?;
        let status = resp.status().as_u16();
        let body: Value = resp.json()?;
        println!(
            "    {action:<38} -> {status} {:<5} policy={} rule={} ({})",
            body["decision"].as_str().unwrap_or("?"),
            body["policy"].as_str().unwrap_or("-"),
            body["rule"].as_str().unwrap_or("-"),
            body["reason"].as_str().unwrap_or("")
        );
        if status != want {
            differences.push(format!(
                "GET /proxy/check {action}: {status}, expected {want}"
            ));
        }
    }

    step("calls through the gateway to the upstream (ALL /proxy/*)");
    for (method, want, want_decision) in [
        (reqwest::Method::GET, 200, "allow"),
        (reqwest::Method::DELETE, 403, "deny"),
    ] {
        let path = "/proxy/api/repos/meshguard";
        let resp = api
            .client
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(&agent_token)
            .send()?;
        let status = resp.status().as_u16();
        let decision = resp
            .headers()
            .get("x-meshguard-decision")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        let text = resp.text()?;
        // A refusal is the gateway's JSON: show what it says, whole; an upstream's answer as it came.
        let shown = match serde_json::from_str::<Value>(&text) {
            Ok(v) if v.get("decision").is_some() => format!(
                "decision={} policy={} rule={} reason: {}",
                v["decision"].as_str().unwrap_or("?"),
                v["policy"].as_str().unwrap_or("-"),
                v["rule"].as_str().unwrap_or("-"),
                v["reason"].as_str().unwrap_or("-")
            ),
            _ => text.trim().to_owned(),
        };
        println!("    {method:<6} {path} -> {status} (X-MeshGuard-Decision: {decision}) {shown}");
        if status != want || decision != want_decision {
            differences.push(format!(
                "{method} {path}: {status} {decision}, expected {want} {want_decision}"
            ));
        }
    }
    if !differences.is_empty() {
        bail!(
            "the gateway did not decide as the demo's policy says: {}",
            differences.join("; ")
        );
    }

    // The deny above raised an alert: show what the receiver got, and that it was signed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let received: Vec<Value> = loop {
        let got: Vec<Value> = api
            .client
            .get(format!("{receiver_url}/received"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_default();
        if !got.is_empty() || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    match received.first() {
        Some(a) => println!(
            "    alert delivered to {receiver_url}: trigger={} event={} signature valid={} ({} alert(s))",
            a["trigger"].as_str().unwrap_or("?"),
            a["event"].as_str().unwrap_or("?"),
            a["signatureValid"],
            received.len()
        ),
        None => bail!("the deny raised no alert at the receiver within 10 s"),
    }
    if received
        .iter()
        .any(|a| a["signatureValid"] != Value::Bool(true))
    {
        bail!("an alert reached the receiver with a bad signature: {received:?}");
    }

    step("the change record of those writes (GET /admin/changes)");
    let changes = api.send(api.admin(reqwest::Method::GET, "/admin/changes"), 200)?;
    for c in changes["changes"].as_array().into_iter().flatten() {
        println!(
            "    #{} {} {} {} {} approver={} ticket={} digest={}",
            c["seq"],
            c["timestamp"].as_str().unwrap_or(""),
            c["operation"].as_str().unwrap_or(""),
            c["kind"].as_str().unwrap_or(""),
            c["objectId"].as_str().unwrap_or(""),
            c["approver"].as_str().unwrap_or("-"),
            c["changeTicket"].as_str().unwrap_or("-"),
            c["newDigest"]
                .as_str()
                .map_or("-", |d| &d[..d.len().min(19)])
        );
    }

    step(
        "offline media: the product images (cargo xtask images), the chart, the provider, modules, policies and the license, signed (meshguard-bundle create)",
    );
    let provider = bins.join("terraform-provider-meshguard");
    let bundle_tool = bins.join("meshguard-bundle");
    let src = dir.join("media-src");
    let layout = src.join("layout");
    // The product's own images (meshguard/gateway, meshguard/tools) from the binaries built in
    // step 1.
    fs::create_dir_all(&src)?;
    run_indented(&mut crate::images::images_command(
        &bins,
        &layout,
        "meshguard",
    )?)?;
    let r = root().display().to_string();
    // The egress allowlist the site's egress proxy enforces (the install's egress smoke test
    // needs the proxy running): the one destination a disconnected site's agents may reach.
    fs::write(
        src.join("egress.json"),
        r#"{"format": "meshguard-egress-allowlist/v1", "version": 1, "destinations": [{"host": "records.site.internal", "ports": [443], "region": "local"}]}"#,
    )?;
    fs::write(
        src.join("media.yaml"),
        format!(
            "schema: meshguard.media/v1
product: meshguard
version: {v}
profile: air-gapped
images:
  - ref: meshguard/gateway:{v}
    from: oci:layout:meshguard/gateway:{v}
  - ref: meshguard/tools:{v}
    from: oci:layout:meshguard/tools:{v}
chart: {r}/helm/meshguard-gateway
terraform:
  provider:
    version: {v}
    binaries: {{linux_amd64: {provider}}}
  modules: {r}/modules
policies: {r}/examples/policies
egress: {egress}
license: {{file: {lic}}}
sbom: {{workspace: {r}, binaries: [meshguard-gateway, terraform-provider-meshguard]}}
{source}",
            v = env!("CARGO_PKG_VERSION"),
            lic = vendor.join("demo.license").display(),
            egress = src.join("egress.json").display(),
            provider = provider.display(),
            source = crate::images::git(&["rev-parse", "HEAD"])
                .map(|rev| format!(
                    "source: {{repository: {}, revision: {rev}}}\n",
                    env!("CARGO_PKG_REPOSITORY")
                ))
                .unwrap_or_default()
        ),
    )?;
    let bundle_cmd = |args: &[&str]| {
        let mut c = Command::new(&bundle_tool);
        c.args(args)
            .current_dir(&dir)
            .env_remove("SOURCE_DATE_EPOCH");
        if ["keys", "create"].contains(&args[0]) {
            c.args(["--passphrase-file", "vendor/passphrase"]);
        }
        c
    };
    run_indented(&mut bundle_cmd(&[
        "keys",
        "generate",
        "--secret",
        "vendor/media.key",
        "--public",
        "vendor/media.pub",
    ]))?;
    run_indented(&mut bundle_cmd(&[
        "create",
        "--manifest",
        "media-src/media.yaml",
        "--out",
        "media",
        "--key",
        "vendor/media.key",
    ]))?;

    step(
        "verifying the media with no network (meshguard-bundle verify), then importing it into .demo/site",
    );
    run_indented(&mut bundle_cmd(&[
        "verify",
        "media",
        "--pubkey",
        "vendor/media.pub",
        "--license-pubkey",
        "vendor/vendor.pub",
        "--transcript",
        "media-verification",
    ]))?;
    let out = bundle_cmd(&[
        "import",
        "media",
        "--pubkey",
        "vendor/media.pub",
        "--dest",
        "site",
        "--terraform-mirror",
        "site/terraform-mirror",
    ])
    .output()
    .context("cannot run meshguard-bundle import")?;
    if !out.status.success() {
        bail!("import failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let receipt: Value = serde_json::from_slice(&out.stdout)?;
    println!(
        "    imported {} {}: images {} into site/images (OCI layout), provider into site/terraform-mirror, {} files",
        receipt["product"].as_str().unwrap_or("?"),
        receipt["version"].as_str().unwrap_or("?"),
        receipt["images"],
        receipt["files"].as_array().map_or(0, Vec::len)
    );
    let mirror = dir.join("site/terraform-mirror");

    step("terraform init from the imported mirror (no registry) and apply of examples/quickstart");
    let work = dir.join("quickstart");
    fs::create_dir_all(&work)?;
    for name in ["main.tf", "release-policy.yaml"] {
        fs::copy(
            root().join("examples/quickstart").join(name),
            work.join(name),
        )?;
    }
    let cli_config = dir.join("terraform.rc");
    fs::write(&cli_config, "")?;
    let terraform = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(tools.bin.join("terraform"))
            .args(args)
            .current_dir(&work)
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_CLI_CONFIG_FILE", &cli_config)
            .env("TF_IN_AUTOMATION", "1")
            .env("MESHGUARD_GATEWAY_URL", &base)
            .env("MESHGUARD_ADMIN_TOKEN", &admin_token)
            .output()
            .context("cannot run terraform")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "terraform {} failed:\n{text}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    };
    terraform(&[
        "init",
        "-no-color",
        &format!("-plugin-dir={}", mirror.display()),
    ])?;
    let alert_var = format!("alert_endpoint={receiver_url}/ops");
    let applied = terraform(&["apply", "-auto-approve", "-no-color", "-var", &alert_var])?;
    for line in applied
        .lines()
        .filter(|l| l.contains("Creation complete") || l.starts_with("Apply complete"))
    {
        println!("    {line}");
    }
    let outputs = terraform(&["output", "-no-color"])?;
    for line in outputs.lines() {
        println!("    {line}");
    }
    let plan = Command::new(tools.bin.join("terraform"))
        .args([
            "plan",
            "-detailed-exitcode",
            "-no-color",
            "-var",
            &alert_var,
        ])
        .current_dir(&work)
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_CLI_CONFIG_FILE", &cli_config)
        .env("MESHGUARD_GATEWAY_URL", &base)
        .env("MESHGUARD_ADMIN_TOKEN", &admin_token)
        .output()?;
    println!(
        "    second plan: {}",
        if plan.status.code() == Some(0) {
            "no changes (exit 0)"
        } else {
            "CHANGES PENDING"
        }
    );
    if plan.status.code() != Some(0) {
        bail!(
            "the second plan of the quickstart is not empty:\n{}",
            String::from_utf8_lossy(&plan.stdout)
        );
    }

    step("the audit trail: every decision above, hash-chained, checkpoint signed, verified");
    let cp = api.send(
        api.admin(reqwest::Method::POST, "/admin/audit/checkpoint"),
        200,
    )?;
    let report = api.send(api.admin(reqwest::Method::GET, "/admin/audit/verify"), 200)?;
    let recent = api.send(
        api.admin(reqwest::Method::GET, "/admin/audit?limit=100"),
        200,
    )?;
    for e in recent["entries"].as_array().into_iter().flatten().rev() {
        println!(
            "    #{:<3} {:<10} {:<40} {:<5} {}",
            e["seq"],
            e["event"].as_str().unwrap_or(""),
            e["action"].as_str().unwrap_or(""),
            e["decision"].as_str().unwrap_or(""),
            e["hash"].as_str().map_or("", |h| &h[..16])
        );
    }
    let note = cp["checkpoint"].as_str().unwrap_or_default();
    println!(
        "    signed checkpoint (C2SP note; verifier key {}):",
        cp["vkey"].as_str().unwrap_or("?")
    );
    for line in note.lines() {
        println!("      {line}");
    }
    println!(
        "    /admin/audit/verify: valid={} entries={} checkpoints={}",
        report["valid"], report["entries"], report["checkpoints"]
    );
    if report["valid"] != serde_json::Value::Bool(true) {
        bail!("the audit log did not verify: {report}");
    }

    step(
        "the witness cosigns that checkpoint across the gap (tlog-witness request and response as files), and the gateway keeps the cosignature",
    );
    let (ok, out) = witness(&["trust", cp["vkey"].as_str().unwrap_or_default()])?;
    if !ok {
        bail!("meshguard-witness trust failed: {out}");
    }
    let request = api
        .admin(
            reqwest::Method::GET,
            "/admin/audit/consistency?from=0&format=tlog-witness",
        )
        .send()?
        .text()?;
    fs::write(witness_dir.join("request.txt"), &request)?;
    let (ok, out) = witness(&[
        "cosign",
        witness_dir.join("request.txt").to_str().unwrap_or_default(),
        "--out",
        witness_dir
            .join("response.txt")
            .to_str()
            .unwrap_or_default(),
    ])?;
    if !ok {
        bail!("the witness refused: {out}");
    }
    let response = fs::read_to_string(witness_dir.join("response.txt"))?;
    println!("    {}", response.trim());
    api.send(
        api.admin(reqwest::Method::POST, "/admin/audit/cosignatures")
            .body(response),
        200,
    )?;
    let report = api.send(api.admin(reqwest::Method::GET, "/admin/audit/verify"), 200)?;
    println!(
        "    /admin/audit/verify: valid={} witnessed up to size {} (quorum {})",
        report["valid"], report["witnesses"]["latestWitnessedSize"], report["witnesses"]["quorum"]
    );
    if report["witnesses"]["latestWitnessedSize"].is_null() {
        bail!("the cosigned checkpoint is not reported as witnessed: {report}");
    }

    step(
        "the site installs MeshGuard from the media with one command (meshguard-bundle install): verify, import into a registry on loopback, podman runs the chart, Terraform bootstrap from the imported mirror, smoke tests, a signed transcript",
    );
    let site = crate::demo_site::install(&dir, &tools.bin, &bundle_tool, &license_tool)?;

    println!("\nWhat the demo did and where the data lives:");
    println!("  gateway        {base}  (binary {})", binary.display());
    println!("  database       {}  (SQLite, WAL)", db.display());
    println!("  file policies  {}", policies_dir.display());
    println!(
        "  admin token    {}  (mode 0600)",
        dir.join("admin-token").display()
    );
    println!("  gateway log    {}", dir.join("gateway.log").display());
    println!(
        "  upstream       {upstream_url}  (python3 -m http.server on {})",
        dir.join("upstream").display()
    );
    println!(
        "  audit key      {}  (Ed25519, signs checkpoints)",
        dir.join("data/audit-log.key").display()
    );
    println!(
        "  license        {}  (vendor key, license, request, activation)",
        vendor.display()
    );
    println!(
        "  media          {}  (signed; verification transcript in media-verification.txt)",
        dir.join("media").display()
    );
    println!(
        "  witness        {}  (its key, state, request.txt and response.txt)",
        witness_dir.display()
    );
    println!("  provider       {}  (imported mirror)", mirror.display());
    println!(
        "  terraform      {}  (state in terraform.tfstate)",
        work.display()
    );
    println!(
        "  with --serve   curl -H \"X-Admin-Token: $(cat {})\" {base}/admin/agents",
        dir.join("admin-token").display()
    );
    println!(
        "  site install   {}  (podman, from the media; transcript {})",
        site.url,
        site.transcript.display()
    );
    if args.serve {
        println!("\nserving until Ctrl-C");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    drop(running);
    drop(site);
    println!("\ngateway and site stopped; run `cargo xtask demo --serve` to keep them running");
    Ok(())
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

fn wait_ready(api: &Api) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = api.client.get(format!("{}/ready", api.base)).send()
            && r.status().is_success()
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the gateway did not become ready within 30 s")
}

pub(crate) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}
