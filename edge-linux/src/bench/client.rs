//! The load tool's MQTT client: one TCP (or TLS, or WebSocket) connection speaking the
//! core codec, with a read buffer the caller drains packet by packet and an output buffer
//! it fills and flushes.
//!
//! It is deliberately small: no session state, no reconnects, no retries. The load
//! drivers (`load.rs`, `conn.rs`) own the protocol flow (which acknowledgment answers
//! which PUBLISH), because that flow is what they measure. Everything is sent and read
//! with [`fulmar_core::codec`], so the client costs no dependency and no copy beyond the
//! socket buffers.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fulmar_core::codec::{Connect, Properties};
use fulmar_core::codec::{
    ConnectPacket, DecodeError, Disconnect, List, Packet, PacketId, ProtocolVersion, QoS,
    Subscribe, Subscription, SubscriptionOptions, decode,
};
use futures_util::{SinkExt as _, StreamExt as _};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::BenchError;

/// How long the broker gets to answer CONNECT and SUBSCRIBE.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest packet the tool accepts from a broker: a PUBLISH of the largest payload
/// `--size` allows, with room for the topic and properties.
const MAX_PACKET: usize = 4 * 1024 * 1024;
/// Bytes the read buffer grows by before each read.
const READ_CHUNK: usize = 64 * 1024;

/// What every connection of a run shares: where to connect and how to say hello.
#[derive(Debug, Clone)]
pub(crate) struct Dialer {
    /// The broker.
    pub(crate) addr: SocketAddr,
    /// The protocol level to speak.
    pub(crate) version: ProtocolVersion,
    /// Keep Alive sent in CONNECT, in seconds; the drivers ping at half of it.
    pub(crate) keep_alive: u16,
    /// Username, if the broker asks for one.
    pub(crate) username: Option<String>,
    /// Password, if the broker asks for one.
    pub(crate) password: Option<String>,
    /// TLS, when the broker is reached through it.
    pub(crate) tls: Option<Tls>,
    /// The WebSocket URL, when the broker is reached through one.
    pub(crate) ws: Option<String>,
}

/// How clients reach a broker over TLS (rustls with `ring`, as the broker uses).
#[derive(Clone)]
pub(crate) struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("name", &self.name).finish()
    }
}

impl Tls {
    /// Trusts the certificates in `ca` (PEM) for a broker called `name`.
    pub(crate) fn new(ca: &Path, name: &str) -> Result<Self, BenchError> {
        let usage = |e: &dyn std::fmt::Display| BenchError::Usage(format!("--tls: {e}"));
        let mut roots = rustls::RootCertStore::empty();
        for certificate in
            crate::transport::tls::certificates(ca, "CA certificates").map_err(|e| usage(&e))?
        {
            roots.add(certificate).map_err(|e| usage(&e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| usage(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_owned()).map_err(|e| usage(&e))?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }
}

/// A client's byte stream.
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    // Boxed: rustls's and tungstenite's states are kilobytes, and plain TCP is the
    // common case.
    Tls(Box<TlsStream<TcpStream>>),
    Ws(Box<WsStream>),
}

/// A WebSocket connection as a byte stream: each write is one binary frame, and reads
/// hand out the frames' payloads in order.
#[derive(Debug)]
struct WsStream {
    ws: WebSocketStream<TcpStream>,
    /// The frame being read, from `offset` on.
    frame: Vec<u8>,
    offset: usize,
}

impl AsyncRead for WsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(rest) = this.frame.get(this.offset..).filter(|r| !r.is_empty()) {
                let n = rest.len().min(buf.remaining());
                buf.put_slice(&rest[..n]);
                this.offset += n;
                return Poll::Ready(Ok(()));
            }
            match std::task::ready!(this.ws.poll_next_unpin(cx)) {
                // The end of the stream reads as no bytes.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(payload))) => {
                    this.frame = payload.into();
                    this.offset = 0;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let ws = &mut self.get_mut().ws;
        std::task::ready!(ws.poll_ready_unpin(cx)).map_err(io::Error::other)?;
        ws.start_send_unpin(Message::Binary(buf.to_vec().into()))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .ws
            .poll_flush_unpin(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .ws
            .poll_close_unpin(cx)
            .map_err(io::Error::other)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
            Self::Ws(ws) => Pin::new(ws.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
            Self::Ws(ws) => Pin::new(ws.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            Self::Ws(ws) => Pin::new(ws.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
            Self::Ws(ws) => Pin::new(ws.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Stream {
    /// Appends whatever bytes are ready to `buffer`, without waiting.
    fn try_read_buf(&mut self, buffer: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Self::Tcp(tcp) => tcp.try_read_buf(buffer),
            _ => {
                // rustls and tungstenite may hold bytes already read, so there is no
                // readiness to ask: poll once without a waker (the next awaited read
                // registers the real one).
                let mut scratch = [0; 16 * 1024];
                let mut read = ReadBuf::new(&mut scratch);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                match Pin::new(self).poll_read(&mut cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        buffer.extend_from_slice(read.filled());
                        Ok(read.filled().len())
                    }
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }
}

/// One connected client.
#[derive(Debug)]
pub(crate) struct Client {
    stream: Stream,
    version: ProtocolVersion,
    /// Bytes read and not yet decoded, from the start.
    input: Vec<u8>,
    /// Encoded packets waiting for [`Client::flush`].
    pub(crate) out: Vec<u8>,
    /// The broker's Receive Maximum from CONNACK (5.0): the most QoS 1/2 messages it
    /// takes unacknowledged ([MQTT-3.3.4-7]).
    pub(crate) receive_maximum: Option<u16>,
}

impl Dialer {
    /// Opens a TCP connection, sends CONNECT with a clean session and waits for a
    /// successful CONNACK.
    pub(crate) async fn connect(&self, client_id: &str) -> Result<Client, BenchError> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| BenchError::io(format!("connect to {}", self.addr), e))?;
        // Latency is what the tool measures: Nagle's algorithm would add up to 40 ms to
        // every small write that follows an unacknowledged one.
        stream
            .set_nodelay(true)
            .map_err(|e| BenchError::io("set TCP_NODELAY", e))?;
        let stream = match (&self.tls, &self.ws) {
            (_, Some(url)) => {
                let mut request = url
                    .as_str()
                    .into_client_request()
                    .map_err(|e| BenchError::Usage(format!("--ws: {e}")))?;
                request
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
                let handshake = tokio_tungstenite::client_async(request, stream);
                let (ws, _) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
                    .await
                    .map_err(|_| BenchError::Timeout("no WebSocket upgrade in time".to_owned()))?
                    .map_err(|e| BenchError::io("WebSocket upgrade", io::Error::other(e)))?;
                Stream::Ws(Box::new(WsStream {
                    ws,
                    frame: Vec::new(),
                    offset: 0,
                }))
            }
            (None, None) => Stream::Tcp(stream),
            (Some(tls), None) => {
                let handshake = tls.connector.connect(tls.name.clone(), stream);
                let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
                    .await
                    .map_err(|_| BenchError::Timeout("no TLS handshake in time".to_owned()))?
                    .map_err(|e| BenchError::io("TLS handshake", e))?;
                Stream::Tls(Box::new(stream))
            }
        };
        let mut client = Client {
            stream,
            version: self.version,
            input: Vec::new(),
            out: Vec::new(),
            receive_maximum: None,
        };
        let connect = Connect {
            protocol: self.version,
            clean_start: true,
            keep_alive: self.keep_alive,
            properties: Properties::empty(),
            client_id,
            will: None,
            username: self.username.as_deref(),
            password: self.password.as_deref().map(str::as_bytes),
        };
        client.push(&Packet::Connect(ConnectPacket::from(&connect)))?;
        client.flush().await?;
        let (refused, receive_maximum) = client
            .handshake("CONNACK", |packet| match packet {
                Packet::ConnAck(ack) => Ok((
                    ack.reason_code
                        .is_error()
                        .then(|| ack.reason_code.description()),
                    ack.properties.receive_maximum(),
                )),
                other => Err(unexpected("CONNACK", &other)),
            })
            .await?;
        if let Some(reason) = refused {
            return Err(BenchError::Refused(format!(
                "the broker refused CONNECT of {client_id}: {reason}"
            )));
        }
        client.receive_maximum = receive_maximum;
        Ok(client)
    }
}

impl Client {
    /// Subscribes to `filter` at `qos` and waits for a SUBACK that grants it.
    pub(crate) async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<(), BenchError> {
        let subscriptions = [Subscription::new(filter, SubscriptionOptions::qos(qos))];
        let subscribe = Subscribe {
            packet_id: PacketId::MIN,
            properties: Properties::empty(),
            subscriptions: List::new(&subscriptions),
        };
        self.push(&Packet::Subscribe(subscribe))?;
        self.flush().await?;
        let refused = self
            .handshake("SUBACK", |packet| match packet {
                Packet::SubAck(ack) => Ok(ack.reason_codes.iter().find(|c| c.is_error())),
                other => Err(unexpected("SUBACK", &other)),
            })
            .await?;
        match refused {
            Some(code) => Err(BenchError::Refused(format!(
                "the broker refused the subscription to {filter}: {}",
                code.description()
            ))),
            None => Ok(()),
        }
    }

    /// Sends DISCONNECT and closes the connection, ignoring errors: the run is over. A
    /// broker that no longer reads gets a second, then the socket is simply dropped.
    pub(crate) async fn disconnect(mut self) {
        self.out.clear();
        let goodbye = async {
            if self
                .push(&Packet::Disconnect(Disconnect::default()))
                .is_ok()
            {
                let _ = self.flush().await;
            }
            let _ = self.stream.shutdown().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), goodbye).await;
    }

    /// Encodes `packet` at the end of the output buffer.
    pub(crate) fn push(&mut self, packet: &Packet<'_>) -> Result<(), BenchError> {
        Outbox {
            out: &mut self.out,
            version: self.version,
        }
        .push(packet)
    }

    /// Writes the output buffer out and empties it.
    pub(crate) async fn flush(&mut self) -> Result<(), BenchError> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.stream
            .write_all(&self.out)
            .await
            .map_err(|e| BenchError::io("write", e))?;
        // TLS may hold records back until flushed; for TCP this does nothing.
        self.stream
            .flush()
            .await
            .map_err(|e| BenchError::io("write", e))?;
        self.out.clear();
        Ok(())
    }

    /// Waits for bytes and appends them to the read buffer. The end of the stream is an
    /// error: the tool never expects the broker to hang up.
    pub(crate) async fn read(&mut self) -> Result<(), BenchError> {
        self.input.reserve(READ_CHUNK);
        match self.stream.read_buf(&mut self.input).await {
            Ok(0) => Err(BenchError::Closed),
            Ok(_) => Ok(()),
            Err(e) => Err(BenchError::io("read", e)),
        }
    }

    /// Appends whatever bytes are ready without waiting; returns whether there were any.
    pub(crate) fn try_read(&mut self) -> Result<bool, BenchError> {
        self.input.reserve(READ_CHUNK);
        match self.stream.try_read_buf(&mut self.input) {
            Ok(0) => Err(BenchError::Closed),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(BenchError::io("read", e)),
        }
    }

    /// Decodes every whole packet in the read buffer, in order, handing each to `handle`
    /// with the output buffer (for the acknowledgments it answers with).
    pub(crate) fn drain(
        &mut self,
        mut handle: impl FnMut(Packet<'_>, &mut Outbox<'_>) -> Result<(), BenchError>,
    ) -> Result<(), BenchError> {
        let mut used = 0;
        let mut outbox = Outbox {
            out: &mut self.out,
            version: self.version,
        };
        loop {
            match decode(&self.input[used..], self.version, MAX_PACKET) {
                Ok((packet, len)) => {
                    used += len;
                    handle(packet, &mut outbox)?;
                }
                Err(DecodeError::Incomplete { .. }) => break,
                Err(e) => return Err(BenchError::Protocol(format!("bad packet: {e}"))),
            }
        }
        self.input.drain(..used);
        if self.input.is_empty() && self.input.capacity() > 4 * READ_CHUNK {
            // A burst grew the buffer; an idle connection should not keep it.
            self.input = Vec::new();
        }
        Ok(())
    }

    /// Reads until one whole packet is buffered and returns what `answer` makes of it.
    async fn handshake<T>(
        &mut self,
        waiting_for: &str,
        answer: impl FnOnce(Packet<'_>) -> Result<T, BenchError>,
    ) -> Result<T, BenchError> {
        let read = async {
            loop {
                match decode(&self.input, self.version, MAX_PACKET) {
                    Ok((packet, len)) => {
                        let answer = answer(packet);
                        self.input.drain(..len);
                        return answer;
                    }
                    Err(DecodeError::Incomplete { .. }) => self.read().await?,
                    Err(e) => return Err(BenchError::Protocol(format!("bad packet: {e}"))),
                }
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, read)
            .await
            .map_err(|_| {
                BenchError::Timeout(format!("no {waiting_for} within {HANDSHAKE_TIMEOUT:?}"))
            })?
    }
}

/// The output buffer as [`Client::drain`] lends it: packets pushed here go out with the
/// next flush.
#[derive(Debug)]
pub(crate) struct Outbox<'a> {
    out: &'a mut Vec<u8>,
    version: ProtocolVersion,
}

impl Outbox<'_> {
    /// Encodes `packet` at the end of the output buffer.
    pub(crate) fn push(&mut self, packet: &Packet<'_>) -> Result<(), BenchError> {
        let start = self.out.len();
        self.out.resize(start + packet.encoded_len(self.version), 0);
        packet
            .encode(self.version, &mut self.out[start..])
            .map_err(|e| {
                self.out.truncate(start);
                BenchError::Protocol(format!("cannot encode {:?}: {e}", packet.packet_type()))
            })?;
        Ok(())
    }
}

/// The error for a packet that is not the one a handshake waits for.
pub(crate) fn unexpected(waiting_for: &str, packet: &Packet<'_>) -> BenchError {
    BenchError::Protocol(format!(
        "expected {waiting_for}, got {:?}",
        packet.packet_type()
    ))
}
