//! Canonical JSON: the one byte form a document is signed and hashed in.
//!
//! Object keys sorted by their UTF-8 bytes, no insignificant whitespace, strings escaped as
//! serde_json escapes them, and integers only (a float has more than one spelling, so it is
//! refused). For the ASCII keys these documents use this is the RFC 8785 (JCS) form.

use serde::Serialize;
use serde_json::Value;

use crate::LicenseError;

/// The canonical bytes of any serializable value.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, LicenseError> {
    let value = serde_json::to_value(value)
        .map_err(|e| LicenseError::Invalid(format!("cannot serialize document: {e}")))?;
    let mut out = Vec::with_capacity(512);
    write(&value, &mut out)?;
    Ok(out)
}

fn write(value: &Value, out: &mut Vec<u8>) -> Result<(), LicenseError> {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => {
            out.extend_from_slice(value.to_string().as_bytes());
        }
        Value::Number(n) => {
            if n.is_f64() {
                return Err(LicenseError::Invalid(format!(
                    "{n} is not an integer; canonical documents hold integers only"
                )));
            }
            out.extend_from_slice(n.to_string().as_bytes());
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(key.clone()).to_string().as_bytes());
                out.push(b':');
                write(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn keys_are_sorted_and_whitespace_dropped() {
        let v = json!({"b": [1, {"z": "x\"y", "a": null}], "a": true});
        let bytes = super::to_vec(&v).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"a":true,"b":[1,{"a":null,"z":"x\"y"}]}"#
        );
    }

    #[test]
    fn floats_are_refused() {
        let err = super::to_vec(&json!({"n": 1.5})).unwrap_err();
        assert!(err.to_string().contains("not an integer"), "{err}");
    }
}
