//! The chart's NetworkPolicy, evaluated as Kubernetes evaluates it, against the connections the
//! product needs and the ones it must not have, for every profile. Podman does not enforce
//! NetworkPolicy, so `kube play` cannot show this; a cluster would. What is checked here is the
//! rendered objects under the API's semantics (networking.k8s.io/v1): a pod selected by no policy
//! of a direction is open in it; a pod selected by one is open only to what one of its rules
//! allows; a rule with no peers allows every peer, one with no ports every port; a named port is
//! the destination pod's container port of that name; a peer without a namespaceSelector is in
//! the policy's namespace; an ipBlock matches addresses, never pods by label.
//!
//! The evaluator is written here rather than taken from a library: none on crates.io evaluates
//! NetworkPolicy objects, and the semantics above are short.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::support::{ok, root, run, tool};

/// Where a connection starts or ends: a pod (its namespace and the namespace's labels, its
/// labels and named container ports) or an address outside the cluster.
#[derive(Debug, Clone)]
enum End {
    Pod {
        namespace: String,
        labels: Value,
        ports: Vec<(String, u16, String)>,
    },
    Ip(Ipv4Addr),
}

impl End {
    /// A pod of the namespace `namespace` (labelled `kubernetes.io/metadata.name`, as the API
    /// server labels every namespace).
    fn pod(namespace: &str, labels: Value) -> Self {
        End::Pod {
            namespace: namespace.to_owned(),
            labels,
            ports: Vec::new(),
        }
    }

    fn ip(ip: &str) -> Self {
        End::Ip(ip.parse().expect("an IPv4 address"))
    }

    fn with_port(mut self, name: &str, port: u16, protocol: &str) -> Self {
        if let End::Pod { ports, .. } = &mut self {
            ports.push((name.to_owned(), port, protocol.to_owned()));
        }
        self
    }
}

/// One connection: from, to, the port and protocol, and whether the product needs it (true)
/// or must not have it (false).
struct Flow {
    name: String,
    from: End,
    to: End,
    port: u16,
    protocol: &'static str,
    wanted: bool,
}

/// The flow `name` from `from` to `to` on `port`, which the product needs (`wanted`) or must not
/// have.
fn flow(name: &str, from: &End, to: &End, port: u16, protocol: &'static str, wanted: bool) -> Flow {
    Flow {
        name: name.to_owned(),
        from: from.clone(),
        to: to.clone(),
        port,
        protocol,
        wanted,
    }
}

/// The rendered documents of one `helm template`, each parsed.
fn documents(rendered: &str) -> Vec<Value> {
    rendered
        .split("\n---")
        .filter(|d| d.contains("kind:"))
        .map(|d| {
            marked_yaml::from_yaml::<Value>(0, d)
                .unwrap_or_else(|e| panic!("a rendered document does not parse: {e}\n{d}"))
        })
        .collect()
}

/// A label selector (`matchLabels`, `matchExpressions`) against labels; an empty or absent
/// selector selects everything.
fn selects(selector: Option<&Value>, labels: &Value) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_labels = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let by_expressions = selector["matchExpressions"].as_array().is_none_or(|all| {
        all.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e["operator"].as_str() {
                Some("In") => label(key).is_some_and(|v| values.contains(&v)),
                Some("NotIn") => label(key).is_none_or(|v| !values.contains(&v)),
                Some("Exists") => label(key).is_some(),
                Some("DoesNotExist") => label(key).is_none(),
                other => panic!("matchExpressions operator {other:?}"),
            }
        })
    });
    by_labels && by_expressions
}

/// `a.b.c.d/n` contains `ip`.
fn in_cidr(cidr: &str, ip: Ipv4Addr) -> bool {
    let (net, bits) = cidr.split_once('/').expect("a CIDR");
    let net: Ipv4Addr = net.parse().expect("an IPv4 network");
    let bits: u32 = bits.parse().expect("a prefix length");
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    u32::from(net) & mask == u32::from(ip) & mask
}

/// A rule's peer (`podSelector`, `namespaceSelector`, `ipBlock`) against an end, for a policy
/// in `namespace`.
fn peer_matches(peer: &Value, namespace: &str, end: &End) -> bool {
    if let Some(block) = peer.get("ipBlock") {
        let End::Ip(ip) = end else { return false };
        let except = block["except"].as_array().cloned().unwrap_or_default();
        return in_cidr(block["cidr"].as_str().unwrap(), *ip)
            && !except.iter().any(|c| in_cidr(c.as_str().unwrap(), *ip));
    }
    let End::Pod {
        namespace: ns,
        labels,
        ..
    } = end
    else {
        return false;
    };
    let ns_labels = json!({"kubernetes.io/metadata.name": ns});
    let in_namespace = match peer.get("namespaceSelector") {
        Some(sel) => selects(Some(sel), &ns_labels),
        None => ns == namespace,
    };
    in_namespace && selects(peer.get("podSelector"), labels)
}

/// A rule's `ports` against the connection's port and protocol; a named port is the
/// destination pod's container port of that name.
fn port_matches(ports: Option<&Value>, to: &End, port: u16, protocol: &str) -> bool {
    let Some(ports) = ports.and_then(Value::as_array).filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        let proto = p["protocol"].as_str().unwrap_or("TCP");
        if proto != protocol {
            return false;
        }
        match &p["port"] {
            Value::Null => true,
            Value::Number(n) => n.as_u64() == Some(u64::from(port)),
            Value::String(s) => match s.parse::<u16>() {
                Ok(n) => n == port,
                Err(_) => match to {
                    End::Pod { ports, .. } => ports
                        .iter()
                        .any(|(name, n, pr)| name == s && *n == port && pr == protocol),
                    End::Ip(_) => false,
                },
            },
            other => panic!("a port of {other}"),
        }
    })
}

/// Whether `policies` let `flow` through: egress from its source and ingress at its
/// destination, each open unless a policy of that direction selects the pod.
fn allowed(policies: &[Value], flow: &Flow) -> bool {
    let side = |pod: &End, direction: &str, rules: &str, peers: &str, other: &End| {
        let End::Pod {
            namespace, labels, ..
        } = pod
        else {
            return true;
        };
        let selecting: Vec<&Value> = policies
            .iter()
            .filter(|p| p["metadata"]["namespace"].as_str().unwrap_or("default") == namespace)
            .filter(|p| selects(p["spec"].get("podSelector"), labels))
            .filter(|p| {
                p["spec"]["policyTypes"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == direction))
            })
            .collect();
        selecting.is_empty()
            || selecting.iter().any(|p| {
                p["spec"][rules].as_array().is_some_and(|rules| {
                    rules.iter().any(|r| {
                        let peer_ok =
                            r[peers]
                                .as_array()
                                .filter(|v| !v.is_empty())
                                .is_none_or(|v| {
                                    v.iter().any(|peer| peer_matches(peer, namespace, other))
                                });
                        peer_ok && port_matches(r.get("ports"), &flow.to, flow.port, flow.protocol)
                    })
                })
            })
    };
    side(&flow.from, "Egress", "egress", "to", &flow.to)
        && side(&flow.to, "Ingress", "ingress", "from", &flow.from)
}

/// The pods of the workload named `name` (a Deployment, StatefulSet or CronJob), in the
/// default namespace, with their named container ports.
fn workload(docs: &[Value], kind: &str, name: &str) -> Option<End> {
    let doc = docs
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)?;
    let template = if kind == "CronJob" {
        &doc["spec"]["jobTemplate"]["spec"]["template"]
    } else {
        &doc["spec"]["template"]
    };
    let mut pod = End::pod("default", template["metadata"]["labels"].clone());
    for c in template["spec"]["containers"].as_array().unwrap() {
        for p in c["ports"].as_array().into_iter().flatten() {
            let number = match &p["containerPort"] {
                Value::Number(n) => n.as_u64().unwrap() as u16,
                Value::String(s) => s.parse().unwrap(),
                other => panic!("containerPort {other}"),
            };
            pod = pod.with_port(
                p["name"].as_str().unwrap_or_default(),
                number,
                p["protocol"].as_str().unwrap_or("TCP"),
            );
        }
    }
    Some(pod)
}

/// The connections of `profile` as rendered in `docs`: what the product needs, and what a
/// default-deny profile must refuse.
fn flows(profile: &str, docs: &[Value]) -> Vec<Flow> {
    let gateway = workload(docs, "StatefulSet", "mg")
        .or_else(|| workload(docs, "Deployment", "mg"))
        .expect("the gateway's workload");
    let restricted = docs.iter().any(|d| {
        d["kind"] == "NetworkPolicy"
            && d["spec"]["policyTypes"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "Egress"))
    });
    let postgres = docs.iter().any(|d| d.to_string().contains("DATABASE_URL"));
    // Agents reach the gateway from its namespace, or (managed SaaS) through the ingress
    // controller's namespace.
    let agent_namespace = if profile == "managed-saas" {
        "ingress"
    } else {
        "default"
    };
    let agent = End::pod(agent_namespace, json!({"app": "an-agent"}));
    let dns = End::pod("kube-system", json!({"k8s-app": "kube-dns"}));
    let mut all = vec![
        flow("agent -> gateway", &agent, &gateway, 3100, "TCP", true),
        flow("agent -> egress proxy", &agent, &gateway, 3128, "TCP", true),
        flow(
            "gateway -> cluster DNS (UDP)",
            &gateway,
            &dns,
            53,
            "UDP",
            true,
        ),
        flow(
            "gateway -> cluster DNS (TCP)",
            &gateway,
            &dns,
            53,
            "TCP",
            true,
        ),
        flow(
            "gateway -> SIEM",
            &gateway,
            &End::ip("10.30.0.7"),
            514,
            "TCP",
            true,
        ),
        flow(
            "gateway -> upstream",
            &gateway,
            &End::ip("10.30.0.8"),
            8080,
            "TCP",
            true,
        ),
        flow(
            "gateway -> witness",
            &gateway,
            &End::ip("10.30.0.9"),
            443,
            "TCP",
            true,
        ),
        flow(
            "a pod of another namespace -> gateway",
            &End::pod("elsewhere", json!({"app": "an-agent"})),
            &gateway,
            3100,
            "TCP",
            false,
        ),
    ];
    if postgres {
        all.push(flow(
            "gateway -> PostgreSQL",
            &gateway,
            &End::ip("10.20.0.5"),
            5432,
            "TCP",
            true,
        ));
    }
    all.extend(jobs_reach_each_gateway(docs, &gateway));
    if restricted {
        all.extend(nothing_else_leaves(&gateway));
    }
    all
}

/// The chart's jobs (the audit archive, the backups) reach every gateway pod.
fn jobs_reach_each_gateway(docs: &[Value], gateway: &End) -> Vec<Flow> {
    let mut all = Vec::new();
    let archive = workload(docs, "CronJob", "mg-archive").expect("the archive job");
    all.push(flow(
        "archive job -> each gateway pod",
        &archive,
        gateway,
        3100,
        "TCP",
        true,
    ));
    let backup = workload(docs, "CronJob", "mg-backup").expect("the backup job");
    all.push(flow(
        "backup job -> each gateway pod",
        &backup,
        gateway,
        3100,
        "TCP",
        true,
    ));
    all
}

/// With restricted egress, the gateway reaches no resolver but the cluster's and nothing else.
fn nothing_else_leaves(gateway: &End) -> Vec<Flow> {
    let mut all = Vec::new();
    all.push(flow(
        "gateway -> public DNS",
        gateway,
        &End::ip("8.8.8.8"),
        53,
        "UDP",
        false,
    ));
    all.push(flow(
        "gateway -> the internet",
        gateway,
        &End::ip("203.0.113.9"),
        443,
        "TCP",
        false,
    ));
    all
}

/// The flows whose outcome under `policies` is not what the product needs, as a table.
fn wrong(policies: &[Value], flows: &[Flow]) -> Vec<String> {
    flows
        .iter()
        .filter(|f| allowed(policies, f) != f.wanted)
        .map(|f| {
            let want = if f.wanted { "allowed" } else { "denied" };
            format!("{} (port {}/{}) must be {want}", f.name, f.port, f.protocol)
        })
        .collect()
}

/// `profile` rendered with every component on (the egress proxy, an upstream, the SIEM, a
/// witness, the audit archive, the backups, the site's destinations listed), as a site would run
/// it.
fn render(profile: &str, site: &str) -> Vec<Value> {
    let chart = root().join("helm/meshguard-gateway");
    let chart = chart.to_str().unwrap();
    let digests = format!(
        "image.digest=sha256:{},toolsImage.digest=sha256:{}",
        "ab".repeat(32),
        "cd".repeat(32)
    );
    let everything = "egressProxy.enabled=true,egressProxy.allowlistConfigMap=a,egressProxy.publicKeyConfigMap=b,proxyTarget=http://upstream:8080,siem.url=tcp://siem:514,networkPolicy.egressTo[0].ipBlock.cidr=10.30.0.0/16,archive.enabled=true,backup.enabled=true,backup.keySecret=backup-key";
    let values = format!("{chart}/values-{profile}.yaml");
    let out = ok(
        run(std::process::Command::new(tool("helm")).args([
            "template", "mg", chart, "-f", &values, "--set", &digests, "--set", site, "--set",
            everything,
        ])),
        &format!("helm template {profile} with every component"),
    );
    documents(&out)
}

fn policies(docs: &[Value]) -> Vec<Value> {
    docs.iter()
        .filter(|d| d["kind"] == "NetworkPolicy")
        .cloned()
        .collect()
}

#[test]
fn every_profile_lets_through_what_the_product_needs_and_nothing_it_must_not() {
    for (profile, site) in [
        ("managed-saas", "podLabels.site=test"),
        (
            "dedicated-tenant",
            "controlPlane.postgres.egressTo[0].ipBlock.cidr=10.20.0.0/16",
        ),
        (
            "customer-cloud",
            "license.region=eu-central-1,egressProxy.regions={eu-central-1}",
        ),
        ("on-prem-kubernetes", "podLabels.site=test"),
        ("air-gapped", "podLabels.site=test"),
    ] {
        let docs = render(profile, site);
        let policies = policies(&docs);
        assert!(
            !policies.is_empty(),
            "{profile}: the chart renders a NetworkPolicy"
        );
        let flows = flows(profile, &docs);
        let wrong = wrong(&policies, &flows);
        assert!(wrong.is_empty(), "{profile}:\n{}", wrong.join("\n"));
    }
}

/// The evaluator catches the chart's own past defects when they are put back: the egress
/// proxy's port missing from the ingress rule, restricted egress with no path to PostgreSQL,
/// and DNS allowed to any address.
#[test]
fn the_matrix_fails_when_the_charts_past_defects_are_put_back() {
    let docs = render(
        "dedicated-tenant",
        "controlPlane.postgres.egressTo[0].ipBlock.cidr=10.20.0.0/16",
    );
    let flows = flows("dedicated-tenant", &docs);
    assert!(wrong(&policies(&docs), &flows).is_empty());
    let put_back = |edit: &dyn Fn(&mut Value)| {
        let mut p = policies(&docs);
        edit(&mut p[0]["spec"]);
        wrong(&p, &flows)
    };
    let http_only = put_back(&|spec| {
        spec["ingress"][0]["ports"] = json!([{"port": "http", "protocol": "TCP"}]);
    });
    assert_eq!(
        http_only,
        ["agent -> egress proxy (port 3128/TCP) must be allowed"],
        "only http let in"
    );
    let no_database = put_back(&|spec| {
        let egress = spec["egress"].as_array_mut().unwrap();
        egress.retain(|r| !r.to_string().contains("5432"));
    });
    assert_eq!(
        no_database,
        ["gateway -> PostgreSQL (port 5432/TCP) must be allowed"],
        "restricted egress without the database"
    );
    let dns_anywhere = put_back(&|spec| {
        spec["egress"][0].as_object_mut().unwrap().remove("to");
    });
    assert_eq!(
        dns_anywhere,
        ["gateway -> public DNS (port 53/UDP) must be denied"],
        "DNS to any address"
    );
}

/// The evaluator's own semantics on hand-written cases: selectors, namespaces, ipBlocks with
/// `except`, named ports, and a direction no policy selects.
#[test]
fn the_evaluator_follows_the_api_semantics() {
    let web = End::pod("a", json!({"app": "web"})).with_port("http", 8080, "TCP");
    let client = End::pod("a", json!({"app": "client", "tier": "front"}));
    let stranger = End::pod("b", json!({"app": "client", "tier": "front"}));
    let policy = json!({"metadata": {"namespace": "a"}, "spec": {
        "podSelector": {"matchLabels": {"app": "web"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"port": "http"}], "from": [
            {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]}},
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
        ]}],
    }});
    let case = |from: &End, to: &End, port| {
        allowed(
            std::slice::from_ref(&policy),
            &Flow {
                name: String::new(),
                from: from.clone(),
                to: to.clone(),
                port,
                protocol: "TCP",
                wanted: true,
            },
        )
    };
    assert!(
        case(&client, &web, 8080),
        "a selected peer on the named port"
    );
    assert!(!case(&client, &web, 9090), "another port");
    assert!(
        !case(&stranger, &web, 8080),
        "the same labels in another namespace"
    );
    assert!(case(&End::ip("10.2.3.4"), &web, 8080), "inside the ipBlock");
    assert!(!case(&End::ip("10.1.3.4"), &web, 8080), "in its except");
    assert!(
        case(&web, &client, 1234),
        "the client is selected by no policy"
    );
}
