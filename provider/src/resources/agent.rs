//! `meshguard_agent`: an agent registered with the gateway, and its API key.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use meshguard_api::{Agent, CreateAgent, TrustTier, UpdateAgent};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tf_provider::schema::{
    Attribute, AttributeConstraint, AttributeType, Block, Description, Schema,
};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

use super::{StrList, StrMap, known, known_list, known_map, list_like, map_like, required};
use crate::client::ClientError;
use crate::diag::report;
use crate::provider::{Shared, attr, sensitive};

const ATTRIBUTES: &[&str] = &["name", "trust_tier", "tags", "metadata"];

// ---- model ----

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AgentState {
    id: Value<String>,
    name: Value<String>,
    trust_tier: Value<String>,
    tags: StrList,
    metadata: StrMap,
    api_key: Value<String>,
    api_key_rotation: Value<String>,
}

#[derive(Debug)]
pub(crate) struct AgentResource {
    client: Shared,
}

impl AgentResource {
    pub(crate) fn new(client: Shared) -> Self {
        Self { client }
    }
}

fn metadata_strings(agent: &Agent) -> BTreeMap<String, String> {
    agent
        .metadata
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            )
        })
        .collect()
}

fn metadata_json(m: BTreeMap<String, String>) -> serde_json::Map<String, Json> {
    m.into_iter().map(|(k, v)| (k, Json::String(v))).collect()
}

/// The state after a successful call: computed values from the gateway, arguments as planned.
fn from_gateway(agent: &Agent, shape: &AgentState, api_key: Value<String>) -> AgentState {
    AgentState {
        id: Value::Value(agent.id.clone()),
        name: Value::Value(agent.name.clone()),
        trust_tier: Value::Value(agent.trust_tier.clone()),
        tags: list_like(&shape.tags, agent.tags.clone()),
        metadata: map_like(&shape.metadata, metadata_strings(agent)),
        api_key,
        api_key_rotation: shape.api_key_rotation.clone(),
    }
}

// ---- schema and CRUD ----

#[async_trait]
impl Resource for AgentResource {
    type State<'a> = AgentState;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use AttributeConstraint::{Computed, Optional, OptionalComputed, Required};
        let attributes: HashMap<String, Attribute> = HashMap::from([
            (
                "id".into(),
                attr(
                    AttributeType::String,
                    Computed,
                    "Agent id assigned by the gateway (`agent_…`).",
                ),
            ),
            (
                "name".into(),
                attr(
                    AttributeType::String,
                    Required,
                    "Display name of the agent.",
                ),
            ),
            (
                "trust_tier".into(),
                attr(
                    AttributeType::String,
                    OptionalComputed,
                    "Trust tier: `unverified`, `verified`, `trusted` or `privileged` (default `verified`; `untrusted` is accepted as an alias of `unverified`).",
                ),
            ),
            (
                "tags".into(),
                attr(
                    AttributeType::List(Box::new(AttributeType::String)),
                    Optional,
                    "Labels, matched by policies' `appliesTo`.",
                ),
            ),
            (
                "metadata".into(),
                attr(
                    AttributeType::Map(Box::new(AttributeType::String)),
                    Optional,
                    "Key-value metadata.",
                ),
            ),
            (
                "api_key".into(),
                sensitive(attr(
                    AttributeType::String,
                    Computed,
                    "The agent's token (a JWT), returned by the gateway only when it is issued; kept in state. Empty after import.",
                )),
            ),
            (
                "api_key_rotation".into(),
                attr(
                    AttributeType::String,
                    Optional,
                    "Change this value (a date, a counter) to re-issue the agent's token; the previous token stops working at once.",
                ),
            ),
        ]);
        Some(Schema {
            version: 1,
            block: Block {
                version: 1,
                attributes,
                description: Description::markdown(
                    "An AI agent registered with the MeshGuard gateway.",
                ),
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        if let Some(tier) = known(&config.trust_tier)
            && let Err(e) = TrustTier::parse(tier)
        {
            diags.error(
                "invalid trust_tier",
                e.to_string(),
                AttributePath::new("trust_tier"),
            );
        }
        if known(&config.name).is_some_and(|n| n.trim().is_empty()) {
            diags.error_short("name must not be empty", AttributePath::new("name"));
        }
        if let Value::Value(tags) = &config.tags {
            for (i, tag) in tags.iter().enumerate() {
                if known(tag).is_some_and(|t| t.trim().is_empty()) {
                    diags.error_short(
                        "tags must not be empty strings",
                        AttributePath::new("tags").index(i as i64),
                    );
                }
            }
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let client = self.client.get(diags)?;
        let id = required(diags, &state.id, "id")?.to_owned();
        match client.get_agent(&id).await {
            Ok(agent) => Some((from_gateway(&agent, &state, state.api_key.clone()), private)),
            // Deleted (revoked) outside Terraform: gone from state, so the next plan re-creates it.
            Err(ClientError::NotFound) => None,
            // Anything else keeps the resource in state and stops the run with the reason.
            Err(e) => {
                report(diags, &format!("cannot read agent {id}"), &e, ATTRIBUTES);
                Some((state, private))
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut planned = proposed;
        planned.id = Value::Unknown;
        planned.api_key = Value::Unknown;
        if planned.trust_tier.is_null() {
            planned.trust_tier = Value::Value("verified".to_owned());
        }
        Some((planned, ValueEmpty::default()))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior: Self::State<'a>,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let mut planned = proposed;
        planned.id = prior.id.clone();
        if planned.trust_tier.is_null() {
            planned.trust_tier = Value::Value("verified".to_owned());
        }
        planned.api_key = if planned.api_key_rotation != prior.api_key_rotation {
            Value::Unknown
        } else {
            prior.api_key.clone()
        };
        Some((planned, private, Vec::new()))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        Some(private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let client = self.client.get(diags)?;
        let body = CreateAgent {
            name: required(diags, &planned.name, "name")?.to_owned(),
            trust_tier: known(&planned.trust_tier).map(str::to_owned),
            tags: known_list(&planned.tags)?,
            metadata: metadata_json(known_map(&planned.metadata)?),
            ..Default::default()
        };
        match client.create_agent(&body).await {
            Ok(created) => Some((
                from_gateway(&created.agent, &planned, Value::Value(created.token)),
                private,
            )),
            Err(e) => {
                report(diags, "cannot create the agent", &e, ATTRIBUTES);
                None
            }
        }
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let client = self.client.get(diags)?;
        let id = required(diags, &prior.id, "id")?.to_owned();
        let body = UpdateAgent {
            name: known(&planned.name).map(str::to_owned),
            trust_tier: known(&planned.trust_tier).map(str::to_owned),
            tags: Some(known_list(&planned.tags)?),
            metadata: Some(metadata_json(known_map(&planned.metadata)?)),
            ..Default::default()
        };
        let agent = match client.update_agent(&id, &body).await {
            Ok(a) => a,
            Err(e) => {
                report(diags, &format!("cannot update agent {id}"), &e, ATTRIBUTES);
                return None;
            }
        };
        let api_key = if planned.api_key_rotation != prior.api_key_rotation {
            match client.reissue_token(&id).await {
                Ok(t) => Value::Value(t.token),
                Err(e) => {
                    report(
                        diags,
                        &format!("cannot re-issue the token of agent {id}"),
                        &e,
                        ATTRIBUTES,
                    );
                    return None;
                }
            }
        } else {
            prior.api_key.clone()
        };
        Some((from_gateway(&agent, &planned, api_key), private))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        let client = self.client.get(diags)?;
        let id = required(diags, &prior.id, "id")?.to_owned();
        match client.revoke_agent(&id).await {
            Ok(()) | Err(ClientError::NotFound) => Some(()),
            Err(e) => {
                report(diags, &format!("cannot revoke agent {id}"), &e, ATTRIBUTES);
                None
            }
        }
    }

    async fn import<'a>(
        &self,
        _diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let state = AgentState {
            id: Value::Value(id),
            ..Default::default()
        };
        Some((state, ValueEmpty::default()))
    }
}
