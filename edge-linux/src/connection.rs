//! One task per connection: it moves bytes between a transport and the broker actor
//! ([`crate::broker_task`]) and closes the transport gracefully.
//!
//! The driver knows nothing of TCP, TLS or WebSocket: it is generic over the two halves of
//! a transport, [`Incoming`] (bytes in, in order, as they arrive) and [`Outgoing`] (bytes
//! out, then a graceful close). [`crate::transport`] provides them for plain TCP, for any
//! `AsyncRead + AsyncWrite` stream (TLS) and for WebSocket, and runs the handshakes before
//! handing a connection to [`serve`].
//!
//! The task runs two loops side by side (joined, not spawned), so reading never waits for
//! writing: a client that sends a lot while the broker answers a lot cannot deadlock
//! against it.
//! - The reader hands each read to the actor. It stops reading while the actor holds this
//!   publisher back (its messages cannot be queued), and waits when the actor's input
//!   channel is full.
//! - The writer writes the chunks the actor sends, in order. When the actor lets the
//!   connection go, the writer writes the last words (a CONNACK refusal, a DISCONNECT),
//!   closes its side (FIN; TLS close_notify; a WebSocket Close frame) and tells the reader,
//!   which reads and discards until the peer closes too, for at most [`LINGER`]. Closing a
//!   socket with unread input would make the kernel send RST, and the peer could lose
//!   those last words.
//!
//! Not yet done: write timeouts for peers that stop reading, per-IP rate limits.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fulmar_core::broker::ConnectionId;
use tokio::sync::Notify;
use tracing::debug;

use crate::auth::Admission;
use crate::broker_task::{BrokerHandle, Link, Output, Room};

/// How long a closed connection waits for the peer to close its side.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// The receiving half of a transport: the MQTT byte stream, in order, in pieces of any
/// size (a piece may end in the middle of a packet or hold several).
pub(crate) trait Incoming: Send {
    /// The next bytes, waiting for them; `Ok(None)` once the peer has closed its side.
    fn receive(&mut self) -> impl Future<Output = io::Result<Option<Vec<u8>>>> + Send;
}

/// The sending half of a transport.
pub(crate) trait Outgoing: Send {
    /// Sends `bytes` (one or more whole packets, or the start or rest of one), flushed:
    /// once this returns they are on their way to the peer.
    fn send(&mut self, bytes: Vec<u8>) -> impl Future<Output = io::Result<()>> + Send;

    /// Closes the sending side gracefully: nothing is sent after this.
    fn close(&mut self) -> impl Future<Output = io::Result<()>> + Send;
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
/// either side. The halves are borrowed: a transport may have more to do once both are
/// finished (a WebSocket over TLS ends its TLS session after the close handshake).
pub(crate) async fn serve(
    origin: Origin,
    incoming: &mut impl Incoming,
    outgoing: &mut impl Outgoing,
    broker: BrokerHandle,
) {
    // Output is bounded in bytes by `Room` (the actor stops adding).
    let room = Arc::new(Room::default());
    let link = Link { room: room.clone() };
    let peer = origin.peer;
    let identity = origin.identity.clone();
    let Some(id) = broker.open(origin, link).await else {
        debug!(%peer, "connection not served");
        return;
    };
    let admission = broker.admission(id, identity);
    let written = Notify::new();
    let writing = Writer {
        id,
        room: &room,
        broker: &broker,
        done: &written,
    };
    tokio::join!(
        read_loop(id, incoming, admission, &broker, &written, &room),
        writing.run(outgoing)
    );
}

/// Reads until the peer closes, the transport fails, or the writer has closed the
/// connection.
async fn read_loop(
    id: ConnectionId,
    incoming: &mut impl Incoming,
    mut admission: Admission,
    broker: &BrokerHandle,
    written: &Notify,
    room: &Room,
) {
    loop {
        tokio::select! {
            // Backpressure: while the broker holds this publisher back, its transport is
            // not read, so the kernel's buffers fill and TCP slows the client down.
            received = async {
                room.input_allowed().await;
                incoming.receive().await
            } => match received {
                Ok(Some(bytes)) => {
                    // Held back until the first packet, when a CONNECT, is judged.
                    let Some(bytes) = admission.admit(bytes).await else {
                        continue;
                    };
                    if broker.bytes(id, bytes).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    debug!(conn = id.slot(), %error, "read failed");
                    break;
                }
            },
            () = written.notified() => {
                linger(incoming).await;
                break;
            }
        }
    }
    broker.closed(id).await;
}

/// Reads and discards until the peer closes, for at most [`LINGER`].
async fn linger(incoming: &mut impl Incoming) {
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(Some(_)) = incoming.receive().await {}
    })
    .await;
}

/// The writing half of a connection task.
struct Writer<'a> {
    id: ConnectionId,
    room: &'a Room,
    broker: &'a BrokerHandle,
    done: &'a Notify,
}

impl Writer<'_> {
    async fn run(self, outgoing: &mut impl Outgoing) {
        if let Err(error) = self.write_all(outgoing).await {
            debug!(conn = self.id.slot(), %error, "write failed");
        }
        // The actor learns the connection is gone even if the reader is still waiting on
        // a silent peer.
        self.room.writer_gone();
        self.done.notify_one();
    }

    async fn write_all(&self, outgoing: &mut impl Outgoing) -> io::Result<()> {
        loop {
            match self.room.next_output().await {
                Output::Bytes(bytes) => {
                    let len = bytes.len();
                    outgoing.send(bytes).await?;
                    // The actor stopped at its limit and waits for room: there is some now.
                    if self.room.written(len) {
                        self.broker.drained(self.id).await;
                    }
                }
                // The actor let the connection go: its last words, then the transport's
                // close.
                Output::Last(last) => {
                    if !last.is_empty() {
                        outgoing.send(last).await?;
                    }
                    return outgoing.close().await;
                }
            }
        }
    }
}
