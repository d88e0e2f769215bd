//! A site on a PostgreSQL control plane: `backup take --database-url` dumps the control plane
//! with the real `pg_dump` into the backup (age-encrypted, checksummed and signed with the
//! rest), the site is lost, and `restore --database-url` loads it with the real `pg_restore`
//! into a new, empty database; a gateway on that database serves the same agents, whose tokens
//! work, and the same policies. A non-empty database and a missing URL are refused, and the
//! database's password is in no output and no file of the backup.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output};

use meshguard_testkit::pg;
use serde_json::Value;

use super::support::{Gateway, bins};
use super::{
    ORIGIN, age_identity, bundle_with, destroy, fails, keys, ok, policy, put_keys_back,
    restore_args, take_backup, the_backup_checks_with_stock_tools,
};

/// What a `meshguard-bundle` run on the control plane has in its environment: the database's
/// URL in `DATABASE_URL` (as an operator's job would have it) and PostgreSQL's client tools of
/// the server's version (`PG_BIN`).
fn on_database(url: &str) -> [(&'static str, OsString); 2] {
    [
        ("DATABASE_URL", url.into()),
        ("PG_BIN", pg::bin_dir().into()),
    ]
}

fn bundle_on(database_url: &str, args: &[&str], cwd: &Path) -> Output {
    bundle_with(args, cwd, &on_database(database_url))
}

fn pg_site(dir: &Path, database_url: &str) -> Gateway {
    Gateway::spawn(
        dir,
        &[
            ("AUDIT_ORIGIN", ORIGIN.into()),
            ("RATE_LIMIT_RPM", "0".into()),
            ("POLICIES_DIR", dir.join("policies").into()),
            ("DATABASE_URL", database_url.into()),
        ],
    )
}

/// The names of a listing's items (`agents` or `policies`), sorted.
fn names(gw: &Gateway, what: &str) -> Vec<String> {
    let list = gw.get(&format!("/admin/{what}"));
    let mut names: Vec<String> = list[what]
        .as_array()
        .unwrap_or_else(|| panic!("/admin/{what} lists {what}: {list}"))
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_postgresql_control_plane_is_backed_up_with_pg_dump_and_restored_with_pg_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    keys(t);
    let recipient = age_identity(t);
    let server = pg::PgServer::start();
    let site_url = server.database("site");
    let gw = pg_site(&t.join("site"), &site_url);
    policy(&gw);
    let tokens = [
        gw.agent("clerk", "verified"),
        gw.agent("auditor", "trusted"),
    ];
    let (agents, policies) = (names(&gw, "agents"), names(&gw, "policies"));
    let said = ok(
        take_backup(&gw.url, &recipient, &on_database(&site_url), t),
        "backup take with pg_dump",
    );
    assert!(said.contains("control-plane.pgdump.age"), "{said}");
    let backup = t.join("backup");
    the_backup_checks_with_stock_tools(&backup, t);
    the_dump_is_sealed_and_the_password_is_nowhere(&backup, &said);
    destroy(gw, &t.join("site"), &t.join("key-backup"));

    refusals(t, &site_url);
    let restored_url = server.database("restored");
    let said = ok(
        bundle_on(&restored_url, &restore_args("restored"), t),
        "restore with pg_restore",
    );
    assert!(!said.contains(pg::PASSWORD), "{said}");
    put_keys_back(&t.join("key-backup"), &t.join("restored"));
    let gw = pg_site(&t.join("restored"), &restored_url);
    assert_eq!(names(&gw, "agents"), agents);
    assert_eq!(names(&gw, "policies"), policies);
    for token in &tokens {
        assert_eq!(
            gw.check(token, "read:after-restore"),
            200,
            "the token works"
        );
    }
}

/// The manifest names the encrypted dump and the tool that wrote it; no clear dump lies beside
/// it; the password is in no file of the backup and not in what the command printed.
fn the_dump_is_sealed_and_the_password_is_nowhere(backup: &Path, said: &str) {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backup.join("BACKUP.json")).unwrap()).unwrap();
    let part = &manifest["controlPlane"];
    assert_eq!(part["file"], "control-plane.pgdump.age", "{manifest}");
    assert_eq!(part["encrypted"], true, "{manifest}");
    assert!(
        part["dumpedWith"]
            .as_str()
            .is_some_and(|v| v.starts_with("pg_dump (PostgreSQL)")),
        "{manifest}"
    );
    assert!(part["objects"].as_u64() > Some(0), "{manifest}");
    assert!(!backup.join("control-plane.pgdump").exists());
    assert!(!said.contains(pg::PASSWORD), "{said}");
    for entry in meshguard_bundler::fsx::walk(backup).unwrap() {
        let bytes = std::fs::read(backup.join(&entry)).unwrap();
        assert!(
            !bytes
                .windows(pg::PASSWORD.len())
                .any(|w| w == pg::PASSWORD.as_bytes()),
            "{entry} holds the database password"
        );
    }
}

/// A restore without a database to load the control plane into, and one into a database that
/// is not empty (the site's own), are refused, naming why, with no password, and write
/// nothing.
fn refusals(t: &Path, site_url: &str) {
    let restore = restore_args("nowhere");
    let out = Command::new(bins(&["meshguard-bundle"]).join("meshguard-bundle"))
        .args(restore)
        .current_dir(t)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let err = fails(out, "restore with no database named");
    assert!(err.contains("--database-url"), "{err}");
    let err = fails(
        bundle_on(site_url, &restore, t),
        "restore into a database in use",
    );
    assert!(err.contains("is not empty"), "{err}");
    assert!(!err.contains(pg::PASSWORD), "{err}");
    assert!(
        !t.join("nowhere").exists(),
        "a refused restore writes nothing"
    );
}
