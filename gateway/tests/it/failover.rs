//! Database failover (issue #37): two gateways on a PostgreSQL primary with a real streaming
//! replica (`pg_basebackup -R`, synchronous, so a commit is acknowledged once the replica holds
//! it), given both hosts in one URL with `target_session_attrs=read-write` as libpq defines it.
//! Under a steady load of admin writes through both gateways and decisions, the primary is
//! killed and the replica promoted with `pg_ctl promote`: writes answer 503 during the switch
//! and nothing else, the gateways follow the new primary on their own, every write they
//! acknowledged is there, decisions never stop, and the change followers reconnect (a revoke
//! through one acts on the other).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::json;

use crate::harness::{Gateway, Options, agent, policy, tempdir};
use meshguard_testkit::{pg, wait_for};

const SECRETS_KEY: &str = "bWVzaGd1YXJkLWZhaWxvdmVyLXRlc3Qta2V5LTMyYnk=";

fn member(dir: &std::path::Path, url: &str, name: &str) -> Gateway {
    Gateway::start_with(
        dir,
        Options::with(vec![
            ("DATABASE_URL", url.to_owned()),
            ("SECRETS_KEY", SECRETS_KEY.into()),
            ("AUDIT_ORIGIN", format!("it.failover/{name}")),
            ("CONTROL_PLANE_POLL_MS", "500".into()),
            ("RATE_LIMIT_RPM", "0".into()),
        ]),
    )
}

/// What the load saw: the agents whose creation was acknowledged, and every status answered.
#[derive(Default)]
struct Seen {
    acknowledged: Mutex<Vec<String>>,
    statuses: Mutex<Vec<u16>>,
    decisions_not_200: AtomicU64,
    decisions: AtomicU64,
    /// Decisions answered by each gateway, in the order given to the load.
    answered_by: [AtomicU64; 2],
}

#[test]
fn the_gateways_follow_the_promoted_replica_and_lose_no_acknowledged_write() {
    let mut primary = pg::PgServer::start();
    primary
        .psql("postgres", "CREATE DATABASE failover")
        .unwrap();
    let replica = pg::PgServer::replica_of(&primary);
    replicate_synchronously(&primary);
    let url = format!(
        "postgresql://{}:{}@127.0.0.1:{},127.0.0.1:{}/failover?sslmode=disable&target_session_attrs=read-write",
        pg::USER,
        pg::PASSWORD,
        primary.port,
        replica.port
    );
    let (da, db) = (tempdir(), tempdir());
    let a = member(da.path(), &url, "a");
    let b = member(db.path(), &url, "b");
    let (id, token) = agent(&a, "steady", "verified", &[]);
    policy(
        &a,
        "reads",
        "name: reads\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n",
    );
    wait_for("B enforces the policy", || {
        b.check(&token, "read:x").0 == 200
    });

    let seen = Seen::default();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| write_load(&[&a, &b], &seen, &stop));
        s.spawn(|| decision_load(&[&a, &b], &token, &seen, &stop));
        wait_for("writes acknowledged before the failover", || {
            seen.acknowledged.lock().unwrap().len() >= 20
        });
        primary.kill9();
        wait_for("a write answered 503 during the switch", || {
            seen.statuses.lock().unwrap().contains(&503)
        });
        replica.promote();
        let after = seen.acknowledged.lock().unwrap().len();
        wait_for("writes acknowledged again through both gateways", || {
            seen.acknowledged.lock().unwrap().len() >= after + 20
        });
        stop.store(true, Ordering::SeqCst);
    });

    nothing_but_201_and_503(&seen);
    every_acknowledged_write_is_there(&[&a, &b], &seen);
    assert_eq!(
        seen.decisions_not_200.load(Ordering::SeqCst),
        0,
        "decisions went on from the snapshot throughout ({} made)",
        seen.decisions.load(Ordering::SeqCst)
    );
    every_answered_decision_has_its_entry(&[&a, &b], &seen);
    a_revoke_on_one_acts_on_the_other(&a, &b, &id, &token);
}

/// Each gateway's own log holds exactly the decisions it answered through the failover.
fn every_answered_decision_has_its_entry(gateways: &[&Gateway], seen: &Seen) {
    for (i, gw) in gateways.iter().enumerate() {
        let answered = seen.answered_by[i].load(Ordering::SeqCst);
        assert!(answered > 0, "gateway {i} answered decisions");
        let export = gw.get_text("/admin/audit/export?limit=1000000");
        let logged = export
            .lines()
            .filter(|l| l.contains("\"action\":\"read:inventory\""))
            .count() as u64;
        assert_eq!(
            logged, answered,
            "gateway {i}: entries for the decisions it answered"
        );
    }
}

/// `synchronous_standby_names = '*'`: from now on a commit returns once the replica has
/// flushed it (`synchronous_commit = on`), so a lost primary loses nothing acknowledged.
fn replicate_synchronously(primary: &pg::PgServer) {
    wait_for("the replica streams", || {
        primary
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            )
            .is_ok_and(|n| n == "1")
    });
    primary
        .psql(
            "postgres",
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
        )
        .unwrap();
    primary.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    wait_for("the replica is synchronous", || {
        primary
            .psql("postgres", "SELECT sync_state FROM pg_stat_replication")
            .is_ok_and(|s| s == "sync")
    });
}

/// Creates agents through the gateways in turn until told to stop, recording each answer.
fn write_load(gateways: &[&Gateway], seen: &Seen, stop: &AtomicBool) {
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

/// Decisions through both gateways until told to stop.
fn decision_load(gateways: &[&Gateway], token: &str, seen: &Seen, stop: &AtomicBool) {
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let (status, _) = gateways[n % gateways.len()].check(token, "read:inventory");
        seen.decisions.fetch_add(1, Ordering::SeqCst);
        if status == 200 {
            seen.answered_by[n % gateways.len()].fetch_add(1, Ordering::SeqCst);
        } else {
            seen.decisions_not_200.fetch_add(1, Ordering::SeqCst);
        }
        n += 1;
    }
}

/// A write is acknowledged (201) or refused as unavailable (503): nothing else.
fn nothing_but_201_and_503(seen: &Seen) {
    let statuses = seen.statuses.lock().unwrap();
    let other: Vec<&u16> = statuses
        .iter()
        .filter(|s| **s != 201 && **s != 503)
        .collect();
    assert!(
        other.is_empty(),
        "answers other than 201 and 503: {other:?}"
    );
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert!(
        refused > 0 && refused < statuses.len(),
        "{refused} of {}",
        statuses.len()
    );
}

/// Every agent whose creation was acknowledged is in the promoted database, read through
/// either gateway.
fn every_acknowledged_write_is_there(gateways: &[&Gateway], seen: &Seen) {
    let acknowledged = seen.acknowledged.lock().unwrap();
    for gw in gateways {
        let (status, list) = gw.get("/admin/agents");
        assert_eq!(status, 200, "{list}");
        let held: std::collections::HashSet<&str> = list["agents"]
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

/// After the failover the change followers listen on the new primary: a revoke through A is
/// refused by B too.
fn a_revoke_on_one_acts_on_the_other(a: &Gateway, b: &Gateway, id: &str, token: &str) {
    assert_eq!(b.check(token, "read:x").0, 200);
    assert_eq!(a.delete(&format!("/admin/agents/{id}")).0, 200);
    wait_for("B refuses the token A revoked", || {
        b.check(token, "read:x").0 == 401
    });
}
