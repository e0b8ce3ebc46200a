//! The demo's scripted timeline: three stories played side by side within two minutes,
//! each step printed as it happens with where to look.
//!
//! 1. DC data hall 1: two PACs fail; the hall warms (the demo runs that world's clock
//!    fast); an early warning, then a P1 incident with its due time.
//! 2. Smart DC: a visit ticket is recorded through the API (as the service desk would);
//!    the vendor badges in at the mantrap through the ZKTeco reader stub over real HTTP to
//!    `/iclock`, without their PIC; the `unescorted_third_party` finding appears.
//! 3. DRC: both utility feeds drop; the UPS carries the load on battery; a genset starts
//!    and takes the load.
//!
//! Faults are injected into the simulated worlds directly (as a scenario file does);
//! nothing here writes to a device over Modbus. What the daemon concluded is read back
//! through its own REST API with the demo's tokens.
//!
//! To fit two minutes, the temperature rules' on-delays are shortened to
//! [`TEMPERATURE_ON_DELAY`] ([`alarm_options`]); every other rule keeps its shipped
//! parameters.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use firmware_stubs::reader::{Firmware, ReaderStub, StubEvent};
use firmware_stubs::scenario::{Action, Feed};
use firmware_stubs::world::{SharedWorld, World};

use super::say;
use crate::alarms::task::AlarmTaskOptions;

/// The on-delay of the `hall_temperature*` rules in the demo (shipped: 60 s and 120 s).
pub const TEMPERATURE_ON_DELAY: Duration = Duration::from_secs(5);
/// Hang guard of each wait of the timeline (not a schedule): generous, so a loaded
/// machine (the test suite on two cores) still gets to the end.
const HANG: Duration = Duration::from_secs(300);
/// The prefix of the visit ticket the demo records (`DEMO-SDC-<unix seconds>`: a new
/// ticket every run, also when a data directory is used again).
pub const VISIT_TICKET_PREFIX: &str = "DEMO-SDC-";
/// The vendor's and the PIC's credentials (PINs on the readers) start with these digits,
/// followed by five digits of the run's time: a data directory used again holds the last
/// run's ticket, which must not cover this run's vendor.
pub const VENDOR_PIN_PREFIX: &str = "9";
pub const PIC_PIN_PREFIX: &str = "8";
/// The mantrap's outer reader of the Smart DC.
pub const READER: &str = "SDC-MT-OUT-01";

/// The alarm task's settings of the demo: shipped, except the temperature on-delays.
pub fn alarm_options() -> AlarmTaskOptions {
    AlarmTaskOptions {
        params: Some(Arc::new(|condition, mut params| {
            if condition.key.rule.starts_with("hall_temperature") {
                params.on_delay = params.on_delay.min(TEMPERATURE_ON_DELAY);
            }
            params
        })),
        ..AlarmTaskOptions::default()
    }
}

/// What the timeline drives and reads.
pub struct Context {
    /// `http://ADDR` of the daemon.
    pub base: String,
    /// Tokens (held in memory only).
    pub operator: String,
    pub security: String,
    pub integrator: String,
    /// The simulated worlds.
    pub dc: Option<SharedWorld>,
    pub drc: Option<SharedWorld>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Api {
    base: String,
    client: reqwest::Client,
    started: Instant,
}

impl Api {
    async fn get(&self, path: &str, token: &str) -> Option<Value> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> Result<Value, String> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("HTTP {}: {body}", status.as_u16()))
        }
    }

    /// `[+MM:SS]` since the timeline started.
    fn stamp(&self) -> String {
        let s = self.started.elapsed().as_secs();
        format!("[+{:02}:{:02}]", s / 60, s % 60)
    }

    fn say(&self, story: &str, line: &str) {
        say(&format!("{} {story:<9} {line}", self.stamp()));
    }
}

/// Polls `probe` every `every` until it gives a value, the hang guard passes or the
/// timeline is cancelled.
async fn poll<T, F, Fut>(cancel: &CancellationToken, every: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let guard = Instant::now() + HANG;
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if Instant::now() > guard {
            return None;
        }
        tokio::select! {
            () = cancel.cancelled() => return None,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Plays the timeline until its end (then waits for `cancel`) or until `cancel`.
pub async fn play(
    ctx: Context,
    incidents: mpsc::UnboundedReceiver<Value>,
    cancel: CancellationToken,
) {
    let api = Api {
        base: ctx.base.clone(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default(),
        started: Instant::now(),
    };
    let printer = tokio::spawn(print_incidents(api.clone(), incidents));
    api.say(
        "demo",
        "Waiting for the first readings of the three sites ...",
    );
    let ready = poll(&cancel, Duration::from_millis(500), || async {
        let dc = api
            .get(
                "/api/v1/sites/dc/points?room=dh1&role=env.temperature_c&quality=good",
                &ctx.operator,
            )
            .await?;
        let drc = api.get("/api/v1/sites/drc/power", &ctx.operator).await?;
        let drc_up = drc["ups"]
            .as_array()?
            .iter()
            .any(|u| u["values"]["ups.on_battery"]["quality"] == "good");
        (dc.as_array().is_some_and(|a| !a.is_empty()) && drc_up).then_some(())
    })
    .await;
    if cancel.is_cancelled() {
        printer.abort();
        return;
    }
    if ready.is_none() {
        api.say(
            "demo",
            "! readings are slow to arrive (a loaded machine?); playing the timeline anyway",
        );
    }
    api.say(
        "demo",
        "Readings arrive from all three sites: see /metrics (dcguard_reading_value) and /api/v1/sites.",
    );

    let dc = tokio::spawn(dc_cooling(
        api.clone(),
        ctx.operator.clone(),
        ctx.dc.clone(),
        cancel.clone(),
    ));
    let access = {
        let (api, cancel) = (api.clone(), cancel.clone());
        let (integrator, security) = (ctx.integrator.clone(), ctx.security.clone());
        tokio::spawn(async move {
            sleep_or_cancel(Duration::from_secs(15), &cancel).await;
            smart_dc_access(api, integrator, security, cancel).await
        })
    };
    let drc = {
        let (api, cancel) = (api.clone(), cancel.clone());
        let (operator, world) = (ctx.operator.clone(), ctx.drc.clone());
        tokio::spawn(async move {
            sleep_or_cancel(Duration::from_secs(35), &cancel).await;
            drc_utility_loss(api, operator, world, cancel).await
        })
    };
    let results = [dc.await, access.await, drc.await];
    if !cancel.is_cancelled() {
        let all = results.iter().all(|r| matches!(r, Ok(true)));
        api.say(
            "demo",
            if all {
                "Timeline complete. Everything stays live: explore the pages and the API; Ctrl-C stops the demo."
            } else {
                "Timeline ended with a step that did not happen (see above); Ctrl-C stops the demo."
            },
        );
    }
    cancel.cancelled().await;
    printer.abort();
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep(d) => {}
    }
}

/// Prints each incident event as the built-in receiver gets it: openings, changes of
/// priority and resolutions (every event is in `incidents.jsonl`).
async fn print_incidents(api: Api, mut incidents: mpsc::UnboundedReceiver<Value>) {
    let mut priorities: std::collections::HashMap<String, String> =
        std::collections::HashMap::new();
    while let Some(event) = incidents.recv().await {
        let data = &event["data"];
        let id = data["incident_id"].as_str().unwrap_or("?").to_owned();
        let priority = data["priority"].as_str().unwrap_or("?").to_owned();
        let kind = event["type"]
            .as_str()
            .unwrap_or("?")
            .trim_start_matches("dcguard.incident.");
        let before = priorities.insert(id.clone(), priority.clone());
        let what = match kind {
            "opened" => format!("opened {priority}"),
            "resolved" => format!("resolved ({priority})"),
            _ => match before {
                Some(old) if old != priority => format!("now {priority} (was {old})"),
                _ => continue,
            },
        };
        api.say(
            "ticketing",
            &format!(
                "-> incident {id} {what} {}: {} (due {}) [incidents.jsonl]",
                data["site"].as_str().unwrap_or("?"),
                data["summary"].as_str().unwrap_or("?"),
                data["due_at"].as_str().unwrap_or("?"),
            ),
        );
    }
}

fn with_world<T>(world: &SharedWorld, f: impl FnOnce(&mut World) -> T) -> T {
    let mut guard = world.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut guard)
}

/// Story 1: the DC data hall warms after two PACs fail.
async fn dc_cooling(
    api: Api,
    operator: String,
    world: Option<SharedWorld>,
    cancel: CancellationToken,
) -> bool {
    const STORY: &str = "DC";
    let Some(world) = world else {
        api.say(STORY, "! no simulated DC world; story skipped");
        return false;
    };
    for device in ["pac-dh1-1", "pac-dh1-2"] {
        let failed = with_world(&world, |w| {
            w.apply(&Action::Fail {
                device: device.to_owned(),
            })
        });
        if let Err(problem) = failed {
            api.say(STORY, &format!("! cannot fail {device}: {problem}"));
            return false;
        }
    }
    api.say(
        STORY,
        "Two of the five PACs of data hall 1 fail (pac-dh1-1, pac-dh1-2). Look: /api/v1/sites/dc/cooling",
    );
    api.say(
        STORY,
        "The hall warms; the demo runs the DC's simulated clock 40x fast so minutes pass in seconds.",
    );
    let temperature_incident = |priority: Option<&'static str>| {
        let (api, operator) = (api.clone(), operator.clone());
        async move {
            let list = api.get("/api/v1/incidents?site=dc", &operator).await?;
            list.as_array()?
                .iter()
                .find(|i| {
                    i["condition"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("hall_temperature"))
                        && i["state"] != "resolved"
                        && priority.is_none_or(|p| i["priority"] == p)
                })
                .cloned()
        }
    };
    // The early-warning band (26-27 degC against the 27 degC limit).
    warm_to(&world, 26.4, &cancel).await;
    let hall = with_world(&world, |w| w.room_temperature_c("dh1")).unwrap_or(f64::NAN);
    api.say(
        STORY,
        &format!("Data hall 1 at {hall:.1} degC (limit 27.0). Look: /api/v1/sites/dc/rooms"),
    );
    let Some(warning) = poll(&cancel, Duration::from_secs(1), || {
        temperature_incident(None)
    })
    .await
    else {
        api.say(STORY, "! no early warning appeared");
        return false;
    };
    api.say(
        STORY,
        &format!(
            "Early warning: incident {} {} \"{}\". Look: /api/v1/alarms?site=dc",
            warning["id"].as_str().unwrap_or("?"),
            warning["priority"].as_str().unwrap_or("?"),
            warning["summary"].as_str().unwrap_or("?"),
        ),
    );
    warm_to(&world, 27.8, &cancel).await;
    let hall = with_world(&world, |w| w.room_temperature_c("dh1")).unwrap_or(f64::NAN);
    api.say(
        STORY,
        &format!("Data hall 1 at {hall:.1} degC: above its 27.0 degC limit."),
    );
    let Some(p1) = poll(&cancel, Duration::from_secs(1), || {
        temperature_incident(Some("P1"))
    })
    .await
    else {
        api.say(STORY, "! no P1 incident appeared");
        return false;
    };
    api.say(
        STORY,
        &format!(
            "P1 incident {} \"{}\": due {} (3 h, 24x7). Look: /api/v1/incidents/{}",
            p1["id"].as_str().unwrap_or("?"),
            p1["summary"].as_str().unwrap_or("?"),
            p1["due_at"].as_str().unwrap_or("?"),
            p1["id"].as_str().unwrap_or("?"),
        ),
    );
    true
}

/// Steps the DC world ahead (10 s of simulated time every 250 ms) until data hall 1
/// reaches `target` degC.
async fn warm_to(world: &SharedWorld, target: f64, cancel: &CancellationToken) {
    let guard = Instant::now() + HANG;
    while Instant::now() < guard && !cancel.is_cancelled() {
        let reached = with_world(world, |w| {
            for _ in 0..5 {
                if w.room_temperature_c("dh1").is_none_or(|t| t >= target) {
                    return true;
                }
                w.step(Duration::from_secs(2));
            }
            false
        });
        if reached {
            return;
        }
        sleep_or_cancel(Duration::from_millis(250), cancel).await;
    }
}

/// Story 2: a vendor badges into the Smart DC without their PIC.
async fn smart_dc_access(
    api: Api,
    integrator: String,
    security: String,
    cancel: CancellationToken,
) -> bool {
    const STORY: &str = "Smart DC";
    let now = Utc::now();
    let ticket = format!("{VISIT_TICKET_PREFIX}{}", now.timestamp());
    let run = now.timestamp().rem_euclid(100_000);
    let vendor_pin = format!("{VENDOR_PIN_PREFIX}{run:05}");
    let pic_pin = format!("{PIC_PIN_PREFIX}{run:05}");
    let pic_id = format!("PIC-{ticket}");
    let visit = json!({
        "id": ticket, "site": "smart-dc", "rooms": ["server1"],
        "window_start": (now - TimeDelta::hours(1)).to_rfc3339(),
        "window_end": (now + TimeDelta::hours(3)).to_rfc3339(),
        "pic": {"name": "Budi Santoso (PIC)", "identity_number": pic_id,
                "organisation": "Pusintek", "credentials": [pic_pin]},
        "visitors": [{"name": "Andi Wijaya", "identity_number": format!("V-{ticket}"),
                      "organisation": "PT Vendor Server", "kind": "third_party",
                      "credentials": [vendor_pin], "pic": pic_id}],
        "activity_plan": "Replace a failed disk in server1 (demo)",
        "approver": "Kepala Bagian Operasional",
    });
    if let Err(problem) = api.post("/api/v1/visits", &integrator, &visit).await {
        api.say(STORY, &format!("! the visit ticket was refused: {problem}"));
        return false;
    }
    api.say(
        STORY,
        &format!(
            "Visit ticket {ticket} recorded (vendor Andi Wijaya, PIC Budi Santoso, server1). Look: /api/v1/visits (security token)"
        ),
    );
    // The vendor arrives a little later (a passage is judged by the tickets known at its
    // time, and the reader records whole seconds).
    sleep_or_cancel(Duration::from_secs(2), &cancel).await;
    let mut reader = match ReaderStub::new(&api.base, READER, Firmware::Access) {
        Ok(reader) => reader.with_retry_delay(Duration::from_millis(500)),
        Err(error) => {
            api.say(STORY, &format!("! reader stub: {error}"));
            return false;
        }
    };
    if let Err(error) = reader.handshake().await {
        api.say(
            STORY,
            &format!("! reader handshake with /iclock failed: {error}"),
        );
        return false;
    }
    let local = Utc::now()
        .with_timezone(&chrono_tz::Asia::Jakarta)
        .naive_local();
    let local = local - TimeDelta::nanoseconds(i64::from(chrono::Timelike::nanosecond(&local)));
    let mut event = StubEvent::granted(&vendor_pin, local);
    event.in_out = Some(0);
    if let Err(error) = reader.push(&[event], 10).await {
        api.say(STORY, &format!("! the reader could not deliver: {error}"));
        return false;
    }
    api.say(
        STORY,
        &format!(
            "The vendor badges in at the mantrap ({READER}, ZKTeco PUSH to /iclock); the PIC does not follow. Look: /api/v1/occupancy?site=smart-dc"
        ),
    );
    let finding = poll(&cancel, Duration::from_secs(1), || {
        let (api, security, ticket) = (api.clone(), security.clone(), ticket.clone());
        async move {
            let list = api
                .get(
                    &format!(
                        "/api/v1/findings?site=smart-dc&rule=unescorted_third_party&ticket={ticket}"
                    ),
                    &security,
                )
                .await?;
            list.as_array()?.first().cloned()
        }
    })
    .await;
    let Some(finding) = finding else {
        api.say(STORY, "! no finding appeared");
        return false;
    };
    api.say(
        STORY,
        &format!(
            "Finding #{} {} ({}): \"{}\". Look: /api/v1/findings (security token)",
            finding["id"],
            finding["rule"].as_str().unwrap_or("?"),
            finding["severity"].as_str().unwrap_or("?"),
            finding["summary"].as_str().unwrap_or("?"),
        ),
    );
    true
}

/// Story 3: the DRC loses both utility feeds; the UPS carries, a genset takes over.
async fn drc_utility_loss(
    api: Api,
    operator: String,
    world: Option<SharedWorld>,
    cancel: CancellationToken,
) -> bool {
    const STORY: &str = "DRC";
    let Some(world) = world else {
        api.say(STORY, "! no simulated DRC world; story skipped");
        return false;
    };
    for (feed, name) in [(Feed::A, "A"), (Feed::B, "B")] {
        if let Err(problem) = with_world(&world, |w| w.apply(&Action::CutUtility { feed })) {
            api.say(STORY, &format!("! cannot cut feed {name}: {problem}"));
            return false;
        }
        api.say(
            STORY,
            &format!("Utility (PLN) feed {name} drops. Look: /api/v1/sites/drc/power"),
        );
        if feed == Feed::A {
            sleep_or_cancel(Duration::from_secs(3), &cancel).await;
        }
    }
    let value = |plant: &Value, role: &str| -> Option<f64> {
        let point = &plant["values"][role];
        (point["quality"] == "good").then(|| point["value"].as_f64())?
    };
    let mut on_battery = false;
    let mut started = false;
    let guard = Instant::now() + HANG;
    while Instant::now() < guard && !cancel.is_cancelled() {
        if let Some(power) = api.get("/api/v1/sites/drc/power", &operator).await {
            let ups = power["ups"].as_array().cloned().unwrap_or_default();
            let gensets = power["gensets"].as_array().cloned().unwrap_or_default();
            if !on_battery && ups.iter().any(|u| value(u, "ups.on_battery") == Some(1.0)) {
                on_battery = true;
                api.say(STORY, "The UPS runs on battery and carries the load.");
            }
            let running: Vec<&str> = gensets
                .iter()
                .filter(|g| value(g, "genset.engine_running") == Some(1.0))
                .filter_map(|g| g["device"]["id"].as_str())
                .collect();
            if !started && !running.is_empty() {
                started = true;
                api.say(STORY, &format!("Genset {} started.", running.join(", ")));
            }
            let carrying: Vec<String> = gensets
                .iter()
                .filter(|g| value(g, "genset.breaker_closed") == Some(1.0))
                .filter_map(|g| {
                    let kw = value(g, "genset.load_kw").filter(|kw| *kw > 0.0)?;
                    Some(format!("{} {kw:.0} kW", g["device"]["id"].as_str()?))
                })
                .collect();
            if !carrying.is_empty() {
                let back = !ups.iter().any(|u| value(u, "ups.on_battery") == Some(1.0));
                api.say(
                    STORY,
                    &format!(
                        "The gensets take the load ({}){}. Look: /api/v1/sites/drc/power",
                        carrying.join(", "),
                        if back {
                            "; the UPS is back off battery"
                        } else {
                            ""
                        }
                    ),
                );
                return true;
            }
        }
        sleep_or_cancel(Duration::from_millis(500), &cancel).await;
    }
    if !cancel.is_cancelled() {
        api.say(STORY, "! the gensets did not take the load");
    }
    false
}
