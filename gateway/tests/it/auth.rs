//! Admin authentication on every admin route, under both prefixes.

use reqwest::Method;

use crate::harness::{ADMIN_TOKEN, Gateway, json, tempdir};

/// Every admin route as the router declares it: the paths of the `.route(..)` calls that build
/// the admin router in `src/routes/mod.rs`, read from the source, so a route added there is
/// tried here without anyone listing it. Path parameters become `x`.
fn admin_paths() -> Vec<String> {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/routes/mod.rs")).unwrap();
    let start = source
        .find("let admin = Router::new()")
        .expect("the admin router");
    let end = start + source[start..].find(".route_layer(").expect("its layers");
    let paths: Vec<String> = source[start..end]
        .split(".route(")
        .skip(1)
        .map(|rest| {
            let rest = rest.trim_start().trim_start_matches('"');
            rest[..rest.find('"').unwrap()]
                .split('/')
                .map(|seg| {
                    if seg.starts_with([':', '*']) {
                        "x"
                    } else {
                        seg
                    }
                })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    assert!(paths.len() >= 30, "the admin router's routes: {paths:?}");
    paths
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

#[test]
fn every_admin_route_refuses_missing_and_wrong_tokens_under_both_prefixes() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (_, agent_token) = crate::harness::agent(&gw, "not-an-admin", "privileged", &[]);
    let mut routed = 0;
    for prefix in ["/admin", "/api/v1/admin"] {
        for path in admin_paths() {
            let route = format!("{prefix}{path}");
            let mut refused = 0;
            for method in METHODS {
                let method = Method::from_bytes(method.as_bytes()).unwrap();
                let (status, body) = json(
                    gw.raw(method.clone(), &route)
                        .json(&serde_json::json!({}))
                        .send()
                        .unwrap(),
                );
                // A method the route does not have is 405 before anything runs.
                if status == 405 {
                    continue;
                }
                refused += 1;
                assert_eq!(status, 401, "{method} {route} without a token: {body}");
                assert_eq!(
                    body["message"],
                    "Missing X-Admin-Token or Authorization header"
                );

                let (status, body) = json(
                    gw.raw(method.clone(), &route)
                        .header("X-Admin-Token", "it-admin-token-4f9c2a7e1b3d5f6X")
                        .json(&serde_json::json!({}))
                        .send()
                        .unwrap(),
                );
                assert_eq!(status, 401, "{method} {route} with a wrong token: {body}");
                assert_eq!(body["message"], "Invalid admin token");
                assert!(!body.to_string().contains(ADMIN_TOKEN));

                let (status, _) = json(
                    gw.raw(method.clone(), &route)
                        .bearer_auth("short")
                        .send()
                        .unwrap(),
                );
                assert_eq!(status, 401, "{method} {route} with a wrong bearer token");
                let (status, _) = json(
                    gw.raw(method.clone(), &route)
                        .bearer_auth(&agent_token)
                        .send()
                        .unwrap(),
                );
                assert_eq!(status, 401, "{method} {route} with an agent's token");
            }
            assert!(refused > 0, "{route} answers no method: is it routed?");
            routed += refused;
        }
    }
    eprintln!("{routed} method and path pairs refused without admin credentials");
    assert!(routed >= 2 * 40, "{routed} method and path pairs tried");
}

#[test]
fn bearer_admin_token_and_the_versioned_prefix_reach_the_same_data() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (status, created) = json(
        gw.raw(Method::POST, "/api/v1/admin/agents")
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({"name": "via-bearer"}))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 201, "{created}");
    let (status, listed) = gw.get("/admin/agents");
    assert_eq!(status, 200);
    assert_eq!(listed["agents"][0]["id"], created["id"]);
}

#[test]
fn agent_tokens_are_not_admin_tokens_and_admin_tokens_are_not_agent_tokens() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (_, token) = crate::harness::agent(&gw, "a", "verified", &[]);
    let (status, _) = json(
        gw.raw(Method::GET, "/admin/agents")
            .bearer_auth(&token)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 401);
    let (status, body) = gw.check(ADMIN_TOKEN, "read:x");
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("Invalid or expired token"))
    );
}

#[test]
fn public_endpoints_answer_without_a_token() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (status, health) = json(gw.raw(Method::GET, "/health").send().unwrap());
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")));
    assert!(health["timestamp"].is_string(), "{health}");
    let (status, ready) = json(gw.raw(Method::GET, "/ready").send().unwrap());
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let (status, root) = json(gw.raw(Method::GET, "/").send().unwrap());
    assert_eq!(
        (status, root["name"].as_str()),
        (200, Some("MeshGuard Gateway"))
    );
    let (status, body) = json(gw.raw(Method::GET, "/nope").send().unwrap());
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}
