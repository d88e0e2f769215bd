//! A real PostgreSQL server for the tests: `initdb` into a temporary directory, then `postgres`
//! on a free loopback port with password (SCRAM) authentication over TCP only. When the tests
//! run as root, the server runs as the `postgres` user the Debian package creates (initdb and
//! postgres refuse root). Used by the store's unit tests and by the integration tests.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The superuser the tests log in as.
pub const USER: &str = "meshguard";
/// Its password.
pub const PASSWORD: &str = "pg-test-password-5b7e1c9d";

/// A PostgreSQL server of the test's own; killed when dropped.
#[derive(Debug)]
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
    /// Serve TLS (`ssl=on`) with the certificate and key copied into the server's directory.
    tls: bool,
    /// Listen on every address, not only loopback (pods on a container network reach it).
    listen_all: bool,
}

/// The newest `/usr/lib/postgresql/<major>/bin`, or `PG_BIN`: where the server and its client
/// tools (`psql`, `pg_dump`, `pg_restore`, …) are.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (Debian `postgresql`; `cargo xtask tools` installs it)")
        .filter_map(|e| {
            let e = e.ok()?;
            let major = e.file_name().to_str()?.parse().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    majors.sort();
    majors
        .pop()
        .expect("a PostgreSQL version under /usr/lib/postgresql")
        .1
}

fn id_of(flag: &str, user: &str) -> u32 {
    let out = Command::new("id").args([flag, user]).output().unwrap();
    assert!(
        out.status.success(),
        "the `{user}` user exists (Debian's postgresql package creates it)"
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

impl PgServer {
    /// A server with password logins over TCP, no TLS.
    pub fn start() -> Self {
        Self::start_with(None, None)
    }

    /// A server that also speaks TLS with this PEM certificate and key.
    pub fn start_tls(cert: &Path, key: &Path) -> Self {
        Self::start_with(Some((cert, key)), None)
    }

    /// A TLS server that also takes logins from `clients` (a CIDR, e.g. a container network's):
    /// it listens on every address, and only TLS logins with the password are let in from there.
    pub fn start_tls_for(cert: &Path, key: &Path, clients: &str) -> Self {
        Self::start_with(Some((cert, key)), Some(clients))
    }

    fn start_with(tls: Option<(&Path, &Path)>, clients: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let owner = root.then(|| (id_of("-u", "postgres"), id_of("-g", "postgres")));
        let pw = dir.path().join("pw");
        std::fs::write(&pw, PASSWORD).unwrap();
        let mut owned = vec![dir.path().to_owned(), pw.clone()];
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt as _;
            for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
                let to = dir.path().join(to);
                std::fs::copy(from, &to).unwrap();
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
                owned.push(to);
            }
        }
        if let Some((uid, gid)) = owner {
            for p in &owned {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
            }
        }
        let mut server = Self {
            dir,
            bin: bin_dir(),
            port: crate::free_port(),
            owner,
            child: None,
            tls: tls.is_some(),
            listen_all: clients.is_some(),
        };
        let out = server
            .command("initdb")
            .arg("-D")
            .arg(server.data())
            .args(["-U", USER, "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"])
            .arg(format!("--pwfile={}", pw.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(cidr) = clients {
            let hba = server.data().join("pg_hba.conf");
            let mut rules = std::fs::read_to_string(&hba).unwrap();
            rules.push_str(&format!("hostssl all all {cidr} scram-sha-256\n"));
            std::fs::write(&hba, rules).unwrap();
        }
        server.launch();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LC_ALL", "C");
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        c
    }

    /// Starts the server on its port and waits until it accepts a login.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let mut cmd = self.command("postgres");
        if self.tls {
            cmd.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!(
                    "ssl_cert_file={}",
                    self.dir.path().join("server.crt").display()
                ))
                .arg("-c")
                .arg(format!(
                    "ssl_key_file={}",
                    self.dir.path().join("server.key").display()
                ));
        }
        let child = cmd
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .arg("-c")
            .arg(if self.listen_all {
                "listen_addresses=*"
            } else {
                "listen_addresses=127.0.0.1"
            })
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.psql("postgres", "SELECT 1").is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL never accepted a login; its log: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A streaming replica of `primary` (`pg_basebackup -R -X stream`: the standby's settings
    /// and the primary's connection written by pg_basebackup itself), started on a port of its
    /// own. The primary's own settings come with the base backup.
    pub fn replica_of(primary: &PgServer) -> Self {
        assert!(!primary.tls, "a replica of a TLS server is not made here");
        let dir = tempfile::tempdir().unwrap();
        if let Some((uid, gid)) = primary.owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let mut replica = Self {
            dir,
            bin: primary.bin.clone(),
            port: crate::free_port(),
            owner: primary.owner,
            child: None,
            tls: false,
            listen_all: primary.listen_all,
        };
        let out = replica
            .command("pg_basebackup")
            .env("PGPASSWORD", PASSWORD)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                USER,
            ])
            .arg("-D")
            .arg(replica.data())
            .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        replica.launch();
        replica
    }

    /// Promotes a standby to a primary (`pg_ctl promote`, waiting until it takes writes).
    pub fn promote(&self) {
        let out = self
            .command("pg_ctl")
            .arg("promote")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "60"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kills the server at once (SIGKILL to the postmaster), as a lost machine would stop it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (fast shutdown: sessions are cut, committed data stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT is PostgreSQL's fast shutdown.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs `sql` in `db` with psql; its output, or its error.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = self
            .command("psql")
            .env("PGPASSWORD", PASSWORD)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-d", db, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A new, empty database and the URL a gateway connects to it with.
    pub fn database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        self.url(name)
    }

    /// The URL a client logs in to `db` with, over plain TCP (`sslmode=disable`: the gateway
    /// requires TLS when a URL names no `sslmode`); a TLS server's tests say `sslmode=require`.
    pub fn url(&self, db: &str) -> String {
        url_at(self.port, db)
    }

    /// The server's directory (its data, log and certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The URL a client logs in to `db` with through `port` on loopback (a relay in front of a
/// server), over plain TCP as [`PgServer::url`].
pub fn url_at(port: u16, db: &str) -> String {
    format!("postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{db}?sslmode=disable")
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
