//! `data "meshguard_agents"`: the gateway's active agents, optionally of one trust tier.

use std::collections::HashMap;

use async_trait::async_trait;
use meshguard_api::TrustTier;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{
    Attribute, AttributeConstraint, AttributeType, Block, Description, Schema,
};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, DataSource, Diagnostics};

use crate::diag::report;
use crate::provider::{Shared, attr};
use crate::resources::{StrList, StrMap};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AgentsState {
    trust_tier: Value<String>,
    agents: Value<Vec<AgentItem>>,
    count: Value<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AgentItem {
    id: Value<String>,
    name: Value<String>,
    trust_tier: Value<String>,
    tags: StrList,
    metadata: StrMap,
}

#[derive(Debug)]
pub(crate) struct AgentsDataSource {
    client: Shared,
}

impl AgentsDataSource {
    pub(crate) fn new(client: Shared) -> Self {
        Self { client }
    }
}

#[async_trait]
impl DataSource for AgentsDataSource {
    type State<'a> = AgentsState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use AttributeConstraint::{Computed, Optional};
        let item = HashMap::from([
            ("id".to_owned(), AttributeType::String),
            ("name".to_owned(), AttributeType::String),
            ("trust_tier".to_owned(), AttributeType::String),
            (
                "tags".to_owned(),
                AttributeType::List(Box::new(AttributeType::String)),
            ),
            (
                "metadata".to_owned(),
                AttributeType::Map(Box::new(AttributeType::String)),
            ),
        ]);
        let attributes: HashMap<String, Attribute> = HashMap::from([
            (
                "trust_tier".into(),
                attr(
                    AttributeType::String,
                    Optional,
                    "Only agents of this trust tier (compared by rank, so `unverified` also matches `untrusted`).",
                ),
            ),
            (
                "agents".into(),
                attr(
                    AttributeType::List(Box::new(AttributeType::Object(item))),
                    Computed,
                    "The matching agents: `id`, `name`, `trust_tier`, `tags`, `metadata`.",
                ),
            ),
            (
                "count".into(),
                attr(
                    AttributeType::Number,
                    Computed,
                    "The number of matching agents.",
                ),
            ),
        ]);
        Some(Schema {
            version: 1,
            block: Block {
                version: 1,
                attributes,
                description: Description::markdown(
                    "Active agents registered with the MeshGuard gateway.",
                ),
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        if let Value::Value(tier) = &config.trust_tier
            && let Err(e) = TrustTier::parse(tier)
        {
            diags.error(
                "invalid trust_tier",
                e.to_string(),
                AttributePath::new("trust_tier"),
            );
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::State<'a>> {
        let client = self.client.get(diags)?;
        let wanted = match &config.trust_tier {
            Value::Value(t) => Some(TrustTier::parse(t).ok()?),
            _ => None,
        };
        let agents = match client.list_agents().await {
            Ok(a) => a,
            Err(e) => {
                report(diags, "cannot list agents", &e, &["trust_tier"]);
                return None;
            }
        };
        let items: Vec<AgentItem> = agents
            .into_iter()
            .filter(|a| wanted.is_none_or(|w| TrustTier::parse(&a.trust_tier).ok() == Some(w)))
            .map(|a| AgentItem {
                id: Value::Value(a.id),
                name: Value::Value(a.name),
                trust_tier: Value::Value(a.trust_tier),
                tags: Value::Value(a.tags.into_iter().map(Value::Value).collect()),
                metadata: Value::Value(
                    a.metadata
                        .into_iter()
                        .map(|(k, v)| {
                            (
                                k,
                                Value::Value(
                                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                                ),
                            )
                        })
                        .collect(),
                ),
            })
            .collect();
        Some(AgentsState {
            trust_tier: config.trust_tier,
            count: Value::Value(items.len() as i64),
            agents: Value::Value(items),
        })
    }
}
