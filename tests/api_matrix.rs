//! The access matrix against the running daemon: every route with every role and without a
//! token answers as `api::matrix::MATRIX` says; the daemon serves no route the matrix does
//! not list, and the OpenAPI document lists exactly the matrix's API routes; and
//! `docs/security.md` shows the current matrix (`DCGUARD_BLESS=1` rewrites it).

mod common;
mod common_api;
mod common_web;

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
                // Pages take a session, not a token: without one a GET lands on the sign-in
                // page (the client follows the redirect) and a form post is refused 401.
                // `page_routes_with_every_role_match_the_matrix` walks them with sessions.
                (Guard::Session(_), _) if rule.method == "GET" => {
                    assert_eq!(status, 200, "{context}");
                    assert!(text.contains("action=\"/signin\""), "{context}");
                }
                (Guard::Session(_), _) => assert_eq!(status, 401, "{context}"),
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
        .filter(|r| !r.path.starts_with("/iclock") && !r.is_page())
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, listed);
    // The same document, built without a daemon.
    let generated = serde_json::to_value(dcguard::api::openapi()).unwrap();
    assert_eq!(generated, doc);
    rig.stop().await;
}

/// The page routes (`Guard::Session` rows) walked with a signed-in session of every role
/// and without one: an allowed role is served (a form post with the session's CSRF token
/// reaches its handler), another role is refused 403, no session redirects a GET to the
/// sign-in page and refuses a post 401; integrators cannot sign in. Every page carries the
/// security headers. A bad token is refused and audited by fingerprint, never by value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_routes_with_every_role_match_the_matrix() {
    let rig = ApiRig::start(RigOptions {
        limits: LimitSettings {
            max_failures: 1_000_000,
            ..LimitSettings::default()
        },
        ..RigOptions::default()
    })
    .await;
    let mut sessions = Vec::new();
    for role in Role::ALL {
        if role == Role::Integrator {
            let (status, _, body) = common_web::sign_in(&rig, rig.token(role)).await;
            assert_eq!(status, 403, "{body}");
            assert!(body.contains("no web pages"), "{body}");
            sessions.push((role, None));
        } else {
            sessions.push((role, Some(common_web::session(&rig, rig.token(role)).await)));
        }
    }
    let pages: Vec<&RouteRule> = MATRIX
        .iter()
        .filter(|r| matches!(r.guard, Guard::Session(_)) && r.path != "/signout")
        .collect();
    assert!(pages.len() >= 10, "{}", pages.len());
    for rule in pages {
        let path = concrete(&rig, rule);
        for (role, session) in &sessions {
            let (cookie, csrf) = match session {
                Some(s) => (s.cookie.clone(), s.csrf.clone()),
                None => (String::new(), String::new()),
            };
            let (status, headers, text) = if rule.method == "GET" {
                common_web::get(&rig, &cookie, &path).await
            } else {
                let form = [("csrf", csrf.as_str())];
                common_web::post(&rig, &cookie, &path, &form).await
            };
            let context = format!("{} {path} as {role}: {status} {text}", rule.method);
            match session {
                None if rule.method == "GET" => {
                    assert_eq!(status, 303, "{context}");
                    let location = headers["location"].to_str().unwrap();
                    assert!(location.starts_with("/signin"), "{context}");
                }
                None => assert_eq!(status, 401, "{context}"),
                Some(_) if !rule.allows(*role) => {
                    assert_eq!(status, 403, "{context}");
                    assert!(text.contains("may not"), "{context}");
                }
                Some(_) => {
                    assert!(![401, 403, 429].contains(&status), "{context}");
                    assert!(status < 500, "{context}");
                }
            }
            if status != 303 {
                for h in [
                    "content-security-policy",
                    "x-frame-options",
                    "referrer-policy",
                    "x-content-type-options",
                ] {
                    assert!(headers.get(h).is_some(), "{h} missing: {context}");
                }
            }
        }
    }
    // A post with another CSRF token is refused even for a role that may post.
    let operator = sessions[1].1.as_ref().unwrap();
    let (status, _, text) = common_web::post(
        &rig,
        &operator.cookie,
        "/control-room/acknowledge",
        &[
            ("csrf", "forged"),
            ("site", "dc"),
            ("rule", "x"),
            ("comment", "x"),
        ],
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("CSRF"), "{text}");
    // A viewer's control room has no action forms.
    let viewer = sessions[0].1.as_ref().unwrap();
    let (_, _, page) = common_web::get(&rig, &viewer.cookie, "/control-room").await;
    assert!(!page.contains("/control-room/acknowledge"), "{page}");
    assert!(!page.contains("/control-room/shelve"), "{page}");
    // Sign-out ends the session.
    let (status, headers, _) = common_web::post(
        &rig,
        &viewer.cookie,
        "/signout",
        &[("csrf", viewer.csrf.as_str())],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/signin");
    let (status, _, _) = common_web::get(&rig, &viewer.cookie, "/control-room").await;
    assert_eq!(status, 303, "a closed session is gone");
    // A bad token: 401, audited under its fingerprint; no token appears in the chain.
    let canary = "dcg_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let (status, _, body) = common_web::sign_in(&rig, canary).await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains(canary));
    // Denials are appended by the audit writer in the background.
    let denied = || {
        rig.audit_records().iter().any(|r| {
            r["payload"]["action"] == "POST /signin"
                && r["payload"]["result"] == "invalid_token"
                && r["payload"]["token_fingerprint"].is_string()
        })
    };
    assert!(
        common_api::wait_for(denied).await,
        "{:?}",
        rig.audit_records()
    );
    let records = rig.audit_records();
    assert!(
        records
            .iter()
            .any(|r| r["payload"]["action"] == "POST /signin"
                && r["actor"] == "test-operator"
                && r["payload"]["result"] == "ok"),
        "{:?}",
        records
            .iter()
            .filter(|r| r["payload"]["action"] == "POST /signin")
            .collect::<Vec<_>>()
    );
    let dir = rig.stop().await;
    let chain = std::fs::read_to_string(dir.path().join("data/access-audit.log")).unwrap();
    assert!(!chain.contains(&canary[4..]), "a token in the audit chain");
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
