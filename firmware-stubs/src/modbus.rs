//! Modbus TCP servers of the simulators: one listener per configured endpoint (a device or
//! a gateway), requests routed by unit id, register images encoded from the world's
//! current values on every request.
//!
//! Behaviour, as a real device or gateway would show it:
//!
//! * FC 1/2/3/4 read coils, discrete inputs, holding and input registers. Addresses inside
//!   the device's span of a table (first to last point) but not covered by a point read
//!   as 0, like a block read on a real device.
//! * A read outside the span, or touching a profile `never_read` range: exception 0x02.
//!   A quantity of 0 or above the protocol limit (125 registers, 2000 bits): 0x03.
//! * Unknown unit id on an endpoint: 0x0B (gateway target device failed to respond).
//! * Any other function code, writes included: 0x01 (illegal function).
//! * [`DeviceFault`] from the world: `Silent` never answers (the connection stays open and
//!   later requests are still served), `Exception(c)` answers with `c`, `Delay(d)` answers
//!   after `d`, `Corrupt(kind)` answers with a frame damaged on the wire in that way
//!   (see [`WireCorruption`]). A fault set for a number of requests ends by itself.
//! * When the world's `disconnect_epoch` of the endpoint changes, every connection
//!   accepted under an older epoch is closed (checked on each request and by a watcher).
//!
//! Every function code received is counted per endpoint in a [`FunctionCodeLog`]. The
//! count is taken from the raw bytes on the wire (MBAP framing), before tokio-modbus
//! decodes them, so even frames it rejects are counted.
//!
//! Wire-level fault injection: every connection's bytes pass through [`SimStream`], which
//! owns the TCP stream. Its read side sniffs function codes and ends the stream on
//! disconnect; its write side sees each response ADU as encoded by tokio-modbus and
//! damages the next one when the answer asked for it ([`WireCorruption`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::encode::{self, EncodedData, LayoutError, PointLayout, RegisterKind};
use crate::spec::{DeviceSpec, ProfileSpec, SiteSpec, Transport};
use crate::world::{DeviceFault, SharedWorld, WireCorruption, World};

/// Protocol limits of one read request.
const MAX_REGISTERS_PER_READ: u16 = 125;
const MAX_BITS_PER_READ: u16 = 2000;

/// How often an endpoint looks for a `disconnect_epoch` bump while connections are idle.
const EPOCH_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ModbusError {
    #[error("site {site}: endpoint {endpoint} unit {unit} is used by both {first} and {second}")]
    DuplicateUnit {
        site: String,
        endpoint: SocketAddr,
        unit: u8,
        first: String,
        second: String,
    },
    #[error("profile {profile}: {source}")]
    Layout {
        profile: String,
        source: LayoutError,
    },
}

/// Function codes received, counted per configured endpoint.
#[derive(Debug, Clone, Default)]
pub struct FunctionCodeLog {
    counts: Arc<Mutex<BTreeMap<SocketAddr, BTreeMap<u8, u64>>>>,
}

impl FunctionCodeLog {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<SocketAddr, BTreeMap<u8, u64>>> {
        // A poisoned log still holds valid counts.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, endpoint: SocketAddr, function_code: u8) {
        *self
            .lock()
            .entry(endpoint)
            .or_default()
            .entry(function_code)
            .or_default() += 1;
    }

    /// Counts by function code for one configured endpoint.
    pub fn counts(&self, endpoint: SocketAddr) -> BTreeMap<u8, u64> {
        self.lock().get(&endpoint).cloned().unwrap_or_default()
    }

    /// Counts by endpoint, then function code.
    pub fn snapshot(&self) -> BTreeMap<SocketAddr, BTreeMap<u8, u64>> {
        self.lock().clone()
    }

    /// Every function code received on any endpoint.
    pub fn codes_seen(&self) -> BTreeSet<u8> {
        self.lock()
            .values()
            .flat_map(|codes| codes.keys().copied())
            .collect()
    }
}

/// One point of a profile, placed in its table.
#[derive(Debug)]
struct PlacedPoint {
    /// Index into the profile's `points`.
    index: usize,
    layout: PointLayout,
}

/// A profile's register map, prepared once and shared by every device using it.
#[derive(Debug)]
pub struct RegisterMap {
    points: BTreeMap<RegisterKind, Vec<PlacedPoint>>,
    spans: BTreeMap<RegisterKind, Range<u32>>,
    never_read: Vec<(RegisterKind, Range<u32>)>,
}

impl RegisterMap {
    pub fn new(profile: &ProfileSpec) -> Result<RegisterMap, LayoutError> {
        let mut points: BTreeMap<RegisterKind, Vec<PlacedPoint>> = BTreeMap::new();
        let mut spans: BTreeMap<RegisterKind, Range<u32>> = BTreeMap::new();
        for (index, point) in profile.points.iter().enumerate() {
            let layout = PointLayout::from_spec(point)?;
            let span = layout.span();
            spans
                .entry(layout.kind)
                .and_modify(|s| *s = s.start.min(span.start)..s.end.max(span.end))
                .or_insert(span);
            points
                .entry(layout.kind)
                .or_default()
                .push(PlacedPoint { index, layout });
        }
        let never_read = profile
            .modbus
            .iter()
            .flat_map(|m| &m.never_read)
            .filter_map(|range| {
                let kind = RegisterKind::parse(&range.register)?;
                let start = u32::from(range.start);
                Some((kind, start..start + u32::from(range.count)))
            })
            .collect();
        Ok(RegisterMap {
            points,
            spans,
            never_read,
        })
    }

    /// The registers (or bits) of `kind` a request may read: first to last point.
    pub fn span(&self, kind: RegisterKind) -> Option<Range<u32>> {
        self.spans.get(&kind).cloned()
    }

    /// Whether a read of `range` in `kind` is served (else exception 0x02).
    pub fn readable(&self, kind: RegisterKind, range: &Range<u32>) -> bool {
        let inside = self
            .spans
            .get(&kind)
            .is_some_and(|span| span.start <= range.start && range.end <= span.end);
        let forbidden = self
            .never_read
            .iter()
            .any(|(k, r)| *k == kind && r.start < range.end && range.start < r.end);
        inside && !forbidden
    }
}

/// A device behind an endpoint, with its profile's register map.
#[derive(Debug, Clone)]
pub struct ServedDevice {
    pub spec: DeviceSpec,
    pub map: Arc<RegisterMap>,
}

impl ServedDevice {
    /// Encodes the words `range` of table `kind` from the world's current values.
    fn read_words(&self, world: &World, kind: RegisterKind, range: &Range<u32>) -> Vec<u16> {
        let mut image = vec![0u16; range.len()];
        for (point, data) in self.encoded_points(world, kind, range) {
            data.merge_into_words(&mut image, range.start, point.address);
        }
        image
    }

    /// Encodes the bits `range` of table `kind` from the world's current values.
    fn read_bits(&self, world: &World, kind: RegisterKind, range: &Range<u32>) -> Vec<bool> {
        let mut image = vec![false; range.len()];
        for (point, data) in self.encoded_points(world, kind, range) {
            if let EncodedData::Bool(bit) = data {
                let position = u32::from(point.address).checked_sub(range.start);
                if let Some(slot) = position.and_then(|p| image.get_mut(p as usize)) {
                    *slot = bit;
                }
            }
        }
        image
    }

    fn encoded_points<'a>(
        &'a self,
        world: &'a World,
        kind: RegisterKind,
        range: &'a Range<u32>,
    ) -> impl Iterator<Item = (&'a PointLayout, EncodedData)> + 'a {
        let profile = &self.spec.profile;
        self.map
            .points
            .get(&kind)
            .into_iter()
            .flatten()
            .filter(move |p| {
                let span = p.layout.span();
                span.start < range.end && range.start < span.end
            })
            .filter_map(move |placed| {
                let point = profile.points.get(placed.index)?;
                let value = world.point_value(&self.spec, point)?;
                match encode::encode(&placed.layout, &value) {
                    Ok(encoded) => {
                        if encoded.saturated {
                            tracing::debug!(
                                device = %self.spec.id,
                                point = %point.name,
                                ?value,
                                "value does not fit its register, saturated"
                            );
                        }
                        Some((&placed.layout, encoded.data))
                    }
                    Err(error) => {
                        tracing::debug!(
                            device = %self.spec.id,
                            point = %point.name,
                            %error,
                            "value cannot be encoded, serving 0"
                        );
                        None
                    }
                }
            })
    }
}

/// Everything one listener serves.
#[derive(Debug, Clone)]
pub struct EndpointPlan {
    /// The endpoint as written in the site file (also the key of the function-code log and
    /// of `World::disconnect_epoch`).
    pub configured: SocketAddr,
    pub units: BTreeMap<u8, ServedDevice>,
}

/// Groups a site's Modbus devices by endpoint, one register map per profile.
pub fn plan_site(site: &SiteSpec) -> Result<Vec<EndpointPlan>, ModbusError> {
    let mut maps: HashMap<String, Arc<RegisterMap>> = HashMap::new();
    let mut plans: BTreeMap<SocketAddr, EndpointPlan> = BTreeMap::new();
    for device in &site.devices {
        let Transport::Modbus { endpoint, unit } = device.transport else {
            continue;
        };
        let profile_id = &device.profile.profile.id;
        let map = match maps.get(profile_id) {
            Some(map) => map.clone(),
            None => {
                let map = Arc::new(RegisterMap::new(&device.profile).map_err(|source| {
                    ModbusError::Layout {
                        profile: profile_id.clone(),
                        source,
                    }
                })?);
                maps.insert(profile_id.clone(), map.clone());
                map
            }
        };
        let plan = plans.entry(endpoint).or_insert_with(|| EndpointPlan {
            configured: endpoint,
            units: BTreeMap::new(),
        });
        if let Some(first) = plan.units.get(&unit) {
            return Err(ModbusError::DuplicateUnit {
                site: site.id.clone(),
                endpoint,
                unit,
                first: first.spec.id.clone(),
                second: device.id.clone(),
            });
        }
        plan.units.insert(
            unit,
            ServedDevice {
                spec: device.clone(),
                map,
            },
        );
    }
    Ok(plans.into_values().collect())
}

/// The state one listener shares with its connections.
struct Endpoint {
    plan: EndpointPlan,
    world: SharedWorld,
    log: FunctionCodeLog,
    /// Cancelled when the server stops.
    stop: CancellationToken,
    generation: Mutex<Generation>,
}

/// The connections accepted under one disconnect epoch share one token.
struct Generation {
    epoch: u64,
    token: CancellationToken,
}

fn lock_world(world: &SharedWorld) -> MutexGuard<'_, World> {
    // The world is plain data; a panic elsewhere does not make it unreadable.
    world.lock().unwrap_or_else(|e| e.into_inner())
}

impl Endpoint {
    fn epoch(&self) -> u64 {
        lock_world(&self.world).disconnect_epoch(self.plan.configured)
    }

    /// The current epoch and its token; on an epoch change, closes the older connections.
    fn generation(&self) -> (u64, CancellationToken) {
        let epoch = self.epoch();
        let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        if generation.epoch != epoch {
            tracing::debug!(endpoint = %self.plan.configured, epoch, "dropping connections");
            generation.token.cancel();
            *generation = Generation {
                epoch,
                token: self.stop.child_token(),
            };
        }
        (generation.epoch, generation.token.clone())
    }

    async fn answer(
        self: Arc<Self>,
        request: SlaveRequest<'static>,
        accepted_epoch: u64,
        connection: CancellationToken,
        corrupt_next: PendingCorruption,
    ) -> Result<Option<Response>, ExceptionCode> {
        if self.epoch() != accepted_epoch {
            self.generation();
            connection.cancel();
            return Ok(None);
        }
        let Some(device) = self.plan.units.get(&request.slave) else {
            return Err(ExceptionCode::GatewayTargetDevice);
        };
        let fault = lock_world(&self.world).take_wire_fault(&device.spec.id);
        match fault {
            DeviceFault::None => {}
            DeviceFault::Corrupt(kind) => {
                // The server writes this answer next on this connection (it answers one
                // request at a time), so the stream damages exactly this frame.
                *corrupt_next.lock().unwrap_or_else(|e| e.into_inner()) = Some(kind);
            }
            DeviceFault::Silent => return Ok(None),
            DeviceFault::Exception(code) => return Err(ExceptionCode::new(code)),
            DeviceFault::Delay(delay) => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = connection.cancelled() => return Ok(None),
                }
            }
        }
        let (kind, address, quantity) = match request.request {
            Request::ReadCoils(a, n) => (RegisterKind::Coil, a, n),
            Request::ReadDiscreteInputs(a, n) => (RegisterKind::Discrete, a, n),
            Request::ReadHoldingRegisters(a, n) => (RegisterKind::Holding, a, n),
            Request::ReadInputRegisters(a, n) => (RegisterKind::Input, a, n),
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        let limit = if kind.is_bit_table() {
            MAX_BITS_PER_READ
        } else {
            MAX_REGISTERS_PER_READ
        };
        if quantity == 0 || quantity > limit {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let range = u32::from(address)..u32::from(address) + u32::from(quantity);
        if !device.map.readable(kind, &range) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let world = lock_world(&self.world);
        let response = match kind {
            RegisterKind::Coil => Response::ReadCoils(device.read_bits(&world, kind, &range)),
            RegisterKind::Discrete => {
                Response::ReadDiscreteInputs(device.read_bits(&world, kind, &range))
            }
            RegisterKind::Holding => {
                Response::ReadHoldingRegisters(device.read_words(&world, kind, &range))
            }
            RegisterKind::Input => {
                Response::ReadInputRegisters(device.read_words(&world, kind, &range))
            }
        };
        Ok(Some(response))
    }
}

/// The tokio-modbus service of one connection.
struct ConnectionService {
    endpoint: Arc<Endpoint>,
    accepted_epoch: u64,
    connection: CancellationToken,
    corrupt_next: PendingCorruption,
}

/// The damage to apply to the next response frame written on a connection.
type PendingCorruption = Arc<Mutex<Option<WireCorruption>>>;

type Answer = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

impl tokio_modbus::server::Service for ConnectionService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Answer;

    fn call(&self, request: Self::Request) -> Self::Future {
        Box::pin(self.endpoint.clone().answer(
            request,
            self.accepted_epoch,
            self.connection.clone(),
            self.corrupt_next.clone(),
        ))
    }
}

/// A running endpoint server.
pub struct EndpointServer {
    pub configured: SocketAddr,
    pub local: SocketAddr,
    task: JoinHandle<()>,
}

impl EndpointServer {
    /// Waits for the server task to end (after its `stop` token is cancelled).
    pub async fn join(self) {
        if let Err(error) = self.task.await {
            tracing::warn!(endpoint = %self.configured, %error, "endpoint server task failed");
        }
    }
}

/// Serves `plan` on `listener` until `stop` is cancelled.
pub fn spawn_endpoint(
    listener: TcpListener,
    plan: EndpointPlan,
    world: SharedWorld,
    log: FunctionCodeLog,
    stop: CancellationToken,
) -> io::Result<EndpointServer> {
    let local = listener.local_addr()?;
    let configured = plan.configured;
    let initial_epoch = lock_world(&world).disconnect_epoch(configured);
    let endpoint = Arc::new(Endpoint {
        plan,
        world,
        log,
        generation: Mutex::new(Generation {
            epoch: initial_epoch,
            token: stop.child_token(),
        }),
        stop: stop.clone(),
    });
    let task = tokio::spawn(async move {
        let server = Server::new(listener);
        let on_connected = |stream: TcpStream, peer: SocketAddr| {
            let endpoint = endpoint.clone();
            async move {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
                }
                let (accepted_epoch, generation) = endpoint.generation();
                let connection = generation.child_token();
                let corrupt_next = PendingCorruption::default();
                let stream = SimStream::new(
                    stream,
                    connection.clone(),
                    endpoint.log.clone(),
                    endpoint.plan.configured,
                    corrupt_next.clone(),
                );
                let service = ConnectionService {
                    endpoint,
                    accepted_epoch,
                    connection,
                    corrupt_next,
                };
                Ok(Some((service, stream)))
            }
        };
        let on_process_error = move |error: io::Error| {
            tracing::debug!(endpoint = %configured, %error, "connection ended with an error");
        };
        let watcher = endpoint.clone();
        let watch = async move {
            let mut tick = tokio::time::interval(EPOCH_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                watcher.generation();
            }
        };
        tokio::select! {
            result = server.serve(&on_connected, on_process_error) => {
                if let Err(error) = result {
                    tracing::warn!(endpoint = %configured, %error, "listener failed");
                }
            }
            () = watch => {}
            () = stop.cancelled() => {}
        }
    });
    Ok(EndpointServer {
        configured,
        local,
        task,
    })
}

/// A connection's byte stream: counts function codes on the way in, ends on disconnect.
pub struct SimStream {
    inner: TcpStream,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    is_closed: bool,
    sniffer: FunctionCodeSniffer,
    corrupt_next: PendingCorruption,
}

impl SimStream {
    fn new(
        inner: TcpStream,
        close: CancellationToken,
        log: FunctionCodeLog,
        endpoint: SocketAddr,
        corrupt_next: PendingCorruption,
    ) -> SimStream {
        SimStream {
            inner,
            closed: Box::pin(close.cancelled_owned()),
            is_closed: false,
            sniffer: FunctionCodeSniffer::new(log, endpoint),
            corrupt_next,
        }
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.is_closed && self.closed.as_mut().poll(cx).is_ready() {
            self.is_closed = true;
        }
        self.is_closed
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.poll_closed(cx) {
            // End of stream: tokio-modbus stops serving and drops (closes) the socket.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.sniffer.feed(&buf.filled()[before..]);
        }
        result
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.poll_closed(cx) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // `buf` holds whole response ADUs as tokio-modbus encoded them; a pending
        // corruption damages the next one (header and first PDU bytes, length kept).
        let kind = *this.corrupt_next.lock().unwrap_or_else(|e| e.into_inner());
        match kind {
            Some(kind) if buf.len() >= 9 => {
                let mut damaged = buf.to_vec();
                corrupt_frame(&mut damaged, kind);
                let result = Pin::new(&mut this.inner).poll_write(cx, &damaged);
                if let Poll::Ready(Ok(n)) = result
                    && n >= 9
                {
                    *this.corrupt_next.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                result
            }
            _ => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Damages one response ADU in place (`frame.len() >= 9`: MBAP header, function code and
/// the first PDU byte). The length of the frame never changes.
fn corrupt_frame(frame: &mut [u8], kind: WireCorruption) {
    if frame.len() < 9 {
        return;
    }
    match kind {
        WireCorruption::TransactionId => {
            frame[0] ^= 0x5A;
            frame[1] ^= 0xA5;
        }
        WireCorruption::Unit => frame[6] = frame[6].wrapping_add(1),
        WireCorruption::FunctionCode => {
            frame[7] = match frame[7] & 0x7F {
                1 => 2,
                2 => 1,
                3 => 4,
                4 => 3,
                _ => 0x2B,
            }
        }
        WireCorruption::ProtocolId => frame[3] = 1,
        WireCorruption::ByteCount => frame[8] = frame[8].wrapping_add(2),
        WireCorruption::Length => {
            frame[4] = 0x01;
            frame[5] = 0x20;
        }
    }
}

/// Follows MBAP framing on the raw request bytes and records each frame's function code.
#[derive(Debug)]
struct FunctionCodeSniffer {
    log: FunctionCodeLog,
    endpoint: SocketAddr,
    /// Transaction id (2), protocol id (2), length (2), unit (1), function code (1).
    head: [u8; 8],
    have: usize,
    /// Bytes of the current frame still to skip after its head.
    skip: usize,
    /// The framing is lost (length field too small); the codec closes such connections.
    lost: bool,
}

impl FunctionCodeSniffer {
    fn new(log: FunctionCodeLog, endpoint: SocketAddr) -> FunctionCodeSniffer {
        FunctionCodeSniffer {
            log,
            endpoint,
            head: [0; 8],
            have: 0,
            skip: 0,
            lost: false,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.lost {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (self.head.len() - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == self.head.len() {
                self.have = 0;
                // length counts the unit id and the PDU (function code + data).
                let length = usize::from(u16::from_be_bytes([self.head[4], self.head[5]]));
                if length < 2 {
                    self.lost = true;
                    return;
                }
                self.log.record(self.endpoint, self.head[7]);
                self.skip = length - 2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffer_counts_function_codes_across_split_frames() {
        let log = FunctionCodeLog::default();
        let endpoint: SocketAddr = "127.0.0.1:15001".parse().unwrap();
        let mut sniffer = FunctionCodeSniffer::new(log.clone(), endpoint);
        // FC 3 read 2 registers at 0, unit 1; then FC 16 write 1 register, unit 2.
        let read = [0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 2];
        let write = [0, 2, 0, 0, 0, 9, 2, 0x10, 0, 5, 0, 1, 2, 0xAB, 0xCD];
        let mut stream = read.to_vec();
        stream.extend_from_slice(&write);
        stream.extend_from_slice(&read);
        for chunk in stream.chunks(5) {
            sniffer.feed(chunk);
        }
        assert_eq!(log.counts(endpoint), BTreeMap::from([(3, 2), (0x10, 1)]));
        assert_eq!(log.codes_seen(), BTreeSet::from([3, 0x10]));
    }

    #[test]
    fn corruption_damages_one_field_and_keeps_the_length() {
        // FC 3 response, tid 0x0001, unit 1, two bytes of data.
        let frame = [0, 1, 0, 0, 0, 5, 1, 3, 2, 0xAB, 0xCD];
        let damaged = |kind| {
            let mut f = frame;
            corrupt_frame(&mut f, kind);
            f
        };
        assert_ne!(damaged(WireCorruption::TransactionId)[..2], frame[..2]);
        assert_eq!(damaged(WireCorruption::Unit)[6], 2);
        assert_eq!(damaged(WireCorruption::FunctionCode)[7], 4);
        assert_eq!(damaged(WireCorruption::ProtocolId)[2..4], [0, 1]);
        assert_eq!(damaged(WireCorruption::ByteCount)[8], 4);
        assert_eq!(damaged(WireCorruption::Length)[4..6], [0x01, 0x20]);
        for kind in [WireCorruption::Unit, WireCorruption::ByteCount] {
            let f = damaged(kind);
            let changed = f.iter().zip(frame).filter(|(a, b)| **a != *b).count();
            assert_eq!(changed, 1, "{kind:?}");
        }
    }

    #[test]
    fn sniffer_stops_on_lost_framing() {
        let log = FunctionCodeLog::default();
        let endpoint: SocketAddr = "127.0.0.1:15001".parse().unwrap();
        let mut sniffer = FunctionCodeSniffer::new(log.clone(), endpoint);
        sniffer.feed(&[0, 1, 0, 0, 0, 1, 1, 3, 0, 0, 0, 6, 1, 3]);
        assert!(log.counts(endpoint).is_empty());
    }
}
