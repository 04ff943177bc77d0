//! Transports: what turns an accepted TCP connection into an MQTT byte stream for the
//! connection driver (`crate::connection`).
//!
//! A listener speaks one [`Protocol`]:
//! - `mqtt`: MQTT straight over TCP.
//! - `mqtts`: MQTT over TLS (rustls, `ring` provider), optionally verifying client
//!   certificates against a CA and taking a verified certificate's CN or SAN as the
//!   username (`tls`).
//! - `ws` / `wss`: MQTT over WebSocket, plain or inside TLS: an HTTP upgrade on one path
//!   with the `mqtt` subprotocol, then binary frames carrying the byte stream (`ws`).
//!
//! Each accepted connection runs its handshakes in its own task, bounded by the CONNECT
//! timeout (`limits.connect_timeout_secs`: a socket that never gets as far as CONNECT is
//! closed after it, whatever it is stuck on), so a slow or hostile peer never holds up the
//! accept loop or any other connection; a failed handshake closes that connection only. Certificates and keys
//! are loaded when the listener is built, so a missing or bad file is an error at startup.
//!
//! The settings are the configuration's `listeners` entries ([`crate::config::Listeners`]).

mod stream;
pub(crate) mod tls;
pub(crate) mod ws;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::debug;

use crate::config::{Limits, Listeners, TlsListener, WsListener};
use crate::connection::{self, Driver, Origin};
use crate::park;
use crate::server::Guard;
use crate::shards::Shards;
use stream::StreamTransport;

/// One listener: where it listens and what it speaks there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The address to bind (port 0: any free port, reported in the startup log line).
    pub addr: SocketAddr,
    /// What connections to it speak, with the listener's settings.
    pub protocol: Protocol,
}

/// What the connections to a listener speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT over plain TCP (`listeners.tcp`).
    Mqtt,
    /// MQTT over TLS (`listeners.tls`).
    Tls(TlsListener),
    /// MQTT over WebSocket (`listeners.ws`).
    Ws(WsListener),
    /// MQTT over WebSocket over TLS (`listeners.wss`).
    Wss(TlsListener),
}

impl fmt::Display for Protocol {
    /// The short name the startup log line shows after each address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mqtt => f.write_str("mqtt"),
            Self::Tls(_) => f.write_str("mqtts"),
            Self::Ws(ws) => write!(f, "ws {}", ws.path),
            Self::Wss(wss) => write!(f, "wss {}", wss.ws_path()),
        }
    }
}

/// Every listener of the configuration, plain TCP first, then TLS, WebSocket and secure
/// WebSocket, each kind in the order given.
pub fn listeners(config: &Listeners) -> Vec<Listener> {
    let tcp = config.tcp.iter().map(|l| (l.addr, Protocol::Mqtt));
    let tls = config
        .tls
        .iter()
        .map(|l| (l.addr, Protocol::Tls(l.clone())));
    let ws = config.ws.iter().map(|l| (l.addr, Protocol::Ws(l.clone())));
    let wss = config
        .wss
        .iter()
        .map(|l| (l.addr, Protocol::Wss(l.clone())));
    tcp.chain(tls)
        .chain(ws)
        .chain(wss)
        .map(|(addr, protocol)| Listener { addr, protocol })
        .collect()
}

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A PEM file could not be read or parsed.
    #[error("cannot read the {what} from {}", path.display())]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the certificate chain, key or CA certificates.
    #[error("the TLS certificate, key or CA is not usable")]
    Tls(#[from] rustls::Error),
    /// The client CA file cannot verify client certificates.
    #[error("cannot verify client certificates with {}", path.display())]
    ClientCa {
        /// The CA file.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// Client certificates are required but no CA is given to verify them.
    #[error("require_client_cert needs client_ca to verify client certificates")]
    RequireWithoutCa,
    /// A WebSocket path that is not an absolute path.
    #[error("a WebSocket path must start with '/': {0:?}")]
    WsPath(String),
}

/// How a listener turns accepted TCP connections into MQTT byte streams.
#[derive(Debug)]
pub(crate) struct Acceptor {
    kind: Kind,
    /// How long the handshakes may take.
    handshake_timeout: Duration,
}

#[derive(Debug)]
enum Kind {
    Mqtt,
    Tls(tls::Tls),
    // Shared with the connections it serves (a clone would copy its path).
    Ws(Arc<ws::Ws>),
    Wss(tls::Tls, Arc<ws::Ws>),
}

impl Acceptor {
    /// Builds the acceptor of a listener, loading its certificates.
    pub(crate) fn new(protocol: &Protocol, limits: &Limits) -> Result<Self, Error> {
        let max_packet_size = limits.max_packet_size;
        let kind = match protocol {
            Protocol::Mqtt => Kind::Mqtt,
            Protocol::Tls(tls) => Kind::Tls(tls::Tls::new(tls)?),
            Protocol::Ws(ws) => Kind::Ws(Arc::new(ws::Ws::new(&ws.path, max_packet_size)?)),
            Protocol::Wss(wss) => Kind::Wss(
                tls::Tls::new(wss)?,
                Arc::new(ws::Ws::new(wss.ws_path(), max_packet_size)?),
            ),
        };
        let handshake_timeout = Duration::from_secs(u64::from(limits.connect_timeout_secs));
        Ok(Self {
            kind,
            handshake_timeout,
        })
    }

    /// Runs the handshakes of an accepted connection, then serves it until it closes.
    pub(crate) fn serve(&self, tcp: TcpStream, peer: SocketAddr, broker: Shards) -> Serving {
        let origin = Origin {
            peer,
            identity: None,
        };
        let timeout = self.handshake_timeout;
        // Plain TCP is served by the connection's driver itself; the TLS and WebSocket
        // arms are boxed: a task's future is as large as its largest state, and rustls's
        // and tungstenite's states are kilobytes, which every plain TCP connection (the
        // common, idle-heavy case) would otherwise carry.
        match &self.kind {
            Kind::Mqtt => Serving::Tcp(connection::serve(origin, StreamTransport(tcp), broker)),
            Kind::Tls(tls) => {
                let tls = tls.clone();
                Serving::Boxed(Box::pin(async move {
                    let Some((stream, identity)) = handshake(peer, timeout, tls.accept(tcp)).await
                    else {
                        return;
                    };
                    let origin = Origin { identity, ..origin };
                    connection::serve(origin, StreamTransport(stream), broker).await;
                }))
            }
            Kind::Ws(ws) => {
                let ws = ws.clone();
                Serving::Boxed(Box::pin(async move {
                    let Some(stream) = handshake(peer, timeout, ws.accept(tcp)).await else {
                        return;
                    };
                    ws::serve(origin, stream, broker).await;
                }))
            }
            Kind::Wss(tls, ws) => {
                let (tls, ws) = (tls.clone(), ws.clone());
                Serving::Boxed(Box::pin(async move {
                    let handshakes = async {
                        let (stream, identity) = tls.accept(tcp).await?;
                        Ok((ws.accept(stream).await?, identity))
                    };
                    let Some((stream, identity)) = handshake(peer, timeout, handshakes).await
                    else {
                        return;
                    };
                    let origin = Origin { identity, ..origin };
                    ws::serve(origin, stream, broker).await;
                }))
            }
        }
    }
}

/// The future serving one accepted connection ([`Acceptor::serve`]).
pub(crate) enum Serving {
    /// Plain TCP: the driver, inline.
    Tcp(Driver<StreamTransport<TcpStream>>),
    /// TLS and WebSocket: handshakes, then the driver, on the heap.
    Boxed(Pin<Box<dyn Future<Output = ()> + Send>>),
    /// The connection went to the parking lot.
    Parked,
}

impl fmt::Debug for Serving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(driver) => driver.fmt(f),
            Self::Boxed(_) => f.write_str("Serving::Boxed"),
            Self::Parked => f.write_str("Serving::Parked"),
        }
    }
}

impl Serving {
    /// This future with `guard`, which lives exactly as long as the connection (its
    /// permit, counters): one value for the task, with nothing more around it.
    pub(crate) fn holding(self, guard: Guard) -> Holding {
        Holding {
            serving: self,
            guard: Some(guard),
        }
    }
}

/// A plain TCP connection back from the parking lot ([`crate::park`]), as a task's future.
pub(crate) fn resume(parts: park::Parts, guard: Guard) -> Holding {
    let (tcp, room, inbox, id) = parts;
    Serving::Tcp(Driver::resume(StreamTransport(tcp), room, inbox, id)).holding(guard)
}

/// A connection's future with what is dropped when the connection ends
/// ([`Serving::holding`]). A plain TCP connection that has been idle for long enough
/// parks ([`crate::park`]): its future ends, and the guard goes with it into the lot.
#[derive(Debug)]
pub(crate) struct Holding {
    serving: Serving,
    /// Taken when the connection parks.
    guard: Option<Guard>,
}

impl Future for Holding {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Pin::new(&mut this.serving).poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let Serving::Tcp(driver) = &this.serving else {
            return Poll::Pending;
        };
        let Some(since) = driver.idle_since() else {
            return Poll::Pending;
        };
        if !park::due(since) && !park::first_idle(driver.room()) {
            park::enroll(driver.room(), since);
            return Poll::Pending;
        }
        let Serving::Tcp(driver) = std::mem::replace(&mut this.serving, Serving::Parked) else {
            return Poll::Pending;
        };
        let (Some((StreamTransport(tcp), room, inbox, id)), Some(guard)) =
            (driver.into_parts(), this.guard.take())
        else {
            return Poll::Ready(());
        };
        park::park((tcp, room, inbox, id), guard);
        Poll::Ready(())
    }
}

impl Future for Serving {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut() {
            Self::Tcp(driver) => Pin::new(driver).poll(cx),
            Self::Boxed(serving) => serving.as_mut().poll(cx),
            Self::Parked => Poll::Ready(()),
        }
    }
}

/// Runs a connection's handshakes within `timeout`; `None` (logged) when they fail or take
/// too long, and the connection is dropped.
async fn handshake<T>(
    peer: SocketAddr,
    timeout: Duration,
    handshakes: impl Future<Output = std::io::Result<T>>,
) -> Option<T> {
    match tokio::time::timeout(timeout, handshakes).await {
        Ok(Ok(done)) => Some(done),
        Ok(Err(error)) => {
            debug!(%peer, %error, "handshake failed");
            None
        }
        Err(_) => {
            debug!(%peer, "handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every idle TCP connection carries in its task (besides the task's own header
    /// and the socket's registration): the driver, not the TLS or WebSocket machinery.
    #[test]
    fn a_tcp_connection_future_is_small() {
        let size = std::mem::size_of::<Serving>();
        assert!(size <= 120, "the TCP connection future takes {size} bytes");
    }
}
