//! A test in a network namespace of its own, with only loopback up: the test binary runs
//! itself again under `unshare -n` for the one test, so nothing in it can reach a network and
//! what it does to the network (firewall rules, queueing) touches nothing else. Needs root.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

/// Runs `body` inside a new network namespace: in the test's own run there (`marker` set in
/// its environment) at once; else runs the test binary again there for `test` alone (its full
/// name, `module::test`) and fails if that run fails.
pub fn isolated(test: &str, marker: &str, body: impl FnOnce()) {
    if std::env::var_os(marker).is_some() {
        // No route anywhere but loopback.
        let out = TcpStream::connect_timeout(
            &SocketAddr::from(([192, 0, 2, 1], 80)),
            Duration::from_secs(2),
        );
        assert!(out.is_err(), "the namespace must have no network");
        body();
        return;
    }
    let status = Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(marker, "1")
        .status()
        .expect("unshare (util-linux) runs; the tests need root or user namespaces");
    assert!(
        status.success(),
        "{test} failed inside `unshare -n` (see above)"
    );
}
