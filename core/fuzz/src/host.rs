//! What a fuzz target needs to act as the broker's host: take its output the way a real
//! host does and check that it is a valid server-to-client stream.

use fulmar_core::broker::{Broker, BrokerStorage, Config, ConnectionId, Hooks};
use fulmar_core::codec::{EncodeError, Packet, ProtocolVersion, decode};
use fulmar_core::time::Instant;

/// Takes what the broker has to send on connection `id` (at most 10 000 writes) and hands
/// it to `out`, the way a host does: a buffer too small for the next packet is grown to the
/// size the broker asks for.
pub fn transmit<S: BrokerStorage, H: Hooks>(
    broker: &mut Broker<S, H>,
    id: ConnectionId,
    buf: &mut Vec<u8>,
    now: Instant,
    mut out: impl FnMut(&[u8]),
) {
    let mut grown = false;
    for _ in 0..10_000 {
        match broker.poll_transmit(id, buf, now) {
            Ok(0) => return,
            Ok(n) => {
                assert!(n <= buf.len(), "wrote {n} bytes into {}", buf.len());
                out(&buf[..n]);
                grown = false;
            }
            Err(EncodeError::InsufficientSize { required }) => {
                assert!(!grown, "still InsufficientSize after growing to {required}");
                assert!(
                    required > buf.len(),
                    "InsufficientSize {{ {required} }} from a buffer of {}",
                    buf.len()
                );
                buf.resize(required, 0);
                grown = true;
            }
            Err(e) => panic!("poll_transmit failed: {e:?}"),
        }
    }
}

/// Decodes a server-to-client stream; returns the bytes of whole packets.
pub fn decode_stream(
    bytes: &[u8],
    version: ProtocolVersion,
) -> Result<usize, fulmar_core::codec::DecodeError> {
    let mut used = 0;
    while used < bytes.len() {
        match decode(&bytes[used..], version, usize::MAX) {
            Ok((packet, n)) => {
                assert!(
                    !matches!(
                        packet,
                        Packet::Connect(_)
                            | Packet::Subscribe(_)
                            | Packet::Unsubscribe(_)
                            | Packet::PingReq
                    ),
                    "the broker sent a client packet: {packet:?}"
                );
                used += n;
            }
            Err(e) if e.is_incomplete() => break,
            Err(e) => return Err(e),
        }
    }
    Ok(used)
}

fulmar_core::fixed_broker_storage! {
    /// A fixed-capacity broker's storage small enough that every "full" path runs.
    pub struct Tiny {
        connections: 4, sessions: 3, subscriptions: 6, topic_nodes: 12, share_groups: 2,
        text: 12, messages: 8, queue: 8, controls: 6, inbound: 4, aliases: 4,
        retained: 3, blob_bytes: 512, slots: 16, pending: 4, auth_scratch: 64,
    }
}

/// Limits as small as [`Tiny`]'s, persistence on: every limit is reached quickly.
pub fn config() -> Config {
    Config {
        max_connections: 4,
        max_clients: 3,
        max_sessions: 3,
        max_packet_size: 512,
        max_subscriptions_per_client: 3,
        max_inflight: 2,
        receive_maximum: 2,
        max_queued_messages: 3,
        max_queued_bytes: 200,
        max_retained: 2,
        max_retained_bytes: 100,
        topic_alias_maximum: 2,
        max_session_expiry: 100,
        max_keep_alive: 3,
        persistence: true,
        ..Config::default()
    }
}
