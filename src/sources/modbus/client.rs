//! The read-only Modbus TCP client: the only way the poller touches a device (function codes 1-4).
//!
//! [`ReadOnlyClient`] owns at most one TCP connection to one endpoint (a device or a
//! gateway) and exposes exactly four reads: coils (1), discrete inputs (2), holding
//! registers (3), input registers (4). There is no method that could send anything else:
//! a request's function code comes from a [`RegisterKind`], which has only those four
//! tables. This is invariant 1 of DESIGN.md by construction.
//!
//! **One request at a time, a connection is never trusted after a fault.** Each read
//! sends one request and waits for its one response within the request timeout. On a
//! timeout, an IO error, a response whose transaction id, unit id or function code is
//! not the request's, or a malformed frame, the connection is dropped and the next read
//! opens a new one. A late reply therefore arrives on a closed socket and can never be
//! taken as the answer to a later request (tokio-modbus issue 324). Exceptions are
//! well-formed answers and keep the connection.
//!
//! **Why our own framing rather than a tokio-modbus client context.** tokio-modbus 0.17
//! checks transaction id, unit and function code, but its `Reader` methods
//! `debug_assert!` that a response holds exactly the quantity asked for, so a device
//! answering with a wrong register count panics a debug build (tests) and passes a short
//! or long vector through in release; it also accepts MBAP frames of any length up to
//! 65535 bytes. Reading FC 1-4 is ~100 lines of MBAP, and owning them gives: the 260-byte
//! ADU limit, an exact byte-count check (a wrong count is a typed error, never a value),
//! mismatch counts by kind, and no write path at all in the daemon's dependency graph.
//! tokio-modbus stays the stubs' server and the benchmarks' reference client.
//!
//! **Half-open connections** are found by TCP keepalive on every socket (idle 5 s,
//! probes every 2 s, 3 probes) and, on Linux, `TCP_USER_TIMEOUT` for unacknowledged
//! data; the request timeout covers a peer that stops answering while the link is up.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::config::model::RegisterKind;
use crate::sources::modbus::plan::{PROTOCOL_MAX_BITS, PROTOCOL_MAX_REGISTERS};

/// The MBAP header: transaction id (2), protocol id (2), length (2), unit id (1).
const MBAP_LEN: usize = 7;
/// A Modbus TCP ADU is at most 260 bytes: the length field (unit id + PDU) at most 254.
const MAX_LENGTH_FIELD: usize = 254;
/// The shortest response: unit id, function code, one byte (exception code or count).
const MIN_LENGTH_FIELD: usize = 3;

/// Connection and timing settings of a client.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientOptions {
    /// Longest wait for one response (request sent to response read).
    pub request_timeout: Duration,
    /// Longest wait for a TCP connection.
    pub connect_timeout: Duration,
    /// Idle time before the first keepalive probe.
    pub keepalive_idle: Duration,
    /// Time between keepalive probes.
    pub keepalive_interval: Duration,
    /// Unanswered probes before the kernel declares the connection dead.
    pub keepalive_retries: u32,
    /// `TCP_USER_TIMEOUT` (Linux): unacknowledged data older than this kills the
    /// connection. `None` leaves the system default.
    pub user_timeout: Option<Duration>,
}

impl Default for ClientOptions {
    /// 1 s per request, 3 s per connect, keepalive 5 s + 3 x 2 s, user timeout 10 s.
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(3),
            keepalive_idle: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(2),
            keepalive_retries: 3,
            user_timeout: Some(Duration::from_secs(10)),
        }
    }
}

/// Which header field of a response did not match its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MismatchKind {
    /// Transaction id: a stray, duplicated or late reply.
    TransactionId,
    /// Unit id.
    Unit,
    /// Function code (neither the request's nor its exception form).
    FunctionCode,
}

/// Why a read gave no data. The poller branches on it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No complete response within the request timeout; the connection was dropped.
    #[error("no response within the request timeout")]
    Timeout,
    /// The device answered with a Modbus exception; the connection is kept.
    #[error("Modbus exception 0x{0:02X}")]
    Exception(u8),
    /// The response belongs to another request; the connection was dropped.
    #[error("response does not match the request ({kind:?}: expected {expected}, got {got})")]
    Mismatch {
        /// Which field.
        kind: MismatchKind,
        /// The request's value.
        expected: u16,
        /// The response's value.
        got: u16,
    },
    /// The response frame breaks the protocol (length, protocol id, byte count); the
    /// connection was dropped.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// Reading or writing the connection failed (reset, closed); it was dropped.
    #[error("connection failed: {0}")]
    Io(#[source] io::Error),
    /// No connection could be opened.
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),
    /// The request itself is outside the protocol (count 0 or above 125 registers /
    /// 2000 bits, or past address 65535); nothing was sent. A planner bug, not a device's.
    #[error("request outside the protocol limits; not sent")]
    InvalidRequest,
}

impl ClientError {
    /// True when the connection was dropped because of this error.
    pub fn dropped_connection(&self) -> bool {
        !matches!(
            self,
            ClientError::Exception(_) | ClientError::InvalidRequest | ClientError::Connect(_)
        )
    }
}

/// Connection counters of one client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCounters {
    /// Connections opened.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Connections dropped after a fault (timeout, IO, mismatch, malformed).
    pub drops: u64,
    /// Requests sent.
    pub requests: u64,
}

/// The data of one successful read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadData {
    /// Holding or input registers.
    Words(Vec<u16>),
    /// Coils or discrete inputs.
    Bits(Vec<bool>),
}

/// A read-only Modbus TCP client of one endpoint. See the module doc.
#[derive(Debug)]
pub struct ReadOnlyClient {
    endpoint: SocketAddr,
    options: ClientOptions,
    connection: Option<BufReader<TcpStream>>,
    next_transaction: u16,
    counters: ClientCounters,
    /// The request timer, made on the first read and re-armed lazily (see [`Self::read`]).
    timer: Option<Pin<Box<Sleep>>>,
}

impl ReadOnlyClient {
    /// A client of `endpoint`; it connects on the first read.
    pub fn new(endpoint: SocketAddr, options: ClientOptions) -> Self {
        ReadOnlyClient {
            endpoint,
            options,
            connection: None,
            next_transaction: 0,
            counters: ClientCounters::default(),
            timer: None,
        }
    }

    /// The endpoint dialled.
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// True while a connection is open.
    pub fn is_connected(&self) -> bool {
        self.connection.is_some()
    }

    /// Connection counters so far.
    pub fn counters(&self) -> ClientCounters {
        self.counters
    }

    /// Opens the connection now if none is open.
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        if self.connection.is_some() {
            return Ok(());
        }
        match self.open().await {
            Ok(stream) => {
                self.counters.connects += 1;
                self.connection = Some(BufReader::with_capacity(512, stream));
                Ok(())
            }
            Err(error) => {
                self.counters.connect_failures += 1;
                Err(ClientError::Connect(error))
            }
        }
    }

    /// Closes the connection (e.g. after a scan, for devices with few sockets).
    pub fn disconnect(&mut self) {
        self.connection = None;
    }

    /// Function code 1.
    pub async fn read_coils(
        &mut self,
        unit: u8,
        start: u16,
        count: u16,
    ) -> Result<Vec<bool>, ClientError> {
        match self.read(unit, RegisterKind::Coil, start, count).await? {
            ReadData::Bits(bits) => Ok(bits),
            ReadData::Words(_) => Err(ClientError::Malformed("words for a bit read")),
        }
    }

    /// Function code 2.
    pub async fn read_discrete_inputs(
        &mut self,
        unit: u8,
        start: u16,
        count: u16,
    ) -> Result<Vec<bool>, ClientError> {
        match self
            .read(unit, RegisterKind::Discrete, start, count)
            .await?
        {
            ReadData::Bits(bits) => Ok(bits),
            ReadData::Words(_) => Err(ClientError::Malformed("words for a bit read")),
        }
    }

    /// Function code 3.
    pub async fn read_holding_registers(
        &mut self,
        unit: u8,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, ClientError> {
        match self.read(unit, RegisterKind::Holding, start, count).await? {
            ReadData::Words(words) => Ok(words),
            ReadData::Bits(_) => Err(ClientError::Malformed("bits for a register read")),
        }
    }

    /// Function code 4.
    pub async fn read_input_registers(
        &mut self,
        unit: u8,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, ClientError> {
        match self.read(unit, RegisterKind::Input, start, count).await? {
            ReadData::Words(words) => Ok(words),
            ReadData::Bits(_) => Err(ClientError::Malformed("bits for a register read")),
        }
    }

    /// Reads `count` registers or bits of `table` from `start` on `unit`: function code
    /// 1, 2, 3 or 4 by the table, nothing else. Connects first when needed. Waits at most
    /// the options' request timeout for the response.
    pub async fn read(
        &mut self,
        unit: u8,
        table: RegisterKind,
        start: u16,
        count: u16,
    ) -> Result<ReadData, ClientError> {
        let timeout = self.options.request_timeout;
        self.read_within(unit, table, start, count, timeout).await
    }

    /// [`Self::read`] with its own request timeout (a slow unit behind a gateway).
    ///
    /// The timeout costs no timer operation per request: one timer per client is re-armed
    /// only when it fires before the current request's deadline (so at most about once
    /// per timeout period while requests keep coming), or moved earlier when a request
    /// has a shorter timeout than the timer's deadline.
    pub async fn read_within(
        &mut self,
        unit: u8,
        table: RegisterKind,
        start: u16,
        count: u16,
        timeout: Duration,
    ) -> Result<ReadData, ClientError> {
        let limit = if table.is_bit_table() {
            PROTOCOL_MAX_BITS
        } else {
            PROTOCOL_MAX_REGISTERS
        };
        if count == 0 || count > limit || u32::from(start) + u32::from(count) > 65536 {
            return Err(ClientError::InvalidRequest);
        }
        self.connect().await?;
        let transaction = self.next_transaction;
        self.next_transaction = self.next_transaction.wrapping_add(1);
        let request = Request {
            transaction,
            unit,
            table,
            start,
            count,
        };
        self.counters.requests += 1;
        let deadline = Instant::now() + timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        let Some(connection) = self.connection.as_mut() else {
            // `connect` just succeeded; kept total anyway.
            return Err(ClientError::Io(io::ErrorKind::NotConnected.into()));
        };
        let outcome = {
            let exchange = exchange(connection, &request);
            tokio::pin!(exchange);
            std::future::poll_fn(|cx| {
                if let Poll::Ready(result) = exchange.as_mut().poll(cx) {
                    return Poll::Ready(result);
                }
                // The timer fires at its deadline, which may be an earlier request's: then
                // it is re-armed for this one. Ends as `Pending` with the timer registered.
                while timer.as_mut().poll(cx).is_ready() {
                    if Instant::now() >= deadline {
                        return Poll::Ready(Err(ClientError::Timeout));
                    }
                    timer.as_mut().reset(deadline);
                }
                Poll::Pending
            })
            .await
        };
        if let Err(error) = &outcome
            && error.dropped_connection()
        {
            self.connection = None;
            self.counters.drops += 1;
        }
        outcome
    }

    async fn open(&self) -> io::Result<TcpStream> {
        let stream = match tokio::time::timeout(
            self.options.connect_timeout,
            TcpStream::connect(self.endpoint),
        )
        .await
        {
            Ok(result) => result?,
            Err(_elapsed) => return Err(io::ErrorKind::TimedOut.into()),
        };
        stream.set_nodelay(true)?;
        let socket = SockRef::from(&stream);
        let keepalive = TcpKeepalive::new()
            .with_time(self.options.keepalive_idle)
            .with_interval(self.options.keepalive_interval)
            .with_retries(self.options.keepalive_retries);
        socket.set_tcp_keepalive(&keepalive)?;
        #[cfg(target_os = "linux")]
        socket.set_tcp_user_timeout(self.options.user_timeout)?;
        Ok(stream)
    }
}

/// One read request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// MBAP transaction id.
    pub transaction: u16,
    /// Unit id.
    pub unit: u8,
    /// Table, hence function code.
    pub table: RegisterKind,
    /// First address.
    pub start: u16,
    /// Registers or bits.
    pub count: u16,
}

impl Request {
    /// 1 coils, 2 discrete inputs, 3 holding, 4 input registers: the only codes there are.
    pub fn function_code(&self) -> u8 {
        match self.table {
            RegisterKind::Coil => 1,
            RegisterKind::Discrete => 2,
            RegisterKind::Holding => 3,
            RegisterKind::Input => 4,
        }
    }

    /// The request ADU: MBAP header, function code, start, count.
    pub fn encode(&self) -> [u8; 12] {
        let [t0, t1] = self.transaction.to_be_bytes();
        let [s0, s1] = self.start.to_be_bytes();
        let [c0, c1] = self.count.to_be_bytes();
        [
            t0,
            t1,
            0,
            0,
            0,
            6,
            self.unit,
            self.function_code(),
            s0,
            s1,
            c0,
            c1,
        ]
    }

    /// Bytes of data a correct response carries.
    fn data_bytes(&self) -> usize {
        if self.table.is_bit_table() {
            usize::from(self.count).div_ceil(8)
        } else {
            usize::from(self.count) * 2
        }
    }
}

/// Sends one request and reads its one response.
async fn exchange(
    connection: &mut BufReader<TcpStream>,
    request: &Request,
) -> Result<ReadData, ClientError> {
    connection
        .get_mut()
        .write_all(&request.encode())
        .await
        .map_err(ClientError::Io)?;
    let mut header = [0u8; MBAP_LEN];
    connection
        .read_exact(&mut header)
        .await
        .map_err(ClientError::Io)?;
    let length = check_header(&header)?;
    let mut body = [0u8; MAX_LENGTH_FIELD];
    let body = &mut body[..length - 1];
    connection.read_exact(body).await.map_err(ClientError::Io)?;
    parse_response(request, &header, body)
}

/// Checks the MBAP header of a response; returns its length field (unit id + PDU).
fn check_header(header: &[u8; MBAP_LEN]) -> Result<usize, ClientError> {
    if header[2] != 0 || header[3] != 0 {
        return Err(ClientError::Malformed("protocol id is not 0"));
    }
    let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
    if length > MAX_LENGTH_FIELD {
        return Err(ClientError::Malformed("frame longer than 260 bytes"));
    }
    if length < MIN_LENGTH_FIELD {
        return Err(ClientError::Malformed("frame too short"));
    }
    Ok(length)
}

/// Checks a whole response (its MBAP header and its PDU, function code first) against
/// its request and extracts the data. Total: any bytes give a `Result`.
pub fn parse_response(
    request: &Request,
    header: &[u8; MBAP_LEN],
    pdu: &[u8],
) -> Result<ReadData, ClientError> {
    let length = check_header(header)?;
    if pdu.len() + 1 != length {
        return Err(ClientError::Malformed(
            "length field disagrees with the frame",
        ));
    }
    let transaction = u16::from_be_bytes([header[0], header[1]]);
    if transaction != request.transaction {
        return Err(ClientError::Mismatch {
            kind: MismatchKind::TransactionId,
            expected: request.transaction,
            got: transaction,
        });
    }
    if header[6] != request.unit {
        return Err(ClientError::Mismatch {
            kind: MismatchKind::Unit,
            expected: u16::from(request.unit),
            got: u16::from(header[6]),
        });
    }
    let fc = request.function_code();
    let (&code, rest) = pdu
        .split_first()
        .ok_or(ClientError::Malformed("empty PDU"))?;
    if code == fc | 0x80 {
        return match rest {
            [exception] => Err(ClientError::Exception(*exception)),
            _ => Err(ClientError::Malformed(
                "exception response of the wrong size",
            )),
        };
    }
    if code != fc {
        return Err(ClientError::Mismatch {
            kind: MismatchKind::FunctionCode,
            expected: u16::from(fc),
            got: u16::from(code),
        });
    }
    let (&byte_count, data) = rest
        .split_first()
        .ok_or(ClientError::Malformed("no byte count"))?;
    if usize::from(byte_count) != data.len() {
        return Err(ClientError::Malformed(
            "byte count disagrees with the frame",
        ));
    }
    if data.len() != request.data_bytes() {
        return Err(ClientError::Malformed(
            "byte count is not the quantity requested",
        ));
    }
    if request.table.is_bit_table() {
        let bits = (0..usize::from(request.count))
            .map(|i| data.get(i / 8).is_some_and(|b| (b >> (i % 8)) & 1 == 1))
            .collect();
        Ok(ReadData::Bits(bits))
    } else {
        let words = data
            .chunks_exact(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
            .collect();
        Ok(ReadData::Words(words))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(count: u16) -> Request {
        Request {
            transaction: 0x0102,
            unit: 7,
            table: RegisterKind::Holding,
            start: 100,
            count,
        }
    }

    fn header(transaction: u16, length: u16, unit: u8) -> [u8; 7] {
        let [t0, t1] = transaction.to_be_bytes();
        let [l0, l1] = length.to_be_bytes();
        [t0, t1, 0, 0, l0, l1, unit]
    }

    #[test]
    fn encodes_only_read_function_codes() {
        for (table, fc) in [
            (RegisterKind::Coil, 1),
            (RegisterKind::Discrete, 2),
            (RegisterKind::Holding, 3),
            (RegisterKind::Input, 4),
        ] {
            let request = Request {
                table,
                ..holding(2)
            };
            assert_eq!(
                request.encode(),
                [1, 2, 0, 0, 0, 6, 7, fc, 0, 100, 0, 2],
                "{table:?}"
            );
        }
    }

    #[test]
    fn parses_registers_bits_and_exceptions() {
        let pdu = [3, 4, 0x12, 0x34, 0xAB, 0xCD];
        assert_eq!(
            parse_response(&holding(2), &header(0x0102, 7, 7), &pdu).unwrap(),
            ReadData::Words(vec![0x1234, 0xABCD])
        );
        let coils = Request {
            table: RegisterKind::Coil,
            ..holding(10)
        };
        assert_eq!(
            parse_response(&coils, &header(0x0102, 5, 7), &[1, 2, 0b0000_0101, 0b10]).unwrap(),
            ReadData::Bits(vec![
                true, false, true, false, false, false, false, false, false, true
            ])
        );
        assert!(matches!(
            parse_response(&holding(2), &header(0x0102, 3, 7), &[0x83, 0x02]),
            Err(ClientError::Exception(2))
        ));
    }

    #[test]
    fn rejects_what_does_not_match() {
        let pdu = [3, 4, 0, 1, 0, 2];
        let cases: Vec<(&str, [u8; 7], &[u8])> = vec![
            ("tid", header(0x0103, 7, 7), &pdu),
            ("unit", header(0x0102, 7, 8), &pdu),
            ("fc", header(0x0102, 7, 7), &[4, 4, 0, 1, 0, 2]),
            ("count short", header(0x0102, 5, 7), &[3, 2, 0, 1]),
            (
                "count long",
                header(0x0102, 9, 7),
                &[3, 6, 0, 1, 0, 2, 0, 3],
            ),
            ("byte count", header(0x0102, 7, 7), &[3, 6, 0, 1, 0, 2]),
            ("length", header(0x0102, 8, 7), &pdu),
            ("exception size", header(0x0102, 4, 7), &[0x83, 2, 0]),
        ];
        for (name, header, pdu) in cases {
            let result = parse_response(&holding(2), &header, pdu);
            assert!(
                matches!(
                    result,
                    Err(ClientError::Mismatch { .. } | ClientError::Malformed(_))
                ),
                "{name}: {result:?}"
            );
        }
        let mut bad_protocol = header(0x0102, 7, 7);
        bad_protocol[3] = 1;
        assert!(matches!(
            parse_response(&holding(2), &bad_protocol, &pdu),
            Err(ClientError::Malformed(_))
        ));
        assert!(matches!(
            check_header(&header(1, 255, 7)),
            Err(ClientError::Malformed("frame longer than 260 bytes"))
        ));
    }

    #[tokio::test]
    async fn every_socket_has_keepalive_and_no_delay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options = ClientOptions::default();
        let mut client = ReadOnlyClient::new(listener.local_addr().unwrap(), options.clone());
        client.connect().await.unwrap();
        let stream = client.connection.as_ref().unwrap().get_ref();
        assert!(stream.nodelay().unwrap());
        let socket = SockRef::from(stream);
        assert!(socket.keepalive().unwrap());
        #[cfg(target_os = "linux")]
        {
            assert_eq!(socket.tcp_keepalive_time().unwrap(), options.keepalive_idle);
            assert_eq!(
                socket.tcp_keepalive_interval().unwrap(),
                options.keepalive_interval
            );
            assert_eq!(
                socket.tcp_keepalive_retries().unwrap(),
                options.keepalive_retries
            );
            assert_eq!(socket.tcp_user_timeout().unwrap(), options.user_timeout);
        }
        assert_eq!(client.counters().connects, 1);
        client.disconnect();
        assert!(!client.is_connected());
    }

    proptest::proptest! {
        /// Any bytes give a `Result`, never a panic, and data only from a frame that is
        /// exactly the answer to the request.
        #[test]
        fn arbitrary_frames_never_panic(
            header in proptest::array::uniform7(proptest::num::u8::ANY),
            pdu in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            table in 0u8..4,
            count in 1u16..130,
        ) {
            let table = [
                RegisterKind::Coil,
                RegisterKind::Discrete,
                RegisterKind::Holding,
                RegisterKind::Input,
            ][usize::from(table)];
            let request = Request { table, ..holding(count) };
            if let Ok(data) = parse_response(&request, &header, &pdu) {
                proptest::prop_assert_eq!(u16::from_be_bytes([header[0], header[1]]), 0x0102);
                proptest::prop_assert_eq!(header[6], 7);
                proptest::prop_assert_eq!(pdu.first().copied(), Some(request.function_code()));
                let len = match data {
                    ReadData::Words(w) => w.len(),
                    ReadData::Bits(b) => b.len(),
                };
                proptest::prop_assert_eq!(len, usize::from(count));
            }
        }

        /// Valid responses of every size parse back to their data.
        #[test]
        fn valid_register_responses_round_trip(
            words in proptest::collection::vec(proptest::num::u16::ANY, 1..=125),
        ) {
            let count = words.len() as u16;
            let mut pdu = vec![3, (words.len() * 2) as u8];
            for w in &words {
                pdu.extend_from_slice(&w.to_be_bytes());
            }
            let result = parse_response(&holding(count), &header(0x0102, pdu.len() as u16 + 1, 7), &pdu);
            proptest::prop_assert_eq!(result.unwrap(), ReadData::Words(words));
        }
    }
}
