//! One suite of store tests, run against both backends: the embedded SQLite file and a real
//! PostgreSQL server started for the test (`meshguard_testkit::pg`).

use std::sync::Arc;

use meshguard_api::{ChannelType, Severity, Trigger};
use serde_json::json;

use super::{
    AgentRecord, ChangeDraft, ChangeFilter, ChannelRecord, PgStore, PolicyRecord, SqliteStore,
    Store, StoreError, Write,
};

use meshguard_testkit::pg;

fn draft(n: u32, kind: &'static str, object: &str, operation: &'static str) -> ChangeDraft {
    ChangeDraft {
        id: format!("chg-{kind}-{n}"),
        timestamp: format!("2026-12-03T10:00:{n:02}Z"),
        kind,
        object_id: object.into(),
        object_name: Some(format!("name-{object}")),
        operation,
        fields: vec!["name".into()],
        before: (operation != "create").then(|| json!({"n": n - 1})),
        after: Some(json!({"n": n})),
        old_digest: None,
        new_digest: Some(format!("sha256:{n:064x}")),
        approver: Some("ops@example.com".into()),
        change_ticket: Some("CHG-1".into()),
        trace_id: None,
        idempotency_key: None,
    }
}

fn agent(id: &str, revision: i64) -> AgentRecord {
    AgentRecord {
        id: id.into(),
        name: format!("agent {id}"),
        trust_tier: "verified".into(),
        tags: vec!["a".into(), "b".into()],
        metadata: json!({"team": "payments", "n": 1})
            .as_object()
            .unwrap()
            .clone(),
        capabilities: vec!["read".into()],
        description: None,
        token_ttl: Some(3600),
        token_version: 1,
        revision,
        created_at: "2026-12-03T10:00:00Z".into(),
        updated_at: "2026-12-03T10:00:00Z".into(),
        revoked_at: None,
    }
}

fn policy(id: &str, name: &str, revision: i64) -> PolicyRecord {
    PolicyRecord {
        id: id.into(),
        name: name.into(),
        content: format!("name: {name}\nrules: []\n# r{revision}\n"),
        revision,
        created_at: "2026-12-03T10:00:00Z".into(),
        updated_at: "2026-12-03T10:00:00Z".into(),
    }
}

/// Every check, in order, on one empty store.
fn suite(store: &dyn Store) {
    agents(store);
    policies(store);
    channels(store);
    changes(store);
    alerts(store);
    capped(store);
    idempotent(store);
    store.ping().unwrap();
}

/// A create's Idempotency-Key is unique among changes and names what the create made; a
/// second create with the key is refused whole (no object, no change record).
fn idempotent(s: &dyn Store) {
    let keyed = |n: u32, object: &str| ChangeDraft {
        idempotency_key: Some("key-1".into()),
        ..draft(n, "agent", object, "create")
    };
    assert_eq!(s.created_with_key("key-1").unwrap(), None);
    s.save_agent(&agent("ag-key", 1), Write::Insert, &keyed(90, "ag-key"))
        .unwrap();
    assert_eq!(
        s.created_with_key("key-1").unwrap(),
        Some(("agent".to_owned(), "ag-key".to_owned()))
    );
    assert!(
        s.save_agent(&agent("ag-key-2", 1), Write::Insert, &keyed(91, "ag-key-2"))
            .is_err()
    );
    assert!(s.get_agent("ag-key-2").unwrap().is_none());
}

fn capped(s: &dyn Store) {
    // ag-0 is active, ag-1 revoked: one active agent.
    s.save_agent(
        &agent("ag-2", 1),
        Write::InsertCapped(2),
        &draft(20, "agent", "ag-2", "create"),
    )
    .unwrap();
    let before = s.last_change_seq().unwrap();
    let err = s
        .save_agent(
            &agent("ag-3", 1),
            Write::InsertCapped(2),
            &draft(21, "agent", "ag-3", "create"),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::AgentLimit(2)), "{err:?}");
    assert_eq!(s.get_agent("ag-3").unwrap(), None);
    assert_eq!(
        s.last_change_seq().unwrap(),
        before,
        "a refused create leaves no record"
    );
    let p = policy("pol-9", "capped", 1);
    assert!(
        s.save_policy(
            &p,
            Write::InsertCapped(1),
            &draft(22, "policy", "pol-9", "create")
        )
        .is_err(),
        "only agents are capped"
    );
}

fn agents(s: &dyn Store) {
    assert_eq!(s.get_agent("ag-1").unwrap(), None);
    let a = agent("ag-1", 1);
    s.save_agent(&a, Write::Insert, &draft(1, "agent", "ag-1", "create"))
        .unwrap();
    assert_eq!(s.get_agent("ag-1").unwrap(), Some(a.clone()));

    let mut revoked = a.clone();
    revoked.revision = 2;
    revoked.revoked_at = Some("2026-12-03T10:00:02Z".into());
    s.save_agent(
        &revoked,
        Write::Update { expected: 1 },
        &draft(2, "agent", "ag-1", "delete"),
    )
    .unwrap();
    assert_eq!(s.get_agent("ag-1").unwrap(), Some(revoked.clone()));

    // A writer that read revision 1 is refused, and writes neither the row nor a record.
    let before = s.last_change_seq().unwrap();
    let err = s
        .save_agent(
            &a,
            Write::Update { expected: 1 },
            &draft(3, "agent", "ag-1", "update"),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Stale), "{err:?}");
    assert_eq!(s.get_agent("ag-1").unwrap(), Some(revoked));
    assert_eq!(s.last_change_seq().unwrap(), before);

    assert!(
        s.save_agent(
            &a,
            Write::Delete { expected: 2 },
            &draft(4, "agent", "ag-1", "delete")
        )
        .is_err(),
        "agents are revoked, never deleted"
    );
    s.save_agent(
        &agent("ag-0", 1),
        Write::Insert,
        &draft(5, "agent", "ag-0", "create"),
    )
    .unwrap();
    let ids: Vec<String> = s.list_agents().unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(ids, ["ag-0", "ag-1"], "listed by creation time, then id");
}

fn policies(s: &dyn Store) {
    let p = policy("pol-1", "deny-writes", 1);
    s.save_policy(&p, Write::Insert, &draft(1, "policy", "pol-1", "create"))
        .unwrap();
    assert_eq!(
        s.get_policy_by_name("deny-writes").unwrap(),
        Some(p.clone())
    );
    let dup = policy("pol-2", "deny-writes", 1);
    let err = s
        .save_policy(&dup, Write::Insert, &draft(2, "policy", "pol-2", "create"))
        .unwrap_err();
    match err {
        StoreError::Conflict(m) => assert!(m.contains("deny-writes"), "{m}"),
        other => panic!("a second policy with the name is a conflict, not {other:?}"),
    }
    assert_eq!(s.get_policy("pol-2").unwrap(), None);

    let mut p2 = policy("pol-1", "deny-writes", 2);
    p2.content.push_str("# edited\n");
    s.save_policy(
        &p2,
        Write::Update { expected: 1 },
        &draft(3, "policy", "pol-1", "update"),
    )
    .unwrap();
    assert_eq!(s.get_policy("pol-1").unwrap().unwrap().content, p2.content);
    let err = s
        .save_policy(
            &p2,
            Write::Delete { expected: 1 },
            &draft(4, "policy", "pol-1", "delete"),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Stale), "{err:?}");
    s.save_policy(
        &p2,
        Write::Delete { expected: 2 },
        &draft(5, "policy", "pol-1", "delete"),
    )
    .unwrap();
    assert_eq!(s.get_policy("pol-1").unwrap(), None);
    assert!(s.list_policies().unwrap().is_empty());
}

fn channels(s: &dyn Store) {
    let c = ChannelRecord {
        id: "ch-1".into(),
        kind: ChannelType::Webhook,
        endpoint: "https://hooks.example.com/x".into(),
        name: Some("ops".into()),
        severity: Some(Severity::Warning),
        triggers: vec![Trigger::Deny, Trigger::RateLimit],
        slack_channel: None,
        webhook_secret: Some("whsec-do-not-log".into()),
        pagerduty_routing_key: None,
        enabled: true,
        revision: 1,
        created_at: "2026-12-03T10:00:00Z".into(),
        updated_at: "2026-12-03T10:00:00Z".into(),
    };
    s.save_channel(
        &c,
        Write::Insert,
        &draft(1, "alert_channel", "ch-1", "create"),
    )
    .unwrap();
    assert_eq!(s.get_channel("ch-1").unwrap(), Some(c.clone()));
    assert_eq!(s.list_channels().unwrap(), vec![c.clone()]);
    s.save_channel(
        &c,
        Write::Delete { expected: 1 },
        &draft(2, "alert_channel", "ch-1", "delete"),
    )
    .unwrap();
    assert_eq!(s.get_channel("ch-1").unwrap(), None);
}

fn changes(s: &dyn Store) {
    let all = s
        .list_changes(&ChangeFilter {
            limit: 100,
            ..ChangeFilter::default()
        })
        .unwrap();
    // agents 3 + policies 3 + channels 2 committed; refused writes left nothing.
    assert_eq!(all.len(), 8, "{all:#?}");
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(s.last_change_seq().unwrap(), all.last().unwrap().seq);
    let policy: Vec<_> = s
        .list_changes(&ChangeFilter {
            kind: Some("policy".into()),
            object_id: Some("pol-1".into()),
            limit: 100,
            ..ChangeFilter::default()
        })
        .unwrap();
    let ops: Vec<&str> = policy.iter().map(|c| c.operation.as_str()).collect();
    assert_eq!(ops, ["create", "update", "delete"]);
    assert_eq!(policy[0].rollback_ref, None);
    assert_eq!(
        policy[1].rollback_ref.as_deref(),
        Some(policy[0].id.as_str())
    );
    assert_eq!(policy[1].before, Some(json!({"n": 2})));
    assert_eq!(policy[1].approver.as_deref(), Some("ops@example.com"));
    // A policy is deployed when a snapshot holds it; agents and channels at commit.
    assert_eq!(policy[1].deployed_at, None);
    assert!(
        all.iter()
            .filter(|c| c.kind != "policy")
            .all(|c| c.deployed_at.is_some())
    );
    s.mark_deployed(&policy[1].id, "2026-12-03T11:00:00Z")
        .unwrap();
    s.mark_deployed(&policy[1].id, "2026-12-03T12:00:00Z")
        .unwrap();
    let after = s
        .list_changes(&ChangeFilter {
            after_seq: Some(policy[0].seq),
            limit: 1,
            ..ChangeFilter::default()
        })
        .unwrap();
    assert_eq!(after.len(), 1);
    let marked = s
        .list_changes(&ChangeFilter {
            object_id: Some("pol-1".into()),
            after_seq: Some(policy[0].seq),
            limit: 1,
            ..ChangeFilter::default()
        })
        .unwrap();
    assert_eq!(
        marked[0].deployed_at.as_deref(),
        Some("2026-12-03T11:00:00Z"),
        "the first deployment is kept"
    );
}

fn alerts(s: &dyn Store) {
    let failed = |id: &str, at: &str, n: u32| json!({"id": id, "channelId": "ch-1", "failedAt": at, "attempts": n});
    s.save_undelivered(&failed("al-1", "2026-12-03T10:00:01Z", 1))
        .unwrap();
    s.save_undelivered(&failed("al-2", "2026-12-03T10:00:02Z", 1))
        .unwrap();
    // The same alert on the same channel replaces its earlier failure.
    s.save_undelivered(&failed("al-1", "2026-12-03T10:00:03Z", 2))
        .unwrap();
    let kept = s.list_undelivered(10).unwrap();
    assert_eq!(
        kept,
        vec![
            failed("al-1", "2026-12-03T10:00:03Z", 2),
            failed("al-2", "2026-12-03T10:00:02Z", 1)
        ]
    );
    assert_eq!(s.list_undelivered(1).unwrap().len(), 1);

    let delivery =
        |id: &str, at: &str| json!({"id": id, "channelId": "ch-1", "at": at, "delivered": true});
    for (id, at) in [
        ("al-1", "2026-12-03T10:00:01Z"),
        ("al-2", "2026-12-03T10:00:05Z"),
        ("al-3", "2026-12-03T10:00:09Z"),
    ] {
        s.record_delivery(&delivery(id, at)).unwrap();
    }
    let window = s
        .list_deliveries(
            Some("2026-12-03T10:00:01Z"),
            Some("2026-12-03T10:00:09Z"),
            10,
        )
        .unwrap();
    assert_eq!(
        window,
        vec![
            delivery("al-1", "2026-12-03T10:00:01Z"),
            delivery("al-2", "2026-12-03T10:00:05Z")
        ]
    );
    assert_eq!(s.list_deliveries(None, None, 10).unwrap().len(), 3);
}

#[test]
fn the_sqlite_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("m.db")).unwrap();
    store
        .seal_secrets_with(&super::KeySource::file(&dir.path().join("secrets.key")))
        .unwrap();
    suite(&store);
}

#[test]
fn the_postgres_store_passes_the_suite_and_seals_secrets_at_rest() {
    let server = pg::PgServer::start();
    let url = server.database("suite");
    let dir = tempfile::tempdir().unwrap();
    let local = SqliteStore::open(&dir.path().join("local.db")).unwrap();
    let mut store = PgStore::open(&url, local, None).unwrap();
    store
        .seal_secrets_with(&super::KeySource::file(&dir.path().join("secrets.key")))
        .unwrap();
    suite(&store);
    let stored = server
        .psql("suite", "SELECT count(*) FROM alert_channels")
        .unwrap();
    assert_eq!(stored, "0");
    store
        .save_channel(
            &ChannelRecord {
                id: "ch-9".into(),
                kind: ChannelType::Pagerduty,
                endpoint: "https://events.pagerduty.com/v2/enqueue".into(),
                name: None,
                severity: None,
                triggers: vec![Trigger::All],
                slack_channel: None,
                webhook_secret: None,
                pagerduty_routing_key: Some("R0UTINGKEY-secret".into()),
                enabled: true,
                revision: 1,
                created_at: "2026-12-03T10:00:00Z".into(),
                updated_at: "2026-12-03T10:00:00Z".into(),
            },
            Write::Insert,
            &draft(9, "alert_channel", "ch-9", "create"),
        )
        .unwrap();
    let body = server
        .psql("suite", "SELECT body FROM alert_channels WHERE id = 'ch-9'")
        .unwrap();
    assert!(!body.contains("R0UTINGKEY"), "sealed at rest: {body}");
    assert_eq!(
        store
            .get_channel("ch-9")
            .unwrap()
            .unwrap()
            .pagerduty_routing_key
            .as_deref(),
        Some("R0UTINGKEY-secret")
    );
}

#[test]
fn postgres_down_is_unavailable_and_the_store_reconnects_when_it_is_back() {
    let mut server = pg::PgServer::start();
    let url = server.database("restart");
    let dir = tempfile::tempdir().unwrap();
    let local = SqliteStore::open(&dir.path().join("local.db")).unwrap();
    let store = Arc::new(PgStore::open(&url, local, None).unwrap());
    store
        .save_agent(
            &agent("ag-1", 1),
            Write::Insert,
            &draft(1, "agent", "ag-1", "create"),
        )
        .unwrap();
    server.stop();
    let err = store.get_agent("ag-1").unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let err = store
        .save_agent(
            &agent("ag-2", 1),
            Write::Insert,
            &draft(2, "agent", "ag-2", "create"),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let shown = err.to_string();
    assert!(!shown.contains(pg::PASSWORD), "{shown}");
    server.launch();
    // The pooled connections died with the server; the store connects again by itself.
    assert_eq!(store.get_agent("ag-1").unwrap().unwrap().id, "ag-1");
    store
        .save_agent(
            &agent("ag-2", 1),
            Write::Insert,
            &draft(2, "agent", "ag-2", "create"),
        )
        .unwrap();
    assert_eq!(store.list_agents().unwrap().len(), 2);
}

#[test]
fn a_bad_url_and_a_wrong_password_are_named_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let local = || SqliteStore::open(&dir.path().join("local.db")).unwrap();
    let err = PgStore::open("mysql://root:hunter2@db/x", local(), None).unwrap_err();
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    drop(err);
    let server = pg::PgServer::start();
    server.database("pw");
    let wrong = format!(
        "postgresql://{}:wrong-secret@127.0.0.1:{}/pw?sslmode=disable",
        pg::USER,
        server.port
    );
    let err = PgStore::open(&wrong, local(), None).unwrap_err();
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{}/pw", server.port)),
        "{err}"
    );
    assert!(!err.contains("wrong-secret"), "{err}");
}

#[test]
fn gateways_sharing_a_control_plane_must_seal_with_the_same_key() {
    use base64::Engine as _;
    let server = pg::PgServer::start();
    let url = server.database("keys");
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| {
        PgStore::open(
            &url,
            SqliteStore::open(&dir.path().join(name)).unwrap(),
            None,
        )
        .unwrap()
    };
    let value = |byte: u8| super::KeySource {
        file: dir.path().join("unused.key"),
        uri: None,
        value: Some(base64::engine::general_purpose::STANDARD.encode([byte; 32])),
    };
    open("a.db").seal_secrets_with(&value(7)).unwrap();
    open("b.db").seal_secrets_with(&value(7)).unwrap();
    let err = open("c.db")
        .seal_secrets_with(&super::KeySource::file(&dir.path().join("c.key")))
        .unwrap_err();
    assert!(err.contains("give every gateway the same key"), "{err}");
    let err = open("d.db").seal_secrets_with(&value(8)).unwrap_err();
    assert!(err.contains("same key"), "{err}");
    let mut short = value(7);
    short.value = Some("c2hvcnQ=".into());
    let err = open("e.db").seal_secrets_with(&short).unwrap_err();
    assert!(err.contains("SECRETS_KEY holds 5 bytes, not 32"), "{err}");
}

/// Runs openssl in `dir`; panics with its error.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tls_to_postgres_is_verified_against_the_site_ca_and_required_when_the_url_asks() {
    // A site CA and a server certificate for 127.0.0.1, made by openssl.
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        d,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=meshguard-it-ca",
            ],
        ]
        .concat(),
    );
    openssl(
        d,
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );

    let server = pg::PgServer::start_tls(&d.join("server.pem"), &d.join("server.key"));
    let url = server
        .database("tls")
        .replace("sslmode=disable", "sslmode=require");
    let dir = tempfile::tempdir().unwrap();
    let local = |name: &str| SqliteStore::open(&dir.path().join(name)).unwrap();

    let store = PgStore::open(&url, local("a.db"), Some(&d.join("ca.pem"))).unwrap();
    let encrypted: bool = store
        .read(|c| {
            c.query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
        })
        .unwrap()
        .get(0);
    assert!(encrypted, "the session runs over TLS");

    // Without the site's CA, the server's certificate is not trusted: no connection at all.
    let err = PgStore::open(&url, local("b.db"), None).unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    assert!(!err.contains(pg::PASSWORD), "{err}");

    a_plain_server_is_refused_unless_the_url_disables_tls(&d.join("ca.pem"));
}

/// A server without TLS is refused when the URL requires it, and when the URL names no sslmode
/// at all (libpq's `prefer` would fall back to clear text); the error says how to allow clear
/// text on purpose, and `sslmode=disable` does.
fn a_plain_server_is_refused_unless_the_url_disables_tls(ca: &std::path::Path) {
    let dir = tempfile::tempdir().unwrap();
    let local = |name: &str| SqliteStore::open(&dir.path().join(name)).unwrap();
    let plain = pg::PgServer::start();
    let disabled = plain.database("plain");
    let err = PgStore::open(
        &disabled.replace("sslmode=disable", "sslmode=require"),
        local("c.db"),
        Some(ca),
    )
    .unwrap_err();
    assert!(err.contains("cannot connect"), "{err}");
    let err = PgStore::open(
        disabled.trim_end_matches("?sslmode=disable"),
        local("d.db"),
        Some(ca),
    )
    .unwrap_err();
    assert!(
        err.contains("cannot connect") && err.contains("names no sslmode, so TLS is required"),
        "{err}"
    );
    assert!(!err.contains(pg::PASSWORD), "{err}");
    // "sslmode" in a name is not an sslmode: TLS is still required.
    let named = plain.database("not_sslmode_disable");
    let err = PgStore::open(
        named.trim_end_matches("?sslmode=disable"),
        local("f.db"),
        Some(ca),
    )
    .unwrap_err();
    assert!(err.contains("names no sslmode"), "{err}");
    // An sslmode given as the parser reads it, percent-encoded too, is taken as written.
    for url in [
        disabled.clone(),
        disabled.replace("sslmode=disable", "ssl%6Dode=disable"),
    ] {
        let store = PgStore::open(&url, local("e.db"), None).unwrap_or_else(|e| panic!("{e}"));
        drop(store);
    }
}

#[test]
fn gateways_creating_agents_at_once_never_overshoot_the_licensed_count() {
    let server = pg::PgServer::start();
    let url = server.database("capped");
    let dir = tempfile::tempdir().unwrap();
    // Eight gateways' stores, each creating one agent at the same moment, against a cap of 3.
    let stores: Vec<Arc<PgStore>> = (0..8)
        .map(|i| {
            let local = SqliteStore::open(&dir.path().join(format!("g{i}.db"))).unwrap();
            Arc::new(PgStore::open(&url, local, None).unwrap())
        })
        .collect();
    let start = Arc::new(std::sync::Barrier::new(stores.len()));
    let outcomes: Vec<Result<(), StoreError>> = stores
        .iter()
        .enumerate()
        .map(|(i, store)| {
            let (store, start) = (Arc::clone(store), Arc::clone(&start));
            std::thread::spawn(move || {
                let id = format!("ag-{i}");
                start.wait();
                store.save_agent(
                    &agent(&id, 1),
                    Write::InsertCapped(3),
                    &draft(i as u32 + 1, "agent", &id, "create"),
                )
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let created = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(created, 3, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .filter_map(|o| o.as_ref().err())
            .all(|e| matches!(e, StoreError::AgentLimit(3))),
        "{outcomes:?}"
    );
    assert_eq!(stores[0].list_agents().unwrap().len(), 3);
}
