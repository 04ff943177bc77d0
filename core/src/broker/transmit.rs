//! Output: control packets waiting per connection, and [`Broker::poll_transmit`], which
//! encodes them and the session's queued messages into the host's buffer.
//!
//! Messages are encoded only when they are sent, straight from the stored copy, so a
//! message queued for a thousand sessions is held once.

use super::connection::Phase;
use super::{Broker, BrokerStorage, ConnectionId, Hooks};
use crate::blob::{BlobId, BlobStore};
use crate::codec::{
    Ack, ConnAck, Disconnect, EncodeError, List, Packet, PacketId, Properties, Property,
    ProtocolVersion, Publish, QoS, QoSPid, ReasonCode, SubAck, UnsubAck,
};
use crate::router::MAX_IDENTIFIERS;
use crate::session::DeliveryState;
use crate::storage::Link;
use crate::time::Instant;

/// What CONNACK says besides the reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct ConnAckInfo {
    pub(crate) session_present: bool,
    pub(crate) code: ReasonCode,
    /// Send the session's client identifier as Assigned Client Identifier.
    pub(crate) assigned_client_id: bool,
    pub(crate) server_keep_alive: Option<u16>,
    /// The Session Expiry Interval the broker granted, when it is not the one asked for.
    pub(crate) session_expiry: Option<u32>,
    /// Enhanced authentication: the method and the final data, in blobs.
    pub(crate) auth: Option<(BlobId, Option<BlobId>)>,
}

impl Default for ConnAckInfo {
    fn default() -> Self {
        Self {
            session_present: false,
            code: ReasonCode::Success,
            assigned_client_id: false,
            server_keep_alive: None,
            session_expiry: None,
            auth: None,
        }
    }
}

/// A control packet waiting to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) enum ControlKind {
    ConnAck(ConnAckInfo),
    PubAck(PacketId, ReasonCode),
    PubRec(PacketId, ReasonCode),
    /// A PUBREL for an identifier that is not in flight (answering a stray PUBREC).
    PubRel(PacketId, ReasonCode),
    PubComp(PacketId, ReasonCode),
    /// SUBACK; the reason codes are in a blob, one byte per filter.
    SubAck(PacketId, BlobId),
    /// UNSUBACK; 5.0 reason codes in a blob.
    UnsubAck(PacketId, BlobId),
    PingResp,
    Disconnect(ReasonCode),
    /// AUTH with the connection's method and, if any, data from a blob.
    Auth(ReasonCode, Option<BlobId>),
}

/// A control packet in a connection's output chain.
#[derive(Debug)]
pub struct Control {
    pub(crate) kind: ControlKind,
    pub(crate) next: Link,
}

impl Control {
    /// Frees what the packet holds outside the chain.
    pub(crate) fn free(&self, blobs: &mut impl BlobStore) {
        match self.kind {
            ControlKind::SubAck(_, codes) | ControlKind::UnsubAck(_, codes) => {
                blobs.remove(codes);
            }
            ControlKind::Auth(_, Some(data)) => {
                blobs.remove(data);
            }
            ControlKind::ConnAck(ConnAckInfo {
                auth: Some((method, data)),
                ..
            }) => {
                blobs.remove(method);
                if let Some(data) = data {
                    blobs.remove(data);
                }
            }
            _ => {}
        }
    }
}

impl<S: BrokerStorage, H: Hooks> Broker<S, H> {
    /// Queues a control packet for a connection. Without room for it, the connection is
    /// closed: a broker that cannot answer must not pretend it did.
    pub(super) fn push_control(&mut self, id: ConnectionId, kind: ControlKind, now: Instant) {
        let Some(conn) = self.connection(id) else {
            return;
        };
        let tail = conn.controls_tail.get();
        let Ok(handle) = self.controls.insert(Control {
            kind,
            next: Link::NONE,
        }) else {
            if let Some(c) = self.connection_mut(id) {
                c.phase = Phase::Closing;
                c.close_reason = Some(ReasonCode::ServerBusy);
            }
            let _ = now;
            self.queue_event(id.slot);
            return;
        };
        match tail.and_then(|t| self.controls.get_mut(t)) {
            Some(t) => t.next = Link::to(handle),
            None => {
                if let Some(c) = self.connection_mut(id) {
                    c.controls_head = Link::to(handle);
                }
            }
        }
        if let Some(c) = self.connection_mut(id) {
            c.controls_tail = Link::to(handle);
        }
        self.signal_transmit(id);
    }

    /// Writes packets waiting for connection `id` into `buf` and returns how many bytes it
    /// wrote; `Ok(0)` means nothing is waiting. Call again until it returns `Ok(0)`.
    ///
    /// Control packets go first, then the session's messages in order, within the client's
    /// Receive Maximum ([MQTT-3.3.4-9]), re-sends included. Only whole packets are
    /// written. If the next packet does not fit in an empty `buf`, nothing is lost: the
    /// error says how large `buf` must be ([`EncodeError::InsufficientSize`]). A PUBLISH
    /// can be larger than the one that brought it in (a 5.0 subscriber gets properties a
    /// 3.1.1 publisher did not send), so give somewhat more than
    /// [`super::Config::max_packet_size`].
    ///
    /// [`Event::Transmit`](super::Event::Transmit) is raised once when output appears and
    /// not again until a call returns `Ok(0)`: a host that stops early (its socket is full)
    /// must come back to the connection by itself.
    pub fn poll_transmit(
        &mut self,
        id: ConnectionId,
        buf: &mut [u8],
        now: Instant,
    ) -> Result<usize, EncodeError> {
        self.transmit(id, buf, now, false)
    }

    /// [`Broker::poll_transmit`] or, with `pieces`, [`Broker::poll_transmit_pieces`].
    pub(super) fn transmit(
        &mut self,
        id: ConnectionId,
        buf: &mut [u8],
        now: Instant,
        pieces: bool,
    ) -> Result<usize, EncodeError> {
        self.transmit_needs_durability = false;
        // The rest of a PUBLISH begun by an earlier call comes first, whatever happened since.
        let mut written = self.continue_partial(id, buf, now);
        let Some(conn) = self.connection(id) else {
            return Ok(0);
        };
        if conn.partial.is_some() {
            return Ok(self.sent(written));
        }
        let version = conn.protocol;
        let session = conn.session.get();
        let phase = conn.phase;

        // Control packets.
        while let Some(handle) = self.connection(id).and_then(|c| c.controls_head.get()) {
            let Some(control) = self.controls.get(handle) else {
                break;
            };
            let kind = control.kind;
            let next = control.next;
            match self.encode_control(id, kind, session, version, &mut buf[written..]) {
                Ok(n) => {
                    written += n;
                    self.stats.packets_sent += 1;
                    self.transmit_needs_durability |= !matches!(kind, ControlKind::PingResp);
                }
                Err(EncodeError::InsufficientSize { .. }) if written > 0 => {
                    return Ok(self.sent(written));
                }
                // Kept for a larger buffer.
                Err(e @ EncodeError::InsufficientSize { .. }) => return Err(e),
                // Cannot be encoded at all: drop it rather than block the connection.
                Err(_) => {}
            }
            if let Some(c) = self.controls.remove(handle) {
                c.free(&mut self.blobs);
            }
            if let Some(c) = self.connection_mut(id) {
                c.controls_head = next;
                if next.is_none() {
                    c.controls_tail = Link::NONE;
                    // All its answers are written: its input may go on.
                    if c.controls_full {
                        c.controls_full = false;
                        c.resume_unreported = true;
                        self.queue_event(id.slot);
                    }
                }
            }
        }

        // Messages (in pieces, not into a buffer already filled: an identifier would be
        // taken for nothing).
        if phase == Phase::Connected
            && let Some(session) = session
            && !(pieces && written > 0 && written == buf.len())
        {
            match self.transmit_messages(id, session, version, &mut buf[written..], now, pieces) {
                Ok(n) => written += n,
                Err(required) if written == 0 => {
                    return Err(EncodeError::InsufficientSize { required });
                }
                Err(_) => {}
            }
        }
        if written == 0
            && let Some(c) = self.connection_mut(id)
        {
            c.transmit_signalled = false;
        }
        Ok(self.sent(written))
    }

    /// Whether the bytes the last [`Broker::poll_transmit`] wrote must wait until the
    /// persistence ops polled so far ([`Broker::poll_persist`]) are durable: they hold an
    /// acknowledgement (PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK), a CONNACK, a PUBREL or
    /// a QoS 2 delivery, whose state a crash must not take back (Invariant 1,
    /// ARCHITECTURE.md). QoS 0 and QoS 1 deliveries (and PINGRESP) need not wait: a crash
    /// can at worst make a QoS 1 message be sent again, which QoS 1 allows (§4.3.2).
    pub fn transmit_needs_durability(&self) -> bool {
        self.transmit_needs_durability
    }

    fn sent(&mut self, bytes: usize) -> usize {
        self.stats.bytes_sent += bytes as u64;
        bytes
    }

    fn encode_control(
        &self,
        id: ConnectionId,
        kind: ControlKind,
        session: Option<u32>,
        version: ProtocolVersion,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let ack = |packet_id, reason_code| Ack {
            packet_id,
            reason_code,
            properties: Properties::empty(),
        };
        match kind {
            ControlKind::ConnAck(info) => self.encode_connack(info, session, version, out),
            ControlKind::PubAck(pid, code) => Packet::PubAck(ack(pid, code)).encode(version, out),
            ControlKind::PubRec(pid, code) => Packet::PubRec(ack(pid, code)).encode(version, out),
            ControlKind::PubRel(pid, code) => Packet::PubRel(ack(pid, code)).encode(version, out),
            ControlKind::PubComp(pid, code) => Packet::PubComp(ack(pid, code)).encode(version, out),
            ControlKind::SubAck(packet_id, codes) => {
                // The blob holds the codes exactly as they go on the wire.
                let reason_codes = List::from_wire(self.blobs.get(codes).unwrap_or(&[]));
                Packet::SubAck(SubAck {
                    packet_id,
                    properties: Properties::empty(),
                    reason_codes,
                })
                .encode(version, out)
            }
            ControlKind::UnsubAck(packet_id, codes) => {
                let reason_codes = List::from_wire(self.blobs.get(codes).unwrap_or(&[]));
                Packet::UnsubAck(UnsubAck {
                    packet_id,
                    properties: Properties::empty(),
                    reason_codes,
                })
                .encode(version, out)
            }
            ControlKind::Auth(reason_code, data) => {
                let method = self
                    .connection(id)
                    .and_then(|c| c.auth_method)
                    .and_then(|b| self.blobs.get(b))
                    .and_then(|b| core::str::from_utf8(b).ok());
                let data = data.and_then(|d| self.blobs.get(d));
                let props: heapless::Vec<Property<'_>, 2> = [
                    method.map(Property::AuthenticationMethod),
                    data.map(Property::AuthenticationData),
                ]
                .into_iter()
                .flatten()
                .collect();
                Packet::Auth(crate::codec::Auth {
                    reason_code,
                    properties: List::new(&props),
                })
                .encode(version, out)
            }
            ControlKind::PingResp => Packet::PingResp.encode(version, out),
            ControlKind::Disconnect(code) => {
                Packet::Disconnect(Disconnect::new(code)).encode(version, out)
            }
        }
    }

    fn encode_connack(
        &self,
        info: ConnAckInfo,
        session: Option<u32>,
        version: ProtocolVersion,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let mut props: heapless::Vec<Property<'_>, 14> = heapless::Vec::new();
        if let Some((method, data)) = info.auth {
            let text = self
                .blobs
                .get(method)
                .and_then(|b| core::str::from_utf8(b).ok());
            if let Some(text) = text {
                let _ = props.push(Property::AuthenticationMethod(text));
            }
            if let Some(bytes) = data.and_then(|d| self.blobs.get(d)) {
                let _ = props.push(Property::AuthenticationData(bytes));
            }
        }
        if version.is_v5() && !info.code.is_error() {
            let c = &self.config;
            let assigned = session
                .filter(|_| info.assigned_client_id)
                .and_then(|s| self.sessions.get(s))
                .map(|s| s.client_id());
            let candidates = [
                info.session_expiry.map(Property::SessionExpiryInterval),
                assigned.map(Property::AssignedClientIdentifier),
                info.server_keep_alive.map(Property::ServerKeepAlive),
                Some(Property::ReceiveMaximum(c.receive_maximum.max(1))),
                (c.max_qos < QoS::ExactlyOnce).then_some(Property::MaximumQoS(c.max_qos)),
                (!c.retain_available).then_some(Property::RetainAvailable(false)),
                Some(Property::MaximumPacketSize(c.max_packet_size)),
                (c.topic_alias_maximum > 0)
                    .then_some(Property::TopicAliasMaximum(c.topic_alias_maximum)),
            ];
            for p in candidates.into_iter().flatten() {
                let _ = props.push(p);
            }
        }
        let session_present = info.session_present && !info.code.is_error();
        Packet::ConnAck(ConnAck {
            session_present,
            reason_code: info.code,
            properties: List::new(&props),
        })
        .encode(version, out)
    }

    /// Sends the session's due queue entries; returns the bytes written, or, when not even
    /// the first due packet fits in `out`, the size it needs. With `pieces`, a PUBLISH
    /// that does not fit is begun in the room left and continued by the next calls.
    fn transmit_messages(
        &mut self,
        id: ConnectionId,
        session: u32,
        version: ProtocolVersion,
        out: &mut [u8],
        now: Instant,
        pieces: bool,
    ) -> Result<usize, usize> {
        let mut written = 0;
        // In-flight PUBLISH still to be sent again on this connection (counted when first
        // needed), and whether one of them has to wait for room.
        let mut awaiting_resend: Option<u32> = None;
        let mut resend_waits = false;
        // Start where the last call left off, not at the head: the entries before it are
        // in flight with nothing to send. The cursor follows this walk while every entry
        // it leaves behind is done with.
        let Some((mut prev, mut cursor)) = self
            .sessions
            .get(session)
            .map(|s| (s.queue.unsent_prev.get(), s.queue.unsent.get()))
        else {
            return Ok(0);
        };
        let mut advance = true;
        while let Some(h) = cursor {
            // In pieces, a buffer filled ends the call before an identifier is taken for
            // nothing (an empty one is answered below, as without pieces).
            if pieces && written > 0 && written == out.len() {
                break;
            }
            let Some(entry) = self.queue.get(h) else {
                break;
            };
            let next = entry.next.get();
            if !entry.needs_send {
                self.pass_entry(session, advance, h, next);
                prev = Some(h);
                cursor = next;
                continue;
            }
            let Some(s) = self.sessions.get(session) else {
                break;
            };
            let (receive_maximum, max_packet) = (s.receive_maximum, s.max_packet_size);
            let inflight = s.queue.inflight;

            if entry.state == DeliveryState::AwaitingPubComp {
                let Some(pid) = entry.packet_id else { break };
                let packet = Packet::PubRel(Ack::new(pid));
                match packet.encode(version, &mut out[written..]) {
                    Ok(n) => {
                        written += n;
                        self.transmit_needs_durability = true;
                    }
                    Err(EncodeError::InsufficientSize { required }) if written == 0 => {
                        return Err(required);
                    }
                    Err(_) => break,
                }
                self.stats.packets_sent += 1;
                if let Some(e) = self.queue.get_mut(h) {
                    e.needs_send = false;
                }
                self.pass_entry(session, advance, h, next);
                prev = Some(h);
                cursor = next;
                continue;
            }

            let fresh = entry.state == DeliveryState::Queued;
            // [MQTT-3.3.4-9]: no more QoS 1/2 PUBLISH unacknowledged than the client's
            // Receive Maximum. After a reconnection that counts the re-sends too: those in
            // flight from the earlier connection take a place as they go out again.
            // A fresh entry comes after every entry in flight (entries go out in queue
            // order) and after every re-send, each gone out by now or waiting (which
            // holds it back too): its window is simply the in-flight count.
            let window_checked = !fresh || entry.qos > QoS::AtMostOnce;
            let full = window_checked
                && (resend_waits
                    || inflight >= u32::from(receive_maximum) && {
                        fresh || {
                            let pending = match awaiting_resend {
                                Some(n) => n,
                                None => *awaiting_resend.insert(self.awaiting_resend(session)),
                            };
                            inflight - pending.min(inflight) >= u32::from(receive_maximum)
                        }
                    });
            if fresh && (full || resend_waits) {
                break;
            }
            if full {
                // The re-send waits, and every PUBLISH behind it; PUBREL does not
                // ([MQTT-3.3.4-10]).
                resend_waits = true;
                advance = false;
                prev = Some(h);
                cursor = next;
                continue;
            }
            let resend = !fresh;
            let resend_done = |n: &mut Option<u32>| {
                if resend && let Some(n) = n {
                    *n = n.saturating_sub(1);
                }
            };
            let Some(message) = entry.message.get().and_then(|m| self.messages.get(m)) else {
                resend_done(&mut awaiting_resend);
                self.unlink_entry(session, prev, h);
                cursor = next;
                continue;
            };
            // Message Expiry Interval (§3.3.2.3.3): drop expired, send the time left.
            let remaining = match message.expires_at {
                Some(at) if at <= now => {
                    self.stats.messages_expired += 1;
                    resend_done(&mut awaiting_resend);
                    self.unlink_entry(session, prev, h);
                    cursor = next;
                    continue;
                }
                Some(at) => Some((at - now).as_secs_ceil().min(u64::from(u32::MAX)) as u32),
                None => None,
            };
            let packet_id = match entry.packet_id {
                Some(pid) => Some(pid),
                None if entry.qos > QoS::AtMostOnce => match self.next_packet_id(session) {
                    Some(pid) => Some(pid),
                    None => break,
                },
                None => None,
            };
            let Some(entry) = self.queue.get(h) else {
                break;
            };
            let Some(message) = entry.message.get().and_then(|m| self.messages.get(m)) else {
                break;
            };
            let Some(parts) = message.parts(&self.blobs) else {
                break;
            };
            let mut extra: heapless::Vec<Property<'_>, { MAX_IDENTIFIERS + 2 }> =
                heapless::Vec::new();
            let alias = self.outbound_alias(id, parts.topic);
            let topic = match alias {
                AliasUse::Known(a) => {
                    let _ = extra.push(Property::TopicAlias(a));
                    ""
                }
                AliasUse::New(a) => {
                    let _ = extra.push(Property::TopicAlias(a));
                    parts.topic
                }
                AliasUse::None => parts.topic,
            };
            if let Some(seconds) = remaining {
                let _ = extra.push(Property::MessageExpiryInterval(seconds));
            }
            for id in &entry.identifiers {
                let _ = extra.push(Property::SubscriptionIdentifier(id.get()));
            }
            let qos_pid = match (entry.qos, packet_id) {
                (QoS::AtLeastOnce, Some(pid)) => QoSPid::AtLeastOnce(pid),
                (QoS::ExactlyOnce, Some(pid)) => QoSPid::ExactlyOnce(pid),
                _ => QoSPid::AtMostOnce,
            };
            let publish = Packet::Publish(Publish {
                dup: entry.dup && qos_pid != QoSPid::AtMostOnce,
                qos_pid,
                retain: entry.retain,
                topic,
                properties: List::from_wire_and_items(parts.properties, &extra),
                payload: parts.payload,
            });
            let size = publish.encoded_len(version);
            // [MQTT-3.1.2-24]: never send more than the client's Maximum Packet Size; such
            // a message is discarded for this client, as if delivered ([MQTT-3.1.2-25]).
            if size > max_packet as usize {
                self.stats.messages_oversized += 1;
                resend_done(&mut awaiting_resend);
                self.unlink_entry(session, prev, h);
                cursor = next;
                continue;
            }
            let mut partial = None;
            match publish.encode(version, &mut out[written..]) {
                Ok(n) => written += n,
                Err(EncodeError::InsufficientSize { .. }) if pieces && written < out.len() => {
                    let room = &mut out[written..];
                    let Some((p, n)) = entry.message.get().and_then(|message| {
                        super::pieces::Partial::start(&publish, version, message, parts, room)
                    }) else {
                        break;
                    };
                    written += n;
                    partial = Some(p);
                }
                Err(EncodeError::InsufficientSize { required }) if written == 0 => {
                    return Err(required);
                }
                Err(_) => break,
            }
            // A QoS 2 delivery's packet identifier must be stored before the subscriber
            // sees it: sent again under another identifier after a crash, it would arrive
            // twice.
            self.transmit_needs_durability |= entry.qos == QoS::ExactlyOnce;
            self.stats.packets_sent += 1;
            self.stats.messages_sent += 1;
            resend_done(&mut awaiting_resend);
            let qos = entry.qos;
            let bytes = entry.bytes;
            if let (AliasUse::New(a), Some(message)) = (alias, entry.message.get()) {
                self.remember_outbound_alias(id, a, message);
            }
            // The rest goes out from the stored message, kept until then.
            let split = partial.is_some();
            if let Some(partial) = partial {
                self.pin_partial(id, partial);
            }
            if qos == QoS::AtMostOnce {
                self.unlink_entry(session, prev, h);
                if split {
                    break;
                }
                cursor = next;
                continue;
            }
            if let Some(e) = self.queue.get_mut(h) {
                e.needs_send = false;
                e.packet_id = packet_id;
                if e.state == DeliveryState::Queued {
                    e.state = if qos == QoS::AtLeastOnce {
                        DeliveryState::AwaitingPubAck
                    } else {
                        DeliveryState::AwaitingPubRec
                    };
                    if let Some(s) = self.sessions.get_mut(session) {
                        s.queue.queued -= 1;
                        s.queue.queued_bytes -= bytes;
                        s.queue.inflight += 1;
                    }
                    self.dequeued(session);
                }
            }
            self.mark_message(session, h);
            self.pass_entry(session, advance, h, next);
            if split {
                break;
            }
            prev = Some(h);
            cursor = next;
        }
        Ok(written)
    }

    /// Moves `session`'s send cursor past entry `h` (followed by `next`), which has
    /// nothing left to send, if the cursor is at it (`advance`).
    fn pass_entry(&mut self, session: u32, advance: bool, h: u32, next: Option<u32>) {
        if advance && let Some(s) = self.sessions.get_mut(session) {
            s.queue.unsent_prev = Link::to(h);
            s.queue.unsent = Link::from(next);
        }
    }

    /// A packet identifier for a new delivery to `session`, unique among the identifiers
    /// its queue holds ([MQTT-2.2.1-3]); `None` if all 65 535 are taken.
    ///
    /// Identifiers are handed out in turn, so the ones after the last are usually free:
    /// one walk over the queue finds how many are, and that many are then handed out
    /// without looking again.
    pub(super) fn next_packet_id(&mut self, session: u32) -> Option<PacketId> {
        // Identifiers 1..=65535 as positions 0..65535 on a cycle.
        const IDS: u32 = u16::MAX as u32;
        let s = self.sessions.get(session)?;
        let head = s.queue.head.get();
        let mut last = u32::from(s.last_packet_id).wrapping_sub(1).min(IDS - 1);
        let mut free = u32::from(s.free_packet_ids);
        // Each identifier found taken is passed by one; no more are taken than entries.
        let mut tries = s.queue.len;
        while free == 0 {
            // How far the nearest identifier in flight is from `last` (IDS: none).
            let mut nearest = IDS;
            let mut cursor = head;
            while let Some(e) = cursor.and_then(|c| self.queue.get(c)) {
                if let Some(pid) = e.packet_id {
                    let d = (u32::from(pid.get()) - 1 + IDS - last) % IDS;
                    if d > 0 {
                        nearest = nearest.min(d);
                    }
                }
                cursor = e.next.get();
            }
            free = nearest - 1;
            if free == 0 {
                tries = tries.checked_sub(1)?;
                last = (last + 1) % IDS;
            }
        }
        let s = self.sessions.get_mut(session)?;
        s.last_packet_id = ((last + 1) % IDS + 1) as u16;
        s.free_packet_ids = (free - 1) as u16;
        PacketId::new(s.last_packet_id)
    }

    /// The session's in-flight QoS 1 and 2 PUBLISH still to be sent again on the current
    /// connection ([MQTT-4.4.0-1]). Only the in-flight entries are looked at.
    fn awaiting_resend(&self, session: u32) -> u32 {
        let Some(s) = self.sessions.get(session) else {
            return 0;
        };
        let (mut seen, mut pending) = (0, 0);
        let mut cursor = s.queue.head.get();
        while let Some(e) = cursor.and_then(|c| self.queue.get(c)) {
            if seen >= s.queue.inflight {
                break;
            }
            if e.state != DeliveryState::Queued {
                seen += 1;
                if e.needs_send && e.state != DeliveryState::AwaitingPubComp {
                    pending += 1;
                }
            }
            cursor = e.next.get();
        }
        pending
    }
}

/// How a PUBLISH to a 5.0 client uses a topic alias (§3.3.2.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AliasUse {
    /// No alias (the client takes none, or all are taken by other topics).
    None,
    /// The client knows this alias for the topic: send an empty topic name.
    Known(u16),
    /// Set this alias now: send the topic name with it.
    New(u16),
}

impl<S: BrokerStorage, H: Hooks> Broker<S, H> {
    /// The alias to use for `topic` on connection `id`. Aliases are handed out first come,
    /// first served, up to the client's Topic Alias Maximum; a client that gave none gets
    /// none ([MQTT-3.3.2-11]).
    fn outbound_alias(&self, id: ConnectionId, topic: &str) -> AliasUse {
        let Some(conn) = self.connection(id) else {
            return AliasUse::None;
        };
        if conn.client_alias_max == 0 {
            return AliasUse::None;
        }
        let mut cursor = conn.outbound_aliases.get();
        while let Some(a) = cursor.and_then(|c| self.aliases.get(c)) {
            if self.blobs.get(a.topic) == Some(topic.as_bytes()) {
                return AliasUse::Known(a.alias);
            }
            cursor = a.next;
        }
        if conn.outbound_alias_count < conn.client_alias_max {
            AliasUse::New(conn.outbound_alias_count + 1)
        } else {
            AliasUse::None
        }
    }

    /// Records that the client now knows `alias` for the topic of `message`. Without room
    /// to record it the alias is simply not used again.
    fn remember_outbound_alias(&mut self, id: ConnectionId, alias: u16, message: u32) {
        let Some((blob, len)) = self
            .messages
            .get(message)
            .map(|m| (m.blob, usize::from(m.topic_len)))
        else {
            return;
        };
        let Ok(topic) = self.blobs.insert_prefixed(blob, len, len, |_| {}) else {
            return;
        };
        let head = self.connection(id).and_then(|c| c.outbound_aliases.get());
        match self.aliases.insert(super::Alias {
            alias,
            topic,
            next: head,
        }) {
            Ok(handle) => {
                if let Some(c) = self.connection_mut(id) {
                    c.outbound_aliases = Link::to(handle);
                    c.outbound_alias_count += 1;
                }
            }
            Err(_) => {
                self.blobs.remove(topic);
            }
        }
    }
}
