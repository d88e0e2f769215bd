//! The fuzzer's way in (`tests/fuzz`, target `provider_values`): the values Terraform sends,
//! decoded as `tf-provider` decodes them (`rmp_serde::from_slice` for msgpack, `serde_json`
//! for a raw state in JSON) into the provider block's and every resource's and data source's
//! model, and each value that decodes checked by that object's plan-time validation, which is
//! the provider's own code that reads them. Not part of the provider's interface.

use serde::de::DeserializeOwned;
use tf_provider::{DataSource as _, Diagnostics, Provider as _, Resource as _};

use crate::data_sources::{agents, policies};
use crate::provider::{MeshguardProvider, ProviderConfig, Shared};
use crate::resources::{agent, alert_channel, policy};

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Vec<T> {
    let mut out = Vec::new();
    out.extend(rmp_serde::from_slice::<T>(bytes).ok());
    out.extend(serde_json::from_slice::<T>(bytes).ok());
    out
}

/// Decodes `bytes` as every model and validates what decodes; a panic is a finding.
pub fn values(bytes: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime starts");
    rt.block_on(async {
        let shared = Shared::default();
        let d = &mut Diagnostics::default();
        for v in decode::<ProviderConfig>(bytes) {
            MeshguardProvider::default().validate(d, v).await;
        }
        for v in decode::<agent::AgentState>(bytes) {
            agent::AgentResource::new(shared.clone())
                .validate(d, v)
                .await;
        }
        for v in decode::<policy::PolicyState>(bytes) {
            policy::PolicyResource::new(shared.clone())
                .validate(d, v)
                .await;
        }
        for v in decode::<alert_channel::AlertChannelState>(bytes) {
            alert_channel::AlertChannelResource::new(shared.clone())
                .validate(d, v)
                .await;
        }
        for v in decode::<agents::AgentsState>(bytes) {
            agents::AgentsDataSource::new(shared.clone())
                .validate(d, v)
                .await;
        }
        for v in decode::<policies::PoliciesState>(bytes) {
            policies::PoliciesDataSource::new(shared.clone())
                .validate(d, v)
                .await;
        }
    });
}

/// Seeds: configurations as Terraform encodes them (msgpack maps with every attribute), and a
/// raw state in JSON.
pub fn seeds() -> Vec<Vec<u8>> {
    let docs = [
        serde_json::json!({"gateway_url": "https://gw.example:3100", "admin_token": "t".repeat(32),
            "ca_cert_file": null, "ca_cert_pem": null, "client_cert_file": null,
            "client_key_file": null, "request_timeout": 30, "max_retries": 4}),
        serde_json::json!({"id": null, "name": "claims-bot", "trust_tier": "verified",
            "tags": ["a", "b"], "metadata": {"team": "claims"}, "api_key": null,
            "api_key_rotation": null}),
        serde_json::json!({"id": null, "name": "reads", "content":
            "name: reads\nrules:\n  - name: r\n    effect: allow\n    actions: [\"read:*\"]\n",
            "version": null, "digest": null}),
        serde_json::json!({"id": null, "name": "ops", "type": "slack",
            "endpoint": "https://hooks.slack.example/x", "slack_channel": "#ops",
            "severities": ["critical"], "triggers": ["deny"], "enabled": true}),
        serde_json::json!({"trust_tier": "trusted", "tag": null, "agents": null}),
    ];
    let mut out: Vec<Vec<u8>> = docs
        .iter()
        .map(|d| rmp_serde::to_vec_named(d).expect("JSON values encode"))
        .collect();
    out.push(docs[1].to_string().into_bytes());
    out
}
