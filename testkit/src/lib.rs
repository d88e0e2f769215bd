//! What the workspace's test crates share, so each starts real peers the same way: a free
//! loopback port, a bounded wait, the workspace's tools (`.tools/`, installed by `cargo xtask
//! tools`), a site CA made with openssl, a real PostgreSQL server, a real registry
//! (distribution), a real rsyslogd and a delaying TCP relay on 127.0.0.1, and a test's own
//! network namespace. Every helper panics with what went wrong: they run in tests.
//!
//! The test crates take it as a dev-dependency, and xtask for bench-cluster's PostgreSQL; no
//! product crate depends on it, so no product binary links it.

pub mod ca;
pub mod netns;
pub mod pg;
pub mod registry;
pub mod relay;
pub mod rsyslog;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a loopback port can be bound")
        .local_addr()
        .expect("a bound socket has an address")
        .port()
}

/// Waits until `ready` holds, asking every 100 ms; panics naming `what` after a minute (a
/// deadline for a stuck test, not a timing assertion).
pub fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The workspace's root directory.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ is in the workspace")
        .to_path_buf()
}

/// Where `cargo xtask tools` installs the test tools: `MESHGUARD_TOOLS_DIR`, or `.tools/`.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("MESHGUARD_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools"))
}

/// A tool from `.tools/bin` when installed there, else the system's by name.
pub fn tool(name: &str) -> PathBuf {
    let local = tools_dir().join("bin").join(name);
    if local.exists() {
        local
    } else {
        PathBuf::from(name)
    }
}

/// Copies a directory tree with its modes and times (`cp -a`), for tampering with a copy.
pub fn copy_dir(from: &Path, to: &Path) {
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .expect("cp runs");
    assert!(
        out.status.success(),
        "cp -a {} {}: {}",
        from.display(),
        to.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the Go client the tests read the audit log with (`gateway/tests/it/support/tlogcheck`:
/// golang.org/x/mod/sumdb/tlog and note, Debian's golang-golang-x-mod-dev, nothing of ours) into
/// `dir`; returns the binary.
pub fn tlogcheck(dir: &Path) -> PathBuf {
    let src = root().join("gateway/tests/it/support/tlogcheck");
    let out = dir.join("tlogcheck");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg("main.go")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", dir.join("gocache"))
        .output()
        .expect("Debian's Go is installed (cargo xtask tools: golang-go golang-golang-x-mod-dev)");
    assert!(
        built.status.success(),
        "go build tlogcheck: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    out
}
