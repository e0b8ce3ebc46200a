//! The access matrix against the running daemon: every route with every role and without a
//! token answers as `api::matrix::MATRIX` says; the daemon serves no route the matrix does
//! not list, and the OpenAPI document lists exactly the matrix's API routes; and
//! `docs/security.md` shows the current matrix (`DCGUARD_BLESS=1` rewrites it).

mod common;
mod common_api;

use std::collections::BTreeSet;
use std::path::Path;

use common_api::{ApiRig, RigOptions};
use dcguard::api::auth::Role;
use dcguard::api::matrix::{self, Guard, MATRIX, RouteRule};
use dcguard::api::ratelimit::LimitSettings;
use serde_json::Value;

/// A concrete path for a matrix route: parameters replaced by values that exist (site,
/// device) or are well-formed but unknown (ids).
fn concrete(rig: &ApiRig, rule: &RouteRule) -> String {
    let device = &rig
        .config
        .sites
        .iter()
        .find(|s| s.id == "dc")
        .unwrap()
        .devices[0]
        .id;
    let mut path = rule
        .path
        .replace("{site}", "dc")
        .replace("{device}", device);
    path = if rule.path.starts_with("/api/v1/deliveries") {
        path.replace("{id}", "999999")
    } else if rule.path.starts_with("/api/v1/incidents") {
        path.replace("{id}", "inc-0000000000000000")
    } else {
        path.replace("{id}", "no-such-window")
    };
    if rule.path.starts_with("/iclock") {
        path.push_str("?SN=NOT-A-READER");
    }
    path
}

fn body_of(rule: &RouteRule) -> Option<Value> {
    (rule.method != "GET").then(|| serde_json::json!({}))
}

/// Walks every row with no token and with each role's token; the status and error code
/// must be what the row allows. Allowed calls may fail on their input (400, 404 of an
/// object, 409) but never on authentication or authorization.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_with_every_role_and_without_a_token_matches_the_matrix() {
    let rig = ApiRig::start(RigOptions {
        // Hundreds of deliberate refusals from one address: no lockout here (the rate
        // limit has its own test).
        limits: LimitSettings {
            max_failures: 1_000_000,
            ..LimitSettings::default()
        },
        ..RigOptions::default()
    })
    .await;
    let mut checked = 0;
    for rule in MATRIX {
        let path = concrete(&rig, rule);
        let body = body_of(rule);
        let callers: Vec<Option<Role>> = std::iter::once(None)
            .chain(Role::ALL.into_iter().map(Some))
            .collect();
        let mut statuses = Vec::new();
        for caller in callers {
            let token = caller.map(|r| rig.token(r).to_owned());
            let (status, _, text) = rig
                .call(rule.method, &path, token.as_deref(), body.as_ref())
                .await;
            let json = common_api::parse(&text);
            let who = caller.map_or("no token".to_owned(), |r| r.to_string());
            let context = format!("{} {path} as {who}: {status} {text}", rule.method);
            assert_ne!(status, 405, "{context}");
            assert!(
                !(status == 404 && json["error"]["message"] == "no such route"),
                "{context}"
            );
            match (rule.guard, caller) {
                (Guard::Roles(_), None) => {
                    common_api::assert_error(status, &json, 401, "unauthenticated")
                }
                (Guard::Roles(_), Some(role)) if !rule.allows(role) => {
                    common_api::assert_error(status, &json, 403, "forbidden")
                }
                (Guard::Roles(_), Some(_)) | (Guard::Public, _) => {
                    assert!(![401, 403, 429].contains(&status), "{context}");
                    assert!(status < 500, "{context}");
                }
                // Loopback mode (the default): every loopback client, with or without a
                // token.
                (Guard::Metrics(_), _) => assert_eq!(status, 200, "{context}"),
                // Authorised by reader serial: a token changes nothing.
                (Guard::DeviceSerial, _) => {
                    assert!(![401, 429].contains(&status), "{context}");
                    assert!(text.starts_with("ERROR"), "{context}");
                }
            }
            statuses.push(status);
            checked += 1;
        }
        if rule.guard == Guard::DeviceSerial {
            assert!(
                statuses.windows(2).all(|w| w[0] == w[1]),
                "{} {path}: {statuses:?}",
                rule.method
            );
        }
    }
    assert_eq!(checked, MATRIX.len() * 6);
    rig.stop().await;
}

/// The daemon serves no route path the matrix does not list, serves every listed one, and
/// its OpenAPI document lists exactly the matrix's routes outside `/iclock` (method and
/// path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_exactly_the_routes_of_the_matrix() {
    let rig = ApiRig::start(RigOptions::default()).await;
    assert!(!rig.routes.is_empty());
    for route in &rig.routes {
        assert!(
            matrix::lists_path(route),
            "the daemon serves {route}, which the access matrix does not list"
        );
    }
    let served: BTreeSet<&str> = rig.routes.iter().map(String::as_str).collect();
    for rule in MATRIX {
        assert!(
            served.contains(rule.path),
            "the matrix lists {} {}, which the daemon does not serve",
            rule.method,
            rule.path
        );
    }
    let (status, doc) = rig.get("/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let listed: BTreeSet<(String, String)> = MATRIX
        .iter()
        .filter(|r| !r.path.starts_with("/iclock"))
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, listed);
    // The same document, built without a daemon.
    let generated = serde_json::to_value(dcguard::api::openapi()).unwrap();
    assert_eq!(generated, doc);
    rig.stop().await;
}

fn replace_between(text: &str, start: &str, end: &str, with: &str) -> Option<String> {
    let a = text.find(start)? + start.len();
    let b = text[a..].find(end)? + a;
    Some(format!("{}\n{}{}", &text[..a], with, &text[b..]))
}

/// `docs/security.md` shows the matrix as the code has it; `DCGUARD_BLESS=1` rewrites the
/// two generated tables.
#[test]
fn docs_security_md_shows_the_current_matrix() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/security.md");
    let text = std::fs::read_to_string(&path).expect("docs/security.md exists");
    let want = replace_between(
        &text,
        "<!-- matrix:start -->",
        "<!-- matrix:end -->",
        &matrix::markdown(),
    )
    .and_then(|t| {
        replace_between(
            &t,
            "<!-- coming:start -->",
            "<!-- coming:end -->",
            &matrix::coming_markdown(),
        )
    })
    .expect("docs/security.md has the matrix and coming markers");
    if std::env::var_os("DCGUARD_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    assert!(
        text == want,
        "docs/security.md is stale: run `DCGUARD_BLESS=1 cargo test --test api_matrix docs_security` \
         and commit the result"
    );
}
