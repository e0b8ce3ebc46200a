//! The demo's embedded MQTT broker (rumqttd, MQTT 3.1.1, plain TCP) on a free loopback
//! port, for the simulated sensors and the daemon.
//!
//! rumqttd runs its router and server on threads of its own and has no stop: they end
//! with the process, after the daemon and the simulators have disconnected.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::Context as _;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Starts the broker on a free loopback port and returns its address once it accepts
/// connections (at most `ready_within`).
pub async fn start(ready_within: Duration) -> anyhow::Result<SocketAddr> {
    // A free port: bound and released, then given to rumqttd (it binds by address).
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free loopback port for the MQTT broker")?;
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: 20_480,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "demo-v4".to_owned(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 1_000,
            max_outgoing_packet_count: 200,
            max_segment_size: 10 * 1024 * 1024,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    };
    std::thread::Builder::new()
        .name("demo-mqtt-broker".to_owned())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(error) = broker.start() {
                tracing::error!(%error, "The demo's MQTT broker stopped.");
            }
        })
        .context("cannot start the MQTT broker's thread")?;
    let guard = tokio::time::Instant::now() + ready_within;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(addr);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < guard,
            "the embedded MQTT broker did not listen on {addr} within {ready_within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
