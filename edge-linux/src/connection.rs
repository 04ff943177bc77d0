//! One task per connection: it moves bytes between a transport and the broker actor
//! ([`crate::broker_task`]) and closes the transport gracefully.
//!
//! The driver knows nothing of TCP, TLS or WebSocket: it is generic over a [`Transport`]
//! (bytes in, in order, as they arrive; bytes out; then a graceful close).
//! [`crate::transport`] provides it for plain TCP, for any `AsyncRead + AsyncWrite` stream
//! (TLS) and for WebSocket, and runs the handshakes before handing a connection to
//! [`serve`].
//!
//! The connection is a hand-written future ([`Driver`]) rather than an `async fn`, because
//! it is what every idle connection costs: an `async` reader and writer joined side by side
//! kept every future either might wait on (a channel send, a timer, the admission check,
//! two `Notify` waits) inline in the task, about 2 KB; the driver keeps only what an idle
//! connection needs (about 150 bytes) and boxes the rare waits (the actor's inbox is full,
//! the credentials are checked, the close lingers) for as long as they last. It waits on
//! the socket through the transport's readiness and on the actor through one waker in the
//! connection's [`Room`].
//!
//! Reading and writing both progress in every poll, so reading never waits for writing: a
//! client that sends a lot while the broker answers a lot cannot deadlock against it.
//! - The reader hands each read to the actor. It stops reading while the actor holds this
//!   publisher back (its messages cannot be queued), and waits when the actor's inbox is
//!   full.
//! - The writer writes the output the actor queued, in order. When the actor lets the
//!   connection go, the writer writes the last words (a CONNACK refusal, a DISCONNECT),
//!   closes its side (FIN; TLS close_notify; a WebSocket Close frame) and the reader
//!   reads and discards until the peer closes too, for at most [`LINGER`]. Closing a
//!   socket with unread input would make the kernel send RST, and the peer could lose
//!   those last words.
//!
//! A plain TCP connection's driver that stays fully idle for `runtime.park_after_ms` is
//! taken apart and parked ([`crate::park`]): its task ends, and a new driver resumes
//! ([`Driver::resume`]) when the socket or the room has something. The driver stamps its
//! last I/O in [`Reader::Reading`] for that, with the lot's coarse clock.
//!
//! Not yet done: write timeouts for peers that stop reading.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fulmar_core::broker::ConnectionId;
use tokio::sync::mpsc::{self, error::TrySendError};
use tracing::debug;

use crate::auth::Admission;
use crate::broker_task::{BrokerHandle, Input, Link, Output, Room, buffers};
use crate::park;
use crate::shards::Shards;

/// How long a closed connection waits for the peer to close its side.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// Steps (reads or writes) one poll takes at most before it yields to other tasks.
const STEPS: usize = 32;

/// A byte-stream transport as the driver sees it.
pub(crate) trait Transport: Send + Unpin {
    /// The next bytes, in pieces of any size (a piece may end in the middle of a packet or
    /// hold several); `Ok(None)` once the peer has closed its side.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Vec<u8>>>>;

    /// Sends `out` (one or more whole packets, or the start or rest of one), advancing
    /// [`Outbound::sent`], and flushes: `Ready(Ok)` once all of it is on its way to the
    /// peer. It is called again until `Ready`.
    fn poll_send(&mut self, cx: &mut Context<'_>, out: &mut Outbound) -> Poll<io::Result<()>>;

    /// Closes the sending side gracefully: nothing is sent after this.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Vec<u8>>>> {
        (**self).poll_receive(cx)
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, out: &mut Outbound) -> Poll<io::Result<()>> {
        (**self).poll_send(cx, out)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_close(cx)
    }
}

/// Output being sent: `bytes`, of which the first `sent` are sent. A transport may take
/// the bytes out at once (a WebSocket frame owns its payload), counting them all as sent.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    pub(crate) bytes: Vec<u8>,
    /// Output is bounded by the room (a few hundred KiB) plus one packet (at most
    /// 256 MiB): a `u32` counts it, and keeps the writer's state small.
    pub(crate) sent: u32,
    /// The actor's last words: the connection closes after them (kept here, where it
    /// takes no room of its own).
    last: bool,
}

impl Outbound {
    /// The bytes not sent yet (none once a transport took them).
    pub(crate) fn rest(&self) -> &[u8] {
        self.bytes.get(self.sent as usize..).unwrap_or_default()
    }

    /// Counts `n` more bytes as sent.
    pub(crate) fn advance(&mut self, n: usize) {
        self.sent = self
            .sent
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }
}

/// Who is on the other end of a connection, as far as the transport knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The peer's address.
    pub(crate) peer: SocketAddr,
    /// The identity of the peer's verified TLS client certificate (its subject CN or its
    /// first subject alternative name), when the listener takes it as the username
    /// (`identity_from_cert`).
    pub(crate) identity: Option<String>,
}

/// Serves one connection, whose handshakes (if any) are done, until it is closed by
/// either side. Pass the transport by `&mut` when more is to be done with it once the
/// connection is finished (a WebSocket over TLS ends its TLS session after the close
/// handshake).
pub(crate) fn serve<T: Transport>(origin: Origin, transport: T, shards: Shards) -> Driver<T> {
    // Output is bounded in bytes by `Room` (the actor stops adding).
    let room = Arc::new(Room::default());
    let broker = shards.any().clone();
    let inbox = broker.inbox();
    let reader = if shards.is_sharded() {
        // The CONNECT's client identifier says which shard serves the connection: its
        // first packet is read before anything else (bounded in time and size).
        let deadline = Box::pin(tokio::time::sleep(shards.connect_timeout));
        Reader::Placing(Box::new(Placing {
            origin,
            shards,
            first: Vec::new(),
            deadline,
        }))
    } else {
        Reader::Opening(open(origin, broker, room.clone(), None))
    };
    Driver {
        transport,
        inbox,
        room,
        id: None,
        reader,
        writer: Writer::Idle,
    }
}

/// Registers the connection with `broker`'s actor; then its admission, and the bytes read
/// before it was placed (with several shards).
fn open(
    origin: Origin,
    broker: BrokerHandle,
    room: Arc<Room>,
    first: Option<Vec<u8>>,
) -> Boxed<Option<Opened>> {
    let link = Link { room };
    boxed(async move {
        let peer = origin.peer;
        let identity = origin.identity.clone();
        let Some(id) = broker.open(origin, link).await else {
            debug!(%peer, "connection not served");
            return None;
        };
        Some((id, Box::new(broker.admission(id, identity)), first))
    })
}

/// A registered connection: its id, its admission, the bytes already read.
type Opened = (ConnectionId, Box<Admission>, Option<Vec<u8>>);

/// A connection not placed on a shard yet: its first packet is being read.
struct Placing {
    origin: Origin,
    shards: Shards,
    first: Vec<u8>,
    /// The CONNECT timeout: a connection that says nothing is dropped.
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Placing {
    /// Reads until the first packet is whole; then the shard its CONNECT's client
    /// identifier maps to (any for another first packet, which the broker refuses).
    /// `Ready(None)` when the peer closes, the transport fails or the time is up.
    fn poll_place(
        &mut self,
        transport: &mut impl Transport,
        cx: &mut Context<'_>,
    ) -> Poll<Option<BrokerHandle>> {
        use fulmar_core::codec::{DecodeError, Packet, ProtocolVersion, decode};
        loop {
            if self.deadline.as_mut().poll(cx).is_ready() {
                debug!(peer = %self.origin.peer, "no CONNECT in time: connection not served");
                return Poll::Ready(None);
            }
            match transport.poll_receive(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Some(bytes))) => self.first.extend_from_slice(&bytes),
                Poll::Ready(Ok(None) | Err(_)) => return Poll::Ready(None),
            }
            // The level is only known from the CONNECT itself; any level's CONNECT decodes
            // far enough as 5.0 to name its client.
            let client_id = match decode(
                &self.first,
                ProtocolVersion::V5,
                self.shards.max_packet_size,
            ) {
                Err(DecodeError::Incomplete { .. }) => continue,
                Ok((Packet::Connect(connect), _)) => Some(connect.get().client_id.to_owned()),
                _ => None,
            };
            return Poll::Ready(Some(self.shards.pick(client_id.as_deref()).1.clone()));
        }
    }
}

/// A wait that is rare enough to live on the heap while it lasts; behind a thin pointer,
/// so that the states holding one stay small.
type Boxed<T> = Box<Pin<Box<dyn Future<Output = T> + Send>>>;

fn boxed<F: Future + Send + 'static>(future: F) -> Boxed<F::Output> {
    Box::new(Box::pin(future))
}

/// The future that serves one connection (see the module docs).
pub(crate) struct Driver<T> {
    transport: T,
    /// The actor's inbox.
    inbox: mpsc::Sender<Input>,
    room: Arc<Room>,
    /// Known once the actor registered the connection.
    id: Option<ConnectionId>,
    reader: Reader,
    writer: Writer,
}

impl<T> std::fmt::Debug for Driver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Where the reading half is.
enum Reader {
    /// With several shards: reading the first packet, which says where the connection goes.
    Placing(Box<Placing>),
    /// The actor registers the connection; then the first packet's admission.
    Opening(Boxed<Option<Opened>>),
    /// Waiting for the first bytes, which pass through the admission (see
    /// [`crate::auth`]) until the first packet is whole.
    Unadmitted(Box<Admission>),
    /// Waiting for bytes (or for the actor to take input again); since the tick of the
    /// parking lot's clock ([`park::now`]) of the connection's last I/O (kept in the
    /// variant's padding: no room of its own).
    Reading(u32),
    /// The first packet's credentials are being checked; gives the admission back (with
    /// nothing to pass on yet) while the first packet is incomplete.
    Admitting(Boxed<(Box<Admission>, Option<Vec<u8>>)>),
    /// Handing bytes to the actor, whose inbox is full; `false` when the actor is gone.
    Handing(Boxed<bool>),
    /// The writer closed the connection: reading and discarding until the peer closes.
    Lingering(Pin<Box<tokio::time::Sleep>>),
    /// Telling the actor the socket is finished.
    Closing(Boxed<()>),
    Done,
}

impl Reader {
    /// Reading, with I/O now.
    fn reading() -> Self {
        Self::Reading(park::now())
    }
}

/// Where the writing half is.
enum Writer {
    /// Waiting for output.
    Idle,
    /// Writing `out` (after the last words, the close).
    Writing(Outbound),
    /// Telling the actor there is room again, while its inbox is full.
    Reporting(Boxed<()>),
    /// Closing the transport's sending side.
    Closing,
    Done,
}

impl<T: Transport> Future for Driver<T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Reader::Placing(placing) = &mut this.reader {
            let Poll::Ready(placed) = placing.poll_place(&mut this.transport, cx) else {
                return Poll::Pending;
            };
            let Some(broker) = placed else {
                return Poll::Ready(());
            };
            let Reader::Placing(placing) = std::mem::replace(&mut this.reader, Reader::Done) else {
                return Poll::Ready(());
            };
            let Placing { origin, first, .. } = *placing;
            this.inbox = broker.inbox();
            this.reader = Reader::Opening(open(origin, broker, this.room.clone(), Some(first)));
        }
        if let Reader::Opening(opening) = &mut this.reader {
            let Poll::Ready(opened) = opening.as_mut().as_mut().poll(cx) else {
                return Poll::Pending;
            };
            let Some((id, mut admission, first)) = opened else {
                return Poll::Ready(());
            };
            this.id = Some(id);
            this.reader = match first {
                // What was read to place the connection passes the admission first.
                Some(bytes) => Reader::Admitting(boxed(async move {
                    let passed = admission.admit(bytes).await;
                    (admission, passed)
                })),
                None => Reader::Unadmitted(admission),
            };
        }
        let Some(id) = this.id else {
            return Poll::Ready(());
        };
        // The writer first: when it finishes, the reader starts lingering in the same poll.
        let written = this.poll_writer(id, cx);
        let read = this.poll_reader(id, written, cx);
        if written && read {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl<T> Driver<T> {
    /// A driver for a connection coming back from the parking lot ([`crate::park`]):
    /// registered, admitted, reading and with nothing to write yet.
    pub(crate) fn resume(
        transport: T,
        room: Arc<Room>,
        inbox: mpsc::Sender<Input>,
        id: ConnectionId,
    ) -> Self {
        Self {
            transport,
            inbox,
            room,
            id: Some(id),
            reader: Reader::reading(),
            writer: Writer::Idle,
        }
    }

    /// The tick of the last I/O of a driver that is fully idle (reading, nothing to write,
    /// input not held back, nothing boxed), after a poll that left it pending; `None` when
    /// it is not idle.
    pub(crate) fn idle_since(&self) -> Option<u32> {
        match (&self.reader, &self.writer, self.id) {
            (Reader::Reading(since), Writer::Idle, Some(_)) if !self.room.input_paused() => {
                Some(*since)
            }
            _ => None,
        }
    }

    /// The connection's room.
    pub(crate) fn room(&self) -> &Arc<Room> {
        &self.room
    }

    /// Takes an idle driver apart to park it: its transport, room, actor inbox and id.
    pub(crate) fn into_parts(self) -> Option<(T, Arc<Room>, mpsc::Sender<Input>, ConnectionId)> {
        Some((self.transport, self.room, self.inbox, self.id?))
    }
}

impl<T: Transport> Driver<T> {
    /// Reads until the peer closes, the transport fails, or the writer has closed the
    /// connection; `true` once the actor has been told the socket is finished.
    fn poll_reader(&mut self, id: ConnectionId, written: bool, cx: &mut Context<'_>) -> bool {
        for _ in 0..STEPS {
            match &mut self.reader {
                Reader::Reading(_) | Reader::Unadmitted(_) => {
                    if written {
                        self.reader = Reader::Lingering(Box::pin(tokio::time::sleep(LINGER)));
                        continue;
                    }
                    // Backpressure: while the broker holds this publisher back, its
                    // transport is not read, so the kernel's buffers fill and TCP slows
                    // the client down.
                    if !self.room.input_allowed(cx) {
                        return false;
                    }
                    match self.transport.poll_receive(cx) {
                        Poll::Pending => return false,
                        Poll::Ready(Ok(Some(bytes))) => {
                            match std::mem::replace(&mut self.reader, Reader::Done) {
                                // Held back until the first packet, when a CONNECT, is
                                // judged.
                                Reader::Unadmitted(mut admission) => {
                                    self.reader = Reader::Admitting(boxed(async move {
                                        let passed = admission.admit(bytes).await;
                                        (admission, passed)
                                    }));
                                }
                                _ => self.hand(id, bytes),
                            }
                        }
                        Poll::Ready(Ok(None)) => self.closed(id),
                        Poll::Ready(Err(error)) => {
                            debug!(conn = id.slot(), %error, "read failed");
                            self.closed(id);
                        }
                    }
                }
                Reader::Admitting(admitting) => {
                    let Poll::Ready((admission, passed)) = admitting.as_mut().as_mut().poll(cx)
                    else {
                        return false;
                    };
                    match passed {
                        Some(bytes) => self.hand(id, bytes),
                        // The first packet is not whole yet.
                        None => self.reader = Reader::Unadmitted(admission),
                    }
                }
                Reader::Handing(handing) => match handing.as_mut().as_mut().poll(cx) {
                    Poll::Pending => return false,
                    Poll::Ready(true) => self.reader = Reader::reading(),
                    // The actor is gone: nobody to tell.
                    Poll::Ready(false) => self.reader = Reader::Done,
                },
                Reader::Lingering(until) => {
                    if until.as_mut().poll(cx).is_ready() {
                        self.closed(id);
                        continue;
                    }
                    match self.transport.poll_receive(cx) {
                        Poll::Pending => return false,
                        Poll::Ready(Ok(Some(_))) => {}
                        Poll::Ready(Ok(None) | Err(_)) => self.closed(id),
                    }
                }
                Reader::Closing(closing) => {
                    if closing.as_mut().as_mut().poll(cx).is_pending() {
                        return false;
                    }
                    self.reader = Reader::Done;
                }
                // Handled by `poll` before anything else.
                Reader::Placing(_) | Reader::Opening(_) => return false,
                Reader::Done => return true,
            }
        }
        // Busy: let other tasks run, and come back.
        cx.waker().wake_by_ref();
        false
    }

    /// Hands bytes read to the actor; waits (boxed) when its inbox is full.
    fn hand(&mut self, id: ConnectionId, bytes: Vec<u8>) {
        self.reader = match self.inbox.try_send(Input::Bytes(id, bytes)) {
            Ok(()) => Reader::reading(),
            Err(TrySendError::Full(input)) => {
                let inbox = self.inbox.clone();
                Reader::Handing(boxed(async move { inbox.send(input).await.is_ok() }))
            }
            Err(TrySendError::Closed(_)) => Reader::Done,
        };
    }

    /// Tells the actor the socket is finished (ignored when it already let it go).
    fn closed(&mut self, id: ConnectionId) {
        self.reader = match self.inbox.try_send(Input::Closed(id)) {
            Ok(()) | Err(TrySendError::Closed(_)) => Reader::Done,
            Err(TrySendError::Full(input)) => Reader::Closing(self.send_later(input)),
        };
    }

    /// Writes what the actor queued until it lets the connection go or the transport
    /// fails; `true` once finished.
    fn poll_writer(&mut self, id: ConnectionId, cx: &mut Context<'_>) -> bool {
        for _ in 0..STEPS {
            match &mut self.writer {
                Writer::Idle => {
                    let Poll::Ready(output) = self.room.poll_next_output(cx) else {
                        return false;
                    };
                    let (bytes, last) = match output {
                        Output::Bytes(bytes) => (bytes, false),
                        // The actor let the connection go: its last words, then the
                        // transport's close.
                        Output::Last(bytes) => (bytes, true),
                    };
                    self.writer = Writer::Writing(Outbound {
                        bytes,
                        sent: 0,
                        last,
                    });
                }
                Writer::Writing(out) => {
                    let last = out.last;
                    // Nothing to send (last words may be none) needs no call.
                    if !out.bytes.is_empty() || out.sent > 0 {
                        match self.transport.poll_send(cx, out) {
                            Poll::Pending => return false,
                            Poll::Ready(Ok(())) => {}
                            Poll::Ready(Err(error)) => {
                                debug!(conn = id.slot(), %error, "write failed");
                                self.finish_writing();
                                continue;
                            }
                        }
                    }
                    let written = out.sent as usize;
                    if let Reader::Reading(since) = &mut self.reader {
                        *since = park::now();
                    }
                    park::answered(&self.room);
                    // What is written is not kept: an idle connection holds no buffer. The
                    // actor fills it again, for this connection or another.
                    buffers::give(std::mem::take(&mut out.bytes));
                    self.writer = if last {
                        Writer::Closing
                    } else if self.room.written(written) {
                        // The actor stopped at its limit and waits for room: there is some
                        // now.
                        self.drained(id)
                    } else {
                        Writer::Idle
                    };
                }
                Writer::Reporting(reporting) => {
                    if reporting.as_mut().as_mut().poll(cx).is_pending() {
                        return false;
                    }
                    self.writer = Writer::Idle;
                }
                Writer::Closing => {
                    // TCP: FIN. TLS: close_notify, then FIN. WebSocket: a Close frame.
                    let Poll::Ready(closed) = self.transport.poll_close(cx) else {
                        return false;
                    };
                    if let Err(error) = closed {
                        debug!(conn = id.slot(), %error, "close failed");
                    }
                    self.finish_writing();
                }
                Writer::Done => return true,
            }
        }
        cx.waker().wake_by_ref();
        false
    }

    /// Tells the actor the writer has room again; waits (boxed) when its inbox is full.
    fn drained(&mut self, id: ConnectionId) -> Writer {
        match self.inbox.try_send(Input::Drained(id)) {
            Ok(()) | Err(TrySendError::Closed(_)) => Writer::Idle,
            Err(TrySendError::Full(input)) => Writer::Reporting(self.send_later(input)),
        }
    }

    /// Sends `input` once the actor's inbox has room (ignored when the actor is gone).
    fn send_later(&self, input: Input) -> Boxed<()> {
        let inbox = self.inbox.clone();
        boxed(async move {
            let _ = inbox.send(input).await;
        })
    }

    /// The writer stopped: the actor learns the connection is gone even if the reader is
    /// still waiting on a silent peer, and the reader lingers.
    fn finish_writing(&mut self) {
        self.room.writer_gone();
        self.writer = Writer::Done;
    }
}
