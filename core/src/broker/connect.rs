//! Opening and ending sessions: CONNECT validation and CONNACK (§3.1, §3.2), client
//! identifier takeover, wills (§3.1.2.5), DISCONNECT (§3.14) and session expiry.

use super::connection::Phase;
use super::hooks::ConnectRequest;
use super::publish::TopicRef;
use super::transmit::{ConnAckInfo, ControlKind};
use super::{Broker, BrokerStorage, ConnectionId, Hooks};
use crate::blob::BlobStore;
use crate::codec::{Connect, DecodeError, Disconnect, ProtocolVersion, ReasonCode};
use crate::router::SessionId;
use crate::session::{Chain, DeliveryState, NEVER_EXPIRES, Session, WillState};
use crate::storage::{Link, Text};
use crate::time::{Duration, Instant, MaybeInstant};
use crate::topic::TopicName;

/// Longest client identifier the broker assigns: `fulmar-` and 16 hex digits.
const ASSIGNED_ID_LEN: usize = 23;

impl<S: BrokerStorage, H: Hooks> Broker<S, H> {
    /// Answers a CONNECT that failed to decode: a CONNACK where the specification asks
    /// for one, then close.
    pub(super) fn refuse_connect_on_decode_error(
        &mut self,
        id: ConnectionId,
        error: &DecodeError,
        bytes: &[u8],
    ) {
        let now = self
            .connection(id)
            .map_or(Instant::ZERO, |c| c.last_received);
        let level = connect_level(bytes);
        match (error, level) {
            // [MQTT-3.1.2-2]: an unsupported level gets return code 1 (3.x) or 0x84 (5.0).
            (DecodeError::UnsupportedProtocolVersion(level), _) => {
                let version = if *level >= 5 {
                    ProtocolVersion::V5
                } else {
                    ProtocolVersion::V3_1_1
                };
                self.refuse(id, version, ReasonCode::UnsupportedProtocolVersion, now);
            }
            // A 5.0 CONNECT that breaks a rule: CONNACK with the reason (§4.13.1).
            (_, Some(5)) if !matches!(error, DecodeError::InvalidPacketType(_)) => {
                self.refuse(id, ProtocolVersion::V5, error.reason_code(), now);
            }
            // 3.x: close without a CONNACK ([MQTT-4.8.0-1]).
            _ => self.close_silently(id, error.reason_code(), now),
        }
    }

    /// Sends CONNACK with a refusal in `version`'s format and closes ([MQTT-3.2.2-5]).
    fn refuse(
        &mut self,
        id: ConnectionId,
        version: ProtocolVersion,
        code: ReasonCode,
        now: Instant,
    ) {
        if let Some(conn) = self.connection_mut(id) {
            conn.protocol = version;
        }
        if let Some((method, data)) = self.connack_auth.take() {
            self.blobs.remove(method);
            if let Some(data) = data {
                self.blobs.remove(data);
            }
        }
        let info = ConnAckInfo {
            session_present: false,
            code,
            ..ConnAckInfo::default()
        };
        self.push_control(id, ControlKind::ConnAck(info), now);
        self.close_silently(id, code, now);
    }

    pub(super) fn on_connect(&mut self, id: ConnectionId, connect: &Connect<'_>, now: Instant) {
        let protocol = connect.protocol;
        if let Some(conn) = self.connection_mut(id) {
            conn.protocol = protocol;
        }
        if protocol == ProtocolVersion::V3_1 && !self.config.allow_v3_1 {
            return self.refuse(id, protocol, ReasonCode::UnsupportedProtocolVersion, now);
        }

        // Client identifier: given, or assigned for an empty one ([MQTT-3.1.3-6]); before
        // 5.0 only a clean session may leave it empty ([MQTT-3.1.3-8]), and 3.1 never.
        let mut assigned_buf = [0u8; ASSIGNED_ID_LEN];
        let assigned = connect.client_id.is_empty();
        let client_id = if assigned {
            let allowed = match protocol {
                ProtocolVersion::V5 => true,
                ProtocolVersion::V3_1_1 => connect.clean_start,
                ProtocolVersion::V3_1 => false,
            };
            if !allowed {
                return self.refuse(id, protocol, ReasonCode::ClientIdentifierNotValid, now);
            }
            self.assign_client_id(&mut assigned_buf)
        } else {
            connect.client_id
        };

        let request = ConnectRequest {
            connection: id,
            client_id,
            username: connect.username,
            password: connect.password,
            protocol,
        };
        let decision = self.hooks.authenticate(&request);
        if decision != ReasonCode::Success {
            let code = if decision.is_valid_for(crate::codec::PacketType::ConnAck)
                && decision.is_error()
            {
                decision
            } else {
                ReasonCode::NotAuthorized
            };
            return self.refuse(id, protocol, code, now);
        }
        // Copied out at once: the hook's answer borrows the hooks. A name that does not fit
        // the storage is refused rather than dropped, which would make the client anonymous
        // to the authorization checks.
        let Ok(username) = self
            .hooks
            .session_username(&request)
            .map(Text::from_str)
            .transpose()
        else {
            return self.refuse(id, protocol, ReasonCode::BadUserNameOrPassword, now);
        };

        // The will is checked before anything changes, so a refusal leaves no trace.
        if let Some(will) = &connect.will {
            if TopicName::new(will.topic, &self.config.topic_limits).is_err() {
                return self.refuse(id, protocol, ReasonCode::TopicNameInvalid, now);
            }
            // [MQTT-3.2.2-12], [MQTT-3.2.2-13]: a will above the broker's QoS or retained
            // where retain is unavailable is refused.
            if will.qos > self.config.max_qos {
                return self.refuse(id, protocol, ReasonCode::QoSNotSupported, now);
            }
            if will.retain && !self.config.retain_available {
                return self.refuse(id, protocol, ReasonCode::RetainNotSupported, now);
            }
            let client = super::ClientInfo {
                client_id,
                username: username.as_ref().map(Text::as_str),
            };
            if !self
                .hooks
                .authorize_publish(&client, will.topic, will.qos, will.retain)
            {
                return self.refuse(id, protocol, ReasonCode::NotAuthorized, now);
            }
        }

        // A bridge's or a peer shard's session is the broker's own: no network client may
        // take it over.
        if self
            .find_session(client_id)
            .and_then(|h| self.sessions.get(h))
            .is_some_and(|s| s.is_host_driven())
        {
            return self.refuse(id, protocol, ReasonCode::ClientIdentifierNotValid, now);
        }

        // 5.0 enhanced authentication (§4.12), last of the checks and before any change.
        match self.connect_auth(id, connect, client_id, now) {
            super::auth::ConnectAuth::NotRequested => {}
            super::auth::ConnectAuth::Accepted(method, data) => {
                self.connack_auth = Some((method, data));
            }
            super::auth::ConnectAuth::Stopped => return,
        }

        // [MQTT-3.1.4-3]: a client already connected with this identifier is taken over.
        if let Some(old) = self
            .find_session(client_id)
            .and_then(|h| self.sessions.get(h)?.connection)
        {
            self.close(old, ReasonCode::SessionTakenOver, now);
        }
        if self.stats.clients_connected >= self.config.max_clients as u64 {
            return self.refuse(id, protocol, quota_code(), now);
        }

        let existing = self.find_session(client_id);
        let (handle, session_present) = match existing {
            // [MQTT-3.2.2-3]: resume the stored session.
            Some(h) if !connect.clean_start => (h, true),
            other => {
                // [MQTT-3.1.2-4]: Clean Start discards any existing session.
                if let Some(h) = other {
                    // [MQTT-3.1.2-8], [MQTT-3.1.3-9]: a new connection before the Will Delay
                    // Interval has passed cancels the pending will, even one that starts a
                    // new session (ending the old one must not publish it).
                    if let Some(will) = self.sessions.get_mut(h).and_then(|s| s.will.take()) {
                        self.release_message(will.message);
                    }
                    self.end_session(h, now);
                }
                match self.create_client_session(client_id) {
                    Ok(h) => (h, false),
                    Err(code) => return self.refuse(id, protocol, code, now),
                }
            }
        };

        let requested_expiry = if protocol.is_v5() {
            connect.properties.session_expiry_interval().unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            NEVER_EXPIRES
        };
        let expiry = requested_expiry.min(self.config.max_session_expiry);
        let (keep_alive, server_keep_alive) = self.negotiate_keep_alive(connect);
        let will = connect.will.as_ref().and_then(|will| {
            let expires = will.properties.message_expiry_interval();
            let message = self
                .store_message(
                    TopicRef::Str(will.topic),
                    &will.properties,
                    will.payload,
                    will.qos,
                    will.retain,
                    // The expiry runs from when the will is published (§3.1.3.2.4).
                    None,
                    now,
                )
                .ok()?;
            let delay = will.properties.iter().find_map(|p| match p {
                crate::codec::Property::WillDelayInterval(d) => Some(d),
                _ => None,
            });
            Some(WillState {
                message,
                delay: delay.unwrap_or(0),
                due: MaybeInstant::NONE,
                expiry: expires,
            })
        });
        if connect.will.is_some() && will.is_none() {
            // No room to keep the will: refuse rather than silently lose it.
            self.end_session_if_new(handle, session_present, now);
            return self.refuse(id, protocol, ReasonCode::QuotaExceeded, now);
        }
        let Some(session) = self.sessions.get_mut(handle) else {
            return;
        };
        // [MQTT-3.1.3-9]: a reconnection before the will delay ends cancels the will.
        let old_will = session.will.take();
        session.will = will;
        session.connection = Some(id);
        session.protocol = protocol;
        session.expiry_interval = expiry;
        session.disconnected_at = MaybeInstant::NONE;
        session.username = username;
        session.receive_maximum = if protocol.is_v5() {
            connect.properties.receive_maximum().unwrap_or(u16::MAX)
        } else {
            self.config.max_inflight
        };
        session.max_packet_size = connect.properties.maximum_packet_size().unwrap_or(u32::MAX);
        session.request_problem_information = connect
            .properties
            .iter()
            .find_map(|p| match p {
                crate::codec::Property::RequestProblemInformation(v) => Some(v),
                _ => None,
            })
            .unwrap_or(true);
        if let Some(old) = old_will {
            self.release_message(old.message);
        }
        let client_alias_max = connect
            .properties
            .iter()
            .find_map(|p| match p {
                crate::codec::Property::TopicAliasMaximum(v) => Some(v),
                _ => None,
            })
            .unwrap_or(0);
        if let Some(conn) = self.connection_mut(id) {
            conn.phase = Phase::Connected;
            conn.connected_unreported = true;
            conn.session = Link::to(handle);
            conn.keep_alive = keep_alive;
            conn.client_alias_max = if protocol.is_v5() {
                client_alias_max
            } else {
                0
            };
        }
        self.stats.clients_connected += 1;
        let info = ConnAckInfo {
            session_present,
            code: ReasonCode::Success,
            assigned_client_id: assigned,
            server_keep_alive,
            session_expiry: (protocol.is_v5() && expiry != requested_expiry).then_some(expiry),
            auth: self.connack_auth.take(),
        };
        self.push_control(id, ControlKind::ConnAck(info), now);
        self.resume_session(handle, id);
        self.mark_session(handle);
    }

    /// Keep alive to enforce and, for 5.0, the Server Keep Alive to announce (§3.2.2.3.14).
    fn negotiate_keep_alive(&self, connect: &Connect<'_>) -> (u16, Option<u16>) {
        let max = self.config.max_keep_alive;
        let asked = connect.keep_alive;
        if max == 0 || (asked != 0 && asked <= max) || !connect.protocol.is_v5() {
            (asked, None)
        } else {
            (max, Some(max))
        }
    }

    /// An identifier for a client that sent none: unique per broker run and seed.
    fn assign_client_id<'b>(&mut self, buf: &'b mut [u8; ASSIGNED_ID_LEN]) -> &'b str {
        self.assigned_ids += 1;
        let mut value =
            crate::index::hash_key(self.seed, 1, &self.assigned_ids.to_le_bytes()) as u64;
        value = (value << 32) | (self.assigned_ids & 0xFFFF_FFFF);
        // A shard names its clients with its index in the first two digits, so a host
        // that places clients by identifier brings the client back to it.
        #[cfg(feature = "alloc")]
        if let Some(index) = self.shard_index() {
            value = (value & 0x00FF_FFFF_FFFF_FFFF) | (u64::from(index) << 56);
        }
        buf[..7].copy_from_slice(b"fulmar-");
        for (i, byte) in buf[7..].iter_mut().enumerate() {
            let nibble = ((value >> (60 - 4 * i)) & 0xF) as u8;
            *byte = if nibble < 10 {
                b'0' + nibble
            } else {
                b'a' + nibble - 10
            };
        }
        core::str::from_utf8(buf).unwrap_or("fulmar-client")
    }

    /// A new session for a network client (or one restored from storage): counted by
    /// [`super::Hooks::claim_session`] as well as by `max_sessions`.
    pub(super) fn create_client_session(&mut self, client_id: &str) -> Result<u32, ReasonCode> {
        if !self.hooks.claim_session() {
            return Err(quota_code());
        }
        match self.create_session(client_id) {
            Ok(handle) => {
                if let Some(s) = self.sessions.get_mut(handle) {
                    s.claimed = true;
                }
                Ok(handle)
            }
            Err(code) => {
                self.hooks.session_ended();
                Err(code)
            }
        }
    }

    /// Makes `handle` a session the host drives (a bridge's or a peer's), which
    /// [`super::Hooks::claim_session`] does not count.
    pub(super) fn unclaim_session(&mut self, handle: u32) {
        if let Some(s) = self.sessions.get_mut(handle)
            && core::mem::take(&mut s.claimed)
        {
            self.hooks.session_ended();
        }
    }

    /// A new session, not counted by [`super::Hooks::claim_session`] (a bridge's or a
    /// peer's, or a client's through [`Broker::create_client_session`]).
    pub(super) fn create_session(&mut self, client_id: &str) -> Result<u32, ReasonCode> {
        if self.sessions.len() >= self.config.max_sessions {
            return Err(quota_code());
        }
        let text = Text::from_str(client_id).map_err(|_| ReasonCode::ClientIdentifierNotValid)?;
        let handle = self
            .sessions
            .insert(Session {
                client_id: text,
                username: None,
                connection: None,
                protocol: ProtocolVersion::V5,
                expiry_interval: 0,
                disconnected_at: MaybeInstant::NONE,
                receive_maximum: u16::MAX,
                max_packet_size: u32::MAX,
                last_packet_id: 0,
                free_packet_ids: 0,
                queue: Chain::default(),
                inbound: Link::NONE,
                inbound_len: 0,
                will: None,
                subscriptions: 0,
                request_problem_information: true,
                persisted: false,
                kind: crate::session::SessionKind::Client,
                claimed: false,
                stalled_publishers: 0,
            })
            .map_err(|_| quota_code())?;
        let hash = self.client_hash(client_id);
        if self.client_index.insert(hash, handle).is_err() {
            self.sessions.remove(handle);
            return Err(quota_code());
        }
        Ok(handle)
    }

    fn end_session_if_new(&mut self, handle: u32, session_present: bool, now: Instant) {
        if !session_present {
            self.end_session(handle, now);
        }
    }

    /// Marks what a resumed session must (re)send on its new connection: queued messages,
    /// and in-flight ones again with DUP, PUBREL for QoS 2 past PUBREC ([MQTT-4.4.0-1]).
    fn resume_session(&mut self, handle: u32, id: ConnectionId) {
        let Some(session) = self.sessions.get_mut(handle) else {
            return;
        };
        let mut cursor = session.queue.head.get();
        session.queue.unsent = Link::from(cursor);
        session.queue.unsent_prev = Link::NONE;
        while let Some(entry_handle) = cursor {
            let Some(entry) = self.queue.get_mut(entry_handle) else {
                break;
            };
            entry.needs_send = true;
            entry.dup = matches!(
                entry.state,
                DeliveryState::AwaitingPubAck | DeliveryState::AwaitingPubRec
            );
            cursor = entry.next.get();
        }
        self.signal_transmit(id);
    }

    pub(super) fn on_disconnect_packet(
        &mut self,
        id: ConnectionId,
        disconnect: &Disconnect<'_>,
        now: Instant,
    ) {
        let session = self.connection(id).and_then(|c| c.session.get());
        if let (Some(expiry), Some(h)) = (disconnect.properties.session_expiry_interval(), session)
        {
            let current = self.sessions.get(h).map_or(0, |s| s.expiry_interval);
            // [MQTT-3.14.2-2]: a session that was to end at disconnect cannot be kept now.
            if current == 0 && expiry != 0 {
                self.stats.protocol_errors += 1;
                return self.close(id, ReasonCode::ProtocolError, now);
            }
            if let Some(s) = self.sessions.get_mut(h) {
                s.expiry_interval = expiry.min(self.config.max_session_expiry);
            }
        }
        // [MQTT-3.14.4-3]: DISCONNECT with 0x00 discards the will; any other reason (e.g.
        // 0x04 Disconnect with Will Message) publishes it. The server sends nothing back.
        self.close_silently(id, disconnect.reason_code, now);
    }

    /// The connection of a session ends. `abnormal`: without a normal DISCONNECT, so the
    /// will is published (now, or after its delay).
    pub(super) fn detach_session(&mut self, id: ConnectionId, abnormal: bool, now: Instant) {
        let Some(conn) = self.connection_mut(id) else {
            return;
        };
        let was_connected = conn.phase == Phase::Connected;
        let Some(handle) = conn.session.take() else {
            return;
        };
        if was_connected {
            self.stats.clients_connected = self.stats.clients_connected.saturating_sub(1);
        }
        let Some(session) = self.sessions.get_mut(handle) else {
            return;
        };
        if session.connection != Some(id) {
            return;
        }
        session.connection = None;
        session.disconnected_at = Some(now).into();
        let expiry = session.expiry_interval;
        let mut publish_will_now = false;
        match session.will {
            Some(ref mut will) if abnormal => {
                // The will waits for its delay, or for the end of the session if sooner
                // (§3.1.3.2.2).
                let delay = will.delay.min(expiry);
                if delay == 0 {
                    publish_will_now = true;
                } else {
                    will.due = Some(now + Duration::from_secs(u64::from(delay))).into();
                }
            }
            Some(_) => {
                if let Some(will) = session.will.take() {
                    self.release_message(will.message);
                }
            }
            None => {}
        }
        // An offline queue drops instead of holding publishers back.
        self.resume_stalled_on(handle);
        if publish_will_now {
            self.publish_will(handle, now);
        }
        // Nothing more goes out until the client is back.
        let mut cursor = self.sessions.get(handle).and_then(|s| s.queue.head.get());
        while let Some(entry_handle) = cursor {
            let Some(entry) = self.queue.get_mut(entry_handle) else {
                break;
            };
            entry.needs_send = false;
            cursor = entry.next.get();
        }
        if expiry == 0 {
            self.end_session(handle, now);
        } else {
            self.mark_session(handle);
        }
    }

    /// Publishes and forgets a session's will.
    pub(super) fn publish_will(&mut self, handle: u32, now: Instant) {
        let Some(will) = self.sessions.get_mut(handle).and_then(|s| s.will.take()) else {
            return;
        };
        self.mark_session(handle);
        // 5.0 §3.1.3.2.4: the will's Message Expiry Interval counts from its publication.
        if let (Some(seconds), Some(m)) = (will.expiry, self.messages.get_mut(will.message)) {
            m.expires_at = Some(now + crate::time::Duration::from_secs(u64::from(seconds)));
        }
        // [MQTT-3.1.2-17] (3.1.1) / [MQTT-3.1.2-15] (5.0): Will Retain 1 publishes the will
        // as a retained message.
        let retained = self
            .messages
            .get(will.message)
            .filter(|m| m.retain)
            .map(|m| m.payload_len(&self.blobs) == 0);
        if let Some(clear) = retained {
            self.retain(will.message, clear);
        }
        // A will has nobody to refuse to: with no room, the sessions it reaches are counted
        // as dropped.
        if self
            .route_message(will.message, Some(SessionId(handle)), false, now)
            .is_err()
        {
            self.stats.messages_dropped += 1;
        }
        self.release_message(will.message);
    }

    /// Ends a session: its due will goes out, its subscriptions and queue are dropped.
    pub(super) fn end_session(&mut self, handle: u32, now: Instant) {
        self.resume_stalled_on(handle);
        self.mark_session_deleted(handle);
        let due_will = self
            .sessions
            .get(handle)
            .and_then(|s| s.will)
            .is_some_and(|w| w.due.get().is_some());
        if due_will {
            self.publish_will(handle, now);
        } else if let Some(will) = self.sessions.get_mut(handle).and_then(|s| s.will.take()) {
            self.release_message(will.message);
        }
        #[cfg(feature = "alloc")]
        self.note_interest_gone(handle);
        self.router.unsubscribe_all(SessionId(handle));
        let Some(session) = self.sessions.get(handle) else {
            return;
        };
        let mut cursor = session.queue.head.get();
        let mut inbound = session.inbound.get();
        let hash = self.client_hash(session.client_id());
        while let Some(entry_handle) = cursor {
            let entry = self.queue.remove(entry_handle);
            cursor = entry.as_ref().and_then(|e| e.next.get());
            if let Some(message) = entry.and_then(|e| e.message.get()) {
                self.release_message(message);
            }
        }
        while let Some(h) = inbound {
            inbound = self.inbound.remove(h).and_then(|i| i.next.get());
        }
        self.client_index.remove(hash, |h| h == handle);
        self.unclaim_session(handle);
        self.sessions.remove(handle);
    }
}

/// The protocol level of a CONNECT that failed to decode, if its header is readable.
fn connect_level(bytes: &[u8]) -> Option<u8> {
    if bytes.first()? >> 4 != 1 {
        return None;
    }
    // Skip the remaining length (1 to 4 bytes), then the protocol name.
    let mut i = 1;
    while *bytes.get(i)? & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    let name_len = usize::from(u16::from_be_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]));
    bytes.get(i + 2 + name_len).copied()
}

/// "Quota exceeded" (5.0); encoded as 3 Server unavailable for 3.x.
const fn quota_code() -> ReasonCode {
    ReasonCode::QuotaExceeded
}
