//! The web pages in a real headless Chromium (Debian `chromium` and `chromium-driver`),
//! driven over WebDriver (fantoccini) against the whole daemon with the firmware stubs: an
//! operator watches a P1 from a cooling failure appear live and acknowledges it; a viewer
//! sees the same alarm without action buttons; security filters findings, reviews one,
//! opens the visit's timeline and exports the access log as CSV through the same session.
//! With `DCGUARD_SCREENSHOTS=1` it writes `docs/screenshots/{signin,control-room,security}.png`.

mod common;
mod common_api;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common_api::{ApiRig, HANG, RigOptions};
use dcguard::api::auth::Role;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use firmware_stubs::scenario::{Scenario, Timeline};
use serde_json::{Value, json};

/// Hang guard for a finding that waits for the escort gap and the settle time.
const ESCORT_HANG: Duration = Duration::from_secs(150);

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    let port = common::free_port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian package chromium-driver) is installed");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = format!("{}/status", driver.url);
    let http = reqwest::Client::new();
    let guard = tokio::time::Instant::now() + HANG;
    loop {
        if let Ok(r) = http.get(&status).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < guard,
            "chromedriver never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    driver
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1800,1300",
                     "--force-device-scale-factor=1"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Waits (hang guard) for an element matching `css`.
async fn wait_css(c: &Client, css: &str, hang: Duration) -> Element {
    let guard = tokio::time::Instant::now() + hang;
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < guard,
            "no {css} on {}",
            c.current_url().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn screenshots_dir() -> Option<PathBuf> {
    std::env::var_os("DCGUARD_SCREENSHOTS")
        .map(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots"))
}

async fn screenshot(c: &Client, name: &str) {
    if let Some(dir) = screenshots_dir() {
        std::fs::create_dir_all(&dir).unwrap();
        let png = c.screenshot().await.unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

/// Signs in through the page with `token`; lands on `want`.
async fn sign_in(c: &Client, rig: &ApiRig, token: &str, want: &str) {
    c.goto(&rig.url(want)).await.unwrap();
    let field = wait_css(c, "#token", HANG).await;
    assert!(c.current_url().await.unwrap().path() == "/signin");
    field.send_keys(token).await.unwrap();
    c.find(Locator::Css("#signin"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_css(c, "#signout", HANG).await;
    assert_eq!(c.current_url().await.unwrap().path(), want);
}

async fn sign_out(c: &Client) {
    c.find(Locator::Css("#signout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_css(c, "#token", HANG).await;
}

/// A visit ticket for the DC whose window holds now: PIC 70001 escorts vendor 70002.
fn visit() -> Value {
    let now = chrono::Utc::now();
    json!({
        "id": "T-7", "site": "dc", "rooms": ["dh1"],
        "window_start": (now - chrono::TimeDelta::hours(1)).to_rfc3339(),
        "window_end": (now + chrono::TimeDelta::hours(2)).to_rfc3339(),
        "pic": {"name": "Budi PIC", "identity_number": "PIC-1", "organisation": "Pusintek",
                "credentials": ["70001"]},
        "visitors": [{"name": "Vendor One", "identity_number": "V-1",
                      "organisation": "PT Vendor", "kind": "third_party",
                      "credentials": ["70002"], "pic": "PIC-1"}],
        "activity_plan": "PDU replacement", "approver": "Kepala Bagian",
    })
}

/// Fails two PACs of DC data hall 1 and steps the simulated hall past 27.8 degC (the
/// `dc-cooling-failure` scenario, sped up).
fn cooling_failure(rig: &ApiRig) {
    let scenario = Scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("firmware-stubs/scenarios/dc-cooling-failure.toml"),
    )
    .unwrap();
    let mut timeline = Timeline::new(Some(&scenario));
    let world = rig.sim.world("dc").expect("site simulated");
    let mut w = world.lock().unwrap();
    for _ in 0..4000 {
        if w.room_temperature_c("dh1").unwrap() >= 27.8 {
            break;
        }
        timeline.advance(&mut w, Duration::from_secs(2));
    }
    assert!(w.room_temperature_c("dh1").unwrap() >= 27.8);
}

/// Operator, viewer and security in one browser against one daemon (one start-up of the
/// stubs and Mosquitto): see the module documentation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_viewer_and_security_work_in_a_real_browser() {
    let rig = ApiRig::start(RigOptions::default()).await;
    // Access data first: the unescorted-entry finding needs the escort gap to pass.
    let (status, body) = rig
        .post("/api/v1/visits", Some(Role::Integrator), &visit())
        .await;
    assert_eq!(status, 201, "{body}");
    let batch = json!({"events": [{"reader": "DC-MT-OUT-01", "credential": "70002",
        "kind": "granted", "direction": "entry", "time": chrono::Utc::now().to_rfc3339()}]});
    let (status, body) = rig
        .post("/api/v1/access/events", Some(Role::Integrator), &batch)
        .await;
    assert_eq!(status, 200, "{body}");

    let driver = start_driver().await;
    let c = browser(&driver).await;

    // --- operator: the P1 appears live, is acknowledged, changes state ---
    c.goto(&rig.url("/signin")).await.unwrap();
    wait_css(&c, "#token", HANG).await;
    screenshot(&c, "signin.png").await;
    sign_in(&c, &rig, rig.token(Role::Operator), "/control-room").await;
    assert_eq!(
        c.find(Locator::Css("#role"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "operator"
    );
    // The page is open before the failure: the alarm must arrive by SSE, not by a reload.
    wait_css(&c, "article.site[data-site='drc']", HANG).await;
    let marker: Value = c
        .execute("window.__before_failure = 1; return 1;", vec![])
        .await
        .unwrap();
    assert_eq!(marker, json!(1));
    cooling_failure(&rig);
    let p1 =
        "tr.alarm[data-priority='P1'][data-state='active_unacked'][data-alarm*='hall_temperature']";
    let row = wait_css(&c, p1, Duration::from_secs(120)).await;
    let still_same_page: Value = c
        .execute("return window.__before_failure === 1;", vec![])
        .await
        .unwrap();
    assert_eq!(
        still_same_page,
        json!(true),
        "the page reloaded instead of updating live"
    );
    let alarm_id = row.attr("data-alarm").await.unwrap().unwrap();
    // Acknowledge (the fragment may be swapped between finding and typing: retry).
    let ack_css = format!("tr.alarm[data-alarm='{alarm_id}'] form.ack");
    let guard = tokio::time::Instant::now() + HANG;
    loop {
        let attempt = async {
            let form = c.find(Locator::Css(&ack_css)).await?;
            let comment = form.find(Locator::Css("input[name='comment']")).await?;
            comment.send_keys("PAC engineer dispatched").await?;
            form.find(Locator::Css("button")).await?.click().await?;
            Ok::<(), fantoccini::error::CmdError>(())
        };
        if attempt.await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < guard, "could not acknowledge");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let acked = format!("tr.alarm[data-alarm='{alarm_id}'][data-state='active_acked']");
    wait_css(&c, &acked, HANG).await;
    let view = rig.alarms.view();
    let alarm = view
        .alarms
        .iter()
        .find(|a| a.key.to_string() == alarm_id)
        .expect("the alarm is in the book");
    assert!(!alarm.state.is_unacked(), "{:?}", alarm.state);
    assert!(
        rig.audit_records()
            .iter()
            .any(|r| r["actor"] == "test-operator"
                && r["payload"]["action"] == "POST /control-room/acknowledge"
                && r["payload"]["result"] == "ok"),
        "the page's acknowledgement is audited"
    );
    // The incident of the P1 is listed with its state.
    wait_css(&c, "#incidents tr.incident", HANG).await;
    if screenshots_dir().is_some() {
        // Tall enough for the alarms, the incidents and the three sites.
        c.set_window_size(1800, 3600).await.unwrap();
        screenshot(&c, "control-room.png").await;
        c.set_window_size(1800, 1300).await.unwrap();
    }
    sign_out(&c).await;

    // --- viewer: the same alarms, no action buttons ---
    sign_in(&c, &rig, rig.token(Role::Viewer), "/control-room").await;
    wait_css(&c, &format!("tr.alarm[data-alarm='{alarm_id}']"), HANG).await;
    let forms = c
        .find_all(Locator::Css("form.ack, form.shelve, td.actions"))
        .await
        .unwrap();
    assert!(
        forms.is_empty(),
        "a viewer sees {} action forms",
        forms.len()
    );
    // Nor the security review link.
    assert!(c.find(Locator::Css("a[href='/security']")).await.is_err());
    sign_out(&c).await;

    // --- security: filter findings, review, visit timeline, CSV export ---
    sign_in(&c, &rig, rig.token(Role::Security), "/security").await;
    let guard = tokio::time::Instant::now() + ESCORT_HANG;
    loop {
        c.goto(&rig.url("/security?ticket=T-7&rule=unescorted_third_party"))
            .await
            .unwrap();
        if c.find(Locator::Css("tr.finding")).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < guard,
            "no finding for T-7 on the security page"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Filter through the form: reviewed=yes hides the (unreviewed) finding ...
    c.goto(&rig.url("/security")).await.unwrap();
    let ticket = wait_css(&c, "#finding-filter input[name='ticket']", HANG).await;
    ticket.send_keys("T-7").await.unwrap();
    c.find(Locator::Css(
        "#finding-filter select[name='reviewed'] option[value='yes']",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    c.find(Locator::Css("#apply-filter"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_css(&c, "#no-findings", HANG).await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .query()
            .unwrap()
            .contains("ticket=T-7")
    );
    // ... and reviewed=no shows it.
    c.find(Locator::Css(
        "#finding-filter select[name='reviewed'] option[value='no']",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    c.find(Locator::Css("#apply-filter"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let finding = wait_css(&c, "tr.finding[data-rule='unescorted_third_party']", HANG).await;
    let review = finding
        .find(Locator::Css("form.review input[name='note']"))
        .await
        .unwrap();
    review
        .send_keys("PIC was at the gate; vendor turned back")
        .await
        .unwrap();
    finding
        .find(Locator::Css("form.review button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let reviewed = wait_css(&c, "tr.finding .reviewed-by", HANG).await;
    assert!(
        reviewed.text().await.unwrap().contains("test-security"),
        "the review names its reviewer"
    );
    // The vendor is inside now, under the ticket.
    wait_css(&c, "#occupancy tr.occupant[data-credential='70002']", HANG).await;
    assert!(
        c.find(Locator::Css("#audit-state"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("INTACT")
    );
    // Access log search for the vendor's credential, then its CSV through the session.
    let credential = c
        .find(Locator::Css("#log-search input[name='log_credential']"))
        .await
        .unwrap();
    credential.send_keys("70002").await.unwrap();
    c.find(Locator::Css("#log-apply"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_css(&c, "#access-log tr.event", HANG).await;
    screenshot(&c, "security.png").await;
    let href = c
        .find(Locator::Css("#export-csv"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert!(href.contains("log_credential=70002"), "{href}");
    let got = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0], {credentials: 'same-origin'})
               .then(r => r.text().then(t => done([r.status, r.headers.get('content-type'), t])))
               .catch(e => done([0, '', String(e)]));",
            vec![json!(href)],
        )
        .await
        .unwrap();
    assert_eq!(got[0], json!(200), "{got}");
    assert!(got[1].as_str().unwrap().starts_with("text/csv"), "{got}");
    let csv = got[2].as_str().unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "a header and the vendor's one event: {csv}");
    assert!(lines[0].contains("credential"), "{csv}");
    assert!(
        lines[1].contains("70002") && lines[1].contains("DC-MT-OUT-01"),
        "{csv}"
    );
    assert!(
        rig.audit_records()
            .iter()
            .any(|r| r["actor"] == "test-security"
                && r["payload"]["action"] == "GET /security/events.csv"
                && r["payload"]["object"]
                    .as_str()
                    .is_some_and(|o| o.contains("rows=1"))),
        "the page's export is audited with its row count"
    );
    // The visit's timeline from the finding's ticket link.
    c.goto(&rig.url("/security?ticket=T-7")).await.unwrap();
    wait_css(&c, "tr.finding a.visit", HANG)
        .await
        .click()
        .await
        .unwrap();
    let ticket = wait_css(&c, "#ticket", HANG).await;
    assert_eq!(ticket.text().await.unwrap(), "T-7");
    let timeline = c
        .find(Locator::Css("#timeline"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(timeline.contains("Vendor One"), "{timeline}");
    assert!(timeline.contains("NO ESCORT"), "{timeline}");
    // Bahasa Indonesia on request.
    c.goto(&rig.url("/security?lang=id")).await.unwrap();
    let heading = wait_css(&c, "#findings h2", HANG).await;
    assert_eq!(heading.text().await.unwrap(), "Temuan");

    c.close().await.unwrap();
    drop(driver);
    rig.stop().await;
}
