//! Helpers shared by the daemon tests: a Mosquitto process on a free port, the shipped
//! configuration directory, a config copy pointed at a simulator's ephemeral ports, and
//! a minimal HTTP GET. Each test file uses some of them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// The shipped configuration directory.
pub fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// A free loopback port (bound and released; the caller binds it right after).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A Mosquitto process on 127.0.0.1:`port`, killed on drop (also when a test fails).
pub struct Broker {
    child: Child,
    pub addr: SocketAddr,
}

impl Broker {
    pub async fn start(dir: &Path, port: u16) -> Broker {
        assert!(
            Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} is missing: run scripts/test.sh, which installs the test peers"
        );
        let conf = dir.join("mosquitto.conf");
        // `user root`: as root, Mosquitto would otherwise switch to the user `mosquitto`.
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nuser root\nallow_anonymous true\n\
                 log_dest file {}\nset_tcp_nodelay true\n",
                dir.join("mosquitto.log").display()
            ),
        )
        .unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let broker = Broker { child, addr };
        // Readiness wait: up to 10 s for the listener.
        for _ in 0..200 {
            if TcpStream::connect(addr).await.is_ok() {
                return broker;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("mosquitto did not listen on {addr}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies the shipped configuration into `dir`, with every Modbus endpoint replaced by
/// the address `endpoints` maps it to and, when given, the broker port replaced.
pub fn config_copy(
    dir: &Path,
    endpoints: &BTreeMap<SocketAddr, SocketAddr>,
    broker_port: Option<u16>,
) {
    let from = shipped_dir();
    for sub in ["profiles", "sites"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for entry in std::fs::read_dir(from.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            let mut text = std::fs::read_to_string(&path).unwrap();
            if sub == "sites" {
                for (configured, actual) in endpoints {
                    text = text.replace(&format!("\"{configured}\""), &format!("\"{actual}\""));
                }
            }
            std::fs::write(dir.join(sub).join(path.file_name().unwrap()), text).unwrap();
        }
    }
    let mut main = std::fs::read_to_string(from.join("dcguard.toml")).unwrap();
    if let Some(port) = broker_port {
        assert!(main.contains("port = 1883"), "shipped broker port moved");
        main = main.replace("port = 1883", &format!("port = {port}"));
    }
    std::fs::write(dir.join("dcguard.toml"), main).unwrap();
}

/// `GET path` over HTTP/1.1 on loopback: (status, content type, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, content_type, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = body.split_once("\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}
