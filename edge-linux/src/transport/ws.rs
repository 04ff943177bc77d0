//! MQTT over WebSocket (MQTT 5.0 §6, MQTT 3.1.1 §6): the HTTP upgrade on the listener's
//! path with the `mqtt` subprotocol, then binary frames carrying the MQTT byte stream.
//!
//! Frames and packets are independent: a packet may span frames and a frame may hold
//! several packets, so incoming frame payloads are handed to the driver as a byte stream,
//! and each chunk the broker transmits goes out as one binary frame. Closing sends a
//! WebSocket Close frame (the close handshake); once it is answered (or the linger time is
//! over) the server ends the stream under it first, as RFC 6455 §7.1.1 asks: TLS
//! close_notify for a secure WebSocket, then FIN.

use std::io;
use std::task::{Context, Poll, ready};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::Error;
use crate::connection::{self, LINGER, Origin, Outbound, Transport};
use crate::shards::Shards;

/// Serves a WebSocket connection whose upgrade is done, then ends the stream under it.
pub(crate) async fn serve<S>(origin: Origin, stream: WebSocketStream<S>, broker: Shards)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut transport = WsTransport(stream);
    connection::serve(origin, &mut transport, broker).await;
    // Without this the TLS session of a secure WebSocket would end without close_notify,
    // which clients report as a truncated stream.
    let _ = tokio::time::timeout(LINGER, transport.0.get_mut().shutdown()).await;
}

/// The subprotocols accepted, in order of preference: `mqtt` is the registered name
/// ([MQTT-6.0.0-3]: the client includes it, [MQTT-6.0.0-4]: the server selects it);
/// `mqttv3.1` is what MQTT 3.1 era clients (old Paho JavaScript) send.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Bytes tungstenite reads at a time (allocated for every connection, idle or not).
const READ_BUFFER: usize = 4 * 1024;
/// Frame payload accepted beyond the maximum packet size: a frame may hold the end of one
/// packet and the start of the next.
const FRAME_MARGIN: usize = 64 * 1024;

/// The WebSocket side of a listener.
#[derive(Debug, Clone)]
pub(crate) struct Ws {
    path: String,
    config: WebSocketConfig,
}

impl Ws {
    /// A WebSocket side serving `path`, for packets up to `max_packet_size` bytes.
    pub(crate) fn new(path: &str, max_packet_size: u32) -> Result<Self, Error> {
        // The configuration checks this too; this keeps a library caller honest.
        if !path.starts_with('/') {
            return Err(Error::WsPath(path.to_owned()));
        }
        let frame = usize::try_from(max_packet_size)
            .unwrap_or(usize::MAX)
            .saturating_add(FRAME_MARGIN);
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            // Every chunk is flushed as it is sent: nothing to gather.
            .write_buffer_size(0)
            .max_frame_size(Some(frame))
            .max_message_size(Some(frame));
        Ok(Self {
            path: path.to_owned(),
            config,
        })
    }

    /// Runs the HTTP upgrade: refused (with an HTTP error) on another path or without an
    /// MQTT subprotocol.
    // The callback's error type is tungstenite's, not ours to shrink.
    #[allow(clippy::result_large_err)]
    pub(crate) async fn accept<S>(&self, stream: S) -> io::Result<WebSocketStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let upgrade = |request: &Request, response: Response| self.upgrade(request, response);
        tokio_tungstenite::accept_hdr_async_with_config(stream, upgrade, Some(self.config))
            .await
            .map_err(io::Error::other)
    }

    /// Checks the upgrade request and selects the subprotocol.
    // The callback's error type is tungstenite's, not ours to shrink.
    #[allow(clippy::result_large_err)]
    fn upgrade(
        &self,
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        if request.uri().path() != self.path {
            return Err(refusal(
                StatusCode::NOT_FOUND,
                format!("MQTT over WebSocket is served on {}", self.path),
            ));
        }
        let Some(chosen) = select_subprotocol(request) else {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "MQTT over WebSocket needs the subprotocol \"mqtt\" (Sec-WebSocket-Protocol)"
                    .to_owned(),
            ));
        };
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(chosen),
        );
        Ok(response)
    }
}

/// The MQTT subprotocol to answer with, from the client's `Sec-WebSocket-Protocol` list
/// (one header or several, comma-separated); the first of [`SUBPROTOCOLS`] offered.
fn select_subprotocol(request: &Request) -> Option<&'static str> {
    let offered: Vec<&str> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    SUBPROTOCOLS
        .into_iter()
        .find(|wanted| offered.contains(wanted))
}

/// An HTTP error answer to an upgrade request.
fn refusal(status: StatusCode, why: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(why));
    *response.status_mut() = status;
    response
}

/// A WebSocket connection: binary frames in and out.
#[derive(Debug)]
pub(crate) struct WsTransport<S>(pub(crate) WebSocketStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for WsTransport<S> {
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Vec<u8>>>> {
        loop {
            let message = match ready!(self.0.poll_next_unpin(cx)) {
                None => return Poll::Ready(Ok(None)),
                Some(Ok(message)) => message,
                Some(Err(error)) => return Poll::Ready(closed_or(error).map(|()| None)),
            };
            match message {
                Message::Binary(bytes) if !bytes.is_empty() => {
                    return Poll::Ready(Ok(Some(bytes.into())));
                }
                // [MQTT-6.0.0-1]: MQTT travels in binary frames; a text frame closes the
                // connection.
                Message::Text(_) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frame: MQTT travels in binary frames [MQTT-6.0.0-1]",
                    )));
                }
                // tungstenite answers pings itself; the close handshake ends the stream.
                Message::Binary(_)
                | Message::Ping(_)
                | Message::Pong(_)
                | Message::Close(_)
                | Message::Frame(_) => {}
            }
        }
    }

    /// Each chunk of output is one binary frame.
    fn poll_send(&mut self, cx: &mut Context<'_>, out: &mut Outbound) -> Poll<io::Result<()>> {
        if !out.rest().is_empty() {
            ready!(self.0.poll_ready_unpin(cx)).map_err(io::Error::other)?;
            let frame = std::mem::take(&mut out.bytes);
            out.advance(frame.len());
            self.0
                .start_send_unpin(Message::Binary(frame.into()))
                .map_err(io::Error::other)?;
        }
        self.0.poll_flush_unpin(cx).map_err(io::Error::other)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(match ready!(self.0.poll_close_unpin(cx)) {
            Ok(()) => Ok(()),
            Err(error) => closed_or(error),
        })
    }
}

/// A connection that is already closed is not an error here.
fn closed_or(error: tungstenite::Error) -> io::Result<()> {
    match error {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => Ok(()),
        tungstenite::Error::Io(error) => Err(error),
        other => Err(io::Error::other(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, protocols: &[&str]) -> Request {
        let mut builder = Request::builder().uri(path);
        for protocol in protocols {
            builder = builder.header(header::SEC_WEBSOCKET_PROTOCOL, *protocol);
        }
        builder.body(()).unwrap()
    }

    fn ws() -> Ws {
        Ws::new("/mqtt", 1 << 20).unwrap()
    }

    fn answer(request: &Request) -> Result<String, StatusCode> {
        match ws().upgrade(request, Response::default()) {
            Ok(response) => Ok(response.headers()[header::SEC_WEBSOCKET_PROTOCOL]
                .to_str()
                .unwrap()
                .to_owned()),
            Err(refused) => Err(refused.status()),
        }
    }

    #[test]
    fn mqtt_is_selected_from_any_list() {
        assert_eq!(answer(&request("/mqtt", &["mqtt"])), Ok("mqtt".into()));
        assert_eq!(
            answer(&request("/mqtt?x=1", &["chat, mqtt"])),
            Ok("mqtt".into())
        );
        assert_eq!(
            answer(&request("/mqtt", &["mqttv3.1", "mqtt"])),
            Ok("mqtt".into())
        );
        assert_eq!(
            answer(&request("/mqtt", &["mqttv3.1"])),
            Ok("mqttv3.1".into())
        );
    }

    #[test]
    fn wrong_path_or_protocol_is_refused() {
        assert_eq!(answer(&request("/", &["mqtt"])), Err(StatusCode::NOT_FOUND));
        assert_eq!(answer(&request("/mqtt", &[])), Err(StatusCode::BAD_REQUEST));
        assert_eq!(
            answer(&request("/mqtt", &["MQTT", "chat"])),
            Err(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn a_relative_path_is_a_configuration_error() {
        assert!(matches!(Ws::new("mqtt", 1024), Err(Error::WsPath(_))));
    }
}
