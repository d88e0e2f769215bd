//! Database failover (issue #37): two gateways on a PostgreSQL primary with a real streaming
//! replica (`pg_basebackup -R`, synchronous, so a commit is acknowledged once the replica holds
//! it), given both hosts in one URL with `target_session_attrs=read-write` as libpq defines it.
//! Under a steady load of admin writes through both gateways and decisions, the primary is
//! killed and the replica promoted with `pg_ctl promote`: writes answer 503 during the switch
//! and nothing else, the gateways follow the new primary on their own, every write they
//! acknowledged is there, decisions never stop, and the change followers reconnect (a revoke
//! through one acts on the other).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::harness::{Gateway, agent, policy, tempdir};
use crate::load::{
    Ask, Seen, decision_load, every_acknowledged_write_is_there,
    every_answered_decision_has_its_entry, nothing_but_201_and_503, pg_member, write_load,
};
use meshguard_testkit::{pg, wait_for};

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
    let a = pg_member(da.path(), &url, "a", vec![]);
    let b = pg_member(db.path(), &url, "b", vec![]);
    let (id, token) = agent(&a, "steady", "verified", &[]);
    policy(
        &a,
        "reads",
        "name: reads\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n",
    );
    wait_for("B enforces the policy", || {
        b.check(&token, "read:x").0 == 200
    });

    let seen = Seen::new(2);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| write_load(&[&a, &b], &seen, &stop));
        s.spawn(|| decision_load(&[&a, &b], &token, (Ask::Check, "failover"), &seen, &stop));
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

    let refused = nothing_but_201_and_503(&seen);
    assert!(
        refused > 0 && refused < seen.writes(),
        "{refused} of {} writes refused",
        seen.writes()
    );
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

/// After the failover the change followers listen on the new primary: a revoke through A is
/// refused by B too.
fn a_revoke_on_one_acts_on_the_other(a: &Gateway, b: &Gateway, id: &str, token: &str) {
    assert_eq!(b.check(token, "read:x").0, 200);
    assert_eq!(a.delete(&format!("/admin/agents/{id}")).0, 200);
    wait_for("B refuses the token A revoked", || {
        b.check(token, "read:x").0 == 401
    });
}
