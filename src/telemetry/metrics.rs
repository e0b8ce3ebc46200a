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

use crate::config::{Config, Feed};
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

// Facility facts from the configuration ([`Metrics::set_facility`]), so dashboards draw
// thresholds and ratios from the seed limits instead of copying numbers.
/// Gauge: a climate limit of a room (`kind`: `temperature_min_celsius`,
/// `temperature_max_celsius`, `humidity_min_percent`, `humidity_max_percent`).
pub const LIMIT: &str = "dcguard_limit";
/// Gauge: a rack's power limit in watts (each feed is rated at it; A + B stay under it).
pub const RACK_LIMIT_WATTS: &str = "dcguard_rack_limit_watts";
/// Gauge: always 1; the configured facts of a device as labels (kind, room, rack, feed).
pub const DEVICE_INFO: &str = "dcguard_device_info";
/// Gauge: how long a genset's full tank lasts at rated load (`fuel_tank_l / fuel_l_per_h_full`).
pub const GENSET_FULL_TANK_SECONDS: &str = "dcguard_genset_full_tank_seconds";
/// Gauge: the site's required genset fuel autonomy without refuelling.
pub const GENSET_AUTONOMY_REQUIRED_SECONDS: &str = "dcguard_genset_autonomy_required_seconds";
/// Gauge: the site's design UPS backup (bridge) time.
pub const UPS_BACKUP_REQUIRED_SECONDS: &str = "dcguard_ups_backup_required_seconds";

// The InfluxDB sink ([`Metrics::set_influx`]).
/// Counter: readings a sink lost, by sink and reason (`queue_full`, `spool_budget`,
/// `spool_age`, `spool_corrupt`, `spool_error`, `unencodable`).
pub const READINGS_DROPPED_TOTAL: &str = "dcguard_readings_dropped_total";
/// Counter: lines InfluxDB accepted.
pub const INFLUX_LINES_WRITTEN_TOTAL: &str = "dcguard_influx_lines_written_total";
/// Counter: failed InfluxDB write requests by kind (`transport`, `status`, `rejected`).
pub const INFLUX_WRITE_FAILURES_TOTAL: &str = "dcguard_influx_write_failures_total";
/// Gauge: lines waiting in the InfluxDB spool.
pub const INFLUX_SPOOL_LINES: &str = "dcguard_influx_spool_lines";
/// Gauge: bytes waiting in the InfluxDB spool.
pub const INFLUX_SPOOL_BYTES: &str = "dcguard_influx_spool_bytes";
/// Counter: spool records that failed their checksum.
pub const INFLUX_SPOOL_CORRUPT_RECORDS_TOTAL: &str = "dcguard_influx_spool_corrupt_records_total";
/// Counter: lines InfluxDB refused, kept in the quarantine file.
pub const INFLUX_QUARANTINED_LINES_TOTAL: &str = "dcguard_influx_quarantined_lines_total";

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
    limit: GaugeVec,
    rack_limit: GaugeVec,
    device_info: IntGaugeVec,
    genset_full_tank: GaugeVec,
    genset_autonomy_required: GaugeVec,
    ups_backup_required: GaugeVec,
    readings_dropped: IntCounterVec,
    influx_lines_written: IntCounterVec,
    influx_write_failures: IntCounterVec,
    influx_spool_lines: IntGaugeVec,
    influx_spool_bytes: IntGaugeVec,
    influx_spool_corrupt: IntCounterVec,
    influx_quarantined: IntCounterVec,
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
            limit: gauge(
                r,
                LIMIT,
                "Climate limit of a room from the configuration, by kind \
                 (temperature_min_celsius, temperature_max_celsius, humidity_min_percent, \
                 humidity_max_percent).",
                &["site", "room", "kind"],
            )?,
            rack_limit: gauge(
                r,
                RACK_LIMIT_WATTS,
                "Power limit of a rack in watts; each feed is rated at it and A + B stay under it.",
                &["site", "room", "rack"],
            )?,
            device_info: int_gauge(
                r,
                DEVICE_INFO,
                "Always 1: the configured kind, room, rack and feed of a device.",
                &["site", "room", "rack", "device", "kind", "feed"],
            )?,
            genset_full_tank: gauge(
                r,
                GENSET_FULL_TANK_SECONDS,
                "How long a genset's full tank lasts at rated load (tank / consumption at \
                 rated load).",
                &["site", "device"],
            )?,
            genset_autonomy_required: gauge(
                r,
                GENSET_AUTONOMY_REQUIRED_SECONDS,
                "Required genset fuel autonomy of a site without refuelling.",
                &["site"],
            )?,
            ups_backup_required: gauge(
                r,
                UPS_BACKUP_REQUIRED_SECONDS,
                "Design UPS backup (bridge) time of a site.",
                &["site"],
            )?,
            readings_dropped: counter(
                r,
                READINGS_DROPPED_TOTAL,
                "Readings a sink lost, by sink and reason (queue_full, spool_budget, \
                 spool_age, spool_corrupt, spool_error, unencodable).",
                &["sink", "reason"],
            )?,
            influx_lines_written: counter(
                r,
                INFLUX_LINES_WRITTEN_TOTAL,
                "Lines InfluxDB accepted.",
                &[],
            )?,
            influx_write_failures: counter(
                r,
                INFLUX_WRITE_FAILURES_TOTAL,
                "Failed InfluxDB write requests by kind (transport, status, rejected).",
                &["kind"],
            )?,
            influx_spool_lines: int_gauge(
                r,
                INFLUX_SPOOL_LINES,
                "Lines waiting in the InfluxDB spool.",
                &[],
            )?,
            influx_spool_bytes: int_gauge(
                r,
                INFLUX_SPOOL_BYTES,
                "Bytes waiting in the InfluxDB spool.",
                &[],
            )?,
            influx_spool_corrupt: counter(
                r,
                INFLUX_SPOOL_CORRUPT_RECORDS_TOTAL,
                "InfluxDB spool records that failed their checksum (their lines are lost).",
                &[],
            )?,
            influx_quarantined: counter(
                r,
                INFLUX_QUARANTINED_LINES_TOTAL,
                "Lines InfluxDB refused (400/413/422), kept in the quarantine file.",
                &[],
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

    /// Copies the InfluxDB sink's statistics.
    pub fn set_influx(&self, sample: &crate::sinks::influxdb::InfluxSample) {
        let _guard = self.copy_lock.lock().unwrap_or_else(|e| e.into_inner());
        let spool = &sample.spool;
        for (reason, value) in [
            ("queue_full", sample.dropped_queue_full),
            ("spool_budget", spool.dropped_bytes_lines),
            ("spool_age", spool.dropped_age_lines),
            ("spool_corrupt", spool.corrupt_lines),
            ("spool_error", sample.spool_error_lines),
            ("unencodable", sample.unencodable),
        ] {
            if let Ok(c) = self
                .readings_dropped
                .get_metric_with_label_values(&["influxdb", reason])
            {
                advance(&c, value);
            }
        }
        if let Ok(c) = self
            .influx_lines_written
            .get_metric_with_label_values(&[] as &[&str])
        {
            advance(&c, sample.lines_written);
        }
        for (kind, value) in [
            ("transport", sample.failures_transport),
            ("status", sample.failures_status),
            ("rejected", sample.failures_rejected),
        ] {
            if let Ok(c) = self
                .influx_write_failures
                .get_metric_with_label_values(&[kind])
            {
                advance(&c, value);
            }
        }
        for (gauge, value) in [
            (&self.influx_spool_lines, sample.spool_lines),
            (&self.influx_spool_bytes, sample.spool_bytes),
        ] {
            if let Ok(g) = gauge.get_metric_with_label_values(&[] as &[&str]) {
                g.set(i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
        for (vec, value) in [
            (&self.influx_spool_corrupt, spool.corrupt_records),
            (&self.influx_quarantined, spool.quarantined_lines),
        ] {
            if let Ok(c) = vec.get_metric_with_label_values(&[] as &[&str]) {
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

    /// Exports the configured facility facts: room climate limits, rack limits, device
    /// kinds and feeds, genset tank autonomy and the sites' autonomy and backup
    /// requirements. Idempotent; call once after start (and again after a reload).
    pub fn set_facility(&self, config: &Config) {
        for site in &config.sites {
            let s = site.id.as_str();
            for room in &site.rooms {
                let Some(c) = room.climate else { continue };
                for (kind, value) in [
                    ("temperature_min_celsius", c.temperature_min_c),
                    ("temperature_max_celsius", c.temperature_max_c),
                    ("humidity_min_percent", c.humidity_min_pct),
                    ("humidity_max_percent", c.humidity_max_pct),
                ] {
                    if let Ok(g) =
                        self.limit
                            .get_metric_with_label_values(&[s, room.id.as_str(), kind])
                    {
                        g.set(value);
                    }
                }
            }
            for rack in &site.racks {
                if let Ok(g) = self.rack_limit.get_metric_with_label_values(&[
                    s,
                    rack.room.as_str(),
                    rack.id.as_str(),
                ]) {
                    g.set(rack.limit_kw * 1000.0);
                }
            }
            for device in &site.devices {
                let feed = match device.facts.feed {
                    Some(Feed::A) => "A",
                    Some(Feed::B) => "B",
                    None => "",
                };
                if let Ok(g) = self.device_info.get_metric_with_label_values(&[
                    s,
                    device.room.as_str(),
                    device.rack.as_deref().unwrap_or(""),
                    device.id.as_str(),
                    device.kind().as_str(),
                    feed,
                ]) {
                    g.set(1);
                }
                if let (Some(tank), Some(per_hour)) =
                    (device.facts.fuel_tank_l, device.facts.fuel_l_per_h_full)
                    && per_hour > 0.0
                    && let Ok(g) = self
                        .genset_full_tank
                        .get_metric_with_label_values(&[s, device.id.as_str()])
                {
                    g.set(tank / per_hour * 3600.0);
                }
            }
            if let Ok(g) = self
                .genset_autonomy_required
                .get_metric_with_label_values(&[s])
            {
                g.set(site.genset.autonomy_min_h * 3600.0);
            }
            if let Ok(g) = self.ups_backup_required.get_metric_with_label_values(&[s]) {
                g.set(site.ups.backup_time.as_secs_f64());
            }
        }
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

// --- Alarms and incidents (issue 4) ---------------------------------------------------

/// Gauge: alarms by ISA-18.2 state (`active_unacked`, `active_acked`, `returned_unacked`)
/// and priority, per site.
pub const ALARMS: &str = "dcguard_alarms";
/// Gauge: alarms shelved, per site.
pub const ALARMS_SHELVED: &str = "dcguard_alarms_shelved";
/// Gauge: alarms out of service, per site.
pub const ALARMS_OUT_OF_SERVICE: &str = "dcguard_alarms_out_of_service";
/// Gauge: active alarms suppressed by design or by a maintenance window, per site.
pub const ALARMS_SUPPRESSED: &str = "dcguard_alarms_suppressed";
/// Gauge: alarms annunciated within the last 10 min (EEMUA 191 flood window), per site.
pub const ALARM_ANNUNCIATIONS_10M: &str = "dcguard_alarm_annunciations_10m";
/// Gauge: 1 while a site is in an alarm flood (more than 10 in 10 min).
pub const ALARM_FLOOD: &str = "dcguard_alarm_flood";
/// Gauge: standing alarms (active for more than 24 h), per site.
pub const ALARMS_STANDING: &str = "dcguard_alarms_standing";
/// Gauge: chattering alarms, per site.
pub const ALARMS_CHATTERING: &str = "dcguard_alarms_chattering";
/// Gauge: activations of the top 10 bad actors (bounded label set: only the current top 10).
pub const ALARM_BAD_ACTOR_ACTIVATIONS: &str = "dcguard_alarm_bad_actor_activations";
/// Counter: alarm transitions committed, per site.
pub const ALARM_TRANSITIONS_TOTAL: &str = "dcguard_alarm_transitions_total";
/// Counter: failed commits of alarm transitions (each is retried).
pub const ALARM_COMMIT_FAILURES_TOTAL: &str = "dcguard_alarm_commit_failures_total";
/// Gauge: open incidents by state and priority, per site.
pub const INCIDENTS: &str = "dcguard_incidents";
/// Counter: incident transitions committed, by kind (`opened`, `joined`, ...).
pub const INCIDENT_TRANSITIONS_TOTAL: &str = "dcguard_incident_transitions_total";
/// Gauge: outbox items waiting for delivery, per adapter.
pub const OUTBOX_PENDING: &str = "dcguard_outbox_pending";
/// Gauge: outbox items parked (rejected by the receiver), per adapter.
pub const OUTBOX_PARKED: &str = "dcguard_outbox_parked";
/// Gauge: 1 while incident delivery is failing (items parked, or attempts failing), per
/// adapter: the internal "incident delivery failing" alarm.
pub const INCIDENT_DELIVERY_FAILING: &str = "dcguard_incident_delivery_failing";

/// The alarm and incident metrics, registered in the daemon's registry by
/// [`Metrics::alarm_metrics`]; set by the alarm task after each commit.
#[derive(Debug)]
pub struct AlarmMetrics {
    alarms: IntGaugeVec,
    shelved: IntGaugeVec,
    out_of_service: IntGaugeVec,
    suppressed: IntGaugeVec,
    annunciations: IntGaugeVec,
    flood: IntGaugeVec,
    standing: IntGaugeVec,
    chattering: IntGaugeVec,
    bad_actors: IntGaugeVec,
    transitions: IntCounterVec,
    commit_failures: IntCounter,
    incidents: IntGaugeVec,
    incident_transitions: IntCounterVec,
    outbox_pending: IntGaugeVec,
    outbox_parked: IntGaugeVec,
    delivery_failing: IntGaugeVec,
    /// Label sets set before, per gauge, so a vanished one is set to 0 (or removed).
    seen: Mutex<std::collections::HashMap<&'static str, std::collections::HashSet<Vec<String>>>>,
}

impl Metrics {
    /// Registers the alarm and incident metrics (once per registry).
    pub fn alarm_metrics(&self) -> Result<AlarmMetrics, MetricsError> {
        let r = &self.registry;
        let commit_failures = IntCounter::new(
            ALARM_COMMIT_FAILURES_TOTAL,
            "Failed commits of alarm transitions to the store (each is retried).",
        )?;
        r.register(Box::new(commit_failures.clone()))?;
        Ok(AlarmMetrics {
            alarms: int_gauge(
                r,
                ALARMS,
                "Alarms by ISA-18.2 state and priority.",
                &["site", "state", "priority"],
            )?,
            shelved: int_gauge(r, ALARMS_SHELVED, "Alarms shelved.", &["site"])?,
            out_of_service: int_gauge(
                r,
                ALARMS_OUT_OF_SERVICE,
                "Alarms out of service.",
                &["site"],
            )?,
            suppressed: int_gauge(
                r,
                ALARMS_SUPPRESSED,
                "Active alarms suppressed by design or by a maintenance window.",
                &["site"],
            )?,
            annunciations: int_gauge(
                r,
                ALARM_ANNUNCIATIONS_10M,
                "Alarms annunciated within the last 10 minutes.",
                &["site"],
            )?,
            flood: int_gauge(
                r,
                ALARM_FLOOD,
                "1 while the site is in an alarm flood.",
                &["site"],
            )?,
            standing: int_gauge(
                r,
                ALARMS_STANDING,
                "Alarms active for more than 24 hours.",
                &["site"],
            )?,
            chattering: int_gauge(r, ALARMS_CHATTERING, "Chattering alarms.", &["site"])?,
            bad_actors: int_gauge(
                r,
                ALARM_BAD_ACTOR_ACTIVATIONS,
                "Activations of the top 10 bad actors.",
                &["site", "rule", "scope"],
            )?,
            transitions: counter(
                r,
                ALARM_TRANSITIONS_TOTAL,
                "Alarm transitions committed to the store.",
                &["site"],
            )?,
            commit_failures,
            incidents: int_gauge(
                r,
                INCIDENTS,
                "Open incidents by state and priority.",
                &["site", "state", "priority"],
            )?,
            incident_transitions: counter(
                r,
                INCIDENT_TRANSITIONS_TOTAL,
                "Incident transitions committed to the store.",
                &["kind"],
            )?,
            outbox_pending: int_gauge(
                r,
                OUTBOX_PENDING,
                "Incident transitions waiting for delivery.",
                &["adapter"],
            )?,
            outbox_parked: int_gauge(
                r,
                OUTBOX_PARKED,
                "Incident transitions parked after the receiver rejected them.",
                &["adapter"],
            )?,
            delivery_failing: int_gauge(
                r,
                INCIDENT_DELIVERY_FAILING,
                "1 while incident delivery is failing (parked items or failing attempts).",
                &["adapter"],
            )?,
            seen: Mutex::new(std::collections::HashMap::new()),
        })
    }
}

impl AlarmMetrics {
    /// Sets `gauge` to exactly `values`: label sets set before and absent now go to 0
    /// (`zero`) or are removed.
    fn replace(
        &self,
        name: &'static str,
        gauge: &IntGaugeVec,
        values: std::collections::HashMap<Vec<String>, i64>,
        zero: bool,
    ) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let before = seen.entry(name).or_default();
        for labels in before.iter() {
            if !values.contains_key(labels) {
                let l: Vec<&str> = labels.iter().map(String::as_str).collect();
                if zero {
                    gauge.with_label_values(&l).set(0);
                } else {
                    let _ = gauge.remove_label_values(&l);
                }
            }
        }
        if !zero {
            before.retain(|l| values.contains_key(l));
        }
        for (labels, v) in values {
            let l: Vec<&str> = labels.iter().map(String::as_str).collect();
            gauge.with_label_values(&l).set(v);
            before.insert(labels);
        }
    }

    /// The alarm gauges: every alarm with its priority and whether it is suppressed now,
    /// and the KPI snapshot.
    pub fn set_alarms<'a>(
        &self,
        alarms: impl Iterator<
            Item = (
                &'a crate::alarms::Alarm,
                crate::config::model::Priority,
                bool,
            ),
        >,
        kpis: &crate::alarms::Kpis,
    ) {
        use crate::alarms::AlarmState;
        use std::collections::HashMap;
        let mut by_state: HashMap<Vec<String>, i64> = HashMap::new();
        let mut suppressed: HashMap<Vec<String>, i64> = HashMap::new();
        for (a, priority, is_suppressed) in alarms {
            let state = match a.state {
                AlarmState::Normal => continue,
                AlarmState::ActiveUnacked => "active_unacked",
                AlarmState::ActiveAcked => "active_acked",
                AlarmState::ReturnedUnacked => "returned_unacked",
            };
            let labels = vec![
                a.key.site.clone(),
                state.to_owned(),
                priority.as_str().to_owned(),
            ];
            *by_state.entry(labels).or_default() += 1;
            if is_suppressed && a.state.is_active() {
                *suppressed.entry(vec![a.key.site.clone()]).or_default() += 1;
            }
        }
        // Zeros for every state and priority of a site the book knows, so "no P3 alarm"
        // is a 0 on the wall, not a missing series.
        for site in kpis.sites.keys() {
            for state in ["active_unacked", "active_acked", "returned_unacked"] {
                for priority in crate::config::model::Priority::ALL {
                    by_state
                        .entry(vec![
                            site.clone(),
                            state.to_owned(),
                            priority.as_str().to_owned(),
                        ])
                        .or_insert(0);
                }
            }
        }
        self.replace(ALARMS, &self.alarms, by_state, true);
        self.replace(ALARMS_SUPPRESSED, &self.suppressed, suppressed, true);
        let per_site = |f: fn(&crate::alarms::SiteKpis) -> i64| -> HashMap<Vec<String>, i64> {
            kpis.sites
                .iter()
                .map(|(site, k)| (vec![site.clone()], f(k)))
                .collect()
        };
        self.replace(
            ALARMS_SHELVED,
            &self.shelved,
            per_site(|k| i64::try_from(k.shelved).unwrap_or(i64::MAX)),
            true,
        );
        self.replace(
            ALARMS_OUT_OF_SERVICE,
            &self.out_of_service,
            per_site(|k| i64::try_from(k.out_of_service).unwrap_or(i64::MAX)),
            true,
        );
        self.replace(
            ALARM_ANNUNCIATIONS_10M,
            &self.annunciations,
            per_site(|k| i64::try_from(k.annunciated).unwrap_or(i64::MAX)),
            true,
        );
        self.replace(
            ALARM_FLOOD,
            &self.flood,
            per_site(|k| i64::from(k.flood)),
            true,
        );
        self.replace(
            ALARMS_STANDING,
            &self.standing,
            per_site(|k| i64::try_from(k.standing).unwrap_or(i64::MAX)),
            true,
        );
        self.replace(
            ALARMS_CHATTERING,
            &self.chattering,
            per_site(|k| i64::try_from(k.chattering).unwrap_or(i64::MAX)),
            true,
        );
        let actors = kpis
            .bad_actors
            .iter()
            .map(|b| {
                (
                    vec![b.key.site.clone(), b.key.rule.clone(), b.key.scope.clone()],
                    i64::try_from(b.activations).unwrap_or(i64::MAX),
                )
            })
            .collect();
        self.replace(ALARM_BAD_ACTOR_ACTIVATIONS, &self.bad_actors, actors, false);
    }

    /// The incident gauges from the open incidents.
    pub fn set_incidents<'a>(
        &self,
        open: impl Iterator<Item = &'a crate::incidents::incident::Incident>,
    ) {
        let mut values: std::collections::HashMap<Vec<String>, i64> = Default::default();
        for i in open {
            let labels = vec![
                i.site.clone(),
                i.state.as_str().to_owned(),
                i.priority.as_str().to_owned(),
            ];
            *values.entry(labels).or_default() += 1;
        }
        self.replace(INCIDENTS, &self.incidents, values, true);
    }

    /// Counts committed transitions.
    pub fn count_transitions(
        &self,
        alarms: &[crate::alarms::Transition],
        incidents: &[crate::incidents::incident::IncidentTransition],
    ) {
        for t in alarms {
            self.transitions.with_label_values(&[&t.key.site]).inc();
        }
        for t in incidents {
            let kind = match t.kind {
                crate::incidents::incident::TransitionKind::Opened => "opened",
                crate::incidents::incident::TransitionKind::Joined { .. } => "joined",
                crate::incidents::incident::TransitionKind::Reactivated { .. } => "reactivated",
                crate::incidents::incident::TransitionKind::Escalated { .. } => "escalated",
                crate::incidents::incident::TransitionKind::Acknowledged { .. } => "acknowledged",
                crate::incidents::incident::TransitionKind::ConditionCleared { .. } => {
                    "condition_cleared"
                }
                crate::incidents::incident::TransitionKind::Disaster => "disaster",
                crate::incidents::incident::TransitionKind::Resolved => "resolved",
            };
            self.incident_transitions.with_label_values(&[kind]).inc();
        }
    }

    /// Counts a failed commit.
    pub fn commit_failed(&self) {
        self.commit_failures.inc();
    }

    /// One adapter's outbox figures (copied from its dispatcher at scrape time).
    pub fn set_outbox(&self, adapter: &str, pending: u64, parked: u64, failing: bool) {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.outbox_pending
            .with_label_values(&[adapter])
            .set(n(pending));
        self.outbox_parked
            .with_label_values(&[adapter])
            .set(n(parked));
        self.delivery_failing
            .with_label_values(&[adapter])
            .set(i64::from(failing));
    }
}

// --- Genset load tests and access (the dashboards of issue 5) -------------------------

/// Gauge: genset load tests recorded for a site (`result`: `qualifying`, `not_qualifying`).
pub const GENSET_LOAD_TESTS: &str = "dcguard_genset_load_tests";
/// Gauge: end of the latest recorded load test of a site, per result, Unix seconds.
pub const GENSET_LOAD_TEST_LAST_END_TIMESTAMP_SECONDS: &str =
    "dcguard_genset_load_test_last_end_timestamp_seconds";
/// Gauge: duration of the latest recorded load test of a site, per result.
pub const GENSET_LOAD_TEST_LAST_DURATION_SECONDS: &str =
    "dcguard_genset_load_test_last_duration_seconds";
/// Gauge: time-weighted average load of the latest recorded load test, fraction of the
/// carrying gensets' nameplate kW.
pub const GENSET_LOAD_TEST_LAST_LOAD_RATIO: &str = "dcguard_genset_load_test_last_load_ratio";
/// Gauge: the site's required interval between qualifying load tests
/// (`[site.genset] load_test_interval_months` x 30.4375 days).
pub const GENSET_LOAD_TEST_INTERVAL_SECONDS: &str = "dcguard_genset_load_test_interval_seconds";
/// Gauge: people inside a site whose current room is `room` (counts only, never who).
pub const ACCESS_OCCUPANCY: &str = "dcguard_access_occupancy";
/// Counter: access findings (violations) raised since start, by site and rule.
pub const ACCESS_FINDINGS_TOTAL: &str = "dcguard_access_findings_total";
/// Counter: reader ingestion since start, by outcome (`batch_accepted`, `event_new`,
/// `event_duplicate`, `line_malformed`, `record_skipped`, `unknown_serial`,
/// `persist_failure`, `event_late`: an event whose time was already reconciled,
/// `late_rerun`: a site's recent period reconciled again for them, `finding_withdrawn`: a
/// stored finding the late events explain).
pub const ACCESS_INGEST_TOTAL: &str = "dcguard_access_ingest_total";

/// Average Gregorian month, seconds (365.25 / 12 days).
const MONTH_SECONDS: f64 = 30.4375 * 86_400.0;

/// The metrics of genset load tests and access occupancy and findings, registered in the
/// daemon's registry by [`Metrics::dashboard_metrics`] and copied at scrape time from
/// the store (load tests) and the access ingestion (occupancy, findings).
#[derive(Debug)]
pub struct DashboardMetrics {
    load_tests: IntGaugeVec,
    last_end: GaugeVec,
    last_duration: GaugeVec,
    last_load: GaugeVec,
    occupancy: IntGaugeVec,
    findings: IntCounterVec,
    ingest: IntCounterVec,
    /// Every site id, and the rooms behind a reader per site (occupancy reads 0 there
    /// when nobody is inside).
    sites: Vec<String>,
    reader_rooms: Vec<(String, String)>,
    copy_lock: Mutex<std::collections::BTreeSet<(String, String)>>,
}

/// Load-test result label values.
const QUALIFYING: &str = "qualifying";
const NOT_QUALIFYING: &str = "not_qualifying";

impl Metrics {
    /// Registers the load-test and access metrics (once per registry) and sets each
    /// site's required load-test interval from `config`.
    pub fn dashboard_metrics(&self, config: &Config) -> Result<DashboardMetrics, MetricsError> {
        let r = &self.registry;
        let interval = gauge(
            r,
            GENSET_LOAD_TEST_INTERVAL_SECONDS,
            "Required interval between qualifying genset load tests of a site.",
            &["site"],
        )?;
        let mut reader_rooms = Vec::new();
        for site in &config.sites {
            interval
                .with_label_values(&[site.id.as_str()])
                .set(f64::from(site.genset.load_test_interval_months) * MONTH_SECONDS);
            for reader in &site.access.readers {
                let key = (site.id.clone(), reader.room.clone());
                if !reader_rooms.contains(&key) {
                    reader_rooms.push(key);
                }
            }
        }
        Ok(DashboardMetrics {
            load_tests: int_gauge(
                r,
                GENSET_LOAD_TESTS,
                "Genset load tests (utility off, gensets carrying the load) recorded for a \
                 site, by result (qualifying, not_qualifying).",
                &["site", "result"],
            )?,
            last_end: gauge(
                r,
                GENSET_LOAD_TEST_LAST_END_TIMESTAMP_SECONDS,
                "End of the latest recorded genset load test of a site, by result.",
                &["site", "result"],
            )?,
            last_duration: gauge(
                r,
                GENSET_LOAD_TEST_LAST_DURATION_SECONDS,
                "Duration of the latest recorded genset load test of a site, by result.",
                &["site", "result"],
            )?,
            last_load: gauge(
                r,
                GENSET_LOAD_TEST_LAST_LOAD_RATIO,
                "Time-weighted average load of the latest recorded genset load test of a \
                 site, as a fraction of the carrying gensets' nameplate, by result.",
                &["site", "result"],
            )?,
            occupancy: int_gauge(
                r,
                ACCESS_OCCUPANCY,
                "People inside a site whose current room is this room.",
                &["site", "room"],
            )?,
            findings: counter(
                r,
                ACCESS_FINDINGS_TOTAL,
                "Access findings (violations) raised since start, by site and rule.",
                &["site", "rule"],
            )?,
            ingest: counter(
                r,
                ACCESS_INGEST_TOTAL,
                "Reader event ingestion (ZKTeco push, JSON batches) since start, by outcome.",
                &["outcome"],
            )?,
            sites: config.sites.iter().map(|s| s.id.clone()).collect(),
            reader_rooms,
            copy_lock: Mutex::new(std::collections::BTreeSet::new()),
        })
    }
}

impl DashboardMetrics {
    /// Sets the load-test gauges from every recorded test (any order): the count per site
    /// and result (0 where none), and the latest test's end, duration and average load.
    pub fn set_load_tests(&self, records: &[crate::rules::LoadTestRecord]) {
        use std::collections::HashMap;
        let mut counts: HashMap<(&str, &str), i64> = HashMap::new();
        let mut latest: HashMap<(&str, &str), &crate::rules::LoadTestRecord> = HashMap::new();
        for site in &self.sites {
            for result in [QUALIFYING, NOT_QUALIFYING] {
                counts.insert((site.as_str(), result), 0);
            }
        }
        for rec in records {
            let result = if rec.qualifying {
                QUALIFYING
            } else {
                NOT_QUALIFYING
            };
            let key = (&*rec.site, result);
            *counts.entry(key).or_default() += 1;
            let newer = latest.get(&key).is_none_or(|l| l.ended <= rec.ended);
            if newer {
                latest.insert(key, rec);
            }
        }
        for ((site, result), n) in counts {
            self.load_tests.with_label_values(&[site, result]).set(n);
        }
        for ((site, result), rec) in latest {
            let labels = [site, result];
            let ms = |d: chrono::Duration| d.num_milliseconds() as f64 / 1000.0;
            self.last_end
                .with_label_values(&labels)
                .set(rec.ended.timestamp_millis() as f64 / 1000.0);
            self.last_duration
                .with_label_values(&labels)
                .set(ms(rec.ended - rec.started));
            self.last_load
                .with_label_values(&labels)
                .set(rec.avg_load_pct / 100.0);
        }
    }

    /// Sets the access metrics: `occupancy` as (site, current room, people) (rooms behind
    /// a reader read 0 when empty; rooms emptied since the last call go to 0), and the
    /// findings raised since start per (site, rule) (every rule of a site with readers
    /// starts at 0).
    pub fn set_access(
        &self,
        occupancy: &[(String, String, usize)],
        findings: &std::collections::BTreeMap<(String, String), u64>,
        ingest: &crate::access::ingest::IngestStats,
    ) {
        for (outcome, n) in [
            ("batch_accepted", ingest.batches),
            ("event_new", ingest.events_new),
            ("event_duplicate", ingest.events_duplicate),
            ("line_malformed", ingest.lines_malformed),
            ("record_skipped", ingest.records_skipped),
            ("unknown_serial", ingest.unknown_serial),
            ("persist_failure", ingest.persist_failures),
            ("event_late", ingest.events_late),
            ("late_rerun", ingest.late_reruns),
            ("finding_withdrawn", ingest.findings_withdrawn),
        ] {
            advance(&self.ingest.with_label_values(&[outcome]), n);
        }
        let mut seen = self.copy_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut now: std::collections::BTreeMap<(String, String), usize> = self
            .reader_rooms
            .iter()
            .chain(seen.iter())
            .map(|k| (k.clone(), 0))
            .collect();
        for (site, room, n) in occupancy {
            *now.entry((site.clone(), room.clone())).or_default() += n;
        }
        for ((site, room), n) in &now {
            self.occupancy
                .with_label_values(&[site.as_str(), room.as_str()])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        seen.extend(now.into_keys());
        let mut sites_with_readers: Vec<&str> =
            self.reader_rooms.iter().map(|(s, _)| s.as_str()).collect();
        sites_with_readers.dedup();
        for site in sites_with_readers {
            for rule in crate::access::reconcile::Rule::ALL {
                let _ = self.findings.with_label_values(&[site, rule.as_str()]);
            }
        }
        for ((site, rule), n) in findings {
            if let Ok(c) = self
                .findings
                .get_metric_with_label_values(&[site.as_str(), rule.as_str()])
            {
                advance(&c, *n);
            }
        }
    }
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
    #[test]
    fn facility_facts_come_from_the_shipped_configuration() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let config = crate::config::load(&dir).unwrap();
        let metrics = Metrics::new().unwrap();
        metrics.set_facility(&config);
        metrics.set_facility(&config);
        let text = metrics.render().unwrap();
        for line in [
            "dcguard_limit{kind=\"temperature_max_celsius\",room=\"dh1\",site=\"dc\"} 27",
            "dcguard_limit{kind=\"humidity_min_percent\",room=\"server1\",site=\"smart-dc\"} 30",
            "dcguard_genset_autonomy_required_seconds{site=\"smart-dc\"} 345600",
            "dcguard_genset_autonomy_required_seconds{site=\"drc\"} 43200",
            "dcguard_ups_backup_required_seconds{site=\"dc\"} 600",
            "dcguard_device_info{device=\"A01-b\",feed=\"B\",kind=\"rack_meter\",rack=\"A01\",room=\"dh1\",site=\"dc\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing");
        }
        // 4000 L / 265 L/h at the DC.
        let tank = text
            .lines()
            .find(|l| {
                l.starts_with("dcguard_genset_full_tank_seconds{device=\"gen-1\",site=\"dc\"}")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap();
        assert!((tank - 4000.0 / 265.0 * 3600.0).abs() < 1e-6, "{tank}");
        // Rack limits follow the class: a Smart DC network rack is 2 kW, none is 0.
        let rack_limits: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("dcguard_rack_limit_watts{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        let racks: usize = config.sites.iter().map(|s| s.racks.len()).sum();
        assert_eq!(rack_limits.len(), racks);
        assert!(rack_limits.iter().all(|w| *w >= 2000.0 && *w <= 5000.0));
        assert!(rack_limits.contains(&2000.0) && rack_limits.contains(&3000.0));
    }
}

// --- REST API (issue 7) ---------------------------------------------------------------

/// Counter: API and HTTP requests answered, by method, route (as the access matrix lists
/// it; `unmatched` for no route) and status code.
pub const API_REQUESTS_TOTAL: &str = "dcguard_api_requests_total";
/// Counter: requests refused by authentication or authorization, by reason
/// (`unauthenticated`, `invalid_token`, `forbidden`, `rate_limited`).
pub const API_AUTH_FAILURES_TOTAL: &str = "dcguard_api_auth_failures_total";
/// Counter: API audit records that could not be written to the audit chain.
pub const API_AUDIT_FAILURES_TOTAL: &str = "dcguard_api_audit_failures_total";

/// The API's metrics, registered in the daemon's registry by [`Metrics::api_metrics`].
/// Labels are fixed words and matrix routes only: never a token, a token id or a path a
/// client chose.
#[derive(Debug, Clone)]
pub struct ApiMetrics {
    /// See [`API_REQUESTS_TOTAL`].
    pub requests: IntCounterVec,
    /// See [`API_AUTH_FAILURES_TOTAL`].
    pub auth_failures: IntCounterVec,
    /// See [`API_AUDIT_FAILURES_TOTAL`].
    pub audit_failures: IntCounter,
}

impl Metrics {
    /// Registers the API metrics (once per registry).
    pub fn api_metrics(&self) -> Result<ApiMetrics, MetricsError> {
        let r = &self.registry;
        let audit_failures = IntCounter::new(
            API_AUDIT_FAILURES_TOTAL,
            "API audit records that could not be written to the audit chain.",
        )?;
        r.register(Box::new(audit_failures.clone()))?;
        Ok(ApiMetrics {
            requests: counter(
                r,
                API_REQUESTS_TOTAL,
                "HTTP requests answered, by method, matrix route and status.",
                &["method", "route", "status"],
            )?,
            auth_failures: counter(
                r,
                API_AUTH_FAILURES_TOTAL,
                "Requests refused by authentication or authorization, by reason.",
                &["reason"],
            )?,
            audit_failures,
        })
    }
}
