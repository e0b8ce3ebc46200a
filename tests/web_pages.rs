//! The web pages over plain HTTP against the whole daemon (firmware stubs, Mosquitto):
//! failed sign-ins hit the API's rate limit and never echo the token; bad input from a
//! page gets a clear HTML error and never a 5xx; the control room's event stream announces
//! an alarm change and does not hold up the daemon's shutdown.

mod common;
mod common_api;
mod common_web;

use std::time::Duration;

use common_api::{ApiRig, HANG, RigOptions};
use dcguard::api::auth::Role;
use dcguard::api::ratelimit::LimitSettings;

/// Failed sign-ins count towards the per-address limit: after `max_failures` the address
/// is locked (429 with `Retry-After`), even for a valid token; the page never shows the
/// token that was typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_rate_limited_and_never_echo_the_token() {
    let rig = ApiRig::start(RigOptions {
        limits: LimitSettings {
            max_failures: 3,
            ..LimitSettings::default()
        },
        ..RigOptions::default()
    })
    .await;
    let canary = "dcg_feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface";
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, headers, body) = common_web::sign_in(&rig, canary).await;
        assert!(!body.contains(&canary[4..]), "the page echoes the token");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        if status == 429 {
            assert!(headers.get("retry-after").is_some());
            assert!(body.contains("too many failed sign-ins"), "{body}");
        } else {
            assert!(body.contains("the token is not valid"), "{body}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    // The address is locked: the right token is refused too, for now.
    let (status, _, _) = common_web::sign_in(&rig, rig.token(Role::Operator)).await;
    assert_eq!(status, 429);
    let dir = rig.stop().await;
    let chain = std::fs::read_to_string(dir.path().join("data/access-audit.log")).unwrap();
    assert!(!chain.contains(&canary[4..]), "a token in the audit chain");
    assert!(chain.contains("POST /signin"));
}

/// (method, path, form, status, words in the page).
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16, &'a str);

/// Bad input from a page answers an HTML error page with the API's words and the right
/// status, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_page() {
    let rig = ApiRig::start(RigOptions::default()).await;
    let admin = common_web::session(&rig, rig.token(Role::Admin)).await;
    let csrf = admin.csrf.as_str();
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/security/findings/abc/review",
            vec![("csrf", csrf), ("note", "x")],
            400,
            "finding id: expected a number",
        ),
        (
            "POST",
            "/security/findings/999999999/review",
            vec![("csrf", csrf), ("note", "x")],
            404,
            "999999999",
        ),
        (
            "POST",
            "/control-room/shelve",
            vec![
                ("csrf", csrf),
                ("site", "dc"),
                ("rule", "x"),
                ("reason", "y"),
                ("minutes", "many"),
            ],
            400,
            "the form is not valid",
        ),
        (
            "POST",
            "/control-room/shelve",
            vec![
                ("csrf", csrf),
                ("site", "dc"),
                ("rule", "hall_temperature_high"),
                ("reason", "y"),
                ("minutes", "100000"),
            ],
            400,
            "duration_secs",
        ),
        (
            "POST",
            "/control-room/acknowledge",
            vec![
                ("csrf", csrf),
                ("site", "dc"),
                ("rule", "no_rule"),
                ("comment", "x"),
            ],
            404,
            "no_rule",
        ),
        (
            "POST",
            "/control-room/acknowledge",
            vec![("csrf", csrf), ("site", "dc")],
            400,
            "the form is not valid",
        ),
        ("GET", "/security?colour=red", vec![], 400, "colour"),
        ("GET", "/security/visits/NOPE", vec![], 404, "NOPE"),
        (
            "GET",
            "/security/events.csv?log_from=soon",
            vec![],
            400,
            "log_from",
        ),
    ];
    for (method, path, form, want, words) in cases {
        let (status, headers, body) = if method == "GET" {
            common_web::get(&rig, &admin.cookie, path).await
        } else {
            common_web::post(&rig, &admin.cookie, path, &form).await
        };
        let context = format!("{method} {path}: {status} {body}");
        assert_eq!(status, want, "{context}");
        assert!(body.contains(words), "{context}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{context}"
        );
        for leak in ["/src/", ".rs:", "panicked", "SELECT"] {
            assert!(!body.contains(leak), "{context}");
        }
    }
    // A bad filter is shown in its panel; the rest of the page still works.
    let (status, _, body) = common_web::get(&rig, &admin.cookie, "/security?from=yesterday").await;
    assert_eq!(status, 200);
    assert!(body.contains("from: found &quot;yesterday&quot;"), "{body}");
    assert!(body.contains("id=\"audit\""));
    // A body over the limit is refused before it is read.
    let big = "a".repeat(70 * 1024);
    let (status, _, _) = common_web::post(
        &rig,
        &admin.cookie,
        "/control-room/acknowledge",
        &[("csrf", csrf), ("comment", big.as_str())],
    )
    .await;
    assert_eq!(status, 413);
    rig.stop().await;
}

/// Reads the event stream until `name` arrives (hang guard); false if the stream ended.
async fn until_event(resp: &mut reqwest::Response, name: &str) -> bool {
    let guard = tokio::time::Instant::now() + HANG;
    let mut seen = String::new();
    while tokio::time::Instant::now() < guard {
        match tokio::time::timeout(Duration::from_secs(1), resp.chunk()).await {
            Ok(Ok(Some(bytes))) => {
                seen.push_str(&String::from_utf8_lossy(&bytes));
                if seen.contains(&format!("event: {name}")) {
                    return true;
                }
            }
            Ok(_) => return false,
            Err(_) => {}
        }
    }
    false
}

/// The control room's stream says `changed` when an alarm is raised, and a connected
/// control room does not hold up the daemon's shutdown (the stream ends with the alarm
/// task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_announces_changes_and_ends_with_the_daemon() {
    let rig = ApiRig::start(RigOptions::default()).await;
    let viewer = common_web::session(&rig, rig.token(Role::Viewer)).await;
    let mut stream = common_web::client()
        .get(rig.url("/control-room/events"))
        .header("cookie", &viewer.cookie)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert!(until_event(&mut stream, "hello").await);
    rig.raise_smoke("vesda-dh1-1").await;
    assert!(
        until_event(&mut stream, "changed").await,
        "no change announced"
    );
    // Stop with the stream open: the rig's stop fails if shutdown exceeds its grace.
    let stop = tokio::time::timeout(Duration::from_secs(120), rig.stop()).await;
    assert!(stop.is_ok(), "the daemon did not stop with a stream open");
    let ended = tokio::time::timeout(HANG, async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived the daemon");
}
