//! Turning gateway errors into Terraform diagnostics that point at the attribute at fault.

use tf_provider::{AttributePath, Diagnostics};

use crate::client::ClientError;

/// `trustTier` → `trust_tier`: the gateway's JSON field names to the provider's attribute names.
fn snake(field: &str) -> String {
    let mut out = String::with_capacity(field.len() + 4);
    for c in field.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Reports `err` from `action` (e.g. "cannot create the agent"). When the gateway names a field
/// that is one of `attributes`, the diagnostic points at that attribute.
pub(crate) fn report(
    diags: &mut Diagnostics,
    action: &str,
    err: &ClientError,
    attributes: &[&'static str],
) {
    let summary = format!("{action}: {}", err.summary());
    let field = match err {
        ClientError::Refused { body, .. } => body.field.as_deref(),
        _ => None,
    };
    let attribute = field
        .map(|f| snake(f.split(['.', '[']).next().unwrap_or(f)))
        .and_then(|f| attributes.iter().find(|a| **a == f).copied());
    let detail = match err {
        ClientError::Refused { body, .. } if !body.errors.is_empty() => body
            .errors
            .iter()
            .map(|e| match e.line {
                Some(line) => format!("line {line}: {}", e.message),
                None => e.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    };
    match attribute {
        Some(a) => diags.error(summary, detail, AttributePath::new(a)),
        None => diags.root_error(summary, detail),
    }
}

#[cfg(test)]
mod tests {
    use super::snake;

    #[test]
    fn gateway_fields_map_to_attribute_names() {
        assert_eq!(snake("trustTier"), "trust_tier");
        assert_eq!(snake("pagerdutyRoutingKey"), "pagerduty_routing_key");
        assert_eq!(snake("name"), "name");
    }
}
