//! Output in pieces ([`Broker::poll_transmit_pieces`]): a PUBLISH larger than the room the
//! host has is begun in that room and finished by the next calls, straight from the stored
//! message. A host can then send packets of any size through a small buffer (a firmware's
//! TCP transmit ring of a few hundred bytes) with no copy of the packet anywhere.
//!
//! A PUBLISH on the wire is stored bytes (topic name, the message's properties in wire
//! form, payload) framed by bytes made for each delivery (fixed header, lengths, packet
//! identifier, Topic Alias, Message Expiry Interval, Subscription Identifiers). When a
//! PUBLISH is begun, its delivery is committed as if it had been sent whole (packet
//! identifier, DUP, alias and expiry chosen, the queue entry moved on) and the framing
//! bytes are kept with the connection; the message is kept alive by a reference until its
//! last byte is out, even when its queue entry is gone (QoS 0, a session taken over).

use super::message::MessageParts;
use super::{Broker, BrokerStorage, ConnectionId, Hooks};
use crate::codec::{Packet, ProtocolVersion, ReasonCode};
use crate::time::Instant;

/// Room for a PUBLISH's framing: fixed header and topic length (7 bytes at most), packet
/// identifier and property length (6), Topic Alias (3), Message Expiry Interval (5) and
/// four Subscription Identifiers (5 each).
const FRAMING: usize = 41;

/// The rest of a PUBLISH begun on a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Partial {
    /// The stored message, holding one reference for this packet.
    message: u32,
    /// Bytes of the packet written so far.
    sent: u32,
    /// The three framing runs (`encode_framing` of [`crate::codec::Publish`]), one after
    /// the other.
    framing: [u8; FRAMING],
    runs: [u8; 3],
    /// The topic name is sent (not when a Topic Alias the client knows stands for it).
    topic: bool,
    /// The message's stored properties are sent (5.0).
    properties: bool,
}

impl Partial {
    /// Begins `packet`, a PUBLISH of stored message `message` (whose parts are `parts`),
    /// in `out`; returns the state to finish it and the bytes written. `None` if its
    /// framing cannot be made (then nothing is written).
    pub(crate) fn start(
        packet: &Packet<'_>,
        version: ProtocolVersion,
        message: u32,
        parts: MessageParts<'_>,
        out: &mut [u8],
    ) -> Option<(Self, usize)> {
        let Packet::Publish(publish) = packet else {
            return None;
        };
        let mut framing = [0; FRAMING];
        let runs = publish.encode_framing(version, &mut framing)?;
        let mut partial = Self {
            message,
            sent: 0,
            framing,
            // Each run is under FRAMING bytes (encode_framing checked they fit).
            runs: runs.map(|r| r as u8),
            topic: !publish.topic.is_empty(),
            properties: version.is_v5(),
        };
        let written = partial.write(parts, out);
        Some((partial, written))
    }

    /// The packet as the six runs it is sent from.
    fn runs<'p>(&'p self, parts: MessageParts<'p>) -> [&'p [u8]; 6] {
        let [first, second, third] = self.runs.map(usize::from);
        [
            &self.framing[..first],
            if self.topic {
                parts.topic.as_bytes()
            } else {
                &[]
            },
            &self.framing[first..first + second],
            if self.properties {
                parts.properties
            } else {
                &[]
            },
            &self.framing[first + second..first + second + third],
            parts.payload,
        ]
    }

    /// Writes the next bytes of the packet into `out`; returns how many.
    fn write(&mut self, parts: MessageParts<'_>, out: &mut [u8]) -> usize {
        let mut skip = self.sent as usize;
        let mut written = 0;
        for run in self.runs(parts) {
            if skip >= run.len() {
                skip -= run.len();
                continue;
            }
            let take = (run.len() - skip).min(out.len() - written);
            out[written..written + take].copy_from_slice(&run[skip..skip + take]);
            written += take;
            skip = 0;
        }
        self.sent += written as u32;
        written
    }

    /// Whether every byte of the packet is written.
    fn is_complete(&self, parts: MessageParts<'_>) -> bool {
        let len: usize = self.runs(parts).iter().map(|run| run.len()).sum();
        self.sent as usize >= len
    }
}

impl<S: BrokerStorage, H: Hooks> Broker<S, H> {
    /// Writes what is waiting for connection `id` into `buf`, as [`Broker::poll_transmit`]
    /// does, except that a PUBLISH that does not fit is written in pieces: as much as fits
    /// now, the rest by the next calls (before anything else for the connection). So `buf`
    /// need not hold a whole packet: a host can pass whatever room its socket has, and
    /// must write every byte it is given, in order. Control packets are still written
    /// whole (they are small: acknowledgments, CONNACK, SUBACK); when the next one does not
    /// fit in an empty `buf` the error says how large `buf` must be
    /// ([`crate::codec::EncodeError::InsufficientSize`]), as does a PUBLISH whose framing
    /// cannot be made.
    pub fn poll_transmit_pieces(
        &mut self,
        id: ConnectionId,
        buf: &mut [u8],
        now: Instant,
    ) -> Result<usize, crate::codec::EncodeError> {
        self.transmit(id, buf, now, true)
    }

    /// Writes the next bytes of the connection's unfinished PUBLISH into `buf`.
    pub(super) fn continue_partial(
        &mut self,
        id: ConnectionId,
        buf: &mut [u8],
        now: Instant,
    ) -> usize {
        let Some(mut partial) = self.connection(id).and_then(|c| c.partial) else {
            return 0;
        };
        let parts = self
            .messages
            .get(partial.message)
            .and_then(|m| m.parts(&self.blobs));
        let Some(parts) = parts else {
            // Cannot happen (the message is held for the packet); the stream is cut short
            // either way, so the connection ends.
            self.end_partial(id);
            self.close_silently(id, ReasonCode::UnspecifiedError, now);
            return 0;
        };
        let written = partial.write(parts, buf);
        if partial.is_complete(parts) {
            self.end_partial(id);
        } else if let Some(conn) = self.connection_mut(id) {
            conn.partial = Some(partial);
        }
        written
    }

    /// Keeps `partial`, just begun, with connection `id`, and its message alive.
    pub(super) fn pin_partial(&mut self, id: ConnectionId, partial: Partial) {
        let Some(conn) = self.connection_mut(id) else {
            return;
        };
        conn.partial = Some(partial);
        if let Some(message) = self.messages.get_mut(partial.message) {
            message.refs += 1;
        }
    }

    /// Forgets the connection's unfinished PUBLISH, if any, and lets its message go.
    pub(super) fn end_partial(&mut self, id: ConnectionId) {
        if let Some(partial) = self.connection_mut(id).and_then(|c| c.partial.take()) {
            self.release_message(partial.message);
        }
    }
}
