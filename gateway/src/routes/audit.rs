//! `/admin/audit`: query, stats, verification, export, ingest and checkpoints of the audit log.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use meshguard_api::AuditList;
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::RawBody;
use crate::audit::AuditQuery;
use crate::auth::Admin;
use crate::error::ApiError;
use std::sync::Arc;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListQuery {
    limit: Option<usize>,
    decision: Option<String>,
    from: Option<String>,
    to: Option<String>,
    #[serde(alias = "agent_id")]
    agent_id: Option<String>,
    agent: Option<String>,
    action: Option<String>,
    #[serde(alias = "trace_id")]
    trace_id: Option<String>,
}

pub(super) fn check_time(field: &str, v: &Option<String>) -> Result<(), ApiError> {
    if let Some(t) = v {
        let ok = (t.len() == 10 && chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok())
            || chrono::DateTime::parse_from_rfc3339(t).is_ok();
        if !ok {
            return Err(ApiError::field(
                field,
                "expected a date (2026-01-31) or an RFC 3339 timestamp",
            ));
        }
    }
    Ok(())
}

/// A proof the gateway refuses to hand out because it does not check against the signed
/// root: evidence of tampering, said to the admin and logged.
fn inconsistent(message: String) -> ApiError {
    tracing::error!(%message, "audit proof refused");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "audit_inconsistent",
        message,
    )
}

async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    audit: &AuditLog,
    f: impl FnOnce(&crate::audit::Reader) -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    let reader = audit.reader();
    tokio::task::spawn_blocking(move || f(&reader))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// Lists, stats and exports read the index, which the log fills behind each durable group:
/// each waits (briefly) for the index to hold every entry durable when it was asked, and says
/// in this header how many it still lacked (0 when the answer is complete).
pub(crate) const INDEX_LAG: &str = "x-meshguard-audit-index-lag";

/// Waits up to 2 s for the index to catch up with the log; returns the entries it still lacks.
async fn index_lag(audit: &AuditLog) -> Result<u64, ApiError> {
    blocking(audit, |r| {
        Ok::<_, std::convert::Infallible>(r.wait_indexed(std::time::Duration::from_secs(2)))
    })
    .await
}

fn with_lag(lag: u64, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response
        .headers_mut()
        .insert(INDEX_LAG, axum::http::HeaderValue::from(lag));
    response
}

pub(super) async fn list(
    _: Admin,
    State(audit): State<AuditLog>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    if let Some(d) = &q.decision
        && d != "allow"
        && d != "deny"
    {
        return Err(ApiError::field("decision", "expected allow or deny"));
    }
    check_time("from", &q.from)?;
    check_time("to", &q.to)?;
    let query = AuditQuery {
        limit: q.limit.unwrap_or(50).clamp(1, 1000),
        decision: q.decision,
        from: q.from,
        to: q.to,
        agent: q.agent_id.or(q.agent),
        action: q.action,
        trace_id: q.trace_id,
    };
    let lag = index_lag(&audit).await?;
    let entries = blocking(&audit, move |r| r.query(&query)).await?;
    Ok(with_lag(lag, Json(AuditList { entries })))
}

#[derive(Debug, Deserialize)]
pub(super) struct StatsQuery {
    period: Option<String>,
}

pub(super) async fn stats(
    _: Admin,
    State(audit): State<AuditLog>,
    Query(q): Query<StatsQuery>,
) -> Result<Response, ApiError> {
    let period = q.period.unwrap_or_else(|| "24h".to_owned());
    let hours: i64 = if let Ok(h) = period.parse::<i64>() {
        h
    } else if let Some(d) = period.strip_suffix('d').and_then(|d| d.parse::<i64>().ok()) {
        d * 24
    } else if let Some(h) = period.strip_suffix('h').and_then(|h| h.parse::<i64>().ok()) {
        h
    } else {
        return Err(ApiError::field(
            "period",
            "expected 24h, 7d, 30d or a number of hours",
        ));
    };
    if !(1..=24 * 3650).contains(&hours) {
        return Err(ApiError::field(
            "period",
            "must be between 1 hour and 10 years",
        ));
    }
    let since = crate::clock::rfc3339(chrono::Utc::now() - chrono::Duration::hours(hours));
    let lag = index_lag(&audit).await?;
    let (total, allowed, denied, top) = blocking(&audit, move |r| r.stats(&since)).await?;
    let label = if hours % 24 == 0 {
        format!("{}d", hours / 24)
    } else {
        format!("{hours}h")
    };
    Ok(with_lag(
        lag,
        Json(json!({
            "total": total,
            "allowed": allowed,
            "denied": denied,
            "period": if hours == 24 { "24h".to_owned() } else { label },
            "topDeniedActions": top.into_iter().map(|(action, count)| json!({"action": action, "count": count})).collect::<Vec<_>>(),
        })),
    ))
}

pub(super) async fn verify(
    _: Admin,
    State(audit): State<AuditLog>,
    State(config): State<Arc<Config>>,
) -> Result<Response, ApiError> {
    let vkey = audit.vkey().to_owned();
    let origin = audit.origin().to_owned();
    let report = blocking(&audit, move |r| r.verify(&vkey, &origin)).await?;
    let cosigned = blocking(&audit, |r| r.cosignatures()).await?;
    let (witnessed, problem) = witness_report(&config, &cosigned);
    let mut body = serde_json::to_value(&report).map_err(ApiError::internal)?;
    body["witnesses"] = witnessed;
    if let Some(problem) = problem
        && report.valid
    {
        body["valid"] = json!(false);
        body["firstBad"] = json!({"problem": problem});
    }
    if body["valid"] != json!(true) {
        tracing::error!(problem = %body["firstBad"], "audit log verification failed");
    }
    Ok((StatusCode::OK, Json(body)).into_response())
}

fn witness_keys(config: &Config) -> Vec<meshguard_tlog::note::Vkey> {
    use meshguard_tlog::note::{COSIGNATURE_V1, Vkey};
    config
        .audit_witnesses
        .iter()
        .filter_map(|w| Vkey::parse_of_type(w, COSIGNATURE_V1).ok())
        .collect()
}

/// The witness proof cache checked against the stored checkpoints: every cosignature by a
/// configured witness must verify on the checkpoint now stored at its size (a checkpoint
/// replaced after it was cosigned is a rewritten history), and the latest checkpoint cosigned
/// by a quorum is reported.
fn witness_report(
    config: &Config,
    cosigned: &[(crate::audit::Cosignature, Option<String>)],
) -> (Value, Option<String>) {
    let keys = witness_keys(config);
    let quorum = config.audit_witness_quorum;
    let mut problem = None;
    let mut by_size: std::collections::BTreeMap<u64, usize> = Default::default();
    for (c, note) in cosigned {
        let Some(key) = keys.iter().find(|k| k.name == c.witness) else {
            continue;
        };
        let ok = match note {
            Some(n) => meshguard_tlog::note::verify_cosignature(n, &c.line, key).is_ok(),
            None => false,
        };
        if ok {
            *by_size.entry(c.size).or_default() += 1;
        } else if problem.is_none() {
            problem = Some(format!(
                "the checkpoint of size {} is not the one witness {} cosigned{}: the log's history was rewritten after it was witnessed",
                c.size,
                c.witness,
                if note.is_none() { " (it is gone)" } else { "" }
            ));
        }
    }
    let latest = by_size
        .iter()
        .rev()
        .find(|(_, n)| quorum > 0 && **n >= quorum)
        .map(|(s, _)| *s);
    let mut report = json!({
        "configured": keys.iter().map(|k| k.name.clone()).collect::<Vec<_>>(),
        "quorum": quorum,
        "cosignatures": by_size.values().sum::<usize>(),
    });
    if let Some(size) = latest {
        report["latestWitnessedSize"] = json!(size);
    }
    (report, problem)
}

/// The cosignatures stored for the latest checkpoint, or for `size`.
pub(super) async fn cosignatures(
    _: Admin,
    State(audit): State<AuditLog>,
    State(config): State<Arc<Config>>,
) -> Result<Response, ApiError> {
    let cosigned = blocking(&audit, |r| r.cosignatures()).await?;
    let (witnessed, _) = witness_report(&config, &cosigned);
    let rows: Vec<&crate::audit::Cosignature> = cosigned.iter().map(|(c, _)| c).collect();
    Ok(Json(json!({"cosignatures": rows, "witnesses": witnessed})).into_response())
}

/// Takes a witness's answer (response.txt of `meshguard-witness cosign`, or a tlog-witness
/// HTTP answer): each cosignature line must be by a configured witness and verify on one of
/// this log's recent checkpoints; then it is kept in the witness proof cache.
pub(super) async fn add_cosignatures(
    _: Admin,
    State(audit): State<AuditLog>,
    State(config): State<Arc<Config>>,
    body: String,
) -> Result<Response, ApiError> {
    let (rows, added, witnessed) = accept_cosignatures(&audit, &config, &body).await?;
    Ok((
        StatusCode::OK,
        Json(json!({"accepted": rows, "new": added, "witnesses": witnessed})),
    )
        .into_response())
}

/// Checks and keeps cosignature lines: each must be by a configured witness and verify on one of
/// this log's recent checkpoints. Returns what was accepted, how many were new, and the
/// witness report after.
pub(crate) async fn accept_cosignatures(
    audit: &AuditLog,
    config: &Config,
    body: &str,
) -> Result<(Vec<crate::audit::Cosignature>, usize, Value), ApiError> {
    let keys = witness_keys(config);
    if keys.is_empty() {
        return Err(ApiError::conflict(
            "no witness is configured; set AUDIT_WITNESSES to the witnesses' keys",
        ));
    }
    let recent = blocking(audit, |r| r.checkpoints(1000)).await?;
    let mut rows = Vec::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let name = line
            .strip_prefix("\u{2014} ")
            .and_then(|r| r.split(' ').next())
            .ok_or_else(|| {
                ApiError::field("body", format!("{line:?} is not a cosignature line"))
            })?;
        let key = keys.iter().find(|k| k.name == name).ok_or_else(|| {
            ApiError::field(
                "body",
                format!("{name} is not among AUDIT_WITNESSES; its cosignature is not accepted"),
            )
        })?;
        let found = recent.iter().find_map(|(size, note)| {
            meshguard_tlog::note::verify_cosignature(note, line, key)
                .ok()
                .map(|t| (*size, t))
        });
        let (size, cosigned_at) = found.ok_or_else(|| {
            ApiError::field(
                "body",
                format!("the cosignature by {name} does not verify on any of this log's last {} checkpoints", recent.len()),
            )
        })?;
        rows.push(crate::audit::Cosignature {
            size,
            witness: name.to_owned(),
            line: line.trim_end().to_owned(),
            cosigned_at,
        });
    }
    if rows.is_empty() {
        return Err(ApiError::field("body", "no cosignature line"));
    }
    let added = audit
        .add_cosignatures(rows.clone())
        .await
        .map_err(ApiError::internal)?;
    let cosigned = blocking(audit, |r| r.cosignatures()).await?;
    let (witnessed, _) = witness_report(config, &cosigned);
    Ok((rows, added, witnessed))
}

#[derive(Debug, Deserialize)]
pub(super) struct ExportQuery {
    source: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

/// JSON lines, oldest first; page with `after=<last seq>`.
///
/// Up to a million lines, streamed: read from the index a page at a time and sent as each page
/// is ready, so the gateway holds one page, never the whole export. The export stops at the
/// last entry indexed when it was asked (the `x-meshguard-audit-index-lag` header describes
/// that moment). A page that cannot be read ends the body early, which the client sees as a
/// broken transfer, never as a shorter export that looks complete.
pub(super) async fn export(
    _: Admin,
    State(audit): State<AuditLog>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    const PAGE: usize = 1_000;
    let limit = q.limit.unwrap_or(100_000).clamp(1, 1_000_000);
    let lag = index_lag(&audit).await?;
    let through = blocking(&audit, |r| {
        Ok::<_, std::convert::Infallible>(r.indexed_through())
    })
    .await?;
    let source = q.source;
    let start = (q.after.unwrap_or(0), limit);
    let pages = futures_util::stream::try_unfold(start, move |(after, left)| {
        let audit = audit.clone();
        let source = source.clone();
        async move {
            if left == 0 || after >= through {
                return Ok::<_, ApiError>(None);
            }
            let page = PAGE.min(left);
            let (chunk, read, last) = blocking(&audit, move |r| {
                let mut chunk = Vec::with_capacity(page * 700);
                r.export_jsonl(source.as_deref(), after, page, through, &mut chunk)
                    .map(|(read, last)| (chunk, read, last))
            })
            .await?;
            let Some(last) = last else {
                return Ok(None);
            };
            let left = if read < page { 0 } else { left - read };
            Ok(Some((axum::body::Bytes::from(chunk), (last, left))))
        }
    });
    let pages = futures_util::TryStreamExt::map_err(pages, |e: ApiError| {
        tracing::error!(
            error = e.message(),
            "audit export stopped: a page could not be read"
        );
        std::io::Error::other(e.message().to_owned())
    });
    Ok(with_lag(
        lag,
        (
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            axum::body::Body::from_stream(pages),
        ),
    ))
}

/// Merges a disconnected sidecar's export, carried by hand: what the sidecar's
/// `GET /sidecar/export` gives, its entries with a checkpoint signed by its key. The entries
/// are taken only if they rebuild the tree that checkpoint signs, and only under the key the
/// sidecar's origin was registered with (its first heartbeat or export). All or nothing;
/// entries already held are skipped. Bare export lines, which anyone could have made, are
/// refused.
pub(super) async fn ingest(
    _: Admin,
    State(state): State<AppState>,
    _headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Result<Json<Value>, ApiError> {
    // A signed export is one JSON object; export lines (one object per line, the old form)
    // carry no checkpoint and are refused.
    let one_object = serde_json::from_slice::<Value>(&bytes)
        .is_ok_and(|v| v.get("checkpoint").is_some() || v.get("origin").is_some());
    if !one_object {
        return Err(ApiError::bad_request(
            "an export must carry its sidecar's checkpoint, signed by the sidecar's key: take it from the sidecar with GET /sidecar/export (bare export lines are not accepted: anyone could have made them)",
        ));
    }
    let req: crate::sidecar::HeartbeatRequest = super::body::parse_json(&bytes)?;
    let (before, after) = crate::sidecar::ingest_export(&state, req).await?;
    tracing::info!(
        inserted = after - before,
        held = after,
        "sidecar export ingested"
    );
    Ok(Json(json!({"inserted": after - before, "held": after})))
}

/// The log's checkpoint keys over time: which verifier key signs checkpoints of which sizes
/// (a rotated key's range ends at its handoff checkpoint, which both keys sign).
pub(super) async fn keys(_: Admin, State(audit): State<AuditLog>) -> Result<Response, ApiError> {
    let keys = blocking(&audit, |r| r.keys()).await?;
    Ok(
        Json(json!({"origin": audit.origin(), "current": audit.vkey(), "keys": keys}))
            .into_response(),
    )
}

/// The latest signed checkpoint (a C2SP signed note), signing a new one first if the log grew.
/// `POST /admin/audit/checkpoint`: signs a checkpoint of the log as it is now.
pub(super) async fn checkpoint(
    _: Admin,
    State(audit): State<AuditLog>,
) -> Result<Response, ApiError> {
    let note = audit.checkpoint().await.map_err(ApiError::internal)?;
    let vkey = audit.vkey().to_owned();
    Ok(Json(
        json!({"checkpoint": note.unwrap_or_default(), "vkey": vkey, "origin": audit.origin()}),
    )
    .into_response())
}

/// `GET /admin/audit/checkpoint`: the latest signed checkpoint (empty before the first) and
/// the log's key. A read: it signs nothing (POST does).
pub(super) async fn latest_checkpoint(
    _: Admin,
    State(audit): State<AuditLog>,
) -> Result<Response, ApiError> {
    let latest = blocking(&audit, |r| r.checkpoint_at(None)).await?;
    let vkey = audit.vkey().to_owned();
    Ok(Json(json!({
        "checkpoint": latest.map(|(_, note)| note).unwrap_or_default(),
        "vkey": vkey,
        "origin": audit.origin(),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct ProofQuery {
    id: String,
    /// The size of a signed checkpoint to prove against (one a witness cosigned, say) instead
    /// of the latest.
    size: Option<u64>,
}

/// A `c2sp.org/tlog-proof@v1` inclusion proof of one entry in the latest signed checkpoint (or
/// the one of `size`): evidence a disconnected verifier checks offline with the log's vkey.
pub(super) async fn proof(
    _: Admin,
    State(audit): State<AuditLog>,
    Query(q): Query<ProofQuery>,
) -> Result<Response, ApiError> {
    use base64::Engine;
    let id = q.id.clone();
    let at = q.size;
    let (seq, checkpoint) = blocking(&audit, move |r| {
        Ok::<_, rusqlite::Error>((r.seq_of(&id)?, r.checkpoint_at(at)?))
    })
    .await?;
    let seq = seq.ok_or_else(|| ApiError::not_found("audit entry", &q.id))?;
    let (size, note) = match (checkpoint, at) {
        (None, Some(size)) => {
            return Err(ApiError::not_found("signed checkpoint of size", &size.to_string()));
        }
        (c, at) => c.filter(|(size, _)| *size >= seq).ok_or_else(|| {
            ApiError::conflict(if at.is_some() {
                "the checkpoint of that size does not cover this entry; ask for a larger one"
            } else {
                "no signed checkpoint covers this entry yet; POST /admin/audit/checkpoint, then ask again"
            })
        })?,
    };
    let (leaf, path) = blocking(&audit, move |r| r.inclusion(seq - 1, size)).await?;
    // Never hand out evidence that does not check: verify against the signed root first.
    let signed =
        crate::audit::note::verify_checkpoint(audit.vkey(), &note).map_err(ApiError::internal)?;
    if !crate::audit::merkle::verify_inclusion(seq - 1, size, &leaf, &path, &signed.root) {
        return Err(inconsistent(format!(
            "the inclusion proof for entry {seq} does not verify against the signed checkpoint of {size} entries: the log no longer matches what was signed; run GET /admin/audit/verify to find the altered entry"
        )));
    }
    let mut text = format!("c2sp.org/tlog-proof@v1\nindex {}\n", seq - 1);
    for h in path {
        text.push_str(&base64::engine::general_purpose::STANDARD.encode(h));
        text.push('\n');
    }
    text.push('\n');
    text.push_str(&note);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct ConsistencyQuery {
    from: u64,
    /// `tlog-witness`: the body of a C2SP tlog-witness `add-checkpoint` request as text (what a
    /// witness on removable media reads as request.txt) instead of JSON.
    format: Option<String>,
}

/// The latest signed checkpoint `(size, note)` and the base64 lines proving the log of `from`
/// entries is a prefix of it, checked against its signed root before they are handed out.
pub(crate) async fn consistency_proof(
    audit: &AuditLog,
    from: u64,
) -> Result<(u64, String, Vec<String>), ApiError> {
    use base64::Engine;
    let latest = blocking(audit, |r| r.latest_checkpoint()).await?;
    let (size, note) = latest.ok_or_else(|| {
        ApiError::conflict("no signed checkpoint yet; POST /admin/audit/checkpoint first")
    })?;
    if from > size {
        return Err(ApiError::field(
            "from",
            format!("is larger than the latest checkpoint size {size}"),
        ));
    }
    let (proof, old_root) = blocking(audit, move |r| r.consistency(from, size)).await?;
    let signed =
        crate::audit::note::verify_checkpoint(audit.vkey(), &note).map_err(ApiError::internal)?;
    if !crate::audit::merkle::verify_consistency(from, size, &proof, &old_root, &signed.root) {
        return Err(inconsistent(format!(
            "the consistency proof {from} -> {size} does not verify against the signed checkpoint: the log no longer matches what was signed; run GET /admin/audit/verify to find the altered entry"
        )));
    }
    let lines = proof
        .iter()
        .map(|h| base64::engine::general_purpose::STANDARD.encode(h))
        .collect();
    Ok((size, note, lines))
}

/// The body of a C2SP tlog-witness `add-checkpoint` request.
pub(crate) fn witness_request(from: u64, lines: &[String], note: &str) -> String {
    let mut body = format!("old {from}\n");
    for l in lines {
        body.push_str(l);
        body.push('\n');
    }
    body.push('\n');
    body.push_str(note);
    body
}

/// Base64 lines proving the log of `from` entries is a prefix of the latest signed checkpoint.
pub(super) async fn consistency(
    _: Admin,
    State(audit): State<AuditLog>,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Response, ApiError> {
    let (size, note, lines) = consistency_proof(&audit, q.from).await?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(
            json!({"from": q.from, "to": size, "proof": lines, "checkpoint": note}),
        )
        .into_response()),
        Some("tlog-witness") => {
            let body = witness_request(q.from, &lines, &note);
            Ok((
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; charset=utf-8",
                )],
                body,
            )
                .into_response())
        }
        Some(other) => Err(ApiError::field(
            "format",
            format!("{other:?} is not a format; use json or tlog-witness"),
        )),
    }
}

/// The audit log as a transparency log serves it, for witnesses and monitors that follow it
/// (C2SP tlog-tiles): the latest signed checkpoint, and the hash tiles, read-only and without
/// authentication (they hold hashes only). Entry bundles hold the decisions themselves and are
/// served under the admin API ([`log_entries`]).
pub(super) async fn log_checkpoint(State(audit): State<AuditLog>) -> Result<Response, ApiError> {
    let path = audit
        .reader()
        .tiles()
        .dir()
        .join(crate::audit::tiles::CHECKPOINT);
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok((
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no checkpoint has been signed yet",
        )),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// `GET /audit/log/tile/<L>/<N>[.p/<W>]`: a hash tile.
pub(super) async fn log_tile(
    State(audit): State<AuditLog>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let id = crate::audit::tiles::TileId::parse(&path).filter(|t| t.level.is_some());
    serve_tile(&audit, id, &path).await
}

/// `GET /admin/audit/log/tile/entries/<N>[.p/<W>]`: an entry bundle (admin only: the entries
/// are the decisions).
pub(super) async fn log_entries(
    _: Admin,
    State(audit): State<AuditLog>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let id = crate::audit::tiles::TileId::parse(&format!("entries/{path}"))
        .filter(|t| t.level.is_none());
    serve_tile(&audit, id, &path).await
}

async fn serve_tile(
    audit: &AuditLog,
    id: Option<crate::audit::tiles::TileId>,
    asked: &str,
) -> Result<Response, ApiError> {
    let Some(id) = id else {
        return Err(ApiError::not_found("tile", asked));
    };
    let path = audit.reader().tiles().dir().join(id.path());
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            // A full tile never changes; a partial one is replaced by the full tile later.
            let cache = if id.width == crate::audit::tiles::WIDTH {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            Ok((
                [
                    (header::CONTENT_TYPE, "application/octet-stream"),
                    (header::CACHE_CONTROL, cache),
                ],
                bytes,
            )
                .into_response())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApiError::not_found("tile", asked))
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}
