//! Byte-stream transports for the connection driver: plain TCP, and TLS.
//!
//! Reads allocate nothing while a connection is idle: an idle connection costs no read
//! buffer. Over TCP, each read waits for readiness and then gets a fresh buffer that is
//! handed on as it is (no copy). Over TLS (which has no readiness to wait for: rustls may
//! have plaintext buffered) the read goes into one scratch buffer per thread, and only the
//! bytes read are copied out. Neither is split into halves: the driver reads and writes
//! from one task, so one stream serves both (no shared allocation, no lock).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::connection::{Outbound, Transport};

/// Bytes asked of the transport per read.
const READ_CHUNK: usize = 16 * 1024;

/// How a stream reads: into a buffer of its own per read, for the broker to keep.
pub(crate) trait ReadChunk {
    /// The next bytes; `Ok(None)` once the peer has closed its side.
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Vec<u8>>>>;
}

impl ReadChunk for TcpStream {
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Vec<u8>>>> {
        loop {
            ready!(self.poll_read_ready(cx))?;
            let mut buffer = Vec::with_capacity(READ_CHUNK);
            match self.try_read_buf(&mut buffer) {
                Ok(0) => return Poll::Ready(Ok(None)),
                Ok(n) => {
                    // A small read keeps a small buffer: it may sit in the broker's queue
                    // for a while.
                    if n < READ_CHUNK / 4 {
                        buffer.shrink_to_fit();
                    }
                    return Poll::Ready(Ok(Some(buffer)));
                }
                // Readiness was spurious (and is cleared now); wait again.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

thread_local! {
    /// Where TLS streams read into; borrowed only within one `poll_read`.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

impl<S: AsyncRead + AsyncWrite + Unpin> ReadChunk for TlsStream<S> {
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Vec<u8>>>> {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut buffer = ReadBuf::new(scratch);
            ready!(Pin::new(self).poll_read(cx, &mut buffer))?;
            let read = buffer.filled();
            Poll::Ready(Ok((!read.is_empty()).then(|| read.to_vec())))
        })
    }
}

/// A byte stream: TCP or TLS.
#[derive(Debug)]
pub(crate) struct StreamTransport<S>(pub(crate) S);

impl<S: ReadChunk + AsyncWrite + Unpin + Send> Transport for StreamTransport<S> {
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Vec<u8>>>> {
        self.0.poll_read_chunk(cx)
    }

    /// Writes the rest, then flushes (TLS holds records back until flushed; for TCP
    /// flushing does nothing).
    fn poll_send(&mut self, cx: &mut Context<'_>, out: &mut Outbound) -> Poll<io::Result<()>> {
        let mut writer = Pin::new(&mut self.0);
        while !out.rest().is_empty() {
            match ready!(writer.as_mut().poll_write(cx, out.rest()))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => out.advance(n),
            }
        }
        writer.poll_flush(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // TCP: FIN. TLS: close_notify, then FIN.
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
