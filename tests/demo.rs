//! The newcomer check: the README's `dcguard demo` on the built binary, for the length of
//! its timeline. Through the API with the printed tokens: the P1 incident of the DC hall,
//! the Smart DC access finding and the DRC genset takeover happened; `/metrics` carries
//! readings of all three sites; `incidents.jsonl` holds CloudEvents lines, relayed to a
//! `--webhook`; the tokens are in no file and no log; the stubs saw reads only; SIGINT
//! shuts down cleanly (exit 0 and the message).

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firmware_stubs::receivers::webhook::WebhookReceiver;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Hang guard of each wait (not a timing assertion): the timeline takes about two
/// minutes; a debug build on a loaded 2-core machine may need more.
const HANG: Duration = Duration::from_secs(300);
/// The external webhook's secret in the test (given to the demo by environment).
const EXTERNAL_KEY: &str = "test-only-external-webhook-key";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The embedded copy of `config/` is the shipped one, file for file.
#[test]
fn the_embedded_configuration_is_the_shipped_one() {
    let mut on_disk = Vec::new();
    for sub in ["", "profiles", "sites"] {
        for entry in std::fs::read_dir(repo().join("config").join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let rel = path.strip_prefix(repo().join("config")).unwrap();
                on_disk.push((
                    rel.to_string_lossy().into_owned(),
                    std::fs::read_to_string(&path).unwrap(),
                ));
            }
        }
    }
    on_disk.sort();
    let mut embedded: Vec<(String, String)> = dcguard::demo::config::SHIPPED
        .iter()
        .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
        .collect();
    embedded.sort();
    let names = |v: &[(String, String)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&embedded),
        names(&on_disk),
        "src/demo/config.rs must list every file of config/"
    );
    assert!(embedded == on_disk, "the embedded text differs (rebuild?)");
}

#[test]
fn an_unwritable_data_dir_is_refused_naming_what_was_expected() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dcguard"))
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg("/proc/dcguard-demo-cannot-be-here")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--data-dir") && stderr.contains("expected a directory"),
        "{stderr}"
    );
}

/// What the demo printed so far.
#[derive(Clone, Default)]
struct Printed(Arc<Mutex<Vec<String>>>);

impl Printed {
    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }

    /// The rest of the first line starting with `prefix` (after trimming).
    fn value(&self, prefix: &str) -> Option<String> {
        self.0.lock().unwrap().iter().find_map(|l| {
            l.trim_start()
                .strip_prefix(prefix)
                .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
        })
    }
}

async fn eventually<T, F, Fut>(what: &str, printed: &Printed, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let guard = tokio::time::Instant::now() + HANG;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < guard,
            "{what} never happened; the demo printed:\n{}",
            printed.text()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn get(client: &reqwest::Client, url: &str, token: &str) -> Option<Value> {
    let response = client.get(url).bearer_auth(token).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_demo_shows_the_p1_the_finding_and_the_genset_and_stops_cleanly() {
    // The README's command is `cargo run --release -- demo`; this runs the same
    // subcommand of the built binary, on any free port and a data directory of its own.
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains("cargo run --release -- demo"),
        "README lost the demo command"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo-data");
    // An external webhook, as a service desk would run one; its secret by environment.
    let external = WebhookReceiver::start(EXTERNAL_KEY).await.unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dcguard"))
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(["--webhook", &external.url()])
        .args(["--webhook-secret-env", "DCGUARD_DEMO_TEST_WEBHOOK_SECRET"])
        .env("DCGUARD_DEMO_TEST_WEBHOOK_SECRET", EXTERNAL_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start dcguard demo");
    let printed = Printed::default();
    let logs = Printed::default();
    for (stream, sink) in [
        (
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            printed.clone(),
        ),
        (Box::new(child.stderr.take().unwrap()), logs.clone()),
    ] {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.0.lock().unwrap().push(line);
            }
        });
    }

    // Where to look, and the tokens, from the terminal.
    let (base, operator, security) = eventually("the banner", &printed, || async {
        let web = printed.value("web pages:")?;
        let operator = printed.value("operator token:")?;
        let security = printed.value("security token:")?;
        Some((web.trim_end_matches('/').to_owned(), operator, security))
    })
    .await;
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    for line in ["metrics:", "API:", "incidents:"] {
        assert!(
            printed.value(line).is_some(),
            "no {line} line:\n{}",
            printed.text()
        );
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    // /metrics: readings of all three sites.
    eventually(
        "readings of all three sites in /metrics",
        &printed,
        || async {
            let scrape = client
                .get(format!("{base}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            ["dc", "smart-dc", "drc"]
                .iter()
                .all(|site| {
                    scrape.lines().any(|l| {
                        l.starts_with("dcguard_reading_value{")
                            && l.contains(&format!("site=\"{site}\""))
                    })
                })
                .then_some(())
        },
    )
    .await;

    // DC: a P1 temperature incident in data hall 1 with its 3 h due time.
    let p1 = eventually("the DC P1 incident", &printed, || async {
        let list = get(
            &client,
            &format!("{base}/api/v1/incidents?site=dc"),
            &operator,
        )
        .await?;
        list.as_array()?
            .iter()
            .find(|i| {
                i["priority"] == "P1"
                    && i["room"] == "dh1"
                    && i["condition"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("hall_temperature"))
            })
            .cloned()
    })
    .await;
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    // P1: 3 clock hours from the instant it became P1 (it opened as the early warning's
    // P3 and escalated), so at most 3 h from now and after its opening.
    let (opened, due) = (time(&p1["opened_at"]), time(&p1["due_at"]));
    assert!(
        due > opened && due <= chrono::Utc::now() + chrono::TimeDelta::hours(3),
        "P1 runs 3 clock hours: {p1:#}"
    );

    // Smart DC: the vendor without their PIC.
    let finding = eventually("the access finding", &printed, || async {
        let list = get(
            &client,
            &format!("{base}/api/v1/findings?site=smart-dc&rule=unescorted_third_party"),
            &security,
        )
        .await?;
        list.as_array()?.first().cloned()
    })
    .await;
    assert!(
        finding["credential"]
            .as_str()
            .is_some_and(|c| c.starts_with('9'))
            && finding["ticket"]
                .as_str()
                .is_some_and(|t| t.starts_with("DEMO-SDC-")),
        "{finding:#}"
    );
    assert_eq!(finding["reader"], "SDC-MT-OUT-01", "{finding:#}");
    // The operator token is not a security token.
    let refused = client
        .get(format!("{base}/api/v1/findings"))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);

    // DRC: a genset carries the load.
    eventually("the DRC genset takeover", &printed, || async {
        let power = get(
            &client,
            &format!("{base}/api/v1/sites/drc/power"),
            &operator,
        )
        .await?;
        power["gensets"]
            .as_array()?
            .iter()
            .any(|g| {
                let v = |role: &str| {
                    let p = &g["values"][role];
                    (p["quality"] == "good")
                        .then(|| p["value"].as_f64())
                        .flatten()
                };
                v("genset.breaker_closed") == Some(1.0)
                    && v("genset.load_kw").is_some_and(|kw| kw > 0.0)
            })
            .then_some(())
    })
    .await;
    eventually("the end of the timeline", &printed, || async {
        printed.text().contains("Timeline complete").then_some(())
    })
    .await;

    // incidents.jsonl: one CloudEvents object per line, the P1 among them.
    let jsonl = std::fs::read_to_string(data.join("incidents.jsonl")).unwrap();
    // Whole lines only: the receiver may be appending one right now.
    let complete = &jsonl[..jsonl.rfind('\n').map_or(0, |i| i + 1)];
    let events: Vec<Value> = complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!events.is_empty());
    for e in &events {
        assert_eq!(e["specversion"], "1.0", "{e}");
        assert_eq!(e["source"], "dcguard", "{e}");
        assert!(
            e["type"].as_str().unwrap().starts_with("dcguard.incident."),
            "{e}"
        );
        assert!(e["id"].is_string() && e["data"].is_object(), "{e}");
    }
    assert!(
        events
            .iter()
            .any(|e| e["data"]["incident_id"] == p1["id"] && e["data"]["priority"] == "P1"),
        "the P1 reached the receiver"
    );

    // The external webhook got the same events, signed with its own secret.
    let relayed = eventually("the relay of the P1 to --webhook", &printed, || async {
        let applied = external.applied();
        applied
            .iter()
            .any(|a| {
                a.incident_id == p1["id"].as_str().unwrap()
                    && a.envelope["data"]["priority"] == "P1"
            })
            .then_some(applied)
    })
    .await;
    assert!(external.requests().iter().all(|r| r.signature_ok));
    // Every relayed event is a line of the file (read again: more may have arrived).
    let jsonl = std::fs::read_to_string(data.join("incidents.jsonl")).unwrap();
    let events: Vec<Value> = jsonl
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for a in &relayed {
        assert!(
            events.iter().any(|e| e == &a.envelope),
            "relayed as written: {:#}",
            a.envelope
        );
    }

    // The tokens were printed once and are in no file and no log line.
    for file in walk(&data) {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for token in [&operator, &security] {
            assert!(
                !text.contains(token.as_str()),
                "a token in {}",
                file.display()
            );
        }
    }
    assert!(!logs.text().contains(&operator) && !logs.text().contains(&security));

    // SIGINT: ordered shutdown, exit 0, and it says so.
    let pid = child.id().expect("the demo runs").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(HANG, child.wait())
        .await
        .expect("the demo did not stop after SIGINT")
        .unwrap();
    // Let the readers take the last lines.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = printed.text();
    assert_eq!(status.code(), Some(0), "{out}\n{}", logs.text());
    assert!(out.contains("shutting down in order"), "{out}");
    assert!(out.contains("dcguard demo shut down cleanly"), "{out}");
    // Read-only towards equipment: the stubs saw read function codes only.
    let codes = out
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Modbus function codes the stubs received: ")
        })
        .unwrap_or_else(|| panic!("no function code line:\n{out}"));
    let codes = codes.trim_end_matches(" (reads only).");
    assert!(
        codes
            .split(", ")
            .all(|c| matches!(c.parse::<u8>(), Ok(1..=4))),
        "{codes}"
    );
}

/// A busy `--listen` port moves to the next free one and says so; Ctrl-C while the demo
/// is still waiting for its first readings stops it cleanly too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_is_replaced_by_the_next_and_an_early_ctrl_c_stops_cleanly() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dcguard"))
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start dcguard demo");
    let printed = Printed::default();
    let stdout = child.stdout.take().unwrap();
    let sink = printed.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink.0.lock().unwrap().push(line);
        }
    });
    let web = eventually("the banner", &printed, || async {
        printed.value("web pages:")
    })
    .await;
    let moved = format!("127.0.0.1:{port} is in use; the demo listens on 127.0.0.1:");
    assert!(printed.text().contains(&moved), "{}", printed.text());
    assert_ne!(web, format!("http://127.0.0.1:{port}/"));
    let pid = child.id().expect("the demo runs").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(HANG, child.wait())
        .await
        .expect("the demo did not stop after SIGINT")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = printed.text();
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("dcguard demo shut down cleanly"), "{out}");
    drop(busy);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
