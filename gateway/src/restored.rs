//! A gateway started on a restored site says so in its own log: `meshguard-bundle restore`
//! leaves `restored.json` beside the database, and the first start records it as an audit entry
//! (event `restore`) before the first decision, then removes the file. The entry names the
//! backup, when it was taken, the log size it held, and the range of entries the operator named
//! as lost (the entries the site had after the backup, which the log no longer holds), if any.
//! A connected witness that cosigned more of the log than was restored stops the start unless
//! that range was named: no silent rewrite of history.

use meshguard_api::AuditEntry;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::state::AppState;

/// The marker's name, beside the database.
pub(crate) const MARKER: &str = "restored.json";
/// The marker's format, as `meshguard-bundle restore` writes it.
const FORMAT: &str = "meshguard-restore/v1";

/// What `meshguard-bundle restore` says about the restore.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Marker {
    format: String,
    /// The backup's name (its directory) and when it was taken.
    backup: String,
    taken_at: String,
    restored_at: String,
    /// The log the backup holds, and its size.
    origin: String,
    size: u64,
    /// The key that signed the backup (its id).
    signed_by: String,
    /// The log sizes between which the site is known to have held entries after the backup
    /// (entries `from + 1` to `to`), named by the operator: lost.
    #[serde(default)]
    lost: Option<Lost>,
}

#[derive(Debug, Deserialize)]
struct Lost {
    from: u64,
    to: u64,
}

/// Records the restore, durably, if this start follows one; then removes the marker.
pub(crate) async fn record_if_restored(state: &AppState) -> anyhow::Result<()> {
    let path = state.config.db_path.with_file_name(MARKER);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    let marker = parse(&text, &path, &state.config.audit_origin)?;
    let witnessed = witnesses_allow(state, &marker).await?;
    state
        .audit
        .append(entry(state, &marker, &witnessed))
        .await
        .map_err(|e| anyhow::anyhow!("cannot record the restore in the audit log: {e}"))?;
    std::fs::remove_file(&path).map_err(|e| {
        anyhow::anyhow!(
            "the restore is recorded; remove {} by hand: {e}",
            path.display()
        )
    })?;
    tracing::info!(backup = %marker.backup, size = marker.size, "restored site: recorded in the audit log");
    Ok(())
}

/// Asks each connected witness (`AUDIT_WITNESS_URLS`) how much of this log it cosigned. A
/// witness holding more than the restored log means entries the site had are gone: the start is
/// refused unless the restore named them lost (`--lost`) up to that size, so history is never
/// rewritten in silence. Returns, for the restore's entry, what each witness said.
async fn witnesses_allow(state: &AppState, m: &Marker) -> anyhow::Result<Vec<String>> {
    let mut said = Vec::new();
    for w in &state.config.audit_witness_urls {
        match crate::witness_push::holds_more_than(state, w, m.size).await {
            Ok(None) => said.push(format!("{}: holds no more than the restored log", w.name)),
            Ok(Some(held))
                if m.lost
                    .as_ref()
                    .is_some_and(|l| l.from == m.size && l.to >= held) =>
            {
                said.push(format!("{}: cosigned size {held}, named lost", w.name));
            }
            Ok(Some(held)) => anyhow::bail!(
                "the witness {} has cosigned this log up to size {held}, and the restored log ends at size {}: the entries after it are gone. Restore again with `--lost {}..{held}` to record them as lost (the witness will refuse this log's new checkpoints: it holds another history)",
                w.name,
                m.size,
                m.size
            ),
            // A witness that cannot be asked is said in the entry, not waited for: a restore is
            // what a site does when things are down.
            Err(e) => said.push(format!("{}: could not be asked ({e})", w.name)),
        }
    }
    Ok(said)
}

/// The marker, checked: its format, and the log it restored is this gateway's.
fn parse(text: &str, path: &std::path::Path, origin: &str) -> anyhow::Result<Marker> {
    let marker: Marker = serde_json::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a restore record ({e}); it was written by meshguard-bundle restore",
            path.display()
        )
    })?;
    if marker.format != FORMAT {
        anyhow::bail!(
            "{} is a restore record of format {:?}; this gateway reads {FORMAT}",
            path.display(),
            marker.format
        );
    }
    if marker.origin != origin {
        anyhow::bail!(
            "the restored backup holds the log {:?}, and this gateway's AUDIT_ORIGIN is {origin:?}: start it with AUDIT_ORIGIN={:?} to continue that log",
            marker.origin,
            marker.origin
        );
    }
    Ok(marker)
}

fn entry(state: &AppState, m: &Marker, witnessed: &[String]) -> AuditEntry {
    let mut meta = Map::new();
    if !witnessed.is_empty() {
        meta.insert("witnesses".into(), json!(witnessed));
    }
    meta.insert("backup".into(), json!(m.backup));
    meta.insert("takenAt".into(), json!(m.taken_at));
    meta.insert("restoredAt".into(), json!(m.restored_at));
    meta.insert("restoredSize".into(), json!(m.size));
    meta.insert("signedBy".into(), json!(m.signed_by));
    let lost = m
        .lost
        .as_ref()
        .map_or(Value::Null, |l| json!({"from": l.from, "to": l.to}));
    if !lost.is_null() {
        meta.insert("lost".into(), lost);
    }
    let reason = match &m.lost {
        Some(l) => format!(
            "restored from backup {} taken {}: entries 1 to {} restored; entries {} to {}, which the site held after it, are lost",
            m.backup,
            m.taken_at,
            m.size,
            l.from + 1,
            l.to
        ),
        None => format!(
            "restored from backup {} taken {}: entries 1 to {} restored; none named lost",
            m.backup, m.taken_at, m.size
        ),
    };
    AuditEntry {
        id: crate::ids::new_time_ordered_id("aud"),
        timestamp: crate::clock::now_rfc3339(),
        event: "restore".to_owned(),
        action: "system:restored".to_owned(),
        reason: Some(reason),
        trace_id: crate::ids::new_id("trace"),
        mode: state.config.mode.as_str().to_owned(),
        meta,
        ..AuditEntry::default()
    }
}
