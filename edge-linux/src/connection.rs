//! One task per TCP connection: it moves bytes between the socket and the broker actor
//! ([`crate::broker_task`]) and closes the socket gracefully.
//!
//! The task runs two loops side by side (joined, not spawned), so reading never waits for
//! writing: a client that sends a lot while the broker answers a lot cannot deadlock
//! against it.
//! - The reader hands each read to the actor. It waits when the actor's input channel is
//!   full, which is the backpressure on input for now (global, not per publisher).
//! - The writer writes the chunks the actor sends, in order. When the actor lets the
//!   connection go, the writer writes the last words (a CONNACK refusal, a DISCONNECT),
//!   shuts the write side down (FIN) and tells the reader, which reads and discards until
//!   the peer closes too, for at most [`LINGER`]. Closing a socket with unread input would
//!   make the kernel send RST, and the peer could lose those last words.
//!
//! Not yet done: TLS and WebSocket transports (they will wrap the stream before this
//! driver), write timeouts for peers that stop reading, per-IP rate limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fulmar_core::broker::ConnectionId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::debug;

use crate::broker_task::{BrokerHandle, Link, Room};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// How long a closed connection waits for the peer to close its side.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// Serves one accepted TCP connection until it is closed, by either side.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, broker: BrokerHandle) {
    // Unbounded as a channel, bounded in bytes by `Room` (the actor stops adding).
    let (output, chunks) = mpsc::unbounded_channel();
    let (last_words, last) = oneshot::channel();
    let room = Arc::new(Room::default());
    let link = Link {
        output,
        last_words,
        room: room.clone(),
    };
    let Some(id) = broker.open(peer, link).await else {
        debug!(%peer, "connection not served");
        return;
    };
    let (reader, writer) = stream.into_split();
    let written = Notify::new();
    let writing = Writer {
        id,
        chunks,
        last,
        room: &room,
        broker: &broker,
        done: &written,
    };
    tokio::join!(
        read_loop(id, reader, &broker, &written, &room),
        writing.run(writer)
    );
}

/// Reads until the peer closes, the socket fails, or the writer has closed the connection.
///
/// No buffer is held while the socket is idle: each read gets a fresh one, which is handed
/// to the actor as it is (shrunk when the read was small), so an idle connection costs no
/// read buffer and a busy one no copy.
async fn read_loop(
    id: ConnectionId,
    mut reader: OwnedReadHalf,
    broker: &BrokerHandle,
    written: &Notify,
    room: &Room,
) {
    loop {
        tokio::select! {
            // Backpressure: while the broker holds this publisher back, its socket is not
            // read, so the kernel's buffers fill and TCP slows the client down.
            ready = async {
                room.input_allowed().await;
                reader.readable().await
            } => {
                if let Err(error) = ready {
                    debug!(conn = id.slot(), %error, "read failed");
                    break;
                }
                let mut buffer = Vec::with_capacity(READ_CHUNK);
                match reader.try_read_buf(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => {
                        if n < READ_CHUNK / 4 {
                            buffer.shrink_to_fit();
                        }
                        if broker.bytes(id, buffer).await.is_err() {
                            break;
                        }
                    }
                    // Readiness was spurious; wait again.
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(error) => {
                        debug!(conn = id.slot(), %error, "read failed");
                        break;
                    }
                }
            }
            () = written.notified() => {
                linger(&mut reader).await;
                break;
            }
        }
    }
    broker.closed(id).await;
}

/// Reads and discards until the peer closes, for at most [`LINGER`].
async fn linger(reader: &mut OwnedReadHalf) {
    let mut buffer = vec![0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = reader.read(&mut buffer).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// The writing half of a connection task.
struct Writer<'a> {
    id: ConnectionId,
    chunks: mpsc::UnboundedReceiver<Vec<u8>>,
    last: oneshot::Receiver<Vec<u8>>,
    room: &'a Room,
    broker: &'a BrokerHandle,
    done: &'a Notify,
}

impl Writer<'_> {
    async fn run(mut self, mut socket: OwnedWriteHalf) {
        if let Err(error) = self.write_all(&mut socket).await {
            debug!(conn = self.id.slot(), %error, "write failed");
        }
        // Dropping the receiver closes the channel: the actor learns the connection is gone
        // even if the reader is still waiting on a silent peer.
        drop(self.chunks);
        self.done.notify_one();
    }

    async fn write_all(&mut self, socket: &mut OwnedWriteHalf) -> std::io::Result<()> {
        while let Some(chunk) = self.chunks.recv().await {
            socket.write_all(&chunk).await?;
            // The actor stopped at its limit and waits for room: there is some now.
            if self.room.written(chunk.len()) {
                self.broker.drained(self.id).await;
            }
        }
        // The actor let the connection go: its last words (sent before the channel
        // closed), then FIN.
        if let Ok(last) = self.last.try_recv()
            && !last.is_empty()
        {
            socket.write_all(&last).await?;
        }
        socket.shutdown().await
    }
}
