//! Every Prometheus metric of the daemon: names (one `pub const` each, shared with
//! `dashboards/`), help texts, label sets, and the [`Metrics`] registry behind `/metrics`.
//!
//! Two kinds of updates:
//! * **Per reading** ([`Metrics::observe`]), called by the readings consumer: the value
//!   gauge of a point (good readings only: booleans 0/1, enum states their raw value,
//!   text not exported) and its good flag. A bad or stale reading **removes** the value
//!   series, so a dashboard shows a gap, never a frozen number (invariant 5).
//! * **Per scrape** ([`Metrics::set_device`], [`Metrics::set_endpoint`],
//!   [`Metrics::set_mqtt`], [`Metrics::set_points_stale`]): copies of the sources' own
//!   counters (`sources::health`, `sources::mqtt::MqttStats`), which stay the single
//!   source of truth. Counters copied this way only ever move forward.
//!
//! No label carries personal data: sites, rooms, racks, devices, points, endpoints
//! (`host:port` of equipment), broker ids and fixed kind words only.

use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::{Encoder, GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::model::{Quality, Reading};

/// Gauge: the engineering value of a point's latest good reading.
pub const READING_VALUE: &str = "dcguard_reading_value";
/// Gauge: 1 when a point's latest reading is good, 0 when it is bad or stale.
pub const READING_GOOD: &str = "dcguard_reading_good";
/// Counter: readings handled by the consumer, by source and quality.
pub const READINGS_TOTAL: &str = "dcguard_readings_total";
/// Gauge: points whose latest reading is stale, per site.
pub const POINTS_STALE: &str = "dcguard_points_stale";
/// Gauge: 1 when a device answers (Modbus) or publishes fresh data (MQTT).
pub const DEVICE_UP: &str = "dcguard_device_up";
/// Counter: errors of a Modbus device by kind.
pub const DEVICE_ERRORS_TOTAL: &str = "dcguard_device_errors_total";
/// Counter: Modbus requests sent to a device (retries included).
pub const DEVICE_REQUESTS_TOTAL: &str = "dcguard_device_requests_total";
/// Gauge: wall time of a device's last scan.
pub const DEVICE_SCAN_DURATION_SECONDS: &str = "dcguard_device_scan_duration_seconds";
/// Gauge: requests sent in a device's last scan.
pub const DEVICE_REQUESTS_PER_SCAN: &str = "dcguard_device_requests_per_scan";
/// Gauge: Unix time of a device's last answer with data.
pub const DEVICE_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "dcguard_device_last_success_timestamp_seconds";
/// Gauge: configuration problems found while polling a device (e.g. exception 0x02).
pub const DEVICE_CONFIG_PROBLEMS: &str = "dcguard_device_config_problems";
/// Gauge: 1 while a Modbus endpoint has an open connection.
pub const MODBUS_ENDPOINT_CONNECTED: &str = "dcguard_modbus_endpoint_connected";
/// Counter: connections opened to a Modbus endpoint.
pub const MODBUS_ENDPOINT_CONNECTS_TOTAL: &str = "dcguard_modbus_endpoint_connects_total";
/// Counter: failed connection attempts to a Modbus endpoint.
pub const MODBUS_ENDPOINT_CONNECT_FAILURES_TOTAL: &str =
    "dcguard_modbus_endpoint_connect_failures_total";
/// Counter: connections dropped after a fault (timeout, IO, mismatched or malformed reply).
pub const MODBUS_ENDPOINT_DROPS_TOTAL: &str = "dcguard_modbus_endpoint_drops_total";
/// Counter: MQTT publishes received from a broker.
pub const MQTT_MESSAGES_TOTAL: &str = "dcguard_mqtt_messages_total";
/// Counter: MQTT publishes rejected or ignored, by reason.
pub const MQTT_MESSAGES_REJECTED_TOTAL: &str = "dcguard_mqtt_messages_rejected_total";
/// Counter: points of accepted MQTT messages that read bad, by kind.
pub const MQTT_POINT_ERRORS_TOTAL: &str = "dcguard_mqtt_point_errors_total";
/// Counter: sequence numbers skipped by MQTT sensors (messages that never arrived).
pub const MQTT_SEQUENCE_GAPS_TOTAL: &str = "dcguard_mqtt_sequence_gaps_total";
/// Counter: accepted connections to an MQTT broker.
pub const MQTT_CONNECTS_TOTAL: &str = "dcguard_mqtt_connects_total";
/// Counter: MQTT connection attempts or sessions that ended in an error.
pub const MQTT_CONNECTION_ERRORS_TOTAL: &str = "dcguard_mqtt_connection_errors_total";

/// Labels of a point's series, in [`POINT_LABELS`] order.
#[derive(Debug, Clone, Copy)]
pub struct PointLabels<'a> {
    /// Site id.
    pub site: &'a str,
    /// Room id.
    pub room: &'a str,
    /// Rack id, `""` when the device is not in a rack.
    pub rack: &'a str,
    /// Device id.
    pub device: &'a str,
    /// Point name.
    pub point: &'a str,
}

impl PointLabels<'_> {
    fn values(&self) -> [&str; 5] {
        [self.site, self.room, self.rack, self.device, self.point]
    }
}

/// Label names of the per-point series.
pub const POINT_LABELS: [&str; 5] = ["site", "room", "rack", "device", "point"];
const DEVICE_LABELS: [&str; 2] = ["site", "device"];

/// A Modbus device's health, as exported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceSample {
    /// Answering now.
    pub up: bool,
    /// Errors by kind word (`timeout`, `exception_0x0b`, `mismatch`, ...), since start.
    pub errors: Vec<(String, u64)>,
    /// Requests since start.
    pub requests: u64,
    /// Last scan duration, seconds.
    pub scan_duration_seconds: Option<f64>,
    /// Requests in the last scan.
    pub requests_last_scan: u32,
    /// Unix time of the last answer with data.
    pub last_success_seconds: Option<f64>,
    /// Configuration problems found while polling.
    pub config_problems: usize,
}

/// A Modbus endpoint's health, as exported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointSample {
    /// Connected now.
    pub connected: bool,
    /// Connections opened.
    pub connects: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Connections dropped after a fault.
    pub drops: u64,
}

/// An MQTT broker task's counters, as exported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MqttSample {
    /// Accepted connections.
    pub connects: u64,
    /// Connection errors.
    pub connection_errors: u64,
    /// Publishes received.
    pub messages: u64,
    /// Topic no device has.
    pub unknown_topic: u64,
    /// Larger than the profile allows.
    pub oversize: u64,
    /// Not JSON.
    pub malformed: u64,
    /// Redeliveries dropped.
    pub duplicate: u64,
    /// Retained messages without a timestamp, ignored.
    pub retained_ignored: u64,
    /// Points missing or of the wrong type.
    pub point_decode: u64,
    /// Points outside their plausible range.
    pub point_out_of_range: u64,
    /// Sequence numbers skipped.
    pub sequence_gaps: u64,
}

/// The registry and every metric of the daemon. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reading_value: GaugeVec,
    reading_good: IntGaugeVec,
    readings_total: IntCounterVec,
    points_stale: IntGaugeVec,
    device_up: IntGaugeVec,
    device_errors: IntCounterVec,
    device_requests: IntCounterVec,
    device_scan_duration: GaugeVec,
    device_requests_per_scan: IntGaugeVec,
    device_last_success: GaugeVec,
    device_config_problems: IntGaugeVec,
    endpoint_connected: IntGaugeVec,
    endpoint_connects: IntCounterVec,
    endpoint_connect_failures: IntCounterVec,
    endpoint_drops: IntCounterVec,
    mqtt_messages: IntCounterVec,
    mqtt_rejected: IntCounterVec,
    mqtt_point_errors: IntCounterVec,
    mqtt_sequence_gaps: IntCounterVec,
    mqtt_connects: IntCounterVec,
    mqtt_connection_errors: IntCounterVec,
    /// Serialises the copying of external counters, so two concurrent scrapes cannot
    /// both add the same difference.
    copy_lock: Mutex<()>,
}

/// A metric could not be created or registered (a bug in this file: duplicate or
/// malformed names); reported at start, never while running.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the metrics registry: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let r = &registry;
        Ok(Metrics {
            reading_value: gauge(
                r,
                READING_VALUE,
                "Value of the latest good reading of a point, in the point's unit \
                 (booleans 0/1, enum states their raw value); absent while bad or stale.",
                &POINT_LABELS,
            )?,
            reading_good: int_gauge(
                r,
                READING_GOOD,
                "1 when the latest reading of a point is good, 0 when bad or stale.",
                &POINT_LABELS,
            )?,
            readings_total: counter(
                r,
                READINGS_TOTAL,
                "Readings handled, by source (modbus, mqtt) and quality (good, bad, stale).",
                &["source", "quality"],
            )?,
            points_stale: int_gauge(
                r,
                POINTS_STALE,
                "Points whose latest reading is stale (no good reading for N intervals).",
                &["site"],
            )?,
            device_up: int_gauge(
                r,
                DEVICE_UP,
                "1 when a device answers (Modbus) or publishes fresh data (MQTT), else 0.",
                &DEVICE_LABELS,
            )?,
            device_errors: counter(
                r,
                DEVICE_ERRORS_TOTAL,
                "Errors of a Modbus device by kind (timeout, exception_0xNN, mismatch, \
                 malformed, io, connect, decode).",
                &["site", "device", "kind"],
            )?,
            device_requests: counter(
                r,
                DEVICE_REQUESTS_TOTAL,
                "Modbus requests sent to a device, retries included.",
                &DEVICE_LABELS,
            )?,
            device_scan_duration: gauge(
                r,
                DEVICE_SCAN_DURATION_SECONDS,
                "Wall time of the last scan of a device (one poll class).",
                &DEVICE_LABELS,
            )?,
            device_requests_per_scan: int_gauge(
                r,
                DEVICE_REQUESTS_PER_SCAN,
                "Modbus requests sent in the last scan of a device.",
                &DEVICE_LABELS,
            )?,
            device_last_success: gauge(
                r,
                DEVICE_LAST_SUCCESS_TIMESTAMP_SECONDS,
                "Unix time of the last answer with data from a device.",
                &DEVICE_LABELS,
            )?,
            device_config_problems: int_gauge(
                r,
                DEVICE_CONFIG_PROBLEMS,
                "Configuration problems found while polling a device (e.g. exception 0x02).",
                &DEVICE_LABELS,
            )?,
            endpoint_connected: int_gauge(
                r,
                MODBUS_ENDPOINT_CONNECTED,
                "1 while a Modbus endpoint has an open connection.",
                &["endpoint"],
            )?,
            endpoint_connects: counter(
                r,
                MODBUS_ENDPOINT_CONNECTS_TOTAL,
                "Connections opened to a Modbus endpoint.",
                &["endpoint"],
            )?,
            endpoint_connect_failures: counter(
                r,
                MODBUS_ENDPOINT_CONNECT_FAILURES_TOTAL,
                "Failed connection attempts to a Modbus endpoint.",
                &["endpoint"],
            )?,
            endpoint_drops: counter(
                r,
                MODBUS_ENDPOINT_DROPS_TOTAL,
                "Connections to a Modbus endpoint dropped after a fault (timeout, IO, \
                 mismatched or malformed reply).",
                &["endpoint"],
            )?,
            mqtt_messages: counter(
                r,
                MQTT_MESSAGES_TOTAL,
                "MQTT publishes received from a broker.",
                &["broker"],
            )?,
            mqtt_rejected: counter(
                r,
                MQTT_MESSAGES_REJECTED_TOTAL,
                "MQTT publishes rejected or ignored, by reason (unknown_topic, oversize, \
                 malformed, duplicate, retained_without_ts).",
                &["broker", "reason"],
            )?,
            mqtt_point_errors: counter(
                r,
                MQTT_POINT_ERRORS_TOTAL,
                "Points of MQTT messages that read bad, by kind (decode, out_of_range).",
                &["broker", "kind"],
            )?,
            mqtt_sequence_gaps: counter(
                r,
                MQTT_SEQUENCE_GAPS_TOTAL,
                "Sequence numbers skipped by MQTT sensors (messages that never arrived).",
                &["broker"],
            )?,
            mqtt_connects: counter(
                r,
                MQTT_CONNECTS_TOTAL,
                "Accepted connections to an MQTT broker.",
                &["broker"],
            )?,
            mqtt_connection_errors: counter(
                r,
                MQTT_CONNECTION_ERRORS_TOTAL,
                "MQTT connection attempts or sessions that ended in an error.",
                &["broker"],
            )?,
            copy_lock: Mutex::new(()),
            registry,
        })
    }

    /// Records one reading of a point; `source` is `modbus` or `mqtt`.
    pub fn observe(&self, reading: &Reading, labels: PointLabels<'_>, source: &str) {
        let values = labels.values();
        let quality = match reading.quality() {
            Quality::Good => "good",
            Quality::Bad(_) => "bad",
            Quality::Stale => "stale",
        };
        if let Ok(c) = self
            .readings_total
            .get_metric_with_label_values(&[source, quality])
        {
            c.inc();
        }
        let number = reading.value().and_then(|v| v.as_f64());
        match number {
            Some(n) => {
                if let Ok(g) = self.reading_value.get_metric_with_label_values(&values) {
                    g.set(n);
                }
            }
            // Bad, stale or text: no number may stay behind.
            None => {
                let _ = self.reading_value.remove_label_values(&values);
            }
        }
        if let Ok(g) = self.reading_good.get_metric_with_label_values(&values) {
            g.set(i64::from(reading.quality().is_good()));
        }
    }

    /// Sets a device's up flag (Modbus and MQTT devices).
    pub fn set_device_up(&self, site: &str, device: &str, up: bool) {
        if let Ok(g) = self.device_up.get_metric_with_label_values(&[site, device]) {
            g.set(i64::from(up));
        }
    }

    /// Copies a Modbus device's health.
    pub fn set_device(&self, site: &str, device: &str, sample: &DeviceSample) {
        let _guard = self.copy_lock.lock().unwrap_or_else(|e| e.into_inner());
        let labels = [site, device];
        self.set_device_up(site, device, sample.up);
        for (kind, count) in &sample.errors {
            if let Ok(c) =
                self.device_errors
                    .get_metric_with_label_values(&[site, device, kind.as_str()])
            {
                advance(&c, *count);
            }
        }
        if let Ok(c) = self.device_requests.get_metric_with_label_values(&labels) {
            advance(&c, sample.requests);
        }
        if let Some(secs) = sample.scan_duration_seconds
            && let Ok(g) = self
                .device_scan_duration
                .get_metric_with_label_values(&labels)
        {
            g.set(secs);
        }
        if let Ok(g) = self
            .device_requests_per_scan
            .get_metric_with_label_values(&labels)
        {
            g.set(i64::from(sample.requests_last_scan));
        }
        if let Some(at) = sample.last_success_seconds
            && let Ok(g) = self
                .device_last_success
                .get_metric_with_label_values(&labels)
        {
            g.set(at);
        }
        if let Ok(g) = self
            .device_config_problems
            .get_metric_with_label_values(&labels)
        {
            g.set(i64::try_from(sample.config_problems).unwrap_or(i64::MAX));
        }
    }

    /// Copies a Modbus endpoint's health (`endpoint` as configured, `host:port`).
    pub fn set_endpoint(&self, endpoint: &str, sample: &EndpointSample) {
        let _guard = self.copy_lock.lock().unwrap_or_else(|e| e.into_inner());
        let labels = [endpoint];
        if let Ok(g) = self
            .endpoint_connected
            .get_metric_with_label_values(&labels)
        {
            g.set(i64::from(sample.connected));
        }
        for (vec, value) in [
            (&self.endpoint_connects, sample.connects),
            (&self.endpoint_connect_failures, sample.connect_failures),
            (&self.endpoint_drops, sample.drops),
        ] {
            if let Ok(c) = vec.get_metric_with_label_values(&labels) {
                advance(&c, value);
            }
        }
    }

    /// Copies an MQTT broker task's counters.
    pub fn set_mqtt(&self, broker: &str, sample: &MqttSample) {
        let _guard = self.copy_lock.lock().unwrap_or_else(|e| e.into_inner());
        let labels = [broker];
        for (vec, value) in [
            (&self.mqtt_messages, sample.messages),
            (&self.mqtt_sequence_gaps, sample.sequence_gaps),
            (&self.mqtt_connects, sample.connects),
            (&self.mqtt_connection_errors, sample.connection_errors),
        ] {
            if let Ok(c) = vec.get_metric_with_label_values(&labels) {
                advance(&c, value);
            }
        }
        for (reason, value) in [
            ("unknown_topic", sample.unknown_topic),
            ("oversize", sample.oversize),
            ("malformed", sample.malformed),
            ("duplicate", sample.duplicate),
            ("retained_without_ts", sample.retained_ignored),
        ] {
            if let Ok(c) = self
                .mqtt_rejected
                .get_metric_with_label_values(&[broker, reason])
            {
                advance(&c, value);
            }
        }
        for (kind, value) in [
            ("decode", sample.point_decode),
            ("out_of_range", sample.point_out_of_range),
        ] {
            if let Ok(c) = self
                .mqtt_point_errors
                .get_metric_with_label_values(&[broker, kind])
            {
                advance(&c, value);
            }
        }
    }

    /// Sets the number of stale points of a site.
    pub fn set_points_stale(&self, site: &str, count: usize) {
        if let Ok(g) = self.points_stale.get_metric_with_label_values(&[site]) {
            g.set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// The current value of a point's value gauge, if it has one (for tests and the API).
    pub fn reading_value(&self, labels: PointLabels<'_>) -> Option<f64> {
        let family = self.reading_value.collect();
        let wanted = labels.values();
        family.first()?.get_metric().iter().find_map(|m| {
            let pairs = m.get_label();
            let matches = POINT_LABELS.iter().zip(wanted).all(|(name, value)| {
                pairs
                    .iter()
                    .any(|p| p.name() == *name && p.value() == value)
            });
            matches.then(|| m.get_gauge().get_value())
        })
    }

    /// Everything in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        // The text encoder writes UTF-8 only.
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Moves a counter forward to `value` (a copy of a monotonic counter kept elsewhere).
fn advance(counter: &IntCounter, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<GaugeVec> {
    let vec = GaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn int_gauge(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let vec = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(vec.clone()))?;
    Ok(vec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BadReason, PointId, Value};
    use chrono::{DateTime, Utc};

    fn labels() -> PointLabels<'static> {
        PointLabels {
            site: "dc",
            room: "gen",
            rack: "",
            device: "gen-1",
            point: "oil_pressure",
        }
    }

    #[test]
    fn a_bad_reading_removes_the_number() {
        let metrics = Metrics::new().unwrap();
        let id = PointId::new("dc", "gen-1", "oil_pressure");
        let at = DateTime::<Utc>::UNIX_EPOCH;
        metrics.observe(
            &Reading::good(id.clone(), Value::Number(412.0), at),
            labels(),
            "modbus",
        );
        assert_eq!(metrics.reading_value(labels()), Some(412.0));
        metrics.observe(
            &Reading::bad(id.clone(), BadReason::Timeout, at),
            labels(),
            "modbus",
        );
        assert_eq!(metrics.reading_value(labels()), None);
        let text = metrics.render().unwrap();
        assert!(text.contains(
            "dcguard_reading_good{device=\"gen-1\",point=\"oil_pressure\",rack=\"\",room=\"gen\",site=\"dc\"} 0"
        ), "{text}");
        assert!(text.contains("dcguard_readings_total{quality=\"bad\",source=\"modbus\"} 1"));
        metrics.observe(
            &Reading::good(id, Value::State { raw: 3, name: None }, at),
            labels(),
            "modbus",
        );
        assert_eq!(metrics.reading_value(labels()), Some(3.0));
    }

    #[test]
    fn copied_counters_only_move_forward() {
        let metrics = Metrics::new().unwrap();
        let mut sample = MqttSample {
            messages: 5,
            malformed: 2,
            ..MqttSample::default()
        };
        metrics.set_mqtt("sim", &sample);
        metrics.set_mqtt("sim", &sample);
        sample.messages = 7;
        metrics.set_mqtt("sim", &sample);
        let text = metrics.render().unwrap();
        assert!(
            text.contains("dcguard_mqtt_messages_total{broker=\"sim\"} 7"),
            "{text}"
        );
        assert!(text.contains(
            "dcguard_mqtt_messages_rejected_total{broker=\"sim\",reason=\"malformed\"} 2"
        ));
    }
}
