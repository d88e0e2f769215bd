//! `meshguard_policy`: a YAML policy document, validated by the gateway at plan time.

use std::collections::HashMap;

use async_trait::async_trait;
use meshguard_api::Policy;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tf_provider::schema::{
    Attribute, AttributeConstraint, AttributeType, Block, Description, Schema,
};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

use super::{known, required};
use crate::client::ClientError;
use crate::diag::report;
use crate::provider::{Shared, attr};

const ATTRIBUTES: &[&str] = &["name", "content"];

// ---- model ----

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct PolicyState {
    id: Value<String>,
    name: Value<String>,
    content: Value<String>,
    digest: Value<String>,
}

#[derive(Debug)]
pub(crate) struct PolicyResource {
    client: Shared,
}

impl PolicyResource {
    pub(crate) fn new(client: Shared) -> Self {
        Self { client }
    }

    /// Asks the gateway whether `content` is a valid policy named `name`, at plan time, so a
    /// broken policy fails before anything is applied. Unknown values are checked at apply.
    async fn check(&self, diags: &mut Diagnostics, state: &PolicyState) -> Option<()> {
        let Some(content) = known(&state.content) else {
            return Some(());
        };
        let client = self.client.get(diags)?;
        let report_ = match client.validate_policy(known(&state.name), content).await {
            Ok(r) => r,
            Err(e) => {
                report(
                    diags,
                    "cannot validate the policy content with the gateway",
                    &e,
                    ATTRIBUTES,
                );
                return None;
            }
        };
        for w in &report_.warnings {
            let at = w.line.map_or_else(String::new, |l| format!("line {l}: "));
            diags.warning(
                "policy content warning",
                format!("{at}{}", w.message),
                AttributePath::new("content"),
            );
        }
        if !report_.valid {
            let (name_errors, content_errors): (Vec<_>, Vec<_>) =
                report_.errors.iter().partition(|e| e.path == "name");
            for e in name_errors {
                diags.error(
                    "policy name does not match its content",
                    e.message.clone(),
                    AttributePath::new("name"),
                );
            }
            if !content_errors.is_empty() {
                let detail = content_errors
                    .iter()
                    .map(|e| match e.line {
                        Some(l) => format!("line {l}: {}", e.message),
                        None => e.message.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                diags.error(
                    "invalid policy content",
                    detail,
                    AttributePath::new("content"),
                );
            }
            return None;
        }
        Some(())
    }
}

fn digest(content: &str) -> String {
    format!("sha256:{}", hex(&Sha256::digest(content.as_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_gateway(p: &Policy) -> PolicyState {
    PolicyState {
        id: Value::Value(p.id.clone()),
        name: Value::Value(p.name.clone()),
        content: Value::Value(p.content.clone()),
        digest: Value::Value(p.digest.clone()),
    }
}

fn planned_digest(state: &PolicyState) -> Value<String> {
    match &state.content {
        Value::Value(c) => Value::Value(digest(c)),
        _ => Value::Unknown,
    }
}

// ---- schema and CRUD ----

#[async_trait]
impl Resource for PolicyResource {
    type State<'a> = PolicyState;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use AttributeConstraint::{Computed, Required};
        let attributes: HashMap<String, Attribute> = HashMap::from([
            (
                "id".into(),
                attr(
                    AttributeType::String,
                    Computed,
                    "Policy id assigned by the gateway (`policy_…`).",
                ),
            ),
            (
                "name".into(),
                attr(
                    AttributeType::String,
                    Required,
                    "Policy name. A `name` inside `content`, if any, must be the same.",
                ),
            ),
            (
                "content".into(),
                attr(
                    AttributeType::String,
                    Required,
                    "The YAML policy document, e.g. from `yamlencode(...)` or `file(...)`. Stored and returned byte for byte; validated by the gateway at plan time.",
                ),
            ),
            (
                "digest".into(),
                attr(
                    AttributeType::String,
                    Computed,
                    "`sha256:` digest of `content`, as the gateway's change records show it.",
                ),
            ),
        ]);
        Some(Schema {
            version: 1,
            block: Block {
                version: 1,
                attributes,
                description: Description::markdown(
                    "A YAML policy document on the MeshGuard gateway.",
                ),
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        if known(&config.name).is_some_and(|n| n.trim().is_empty()) {
            diags.error_short("name must not be empty", AttributePath::new("name"));
        }
        if known(&config.content).is_some_and(|c| c.trim().is_empty()) {
            diags.error_short("content must not be empty", AttributePath::new("content"));
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
        match client.get_policy(&id).await {
            Ok(p) => {
                if p.read_only {
                    diags.root_warning(
                        format!("policy {} is loaded from the gateway's POLICIES_DIR", p.name),
                        "file policies are read-only through the API; Terraform cannot change or delete it",
                    );
                }
                Some((from_gateway(&p), private))
            }
            Err(ClientError::NotFound) => None,
            Err(e) => {
                report(diags, &format!("cannot read policy {id}"), &e, ATTRIBUTES);
                Some((state, private))
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        self.check(diags, &proposed).await?;
        let mut planned = proposed;
        planned.id = Value::Unknown;
        planned.digest = planned_digest(&planned);
        Some((planned, ValueEmpty::default()))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        if proposed.content != prior.content {
            self.check(diags, &proposed).await?;
        }
        let mut planned = proposed;
        planned.id = prior.id.clone();
        planned.digest = planned_digest(&planned);
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
        let (name, content) = (
            required(diags, &planned.name, "name")?,
            required(diags, &planned.content, "content")?,
        );
        match client.create_policy(name, content).await {
            Ok(p) => Some((from_gateway(&p), private)),
            Err(e) => {
                report(
                    diags,
                    &format!("cannot create policy {name}"),
                    &e,
                    ATTRIBUTES,
                );
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
        let id = required(diags, &prior.id, "id")?;
        let (name, content) = (
            required(diags, &planned.name, "name")?,
            required(diags, &planned.content, "content")?,
        );
        match client.update_policy(id, name, content).await {
            Ok(p) => Some((from_gateway(&p), private)),
            Err(e) => {
                report(diags, &format!("cannot update policy {id}"), &e, ATTRIBUTES);
                None
            }
        }
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        let client = self.client.get(diags)?;
        let id = required(diags, &prior.id, "id")?;
        match client.delete_policy(id).await {
            Ok(()) | Err(ClientError::NotFound) => Some(()),
            Err(e) => {
                report(diags, &format!("cannot delete policy {id}"), &e, ATTRIBUTES);
                None
            }
        }
    }

    async fn import<'a>(
        &self,
        _diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        Some((
            PolicyState {
                id: Value::Value(id),
                ..Default::default()
            },
            ValueEmpty::default(),
        ))
    }
}
