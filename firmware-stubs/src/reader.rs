//! A ZKTeco-speaking biometric reader stub: a real HTTP client of the PUSH protocol.
//!
//! It behaves like the devices of `reference/access-anchors.md` (b.1): a handshake
//! (`GET /iclock/cdata?SN=..&options=all`), event batches posted to `/iclock/cdata` as
//! `table=ATTLOG` (attendance firmware: positional tab-separated lines) or `table=rtlog`
//! (access firmware: `key=value` pairs with `inoutstatus` and a record `index`), heartbeats
//! (`/iclock/getrequest`, `/iclock/ping`), all in device-local time. Like a real device it
//! keeps a batch until the server acknowledges it with a reply starting `OK`, and re-sends the
//! same bytes after any other reply or a transport error.

use std::time::Duration;

use chrono::NaiveDateTime;

/// Which firmware dialect the stub speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// Attendance firmware: `table=ATTLOG`, positional lines, no direction.
    Attendance,
    /// Access-control firmware (Security PUSH): `table=rtlog`, `key=value` lines.
    Access,
}

impl Firmware {
    /// The `table` this firmware posts events to.
    pub fn table(self) -> &'static str {
        match self {
            Self::Attendance => "ATTLOG",
            Self::Access => "rtlog",
        }
    }

    fn device_type(self) -> &'static str {
        match self {
            Self::Attendance => "att",
            Self::Access => "acc",
        }
    }
}

/// One badge event as the device records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubEvent {
    /// User PIN ("0": a device event without a user).
    pub pin: String,
    /// Device-local time.
    pub local_time: NaiveDateTime,
    /// rtlog `event` code (0 normal verify open, 20-99 denied, 100-199 alarms); ATTLOG
    /// carries granted passages only and ignores it.
    pub code: u32,
    /// rtlog `inoutstatus` (0 in, 1 out); ATTLOG has no direction.
    pub in_out: Option<u8>,
}

impl StubEvent {
    /// A granted passage.
    pub fn granted(pin: &str, local_time: NaiveDateTime) -> Self {
        Self {
            pin: pin.to_owned(),
            local_time,
            code: 0,
            in_out: None,
        }
    }
}

/// Why a request did not end with an acknowledgement.
#[derive(Debug, thiserror::Error)]
pub enum StubError {
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("server replied {status}: {body:?}")]
    NotOk { status: u16, body: String },
    #[error("gave up after {attempts} attempts; last: {last}")]
    GaveUp { attempts: u32, last: String },
}

/// The reader stub.
#[derive(Debug, Clone)]
pub struct ReaderStub {
    client: reqwest::Client,
    base: String,
    serial: String,
    firmware: Firmware,
    retry_delay: Duration,
    next_index: u64,
}

const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

impl ReaderStub {
    /// A reader `serial` pushing to the server at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base_url: &str, serial: &str, firmware: Firmware) -> Result<Self, StubError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(Self {
            client,
            base: base_url.trim_end_matches('/').to_owned(),
            serial: serial.to_owned(),
            firmware,
            retry_delay: Duration::from_millis(500),
            next_index: 1,
        })
    }

    /// The pause between re-sends (default 500 ms; real devices use `ErrorDelay`).
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// The device serial.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    fn url(&self, path: &str, query: &str) -> String {
        format!("{}/iclock/{path}?SN={}{query}", self.base, self.serial)
    }

    async fn expect_ok(response: reqwest::Response) -> Result<String, StubError> {
        let status = response.status().as_u16();
        let body = response.text().await?;
        if status == 200 && body.starts_with("OK") {
            Ok(body)
        } else {
            Err(StubError::NotOk { status, body })
        }
    }

    /// The handshake; returns the server's option text (must name the serial).
    pub async fn handshake(&self) -> Result<String, StubError> {
        let query = format!(
            "&options=all&pushver=2.4.1&DeviceType={}&language=69",
            self.firmware.device_type()
        );
        let response = self.client.get(self.url("cdata", &query)).send().await?;
        let status = response.status().as_u16();
        let body = response.text().await?;
        if status == 200 && body.contains(&self.serial) {
            Ok(body)
        } else {
            Err(StubError::NotOk { status, body })
        }
    }

    /// A heartbeat: `getrequest` (command poll) then `ping`; both must answer `OK`.
    pub async fn heartbeat(&self) -> Result<(), StubError> {
        let info = "&INFO=Ver%208.0.4,10,0,100,127.0.0.1";
        Self::expect_ok(self.client.get(self.url("getrequest", info)).send().await?).await?;
        Self::expect_ok(self.client.get(self.url("ping", "")).send().await?).await?;
        Ok(())
    }

    /// The body of a batch in this firmware's dialect (rtlog lines get the next record
    /// indexes). Encode once and re-send the same bytes, as a device does.
    pub fn encode(&mut self, events: &[StubEvent]) -> String {
        let mut body = String::new();
        for e in events {
            let time = e.local_time.format(TIME_FORMAT);
            match self.firmware {
                Firmware::Attendance => {
                    body.push_str(&format!("{}\t{time}\t0\t1\t0\t0\t0\n", e.pin));
                }
                Firmware::Access => {
                    let in_out = e.in_out.map_or(2, u32::from);
                    body.push_str(&format!(
                        "time={time}\tpin={}\tcardno=0\teventaddr=1\tevent={}\tinoutstatus={in_out}\tverifytype=1\tindex={}\n",
                        e.pin, e.code, self.next_index
                    ));
                    self.next_index += 1;
                }
            }
        }
        body
    }

    /// One POST of `body` to `table`; `Ok(reply)` only for a 200 reply starting `OK`.
    pub async fn post_once(&self, table: &str, body: &str) -> Result<String, StubError> {
        let query = format!("&table={table}&Stamp=9999");
        let response = self
            .client
            .post(self.url("cdata", &query))
            .header("Content-Type", "text/plain")
            .body(body.to_owned())
            .send()
            .await?;
        Self::expect_ok(response).await
    }

    /// Posts `body` to `table` until acknowledged, at most `max_attempts` times, pausing
    /// `retry_delay` between attempts. Returns the reply and the number of attempts.
    pub async fn post_until_ok(
        &self,
        table: &str,
        body: &str,
        max_attempts: u32,
    ) -> Result<(String, u32), StubError> {
        let mut last = String::new();
        for attempt in 1..=max_attempts.max(1) {
            match self.post_once(table, body).await {
                Ok(reply) => return Ok((reply, attempt)),
                Err(error) => last = error.to_string(),
            }
            tokio::time::sleep(self.retry_delay).await;
        }
        Err(StubError::GaveUp {
            attempts: max_attempts.max(1),
            last,
        })
    }

    /// Encodes `events` and pushes them until acknowledged (see [`Self::post_until_ok`]).
    pub async fn push(
        &mut self,
        events: &[StubEvent],
        max_attempts: u32,
    ) -> Result<(String, u32), StubError> {
        let body = self.encode(events);
        self.post_until_ok(self.firmware.table(), &body, max_attempts)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, TIME_FORMAT).unwrap()
    }

    #[test]
    fn both_dialects_encode_device_local_lines() {
        let mut att = ReaderStub::new("http://127.0.0.1:1/", "R1", Firmware::Attendance).unwrap();
        let body = att.encode(&[StubEvent::granted("1001", t("2026-03-02 08:00:05"))]);
        assert_eq!(body, "1001\t2026-03-02 08:00:05\t0\t1\t0\t0\t0\n");

        let mut acc = ReaderStub::new("http://127.0.0.1:1", "R2", Firmware::Access).unwrap();
        let mut e = StubEvent::granted("7", t("2026-03-02 08:00:05"));
        e.in_out = Some(1);
        let body = acc.encode(&[e.clone(), e]);
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("inoutstatus=1\t"), "{}", lines[0]);
        assert!(lines[0].ends_with("index=1") && lines[1].ends_with("index=2"));
        assert_eq!(acc.url("ping", ""), "http://127.0.0.1:1/iclock/ping?SN=R2");
    }
}
