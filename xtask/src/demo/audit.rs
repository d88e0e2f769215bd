//! Step 15: the audit trail of every decision above, hash-chained, its checkpoint signed, and the
//! gateway's own verification of it, which must say valid.

use anyhow::bail;
use serde_json::Value;

use super::gateway::Api;
use super::step;

/// Signs a checkpoint, shows the entries and the signed note, and checks the log verifies;
/// returns the checkpoint (its note and verifier key) for the witness.
pub(super) fn show_trail(api: &Api) -> anyhow::Result<Value> {
    step("the audit trail: every decision above, hash-chained, checkpoint signed, verified");
    let cp = api.send(
        api.admin(reqwest::Method::POST, "/admin/audit/checkpoint"),
        200,
    )?;
    let report = api.get("/admin/audit/verify")?;
    show_entries(&api.get("/admin/audit?limit=100")?);
    show_checkpoint(&cp);
    println!(
        "    /admin/audit/verify: valid={} entries={} checkpoints={}",
        report["valid"], report["entries"], report["checkpoints"]
    );
    if report["valid"] != Value::Bool(true) {
        bail!("the audit log did not verify: {report}");
    }
    Ok(cp)
}

/// The entries, oldest first, with the start of each one's hash.
fn show_entries(recent: &Value) {
    for e in recent["entries"].as_array().into_iter().flatten().rev() {
        println!(
            "    #{:<3} {:<10} {:<40} {:<5} {}",
            e["seq"],
            e["event"].as_str().unwrap_or(""),
            e["action"].as_str().unwrap_or(""),
            e["decision"].as_str().unwrap_or(""),
            e["hash"].as_str().map_or("", |h| &h[..16])
        );
    }
}

/// The signed checkpoint as a C2SP note, line by line.
fn show_checkpoint(cp: &Value) {
    println!(
        "    signed checkpoint (C2SP note; verifier key {}):",
        cp["vkey"].as_str().unwrap_or("?")
    );
    for line in cp["checkpoint"].as_str().unwrap_or_default().lines() {
        println!("      {line}");
    }
}
