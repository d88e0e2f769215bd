//! Canonical JSON: the one byte form a document is signed and hashed in.
//!
//! Object keys sorted by their UTF-8 bytes, no insignificant whitespace, strings escaped as
//! serde_json escapes them. For the ASCII keys and integers our documents use this is the
//! RFC 8785 (JCS) form. Floats are where forms disagree (JCS writes ECMAScript's spelling), so
//! the caller says what it wants: signed documents (licenses, provenance) refuse them; audit
//! entries, whose `meta` holds what agents sent, keep them in serde_json's shortest
//! round-trip spelling, the form every entry already written was hashed in.

use serde::Serialize;
use serde_json::Value;

/// What to do with a number that is not an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floats {
    /// Refuse the document: a float has more than one spelling.
    Refuse,
    /// Write it as serde_json does (shortest round-trip).
    Shortest,
}

/// The canonical bytes of any serializable value.
pub fn to_vec<T: Serialize + ?Sized>(value: &T, floats: Floats) -> Result<Vec<u8>, String> {
    let value =
        serde_json::to_value(value).map_err(|e| format!("cannot serialize document: {e}"))?;
    let mut out = Vec::with_capacity(512);
    write(&value, floats, &mut out)?;
    Ok(out)
}

/// The canonical text of a JSON value.
pub fn value_to_string(value: &Value, floats: Floats) -> Result<String, String> {
    let mut out = Vec::with_capacity(256);
    write(value, floats, &mut out)?;
    Ok(String::from_utf8(out).expect("JSON text is UTF-8"))
}

fn write(value: &Value, floats: Floats, out: &mut Vec<u8>) -> Result<(), String> {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => {
            out.extend_from_slice(value.to_string().as_bytes());
        }
        Value::Number(n) => {
            if n.is_f64() && floats == Floats::Refuse {
                return Err(format!(
                    "{n} is not an integer; canonical documents hold integers only"
                ));
            }
            out.extend_from_slice(n.to_string().as_bytes());
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, floats, out)?;
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
                write(item, floats, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_and_whitespace_dropped() {
        let v = json!({"b": [1, {"z": "x\"y", "a": null}], "a": true});
        let bytes = to_vec(&v, Floats::Refuse).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"a":true,"b":[1,{"a":null,"z":"x\"y"}]}"#
        );
    }

    #[test]
    fn floats_are_refused_or_written_as_serde_json_writes_them() {
        let v = json!({"n": 1.5, "m": {"é": 1e21, "a": -0.1}});
        let err = to_vec(&v, Floats::Refuse).unwrap_err();
        assert!(err.contains("not an integer"), "{err}");
        assert_eq!(
            value_to_string(&v, Floats::Shortest).unwrap(),
            serde_json::to_string(&v).unwrap()
        );
    }
}
