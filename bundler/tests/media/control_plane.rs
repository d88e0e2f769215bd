//! The profiles with a shared control plane run (issue #34): managed-saas (3 gateways) and
//! dedicated-tenant (2), as the chart renders them, under the real podman against a real
//! PostgreSQL (TLS, password logins) on the host. Every replica serves; an agent made through
//! one gateway is served by all, and its revocation through another acts on all; a replaced pod
//! keeps its audit origin and its volume, and, killed mid-load, every decision it answered.
//!
//! podman 4.3 refuses a StatefulSet ("does not contain any supported kube kind"), so the test
//! plays what the StatefulSet controller and the kubelet would make of the chart's: one Pod per
//! ordinal named `<statefulset>-<i>`, its own claim `data-<statefulset>-<i>` from the
//! `volumeClaimTemplates`, and `$(VAR)` references in env values expanded as the kubelet
//! expands them (podman passes them on as written, which would give every gateway the audit
//! origin `.../$(POD_NAME)`). One more change, for podman's sake: podman publishes a
//! `containerPort` on the host, so each pod gets a `hostPort` of its own (the pods' one port
//! would collide). Everything else is the chart's pod template as rendered.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use yaml_rust2::{Yaml, YamlLoader};

use crate::pods::{
    ADMIN, JWT, Podman, Site, admin, check, push_the_gateway_image, reads_policy_and_agent,
};
use crate::support::{Registry, free_port, root, run_ok, tool};

/// The shared profiles and their replica counts, as their values files set them.
const PROFILES: [(&str, usize); 2] = [("managed-saas", 3), ("dedicated-tenant", 2)];

/// The key every gateway of one control plane seals alert-channel secrets with (32 bytes).
const SECRETS_KEY: &str = "c2hhcmVkLXNlY3JldHMta2V5LTAxMjM0NTY3ODlhYmM=";

#[test]
fn the_shared_control_plane_profiles_run_under_podman_against_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reg = Registry::start();
    let digest = push_the_gateway_image(d, &reg);
    let pg = postgres_for_pods(d);
    let podman = Podman::new();
    for (profile, replicas) in PROFILES {
        let gateways = play_the_profile(&podman, &reg, &digest, &pg, d, profile);
        let mut site = gateways.site;
        assert_eq!(gateways.pods.len(), replicas, "{profile}: replicas");
        for pod in &gateways.pods {
            serving(&site, pod);
        }
        each_gateway_is_its_own_origin_on_the_shared_database(&site.release, &gateways.pods);
        let (agent, token) = an_agent_made_on_one_is_served_by_all(&gateways.pods);
        let replaced = &gateways.pods[1];
        let before = decisions_in_the_log_of(replaced);
        let answered = killed_mid_load_and_replaced(&mut site, replaced, &d.join(profile), &token);
        the_replaced_pod_kept_its_origin_and_log(&site.release, replaced, &before, &token);
        let logged = decisions_in_the_log_of(replaced)
            .iter()
            .filter(|a| *a == "read:chaos")
            .count() as u64;
        // Every answered decision has its entry; the one request in flight when the container
        // was killed may have its entry too (durable before the answer was lost), and no more.
        assert!(
            (answered..=answered + 1).contains(&logged),
            "{profile}: {answered} decisions answered by the killed pod, {logged} in its log"
        );
        a_revoke_on_one_acts_on_all(&gateways.pods, &agent, &token);
    }
}

/// PostgreSQL with TLS (a certificate from a site CA), taking logins from podman's networks.
fn postgres_for_pods(d: &Path) -> meshguard_testkit::pg::PgServer {
    let certs = d.join("pg-certs");
    std::fs::create_dir_all(&certs).unwrap();
    meshguard_testkit::ca::make_ca(
        &certs,
        "postgres",
        "DNS:host.containers.internal,IP:127.0.0.1",
    );
    meshguard_testkit::pg::PgServer::start_tls_for(
        &certs.join("postgres.pem"),
        &certs.join("postgres.key"),
        "10.0.0.0/8",
    )
}

/// One gateway pod: its name, its claim, and the host port podman publishes it on.
struct Gateway {
    name: String,
    claim: String,
    port: u16,
    /// The pod and its claim, as first played.
    first: String,
    /// The pod alone (its claim is there already), as played again.
    again: String,
}

impl Gateway {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

struct Played<'a> {
    site: Site<'a>,
    pods: Vec<Gateway>,
}

/// The profile's Secrets made in podman, the chart rendered for the site, and each of its
/// StatefulSet's pods played with its claim.
fn play_the_profile<'a>(
    podman: &'a Podman,
    reg: &Registry,
    digest: &str,
    pg: &meshguard_testkit::pg::PgServer,
    d: &Path,
    profile: &str,
) -> Played<'a> {
    let release = format!("mgcp{}{}", std::process::id(), &profile[..1]);
    let work = d.join(profile);
    std::fs::create_dir_all(&work).unwrap();
    let mut site = Site::new(podman, release.clone());
    pg.database(&release);
    // The gateways reach the host's PostgreSQL by the name podman gives the host in each pod,
    // over TLS (`sslmode=require`, as the chart's docs default it).
    let url = format!(
        "postgresql://{}:{}@host.containers.internal:{}/{release}?sslmode=require",
        meshguard_testkit::pg::USER,
        meshguard_testkit::pg::PASSWORD,
        pg.port
    );
    site.secret(
        &format!("{release}-secrets"),
        &[("ADMIN_TOKEN", ADMIN), ("JWT_SECRET", JWT)],
        &work.join("secrets.json"),
    );
    site.secret(
        &format!("{release}-control-plane"),
        &[("DATABASE_URL", &url), ("SECRETS_KEY", SECRETS_KEY)],
        &work.join("control-plane.json"),
    );
    let rendered = render(profile, &release, reg, digest);
    // The site's CA, which issued PostgreSQL's certificate, as the ConfigMap the chart mounts.
    let ca = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("{release}-ca")},
        "data": {"ca-bundle.pem": std::fs::read_to_string(d.join("pg-certs/ca.pem")).unwrap()}});
    let pods = statefulset_as_pods(&rendered, &ca);
    for pod in &pods {
        site.volumes.push(pod.claim.clone());
        let file = work.join(format!("{}.yaml", pod.name));
        std::fs::write(&file, &pod.first).unwrap();
        site.played.push(file.clone());
        site.podman
            .ok(&["kube", "play", "--tls-verify=false", file.to_str().unwrap()]);
    }
    Played { site, pods }
}

/// `helm template` of the profile as a site sets it: the site registry by digest, the Secrets
/// made above, the database's address listed for restricted egress (dedicated-tenant). Runs
/// unlicensed (licensing has its own tests), which freezes nothing it is asked here.
fn render(profile: &str, release: &str, reg: &Registry, digest: &str) -> String {
    let chart = root().join("helm/meshguard-gateway");
    run_ok(
        Command::new(tool("helm"))
            .args(["template", release])
            .arg(&chart)
            .arg("-f")
            .arg(chart.join(format!("values-{profile}.yaml")))
            .args(["--set", &format!("global.imageRegistry={}", reg.addr)])
            .args(["--set", &format!("image.digest={digest}")])
            .args(["--set", &format!("existingSecret={release}-secrets")])
            .args([
                "--set",
                &format!("controlPlane.postgres.existingSecret={release}-control-plane"),
            ])
            .args([
                "--set",
                "controlPlane.postgres.egressTo[0].ipBlock.cidr=10.0.0.0/8",
            ])
            .args(["--set", &format!("caBundle.configMap={release}-ca")])
            .args(["--set", "license.enabled=false"]),
    )
}

/// The rendered StatefulSet as one Pod per ordinal with its claim (see the module's docs), each
/// played with the ConfigMap `config` beside it.
fn statefulset_as_pods(rendered: &str, config: &Value) -> Vec<Gateway> {
    let docs = YamlLoader::load_from_str(rendered).expect("helm renders YAML");
    let set = docs
        .iter()
        .map(json_of)
        .find(|d| d["kind"] == "StatefulSet")
        .expect("the profile renders a StatefulSet");
    let name = set["metadata"]["name"].as_str().unwrap();
    let replicas = set["spec"]["replicas"].as_u64().unwrap();
    let claims = set["spec"]["volumeClaimTemplates"].as_array().unwrap();
    assert_eq!(claims.len(), 1, "one claim per pod: its audit volume");
    (0..replicas)
        .map(|i| {
            let pod_name = format!("{name}-{i}");
            let claim_name = format!(
                "{}-{pod_name}",
                claims[0]["metadata"]["name"].as_str().unwrap()
            );
            let port = free_port();
            let pod = pod_of(&set, &pod_name, &claim_name, port);
            let mut claim = claims[0].clone();
            claim["apiVersion"] = "v1".into();
            claim["kind"] = "PersistentVolumeClaim".into();
            claim["metadata"]["name"] = claim_name.clone().into();
            // JSON is YAML: one document each.
            Gateway {
                name: pod_name,
                claim: claim_name,
                port,
                first: format!("{claim}\n---\n{config}\n---\n{pod}\n"),
                again: format!("{config}\n---\n{pod}\n"),
            }
        })
        .collect()
}

/// The StatefulSet's pod template as the pod `name` with the claim `claim`, its http port
/// published on `port`, and its env references expanded.
fn pod_of(set: &Value, name: &str, claim: &str, port: u16) -> Value {
    let template = &set["spec"]["template"];
    let mut spec = template["spec"].clone();
    spec["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "data", "persistentVolumeClaim": {"claimName": claim}}));
    let gateway = &mut spec["containers"][0];
    assert_eq!(gateway["name"], "gateway");
    for p in gateway["ports"].as_array_mut().unwrap() {
        if p["name"] == "http" {
            p["hostPort"] = port.into();
        }
    }
    expand_env(gateway["env"].as_array_mut().unwrap(), name);
    let mut labels = template["metadata"]["labels"].clone();
    labels["statefulset.kubernetes.io/pod-name"] = name.into();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    })
}

/// `$(VAR)` in an env value becomes the value of `VAR` defined earlier in the list, as the
/// kubelet expands it; a downward-API `metadata.name` is the pod's name. Every reference must
/// resolve: one left as written would reach the gateway as text.
fn expand_env(env: &mut [Value], pod: &str) {
    let mut known: Vec<(String, String)> = Vec::new();
    for var in env.iter_mut() {
        let name = var["name"].as_str().unwrap().to_owned();
        if let Some(value) = var["value"].as_str() {
            let mut value = value.to_owned();
            for (k, v) in &known {
                value = value.replace(&format!("$({k})"), v);
            }
            assert!(
                !value.contains("$("),
                "{name}={value}: a reference the test cannot expand"
            );
            var["value"] = value.clone().into();
            known.push((name, value));
        } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            known.push((name, pod.to_owned()));
        }
    }
}

/// A YAML document as JSON: integers and booleans stay typed, as the Kubernetes API reads them.
fn json_of(doc: &Yaml) -> Value {
    match doc {
        Yaml::Real(r) => r.parse::<f64>().map_or(Value::Null, Value::from),
        Yaml::Integer(i) => (*i).into(),
        Yaml::String(s) => s.clone().into(),
        Yaml::Boolean(b) => (*b).into(),
        Yaml::Array(a) => a.iter().map(json_of).collect(),
        Yaml::Hash(h) => h
            .iter()
            .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), json_of(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        _ => Value::Null,
    }
}

/// Waits for `pod` to answer /health; else fails with the gateway's last log lines.
fn serving(site: &Site<'_>, pod: &Gateway) {
    let healthy = || {
        reqwest::blocking::get(format!("{}/health", pod.url()))
            .is_ok_and(|r| r.status().is_success())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !healthy() {
        if std::time::Instant::now() > deadline {
            let logs = site
                .podman
                .cmd()
                .args(["logs", "--tail", "30", &format!("{}-gateway", pod.name)])
                .output()
                .unwrap();
            panic!(
                "{} did not answer /health at {}; its log:\n{}{}",
                pod.name,
                pod.url(),
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn info(pod: &Gateway) -> Value {
    admin(reqwest::Method::GET, &format!("{}/admin/info", pod.url()))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// Each gateway is on PostgreSQL and writes its own log, under an origin named after its pod.
fn each_gateway_is_its_own_origin_on_the_shared_database(release: &str, pods: &[Gateway]) {
    for pod in pods {
        let info = info(pod);
        assert_eq!(
            info["controlPlane"]["backend"], "postgresql",
            "{}: {info}",
            pod.name
        );
        assert_eq!(
            info["auditOrigin"],
            format!("{release}.default/meshguard-audit/{}", pod.name),
            "{}: the log origin names the pod",
            pod.name
        );
    }
}

/// A policy and an agent made through the first gateway; every gateway decides for the agent
/// with that policy. Returns the agent's id and token.
fn an_agent_made_on_one_is_served_by_all(pods: &[Gateway]) -> (String, String) {
    let url = pods[0].url();
    let (agent, token) = reads_policy_and_agent(&url, "shared-agent");
    for pod in pods {
        meshguard_testkit::wait_for(&format!("{} to serve the agent", pod.name), || {
            check(&pod.url(), &token, "read:inventory") == 200
        });
        assert_eq!(
            check(&pod.url(), &token, "write:inventory"),
            403,
            "{}",
            pod.name
        );
    }
    (agent["id"].as_str().unwrap().to_owned(), token)
}

/// The actions of the entries in `pod`'s own log, in order (its whole export).
fn decisions_in_the_log_of(pod: &Gateway) -> Vec<String> {
    let export = admin(
        reqwest::Method::GET,
        &format!("{}/admin/audit/export?limit=1000000", pod.url()),
    )
    .send()
    .unwrap()
    .text()
    .unwrap();
    export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|l| l["entry"]["action"].as_str().map(str::to_owned))
        .collect()
}

/// Under a load of decisions, the gateway's container is killed (SIGKILL, as a lost node stops
/// it) and the pod replaced on the same claim; the load goes on until the new pod has answered
/// more. Returns how many decisions the pod answered (allowed), before and after.
fn killed_mid_load_and_replaced(
    site: &mut Site<'_>,
    pod: &Gateway,
    work: &Path,
    token: &str,
) -> u64 {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let answered = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let client = reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap();
            while !stop.load(Ordering::SeqCst) {
                let sent = client
                    .get(format!("{}/proxy/check", pod.url()))
                    .bearer_auth(token)
                    .header("X-MeshGuard-Action", "read:chaos")
                    .send();
                match sent.map(|r| r.status().as_u16()) {
                    Ok(200) => {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    // While the pod is down: nothing answered, nothing to count.
                    Err(_) | Ok(502..=504) => {
                        std::thread::sleep(std::time::Duration::from_millis(50))
                    }
                    Ok(other) => panic!("{}: a decision answered {other}", pod.name),
                }
            }
        });
        meshguard_testkit::wait_for("decisions before the kill", || {
            answered.load(Ordering::SeqCst) >= 30
        });
        site.podman.ok(&["kill", &format!("{}-gateway", pod.name)]);
        replace(site, pod, work);
        serving(site, pod);
        let after = answered.load(Ordering::SeqCst);
        meshguard_testkit::wait_for("decisions of the replaced pod", || {
            answered.load(Ordering::SeqCst) >= after + 30
        });
        stop.store(true, Ordering::SeqCst);
    });
    answered.load(Ordering::SeqCst)
}

/// The pod is replaced (down, then played again without its claim, which stays).
fn replace(site: &mut Site<'_>, pod: &Gateway, work: &Path) {
    let first = work.join(format!("{}.yaml", pod.name));
    site.podman.ok(&["kube", "down", first.to_str().unwrap()]);
    let again = work.join(format!("{}-again.yaml", pod.name));
    std::fs::write(&again, &pod.again).unwrap();
    site.played.push(again.clone());
    site.podman.ok(&[
        "kube",
        "play",
        "--tls-verify=false",
        again.to_str().unwrap(),
    ]);
}

/// Same origin, same volume: the log verifies, holds what it held, and goes on.
fn the_replaced_pod_kept_its_origin_and_log(
    release: &str,
    pod: &Gateway,
    before: &[String],
    token: &str,
) {
    assert_eq!(
        info(pod)["auditOrigin"],
        format!("{release}.default/meshguard-audit/{}", pod.name)
    );
    assert!(
        before.iter().any(|a| a == "read:inventory"),
        "{}'s log held the agent's decisions before: {before:?}",
        pod.name
    );
    let verify: Value = admin(
        reqwest::Method::GET,
        &format!("{}/admin/audit/verify", pod.url()),
    )
    .send()
    .unwrap()
    .json()
    .unwrap();
    assert_eq!(verify["valid"], true, "{}: {verify}", pod.name);
    let after = decisions_in_the_log_of(pod);
    assert!(
        after.len() >= before.len(),
        "{after:?} holds less than {before:?}"
    );
    for action in before {
        assert!(
            after.contains(action),
            "{action} survived the replacement: {after:?}"
        );
    }
    assert_eq!(check(&pod.url(), token, "read:inventory"), 200);
}

/// The agent revoked through the last gateway: every gateway refuses its token.
fn a_revoke_on_one_acts_on_all(pods: &[Gateway], agent: &str, token: &str) {
    let last = pods.last().unwrap();
    let resp = admin(
        reqwest::Method::DELETE,
        &format!("{}/admin/agents/{agent}", last.url()),
    )
    .send()
    .unwrap();
    assert!(resp.status().is_success(), "revoke: {}", resp.status());
    for pod in pods {
        meshguard_testkit::wait_for(&format!("{} to refuse the revoked agent", pod.name), || {
            check(&pod.url(), token, "read:inventory") == 401
        });
    }
}
