//! The steady load the drills run (failover, network chaos), and their counts afterwards: admin
//! writes (agent creations, through PostgreSQL) and decisions through one or more gateways,
//! each answer recorded as the client saw it; then every acknowledged write is in the database,
//! writes answered nothing but 201 and 503, and every answered decision is in the log of the
//! gateway that answered it, by its trace id.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Gateway, Options};

const SECRETS_KEY: &str = "bWVzaGd1YXJkLWZhaWxvdmVyLXRlc3Qta2V5LTMyYnk=";

/// The action the decision load asks for (`GET /proxy/check`), and the one a forwarded
/// `GET /proxy/inventory` is judged as.
pub(crate) const ACTION: &str = "read:inventory";

/// A gateway on the PostgreSQL control plane at `url`, its audit origin named after `name`,
/// with `extra` environment besides.
pub(crate) fn pg_member<'a>(
    dir: &std::path::Path,
    url: &str,
    name: &str,
    extra: Vec<(&'a str, String)>,
) -> Gateway {
    let mut env = vec![
        ("DATABASE_URL", url.to_owned()),
        ("SECRETS_KEY", SECRETS_KEY.into()),
        ("AUDIT_ORIGIN", format!("it.drill/{name}")),
        ("CONTROL_PLANE_POLL_MS", "500".into()),
        ("RATE_LIMIT_RPM", "0".into()),
    ];
    env.extend(extra);
    Gateway::start_with(dir, Options::with(env))
}

/// What the load saw: the agents whose creation was acknowledged, every status a write was
/// answered with, and the trace ids of the decisions each gateway answered.
pub(crate) struct Seen {
    pub(crate) acknowledged: Mutex<Vec<String>>,
    pub(crate) statuses: Mutex<Vec<u16>>,
    /// Decisions answered with anything but a decision (no `X-MeshGuard-Decision` header).
    pub(crate) decisions_unanswered: AtomicU64,
    /// Decisions answered with another status than 200 (a decision or not).
    pub(crate) decisions_not_200: AtomicU64,
    pub(crate) decisions: AtomicU64,
    /// Trace ids of the decisions each gateway answered, in the order given to the load.
    answered_by: Vec<Mutex<Vec<String>>>,
}

impl Seen {
    /// Nothing seen yet, for a load through `gateways` gateways.
    pub(crate) fn new(gateways: usize) -> Self {
        Self {
            acknowledged: Mutex::default(),
            statuses: Mutex::default(),
            decisions_unanswered: AtomicU64::new(0),
            decisions_not_200: AtomicU64::new(0),
            decisions: AtomicU64::new(0),
            answered_by: (0..gateways).map(|_| Mutex::default()).collect(),
        }
    }

    /// How many decisions the gateways answered, all together.
    pub(crate) fn answered(&self) -> usize {
        self.answered_by
            .iter()
            .map(|a| a.lock().unwrap().len())
            .sum()
    }

    /// How many decisions whose trace id starts with `prefix` the gateways answered.
    pub(crate) fn answered_as(&self, prefix: &str) -> usize {
        self.answered_by
            .iter()
            .map(|a| {
                a.lock()
                    .unwrap()
                    .iter()
                    .filter(|t| t.starts_with(prefix))
                    .count()
            })
            .sum()
    }

    /// How many writes were answered so far, whatever the answer.
    pub(crate) fn writes(&self) -> usize {
        self.statuses.lock().unwrap().len()
    }
}

/// Creates agents through the gateways in turn until told to stop, recording each answer.
pub(crate) fn write_load(gateways: &[&Gateway], seen: &Seen, stop: &AtomicBool) {
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let gw = gateways[n % gateways.len()];
        let (status, body) = gw.post(
            "/admin/agents",
            json!({"name": format!("load-{n}"), "trustTier": "verified"}),
        );
        seen.statuses.lock().unwrap().push(status);
        if status == 201 {
            let id = body["id"]
                .as_str()
                .expect("a created agent's id")
                .to_owned();
            seen.acknowledged.lock().unwrap().push(id);
        }
        n += 1;
    }
}

/// How a decision is asked for.
#[derive(Clone, Copy)]
pub(crate) enum Ask {
    /// `GET /proxy/check` with the action in `X-MeshGuard-Action`.
    Check,
    /// `GET /proxy/inventory`, forwarded to the upstream once allowed.
    Forward,
}

/// Decisions through the gateways in turn until told to stop, each with a trace id of its own
/// (`prefix-n`); a decision counts as answered when the answer carries the gateway's decision.
pub(crate) fn decision_load(
    gateways: &[&Gateway],
    token: &str,
    (ask, prefix): (Ask, &str),
    seen: &Seen,
    stop: &AtomicBool,
) {
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let i = n % gateways.len();
        let trace = format!("{prefix}-{n}");
        let request = match ask {
            Ask::Check => gateways[i]
                .raw(Method::GET, "/proxy/check")
                .header("X-MeshGuard-Action", ACTION),
            Ask::Forward => gateways[i].raw(Method::GET, "/proxy/inventory"),
        };
        let answer = request
            .bearer_auth(token)
            .header("X-MeshGuard-Trace-ID", &trace)
            .send()
            .expect("the gateway answers on loopback");
        seen.decisions.fetch_add(1, Ordering::SeqCst);
        if answer.status() != 200 {
            seen.decisions_not_200.fetch_add(1, Ordering::SeqCst);
        }
        if answer.headers().contains_key("x-meshguard-decision") {
            seen.answered_by[i].lock().unwrap().push(trace);
        } else {
            seen.decisions_unanswered.fetch_add(1, Ordering::SeqCst);
        }
        n += 1;
    }
}

/// A write is acknowledged (201) or refused as unavailable (503): nothing else. Returns how
/// many were refused.
pub(crate) fn nothing_but_201_and_503(seen: &Seen) -> usize {
    let statuses = seen.statuses.lock().unwrap();
    let other: Vec<&u16> = statuses
        .iter()
        .filter(|s| **s != 201 && **s != 503)
        .collect();
    assert!(
        other.is_empty(),
        "answers other than 201 and 503: {other:?}"
    );
    statuses.iter().filter(|s| **s == 503).count()
}

/// Every agent whose creation was acknowledged is in the database, read through each gateway.
pub(crate) fn every_acknowledged_write_is_there(gateways: &[&Gateway], seen: &Seen) {
    let acknowledged = seen.acknowledged.lock().unwrap();
    for gw in gateways {
        let (status, list) = gw.get("/admin/agents");
        assert_eq!(status, 200, "{list}");
        let held: BTreeSet<&str> = list["agents"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["id"].as_str())
            .collect();
        let lost: Vec<&String> = acknowledged
            .iter()
            .filter(|id| !held.contains(id.as_str()))
            .collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged agents are gone: {lost:?}",
            lost.len(),
            acknowledged.len()
        );
    }
}

/// Each gateway's own log holds exactly the decisions it answered, by trace id: none missing,
/// none it did not answer.
pub(crate) fn every_answered_decision_has_its_entry(gateways: &[&Gateway], seen: &Seen) {
    for (i, gw) in gateways.iter().enumerate() {
        let answered: BTreeSet<String> = seen.answered_by[i]
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect();
        assert!(!answered.is_empty(), "gateway {i} answered decisions");
        let logged = logged_traces(gw);
        let missing: Vec<&String> = answered.difference(&logged).collect();
        let unanswered: Vec<&String> = logged.difference(&answered).collect();
        assert!(
            missing.is_empty() && unanswered.is_empty(),
            "gateway {i}: {} answered, {} logged; answered but not logged: {missing:?}; \
             logged but not answered: {unanswered:?}",
            answered.len(),
            logged.len()
        );
    }
}

/// The trace ids of the log's entries for [`ACTION`], from the admin export.
fn logged_traces(gw: &Gateway) -> BTreeSet<String> {
    gw.get_text("/admin/audit/export?limit=1000000")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("an export line is JSON"))
        .filter(|l| l["entry"]["action"] == ACTION)
        .map(|l| {
            l["entry"]["traceId"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}
