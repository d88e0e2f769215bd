//! The media carries the product (issue #13): images of our own binaries, built with no
//! container daemon, reproducible, carried by signed media into a site registry, and run by the
//! chart's air-gapped profile with the real podman (`podman kube play`), the pod replaced with
//! the audit log intact.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use meshguard_bundler::site::without_claim;
use serde_json::{Value, json};

use crate::pods::{
    ADMIN, JWT, Podman, Site, admin, bin_dir, build_images, check, reads_policy_and_agent,
    wait_healthy,
};
use crate::support::{Registry, bundle, free_port, keys, manifest, ok, root, run, run_ok, tool};

/// The gateway tests' recording upstream (Python's http.server): what it received, in order.
struct Upstream {
    child: std::process::Child,
    url: String,
}

impl Upstream {
    fn start() -> Self {
        use std::io::BufRead as _;
        let mut child = Command::new("python3")
            .arg(root().join("gateway/tests/it/support/upstream.py"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Self {
            child,
            url: format!("http://127.0.0.1:{}", line.trim()),
        }
    }

    fn received(&self) -> Value {
        reqwest::blocking::get(format!("{}/__received", self.url))
            .unwrap()
            .json()
            .unwrap()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_product_images_are_reproducible_and_carry_the_binaries() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let first = build_images(a.path(), 1_780_000_000);
    assert_eq!(
        first,
        build_images(b.path(), 1_780_000_000),
        "two builds with the same SOURCE_DATE_EPOCH"
    );
    let later = tempfile::tempdir().unwrap();
    assert_ne!(first, build_images(later.path(), 1_780_000_001));
    // A layout the OCI reference validator accepts, with the labels a registry UI shows.
    for (reference, _) in &first {
        ok(
            run(Command::new(tool("oci-image-tool")).args([
                "validate",
                "--type",
                "image",
                "--ref",
                &format!("name={reference}"),
                a.path().to_str().unwrap(),
            ])),
            "oci-image-tool validate",
        );
    }
    let inspect: Value = serde_json::from_str(&run_ok(Command::new(tool("skopeo")).args([
        "inspect",
        "--config",
        &format!("oci:{}:meshguard/gateway:0.1.0", a.path().display()),
    ])))
    .unwrap();
    let labels = &inspect["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], "0.1.0");
    assert_eq!(
        labels["org.opencontainers.image.revision"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(inspect["config"]["User"], "10001:10001");
    assert_eq!(labels["io.meshguard.build"], "development", "{labels}");
}

#[test]
fn the_air_gapped_chart_runs_the_imported_gateway_and_a_replaced_pod_keeps_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    build_images(&d.join("images"), 1_780_000_000);
    let reg = Registry::start();
    create_product_media(d);
    image_sboms_list_files_and_crates(d);
    let digest = import_into_site_registry(d, &reg);
    let chart = SiteChart::imported(d, &reg, digest);
    let rendered = render_gateway(&chart);
    let podman = Podman::new();
    let mut site = Site::new(&podman, chart.release.clone());
    let secret = d.join("secret.json");
    let first = play_gateway(&mut site, &secret, &rendered);
    let url = format!("http://127.0.0.1:{}", chart.port);
    wait_healthy(&url);
    let (agent, token) = the_gateway_decides(&url);
    replace_the_pod(&mut site, &first, &rendered);
    wait_healthy(&url);
    the_audit_log_survived_the_replacement(&url, &token);
    // An agent's pod with its guardian sidecar (the chart's example agent), from the same
    // image in the site registry: the agent calls its sidecar only; the sidecar decides with the
    // control plane's signed bundle, forwards to the upstream only what is allowed, and hands
    // its log to the control plane in heartbeats.
    let upstream = Upstream::start();
    let agent_id = agent["id"].as_str().unwrap();
    play_example_agent(
        &mut site, &chart, &url, agent_id, &upstream, &secret, &token,
    );
    let row = wait_for_the_agents_decisions(&site, &url, agent_id);
    assert_eq!(row["policiesCurrent"], true, "{row}");
    the_upstream_saw_only_the_allowed_call(&upstream);
}

/// Signed media carrying the images and the chart, made as a vendor makes them; a development
/// build (`--development`), since this test runs the gateway with no license.
fn create_product_media(d: &Path) {
    let man = manifest(
        d,
        "0.1.0",
        &format!(
            "images:\n  - ref: meshguard/gateway:0.1.0\n    from: oci:{0}/images:meshguard/gateway:0.1.0\n  - ref: meshguard/tools:0.1.0\n    from: oci:{0}/images:meshguard/tools:0.1.0\nchart: {1}/helm/meshguard-gateway\nsbom: {{workspace: {1}}}\n",
            d.display(),
            root().display()
        ),
    );
    ok(
        bundle(
            &[
                "create",
                "--manifest",
                man.to_str().unwrap(),
                "--out",
                "media",
                "--key",
                &keys().ed_secret(),
                "--development",
            ],
            d,
        ),
        "create",
    );
}

/// Each image's SBOM lists what is in it: every file with its digest, and the crates compiled
/// into each of our binaries with the checksums Cargo.lock holds.
fn image_sboms_list_files_and_crates(d: &Path) {
    let sboms = [
        d.join("media/sbom/images/meshguard_gateway_0.1.0.cdx.json"),
        d.join("media/sbom/images/meshguard_tools_0.1.0.cdx.json"),
    ];
    let valid = run_ok(
        Command::new(crate::support::tools_dir().join("cyclonedx/bin/python"))
            .arg(crate::support::verifier("validate-cyclonedx.py"))
            .args(&sboms),
    );
    assert_eq!(valid.matches(" 1.6 valid").count(), 2, "{valid}");
    let sbom: Value = serde_json::from_slice(&std::fs::read(&sboms[0]).unwrap()).unwrap();
    let files = sbom["components"].as_array().unwrap();
    let file = |path: &str| {
        files
            .iter()
            .find(|c| c["name"] == path)
            .unwrap_or_else(|| panic!("{path} is not in the image SBOM"))
    };
    let gateway = file("/usr/local/bin/meshguard-gateway");
    let (want, _) =
        meshguard_bundler::fsx::sha256_file(&bin_dir().join("meshguard-gateway")).unwrap();
    assert_eq!(gateway["hashes"][0]["content"], want.as_str());
    file("/etc/passwd");
    let crates = gateway["components"].as_array().unwrap();
    let axum = crates
        .iter()
        .find(|c| c["name"] == "axum")
        .expect("the gateway's crates are nested under its binary");
    assert_eq!(axum["hashes"][0]["alg"], "SHA-256");
    assert_eq!(
        axum["hashes"][0]["content"].as_str().map(str::len),
        Some(64)
    );
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    assert!(
        lock.contains(axum["hashes"][0]["content"].as_str().unwrap()),
        "the hash is the registry checksum Cargo.lock records"
    );
}

/// Verifies and imports the media into the site registry as a site does; returns the gateway
/// image's digest there.
fn import_into_site_registry(d: &Path, reg: &Registry) -> String {
    ok(
        bundle(
            &[
                "import",
                "media",
                "--pubkey",
                &keys().ed_public(),
                "--registry",
                &reg.addr,
                "--insecure",
                "--dest",
                "site",
            ],
            d,
        ),
        "import",
    );
    let digest = reg
        .digest("meshguard/gateway:0.1.0")
        .expect("the gateway image is in the site registry");
    assert!(reg.digest("meshguard/tools:0.1.0").is_some());
    digest
}

/// The imported chart, air-gapped profile, pointed at the site registry by digest.
struct SiteChart {
    release: String,
    port: u16,
    chart: PathBuf,
    registry: String,
    digest: String,
    tools_digest: String,
}

impl SiteChart {
    fn imported(d: &Path, reg: &Registry, digest: String) -> Self {
        let release = format!("mge2e{}", std::process::id());
        let port = free_port();
        let chart = d.join("site/charts/meshguard-gateway");
        assert!(
            chart.join("values-air-gapped.yaml").is_file(),
            "the chart was imported"
        );
        let tools_digest = reg.digest("meshguard/tools:0.1.0").unwrap();
        Self {
            release,
            port,
            chart,
            registry: reg.addr.clone(),
            digest,
            tools_digest,
        }
    }

    /// The air-gapped profile pointed at the site registry by digest, with `extra` after it.
    fn template(&self, extra: &[&str]) -> String {
        run_ok(
            Command::new(tool("helm"))
                .args([
                    "template",
                    &self.release,
                    self.chart.to_str().unwrap(),
                    "-f",
                ])
                .arg(self.chart.join("values-air-gapped.yaml"))
                .args([
                    "--set",
                    &format!("global.imageRegistry={}", self.registry),
                    "--set",
                    &format!("image.digest={}", self.digest),
                    "--set",
                    &format!("toolsImage.digest={}", self.tools_digest),
                    "--set",
                    &format!("port={}", self.port),
                    // The egress proxy's allowlist is the site's, from its media: not run here.
                    "--set",
                    "egressProxy.enabled=false",
                ])
                .args(extra),
        )
    }
}

/// The gateway as the site renders it, its image pinned by digest in the site registry.
fn render_gateway(chart: &SiteChart) -> String {
    let release = &chart.release;
    let rendered = chart.template(&[
        "--set",
        &format!("existingSecret={release}-secrets"),
        // The license and the signed policy bundle come from ConfigMaps the runbook creates
        // (issue #14); here the gateway runs unlicensed, which freezes nothing it is asked.
        "--set",
        "license.enabled=false",
        "--set",
        "policyBundle.enabled=false",
    ]);
    assert!(
        rendered.contains(&format!(
            "{}/meshguard/gateway@{}",
            chart.registry, chart.digest
        )),
        "the image is pinned by digest in the site registry"
    );
    rendered
}

/// Creates the gateway's Secret and plays what the chart rendered; returns the played file.
fn play_gateway(site: &mut Site<'_>, secret: &Path, rendered: &str) -> PathBuf {
    let name = format!("{}-secrets", site.release);
    site.secret(
        &name,
        &[("ADMIN_TOKEN", ADMIN), ("JWT_SECRET", JWT)],
        secret,
    );
    let first = secret.with_file_name("first.yaml");
    // Everything the chart renders (podman runs the Deployment and the claim and passes over the
    // kinds it has no use for: Service, ServiceAccount, NetworkPolicy).
    std::fs::write(&first, rendered).unwrap();
    site.played.push(first.clone());
    site.podman.ok(&[
        "kube",
        "play",
        "--tls-verify=false",
        first.to_str().unwrap(),
    ]);
    first
}

/// The product answers: an agent, a policy, an allowed and a denied decision. Returns the agent
/// and its token.
fn the_gateway_decides(url: &str) -> (Value, String) {
    let (agent, token) = reads_policy_and_agent(url, "site-agent");
    assert_eq!(check(url, &token, "read:inventory"), 200);
    assert_eq!(check(url, &token, "write:inventory"), 403);
    let checkpoint = admin(
        reqwest::Method::POST,
        &format!("{url}/admin/audit/checkpoint"),
    )
    .send()
    .unwrap();
    assert!(checkpoint.status().is_success());
    (agent, token)
}

/// The pod is replaced (new pod, same claim): the gateway starts on the same audit log.
fn replace_the_pod(site: &mut Site<'_>, first: &Path, rendered: &str) {
    site.podman.ok(&["kube", "down", first.to_str().unwrap()]);
    let second = first.with_file_name("second.yaml");
    std::fs::write(&second, without_claim(rendered)).unwrap();
    site.played.push(second.clone());
    site.podman.ok(&[
        "kube",
        "play",
        "--tls-verify=false",
        second.to_str().unwrap(),
    ]);
}

/// The log verifies, holds the decisions made before the replacement, and the gateway still
/// decides with the policy and agent made before.
fn the_audit_log_survived_the_replacement(url: &str, token: &str) {
    let verify: Value = admin(reqwest::Method::GET, &format!("{url}/admin/audit/verify"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(verify["valid"], true, "{verify}");
    let audit: Value = admin(reqwest::Method::GET, &format!("{url}/admin/audit?limit=50"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for want in ["read:inventory", "write:inventory"] {
        assert!(
            actions.contains(&want),
            "{want} survived the replacement: {actions:?}"
        );
    }
    // And it still decides with the policy and agent made before.
    assert_eq!(check(url, token, "read:inventory"), 200);
    assert_eq!(check(url, token, "write:inventory"), 403);
}

/// Plays the chart's example agent with its guardian sidecar, the control plane's exported
/// bundle and key in ConfigMaps beside it and the agent's token in a Secret.
fn play_example_agent(
    site: &mut Site<'_>,
    chart: &SiteChart,
    url: &str,
    agent_id: &str,
    upstream: &Upstream,
    secret: &Path,
    token: &str,
) {
    let release = chart.release.clone();
    // podman names a sidecar's emptyDir volumes after the volume, which the chart names after
    // the agent: removed with the site.
    for what in ["guardian-cache", "guardian-tmp"] {
        site.volumes.push(sidecar_volume(what, agent_id));
    }
    let exported: Value = admin(
        reqwest::Method::GET,
        &format!("{url}/admin/policies/bundle"),
    )
    .send()
    .unwrap()
    .json()
    .unwrap();
    let sidecar_port = free_port();
    let pod = chart.template(&[
        "--set",
        &format!(
            "exampleAgent.enabled=true,exampleAgent.agentId={agent_id},exampleAgent.tokenSecret={release}-agent,exampleAgent.upstream={},exampleAgent.intervalSeconds=1,exampleAgent.hostNetwork=true",
            upstream.url
        ),
        "--set-string",
        "exampleAgent.calls=GET /inventory/7\\, DELETE /inventory/7",
        "--set",
        &format!(
            "guardian.port={sidecar_port},guardian.gatewayUrl={url},guardian.syncIntervalSeconds=1,guardian.bundleConfigMap={release}-bundle,guardian.bundleKeyConfigMap={release}-bundle-key"
        ),
        "--show-only",
        "templates/example-agent.yaml",
    ]);
    let maps = [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("{release}-bundle")},
               "data": {"policy-bundle.json": exported["bundle"], "policy-bundle.json.minisig": exported["minisig"]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("{release}-bundle-key")},
               "data": {"meshguard.pub": exported["publicKey"]}}),
    ];
    let agent_pod = secret.with_file_name("agent.yaml");
    let mut text = String::new();
    for m in &maps {
        // JSON is YAML: one document each.
        text.push_str(&m.to_string());
        text.push_str("\n---\n");
    }
    text.push_str(&pod);
    std::fs::write(&agent_pod, text).unwrap();
    site.secret(&format!("{release}-agent"), &[("token", token)], secret);
    site.played.push(agent_pod.clone());
    site.podman.ok(&[
        "kube",
        "play",
        "--tls-verify=false",
        agent_pod.to_str().unwrap(),
    ]);
}

/// The decisions the control plane holds from a sidecar's log, as (action, decision).
fn decisions_of(url: &str, origin: &str) -> Vec<(String, String)> {
    let export = admin(
        reqwest::Method::GET,
        &format!("{url}/admin/audit/export?source={origin}"),
    )
    .send()
    .unwrap()
    .text()
    .unwrap();
    export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|l| {
            (
                l["entry"]["action"].as_str().unwrap_or_default().to_owned(),
                l["entry"]["decision"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// Waits for the sidecar's row that carries the agent's own decisions (they arrive with a later
/// heartbeat than its sidecar's smoke check); returns that row.
fn wait_for_the_agents_decisions(site: &Site<'_>, url: &str, agent_id: &str) -> Value {
    let wanted = |d: &[(String, String)]| {
        d.contains(&("read:inventory/7".into(), "allow".into()))
            && d.contains(&("delete:inventory/7".into(), "deny".into()))
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let list: Value = admin(reqwest::Method::GET, &format!("{url}/admin/sidecars"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let row = list["sidecars"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["agentId"] == agent_id && r["entriesHeld"].as_u64() >= Some(2))
            .cloned();
        if let Some(r) = row
            && wanted(&decisions_of(url, r["origin"].as_str().unwrap()))
        {
            return r;
        }
        if Instant::now() > deadline {
            let logs = site
                .podman
                .cmd()
                .args(["logs"])
                .arg(format!("{}-example-agent-pod-0-guardian", site.release))
                .output()
                .unwrap();
            panic!(
                "no heartbeat with the agent's decisions from its sidecar: {list}\nthe sidecar's log (its first lines):\n{}",
                String::from_utf8_lossy(&logs.stderr)
                    .lines()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The allowed call reached the upstream; the denied one never did.
fn the_upstream_saw_only_the_allowed_call(upstream: &Upstream) {
    let received = upstream.received();
    let calls: Vec<String> = received
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["method"].as_str().unwrap(),
                c["path"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        calls.iter().any(|c| c == "GET /inventory/7"),
        "the allowed call reached the upstream: {calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("DELETE")),
        "the denied call never did: {calls:?}"
    );
}

const PROFILES: &[&str] = &[
    "managed-saas",
    "dedicated-tenant",
    "customer-cloud",
    "on-prem-kubernetes",
    "air-gapped",
];

fn helm(args: &[&str]) -> std::process::Output {
    run(Command::new(tool("helm")).args(args))
}

/// The network paths the product needs, in `profile`'s NetworkPolicy rendered with every
/// optional component on (the egress proxy, an upstream, the SIEM) and the site's destinations
/// listed: agents reach both listening ports; with restricted egress, DNS goes to the cluster's
/// resolver only, the database is reachable on its port, and the listed destinations are.
fn network_paths_open(chart: &str, profile: &str, values: &str, digest: &str, site: &str) {
    let everything = "egressProxy.enabled=true,egressProxy.allowlistConfigMap=a,egressProxy.publicKeyConfigMap=b,proxyTarget=http://upstream:8080,siem.url=tcp://siem:514,networkPolicy.egressTo[0].ipBlock.cidr=10.30.0.0/16";
    let out = ok(
        helm(&[
            "template", "mg", chart, "-f", values, "--set", digest, "--set", site, "--set",
            everything,
        ]),
        &format!("helm template with every component ({profile})"),
    );
    let Some(policy) = out
        .split("\n---")
        .find(|doc| doc.contains("kind: NetworkPolicy"))
    else {
        return assert!(!out.contains("NetworkPolicy"), "{profile}");
    };
    for port in [
        "{port: http, protocol: TCP}",
        "{port: egress, protocol: TCP}",
    ] {
        assert!(
            policy.contains(port),
            "{profile}: agents reach {port}:\n{policy}"
        );
    }
    assert!(
        out.contains("name: egress\n              containerPort:"),
        "{profile}: the egress proxy's port is named as the policy names it"
    );
    if policy.contains("policyTypes: [Ingress, Egress]") {
        let dns = policy
            .split("{port: 53, protocol: TCP}")
            .nth(1)
            .unwrap_or_default();
        assert!(
            dns.trim_start().starts_with("to:") && dns.contains("k8s-app: kube-dns"),
            "{profile}: DNS only to the cluster's resolver:\n{policy}"
        );
        assert!(
            policy.contains("cidr: 10.30.0.0/16"),
            "{profile}: the listed destinations"
        );
        if out.contains("DATABASE_URL") {
            assert!(
                policy.contains("{port: 5432, protocol: TCP}")
                    && policy.contains("cidr: 10.20.0.0/16"),
                "{profile}: the gateways reach their database:\n{policy}"
            );
        }
    }
}

/// Both images pinned by digest, as every profile must be rendered.
fn digests() -> String {
    format!(
        "image.digest=sha256:{},toolsImage.digest=sha256:{}",
        "ab".repeat(32),
        "cd".repeat(32)
    )
}

/// The example agent with its guardian sidecar, rendered and validated with the rest.
const EXAMPLE_AGENT: &str = "exampleAgent.enabled=true,exampleAgent.agentId=agent_example,exampleAgent.tokenSecret=example-token,guardian.bundleConfigMap=bundle,guardian.bundleKeyConfigMap=bundle-key";

/// What a site must say about itself for a profile to render: where its database is (a shared
/// control plane behind restricted egress), where its egress proxy's destinations are (the
/// proxy behind restricted egress), and the region it is pinned to (customer cloud).
fn site_values(profile: &str) -> &'static str {
    match profile {
        "dedicated-tenant" => "controlPlane.postgres.egressTo[0].ipBlock.cidr=10.20.0.0/16",
        "air-gapped" => "networkPolicy.egressTo[0].ipBlock.cidr=10.40.0.0/16",
        "customer-cloud" => {
            "networkPolicy.egressTo[0].ipBlock.cidr=10.40.0.0/16,license.region=eu-central-1,egressProxy.regions={eu-central-1}"
        }
        _ => "podLabels.site=test",
    }
}

#[test]
fn every_profile_lints_strictly_and_renders_what_operators_expect() {
    let chart = root().join("helm/meshguard-gateway");
    let chart = chart.to_str().unwrap();
    let digest = digests();
    for profile in PROFILES {
        let values = format!("{chart}/values-{profile}.yaml");
        let out = lint_and_render(chart, profile, &values, &digest);
        network_paths_open(chart, profile, &values, &digest, site_values(profile));
        the_sidecar_is_checked_and_loopback_only(profile, &out);
        every_empty_dir_is_named_after_its_release_or_agent(profile, &out);
        kubernetes_validates_strictly(profile, &out);
        nothing_runs_with_more_than_it_needs(profile, &out);
        let replicas = match *profile {
            "managed-saas" => 3,
            "dedicated-tenant" => 2,
            _ => 1,
        };
        if replicas > 1 {
            several_gateways_share_postgres(profile, &out, replicas);
            each_gateways_log_is_archived(chart, profile, &values, &digest, replicas);
            each_gateway_is_backed_up(chart, profile, &values, &digest, replicas);
        } else {
            each_gateway_is_backed_up(chart, profile, &values, &digest, replicas);
            one_gateway_on_sqlite(profile, &out);
        }
        if ["air-gapped", "customer-cloud"].contains(profile) {
            assert!(
                out.contains("- {name: EGRESS_PROXY_PORT, value: \"3128\"}"),
                "{profile}: agents' egress goes through the egress proxy, as the profile says"
            );
        }
        if *profile == "customer-cloud" {
            customer_cloud_is_pinned_to_the_sites_region(chart, profile, &values, &digest, &out);
        }
        if *profile == "air-gapped" {
            air_gapped_is_local_and_denies_egress(&out);
        }
    }
    air_gapped_refuses_to_render_without_a_digest(chart);
    values_that_cannot_work_are_refused(chart);
    the_schema_refuses_what_the_gateway_would(chart);
    one_setting_rewrites_the_registry(chart);
}

/// `helm lint --strict` passes for `profile`; returns its rendering with the example agent.
fn lint_and_render(chart: &str, profile: &str, values: &str, digest: &str) -> String {
    ok(
        helm(&[
            "lint",
            "--strict",
            chart,
            "-f",
            values,
            "--set",
            digest,
            "--set",
            site_values(profile),
        ]),
        &format!("helm lint --strict ({profile})"),
    );
    ok(
        helm(&[
            "template",
            "mg",
            chart,
            "-f",
            values,
            "--set",
            digest,
            "--set",
            EXAMPLE_AGENT,
            "--set",
            site_values(profile),
        ]),
        &format!("helm template ({profile})"),
    )
}

/// An init container verifies the sidecar's bundle; the sidecar listens on the pod's loopback
/// only and is probed from inside its container.
fn the_sidecar_is_checked_and_loopback_only(profile: &str, out: &str) {
    assert!(
        out.contains("args: [\"--check-policy-bundle\"]"),
        "{profile}: an init container verifies the sidecar's bundle"
    );
    assert!(
        out.contains("- {name: SIDECAR_AGENT_ID, value: \"agent_example\"}")
            && out.contains("- {name: HOST, value: \"127.0.0.1\"}"),
        "{profile}: the sidecar serves its agent on the pod's loopback only"
    );
    assert!(
        out.contains("exec: {command: [\"/usr/local/bin/meshguard-gateway\", \"--probe\", \"http://127.0.0.1:")
            && out.matches("--probe").count() >= 3,
        "{profile}: the loopback-only sidecar is probed from inside its container"
    ); // podman makes a volume of an emptyDir under its name and keeps it after `kube down`: the
    // sidecar's cache (its origin names its agent) must not be another agent's.
    let cache = sidecar_volume("guardian-cache", "agent_example");
    assert!(
        out.contains(&format!("- {{name: {cache}, mountPath: /cache}}"))
            && out.contains(&format!("- name: {cache}\n")),
        "{profile}: the sidecar's cache volume is named after its agent ({cache})"
    );
}

/// podman kube play makes a host-wide volume of every emptyDir under its name and keeps it: each
/// emptyDir the chart renders (the gateway's, the archive job's, the sidecar's) is named after
/// its release (`mg`) or its agent, never a plain name two pods on one host would share.
fn every_empty_dir_is_named_after_its_release_or_agent(profile: &str, out: &str) {
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let names: Vec<&str> = lines
        .windows(2)
        .filter(|w| w[1] == "emptyDir: {}")
        .filter_map(|w| w[0].strip_prefix("- name: "))
        .collect();
    assert!(
        !names.is_empty(),
        "{profile}: the chart renders emptyDir volumes"
    );
    for name in names {
        let agent = ["guardian-cache", "guardian-tmp"]
            .iter()
            .any(|what| name == sidecar_volume(what, "agent_example"));
        assert!(
            name.starts_with("mg-") || agent,
            "{profile}: the emptyDir {name} would be one volume for every pod on a podman host"
        );
    }
}

/// The name the chart gives a sidecar's emptyDir volume: `<what>-<10 hex of SHA-256(agent)>`.
fn sidecar_volume(what: &str, agent: &str) -> String {
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(agent.as_bytes()));
    format!("{what}-{}", &digest[..10])
}

/// Valid Kubernetes objects, strictly (no unknown fields), for the oldest release we support
/// and the newest schema the validator ships.
fn kubernetes_validates_strictly(profile: &str, out: &str) {
    let rendered = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rendered.path(), out).unwrap();
    for version in ["1.29.0", "1.37.0"] {
        ok(
            run(Command::new(
                crate::support::tools_dir().join("kubernetes-validate/bin/kubernetes-validate"),
            )
            .args(["--strict", "-k", version])
            .arg(rendered.path())),
            &format!("kubernetes-validate --strict -k {version} ({profile})"),
        );
    }
}

/// No `:latest` image, nothing privileged, no service account token, probes, a read-only root.
fn nothing_runs_with_more_than_it_needs(profile: &str, out: &str) {
    assert!(!out.contains(":latest"), "{profile}: no :latest image");
    assert!(
        !out.contains("privileged: true"),
        "{profile}: nothing privileged"
    );
    assert!(
        out.contains("automountServiceAccountToken: false"),
        "{profile}: no service account token in the pod"
    );
    assert!(out.contains("startupProbe:") && out.contains("livenessProbe:"));
    assert!(out.contains("readOnlyRootFilesystem: true"));
}

/// Several gateways on the platform's PostgreSQL, each with its own audit volume.
fn several_gateways_share_postgres(profile: &str, out: &str, replicas: usize) {
    assert!(
        out.contains("kind: StatefulSet") && out.contains(&format!("replicas: {replicas}")),
        "{profile}: {replicas} gateways"
    );
    assert!(
        out.contains("secretKeyRef: {name: meshguard-control-plane, key: DATABASE_URL}")
            && out.contains("secretKeyRef: {name: meshguard-control-plane, key: SECRETS_KEY}"),
        "{profile}: the database URL and the shared secrets key come from a Secret"
    );
    assert!(
        out.contains("name: AUDIT_ORIGIN, value: \"mg.default/meshguard-audit/$(POD_NAME)\""),
        "{profile}: each gateway is a log origin of its own, named after its pod"
    );
    assert!(
        out.contains("volumeClaimTemplates:") && out.contains("whenDeleted: Retain"),
        "{profile}: each pod's audit volume outlives an uninstall"
    );
    assert!(
        out.contains("maxUnavailable: 1"),
        "{profile}: a drain takes one gateway at a time"
    );
    assert!(
        out.contains("serviceName: mg-pods")
            && out.contains("name: mg-pods")
            && out.contains("clusterIP: None"),
        "{profile}: the StatefulSet is governed by a headless Service"
    );
    assert!(
        out.contains("topologyKey: kubernetes.io/hostname")
            && out.contains("topologyKey: topology.kubernetes.io/zone"),
        "{profile}: the gateways spread over nodes and zones"
    );
}

/// The archive pulls each pod's own log through its own name, into its own directory, and the
/// NetworkPolicy lets the job in.
fn each_gateways_log_is_archived(
    chart: &str,
    profile: &str,
    values: &str,
    digest: &str,
    replicas: usize,
) {
    let archived = render_with(chart, profile, values, digest, "archive.enabled=true");
    for i in 0..replicas {
        assert!(
            archived.contains(&format!("- /archive/mg-{i}\n"))
                && archived.contains(&format!("\"http://mg-{i}.mg-pods.default.svc:3100\"")),
            "{profile}: gateway {i}'s log is archived from that gateway"
        );
    }
    assert!(
        archived.contains(
            "app.kubernetes.io/name: meshguard-archive\n              app.kubernetes.io/instance: mg"
        ),
        "{profile}: the NetworkPolicy admits the archive job"
    );
}

/// `profile` rendered as the site sets it, with `extra` set after.
fn render_with(chart: &str, profile: &str, values: &str, digest: &str, extra: &str) -> String {
    ok(
        helm(&[
            "template",
            "mg",
            chart,
            "-f",
            values,
            "--set",
            digest,
            "--set",
            site_values(profile),
            "--set",
            extra,
        ]),
        &format!("helm template with {extra} ({profile})"),
    )
}

/// The backup job takes each gateway's backup from that gateway into a directory of its own,
/// signed with the key from its Secret, and renders as valid Kubernetes objects.
fn each_gateway_is_backed_up(
    chart: &str,
    profile: &str,
    values: &str,
    digest: &str,
    replicas: usize,
) {
    let rendered = render_with(
        chart,
        profile,
        values,
        digest,
        "backup.enabled=true,backup.keySecret=mg-backup-key,backup.recipients[0]=age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
    );
    let targets: Vec<(String, String)> = if replicas > 1 {
        (0..replicas)
            .map(|i| {
                (
                    format!("/backups/mg-{i}"),
                    format!("http://mg-{i}.mg-pods.default.svc:3100"),
                )
            })
            .collect()
    } else {
        vec![("/backups".into(), "http://mg.default.svc:3100".into())]
    };
    for (dir, url) in targets {
        assert!(
            rendered.contains(&format!("- --into\n                - {dir}\n"))
                && rendered.contains(&format!("- \"{url}\"")),
            "{profile}: a backup of {url} into {dir}"
        );
    }
    assert!(
        rendered.contains("secretKeyRef: {name: mg-backup-key, key: passphrase}")
            && rendered.contains("- --recipient\n                - \"age1ql3z7"),
        "{profile}: the key's passphrase from its Secret; the copy encrypted to the recipient"
    );
    kubernetes_validates_strictly(&format!("{profile} with backups"), &rendered);
    let unkeyed = helm(&[
        "template",
        "mg",
        chart,
        "-f",
        values,
        "--set",
        digest,
        "--set",
        site_values(profile),
        "--set",
        "backup.enabled=true",
    ]);
    assert!(
        String::from_utf8_lossy(&unkeyed.stderr).contains("backup.keySecret is required"),
        "{profile}: no backup without its signing key"
    );
}

/// One gateway on its SQLite file, its audit origin from the release and its volume kept.
fn one_gateway_on_sqlite(profile: &str, out: &str) {
    assert!(
        out.contains("kind: Deployment") && !out.contains("DATABASE_URL"),
        "{profile}: one gateway on its SQLite file"
    );
    assert!(
        out.contains("name: AUDIT_ORIGIN, value: \"mg.default/meshguard-audit\""),
        "{profile}: the audit origin comes from the release, not the pod name"
    );
    assert!(
        out.contains("helm.sh/resource-policy: keep"),
        "{profile}: the audit volume outlives an uninstall"
    );
}

/// Pinned to the site's region; without the site's region it does not render: no region is
/// assumed.
fn customer_cloud_is_pinned_to_the_sites_region(
    chart: &str,
    profile: &str,
    values: &str,
    digest: &str,
    out: &str,
) {
    assert!(
        out.contains("- {name: REGION, value: \"eu-central-1\"}")
            && out.contains("- {name: EGRESS_REGIONS, value: \"eu-central-1\"}"),
        "{profile}: pinned to the site's region"
    );
    let unpinned = helm(&[
        "template",
        "mg",
        chart,
        "-f",
        values,
        "--set",
        digest,
        "--set",
        "networkPolicy.egressTo[0].ipBlock.cidr=10.40.0.0/16",
    ]);
    assert!(
        !unpinned.status.success()
            && String::from_utf8_lossy(&unpinned.stderr).contains("license.region is required"),
        "{profile}: {}",
        String::from_utf8_lossy(&unpinned.stderr)
    );
}

/// Air-gapped pulls and archives from the site registry by digest and denies egress by default.
fn air_gapped_is_local_and_denies_egress(out: &str) {
    assert!(
        out.contains("image: \"registry.local:5000/meshguard/gateway@sha256:"),
        "air-gapped pulls from the site registry by digest"
    );
    assert!(
        out.contains("kind: CronJob")
            && out.contains("image: \"registry.local:5000/meshguard/tools@sha256:")
            && out.contains("- audit-archive"),
        "air-gapped archives the audit log locally, with the tools image by digest"
    );
    assert!(
        out.contains("policyTypes: [Ingress, Egress]"),
        "air-gapped denies egress by default"
    );
}

/// The air-gapped profile refuses to render without a digest, naming what to set.
fn air_gapped_refuses_to_render_without_a_digest(chart: &str) {
    let err = helm(&[
        "template",
        "mg",
        chart,
        "-f",
        &format!("{chart}/values-air-gapped.yaml"),
        "--set",
        site_values("air-gapped"),
    ]);
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("image.digest is required"),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );
}

/// Values that would deploy a gateway that cannot work: refused, naming the setting.
fn values_that_cannot_work_are_refused(chart: &str) {
    for (set, says) in [
        // A shared control plane with no Secret for its URL; a sidecar with no agent id.
        (
            "controlPlane.postgres.enabled=true",
            "controlPlane.postgres.existingSecret is required",
        ),
        (
            "exampleAgent.enabled=true,exampleAgent.tokenSecret=t,guardian.bundleConfigMap=b,guardian.bundleKeyConfigMap=k",
            "agent's id",
        ),
        // Restricted egress with a destination the gateway must reach and no rule for it.
        (
            "networkPolicy.restrictEgress=true,controlPlane.postgres.enabled=true,controlPlane.postgres.existingSecret=s",
            "controlPlane.postgres.egressTo",
        ),
        (
            "networkPolicy.restrictEgress=true,proxyTarget=http://upstream:8080",
            "proxyTarget (the upstream",
        ),
        (
            "networkPolicy.restrictEgress=true,siem.url=tcp://siem:514",
            "siem.url (the SIEM)",
        ),
        // A disruption budget over one gateway would block every drain; one pinned log key
        // cannot pin several gateways' logs.
        (
            "podDisruptionBudget.enabled=true",
            "would block every node drain",
        ),
        (
            "controlPlane.postgres.enabled=true,controlPlane.postgres.existingSecret=s,controlPlane.replicas=2,archive.enabled=true,archive.vkey=log.example+0123abcd+AQID",
            "each gateway pod keeps its own log",
        ),
    ] {
        let err = helm(&["template", "mg", chart, "--set", set]);
        assert!(!err.status.success(), "{set} must not render");
        assert!(
            String::from_utf8_lossy(&err.stderr).contains(says),
            "{set}: {}",
            String::from_utf8_lossy(&err.stderr)
        );
    }
}

/// The schema refuses what the gateway would refuse, and keys it does not know (a misspelt
/// setting must not render as if it were not there).
fn the_schema_refuses_what_the_gateway_would(chart: &str) {
    for bad in [
        "securityContext.capabilities.add[0]=NET_ADMIN",
        "securityContext.capabilities.drop=null",
        "securityContext.readOnlyRootFilesystem=false",
        "podSecurityContext.seccompProfile.type=Unconfined",
        "podSecurityContext.seccompProfile=null",
        "podSecurityContext.runAsUser=0",
        "networkPolicy.restrictEgres=true",
        "service.typ=NodePort",
        "serviceAccount.nmae=x",
        "podDisruptionBudget.enable=true",
        "replicaCount=3",
        "global.imageRegistyr=x",
        "mode=bogus",
        "image.tag=latest",
        "securityContext.privileged=true",
        "exampleAgent.upstream=ftp://upstream",
        "guardian.port=0",
        "controlPlane.replicas=0",
    ] {
        let out = helm(&["template", "mg", chart, "--set", bad]);
        assert!(!out.status.success(), "{bad} must not render");
    }
}

/// One setting rewrites the registry.
fn one_setting_rewrites_the_registry(chart: &str) {
    let out = ok(
        helm(&[
            "template",
            "mg",
            chart,
            "--set",
            "global.imageRegistry=registry.site:5000",
        ]),
        "template with a site registry",
    );
    assert!(out.contains("image: \"registry.site:5000/meshguard/gateway:0.1.0\""));
}
