//! What a forwarded call is, in one canonical form: the verb its method maps to, the object
//! its path names, and the path that goes upstream, built from that object.
//!
//! The rule is that what is judged is what is forwarded, by construction:
//! - the method is one of a closed table, in its canonical case (RFC 9110 §9.1: methods are
//!   case-sensitive); any other method is refused, never taken for a read;
//! - the path is percent-decoded once, segment by segment; a segment that an upstream could
//!   read as another path (`.`/`..`, an encoded `/` or `\`, a `;` parameter as Tomcat and
//!   Spring strip it, a `%XX` that a second decoding would turn into something else, a Unicode
//!   form that compatibility normalization turns into a dot or a separator, an empty segment
//!   that some servers merge away, a control character) is refused; the path sent upstream is
//!   the decoded segments encoded again by one fixed rule, never the caller's bytes;
//! - headers and parameters by which common frameworks let a request change its own method or
//!   path (`X-HTTP-Method-Override`, `X-Original-URL`, `?_method=`, ...) are refused.

use axum::http::{HeaderMap, Method};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use unicode_normalization::UnicodeNormalization as _;

/// The methods a forwarded call may use, with the verb each is judged as (MeshGuard's HTTP
/// integration docs; HEAD and OPTIONS are reads).
pub(crate) const METHODS: &[(&str, &str)] = &[
    ("GET", "read"),
    ("HEAD", "read"),
    ("OPTIONS", "read"),
    ("POST", "write"),
    ("PUT", "write"),
    ("PATCH", "write"),
    ("DELETE", "delete"),
];

/// The `Allow` header of a 405: the methods of [`METHODS`].
pub(crate) const ALLOW: &str = "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE";

/// Headers by which a request asks a framework to take another method or path than the one
/// sent (Spring, Symfony, Laravel, ASP.NET, IIS, Zend, Envoy, and proxies that honour them).
/// Compared with `_` read as `-`: CGI, PHP and WSGI give `X_HTTP_Method_Override` the same
/// variable as `X-HTTP-Method-Override`.
pub(crate) const OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-method",
    "x-original-method",
    "x-forwarded-method",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-envoy-original-path",
];

/// Query parameters with the same power (Rails, Laravel, Express's method-override), compared
/// after the spellings frameworks fold together (see [`param_name`]).
const OVERRIDE_PARAMS: &[&str] = &["_method", "_httpmethod", "x-http-method-override"];

/// A parameter name as frameworks read it: decoded, cut at a NUL, `[]` dropped, and `.` and
/// space read as `_` (PHP), lowercase.
fn param_name(raw: &str) -> String {
    raw.split('\0')
        .next()
        .unwrap_or_default()
        .trim_end_matches("[]")
        .replace(['.', ' '], "_")
        .to_ascii_lowercase()
}

fn overriding_param(name: &str) -> bool {
    let name = param_name(name);
    OVERRIDE_PARAMS.iter().any(|p| name == *p)
}

/// The verb `method` is judged as, or `None` for a method outside the table.
pub(crate) fn verb(method: &Method) -> Option<&'static str> {
    METHODS
        .iter()
        .find(|(m, _)| *m == method.as_str())
        .map(|(_, v)| *v)
}

/// `DELETE` + `api/users/123` → `delete:api/users/123` (MeshGuard's HTTP integration docs).
/// A method outside the table keeps its own name (`PURGE:admin/x`), for the audit entry of
/// its refusal only: it is never evaluated.
pub(crate) fn derive_action(method: &Method, object: &str) -> String {
    let object = object.trim_start_matches('/');
    match verb(method) {
        Some(v) => format!("{v}:{object}"),
        None => format!("{}:{object}", method.as_str()),
    }
}

/// A forwarded path in canonical form.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CanonicalPath {
    /// What policies judge: the decoded segments joined with `/` (`api/a b`).
    pub(crate) object: String,
    /// What goes upstream after the target's base: the same segments, encoded again
    /// (`api/a%20b`).
    pub(crate) upstream: String,
}

/// Characters sent as they are in a forwarded segment: RFC 3986's unreserved characters and
/// the sub-delimiters other than `;`, plus `:` and `@` (pchar). Everything else is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// The canonical form of `raw`, the path after `/proxy/` as sent (still percent-encoded), or
/// why it is refused.
pub(crate) fn canonical_path(raw: &str) -> Result<CanonicalPath, String> {
    let segments: Vec<&str> = raw.split('/').collect();
    let last = segments.len() - 1;
    let mut object = Vec::with_capacity(segments.len());
    let mut upstream = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let decoded = segment_object(segment, i == last)?;
        upstream.push(utf8_percent_encode(&decoded, SEGMENT).to_string());
        object.push(decoded);
    }
    Ok(CanonicalPath {
        object: object.join("/"),
        upstream: upstream.join("/"),
    })
}

/// One segment, decoded once, or why an upstream could read it as something else.
fn segment_object(segment: &str, last: bool) -> Result<String, String> {
    if segment.is_empty() {
        // `a/` keeps its trailing slash; `a//b` and a leading `/` are merged away by some
        // servers and not by others.
        return if last {
            Ok(String::new())
        } else {
            Err("the path has an empty segment ('//'), which some upstreams merge away; send the path without it".to_owned())
        };
    }
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| format!("the path segment {segment:?} is not UTF-8 once decoded"))?
        .into_owned();
    if decoded.contains(['?', '#']) {
        return Err(format!(
            "the path segment {segment:?} encodes a '?' or '#', which reads as the start of a query or fragment; send the path without it"
        ));
    }
    if decoded.ends_with(['.', ' ']) {
        return Err(format!(
            "the path segment {segment:?} ends in a dot or a space, which some servers (Windows, IIS) drop, reading it as another path than the one governed"
        ));
    }
    if decoded.contains(';') {
        return Err(format!(
            "the path segment {segment:?} carries a ';' parameter, which servers such as Tomcat and Spring strip before routing; send the path without it"
        ));
    }
    if decoded == "." || decoded == ".." {
        return Err(format!(
            "the path has a {decoded:?} segment, which the upstream would resolve to another path than the one governed; send the resolved path"
        ));
    }
    if decoded.contains(['/', '\\']) {
        return Err(format!(
            "the path segment {segment:?} encodes a '/' or '\\', which the upstream may read as another path than the one governed"
        ));
    }
    if decoded.chars().any(char::is_control) {
        return Err(format!(
            "the path segment {segment:?} encodes a control character"
        ));
    }
    if decodes_again(&decoded) {
        return Err(format!(
            "the path segment {segment:?} still holds a percent-encoding once decoded, which an upstream that decodes twice would read as another path; encode each character once"
        ));
    }
    let compatible: String = decoded.nfkc().collect();
    if compatible != decoded {
        return Err(format!(
            "the path segment {segment:?} becomes {compatible:?} under Unicode compatibility normalization (NFKC), which some upstreams apply, so it could name another resource than the one governed; send it in NFKC form"
        ));
    }
    Ok(decoded)
}

/// `text` holds `%` and two hex digits: a second decoding would change it.
fn decodes_again(text: &str) -> bool {
    text.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

/// A form-encoded body (`application/x-www-form-urlencoded`) with a `_method` field: Rails and
/// Laravel take a POST carrying one for the method it names.
pub(crate) fn override_in_form(headers: &HeaderMap, body: &[u8]) -> Option<(String, String)> {
    let media = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let found = match media.as_str() {
        "application/x-www-form-urlencoded" => form_urlencoded::parse(body)
            .find(|(k, _)| overriding_param(k))
            .map(|(k, _)| k.into_owned()),
        // Rack reads multipart forms for `_method` too: a part of that name is refused.
        "multipart/form-data" => {
            let text = String::from_utf8_lossy(body).to_ascii_lowercase();
            OVERRIDE_PARAMS
                .iter()
                .find(|p| {
                    text.contains(&format!("name=\"{p}\"")) || text.contains(&format!("name={p}"))
                })
                .map(|p| (*p).to_owned())
        }
        // Laravel reads a JSON body's top-level `_method` as a form field.
        m if m == "application/json" || m.ends_with("+json") => {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
                .ok()?
                .keys()
                .find(|k| overriding_param(k))
                .cloned()
        }
        _ => None,
    };
    found.map(|k| {
        (
            "body".to_owned(),
            format!(
                "the body field {k:?} asks the upstream for another method than the one this call is governed as; send the call as what it is"
            ),
        )
    })
}

/// The first header or query parameter by which the caller asks the upstream to take another
/// method or path than the one judged: `(field, why)`.
pub(crate) fn override_in(headers: &HeaderMap, query: Option<&str>) -> Option<(String, String)> {
    // Header names are lowercase already; `_` reads as `-`, compared without allocating.
    let same = |name: &str, listed: &str| {
        name.len() == listed.len()
            && name
                .bytes()
                .zip(listed.bytes())
                .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
    };
    if let Some(name) = headers
        .keys()
        .map(|k| k.as_str())
        .find(|k| OVERRIDES.iter().any(|o| same(k, o)))
    {
        return Some((
            name.to_owned(),
            format!(
                "{name} asks the upstream for another method or path than the one this call is governed as; send the call as what it is"
            ),
        ));
    }
    let query = query?;
    // `;` separates parameters too for some frameworks.
    form_urlencoded::parse(query.replace(';', "&").as_bytes())
        .find(|(k, _)| overriding_param(k))
        .map(|(k, _)| {
            (
                "query".to_owned(),
                format!(
                    "the query parameter {k:?} asks the upstream for another method than the one this call is governed as; send the call as what it is"
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_come_from_a_closed_table_of_methods_in_their_canonical_case() {
        let m = |s: &str| Method::from_bytes(s.as_bytes()).unwrap();
        assert_eq!(
            derive_action(&Method::DELETE, "api/users/123"),
            "delete:api/users/123"
        );
        assert_eq!(derive_action(&Method::GET, "/x"), "read:x");
        assert_eq!(derive_action(&Method::PATCH, "a"), "write:a");
        assert_eq!(derive_action(&Method::HEAD, "a"), "read:a");
        assert_eq!(derive_action(&Method::OPTIONS, "a"), "read:a");
        for refused in [
            "delete",
            "Delete",
            "post",
            "get",
            "PURGE",
            "MOVE",
            "COPY",
            "PROPPATCH",
            "MKCOL",
            "LOCK",
            "UNLOCK",
            "TRACE",
            "CONNECT",
            "M-SEARCH",
            "DELETE2",
            "PROPFIND",
            "SEARCH",
            "QUERY",
        ] {
            assert_eq!(verb(&m(refused)), None, "{refused} must not be judged");
        }
        assert_eq!(derive_action(&m("PURGE"), "admin/x"), "PURGE:admin/x");
    }

    #[test]
    fn the_forwarded_path_is_the_judged_object_encoded_by_one_rule() {
        let ok = |raw: &str| canonical_path(raw).unwrap();
        assert_eq!(
            ok("api/repos/x"),
            CanonicalPath {
                object: "api/repos/x".into(),
                upstream: "api/repos/x".into()
            }
        );
        assert_eq!(ok("a%20b/c").object, "a b/c");
        assert_eq!(ok("a%20b/c").upstream, "a%20b/c");
        assert_eq!(ok("caf%C3%A9").upstream, "caf%C3%A9");
        assert_eq!(ok("a%41").upstream, "aA", "needless encodings are undone");
        assert_eq!(ok("x/").object, "x/", "a trailing slash is kept");
        assert_eq!(ok("v1/user:me@x").upstream, "v1/user:me@x");
    }

    #[test]
    fn paths_that_an_upstream_would_resolve_elsewhere_are_refused() {
        for bad in [
            "api/repos/../../admin/x",
            "api/%2e%2E/admin",
            "./admin",
            "api/repos%2F..%2Fadmin",
            "a%5Cb",
            "a%00",
            "a%ff",
            "notes/..;/admin/x",
            "notes/%2e%2e;/admin/x",
            "notes/x;jsessionid=1/admin",
            "notes/%3b/admin",
            "notes/%252e%252e/admin/x",
            "notes/%25%32%65/admin",
            "notes/%EF%BC%8E%EF%BC%8E/admin/x",
            "notes/%EF%BC%8Fadmin",
            "/admin/x",
            "notes//admin",
            "a%0d%0aX-Injected:%201",
        ] {
            assert!(canonical_path(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn override_headers_and_parameters_are_found() {
        for h in OVERRIDES {
            let mut headers = HeaderMap::new();
            headers.insert(*h, "DELETE".parse().unwrap());
            assert!(override_in(&headers, None).is_some(), "{h}");
        }
        let none = HeaderMap::new();
        for q in ["_method=DELETE", "a=1&_METHOD=delete", "%5Fmethod=DELETE"] {
            assert!(override_in(&none, Some(q)).is_some(), "{q}");
        }
        assert!(override_in(&none, Some("method=x&q=_method")).is_none());
        let mut form = HeaderMap::new();
        form.insert(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        assert!(override_in_form(&form, b"a=1&_method=DELETE").is_some());
        assert!(override_in_form(&form, b"a=1&b=_method").is_none());
        assert!(
            override_in_form(&none, b"_method=DELETE").is_none(),
            "not a form"
        );
    }
}
