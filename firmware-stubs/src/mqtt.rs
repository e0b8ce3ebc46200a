//! The MQTT publisher of the simulated sensors: JSON payloads per the device's MQTT profile.
//!
//! One rumqttc client per site (plain TCP, TCP_NODELAY, QoS 1). Every MQTT device of the
//! site publishes on its configured topic every `interval_secs` of its profile (default
//! 10 s): a JSON object with each point at its `json` dot path (nested objects created as
//! needed), the profile's `sequence_json` field counting from 1 per device, and `ts`, the
//! publish time as ISO-8601 UTC. A point whose path is `"."` makes the payload that bare
//! value (no sequence, no `ts`). A device that is `Silent` or has physically failed
//! publishes nothing. Broker loss is logged and retried every second; nothing panics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, EventLoop, MqttOptions, NetworkOptions, QoS};
use serde_json::{Map, Value};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::spec::{DeviceSpec, SiteSpec, Transport};
use crate::world::{DeviceFault, SharedWorld, SimValue, World};

const DEFAULT_INTERVAL_SECS: u64 = 10;
const RECONNECT_SECS: u64 = 1;

/// Spawns the publisher of every MQTT device of `site` against `broker`; ends on `cancel`.
pub fn spawn_publisher(
    site: Arc<SiteSpec>,
    world: SharedWorld,
    broker: SocketAddr,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let devices: Vec<DeviceSpec> = site
            .devices
            .iter()
            .filter(|d| matches!(d.transport, Transport::Mqtt { .. }))
            .cloned()
            .collect();
        if devices.is_empty() {
            return;
        }
        let mut options = MqttOptions::new(
            format!("dcguard-sim-{}", site.id),
            broker.ip().to_string(),
            broker.port(),
        );
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_request_channel_capacity((devices.len() * 4).max(64));
        let (client, mut eventloop) = AsyncClient::new(options, (devices.len() * 4).max(64));
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);

        let mut tasks = JoinSet::new();
        tasks.spawn(drive(eventloop, cancel.clone(), site.id.clone()));
        for device in devices {
            tasks.spawn(publish_device(
                device,
                client.clone(),
                world.clone(),
                cancel.clone(),
            ));
        }
        while tasks.join_next().await.is_some() {}
        // Best effort: tell the broker we are leaving.
        let _ = client.try_disconnect();
    })
}

/// Polls the event loop (which sends the publishes); on broker loss, waits and retries.
async fn drive(mut eventloop: EventLoop, cancel: CancellationToken, site: String) {
    let mut connected = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            event = eventloop.poll() => match event {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    connected = true;
                    tracing::info!(site = %site, "sensor publisher connected to the broker");
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        tracing::warn!(site = %site, error = %e, "broker connection lost; retrying");
                    } else {
                        tracing::debug!(site = %site, error = %e, "broker not reachable; retrying");
                    }
                    connected = false;
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(RECONNECT_SECS)) => {}
                    }
                }
            }
        }
    }
}

async fn publish_device(
    device: DeviceSpec,
    client: AsyncClient,
    world: SharedWorld,
    cancel: CancellationToken,
) {
    let Transport::Mqtt { topic, .. } = &device.transport else {
        return;
    };
    let interval_secs = device
        .profile
        .mqtt
        .as_ref()
        .and_then(|m| m.interval_secs)
        .filter(|s| *s > 0)
        .unwrap_or(DEFAULT_INTERVAL_SECS);
    let mut interval = tokio::time::interval(Duration::from_secs(interval_secs));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sequence: u64 = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = interval.tick() => {}
        }
        let payload = {
            let world = world.lock().unwrap_or_else(|e| e.into_inner());
            if world.fault(&device.id) == DeviceFault::Silent || world.is_failed(&device.id) {
                continue;
            }
            sequence += 1;
            let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            payload(&world, &device, sequence, &ts)
        };
        let bytes = match serde_json::to_vec(&payload) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(device = %device.id, error = %e, "cannot encode payload");
                continue;
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            sent = client.publish(topic.clone(), QoS::AtLeastOnce, false, bytes) => {
                if let Err(e) = sent {
                    tracing::debug!(device = %device.id, error = %e, "publish not queued");
                }
            }
        }
    }
}

/// The JSON payload of one device now.
pub fn payload(world: &World, device: &DeviceSpec, sequence: u64, ts: &str) -> Value {
    let mut root = Value::Object(Map::new());
    for point in &device.profile.points {
        let Some(path) = point.json.as_deref() else {
            continue;
        };
        let Some(value) = world.point_value(device, point) else {
            continue;
        };
        let value = json_value(&value, &point.ty);
        if path == "." {
            return value;
        }
        insert_path(&mut root, path, value);
    }
    if let Some(field) = device
        .profile
        .mqtt
        .as_ref()
        .and_then(|m| m.sequence_json.as_deref())
    {
        insert_path(&mut root, field, Value::from(sequence));
    }
    insert_path(&mut root, "ts", Value::from(ts));
    root
}

fn json_value(value: &SimValue, ty: &str) -> Value {
    match value {
        SimValue::Bool(b) => Value::Bool(*b),
        SimValue::Number(n) if ty == "bool" => Value::Bool(*n != 0.0),
        SimValue::Number(n) => {
            // Two decimals, as a sensor would report; non-finite numbers become null.
            let rounded = (n * 100.0).round() / 100.0;
            serde_json::Number::from_f64(rounded).map_or(Value::Null, Value::Number)
        }
        SimValue::Text(s) => Value::String(s.clone()),
        SimValue::Raw(r) => Value::from(*r),
    }
}

/// Sets `value` at the dot path `a.b.c`, creating objects on the way (and replacing
/// non-objects in the way, which only a contradictory profile would cause).
fn insert_path(root: &mut Value, path: &str, value: Value) {
    let mut node = root;
    let mut parts = path.split('.').filter(|p| !p.is_empty()).peekable();
    while let Some(part) = parts.next() {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else {
            return;
        };
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        node = map
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::insert_path;
    use serde_json::json;

    #[test]
    fn dot_paths_nest() {
        let mut v = json!({});
        insert_path(&mut v, "a.b", json!(1));
        insert_path(&mut v, "a.c", json!(true));
        insert_path(&mut v, "d", json!("x"));
        assert_eq!(v, json!({"a": {"b": 1, "c": true}, "d": "x"}));
    }
}
