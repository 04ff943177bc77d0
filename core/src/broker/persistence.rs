//! The broker's side of persistence: which durable state changed since the host last
//! asked ([`Broker::poll_persist`]), and rebuilding state from stored records
//! ([`Broker::restore`]). Record formats are in [`crate::persist`].
//!
//! Changes are kept as small markers (what changed, not its content) and rendered from
//! the current state when polled, so a value written is always the latest one and a burst
//! of changes to one session costs little memory. Only state that outlives a connection is
//! reported: sessions with a non-zero expiry, their subscriptions, their QoS 1/2 messages
//! and QoS 2 identifiers, and retained messages. If the marker list fills up, the broker
//! asks the host to start over ([`PersistOp::Reset`]) and then reports everything.

use super::{Broker, BrokerStorage, Hooks};
use crate::blob::{BlobId, BlobStore};
use crate::codec::{PacketId, ProtocolVersion, QoS, SubscriptionOptions};
use crate::persist::{
    InboundRecord, Key, MessageRecord, PersistError, RetainedRecord, SessionRecord, StoredMessage,
    SubscriptionRecord, WillRecord, decode_value, encode_value,
};
use crate::router::SessionId;
use crate::session::{DeliveryState, InboundId, QueueEntry, WillState};
use crate::storage::{Link, Slab};
use crate::time::Instant;
use crate::topic::SubscriptionFilter;

/// One write for the host's key/value store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistOp<'b> {
    /// Store `value` under `key`, replacing any value.
    Put {
        /// The key.
        key: &'b [u8],
        /// The value.
        value: &'b [u8],
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: &'b [u8],
    },
    /// Remove every key that starts with `prefix`: a session and everything it held.
    DeleteSession {
        /// The session's key prefix.
        prefix: &'b [u8],
    },
    /// Remove everything; the complete state follows.
    Reset,
}

/// What changed, by handle; rendered when polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Session(u32),
    /// The client identifier of a session that ended.
    DeleteSession(BlobId),
    /// A session and the filter text of one of its (former) subscriptions.
    Subscription(u32, BlobId),
    /// A session, a queue entry and the entry's sequence number.
    Message(u32, u32, u64),
    /// The topic of a retained message set or cleared.
    Retained(BlobId),
    Inbound(u32, PacketId),
}

impl Change {
    fn blob(self) -> Option<BlobId> {
        match self {
            Self::DeleteSession(b) | Self::Subscription(_, b) | Self::Retained(b) => Some(b),
            _ => None,
        }
    }
}

/// A change waiting in the broker's list.
#[derive(Debug)]
pub struct PendingChange {
    pub(crate) change: Change,
    pub(crate) next: Option<u32>,
}

/// Where a full dump (after [`PersistOp::Reset`]) has got to.
#[derive(Debug, Clone, Copy, Default)]
struct Dump {
    session: u32,
    /// 0 session, 1 subscriptions, 2 messages, 3 QoS 2 identifiers.
    part: u8,
    index: u32,
    /// 0 while sessions are dumped, then one more than the retained slot to dump next
    /// (not an `Option`: `None` of `Option<Dump>` must be zero bytes, see
    /// `Broker::unconfigured`).
    retained: u32,
}

pub(crate) struct PersistState<S: BrokerStorage> {
    pending: Slab<PendingChange, S::Pending>,
    head: Option<u32>,
    tail: Option<u32>,
    reset: bool,
    dump: Option<Dump>,
    restoring: bool,
}

impl<S: BrokerStorage> PersistState<S> {
    /// Nothing pending; `const` for a broker built in a `static`.
    pub(crate) const fn new() -> Self {
        Self {
            pending: Slab::new(),
            head: None,
            tail: None,
            reset: false,
            dump: None,
            restoring: false,
        }
    }
}

/// Lengths of what a render wrote at the start of the buffer.
enum Rendered {
    Put(usize, usize),
    Delete(usize),
    DeleteSession(usize),
}

fn stored<'b>(
    parts: super::message::MessageParts<'b>,
    message: &super::Message,
) -> StoredMessage<'b> {
    StoredMessage {
        topic: parts.topic,
        qos: message.qos.level(),
        retain: message.retain,
        expires_at: message.expires_at.map(Instant::as_millis),
        properties: parts.properties,
        payload: parts.payload,
    }
}

fn state_code(state: DeliveryState) -> u8 {
    match state {
        DeliveryState::Queued => 0,
        DeliveryState::AwaitingPubAck => 1,
        DeliveryState::AwaitingPubRec => 2,
        DeliveryState::AwaitingPubComp => 3,
    }
}

fn put(
    buf: &mut [u8],
    key: Key<'_>,
    value: &impl serde::Serialize,
) -> Result<Rendered, PersistError> {
    let k = key.encode(buf)?;
    let v = encode_value(value, &mut buf[k..]).map_err(|e| match e {
        PersistError::BufferTooSmall { required } => PersistError::BufferTooSmall {
            required: k + required,
        },
        other => other,
    })?;
    Ok(Rendered::Put(k, v))
}

fn delete(buf: &mut [u8], key: Key<'_>) -> Result<Rendered, PersistError> {
    Ok(Rendered::Delete(key.encode(buf)?))
}

impl<S: BrokerStorage, H: Hooks> Broker<S, H> {
    fn persisting(&self) -> bool {
        self.config.persistence && !self.persistence.restoring
    }

    fn session_is_durable(&self, session: u32) -> bool {
        self.sessions
            .get(session)
            .is_some_and(|s| s.expiry_interval != 0 && !s.is_peer())
    }

    fn mark(&mut self, change: Change) {
        if !self.persisting() || self.persistence.reset {
            if let Some(blob) = change.blob() {
                self.blobs.remove(blob);
            }
            return;
        }
        let state = &mut self.persistence;
        match state.pending.insert(PendingChange { change, next: None }) {
            Ok(handle) => {
                match state.tail.and_then(|t| state.pending.get_mut(t)) {
                    Some(tail) => tail.next = Some(handle),
                    None => state.head = Some(handle),
                }
                state.tail = Some(handle);
            }
            Err(_) => {
                if let Some(blob) = change.blob() {
                    self.blobs.remove(blob);
                }
                self.overflow();
            }
        }
    }

    /// Too many changes to track: forget them and report everything after a reset.
    fn overflow(&mut self) {
        while let Some(h) = self.persistence.head {
            let item = self.persistence.pending.remove(h);
            self.persistence.head = item.as_ref().and_then(|i| i.next);
            if let Some(blob) = item.and_then(|i| i.change.blob()) {
                self.blobs.remove(blob);
            }
        }
        self.persistence.tail = None;
        self.persistence.reset = true;
        self.persistence.dump = None;
    }

    pub(super) fn mark_session(&mut self, session: u32) {
        if !self.persisting() {
            return;
        }
        let durable = self.session_is_durable(session);
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        let was_persisted = core::mem::replace(&mut s.persisted, durable);
        if durable {
            self.mark(Change::Session(session));
        } else if was_persisted {
            // The session no longer outlives its connection: its records must go.
            self.mark_session_deleted(session);
        }
    }

    pub(super) fn mark_session_deleted(&mut self, session: u32) {
        if !self.persisting() {
            return;
        }
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        match self.blobs.insert_copy(s.client_id().as_bytes()) {
            Ok(blob) => self.mark(Change::DeleteSession(blob)),
            Err(_) => self.overflow(),
        }
    }

    pub(super) fn mark_subscription(&mut self, session: u32, filter: &str) {
        if !self.persisting() || !self.session_is_durable(session) {
            return;
        }
        match self.blobs.insert_copy(filter.as_bytes()) {
            Ok(blob) => self.mark(Change::Subscription(session, blob)),
            Err(_) => self.overflow(),
        }
    }

    pub(super) fn mark_message(&mut self, session: u32, entry: u32) {
        if !self.persisting() || !self.session_is_durable(session) {
            return;
        }
        if let Some(e) = self.queue.get(entry).filter(|e| e.qos > QoS::AtMostOnce) {
            let seq = e.seq;
            self.mark(Change::Message(session, entry, seq));
        }
    }

    /// A retained topic changed; `topic` is a copy of its name made by the caller (`None`
    /// if there was no room for one).
    pub(super) fn mark_retained_blob(&mut self, topic: Option<BlobId>) {
        match topic {
            Some(blob) => self.mark(Change::Retained(blob)),
            None if self.persisting() => self.overflow(),
            None => {}
        }
    }

    /// A queue entry with sequence `seq` was removed from `session`.
    pub(super) fn mark_message_gone(&mut self, session: u32, entry: u32, seq: u64) {
        if self.persisting() && self.session_is_durable(session) {
            self.mark(Change::Message(session, entry, seq));
        }
    }

    pub(super) fn mark_inbound(&mut self, session: u32, packet_id: PacketId) {
        if self.persisting() && self.session_is_durable(session) {
            self.mark(Change::Inbound(session, packet_id));
        }
    }

    /// Asks for the whole durable state again: the next [`Self::poll_persist`] returns
    /// [`PersistOp::Reset`], then every record, as after the change list overflowed. For a
    /// host whose store keeps deleted keys (an append-only flash store keeps a tombstone
    /// for each) and fills up: it clears the store and writes only what is live. Does
    /// nothing without [`super::Config::persistence`].
    pub fn persist_rewrite(&mut self) {
        if self.config.persistence {
            self.overflow();
        }
    }

    /// The next change of durable state for the host to store, written into `buf` (key
    /// first, then value); `Ok(None)` when everything is reported. Requires
    /// [`super::Config::persistence`].
    ///
    /// On [`PersistError::BufferTooSmall`] nothing is lost: call again with a buffer of at
    /// least the size given. The host should apply the ops in order; once it has made them
    /// durable, what they describe survives a crash (acknowledge QoS 1/2 publishes only
    /// after the ops they caused are durable, if that is the guarantee it wants).
    pub fn poll_persist<'b>(
        &mut self,
        buf: &'b mut [u8],
    ) -> Result<Option<PersistOp<'b>>, PersistError> {
        if !self.config.persistence {
            return Ok(None);
        }
        if self.persistence.reset {
            self.persistence.reset = false;
            self.persistence.dump = Some(Dump::default());
            return Ok(Some(PersistOp::Reset));
        }
        let rendered = loop {
            if self.persistence.dump.is_some() {
                match self.dump_next(buf)? {
                    Some(rendered) => break rendered,
                    None => {
                        self.persistence.dump = None;
                        continue;
                    }
                }
            }
            let Some(head) = self.persistence.head else {
                return Ok(None);
            };
            let Some(item) = self.persistence.pending.get(head) else {
                return Ok(None);
            };
            let change = item.change;
            let next = item.next;
            let rendered = self.render(change, buf)?;
            self.persistence.pending.remove(head);
            self.persistence.head = next;
            if next.is_none() {
                self.persistence.tail = None;
            }
            if let Some(blob) = change.blob() {
                self.blobs.remove(blob);
            }
            if let Some(rendered) = rendered {
                break rendered;
            }
        };
        Ok(Some(match rendered {
            Rendered::Put(k, v) => {
                let (key, rest) = buf.split_at(k);
                PersistOp::Put {
                    key,
                    value: &rest[..v],
                }
            }
            Rendered::Delete(k) => PersistOp::Delete { key: &buf[..k] },
            Rendered::DeleteSession(p) => PersistOp::DeleteSession { prefix: &buf[..p] },
        }))
    }

    fn render(&self, change: Change, buf: &mut [u8]) -> Result<Option<Rendered>, PersistError> {
        let text = |blob| {
            self.blobs
                .get(blob)
                .and_then(|b| core::str::from_utf8(b).ok())
        };
        match change {
            Change::Session(h) => self.render_session(h, buf),
            Change::DeleteSession(blob) => {
                let Some(client_id) = text(blob) else {
                    return Ok(None);
                };
                Ok(Some(Rendered::DeleteSession(Key::session_prefix(
                    client_id, buf,
                )?)))
            }
            Change::Subscription(h, blob) => {
                let (Some(session), Some(filter)) = (self.sessions.get(h), text(blob)) else {
                    return Ok(None);
                };
                let key = Key::Subscription(session.client_id(), filter);
                let parsed = SubscriptionFilter::parse(filter, &self.config.topic_limits).ok();
                match parsed.and_then(|f| self.router.get(SessionId(h), &f)) {
                    Some((options, identifier)) => {
                        let record = SubscriptionRecord {
                            options: options_byte(options),
                            identifier: identifier.map(|i| i.get()),
                        };
                        put(buf, key, &record).map(Some)
                    }
                    None => delete(buf, key).map(Some),
                }
            }
            Change::Message(h, entry, seq) => {
                let Some(session) = self.sessions.get(h) else {
                    return Ok(None);
                };
                let key = Key::Message(session.client_id(), seq);
                match self.queue.get(entry).filter(|e| e.seq == seq) {
                    Some(e) => self.render_entry(key, e, buf).map(Some),
                    None => delete(buf, key).map(Some),
                }
            }
            Change::Retained(blob) => {
                let Some(topic) = text(blob) else {
                    return Ok(None);
                };
                match self.retained_message(topic) {
                    Some(message) => self.render_retained(message, buf).map(Some),
                    None => delete(buf, Key::Retained(topic)).map(Some),
                }
            }
            Change::Inbound(h, pid) => {
                let Some(session) = self.sessions.get(h) else {
                    return Ok(None);
                };
                let key = Key::Inbound(session.client_id(), pid.get());
                if self.inbound_contains(h, pid) {
                    put(buf, key, &InboundRecord).map(Some)
                } else {
                    delete(buf, key).map(Some)
                }
            }
        }
    }

    fn render_session(&self, h: u32, buf: &mut [u8]) -> Result<Option<Rendered>, PersistError> {
        let Some(session) = self.sessions.get(h).filter(|s| s.expiry_interval != 0) else {
            return Ok(None);
        };
        let will = session.will.and_then(|w| {
            let message = self.messages.get(w.message)?;
            Some(WillRecord {
                delay: w.delay,
                expiry_interval: w.expiry,
                due: w.due.get().map(Instant::as_millis),
                message: stored(message.parts(&self.blobs)?, message),
            })
        });
        let record = SessionRecord {
            protocol_level: session.protocol.level(),
            expiry_interval: session.expiry_interval,
            disconnected_at: session.disconnected_at.get().map(Instant::as_millis),
            receive_maximum: session.receive_maximum,
            max_packet_size: session.max_packet_size,
            username: session.username(),
            will,
            bridge: session.is_bridge(),
        };
        put(buf, Key::Session(session.client_id()), &record).map(Some)
    }

    fn render_entry(
        &self,
        key: Key<'_>,
        e: &QueueEntry,
        buf: &mut [u8],
    ) -> Result<Rendered, PersistError> {
        let message = e
            .message
            .get()
            .and_then(|m| self.messages.get(m))
            .and_then(|m| Some(stored(m.parts(&self.blobs)?, m)));
        let record = MessageRecord {
            qos: e.qos.level(),
            retain: e.retain,
            state: state_code(e.state),
            packet_id: e.packet_id.map(PacketId::get),
            identifiers: e.identifiers.iter().map(|i| i.get()).collect(),
            message,
        };
        put(buf, key, &record)
    }

    fn render_retained(&self, message: u32, buf: &mut [u8]) -> Result<Rendered, PersistError> {
        let Some(m) = self.messages.get(message) else {
            return Err(PersistError::Malformed);
        };
        let Some(parts) = m.parts(&self.blobs) else {
            return Err(PersistError::Malformed);
        };
        put(
            buf,
            Key::Retained(parts.topic),
            &RetainedRecord {
                message: stored(parts, m),
            },
        )
    }

    /// The next record of a full dump, or `None` when it is complete.
    fn dump_next(&mut self, buf: &mut [u8]) -> Result<Option<Rendered>, PersistError> {
        loop {
            let Some(mut dump) = self.persistence.dump else {
                return Ok(None);
            };
            if let Some(slot) = dump.retained.checked_sub(1) {
                let bound = self.retained.handle_bound();
                // A shard dumps only the retained topics it persists (the others' are
                // replicas another shard writes).
                let next = (slot..bound).find(|s| {
                    self.retained
                        .get(*s)
                        .is_some_and(|&m| self.persists_retained_of(m))
                });
                let Some(slot) = next else { return Ok(None) };
                let message = self.retained.get(slot).copied().unwrap_or(u32::MAX);
                let rendered = self.render_retained(message, buf)?;
                dump.retained = slot + 2;
                self.persistence.dump = Some(dump);
                return Ok(Some(rendered));
            }
            if dump.session >= self.sessions.handle_bound() {
                dump.retained = 1;
                self.persistence.dump = Some(dump);
                continue;
            }
            let h = dump.session;
            let rendered = if self.session_is_durable(h) {
                self.dump_part(h, &mut dump, buf)?
            } else {
                None
            };
            match rendered {
                Some(r) => {
                    dump.index += 1;
                    self.persistence.dump = Some(dump);
                    return Ok(Some(r));
                }
                None if dump.part < 3 && self.session_is_durable(h) => {
                    dump.part += 1;
                    dump.index = 0;
                }
                None => {
                    dump = Dump {
                        session: h + 1,
                        ..Dump::default()
                    };
                }
            }
            self.persistence.dump = Some(dump);
        }
    }

    /// Record `dump.index` of part `dump.part` of session `h`, if there is one.
    fn dump_part(
        &self,
        h: u32,
        dump: &mut Dump,
        buf: &mut [u8],
    ) -> Result<Option<Rendered>, PersistError> {
        let Some(session) = self.sessions.get(h) else {
            return Ok(None);
        };
        let client_id = session.client_id();
        match dump.part {
            0 if dump.index == 0 => self.render_session(h, buf),
            1 => {
                // The filter is rebuilt in the second half of `buf`; key and value go in
                // the first.
                let half = buf.len() / 2;
                let (out, scratch) = buf.split_at_mut(half);
                let mut found = None;
                let mut i = 0;
                self.router
                    .for_each_subscription(SessionId(h), scratch, |filter, options, id| {
                        if i == dump.index && found.is_none() {
                            found = Some((filter.len(), options, id));
                        }
                        i += 1;
                    });
                let Some((len, options, identifier)) = found else {
                    return Ok(None);
                };
                // `for_each_subscription` left the filter at the start of `scratch`.
                let filter =
                    core::str::from_utf8(&scratch[..len]).map_err(|_| PersistError::Malformed)?;
                let record = SubscriptionRecord {
                    options: options_byte(options),
                    identifier: identifier.map(|i| i.get()),
                };
                put(out, Key::Subscription(client_id, filter), &record).map(Some)
            }
            2 => {
                let mut cursor = session.queue.head.get();
                let mut i = 0;
                while let Some(e) = cursor.and_then(|c| self.queue.get(c)) {
                    if e.qos > QoS::AtMostOnce {
                        if i == dump.index {
                            return self
                                .render_entry(Key::Message(client_id, e.seq), e, buf)
                                .map(Some);
                        }
                        i += 1;
                    }
                    cursor = e.next.get();
                }
                Ok(None)
            }
            3 => {
                let mut cursor = session.inbound.get();
                let mut i = 0;
                while let Some(entry) = cursor.and_then(|c| self.inbound.get(c)) {
                    if i == dump.index {
                        return put(
                            buf,
                            Key::Inbound(client_id, entry.packet_id.get()),
                            &InboundRecord,
                        )
                        .map(Some);
                    }
                    i += 1;
                    cursor = entry.next.get();
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Rebuilds state from one stored key/value pair (in any order; call for every pair
    /// at boot, before accepting connections). Sessions come back offline.
    pub fn restore(&mut self, key: &[u8], value: &[u8], now: Instant) -> Result<(), PersistError> {
        self.persistence.restoring = true;
        let result = self.restore_record(key, value, now);
        self.persistence.restoring = false;
        result
    }

    fn restore_record(
        &mut self,
        key: &[u8],
        value: &[u8],
        now: Instant,
    ) -> Result<(), PersistError> {
        match Key::decode(key)? {
            Key::Session(client_id) => {
                let record: SessionRecord<'_> = decode_value(value)?;
                let h = self.restore_session(client_id, now)?;
                let will = match record.will {
                    Some(w) => Some(WillState {
                        message: self.restore_message(&w.message)?,
                        delay: w.delay,
                        due: w.due.map(Instant::from_millis).into(),
                        expiry: w.expiry_interval,
                    }),
                    None => None,
                };
                let username = record
                    .username
                    .and_then(|u| crate::storage::Text::from_str(u).ok());
                let Some(s) = self.sessions.get_mut(h) else {
                    return Err(PersistError::Capacity);
                };
                s.protocol = match record.protocol_level {
                    3 => ProtocolVersion::V3_1,
                    4 => ProtocolVersion::V3_1_1,
                    _ => ProtocolVersion::V5,
                };
                s.expiry_interval = record.expiry_interval;
                s.disconnected_at =
                    Some(record.disconnected_at.map_or(now, Instant::from_millis)).into();
                s.receive_maximum = record.receive_maximum;
                s.max_packet_size = record.max_packet_size;
                s.username = username;
                s.kind = if record.bridge {
                    crate::session::SessionKind::Bridge {
                        up: false,
                        dropped: 0,
                    }
                } else {
                    crate::session::SessionKind::Client
                };
                let old = core::mem::replace(&mut s.will, will);
                if let Some(old) = old {
                    self.release_message(old.message);
                }
                if record.bridge {
                    self.unclaim_session(h);
                }
            }
            Key::Subscription(client_id, filter) => {
                let record: SubscriptionRecord = decode_value(value)?;
                let h = self.restore_session(client_id, now)?;
                let Ok(parsed) = SubscriptionFilter::parse(filter, &self.config.topic_limits)
                else {
                    // No longer valid under the current limits: dropped, as a SUBSCRIBE would be.
                    return Ok(());
                };
                let options = SubscriptionOptions::from_byte(record.options, ProtocolVersion::V5)
                    .map_err(|_| PersistError::Malformed)?;
                let identifier = record.identifier.and_then(core::num::NonZeroU32::new);
                let existed = self
                    .router
                    .subscribe(SessionId(h), &parsed, options, identifier)
                    .map_err(|_| PersistError::Capacity)?;
                if !existed && let Some(s) = self.sessions.get_mut(h) {
                    s.subscriptions += 1;
                }
                #[cfg(feature = "alloc")]
                if !existed {
                    self.note_interest(h, filter, true);
                }
            }
            Key::Message(client_id, seq) => {
                let record: MessageRecord<'_> = decode_value(value)?;
                let h = self.restore_session(client_id, now)?;
                self.restore_entry(h, seq, &record)?;
            }
            Key::Inbound(client_id, pid) => {
                let _: InboundRecord = decode_value(value)?;
                let h = self.restore_session(client_id, now)?;
                let pid = PacketId::new(pid).ok_or(PersistError::Malformed)?;
                if !self.inbound_contains(h, pid) {
                    let head = self.sessions.get(h).map_or(Link::NONE, |s| s.inbound);
                    let handle = self
                        .inbound
                        .insert(InboundId {
                            packet_id: pid,
                            next: head,
                        })
                        .map_err(|_| PersistError::Capacity)?;
                    if let Some(s) = self.sessions.get_mut(h) {
                        s.inbound = Link::to(handle);
                        s.inbound_len += 1;
                    }
                }
            }
            Key::Retained(_) => {
                let record: RetainedRecord<'_> = decode_value(value)?;
                let message = self.restore_message(&record.message)?;
                self.retain(message, false);
                self.release_message(message);
            }
        }
        Ok(())
    }

    fn restore_session(&mut self, client_id: &str, now: Instant) -> Result<u32, PersistError> {
        if let Some(h) = self.find_session(client_id) {
            return Ok(h);
        }
        let h = self
            .create_client_session(client_id)
            .map_err(|_| PersistError::Capacity)?;
        if let Some(s) = self.sessions.get_mut(h) {
            s.expiry_interval = self.config.max_session_expiry;
            s.disconnected_at = Some(now).into();
            // It came from the store, so leaving it durable-less must delete it there.
            s.persisted = true;
        }
        Ok(h)
    }

    fn restore_message(&mut self, m: &StoredMessage<'_>) -> Result<u32, PersistError> {
        let qos = QoS::from_bits(m.qos).map_err(|_| PersistError::Malformed)?;
        // A damaged or foreign record must not make the broker send what no client may
        // receive: a topic name with wildcards ([MQTT-3.3.2-2]) or an invalid property
        // block.
        crate::topic::TopicName::new(m.topic, &self.config.topic_limits)
            .map_err(|_| PersistError::Malformed)?;
        let properties = crate::codec::properties::publish_properties_from_wire(m.properties)
            .map_err(|_| PersistError::Malformed)?;
        let handle = self
            .store_message(
                super::publish::TopicRef::Str(m.topic),
                &properties,
                m.payload,
                qos,
                m.retain,
                None,
                Instant::ZERO,
            )
            .map_err(|_| PersistError::Capacity)?;
        if let Some(stored) = self.messages.get_mut(handle) {
            stored.expires_at = m.expires_at.map(Instant::from_millis);
        }
        Ok(handle)
    }

    /// Puts a restored entry in its session's queue, in sequence order.
    fn restore_entry(
        &mut self,
        h: u32,
        seq: u64,
        record: &MessageRecord<'_>,
    ) -> Result<(), PersistError> {
        let state = match record.state {
            0 => DeliveryState::Queued,
            1 => DeliveryState::AwaitingPubAck,
            2 => DeliveryState::AwaitingPubRec,
            3 => DeliveryState::AwaitingPubComp,
            _ => return Err(PersistError::Malformed),
        };
        let message = match &record.message {
            Some(m) => Some(self.restore_message(m)?),
            None => None,
        };
        let bytes = message
            .and_then(|m| self.messages.get(m))
            .map_or(0, |m| m.payload_len(&self.blobs)) as u32;
        let entry = QueueEntry {
            seq,
            message: message.into(),
            qos: QoS::from_bits(record.qos).map_err(|_| PersistError::Malformed)?,
            retain: record.retain,
            packet_id: record.packet_id.and_then(PacketId::new),
            state,
            dup: state != DeliveryState::Queued,
            needs_send: false,
            identifiers: record
                .identifiers
                .iter()
                .filter_map(|i| core::num::NonZeroU32::new(*i))
                .collect(),
            bytes,
            next: Link::NONE,
        };
        let handle = match self.queue.insert(entry) {
            Ok(handle) => handle,
            Err(_) => {
                if let Some(m) = message {
                    self.release_message(m);
                }
                return Err(PersistError::Capacity);
            }
        };
        self.next_seq = self.next_seq.max(seq);
        // Find the first entry with a larger sequence and insert before it.
        let mut prev = None;
        let mut cursor = self.sessions.get(h).and_then(|s| s.queue.head.get());
        while let Some(c) = cursor {
            let Some(e) = self.queue.get(c) else { break };
            if e.seq > seq {
                break;
            }
            prev = Some(c);
            cursor = e.next.get();
        }
        if let Some(e) = self.queue.get_mut(handle) {
            e.next = cursor.into();
        }
        match prev.and_then(|p| self.queue.get_mut(p)) {
            Some(p) => p.next = Link::to(handle),
            None => {
                if let Some(s) = self.sessions.get_mut(h) {
                    s.queue.head = Link::to(handle);
                }
            }
        }
        if let Some(s) = self.sessions.get_mut(h) {
            if cursor.is_none() {
                s.queue.tail = Link::to(handle);
            }
            // Nothing is sent before the client is back (which resets the send cursor);
            // restored identifiers are not known free.
            s.queue.unsent = s.queue.head;
            s.queue.unsent_prev = Link::NONE;
            s.free_packet_ids = 0;
            s.queue.len += 1;
            if state == DeliveryState::Queued {
                s.queue.queued += 1;
                s.queue.queued_bytes += bytes;
            } else {
                s.queue.inflight += 1;
            }
        }
        Ok(())
    }

    /// The retained message of `topic`.
    pub(super) fn retained_message(&self, topic: &str) -> Option<u32> {
        let hash = crate::index::hash_key(self.seed, 2, topic.as_bytes());
        let slot = self.retained_index.find(hash, |slot| {
            self.retained
                .get(slot)
                .and_then(|m| self.messages.get(*m))
                .and_then(|m| m.parts(&self.blobs))
                .is_some_and(|p| p.topic == topic)
        })?;
        self.retained.get(slot).copied()
    }
}

fn options_byte(options: SubscriptionOptions) -> u8 {
    options.to_byte(ProtocolVersion::V5)
}
