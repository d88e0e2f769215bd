//! The chart's non-default features run (issue #34), not only templated: one gateway of the
//! on-prem-kubernetes profile under the real podman, with TLS (a certificate from the site's
//! CA), its SIEM on a real rsyslog and a site witness (`meshguard-witness serve`) reached by
//! URL, both on the host. The egress proxy with a signed allowlist runs in the site install's
//! test (tests/site), from media.
//!
//! One change to the rendering, for podman's sake: podman 4.3 crashes on a `secret` volume (a nil
//! dereference in its VolumeFromSecret), so the TLS Secret's two files reach the pod as a
//! ConfigMap of the same name, mounted where the chart mounts the Secret. Everything else is
//! the chart's Deployment as rendered.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use meshguard_testkit::rsyslog::Rsyslog;
use meshguard_testkit::wait_for;
use serde_json::{Value, json};

use crate::pods::{ADMIN, JWT, Podman, Site, bin_dir, push_the_gateway_image};
use crate::support::{Registry, free_port, root, run_ok, tool};

const WITNESS: &str = "witness.site.example/w1";
const WITNESS_PASSPHRASE: &str = "witness-passphrase-for-tests-only";

#[test]
fn tls_the_siem_and_a_witness_run_under_podman() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reg = Registry::start();
    let digest = push_the_gateway_image(d, &reg);
    meshguard_testkit::ca::make_ca(d, "gateway", "DNS:localhost,IP:127.0.0.1");
    let siem = Rsyslog::start_on(&d.join("rsyslog"), false, "0.0.0.0");
    let witness = Witness::serve(&d.join("witness"));
    let podman = Podman::new();
    let mut site = Site::new(&podman, format!("mgft{}", std::process::id()));
    let port = free_port();
    let values = site_values(d, &site.release, &reg, &digest, port, &siem, &witness);
    let rendered = render(&site.release, &values);
    play(&mut site, d, &rendered);
    let gw = Https::new(d, port);
    wait_for("the gateway to answer over HTTPS", || gw.healthy());
    let token = gw.an_agent_allowed_to_read();
    assert_eq!(gw.check(&token, "read:inventory"), 200);
    assert_eq!(gw.check(&token, "write:inventory"), 403);
    the_denial_reached_the_siem(&siem);
    the_witness_cosigns_the_log(&gw, &witness);
}

/// A site witness, served on every address of the host; killed when dropped.
struct Witness {
    state: std::path::PathBuf,
    vkey: String,
    port: u16,
    child: Child,
}

impl Witness {
    fn serve(state: &Path) -> Self {
        let vkey = witness_cli(state, &["init", "--name", WITNESS]);
        let port = free_port();
        let mut child = Command::new(bin_dir().join("meshguard-witness"))
            .arg("--state")
            .arg(state)
            .args(["serve", "--listen", &format!("0.0.0.0:{port}")])
            .env("MESHGUARD_WITNESS_PASSPHRASE", WITNESS_PASSPHRASE)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next()
            .expect("the witness says where it listens")
            .unwrap();
        assert!(first.contains("listening on"), "{first}");
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            state: state.to_owned(),
            vkey: vkey.trim().to_owned(),
            port,
            child,
        }
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `meshguard-witness --state STATE ARGS`; its stdout.
fn witness_cli(state: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new(bin_dir().join("meshguard-witness"))
            .arg("--state")
            .arg(state)
            .args(args)
            .env("MESHGUARD_WITNESS_PASSPHRASE", WITNESS_PASSPHRASE),
    )
}

/// The values file a site writes: its registry, its Secrets, TLS, the SIEM and the witness, the
/// last two reached from the pod by the name podman gives the host.
fn site_values(
    d: &Path,
    release: &str,
    reg: &Registry,
    digest: &str,
    port: u16,
    siem: &Rsyslog,
    witness: &Witness,
) -> std::path::PathBuf {
    let values = json!({
        "global": {"imageRegistry": reg.addr},
        "image": {"digest": digest},
        "port": port,
        "existingSecret": format!("{release}-secrets"),
        "license": {"enabled": false},
        "tls": {"enabled": true, "secretName": format!("{release}-tls")},
        "siem": {"url": format!("tcp://host.containers.internal:{}", siem.port)},
        "audit": {
            "witnesses": [witness.vkey],
            "witnessUrls": [format!("{WITNESS}=http://host.containers.internal:{}", witness.port)],
        },
    });
    let file = d.join("site-values.json");
    std::fs::write(&file, values.to_string()).unwrap();
    file
}

fn render(release: &str, values: &Path) -> String {
    let chart = root().join("helm/meshguard-gateway");
    run_ok(
        Command::new(tool("helm"))
            .args(["template", release])
            .arg(&chart)
            .arg("-f")
            .arg(chart.join("values-on-prem-kubernetes.yaml"))
            .arg("-f")
            .arg(values),
    )
}

/// The gateway's Secret, its TLS files as a ConfigMap (see the module's docs) and the rendering
/// played.
fn play(site: &mut Site<'_>, d: &Path, rendered: &str) {
    let release = site.release.clone();
    site.secret(
        &format!("{release}-secrets"),
        &[("ADMIN_TOKEN", ADMIN), ("JWT_SECRET", JWT)],
        &d.join("secrets.json"),
    );
    let tls_volume = format!("secret: {{secretName: {release}-tls}}");
    assert!(
        rendered.contains(&tls_volume),
        "the chart mounts the TLS Secret"
    );
    let rendered = rendered.replace(&tls_volume, &format!("configMap: {{name: {release}-tls}}"));
    let files = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("{release}-tls")},
        "data": {"tls.crt": read(&d.join("gateway.pem")), "tls.key": read(&d.join("gateway.key"))}});
    let file = d.join("site.yaml");
    std::fs::write(&file, format!("{files}\n---\n{rendered}")).unwrap();
    site.played.push(file.clone());
    site.podman
        .ok(&["kube", "play", "--tls-verify=false", file.to_str().unwrap()]);
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

/// The gateway over HTTPS, trusting the site CA only.
struct Https {
    client: reqwest::blocking::Client,
    url: String,
}

impl Https {
    fn new(d: &Path, port: u16) -> Self {
        let ca = reqwest::Certificate::from_pem(read(&d.join("ca.pem")).as_bytes()).unwrap();
        let client = reqwest::blocking::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .build()
            .unwrap();
        Self {
            client,
            url: format!("https://localhost:{port}"),
        }
    }

    fn healthy(&self) -> bool {
        self.client
            .get(format!("{}/health", self.url))
            .send()
            .is_ok_and(|r| r.status().is_success())
    }

    fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.url))
            .header("X-Admin-Token", ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().unwrap()
    }

    /// A policy allowing reads and an agent; the agent's token.
    fn an_agent_allowed_to_read(&self) -> String {
        self.admin(reqwest::Method::POST, "/admin/policies", Some(json!({"name": "reads",
            "content": "name: reads\nrules:\n  - name: allow-read\n    effect: allow\n    actions: [\"read:*\"]\n"})));
        let agent = self.admin(
            reqwest::Method::POST,
            "/admin/agents",
            Some(json!({"name": "tls-agent", "trustTier": "verified"})),
        );
        agent["token"].as_str().unwrap().to_owned()
    }

    fn check(&self, token: &str, action: &str) -> u16 {
        self.client
            .get(format!("{}/proxy/check", self.url))
            .bearer_auth(token)
            .header("X-MeshGuard-Action", action)
            .send()
            .unwrap()
            .status()
            .as_u16()
    }
}

/// The denial reached rsyslog as an RFC 5424 audit message naming the action.
fn the_denial_reached_the_siem(siem: &Rsyslog) {
    wait_for("the denial in rsyslog", || {
        siem.lines()
            .iter()
            .any(|l| l.contains(" audit ") && l.contains("action=\"write:inventory\""))
    });
}

/// The witness does not follow the log until the site trusts its key; then the gateway's next
/// checkpoint is cosigned over HTTP and the cosignature verifies in the gateway's report.
fn the_witness_cosigns_the_log(gw: &Https, witness: &Witness) {
    let checkpoint = gw.admin(reqwest::Method::POST, "/admin/audit/checkpoint", None);
    let log_vkey = checkpoint["vkey"].as_str().unwrap();
    witness_trusts(witness, log_vkey);
    let size: u64 = checkpoint["checkpoint"]
        .as_str()
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(size > 0, "{checkpoint}");
    wait_for("the witness's cosignature", || {
        let cosigned = gw.admin(reqwest::Method::GET, "/admin/audit/cosignatures", None);
        cosigned["cosignatures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["witness"] == WITNESS && c["size"].as_u64() >= Some(size))
    });
    let report = gw.admin(reqwest::Method::GET, "/admin/audit/verify", None);
    assert_eq!(report["valid"], true, "{report}");
    assert!(
        report["witnesses"]["latestWitnessedSize"].as_u64() >= Some(size),
        "{report}"
    );
}

fn witness_trusts(witness: &Witness, log_vkey: &str) {
    witness_cli(&witness.state, &["trust", log_vkey]);
}
