//! `data "meshguard_policies"`: every policy on the gateway, API-managed and file-loaded.

use std::collections::HashMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{
    Attribute, AttributeConstraint, AttributeType, Block, Description, Schema,
};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{DataSource, Diagnostics};

use crate::diag::report;
use crate::provider::{Shared, attr};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct PoliciesState {
    policies: Value<Vec<PolicyItem>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PolicyItem {
    id: Value<String>,
    name: Value<String>,
    version: Value<String>,
    description: Value<String>,
    content: Value<String>,
    digest: Value<String>,
    read_only: Value<bool>,
}

#[derive(Debug)]
pub(crate) struct PoliciesDataSource {
    client: Shared,
}

impl PoliciesDataSource {
    pub(crate) fn new(client: Shared) -> Self {
        Self { client }
    }
}

#[async_trait]
impl DataSource for PoliciesDataSource {
    type State<'a> = PoliciesState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let item = HashMap::from([
            ("id".to_owned(), AttributeType::String),
            ("name".to_owned(), AttributeType::String),
            ("version".to_owned(), AttributeType::String),
            ("description".to_owned(), AttributeType::String),
            ("content".to_owned(), AttributeType::String),
            ("digest".to_owned(), AttributeType::String),
            ("read_only".to_owned(), AttributeType::Bool),
        ]);
        let attributes: HashMap<String, Attribute> = HashMap::from([(
            "policies".into(),
            attr(
                AttributeType::List(Box::new(AttributeType::Object(item))),
                AttributeConstraint::Computed,
                "Every policy, by name: `id`, `name`, `version`, `description`, `content`, `digest`, `read_only` (true for `POLICIES_DIR` files).",
            ),
        )]);
        Some(Schema {
            version: 1,
            block: Block {
                version: 1,
                attributes,
                description: Description::markdown("The policies on the MeshGuard gateway."),
                ..Default::default()
            },
        })
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        _config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::State<'a>> {
        let client = self.client.get(diags)?;
        let policies = match client.list_policies().await {
            Ok(p) => p,
            Err(e) => {
                report(diags, "cannot list policies", &e, &[]);
                return None;
            }
        };
        let items = policies
            .into_iter()
            .map(|p| PolicyItem {
                id: Value::Value(p.id),
                name: Value::Value(p.name),
                version: p.version.into(),
                description: p.description.into(),
                content: Value::Value(p.content),
                digest: Value::Value(p.digest),
                read_only: Value::Value(p.read_only),
            })
            .collect();
        Some(PoliciesState {
            policies: Value::Value(items),
        })
    }
}
