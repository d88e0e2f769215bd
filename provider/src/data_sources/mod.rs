//! The data sources: `meshguard_agents`, `meshguard_policies`.

pub(crate) mod agents;
pub(crate) mod policies;
