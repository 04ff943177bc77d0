//! The two halves of a byte-stream transport for the connection driver: plain TCP, and any
//! `AsyncRead` / `AsyncWrite` (TLS).
//!
//! Reads allocate nothing while a connection is idle: an idle connection costs no read
//! buffer. Over TCP, each read waits for readiness and then gets a fresh buffer that is
//! handed on as it is (no copy). Over a generic stream (which has no readiness to wait for)
//! the read goes into one scratch buffer per thread, and only the bytes read are copied out.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;

use crate::connection::{Incoming, Outgoing};

/// Bytes asked of the transport per read.
const READ_CHUNK: usize = 16 * 1024;

/// The reading half of a TCP connection.
#[derive(Debug)]
pub(crate) struct TcpIncoming(OwnedReadHalf);

impl TcpIncoming {
    pub(crate) fn new(reader: OwnedReadHalf) -> Self {
        Self(reader)
    }
}

impl Incoming for TcpIncoming {
    async fn receive(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            self.0.readable().await?;
            let mut buffer = Vec::with_capacity(READ_CHUNK);
            match self.0.try_read_buf(&mut buffer) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    // A small read keeps a small buffer: it may sit in the broker's queue
                    // for a while.
                    if n < READ_CHUNK / 4 {
                        buffer.shrink_to_fit();
                    }
                    return Ok(Some(buffer));
                }
                // Readiness was spurious; wait again.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
    }
}

thread_local! {
    /// Where generic streams read into; borrowed only within one `poll_read`.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// The reading half of any byte stream.
#[derive(Debug)]
pub(crate) struct StreamIncoming<R>(pub(crate) R);

impl<R: AsyncRead + Unpin + Send> Incoming for StreamIncoming<R> {
    fn receive(&mut self) -> impl Future<Output = io::Result<Option<Vec<u8>>>> + Send {
        std::future::poll_fn(|cx| {
            SCRATCH.with_borrow_mut(|scratch| {
                let mut buffer = ReadBuf::new(scratch);
                ready!(Pin::new(&mut self.0).poll_read(cx, &mut buffer))?;
                let read = buffer.filled();
                Poll::Ready(Ok((!read.is_empty()).then(|| read.to_vec())))
            })
        })
    }
}

/// The writing half of any byte stream (TCP included).
#[derive(Debug)]
pub(crate) struct StreamOutgoing<W>(pub(crate) W);

impl<W: AsyncWrite + Unpin + Send> Outgoing for StreamOutgoing<W> {
    async fn send(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        self.0.write_all(&bytes).await?;
        // TLS holds records back until flushed; for TCP this does nothing.
        self.0.flush().await
    }

    async fn close(&mut self) -> io::Result<()> {
        // TCP: FIN. TLS: close_notify, then FIN.
        self.0.shutdown().await
    }
}
