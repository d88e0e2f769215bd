//! `meshguard-example-agent`: the chart's example agent. It stands for an agent's own program
//! in the pod next to its guardian sidecar: every `AGENT_INTERVAL_SECONDS` it makes the calls of
//! `AGENT_CALLS` (`METHOD /path`, comma separated) through the sidecar's `/proxy/*`, as an SDK
//! would, and prints one JSON line per call with the status and the sidecar's decision. It
//! never reaches the upstream itself: only the sidecar knows where that is.

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let gateway = std::env::var("MESHGUARD_GATEWAY_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:4000".to_owned());
    let gateway = gateway.trim_end_matches('/').to_owned();
    let calls = match parse_calls(&std::env::var("AGENT_CALLS").unwrap_or_default()) {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => {
            eprintln!(
                "meshguard-example-agent: AGENT_CALLS is empty; set it to calls such as \"GET /reports, DELETE /reports/1\""
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("meshguard-example-agent: AGENT_CALLS: {e}");
            return ExitCode::from(2);
        }
    };
    let interval = std::env::var("AGENT_INTERVAL_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(30)
        .max(1);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshguard-example-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(gateway, calls, Duration::from_secs(interval)));
    ExitCode::SUCCESS
}

fn parse_calls(text: &str) -> Result<Vec<(reqwest::Method, String)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            let (method, path) = c
                .split_once(' ')
                .ok_or_else(|| format!("{c:?} is not METHOD /path"))?;
            let method = reqwest::Method::from_bytes(method.trim().as_bytes())
                .map_err(|_| format!("{method:?} is not an HTTP method"))?;
            let path = path.trim();
            if !path.starts_with('/') {
                return Err(format!("{path:?} does not start with /"));
            }
            Ok((method, path.to_owned()))
        })
        .collect()
}

async fn run(gateway: String, calls: Vec<(reqwest::Method, String)>, every: Duration) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        for (method, path) in &calls {
            let url = format!("{gateway}/proxy{path}");
            let line = match client.request(method.clone(), &url).send().await {
                Ok(r) => {
                    let decision = r
                        .headers()
                        .get("x-meshguard-decision")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    serde_json::json!({"call": format!("{method} {path}"), "status": r.status().as_u16(), "decision": decision})
                }
                Err(e) => {
                    serde_json::json!({"call": format!("{method} {path}"), "error": e.to_string()})
                }
            };
            println!("{line}");
        }
    }
}
