//! The bundle's OSCAL documents: the control mapping as assessment results, and for a NIST
//! profile with gaps, a plan of action and milestones.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{FORMAT, parse_time, profiles};

/// A UUID (version 5 layout) derived from `parts`: the same bundle gives the same document.
pub(super) fn uuid(parts: &[&str]) -> String {
    let mut seed = Vec::new();
    for p in parts {
        seed.extend_from_slice(p.as_bytes());
        seed.push(0);
    }
    crate::sbom::uuid_from(&seed)
}

fn rfc3339(s: &str) -> String {
    parse_time(s, "time")
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|_| s.to_owned())
}

/// The control mapping as NIST OSCAL assessment results (OSCAL 1.1): one observation per
/// artifact, pointing at its files with their digests, and one finding per control.
pub(super) fn assessment_results(
    profile: &profiles::Profile,
    from: &str,
    to: &str,
    created_at: &str,
    controls: &Value,
    digests: &BTreeMap<String, (String, u64)>,
) -> Value {
    let seed = [profile.id, from, to, created_at];
    let (observations, artifact_obs) = observations(profile, &seed, created_at, digests);
    let findings = findings(profile, &seed, controls, &artifact_obs);
    let include: Vec<Value> = profile
        .controls
        .iter()
        .map(|c| json!({"control-id": c.id}))
        .collect();
    json!({"assessment-results": {
        "uuid": uuid(&[&seed[..], &["assessment-results"]].concat()),
        "metadata": {
            "title": format!("MeshGuard evidence: {} from {from} to {to}", profile.title),
            "last-modified": created_at,
            "version": FORMAT,
            "oscal-version": "1.1.2",
        },
        // The assessment plan is the bundle's control mapping, named in the back matter so the
        // reference resolves in this document.
        "import-ap": {"href": format!("#{}", uuid(&[&seed[..], &["assessment-plan"]].concat()))},
        "results": [{
            "uuid": uuid(&[&seed[..], &["result"]].concat()),
            "title": format!("{} evidence", profile.title),
            "description": "Evidence exported by meshguard-bundle evidence export; verify it offline with meshguard-bundle evidence verify.",
            "start": rfc3339(from),
            "end": rfc3339(to),
            "reviewed-controls": {"control-selections": [{"include-controls": include}]},
            "observations": observations,
            "findings": findings,
        }],
        "back-matter": {"resources": [{
            "uuid": uuid(&[&seed[..], &["assessment-plan"]].concat()),
            "title": "The assessment plan: the profile's control mapping in this bundle",
            "rlinks": [{"href": "../controls.json", "media-type": "application/json"}],
        }]},
    }})
}

/// One observation per artifact the profile's controls cite (each once), and the observation's
/// UUID by artifact name.
fn observations<'p>(
    profile: &'p profiles::Profile,
    seed: &[&str],
    created_at: &str,
    digests: &BTreeMap<String, (String, u64)>,
) -> (Vec<Value>, BTreeMap<&'p str, String>) {
    let mut observations = Vec::new();
    let mut artifact_obs: BTreeMap<&str, String> = BTreeMap::new();
    for control in profile.controls {
        for a in control.evidence {
            if artifact_obs.contains_key(a.name()) {
                continue;
            }
            let id = uuid(&[seed, &["observation", a.name()]].concat());
            let evidence: Vec<Value> = a
                .files()
                .iter()
                .filter_map(|f| {
                    let (sha, _) = digests.get(*f)?;
                    Some(json!({
                        "href": f,
                        "description": format!("{} (sha256 {sha})", a.name()),
                    }))
                })
                .collect();
            let mut obs = json!({
                "uuid": id,
                "title": a.name(),
                "description": format!("The bundle's {}.", a.name()),
                "methods": ["EXAMINE"],
                "collected": created_at,
            });
            if !evidence.is_empty() {
                obs["relevant-evidence"] = json!(evidence);
            }
            observations.push(obs);
            artifact_obs.insert(a.name(), id);
        }
    }
    (observations, artifact_obs)
}

/// One finding per control of the mapping, citing the observations of its evidence.
fn findings(
    profile: &profiles::Profile,
    seed: &[&str],
    controls: &Value,
    artifact_obs: &BTreeMap<&str, String>,
) -> Vec<Value> {
    controls["controls"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(profile.controls)
        .map(|(c, control)| {
            let related: Vec<Value> = control
                .evidence
                .iter()
                .map(|a| json!({"observation-uuid": artifact_obs[a.name()]}))
                .collect();
            let findings: String = c["requirements"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    format!(
                        " {} ({}): {}.",
                        r["requirement"].as_str().unwrap_or_default(),
                        r["state"].as_str().unwrap_or_default(),
                        r["finding"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            let state = c["state"].as_str().unwrap_or_default();
            json!({
                "uuid": uuid(&[seed, &["finding", control.id]].concat()),
                "title": format!("{} {}", control.label, control.title),
                "description": format!(
                    "{} {}: evidenced by {}.{findings}",
                    control.label,
                    control.title,
                    control.evidence.iter().map(|a| a.name()).collect::<Vec<_>>().join(", "),
                ),
                "target": {
                    "type": "objective-id",
                    "target-id": format!("{}_obj", control.id),
                    "status": objective_status(state, &findings),
                },
                "related-observations": related,
            })
        })
        .collect()
}

/// OSCAL's objective status is satisfied or not; a control that could not be assessed is not
/// satisfied, with the reason `other` and a remark saying so.
fn objective_status(state: &str, findings: &str) -> Value {
    match state {
        "satisfied" => json!({"state": "satisfied", "reason": "pass"}),
        "not-assessed" => json!({
            "state": "not-satisfied",
            "reason": "other",
            "remarks": format!("Not assessed:{findings}"),
        }),
        _ => json!({"state": "not-satisfied", "reason": "fail"}),
    }
}

/// Profiles whose regime tracks gaps in a plan of action and milestones (NIST SP 800-53).
pub(super) const POAM_PROFILES: &[&str] = &["fedramp-moderate", "airgapped-defense"];

/// For a NIST profile with gaps: an OSCAL plan of action and milestones with one item per
/// control not satisfied, each linked to its finding (the same UUID as in the assessment
/// results). None when there is nothing to plan (OSCAL requires at least one item).
pub(super) fn poam(
    profile: &profiles::Profile,
    ar: &Value,
    origin: &str,
    created_at: &str,
) -> Option<Value> {
    if !POAM_PROFILES.contains(&profile.id) {
        return None;
    }
    let gaps: Vec<&Value> = ar["assessment-results"]["results"][0]["findings"]
        .as_array()?
        .iter()
        .filter(|f| f["target"]["status"]["state"] == "not-satisfied")
        .collect();
    if gaps.is_empty() {
        return None;
    }
    let items: Vec<Value> = gaps
        .iter()
        .map(|f| {
            let finding = f["uuid"].as_str().unwrap_or_default();
            json!({
                "uuid": uuid(&["poam-item", finding]),
                "title": format!("Remediate: {}", f["title"].as_str().unwrap_or_default()),
                "description": f["description"],
                "related-findings": [{"finding-uuid": finding}],
            })
        })
        .collect();
    let findings: Vec<Value> = gaps.iter().map(|f| (*f).clone()).collect();
    // The observations those findings cite, so every reference in the plan resolves in it.
    let cited: Vec<&str> = findings
        .iter()
        .flat_map(|f| f["related-observations"].as_array().into_iter().flatten())
        .filter_map(|o| o["observation-uuid"].as_str())
        .collect();
    let observations: Vec<Value> = ar["assessment-results"]["results"][0]["observations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["uuid"].as_str().is_some_and(|u| cited.contains(&u)))
        .cloned()
        .collect();
    Some(json!({"plan-of-action-and-milestones": {
        "uuid": uuid(&["poam", ar["assessment-results"]["uuid"].as_str().unwrap_or_default()]),
        "metadata": {
            "title": format!("MeshGuard plan of action and milestones: {}", profile.title),
            "last-modified": created_at,
            "version": FORMAT,
            "oscal-version": "1.1.2",
        },
        "system-id": {"identifier-type": "https://meshguard.dev/ns/audit-origin", "id": origin},
        "observations": observations,
        "findings": findings,
        "poam-items": items,
    }}))
}
