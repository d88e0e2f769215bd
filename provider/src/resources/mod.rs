//! The managed resources: `meshguard_agent`, `meshguard_policy`, `meshguard_alert_channel`.

pub(crate) mod agent;
pub(crate) mod alert_channel;
pub(crate) mod policy;

use std::collections::BTreeMap;

use tf_provider::value::Value;

pub(crate) type StrList = Value<Vec<Value<String>>>;
pub(crate) type StrMap = Value<BTreeMap<String, Value<String>>>;

/// The strings of a list whose every element is known; `Null` is the empty list.
pub(crate) fn known_list(v: &StrList) -> Option<Vec<String>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::Unknown => None,
        Value::Value(items) => items.iter().map(|i| i.as_ref_option().cloned()).collect(),
    }
}

pub(crate) fn known_map(v: &StrMap) -> Option<BTreeMap<String, String>> {
    match v {
        Value::Null => Some(BTreeMap::new()),
        Value::Unknown => None,
        Value::Value(m) => m
            .iter()
            .map(|(k, v)| v.as_ref_option().map(|v| (k.clone(), v.clone())))
            .collect(),
    }
}

/// What the gateway holds, shaped like the configuration: an empty list where the configuration
/// had none stays `null`, so an omitted argument never shows as drift.
pub(crate) fn list_like(prior: &StrList, got: Vec<String>) -> StrList {
    if got.is_empty() && matches!(prior, Value::Null) {
        Value::Null
    } else {
        Value::Value(got.into_iter().map(Value::Value).collect())
    }
}

pub(crate) fn map_like(prior: &StrMap, got: BTreeMap<String, String>) -> StrMap {
    if got.is_empty() && matches!(prior, Value::Null) {
        Value::Null
    } else {
        Value::Value(got.into_iter().map(|(k, v)| (k, Value::Value(v))).collect())
    }
}

/// A known, non-null string.
pub(crate) fn known(v: &Value<String>) -> Option<&str> {
    v.as_ref_option().map(String::as_str)
}

/// A string Terraform must know at this point (ids in state, arguments at apply); says so in a
/// diagnostic on the attribute when it does not, rather than failing without a word.
pub(crate) fn required<'a>(
    diags: &mut tf_provider::Diagnostics,
    v: &'a Value<String>,
    attribute: &'static str,
) -> Option<&'a str> {
    let found = known(v);
    if found.is_none() {
        diags.error(
            format!("{attribute} is not known"),
            "the provider needs this value here; if it comes from another resource, apply that one first",
            tf_provider::AttributePath::new(attribute),
        );
    }
    found
}
