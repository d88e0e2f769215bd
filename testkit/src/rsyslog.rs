//! A real rsyslogd (RFC 5424 over TCP, optionally TLS with gnutls) receiving what the gateway
//! sends its SIEM, writing each message to a file the tests read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A real rsyslogd on 127.0.0.1, writing what it receives to `out.log`, one line per message:
/// `PRI HOSTNAME APP-NAME MSGID STRUCTURED-DATA MSG`.
#[derive(Debug)]
pub struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    /// The TCP port it listens on.
    pub port: u16,
}

impl Rsyslog {
    /// Starts on a free port of 127.0.0.1; with TLS, a certificate for `localhost` issued by
    /// `ca.pem` in `dir`.
    pub fn start(dir: &Path, tls: bool) -> Self {
        Self::start_on(dir, tls, "127.0.0.1")
    }

    /// The same, listening on `address` (`0.0.0.0`: pods on a container network reach it).
    pub fn start_on(dir: &Path, tls: bool, address: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let port = crate::free_port();
        let d = dir.display();
        let (global_tls, module) = if tls {
            crate::ca::make_ca(dir, "server", "DNS:localhost,IP:127.0.0.1");
            (
                format!(
                    "DefaultNetstreamDriverCAFile=\"{d}/ca.pem\" DefaultNetstreamDriverCertFile=\"{d}/server.pem\" DefaultNetstreamDriverKeyFile=\"{d}/server.key\""
                ),
                r#"module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")"#,
            )
        } else {
            (String::new(), r#"module(load="imtcp")"#)
        };
        let conf = format!(
            r#"global(workDirectory="{d}" maxMessageSize="64k" {global_tls})
{module}
input(type="imtcp" port="{port}" address="{address}")
template(name="line" type="string" string="%pri% %hostname% %app-name% %msgid% %structured-data% %msg%\n")
action(type="omfile" file="{d}/out.log" template="line")
"#
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        let mut r = Self {
            child: None,
            dir: dir.to_owned(),
            port,
        };
        r.restart();
        r
    }

    /// (Re)starts rsyslogd with the same configuration and port, and waits until it listens.
    pub fn restart(&mut self) {
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("rsyslog.err"))
                    .unwrap(),
            )
            .spawn()
            .expect("rsyslogd (apt rsyslog rsyslog-gnutls; `cargo xtask test` installs it)");
        self.child = Some(child);
        crate::wait_for("rsyslogd to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    /// Stops rsyslogd the way a service manager does (SIGTERM), and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            Command::new("kill")
                .arg(c.id().to_string())
                .status()
                .unwrap();
            c.wait().unwrap();
        }
    }

    /// What it received, one line per message.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("out.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
