//! The PostgreSQL control plane in a backup, driven with PostgreSQL's own tools, not
//! reimplemented: `pg_dump --format=custom` writes it into the backup, `pg_restore` loads it
//! into an empty database the operator names.
//!
//! The tools come from `PG_BIN` (a directory, e.g. `/usr/lib/postgresql/15/bin`) when set, else
//! from `PATH`; `pg_dump` must be of the server's major version or newer, as PostgreSQL says.
//! The operator's URL is libpq's (every host of a multi-host URL, `sslmode`,
//! `target_session_attrs`): the tools get it without its password, which goes in `PGPASSWORD`,
//! so it is never on a command line, in `BACKUP.json`, or in an error (a tool's message is
//! cleared of it too).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::ControlPlanePart;

/// The dump in a backup, clear or age-encrypted.
pub const DUMP: &str = "control-plane.pgdump";
pub const DUMP_AGE: &str = "control-plane.pgdump.age";

/// A PostgreSQL URL holding a password: what may be shown of it, and the password apart.
pub struct DatabaseUrl {
    /// The URL without its password: safe to print.
    shown: String,
    password: Option<String>,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl DatabaseUrl {
    /// Parses a `postgresql://` (or `postgres://`) URL, taking its password out.
    pub fn parse(url: &str) -> Result<Self> {
        let Some((scheme, rest)) = url
            .split_once("://")
            .filter(|(s, _)| *s == "postgresql" || *s == "postgres")
        else {
            bail!("the database URL must start with postgresql:// (libpq's URL form)");
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let Some((userinfo, hosts)) = authority.rsplit_once('@') else {
            return Ok(Self {
                shown: url.to_owned(),
                password: None,
            });
        };
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(percent_decode(p)?)),
            None => (userinfo, None),
        };
        Ok(Self {
            shown: format!("{scheme}://{user}@{hosts}{tail}"),
            password,
        })
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A tool's command with the URL's password in its environment.
    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool_path(tool));
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
        cmd
    }

    /// `text` with the password blanked out, for a tool's message.
    fn cleared(&self, text: &str) -> String {
        match &self.password {
            Some(p) if !p.is_empty() => text.replace(p.as_str(), "********"),
            _ => text.to_owned(),
        }
    }
}

/// Decodes `%XX` escapes (a password may hold `@`, `:` or `/` only escaped).
fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .context("a % in the URL's password is not %XX")?;
            out.push(u8::from_str_radix(hex, 16).context("a % in the URL's password is not %XX")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("the URL's password is not UTF-8 once decoded")
}

/// A PostgreSQL client tool: in `PG_BIN` when set, else found on `PATH`.
fn tool_path(tool: &str) -> PathBuf {
    std::env::var_os("PG_BIN").map_or_else(|| PathBuf::from(tool), |d| PathBuf::from(d).join(tool))
}

/// Runs `cmd`; its stdout, or an error naming `what` with the tool's message (no password).
fn run(mut cmd: Command, url: &DatabaseUrl, what: &str) -> Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().with_context(|| {
        format!("cannot run {program}: install PostgreSQL's client tools, or set PG_BIN to their directory")
    })?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            url.shown(),
            url.cleared(String::from_utf8_lossy(&out.stderr).trim())
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Dumps the control plane at `url` into the backup `out` (`pg_dump --format=custom`, checked
/// readable by `pg_restore --list`), encrypted to `recipients` when there are any, written
/// atomically; what the manifest says of it.
pub fn dump(
    url: &DatabaseUrl,
    out: &Path,
    recipients: &[age::x25519::Recipient],
) -> Result<ControlPlanePart> {
    let staged = tempfile::Builder::new()
        .prefix(".control-plane.partial")
        .tempfile_in(out)?;
    let mut cmd = url.command("pg_dump");
    cmd.args(["--format=custom", "--no-password", "--file"])
        .arg(staged.path())
        .arg(format!("--dbname={}", url.shown()));
    run(cmd, url, "pg_dump of the control plane")?;
    let listed = list(url, staged.path())?;
    let mut version = url.command("pg_dump");
    version.arg("--version");
    let version = run(version, url, "pg_dump --version")?;
    let bytes = std::fs::read(staged.path())?;
    let (file, encrypted) = super::write_sealed(out, bytes, (DUMP, DUMP_AGE), recipients)?;
    Ok(ControlPlanePart {
        file,
        encrypted,
        format: "pg_dump --format=custom".to_owned(),
        dumped_with: version.trim().to_owned(),
        objects: listed,
        holds: "the PostgreSQL control plane: agents, policies, alert channels (secrets sealed), changes, settings, the central audit index".to_owned(),
    })
}

/// How many objects `pg_restore --list` reads in a dump: it must read it whole.
fn list(url: &DatabaseUrl, dump: &Path) -> Result<u64> {
    let mut cmd = url.command("pg_restore");
    cmd.arg("--list").arg(dump);
    let toc = run(cmd, url, "pg_restore --list of the dump")?;
    Ok(toc
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .count() as u64)
}

/// Refuses a database that holds any table, view or sequence of its own: the control plane is
/// loaded into an empty one only.
pub fn refuse_non_empty(url: &DatabaseUrl) -> Result<()> {
    let mut cmd = url.command("psql");
    cmd.args([
        "--no-password",
        "--no-psqlrc",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
    ])
    .arg(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%'",
    )
    .arg(format!("--dbname={}", url.shown()));
    let count = run(cmd, url, "reading the target database")?;
    if count.trim() != "0" {
        bail!(
            "the database {} is not empty ({} relations): the control plane is restored into a new, empty database only (CREATE DATABASE, then name it)",
            url.shown(),
            count.trim()
        );
    }
    Ok(())
}

/// Loads the dump (decrypted already, when it was encrypted) into the empty database at
/// `url` in one transaction (`pg_restore --single-transaction --exit-on-error`): all of it
/// or nothing. Ownership and grants are the target's (`--no-owner --no-privileges`).
pub fn load(url: &DatabaseUrl, dump: &[u8]) -> Result<()> {
    let mut staged = tempfile::NamedTempFile::new()?;
    std::io::Write::write_all(&mut staged, dump)?;
    list(url, staged.path())?;
    let mut cmd = url.command("pg_restore");
    cmd.args([
        "--single-transaction",
        "--exit-on-error",
        "--no-owner",
        "--no-privileges",
        "--no-password",
    ])
    .arg(format!("--dbname={}", url.shown()))
    .arg(staged.path());
    run(cmd, url, "pg_restore of the control plane")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::DatabaseUrl;

    #[test]
    fn the_password_is_taken_out_of_every_form_of_url() {
        let table = [
            (
                "postgresql://mg:s3cr%40t@db-a:5432,db-b:5432/meshguard?sslmode=require&target_session_attrs=read-write",
                "postgresql://mg@db-a:5432,db-b:5432/meshguard?sslmode=require&target_session_attrs=read-write",
                Some("s3cr@t"),
            ),
            ("postgres://mg:pw@h/db", "postgres://mg@h/db", Some("pw")),
            ("postgresql://mg@h/db", "postgresql://mg@h/db", None),
            ("postgresql://h:5432/db", "postgresql://h:5432/db", None),
        ];
        for (url, shown, password) in table {
            let parsed = DatabaseUrl::parse(url).unwrap();
            assert_eq!(parsed.shown(), shown, "{url}");
            assert_eq!(parsed.password.as_deref(), password, "{url}");
            assert_eq!(format!("{parsed:?}"), shown, "Debug shows no password");
        }
        assert!(DatabaseUrl::parse("mysql://u:p@h/db").is_err());
        assert!(DatabaseUrl::parse("postgresql://u:bad%zz@h/db").is_err());
    }
}
