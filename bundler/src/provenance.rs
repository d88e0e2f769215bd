//! An in-toto Statement v1 with a SLSA provenance v1 predicate over the media's files, signed
//! in a DSSE envelope with the media key.

use serde_json::{Value, json};

use crate::sums::Hashes;

pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const BUILD_TYPE: &str = "https://meshguard.dev/meshguard-bundle/create/v1";
pub const BUILDER_ID: &str = "https://meshguard.dev/meshguard-bundle";

/// What went into the media, for `resolvedDependencies`: named without build-host paths (an
/// image by its reference, a file by its name or its place on the media, the source by its
/// repository and commit).
#[derive(Debug, Clone)]
pub struct Input {
    pub uri: String,
    /// (algorithm, value), e.g. ("sha256", hex) or ("gitCommit", sha1 hex).
    pub digest: (&'static str, String),
    pub name: String,
}

impl Input {
    pub fn sha256(uri: String, sha256: String, name: String) -> Self {
        Self {
            uri,
            digest: ("sha256", sha256),
            name,
        }
    }
}

#[derive(Debug)]
pub struct Run<'a> {
    pub manifest_path: &'a str,
    pub manifest_sha256: &'a str,
    pub since: Option<&'a str>,
    pub source_date_epoch: Option<i64>,
    pub started: &'a str,
    pub finished: &'a str,
}

pub fn statement(subjects: &Hashes, inputs: &[Input], run: &Run<'_>) -> Value {
    let subject: Vec<Value> = subjects
        .iter()
        .map(|(path, (hex, _))| json!({"name": path, "digest": {"sha256": hex}}))
        .collect();
    let deps: Vec<Value> = inputs
        .iter()
        .map(|i| json!({"uri": i.uri, "name": i.name, "digest": {i.digest.0: i.digest.1}}))
        .collect();
    let mut external = json!({
        "manifest": {"path": run.manifest_path, "sha256": run.manifest_sha256},
    });
    if let Some(s) = run.since {
        external["since"] = json!({"sha256sums": s});
    }
    let invocation = crate::sbom::uuid_from(
        format!(
            "{}{}{:?}",
            run.manifest_sha256, run.started, run.source_date_epoch
        )
        .as_bytes(),
    );
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subject,
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": {
                    "sourceDateEpoch": run.source_date_epoch,
                    "tool": format!("{} {}", crate::sbom::TOOL, crate::sbom::TOOL_VERSION),
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": {crate::sbom::TOOL: crate::sbom::TOOL_VERSION},
                },
                "metadata": {
                    "invocationId": format!("urn:uuid:{invocation}"),
                    "startedOn": run.started,
                    "finishedOn": run.finished,
                },
            },
        },
    })
}
