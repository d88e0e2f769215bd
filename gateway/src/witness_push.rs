//! Connected witnesses: the C2SP tlog-witness protocol over HTTP, for a witness the gateway can
//! reach (`AUDIT_WITNESS_URLS`). Disconnected witnesses keep working from files
//! (`meshguard-witness cosign`); both end in the same witness proof cache.
//!
//! A task follows the latest signed checkpoint. For each connected witness that has not
//! cosigned it, it POSTs `<url>/add-checkpoint` with the consistency proof from the size that
//! witness last cosigned (the largest size of its cosignatures in the cache; 0 at first). A 409
//! names the size the witness holds (the cache may lack a cosignature it made): the request is
//! made again from that size. The cosignature lines of a 200 are checked and kept exactly as
//! those carried on removable media are. A witness that is down or refuses is retried on the
//! next round and said once per change in the gateway log; decisions never wait for it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::state::AppState;

/// A witness reachable over HTTP: its name (as in its verifier key) and its URL prefix.
#[derive(Debug, Clone)]
pub(crate) struct Connected {
    pub(crate) name: String,
    pub(crate) url: String,
}

/// Parses `AUDIT_WITNESS_URLS`: `name=url` pairs, each name among `AUDIT_WITNESSES`.
pub(crate) fn parse(list: &[String], witnesses: &[String]) -> Result<Vec<Connected>, String> {
    let names: Vec<&str> = witnesses
        .iter()
        .filter_map(|w| w.split('+').next())
        .collect();
    let mut out = Vec::new();
    for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let (name, url) = item.split_once('=').ok_or_else(|| {
            format!("AUDIT_WITNESS_URLS item {item:?} is not name=url (e.g. witness.site.example/w1=https://witness.site.example)")
        })?;
        if !names.contains(&name) {
            return Err(format!(
                "AUDIT_WITNESS_URLS names {name}, which is not among AUDIT_WITNESSES; give its verifier key there first"
            ));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "AUDIT_WITNESS_URLS: {url:?} for {name} is not an http(s) URL"
            ));
        }
        out.push(Connected {
            name: name.to_owned(),
            url: url.trim_end_matches('/').to_owned(),
        });
    }
    Ok(out)
}

pub(crate) fn spawn(state: AppState, witnesses: Vec<Connected>) {
    tokio::spawn(async move { run(state, witnesses).await });
}

async fn run(state: AppState, witnesses: Vec<Connected>) {
    let client = match crate::tls::client_builder(&state.config.extra_roots)
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the witness client; connected witnesses are off");
            return;
        }
    };
    let mut last_error: BTreeMap<String, String> = BTreeMap::new();
    // The checkpoint size every connected witness had cosigned at the last round: until the
    // log signs a larger one, a round reads nothing more than the latest size.
    let mut all_cosigned = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let reader = state.audit.reader();
        let Ok(Ok(Some((size, _)))) =
            tokio::task::spawn_blocking(move || reader.latest_checkpoint()).await
        else {
            continue;
        };
        if size <= all_cosigned {
            continue;
        }
        let reader = state.audit.reader();
        let Ok(Ok(cosigned)) = tokio::task::spawn_blocking(move || reader.cosignatures()).await
        else {
            continue;
        };
        let mut behind = false;
        for w in &witnesses {
            let held = cosigned
                .iter()
                .filter(|(c, _)| c.witness == w.name)
                .map(|(c, _)| c.size)
                .max()
                .unwrap_or(0);
            if held >= size {
                continue;
            }
            let result = match push(&state, &client, w, held).await {
                Err(Push::Conflict(stored)) => push(&state, &client, w, stored).await,
                other => other,
            };
            let outcome = match result {
                Ok(n) => {
                    if last_error.remove(&w.name).is_some() || n > 0 {
                        tracing::info!(witness = %w.name, size, "checkpoint cosigned by a connected witness");
                    }
                    continue;
                }
                Err(Push::Conflict(s)) => format!("still refuses: it holds size {s}"),
                Err(Push::Failed(e)) => e,
            };
            behind = true;
            if last_error.get(&w.name) != Some(&outcome) {
                tracing::warn!(witness = %w.name, url = %w.url, error = %outcome, "a connected witness did not cosign; retrying");
                last_error.insert(w.name.clone(), outcome);
            }
        }
        if !behind {
            all_cosigned = size;
        }
    }
}

/// The size of this log the witness `w` holds when larger than `size` (the log's latest signed
/// checkpoint): a witness that cosigned more of the log than the log now has. None when it
/// holds no more; an error when it cannot be asked.
pub(crate) async fn holds_more_than(
    state: &AppState,
    w: &Connected,
    size: u64,
) -> Result<Option<u64>, String> {
    let client = crate::tls::client_builder(&state.config.extra_roots)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot build the witness client: {e}"))?;
    match push(state, &client, w, size).await {
        Ok(_) => Ok(None),
        Err(Push::Conflict(held)) if held > size => Ok(Some(held)),
        Err(Push::Conflict(_)) => Ok(None),
        Err(Push::Failed(e)) => Err(e),
    }
}

enum Push {
    /// 409: the size the witness holds.
    Conflict(u64),
    Failed(String),
}

/// One add-checkpoint request from `old`; the new cosignatures kept.
async fn push(
    state: &AppState,
    client: &reqwest::Client,
    w: &Connected,
    old: u64,
) -> Result<usize, Push> {
    let (_, note, lines) = crate::routes::audit::consistency_proof(&state.audit, old)
        .await
        .map_err(|e| Push::Failed(e.message().to_owned()))?;
    let body = crate::routes::audit::witness_request(old, &lines, &note);
    let url = format!("{}/add-checkpoint", w.url);
    let resp = client
        .post(&url)
        .body(body)
        .send()
        .await
        .map_err(|e| Push::Failed(format!("{url}: {e}")))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    match status {
        200 => {
            let (_, added, _) =
                crate::routes::audit::accept_cosignatures(&state.audit, &state.config, &text)
                    .await
                    .map_err(|e| {
                        Push::Failed(format!("its answer was not accepted: {}", e.message()))
                    })?;
            Ok(added)
        }
        409 => meshguard_common::decimal::parse_u64(text.trim_end_matches('\n'))
            .ok_or(())
            .map(Push::Conflict)
            .map_err(|_| Push::Failed(format!("409 without a size: {text:?}")))
            .and_then(Err),
        _ => Err(Push::Failed(format!(
            "{url} answered {status}: {}",
            text.chars().take(300).collect::<String>()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_name_configured_witnesses() {
        let w = vec!["witness.example/w1+01234567+BAAA".to_owned()];
        let ok = parse(
            &["witness.example/w1=http://127.0.0.1:7380/".to_owned()],
            &w,
        )
        .unwrap();
        assert_eq!(ok[0].url, "http://127.0.0.1:7380");
        let e = parse(&["other/w2=http://x".to_owned()], &w).unwrap_err();
        assert!(e.contains("not among AUDIT_WITNESSES"), "{e}");
        let e = parse(&["witness.example/w1".to_owned()], &w).unwrap_err();
        assert!(e.contains("name=url"), "{e}");
    }
}
