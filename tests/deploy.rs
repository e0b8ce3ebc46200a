//! The deployment files of `deploy/` held to the code and to the real programs: the systemd
//! unit (exposure rating, syntax, and a daemon run checked against its sandbox), the
//! compose stack (every image, file, port, secret and name it uses), Mosquitto with the
//! stack's passwords and ACLs, Prometheus with both scrape configurations, and
//! `check-config` on the container and example production configurations.
//!
//! No container engine runs here, so the stack's parts run as the Debian programs on free
//! loopback ports with the stack's own configuration files (ports and paths rewritten).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use firmware_stubs::sim::{Sim, SimOptions};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    SubscribeReasonCode,
};
use tokio::sync::mpsc;
use yaml_rust2::{Yaml, YamlLoader};

use common::{MOSQUITTO, config_copy, free_port, shipped_dir};

const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";
const STRACE: &str = "/usr/bin/strace";
const SETPRIV: &str = "/usr/bin/setpriv";
const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";
/// The exposure the issue allows the unit at most.
const MAX_EXPOSURE: f64 = 3.0;
/// Hang guard of every wait (never a timing assertion). Generous: the daemon runs under
/// strace in one test, which slows every system call.
const HANG: Duration = Duration::from_secs(150);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unit_path() -> PathBuf {
    repo().join("deploy/systemd/dcguard.service")
}

fn container_dir() -> PathBuf {
    repo().join("deploy/container")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[track_caller]
fn require(program: &str) {
    assert!(
        Path::new(program).exists(),
        "{program} is missing: run scripts/test.sh, which installs the test peers"
    );
}

/// Replaces `from` by `to` in `text`, failing when `from` is not there: a rewrite that
/// silently matched nothing would test the file as it is not deployed.
#[track_caller]
fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "expected {from:?} in the file; it changed shape"
    );
    text.replace(from, to)
}

/// Polls `done` until it holds or [`HANG`] passes; false if it never did.
async fn wait_until<F, Fut>(mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + HANG;
    while tokio::time::Instant::now() < deadline {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    done().await
}

// ---------------------------------------------------------------------------------------
// The systemd unit

/// The `[Service]` settings of a unit file: (key, value, commented out), in order.
fn unit_settings(text: &str) -> Vec<(String, String, bool)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        if section != "[Service]" {
            continue;
        }
        let (commented, body) = match line.strip_prefix('#') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        if let Some((key, value)) = body.split_once('=')
            && !key.is_empty()
            && key.chars().all(|c| c.is_ascii_alphanumeric())
        {
            out.push((key.to_owned(), value.trim().to_owned(), commented));
        }
    }
    out
}

/// The active values of `key` in the unit's `[Service]` section.
fn unit_values(text: &str, key: &str) -> Vec<String> {
    unit_settings(text)
        .into_iter()
        .filter(|(k, _, commented)| k == key && !commented)
        .map(|(_, v, _)| v)
        .collect()
}

/// The figure of `systemd-analyze security`'s "Overall exposure level for X: 1.1 OK" line.
fn exposure_of(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level for"))?;
    let (_, rest) = line.split_once("):").or_else(|| line.rsplit_once(": "))?;
    rest.split_whitespace().next()?.parse().ok()
}

fn analyze_exposure(unit: &Path) -> f64 {
    require(SYSTEMD_ANALYZE);
    let output = Command::new(SYSTEMD_ANALYZE)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()
        .expect("run systemd-analyze");
    let stdout = String::from_utf8_lossy(&output.stdout);
    exposure_of(&stdout).unwrap_or_else(|| {
        panic!(
            "no exposure figure in the output of systemd-analyze security for {}:\n{stdout}\n{}",
            unit.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// `systemd-analyze security --offline=true` rates the shipped unit's exposure at most 3.0,
/// and rates a unit without hardening far above that (so the figure is read right and
/// the bound means something).
#[test]
fn systemd_analyze_rates_the_units_exposure_at_most_3() {
    let exposure = analyze_exposure(&unit_path());
    assert!(
        exposure <= MAX_EXPOSURE,
        "deploy/systemd/dcguard.service is rated {exposure}, above {MAX_EXPOSURE}: run \
         `systemd-analyze security --offline=true deploy/systemd/dcguard.service`"
    );

    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bare.service");
    std::fs::write(&bare, "[Service]\nExecStart=/usr/bin/true\n").unwrap();
    let bare_exposure = analyze_exposure(&bare);
    assert!(
        bare_exposure > 8.0,
        "an unhardened unit rated {bare_exposure}"
    );
    assert_eq!(
        exposure_of("→ Overall exposure level for dcguard.service: 1.1 OK 🙂"),
        Some(1.1)
    );
}

/// `systemd-analyze verify` accepts the unit with no warning (a misspelt directive or a
/// bad value is only a warning to systemd, and would silently drop hardening).
#[test]
fn systemd_analyze_verify_accepts_the_unit_without_warnings() {
    require(SYSTEMD_ANALYZE);
    let dir = tempfile::tempdir().unwrap();
    let text = replace(
        &read(&unit_path()),
        "ExecStart=/usr/local/bin/dcguard ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_dcguard")),
    );
    let unit = dir.path().join("dcguard.service");
    std::fs::write(&unit, text).unwrap();
    let output = Command::new(SYSTEMD_ANALYZE)
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        output.status
    );
}

/// The unit runs the daemon as a user of its own with its state in /var/lib/dcguard, the
/// configuration in /etc/dcguard, a stop timeout above the shutdown grace, no restart on
/// an invalid configuration, and a `LoadCredential` line for every credential the
/// example production configuration names.
#[test]
fn the_unit_matches_the_daemon_and_the_example_configuration() {
    let unit = read(&unit_path());
    let one = |key: &str| -> String {
        let values = unit_values(&unit, key);
        assert_eq!(values.len(), 1, "{key}= in the unit: {values:?}");
        values[0].clone()
    };
    assert_eq!(one("DynamicUser"), "yes");
    assert_eq!(one("StateDirectory"), "dcguard");
    assert!(one("ExecStart").ends_with(" run --config /etc/dcguard"));
    assert!(
        one("RestartPreventExitStatus")
            .split_whitespace()
            .any(|c| c == dcguard::cli::EXIT_INVALID_CONFIG.to_string())
    );
    assert_eq!(one("KillSignal"), "SIGTERM");

    let example = read(&repo().join("deploy/config-example/dcguard.toml"));
    let table: toml::Table = example.parse().unwrap();
    assert_eq!(
        table["daemon"]["data_dir"].as_str(),
        Some("/var/lib/dcguard"),
        "data_dir is the unit's StateDirectory"
    );
    let grace = table["daemon"]["shutdown_grace_secs"].as_integer().unwrap();
    let stop: i64 = one("TimeoutStopSec").trim_end_matches('s').parse().unwrap();
    assert!(stop > grace, "TimeoutStopSec={stop} must exceed {grace}");

    // Every "$CREDENTIALS_DIRECTORY/<name>" has a LoadCredential line (active or ready to
    // uncomment), and the audit key's credential is loaded.
    let loaded: BTreeSet<String> = unit_settings(&unit)
        .into_iter()
        .filter(|(k, _, _)| k == "LoadCredential" || k == "LoadCredentialEncrypted")
        .filter_map(|(_, v, _)| v.split_once(':').map(|(name, _)| name.to_owned()))
        .collect();
    let named: BTreeSet<String> = example
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once("$CREDENTIALS_DIRECTORY/"))
        .map(|(_, rest)| rest.trim_end_matches('"').to_owned())
        .collect();
    assert!(named.len() >= 5, "{named:?}");
    let missing: Vec<_> = named.difference(&loaded).collect();
    assert!(
        missing.is_empty(),
        "no LoadCredential= line for {missing:?}"
    );
    assert!(
        unit_values(&unit, "LoadCredential")
            .iter()
            .any(|v| v.starts_with("dcguard-audit-key:"))
    );
}

/// The system calls allowed by the unit's `SystemCallFilter=` lines, expanded by
/// systemd-analyze itself (an allow-list, then the `~` deny-lists taken out).
fn allowed_syscalls(unit: &str) -> BTreeSet<String> {
    fn expand(group: &str, out: &mut BTreeSet<String>) {
        let output = Command::new(SYSTEMD_ANALYZE)
            .args(["syscall-filter", "--no-pager", group])
            .output()
            .expect("run systemd-analyze syscall-filter");
        assert!(output.status.success(), "syscall-filter {group}");
        for line in String::from_utf8_lossy(&output.stdout).lines().skip(1) {
            let item = line.trim();
            if item.is_empty() || item.starts_with('#') {
                continue;
            }
            if item.starts_with('@') {
                expand(item, out);
            } else {
                out.insert(item.to_owned());
            }
        }
    }
    fn names(list: &str, out: &mut BTreeSet<String>) {
        for item in list.split_whitespace() {
            if item.starts_with('@') {
                expand(item, out);
            } else {
                out.insert(item.to_owned());
            }
        }
    }
    let filters = unit_values(unit, "SystemCallFilter");
    assert!(
        filters.first().is_some_and(|f| !f.starts_with('~')),
        "the unit's first SystemCallFilter= must be an allow-list: {filters:?}"
    );
    let mut allowed = BTreeSet::new();
    names(&filters[0], &mut allowed);
    for deny in &filters[1..] {
        let deny = deny.strip_prefix('~').expect("later filters deny");
        let mut denied = BTreeSet::new();
        names(deny, &mut denied);
        allowed.retain(|s| !denied.contains(s));
    }
    allowed
}

/// One system call of a trace: pid, name and argument text (as strace prints them).
#[derive(Debug)]
struct Call {
    name: String,
    args: String,
}

/// The calls of an `strace -f` trace made after `binary` was executed.
fn trace_calls(trace: &str, binary: &str) -> Vec<Call> {
    let start = trace
        .lines()
        .position(|l| l.contains(&format!("execve(\"{binary}\"")) && l.ends_with("= 0"))
        .unwrap_or_else(|| panic!("no successful execve of {binary} in the trace"));
    let mut calls = Vec::new();
    for line in trace.lines().skip(start + 1) {
        let rest = line.split_once(' ').map_or(line, |(_, r)| r).trim_start();
        if rest.starts_with("+++") || rest.starts_with("---") || rest.starts_with("<...") {
            continue; // exits, signals, resumed halves (the name was on the first half)
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        calls.push(Call {
            name: name.to_owned(),
            args: args.to_owned(),
        });
    }
    calls
}

/// The first quoted string of a call's arguments (its path), if any.
fn first_path(args: &str) -> Option<&str> {
    let start = args.find('"')? + 1;
    let len = args[start..].find('"')?;
    Some(&args[start..start + len])
}

/// Everything in `calls` the unit's sandbox would refuse: system calls outside the
/// filter, sockets of other families, writable-and-executable memory, writes outside
/// the state directory, devices outside PrivateDevices and /proc outside ProcSubset=pid.
fn sandbox_violations(
    calls: &[Call],
    allowed: &BTreeSet<String>,
    families: &BTreeSet<String>,
    state_dir: &Path,
) -> BTreeSet<String> {
    let state = state_dir.display().to_string();
    let private_devices = [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
    ];
    let mut problems = BTreeSet::new();
    for call in calls {
        let name = call.name.as_str();
        if !allowed.contains(name) {
            problems.insert(format!("system call {name} is outside SystemCallFilter"));
        }
        if name == "socket" {
            let family = call.args.split(',').next().unwrap_or("").trim();
            if !families.contains(family) {
                problems.insert(format!(
                    "socket family {family} is not in RestrictAddressFamilies"
                ));
            }
        }
        let prot_exec = call.args.contains("PROT_EXEC");
        if (name == "mmap" && prot_exec && call.args.contains("PROT_WRITE"))
            || (name.ends_with("mprotect") && prot_exec)
        {
            problems.insert(format!(
                "{name} with PROT_EXEC breaks MemoryDenyWriteExecute: {}",
                call.args
            ));
        }
        let Some(path) = first_path(&call.args) else {
            continue;
        };
        let relative_to_cwd = call.args.starts_with("AT_FDCWD")
            || !call.args.starts_with(|c: char| c.is_ascii_digit());
        if !relative_to_cwd {
            continue; // relative to a directory descriptor opened earlier
        }
        let absolute = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}") // the unit's working directory is /
        };
        let writes = match name {
            "open" | "openat" | "openat2" | "creat" => {
                name == "creat"
                    || ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"]
                        .iter()
                        .any(|flag| call.args.contains(flag))
            }
            "mkdir" | "mkdirat" | "rename" | "renameat" | "renameat2" | "unlink" | "unlinkat"
            | "rmdir" | "link" | "linkat" | "symlink" | "symlinkat" | "truncate" | "chmod"
            | "fchmodat" | "chown" | "fchownat" | "mknod" | "mknodat" => true,
            _ => false,
        };
        if writes && !absolute.starts_with(&state) && absolute != "/dev/null" {
            problems.insert(format!(
                "{name} writes {absolute}, outside the state directory"
            ));
        }
        if absolute.starts_with("/dev/") && !private_devices.contains(&absolute.as_str()) {
            problems.insert(format!("{name} opens {absolute}, hidden by PrivateDevices"));
        }
        if let Some(proc_path) = absolute.strip_prefix("/proc/") {
            let first = proc_path.split('/').next().unwrap_or("");
            let process = first == "self"
                || first == "thread-self"
                || first.chars().all(|c| c.is_ascii_digit());
            // glibc's malloc probes this file to decide how to shrink heaps; when it cannot
            // be read (ProcSubset=pid) it takes the safe branch. Harmless, hence allowed.
            let glibc_probe = absolute == "/proc/sys/vm/overcommit_memory";
            if !process && !glibc_probe {
                problems.insert(format!("{name} reads {absolute}, hidden by ProcSubset=pid"));
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------
// Mosquitto with the stack's configuration

/// Mosquitto from Debian with `deploy/container/mosquitto/` (passwords from
/// `init-secrets.sh`), both listeners moved to free loopback ports. Killed on drop.
struct StackBroker {
    child: Child,
    /// The authenticated listener (1883 in the stack).
    auth: SocketAddr,
    /// The anonymous demo listener (1884 in the stack).
    demo: SocketAddr,
    /// `secrets/` as init-secrets.sh made it.
    secrets: PathBuf,
}

impl StackBroker {
    async fn start(dir: &Path) -> StackBroker {
        require(MOSQUITTO);
        require(MOSQUITTO_PASSWD);
        let output = Command::new(container_dir().join("init-secrets.sh"))
            .arg(dir)
            .env("MOSQUITTO_PASSWD", MOSQUITTO_PASSWD)
            .output()
            .expect("run init-secrets.sh");
        assert!(
            output.status.success(),
            "init-secrets.sh: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let secrets = dir.join("secrets");
        let (auth_port, demo_port) = (free_port(), free_port());
        let mosquitto = container_dir().join("mosquitto");
        let mut conf = read(&mosquitto.join("mosquitto.conf"));
        conf = replace(
            &conf,
            "listener 1883\n",
            &format!("listener {auth_port} 127.0.0.1\n"),
        );
        conf = replace(
            &conf,
            "listener 1884 127.0.0.1\n",
            &format!("listener {demo_port} 127.0.0.1\n"),
        );
        conf = replace(
            &conf,
            "password_file /mosquitto/config/passwd",
            &format!(
                "password_file {}",
                secrets.join("mosquitto_passwd").display()
            ),
        );
        conf = replace(
            &conf,
            "acl_file /mosquitto/config/acl\n",
            &format!("acl_file {}\n", mosquitto.join("acl").display()),
        );
        conf = replace(
            &conf,
            "acl_file /mosquitto/config/acl-demo",
            &format!("acl_file {}", mosquitto.join("acl-demo").display()),
        );
        conf = replace(
            &conf,
            "persistence_location /mosquitto/data/",
            &format!("persistence_location {}/", dir.display()),
        );
        conf = replace(
            &conf,
            "log_dest stdout",
            &format!("log_dest file {}", dir.join("mosquitto.log").display()),
        );
        // As root (CI), Mosquitto would otherwise switch to the user `mosquitto`, which
        // cannot read the 0700 secrets directory; the container runs it as that user.
        conf.push_str("user root\n");
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let broker = StackBroker {
            child,
            auth: SocketAddr::from(([127, 0, 0, 1], auth_port)),
            demo: SocketAddr::from(([127, 0, 0, 1], demo_port)),
            secrets,
        };
        for addr in [broker.auth, broker.demo] {
            let up =
                wait_until(|| async { tokio::net::TcpStream::connect(addr).await.is_ok() }).await;
            assert!(
                up,
                "mosquitto did not listen on {addr}: {}",
                std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default()
            );
        }
        broker
    }

    fn password(&self, user: &str) -> String {
        read(&self.secrets.join(format!("mqtt_{user}_password")))
    }
}

impl Drop for StackBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects and waits for the broker's CONNACK: the client and its event loop, or the
/// connection error (a refusal carries the broker's return code).
async fn mqtt_connect(
    addr: SocketAddr,
    id: &str,
    credentials: Option<(&str, &str)>,
) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = credentials {
        options.set_credentials(user, password);
    }
    let (client, mut events) = AsyncClient::new(options, 16);
    let connected = tokio::time::timeout(HANG, async {
        loop {
            match events.poll().await? {
                Event::Incoming(Packet::ConnAck(_)) => return Ok(()),
                _ => continue,
            }
        }
    })
    .await
    .expect("the broker answers a CONNECT");
    connected.map(|()| (client, events))
}

/// Publishes at QoS 1 and waits for the broker's PUBACK: after it, the broker has routed
/// (or, when the ACL refuses it, dropped) the message.
async fn publish_acked(client: &AsyncClient, events: &mut EventLoop, topic: &str, payload: &str) {
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
        .await
        .unwrap();
    tokio::time::timeout(HANG, async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("PUBACK");
}

/// Subscribes and waits for the SUBACK's reason codes.
async fn subscribe(
    client: &AsyncClient,
    events: &mut EventLoop,
    filters: &[&str],
) -> Vec<SubscribeReasonCode> {
    for filter in filters {
        client.subscribe(*filter, QoS::AtLeastOnce).await.unwrap();
    }
    let mut codes = Vec::new();
    tokio::time::timeout(HANG, async {
        while codes.len() < filters.len() {
            if let Event::Incoming(Packet::SubAck(ack)) = events.poll().await.unwrap() {
                codes.extend(ack.return_codes);
            }
        }
    })
    .await
    .expect("SUBACK");
    codes
}

/// The next message the observer saw, as "topic payload".
async fn next_message(received: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(HANG, received.recv())
        .await
        .expect("a message")
        .expect("the observer runs")
}

/// Mosquitto with the stack's password file and ACLs: the daemon's user subscribes to
/// the sensor topics and receives what the sensors' user and the demo listener publish;
/// its own publishes, a sensor publishing off its topics and the demo listener writing
/// elsewhere are all dropped; a wrong password and an anonymous client are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_enforces_the_stacks_passwords_and_acls() {
    let dir = tempfile::tempdir().unwrap();
    let broker = StackBroker::start(dir.path()).await;
    let dcguard_pw = broker.password("dcguard");
    let sensors_pw = broker.password("sensors");

    for (what, credentials) in [
        ("a wrong password", Some(("dcguard", "not-the-password"))),
        (
            "the sensors' password for dcguard",
            Some(("dcguard", sensors_pw.as_str())),
        ),
        ("an anonymous client", None),
    ] {
        let refused = mqtt_connect(broker.auth, "intruder", credentials).await;
        assert!(
            matches!(
                refused,
                Err(ConnectionError::ConnectionRefused(
                    ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword
                ))
            ),
            "{what} was not refused: {:?}",
            refused.err()
        );
    }

    // The daemon's own subscriptions (the profiles' topic patterns) are granted.
    let (daemon, mut daemon_events) =
        mqtt_connect(broker.auth, "dcguard", Some(("dcguard", &dcguard_pw)))
            .await
            .unwrap();
    let codes = subscribe(
        &daemon,
        &mut daemon_events,
        &["dcguard/+/+/th/+", "dcguard/+/+/leak/+"],
    )
    .await;
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
        "{codes:?}"
    );
    // The observer: the daemon's user on everything it may read, in arrival order.
    let (observer, mut observer_events) =
        mqtt_connect(broker.auth, "observer", Some(("dcguard", &dcguard_pw)))
            .await
            .unwrap();
    subscribe(&observer, &mut observer_events, &["dcguard/#"]).await;
    let (tx, mut received) = mpsc::unbounded_channel();
    let observing = tokio::spawn(async move {
        loop {
            match observer_events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(format!(
                        "{} {}",
                        p.topic,
                        String::from_utf8_lossy(&p.payload)
                    ));
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });

    let (sensors, mut sensors_events) =
        mqtt_connect(broker.auth, "sensor-gw", Some(("sensors", &sensors_pw)))
            .await
            .unwrap();
    let (demo, mut demo_events) = mqtt_connect(broker.demo, "dcguard-sim-dc", None)
        .await
        .unwrap();
    let th = "dcguard/dc/dh1/th/th-a";
    let leak = "dcguard/dc/dh1/leak/leak-1";

    publish_acked(
        &sensors,
        &mut sensors_events,
        th,
        "{\"temperature_c\":22.5}",
    )
    .await;
    assert_eq!(
        next_message(&mut received).await,
        format!("{th} {{\"temperature_c\":22.5}}")
    );
    publish_acked(&demo, &mut demo_events, leak, "{\"leak\":false}").await;
    assert_eq!(
        next_message(&mut received).await,
        format!("{leak} {{\"leak\":false}}")
    );

    // Each refused publish is acknowledged (MQTT 3.1.1 has no refusal) and dropped: the
    // marker published after it is the next message the observer sees.
    publish_acked(&daemon, &mut daemon_events, th, "forged by dcguard").await;
    publish_acked(
        &sensors,
        &mut sensors_events,
        "dcguard/dc/dh1/cmd/pac-1",
        "off",
    )
    .await;
    publish_acked(&demo, &mut demo_events, "dcguard/dc/dh1/cmd/pac-1", "off").await;
    publish_acked(&sensors, &mut sensors_events, th, "marker").await;
    assert_eq!(next_message(&mut received).await, format!("{th} marker"));

    observing.abort();
}

// ---------------------------------------------------------------------------------------
// The compose stack

fn load_yaml(path: &Path) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", path.display()));
    assert_eq!(docs.len(), 1, "{}: one YAML document", path.display());
    docs.remove(0)
}

fn yaml_strings(value: &Yaml) -> Vec<String> {
    match value {
        Yaml::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        Yaml::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn hash_keys(value: &Yaml) -> BTreeSet<String> {
    value
        .as_hash()
        .map(|h| {
            h.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The compose stack names only what exists: every service is a pinned public image or
/// built from this repository's Containerfile; every bind-mounted file is in the
/// repository (or made by init-secrets.sh, which is run); every named volume and secret
/// is declared; the published ports are the ones the configurations listen on; and the
/// names dcguard, Prometheus and Grafana use for each other resolve to services.
#[test]
fn the_compose_stack_names_only_files_images_ports_and_services_that_exist() {
    let dir = container_dir();
    let compose = load_yaml(&dir.join("compose.yaml"));
    let services = &compose["services"];
    let names = hash_keys(services);
    let expected: BTreeSet<String> = [
        "mosquitto",
        "dcguard",
        "influxdb",
        "prometheus",
        "grafana",
        "dcguard-sim",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, expected);
    let volumes = hash_keys(&compose["volumes"]);
    let secrets = hash_keys(&compose["secrets"]);

    // init-secrets.sh makes exactly the secret files the stack declares, plus the
    // Mosquitto password file and the sensors' password.
    let made = tempfile::tempdir().unwrap();
    let status = Command::new(dir.join("init-secrets.sh"))
        .arg(made.path())
        .env("MOSQUITTO_PASSWD", MOSQUITTO_PASSWD)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let generated = |relative: &str| -> Option<PathBuf> {
        relative
            .strip_prefix("./secrets/")
            .map(|name| made.path().join("secrets").join(name))
    };
    let mut made_files: BTreeSet<String> = std::fs::read_dir(made.path().join("secrets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(made_files.remove("mosquitto_passwd"));
    // The sensors' password goes to the sensor gateways, not to a service of the stack.
    assert!(made_files.remove("mqtt_sensors_password"));
    assert_eq!(
        made_files, secrets,
        "init-secrets.sh versus compose.yaml secrets:"
    );
    for name in &secrets {
        let file = compose["secrets"][name.as_str()]["file"].as_str().unwrap();
        assert_eq!(file, format!("./secrets/{name}"));
    }

    let mut problems = Vec::new();
    for name in &names {
        let service = &services[name.as_str()];
        // Image: built here, or a fully qualified public image with a pinned tag.
        if !service["build"].is_badvalue() {
            let context = dir.join(service["build"]["context"].as_str().unwrap());
            let file = context.join(service["build"]["dockerfile"].as_str().unwrap());
            if !file.is_file() {
                problems.push(format!("{name}: build file {} is missing", file.display()));
            }
            if context.canonicalize().unwrap() != repo().canonicalize().unwrap() {
                problems.push(format!("{name}: build context is not the repository root"));
            }
        } else {
            let image = service["image"].as_str().unwrap_or("");
            let (reference, tag) = image.rsplit_once(':').unwrap_or((image, ""));
            let registry = reference.split('/').next().unwrap_or("");
            if !["docker.io", "quay.io", "ghcr.io"].contains(&registry)
                || tag.is_empty()
                || tag == "latest"
            {
                problems.push(format!(
                    "{name}: image {image:?} is not a fully qualified public image with a pinned tag"
                ));
            }
        }
        for volume in yaml_strings(&service["volumes"]) {
            let source = volume.split(':').next().unwrap();
            if source.starts_with('.') {
                let path = generated(source).unwrap_or_else(|| dir.join(source));
                if !path.exists() {
                    problems.push(format!("{name}: volume source {source} does not exist"));
                }
            } else if !volumes.contains(source) {
                problems.push(format!(
                    "{name}: volume {source} is not declared under volumes:"
                ));
            }
        }
        for secret in yaml_strings(&service["secrets"]) {
            if !secrets.contains(&secret) {
                problems.push(format!(
                    "{name}: secret {secret} is not declared under secrets:"
                ));
            }
        }
        if let Some(mode) = service["network_mode"].as_str() {
            let owner = mode.strip_prefix("service:").unwrap_or("");
            if !names.contains(owner) {
                problems.push(format!("{name}: network_mode {mode} names no service"));
            }
            if !service["ports"].is_badvalue() {
                problems.push(format!(
                    "{name}: ports belong to the namespace's owner {owner}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "compose.yaml:\n{}",
        problems.join("\n")
    );

    // The demo devices are optional, and live in the namespace where the shipped site
    // files' loopback endpoints and the demo listener are.
    assert_eq!(yaml_strings(&services["dcguard-sim"]["profiles"]), ["demo"]);
    assert_eq!(
        services["dcguard"]["network_mode"].as_str(),
        Some("service:mosquitto")
    );
    assert_eq!(
        services["dcguard-sim"]["network_mode"].as_str(),
        Some("service:mosquitto")
    );
    assert!(
        yaml_strings(&services["dcguard-sim"]["command"]).contains(&"127.0.0.1:1884".to_owned())
    );
    let containerfile = read(&dir.join("Containerfile"));
    assert!(containerfile.contains("USER 10001:10001") && containerfile.contains("--locked"));
    // rustls only: nothing in the build or the runtime installs OpenSSL.
    assert!(
        containerfile
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .all(|l| !l.to_lowercase().contains("ssl")),
        "the Containerfile installs or names an SSL library"
    );

    // Ports: what the namespace publishes is what its members listen on.
    let config: toml::Table = read(&dir.join("config/dcguard.toml")).parse().unwrap();
    let listen: SocketAddr = config["daemon"]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let container_port = |spec: &str| spec.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let published: BTreeSet<u16> = yaml_strings(&services["mosquitto"]["ports"])
        .iter()
        .map(|p| container_port(p))
        .collect();
    assert_eq!(published, BTreeSet::from([1883, listen.port()]));
    let mosquitto_conf = read(&dir.join("mosquitto/mosquitto.conf"));
    assert!(mosquitto_conf.contains("\nlistener 1883\n"));
    let broker = &config["mqtt_brokers"].as_array().unwrap()[0];
    assert_eq!(broker["host"].as_str(), Some("127.0.0.1"));
    assert_eq!(broker["port"].as_integer(), Some(1883));
    for (service, port) in [("influxdb", 8086), ("prometheus", 9090), ("grafana", 3000)] {
        let ports: Vec<u16> = yaml_strings(&services[service]["ports"])
            .iter()
            .map(|p| container_port(p))
            .collect();
        assert_eq!(ports, [port], "{service}");
    }

    // Names: InfluxDB by service name, Prometheus scrapes the alias, Grafana reaches
    // Prometheus and InfluxDB by name, with the uid the dashboards use.
    assert_eq!(
        config["influxdb"]["url"].as_str(),
        Some("http://influxdb:8086")
    );
    let aliases = yaml_strings(&services["mosquitto"]["networks"]["default"]["aliases"]);
    let prometheus = load_yaml(&dir.join("prometheus/prometheus.yml"));
    let target = prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .unwrap();
    let (host, port) = target.split_once(':').unwrap();
    assert!(
        aliases.contains(&host.to_owned()),
        "{target} versus aliases {aliases:?}"
    );
    assert_eq!(port.parse::<u16>().unwrap(), listen.port());
    let datasources = load_yaml(&dir.join("grafana/datasources.yaml"));
    let sources = datasources["datasources"].as_vec().unwrap();
    let url_of = |uid: &str| {
        sources
            .iter()
            .find(|d| d["uid"].as_str() == Some(uid))
            .and_then(|d| d["url"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(
        url_of("dcguard-prometheus").as_deref(),
        Some("http://prometheus:9090")
    );
    assert_eq!(
        url_of("dcguard-influxdb").as_deref(),
        Some("http://influxdb:8086")
    );
    let dashboards_uid = read(&repo().join("dashboards/overview.json"));
    assert!(dashboards_uid.contains("dcguard-prometheus"));

    // Grafana's dashboard provider reads the path the dashboards are mounted at.
    let provider = load_yaml(&repo().join("dashboards/provisioning/dashboards/dcguard.yaml"));
    let provider_path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let grafana_volumes = yaml_strings(&services["grafana"]["volumes"]);
    assert!(
        grafana_volumes.contains(&format!("../../dashboards:{provider_path}:ro")),
        "{grafana_volumes:?}"
    );

    // Secrets the daemon's configuration names are granted to the dcguard service.
    let granted = yaml_strings(&services["dcguard"]["secrets"]);
    let text = read(&dir.join("config/dcguard.toml"));
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        if let Some((_, rest)) = line.split_once("\"/run/secrets/") {
            let name = rest.trim_end_matches('"');
            assert!(
                granted.contains(&name.to_owned()),
                "secret {name} not granted to dcguard"
            );
        }
    }
}

/// The Containerfile's build stage copies everything the build needs: with only its
/// `COPY` sources, `cargo metadata --locked --offline` resolves the workspace against the
/// committed Cargo.lock, every binary its `cargo build` names is a target of the packages
/// it selects, and their library and binary sources are there. The runtime stage copies
/// paths that exist.
#[test]
fn the_containerfile_copies_everything_the_build_needs() {
    let text = read(&container_dir().join("Containerfile"));
    // Joined continuation lines, comments dropped.
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let mut stage = 0;
    let mut build_copies = Vec::new();
    let mut build_command = None;
    for line in joined.lines().map(str::trim) {
        if line.starts_with("FROM ") {
            stage += 1;
        } else if let Some(args) = line.strip_prefix("COPY ") {
            let words: Vec<&str> = args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let (sources, _) = words.split_at(words.len() - 1);
            if line.contains("--from=") {
                continue;
            }
            for source in sources {
                assert!(
                    repo().join(source).exists(),
                    "COPY {source}: not in the repository"
                );
                if stage == 1 {
                    build_copies.push(source.to_string());
                }
            }
        } else if line.starts_with("RUN ") && line.contains("cargo build") {
            build_command = Some(line.to_owned());
        }
    }
    assert_eq!(stage, 2, "a build stage and a runtime stage");
    let command = build_command.expect("a cargo build in the build stage");
    assert!(command.contains("--locked") && command.contains("--release"));

    let context = tempfile::tempdir().unwrap();
    for source in &build_copies {
        let status = Command::new("cp")
            .arg("-r")
            .arg(repo().join(source))
            .arg(context.path().join(source))
            .status()
            .unwrap();
        assert!(status.success(), "copy {source}");
    }
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(context.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo metadata with only the Containerfile's COPY sources ({build_copies:?}):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let words: Vec<&str> = command.split_whitespace().collect();
    let selected: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1])
        .collect();
    let binaries: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1])
        .collect();
    assert_eq!(binaries, ["dcguard", "dcguard-sim"]);
    // Only the workspace's own packages matter here (`--no-deps`: no registry needed).
    // Cargo reads a target's sources only when it builds it: the library and binary
    // sources of the selected packages must all be in the context.
    for package in metadata["packages"].as_array().unwrap() {
        if !selected.contains(&package["name"].as_str().unwrap()) {
            continue;
        }
        for target in package["targets"].as_array().unwrap() {
            let kinds = target["kind"].as_array().unwrap();
            if kinds.iter().any(|k| k == "lib" || k == "bin") {
                let source = Path::new(target["src_path"].as_str().unwrap());
                assert!(
                    source.exists(),
                    "{} is not copied into the build",
                    source.display()
                );
            }
        }
    }
    for binary in binaries {
        let found = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|package| {
                selected.contains(&package["name"].as_str().unwrap())
                    && package["targets"].as_array().unwrap().iter().any(|t| {
                        t["name"] == binary
                            && t["kind"].as_array().unwrap().iter().any(|k| k == "bin")
                    })
            });
        assert!(found, "no bin target {binary} in the packages {selected:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Configurations

/// Assembles a configuration directory: `dcguard.toml` from `main`, `sites/` and
/// `profiles/` from the given directories.
fn assemble(dir: &Path, main: &Path, sites: &Path, profiles: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(main, dir.join("dcguard.toml")).unwrap();
    for (from, sub) in [(sites, "sites"), (profiles, "profiles")] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.join(sub).join(path.file_name().unwrap())).unwrap();
        }
    }
}

fn check_config(dir: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_dcguard"))
        .arg("check-config")
        .arg(dir)
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// `dcguard check-config` passes on the container's configuration (with the image's
/// shipped sites and profiles) and on the example production configuration (with the
/// shipped profiles, as deploy/README.md installs it).
#[test]
fn check_config_passes_on_the_deployment_configurations() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = shipped_dir();
    let container = dir.path().join("container");
    assemble(
        &container,
        &container_dir().join("config/dcguard.toml"),
        &shipped.join("sites"),
        &shipped.join("profiles"),
    );
    let example = dir.path().join("example");
    let example_src = repo().join("deploy/config-example");
    assemble(
        &example,
        &example_src.join("dcguard.toml"),
        &example_src.join("sites"),
        &shipped.join("profiles"),
    );
    for config in [&container, &example] {
        let (ok, output) = check_config(config);
        assert!(ok, "check-config {}:\n{output}", config.display());
    }
    // The check can fail: a misspelt key in the example is reported.
    let text = read(&example.join("dcguard.toml"));
    std::fs::write(
        example.join("dcguard.toml"),
        replace(
            &text,
            "stale_after_intervals = 3",
            "stale_after_interval = 3",
        ),
    )
    .unwrap();
    let (ok, output) = check_config(&example);
    assert!(!ok && output.contains("stale_after_interval"), "{output}");
}

/// True for a host in a documentation range (RFC 5737, RFC 3849) or a reserved domain
/// (RFC 2606): an address that never routes or resolves.
fn is_placeholder_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return match ip {
            std::net::IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                matches!((a, b, c), (192, 0, 2) | (198, 51, 100) | (203, 0, 113))
            }
            std::net::IpAddr::V6(v6) => v6.segments()[..2] == [0x2001, 0xdb8],
        };
    }
    host.ends_with(".invalid") || host.ends_with(".example") || host == "example.invalid"
}

/// The host of `host`, `host:port`, `[v6]:port` or a URL.
fn host_of(value: &str) -> &str {
    let rest = value.split_once("://").map_or(value, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn collect_addresses(value: &toml::Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(table) => {
            for (key, v) in table {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if let toml::Value::String(s) = v
                    && (key == "host"
                        || key == "listen"
                        || key == "endpoint"
                        || key == "url"
                        || key.ends_with("_url"))
                {
                    out.push((here.clone(), s.clone()));
                }
                collect_addresses(v, &here, out);
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_addresses(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The example production configuration names only placeholder addresses (documentation
/// ranges and `.invalid` hosts), so nothing ever dials a real machine from it. It is
/// exempt from tidy's loopback rule by its location (deploy/, not config/).
#[test]
fn the_example_production_configuration_names_only_placeholder_addresses() {
    let base = repo().join("deploy/config-example");
    let mut files = vec![base.join("dcguard.toml")];
    for entry in std::fs::read_dir(base.join("sites")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let mut found = 0;
    let mut problems = Vec::new();
    for file in &files {
        let value: toml::Value = toml::Value::Table(read(file).parse().unwrap());
        let mut addresses = Vec::new();
        collect_addresses(&value, "", &mut addresses);
        found += addresses.len();
        for (key, address) in addresses {
            if !is_placeholder_host(host_of(&address)) {
                problems.push(format!("{}: {key}: {address}", file.display()));
            }
        }
    }
    assert!(
        found > 30,
        "only {found} addresses found; the walk is broken"
    );
    assert!(
        problems.is_empty(),
        "not placeholders:\n{}",
        problems.join("\n")
    );
    for good in [
        "192.0.2.14:502",
        "https://itsm.example.invalid/x",
        "[2001:db8::1]:80",
    ] {
        assert!(is_placeholder_host(host_of(good)), "{good}");
    }
    for bad in [
        "10.1.2.3:502",
        "127.0.0.1:8080",
        "https://events.pagerduty.com/v2/enqueue",
    ] {
        assert!(!is_placeholder_host(host_of(bad)), "{bad}");
    }
}

/// The deployment configurations share the shipped working-hour calendar (holidays
/// included) and priority table: a holiday added to config/ only would leave the SLA
/// clocks of a deployed daemon wrong.
#[test]
fn deployment_configurations_share_the_shipped_calendar_and_priorities() {
    let shipped: toml::Table = read(&shipped_dir().join("dcguard.toml")).parse().unwrap();
    for file in [
        container_dir().join("config/dcguard.toml"),
        repo().join("deploy/config-example/dcguard.toml"),
    ] {
        let table: toml::Table = read(&file).parse().unwrap();
        for section in ["calendar", "priority"] {
            assert_eq!(
                table.get(section),
                shipped.get(section),
                "{}: [{section}] differs from config/dcguard.toml",
                file.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Prometheus

/// promtool accepts both scrape configurations; the container's scrapes at the interval
/// Grafana's datasource assumes.
#[test]
fn promtool_accepts_both_prometheus_configurations() {
    require(PROMTOOL);
    for file in [
        repo().join("deploy/prometheus/prometheus.yml"),
        container_dir().join("prometheus/prometheus.yml"),
    ] {
        let output = Command::new(PROMTOOL)
            .args(["check", "config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "promtool check config {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let prometheus = load_yaml(&container_dir().join("prometheus/prometheus.yml"));
    let datasources = load_yaml(&container_dir().join("grafana/datasources.yaml"));
    assert_eq!(
        prometheus["global"]["scrape_interval"].as_str(),
        datasources["datasources"][0]["jsonData"]["timeInterval"].as_str()
    );
}

/// A Prometheus process with `config` (a file), its TSDB in `dir`. Killed on drop.
struct PrometheusProcess {
    child: Child,
    addr: SocketAddr,
}

impl PrometheusProcess {
    async fn start(dir: &Path, config: &Path) -> PrometheusProcess {
        require(PROMETHEUS);
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        PrometheusProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// An instant query's result vector; empty when Prometheus does not answer (yet).
    async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let Ok(response) = client
            .get(format!("http://{}/api/v1/query", self.addr))
            .query(&[("query", promql)])
            .send()
            .await
        else {
            return Vec::new();
        };
        let Ok(json) = response.json::<serde_json::Value>().await else {
            return Vec::new();
        };
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// The stack's configurations running together, the daemon inside the unit's sandbox

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The compose stack's configurations run together with the real programs, as the
/// systemd unit would run the daemon: Mosquitto with the stack's passwords and ACLs, the
/// DC's simulated devices (Modbus, and sensors publishing on the demo listener, as the
/// "demo" profile does), dcguard with the container's dcguard.toml (its MQTT password and
/// InfluxDB token as systemd credentials under $CREDENTIALS_DIRECTORY, as an unprivileged
/// user), and Prometheus with the container's prometheus.yml. Prometheus scrapes the
/// daemon, which holds readings of a Modbus UPS and of an MQTT sensor; SIGTERM stops it
/// with exit 0. The daemon runs under strace, and nothing it did would be refused by the
/// unit's sandbox: system call filter, address families, W^X memory, writes only in its
/// state directory, PrivateDevices, ProcSubset=pid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_configs_run_together_and_the_daemon_stays_inside_the_units_sandbox() {
    require(STRACE);
    require(SYSTEMD_ANALYZE);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let broker = StackBroker::start(&dir.path().join("stack")).await;
    let sim = Sim::start(
        SimOptions::new(shipped_dir())
            .with_site("dc")
            .ephemeral()
            .with_mqtt_broker(broker.demo),
    )
    .await
    .unwrap();

    // The configuration: the container's dcguard.toml and the shipped DC, rewritten only
    // where the stack's names and secrets do not exist on this machine.
    let config = dir.path().join("config");
    config_copy(&config, sim.endpoints(), None);
    for other in ["smart-dc.toml", "drc.toml"] {
        std::fs::remove_file(config.join("sites").join(other)).unwrap();
    }
    let data = dir.path().join("state");
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let influx_closed = free_port(); // nothing listens: the sink spools, as in an outage
    let mut text = read(&container_dir().join("config/dcguard.toml"));
    text = replace(
        &text,
        "data_dir = \"/var/lib/dcguard\"",
        &format!("data_dir = \"{}\"", data.display()),
    );
    text = replace(
        &text,
        "listen = \"0.0.0.0:8080\"",
        &format!("listen = \"{listen}\""),
    );
    text = replace(
        &text,
        "port = 1883",
        &format!("port = {}", broker.auth.port()),
    );
    text = replace(
        &text,
        "\"/run/secrets/mqtt_dcguard_password\"",
        "\"$CREDENTIALS_DIRECTORY/mqtt-password\"",
    );
    text = replace(
        &text,
        "\"/run/secrets/influxdb_token\"",
        "\"${CREDENTIALS_DIRECTORY}/influxdb-token\"",
    );
    text = replace(
        &text,
        "http://influxdb:8086",
        &format!("http://127.0.0.1:{influx_closed}"),
    );
    std::fs::write(config.join("dcguard.toml"), text).unwrap();

    // The unit's view: credentials owned by the service user, read-only; the state
    // directory its own; the working directory /.
    let root = is_root();
    let user = 65534; // nobody, standing in for the DynamicUser
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    for (name, value) in [
        ("mqtt-password", broker.password("dcguard")),
        ("influxdb-token", "t0ken".to_owned()),
        (
            "dcguard-audit-key",
            "0123456789abcdef0123456789abcdef".to_owned(),
        ),
    ] {
        let file = credentials.join(name);
        std::fs::write(&file, value).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).unwrap();
        if root {
            std::os::unix::fs::chown(&file, Some(user), Some(user)).unwrap();
        }
    }
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o500)).unwrap();
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    if root {
        std::os::unix::fs::chown(&credentials, Some(user), Some(user)).unwrap();
        std::os::unix::fs::chown(&data, Some(user), Some(user)).unwrap();
    }

    let binary = env!("CARGO_BIN_EXE_dcguard");
    let trace = dir.path().join("trace");
    let mut command = Command::new(STRACE);
    command
        .args(["-f", "-qq", "-s", "256", "-o"])
        .arg(&trace)
        .arg("--");
    if root {
        require(SETPRIV);
        command.args([
            SETPRIV,
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ]);
    }
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut daemon = command
        .arg(binary)
        .args(["run", "--config"])
        .arg(&config)
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .env_remove("DCGUARD_AUDIT_KEY_FILE")
        .env_remove("RUST_LOG")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the daemon under strace");

    // Prometheus with the container's scrape configuration, its target rewritten to the
    // daemon and its interval shortened so the test does not wait 15 s per scrape.
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir(&prom_dir).unwrap();
    let mut prom_conf = read(&container_dir().join("prometheus/prometheus.yml"));
    prom_conf = replace(&prom_conf, "'dcguard:8080'", &format!("'{listen}'"));
    prom_conf = replace(&prom_conf, "scrape_interval: 15s", "scrape_interval: 2s");
    prom_conf = replace(&prom_conf, "scrape_timeout: 10s", "scrape_timeout: 2s");
    let prom_file = prom_dir.join("prometheus.yml");
    std::fs::write(&prom_file, prom_conf).unwrap();
    let prometheus = PrometheusProcess::start(&prom_dir, &prom_file).await;

    let daemon_log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    let scraped = wait_until(|| async {
        let up = prometheus.query("up{job=\"dcguard\"} == 1").await;
        let ups = prometheus
            .query("dcguard_reading_value{site=\"dc\",device=\"ups-1\"}")
            .await;
        let sensor = prometheus
            .query("dcguard_reading_value{site=\"dc\",device=\"th-a\"}")
            .await;
        !up.is_empty() && !ups.is_empty() && !sensor.is_empty()
    })
    .await;
    if !scraped {
        let _ = daemon.kill();
        let _ = daemon.wait();
        panic!(
            "Prometheus never scraped a Modbus and an MQTT reading from the daemon:\n{}",
            daemon_log()
        );
    }

    // SIGTERM to the daemon (the traced process: the first pid of the trace).
    let pid = read(&trace)
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .expect("a traced pid");
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exited = wait_until(|| {
        let done = daemon.try_wait().unwrap().is_some();
        async move { done }
    })
    .await;
    assert!(
        exited,
        "the daemon did not stop on SIGTERM:\n{}",
        daemon_log()
    );
    let status = daemon.wait().unwrap();
    assert!(
        status.success(),
        "the daemon exited with {status}:\n{}",
        daemon_log()
    );
    sim.shutdown().await;

    // What the daemon did, against what the unit allows.
    let unit = read(&unit_path());
    let allowed = allowed_syscalls(&unit);
    assert!(
        allowed.contains("read") && !allowed.contains("setuid") && !allowed.contains("setpriority")
    );
    let families: BTreeSet<String> = unit_values(&unit, "RestrictAddressFamilies")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let calls = trace_calls(&read(&trace), binary);
    assert!(calls.len() > 1000, "only {} calls traced", calls.len());
    let names: BTreeSet<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    for expected in ["socket", "connect", "bind", "openat", "fsync"] {
        assert!(
            names.contains(expected) || (expected == "fsync" && names.contains("fdatasync")),
            "the trace has no {expected}: {names:?}"
        );
    }
    let problems = sandbox_violations(&calls, &allowed, &families, &data);
    assert!(
        problems.is_empty(),
        "the unit's sandbox would refuse what the daemon did:\n{}",
        problems.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// The sandbox check itself: what it flags.
#[test]
fn the_sandbox_check_flags_what_the_unit_refuses() {
    let allowed: BTreeSet<String> = ["openat", "socket", "mmap", "mprotect", "setuid"]
        .map(String::from)
        .into();
    let families: BTreeSet<String> = ["AF_INET".to_owned()].into();
    let call = |name: &str, args: &str| Call {
        name: name.to_owned(),
        args: args.to_owned(),
    };
    let calls = [
        call("setpriority", "PRIO_PROCESS, 0, 5) = 0"),
        call("socket", "AF_NETLINK, SOCK_RAW, 0) = 3"),
        call(
            "mmap",
            "NULL, 4096, PROT_READ|PROT_WRITE|PROT_EXEC, MAP_PRIVATE, -1, 0) = 0x7f",
        ),
        call(
            "openat",
            "AT_FDCWD, \"/etc/passwd\", O_WRONLY|O_APPEND) = 3",
        ),
        call(
            "openat",
            "AT_FDCWD, \"/state/store.db\", O_RDWR|O_CREAT, 0600) = 3",
        ),
        call("openat", "AT_FDCWD, \"/proc/meminfo\", O_RDONLY) = 3"),
        call("openat", "AT_FDCWD, \"/proc/self/cgroup\", O_RDONLY) = 3"),
        call("openat", "AT_FDCWD, \"/dev/sda\", O_RDONLY) = 3"),
        call("socket", "AF_INET, SOCK_STREAM, 0) = 3"),
    ];
    let problems = sandbox_violations(&calls, &allowed, &families, Path::new("/state"));
    let text = problems.iter().cloned().collect::<Vec<_>>().join("\n");
    assert_eq!(problems.len(), 6, "{text}");
    for expected in [
        "setpriority",
        "AF_NETLINK",
        "PROT_EXEC",
        "/etc/passwd",
        "/proc/meminfo",
        "/dev/sda",
    ] {
        assert!(text.contains(expected), "{expected} not flagged:\n{text}");
    }
    let trace = "100 execve(\"/usr/bin/setpriv\", [...]) = 0\n100 setresuid(65534, 65534, 65534) = 0\n\
                 100 execve(\"/bin/dcguard\", [...]) = 0\n100 openat(AT_FDCWD, \"/x\", O_RDONLY) = 3\n\
                 101 futex(0x1, FUTEX_WAIT, 0, NULL <unfinished ...>\n101 <... futex resumed>) = 0\n\
                 100 +++ exited with 0 +++\n";
    let names: Vec<String> = trace_calls(trace, "/bin/dcguard")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["openat", "futex"]);
}
