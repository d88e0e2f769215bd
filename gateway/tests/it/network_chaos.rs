//! The network chaos drill (issue #37): 200 ms of added latency and real packet loss between
//! the gateway and PostgreSQL, and between the gateway and the upstream, under a steady load of
//! decisions (`GET /proxy/check`, and `GET /proxy/*` forwarded to the upstream) and admin
//! writes through PostgreSQL. Afterwards: every decision the client saw answered is in the
//! gateway's audit log (by trace id, none missing and none extra), writes were answered with
//! 201 or 503 only, every acknowledged write is in the database, and the log verifies.
//!
//! The test re-runs itself in a network namespace of its own (`unshare -n`, loopback only), so
//! its firewall rules and queueing touch nothing else; PostgreSQL (testkit's `PgServer`), the
//! upstream (`support/upstream.py`) and the gateway all run in it.
//!
//! - **Loss is the real kernel's**: iptables' `statistic` match drops a share of the packets to
//!   and from the PostgreSQL and upstream ports (and the relays' ports, below), and TCP
//!   retransmits them as it would on a lossy network. The drop counters must show drops.
//! - **Latency**: `tc qdisc ... netem delay 200ms` when the kernel has `sch_netem` (then every
//!   packet on the namespace's loopback is delayed). This machine's kernel has no `sch_netem`
//!   (`tc` answers "Specified qdisc kind is unknown"), so then a delaying TCP relay
//!   (`meshguard_testkit::relay`) stands between the gateway and PostgreSQL and between the
//!   gateway and the upstream, forwarding each chunk 200 ms after it arrived, both ways. The
//!   test prints which one it used. The relay exists only because netem is missing.
//!
//! No timing is asserted: the waits are bounded by generous deadlines only.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::{PythonServer, agent, policy, run, tempdir};
use crate::load::{
    Ask, Seen, decision_load, every_acknowledged_write_is_there,
    every_answered_decision_has_its_entry, nothing_but_201_and_503, pg_member, write_load,
};
use meshguard_testkit::relay::DelayRelay;
use meshguard_testkit::{netns, pg, wait_for};

/// Set in the test's own run inside the namespace.
const NETNS: &str = "MESHGUARD_IT_NETNS";
const DELAY: Duration = Duration::from_millis(200);
/// The share of packets dropped on each lossy port, each way.
const LOSS: &str = "0.03";

#[test]
fn decisions_and_writes_under_latency_and_loss_lose_nothing_answered() {
    netns::isolated(
        "network_chaos::decisions_and_writes_under_latency_and_loss_lose_nothing_answered",
        NETNS,
        drill,
    );
}

fn drill() {
    let server = pg::PgServer::start();
    server.database("chaos");
    let upstream = PythonServer::start("upstream.py", &[]);
    let upstream_port: u16 = upstream.url.rsplit(':').next().unwrap().parse().unwrap();
    let latency = Latency::prepare(&[server.port, upstream_port]);
    let [db_port, up_port] = latency.ports[..] else {
        unreachable!("one port each")
    };
    let dir = tempdir();
    let gw = pg_member(
        dir.path(),
        &pg::url_at(db_port, "chaos"),
        "chaos",
        vec![("PROXY_TARGET", format!("http://127.0.0.1:{up_port}"))],
    );
    policy(
        &gw,
        "reads",
        "name: reads\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n",
    );
    let (_, token) = agent(&gw, "steady", "verified", &[]);

    let mut lossy = latency.ports.clone();
    lossy.extend([server.port, upstream_port]);
    lossy.sort_unstable();
    lossy.dedup();
    latency.on();
    drop_packets(&lossy);
    let seen = Seen::new(1);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| write_load(&[&gw], &seen, &stop));
        s.spawn(|| decision_load(&[&gw], &token, (Ask::Check, "check"), &seen, &stop));
        s.spawn(|| decision_load(&[&gw], &token, (Ask::Forward, "forward"), &seen, &stop));
        wait_for(
            "writes and forwarded calls answered through the slow, lossy link",
            || seen.writes() >= 6 && seen.answered_as("forward-") >= 20,
        );
        stop.store(true, Ordering::SeqCst);
    });
    let dropped = dropped_packets();
    stop_dropping();
    latency.off();

    println!(
        "network chaos: {} decisions answered ({} forwarded upstream), {} writes ({} acknowledged), {dropped} packets dropped by the kernel, latency by {}",
        seen.answered(),
        seen.answered_as("forward-"),
        seen.writes(),
        seen.acknowledged.lock().unwrap().len(),
        latency.how()
    );
    assert!(dropped > 0, "the kernel dropped packets");
    latency.was_applied();
    nothing_but_201_and_503(&seen);
    every_acknowledged_write_is_there(&[&gw], &seen);
    assert_eq!(
        seen.decisions_unanswered.load(Ordering::SeqCst),
        0,
        "every decision asked for was answered as a decision"
    );
    every_answered_decision_has_its_entry(&[&gw], &seen);
    let (_, report) = gw.get("/admin/audit/verify");
    assert_eq!(report["valid"], true, "{report}");
}

/// Where the 200 ms come from: netem on the namespace's loopback, or a relay in front of each
/// port.
struct Latency {
    relays: Vec<DelayRelay>,
    /// The ports the gateway connects to, one for each port asked for, in order.
    ports: Vec<u16>,
}

impl Latency {
    /// Netem if the kernel has it (with no delay yet), else a relay in front of each port.
    fn prepare(ports: &[u16]) -> Self {
        if tc(&["qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms"]).is_ok() {
            return Self {
                relays: Vec::new(),
                ports: ports.to_vec(),
            };
        }
        let relays: Vec<DelayRelay> = ports
            .iter()
            .map(|p| DelayRelay::start(SocketAddr::from(([127, 0, 0, 1], *p))))
            .collect();
        Self {
            ports: relays.iter().map(|r| r.port).collect(),
            relays,
        }
    }

    fn how(&self) -> &'static str {
        if self.relays.is_empty() {
            "tc netem"
        } else {
            "the delaying relay (this kernel has no sch_netem)"
        }
    }

    fn on(&self) {
        self.set(DELAY);
    }

    fn off(&self) {
        self.set(Duration::ZERO);
    }

    fn set(&self, delay: Duration) {
        if self.relays.is_empty() {
            let ms = format!("{}ms", delay.as_millis());
            tc(&[
                "qdisc", "change", "dev", "lo", "root", "netem", "delay", &ms,
            ])
            .unwrap_or_else(|e| panic!("tc netem delay {ms}: {e}"));
        }
        for r in &self.relays {
            r.set_delay(delay);
        }
    }

    /// The relays carried the load (netem's delay is the kernel's own).
    fn was_applied(&self) {
        for r in &self.relays {
            assert!(
                r.chunks() > 0,
                "the relay on port {} carried the load",
                r.port
            );
        }
    }
}

fn tc(args: &[&str]) -> Result<(), String> {
    let out = Command::new("tc")
        .args(args)
        .output()
        .expect("tc (iproute2) runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

fn iptables(args: &[&str]) -> String {
    run("iptables", args)
}

/// Drops a share ([`LOSS`]) of the packets to and from each port, at random, in the kernel.
fn drop_packets(ports: &[u16]) {
    for port in ports {
        for way in ["--dport", "--sport"] {
            let port = port.to_string();
            iptables(&[
                "-A",
                "INPUT",
                "-p",
                "tcp",
                way,
                &port,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                LOSS,
                "-j",
                "DROP",
            ]);
        }
    }
}

/// How many packets the rules dropped (the `pkts` column of every rule in INPUT).
fn dropped_packets() -> u64 {
    iptables(&["-L", "INPUT", "-v", "-n", "-x"])
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn stop_dropping() {
    iptables(&["-F", "INPUT"]);
}
