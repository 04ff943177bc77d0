//! Messages in and out: PUBLISH from clients (§3.3), topic aliases, retained messages,
//! routing to sessions, and the acknowledgment flows of QoS 1 and 2 in both directions
//! (§4.3, PUBACK / PUBREC / PUBREL / PUBCOMP).

use super::message::Message;
use super::transmit::ControlKind;
use super::{Broker, BrokerStorage, ClientInfo, ConnectionId, Hooks, OverflowPolicy};
use crate::blob::BlobStore;
use crate::codec::properties::{filtered_len, write_filtered};
use crate::codec::{Ack, PacketId, Properties, Property, Publish, QoS, ReasonCode};
use crate::router::{Delivery, Scope, SessionId};
use crate::session::{DeliveryState, InboundId, QueueEntry, SessionKind};
use crate::storage::{CapacityError, Link, Storage};
use crate::time::{Duration, Instant};
use crate::topic::TopicName;

/// Why a message was not routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No room in the broker's shared storage for the message or its deliveries.
    Capacity,
    /// Backpressure: `session` is online and its queue is full; the publisher waits.
    Wait { session: u32 },
}

/// Properties set per delivery rather than stored with the message, and the Will Delay
/// Interval, which a will's properties carry but a PUBLISH may not (5.0 §2.2.2.2, table
/// 2-4: 0x18 belongs to the will only; a PUBLISH carrying it is malformed).
fn kept_in_store(p: &Property<'_>) -> bool {
    !matches!(
        p,
        Property::MessageExpiryInterval(_)
            | Property::TopicAlias(_)
            | Property::SubscriptionIdentifier(_)
            | Property::WillDelayInterval(_)
    )
}

/// A message the host hands in rather than a client (a bridge's from upstream, `$SYS`).
#[derive(Clone, Copy)]
pub(super) struct Injected<'a> {
    pub(super) topic: &'a str,
    pub(super) properties: &'a Properties<'a>,
    pub(super) payload: &'a [u8],
    pub(super) qos: QoS,
    pub(super) retain: bool,
}

impl<S: BrokerStorage, H: Hooks> Broker<S, H> {
    /// Stores a message once; sessions, the retained store and wills then share it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn store_message(
        &mut self,
        topic: TopicRef<'_>,
        properties: &Properties<'_>,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        expiry_seconds: Option<u32>,
        now: Instant,
    ) -> Result<u32, CapacityError> {
        let topic_len = match topic {
            TopicRef::Str(t) => t.len(),
            TopicRef::Blob(b) => self.blobs.get(b).map_or(0, <[u8]>::len),
        };
        let props_len = filtered_len(properties, kept_in_store);
        let total = topic_len + props_len + payload.len();
        let fill_rest = |rest: &mut [u8]| {
            let (p, body) = rest.split_at_mut(props_len);
            write_filtered(properties, kept_in_store, p);
            body.copy_from_slice(payload);
        };
        let blob = match topic {
            TopicRef::Str(t) => self.blobs.insert(total, |out| {
                let (head, rest) = out.split_at_mut(t.len());
                head.copy_from_slice(t.as_bytes());
                fill_rest(rest);
            })?,
            TopicRef::Blob(b) => self.blobs.insert_prefixed(b, topic_len, total, fill_rest)?,
        };
        let topic_len = u16::try_from(topic_len).map_err(|_| CapacityError)?;
        let message = Message {
            blob,
            topic_len,
            properties_len: props_len as u32,
            qos,
            retain,
            expires_at: expiry_seconds.map(|s| now + Duration::from_secs(u64::from(s))),
            refs: 1,
        };
        match self.messages.insert(message) {
            Ok(handle) => Ok(handle),
            Err(e) => {
                self.blobs.remove(blob);
                Err(e)
            }
        }
    }

    /// Drops one reference to a message, freeing it with the last.
    pub(super) fn release_message(&mut self, handle: u32) {
        let Some(message) = self.messages.get_mut(handle) else {
            return;
        };
        message.refs = message.refs.saturating_sub(1);
        if message.refs == 0 {
            let blob = message.blob;
            self.messages.remove(handle);
            self.blobs.remove(blob);
            #[cfg(feature = "alloc")]
            self.forget_stamp(handle);
        }
    }

    /// Injects a message as if a client had published it (bridges, `$SYS`). Topic names
    /// starting with `$` are allowed here, unlike from clients.
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        now: Instant,
    ) -> Result<(), CapacityError> {
        let message = Injected {
            topic,
            properties: &Properties::empty(),
            payload,
            qos,
            retain,
        };
        self.inject(&message, None, now).map(|_| ())
    }

    /// Stores, routes and (if `retain`) retains a message that comes from the host rather
    /// than a client; returns how many sessions it matched.
    pub(super) fn inject(
        &mut self,
        message: &Injected<'_>,
        publisher: Option<SessionId>,
        now: Instant,
    ) -> Result<usize, CapacityError> {
        let Injected {
            topic,
            properties,
            payload,
            qos,
            retain,
        } = *message;
        if TopicName::new(topic, &self.config.topic_limits).is_err() {
            return Err(CapacityError);
        }
        // Only what a message keeps is stored (not a Topic Alias or Subscription
        // Identifier of the hop it came by), and its expiry counts from now.
        let message = self.store_message(
            TopicRef::Str(topic),
            properties,
            payload,
            qos,
            retain,
            properties.message_expiry_interval(),
            now,
        )?;
        let routed = self.route_message(message, publisher, false, now);
        if routed.is_ok() && retain {
            self.retain(message, payload.is_empty());
        }
        self.release_message(message);
        routed.map_err(|_| CapacityError)
    }

    pub(super) fn on_publish(&mut self, id: ConnectionId, publish: &Publish<'_>, now: Instant) {
        let Some(conn) = self.connection(id) else {
            return;
        };
        let Some(session) = conn.session.get() else {
            return;
        };
        let v5 = conn.protocol.is_v5();
        self.stats.messages_received += 1;

        // Topic aliases (5.0 §3.3.2.3.4).
        let mut topic_ref = TopicRef::Str(publish.topic);
        if let Some(alias) = publish.properties.topic_alias() {
            // [MQTT-3.3.2-9], [MQTT-3.3.2-10]: 0 and values above our maximum are invalid.
            if alias == 0 || alias > self.config.topic_alias_maximum {
                return self.close(id, ReasonCode::TopicAliasInvalid, now);
            }
            if publish.topic.is_empty() {
                match self.find_alias(id, alias) {
                    Some(blob) => topic_ref = TopicRef::Blob(blob),
                    // An alias never set on this connection.
                    None => return self.close(id, ReasonCode::ProtocolError, now),
                }
            } else if self.set_alias(id, alias, publish.topic).is_err() {
                return self.close(id, ReasonCode::QuotaExceeded, now);
            }
        }
        // Checks that need the topic text borrow only the fields they read.
        let qos = publish.qos();
        let checked = {
            let topic = match topic_ref {
                TopicRef::Str(t) => Some(t),
                TopicRef::Blob(b) => self.blobs.get(b).and_then(|t| core::str::from_utf8(t).ok()),
            };
            topic.map(|topic| {
                let valid = TopicName::new(topic, &self.config.topic_limits).is_ok();
                let s = self.sessions.get(session);
                let client = ClientInfo {
                    client_id: s.map_or("", |s| s.client_id()),
                    username: s.and_then(|s| s.username()),
                };
                let allowed = valid
                    && self
                        .hooks
                        .authorize_publish(&client, topic, qos, publish.retain);
                (valid, allowed)
            })
        };
        let Some((valid, authorized)) = checked else {
            return self.close(id, ReasonCode::TopicAliasInvalid, now);
        };
        if !valid {
            return self.close(id, ReasonCode::TopicNameInvalid, now);
        }
        let qos = publish.qos();
        // [MQTT-3.2.2-11]: QoS above the announced Maximum QoS.
        if qos > self.config.max_qos {
            return self.close(id, ReasonCode::QoSNotSupported, now);
        }
        // [MQTT-3.2.2-14]: retain while Retain Available is 0.
        if publish.retain && !self.config.retain_available {
            return self.close(id, ReasonCode::RetainNotSupported, now);
        }

        // QoS 2: a PUBLISH whose identifier awaits PUBREL is a re-send; answer PUBREC again
        // and do not deliver twice (§4.3.3).
        if let Some(pid) = publish.packet_id().filter(|_| qos == QoS::ExactlyOnce) {
            if self.inbound_contains(session, pid) {
                self.push_control(id, ControlKind::PubRec(pid, ReasonCode::Success), now);
                return;
            }
            let pending = self.sessions.get(session).map_or(0, |s| s.inbound_len);
            // [MQTT-3.3.4-7]: more unacknowledged QoS 2 PUBLISHes than our Receive Maximum.
            // A 5.0 rule: a 3.x client was never told a limit, so it is only bounded by
            // its packet identifiers and the broker's storage (a full store closes it
            // below, like any quota).
            if v5 && pending >= self.config.receive_maximum {
                return self.close(id, ReasonCode::ReceiveMaximumExceeded, now);
            }
        }

        let mut code = ReasonCode::Success;
        if !authorized {
            // 5.0 tells the publisher; 3.x has no way to, so the message is acknowledged
            // and dropped, as Mosquitto does.
            code = if v5 {
                ReasonCode::NotAuthorized
            } else {
                ReasonCode::Success
            };
        } else {
            match self.accept_publish(publish, topic_ref, Some(SessionId(session)), now) {
                Ok(0) if v5 => code = ReasonCode::NoMatchingSubscribers,
                Ok(_) => {}
                Err(Refused::Wait { session: full }) => {
                    // Not taken: neither acknowledged nor counted; the host passes it
                    // again once `full` has drained.
                    self.stats.messages_received -= 1;
                    return self.stall(id, full);
                }
                Err(Refused::Capacity) => {
                    self.stats.messages_dropped += 1;
                    code = ReasonCode::QuotaExceeded;
                }
            }
            if !v5 && code == ReasonCode::QuotaExceeded && qos > QoS::AtMostOnce {
                // 3.x cannot refuse a PUBLISH: close without acknowledging, so the client
                // sends it again on its next connection.
                return self.close(id, ReasonCode::QuotaExceeded, now);
            }
        }
        match publish.qos_pid {
            crate::codec::QoSPid::AtMostOnce => {}
            crate::codec::QoSPid::AtLeastOnce(pid) => {
                self.push_control(id, ControlKind::PubAck(pid, code), now);
            }
            crate::codec::QoSPid::ExactlyOnce(pid) => {
                // Only a successful PUBREC starts the exactly-once flow ([MQTT-4.3.3-?]).
                if !code.is_error() && self.inbound_insert(session, pid).is_err() {
                    return self.close(id, ReasonCode::QuotaExceeded, now);
                }
                self.push_control(id, ControlKind::PubRec(pid, code), now);
            }
        }
    }

    /// Stores, retains and routes an accepted PUBLISH; returns the number of sessions with
    /// a matching subscription.
    fn accept_publish(
        &mut self,
        publish: &Publish<'_>,
        topic: TopicRef<'_>,
        publisher: Option<SessionId>,
        now: Instant,
    ) -> Result<usize, Refused> {
        let expiry = publish.properties.message_expiry_interval();
        let message = self
            .store_message(
                topic,
                &publish.properties,
                publish.payload,
                publish.qos(),
                publish.retain,
                expiry,
                now,
            )
            .map_err(|_| Refused::Capacity)?;
        // Routed first: a message refused for lack of room must not become retained.
        let routed = self.route_message(message, publisher, true, now);
        if routed.is_ok() && publish.retain {
            self.purge_expired_retained(now);
            self.retain(message, publish.payload.is_empty());
        }
        self.release_message(message);
        routed
    }

    /// Makes `message` its topic's retained message, or clears it for an empty payload
    /// ([MQTT-3.3.1-5], [MQTT-3.3.1-6], [MQTT-3.3.1-7]).
    /// Drops retained messages whose Message Expiry Interval has run out (5.0
    /// §3.3.2.3.3: an expired message is no longer delivered), so they stop counting
    /// against the retained limits.
    pub(super) fn purge_expired_retained(&mut self, now: Instant) {
        // Called on every retained publish and subscribe: the scan runs only once
        // something may have expired, not per call.
        if self.retained_expiry.is_none_or(|at| at > now) {
            return;
        }
        self.retained_expiry = None;
        for slot in 0..self.retained.handle_bound() {
            let Some(&message) = self.retained.get(slot) else {
                continue;
            };
            let Some(at) = self.messages.get(message).and_then(|m| m.expires_at) else {
                continue;
            };
            if at > now {
                self.retained_expiry = Some(self.retained_expiry.map_or(at, |e| e.min(at)));
                continue;
            }
            self.mark_retained_topic_of(message);
            let hash = self
                .messages
                .get(message)
                .and_then(|m| m.parts(&self.blobs))
                .map(|p| crate::index::hash_key(self.seed, 2, p.topic.as_bytes()));
            if let Some(hash) = hash {
                self.retained_index.remove(hash, |h| h == slot);
            }
            self.retained.remove(slot);
            self.unretain(message);
        }
    }

    /// Releases a message that stopped being retained.
    fn unretain(&mut self, message: u32) {
        let len = self
            .messages
            .get(message)
            .map_or(0, |m| m.payload_len(&self.blobs));
        self.retained_bytes = self.retained_bytes.saturating_sub(len);
        self.release_message(message);
    }

    /// Marks the retained topic of `message` as changed for persistence; the marker keeps
    /// its own copy of the topic name, taken from the message's blob.
    pub(super) fn mark_retained_topic_of(&mut self, message: u32) {
        if !self.config.persistence {
            return;
        }
        if !self.persists_retained_of(message) {
            return;
        }
        let (blob, len) = self
            .messages
            .get(message)
            .map_or((None, 0), |m| (Some(m.blob), usize::from(m.topic_len)));
        let copy = blob.and_then(|b| self.blobs.insert_prefixed(b, len, len, |_| {}).ok());
        self.mark_retained_blob(copy);
    }

    /// Whether this broker persists the retained topic of `message`: every topic, unless
    /// it is one shard of several ([`Broker::enable_sharding`]).
    pub(super) fn persists_retained_of(&self, message: u32) -> bool {
        #[cfg(feature = "alloc")]
        return self.owns_retained_of(message);
        #[cfg(not(feature = "alloc"))]
        {
            let _ = message;
            true
        }
    }

    pub(super) fn retain(&mut self, message: u32, clear: bool) {
        self.mark_retained_topic_of(message);
        #[cfg(feature = "alloc")]
        self.stamp_retained(message);
        self.retain_unpersisted(message, clear);
    }

    /// [`Broker::retain`] without reporting it for persistence (a replica of a change
    /// another shard persists).
    pub(super) fn retain_unpersisted(&mut self, message: u32, clear: bool) {
        let Some(parts) = self
            .messages
            .get(message)
            .and_then(|m| m.parts(&self.blobs))
        else {
            return;
        };
        let hash = crate::index::hash_key(self.seed, 2, parts.topic.as_bytes());
        let existing = self.find_retained(hash, message);
        if let Some(slot) = existing
            && let Some(old) = self.retained.remove(slot)
        {
            self.retained_index.remove(hash, |h| h == slot);
            self.unretain(old);
        }
        if clear {
            return;
        }
        let Some((payload_len, expires_at)) = self
            .messages
            .get(message)
            .map(|m| (m.payload_len(&self.blobs), m.expires_at))
        else {
            return;
        };
        if self.retained.len() >= self.config.max_retained
            || self.retained_bytes + payload_len > self.config.max_retained_bytes
        {
            return;
        }
        let Ok(slot) = self.retained.insert(message) else {
            return;
        };
        if self.retained_index.insert(hash, slot).is_err() {
            self.retained.remove(slot);
            return;
        }
        if let Some(m) = self.messages.get_mut(message) {
            m.refs += 1;
        }
        self.retained_bytes += payload_len;
        if let Some(at) = expires_at {
            self.retained_expiry = Some(self.retained_expiry.map_or(at, |e| e.min(at)));
        }
    }

    /// The retained slot holding a message on the same topic as `message`.
    fn find_retained(&self, hash: u32, message: u32) -> Option<u32> {
        let topic = self.messages.get(message)?.parts(&self.blobs)?.topic;
        self.retained_index.find(hash, |slot| {
            self.retained
                .get(slot)
                .and_then(|m| self.messages.get(*m))
                .and_then(|m| m.parts(&self.blobs))
                .is_some_and(|p| p.topic == topic)
        })
    }

    /// Queues a stored message for every session with a matching subscription; returns
    /// how many sessions matched, queued or not: a copy dropped by a full queue or an
    /// offline QoS 0 subscriber still had a match, so the publisher must not be told 0x10
    /// No matching subscribers (5.0 §3.4.2.1: only when there are none).
    /// `may_wait`: the message comes from a client that backpressure can stall
    /// ([`OverflowPolicy::Backpressure`]); then nothing is queued if a draining session's
    /// queue is full, and [`Refused::Wait`] names that session.
    pub(super) fn route_message(
        &mut self,
        message: u32,
        publisher: Option<SessionId>,
        may_wait: bool,
        now: Instant,
    ) -> Result<usize, Refused> {
        let mut deliveries = core::mem::take(&mut self.deliveries);
        let result = self
            .route_into(message, publisher, Scope::All, &mut deliveries)
            .and_then(|bytes| self.queue_deliveries(message, &deliveries, may_wait, bytes, now));
        #[cfg(feature = "alloc")]
        if result.is_ok() && self.messages.get(message).is_some_and(|m| m.retain) {
            self.replicate_retained(message, deliveries.as_slice(), now);
        }
        deliveries.truncate(0);
        self.deliveries = deliveries;
        result
    }

    /// The deliveries of a stored message into `out`; returns its payload size.
    pub(super) fn route_into(
        &self,
        message: u32,
        publisher: Option<SessionId>,
        scope: Scope<'_>,
        out: &mut S::Deliveries,
    ) -> Result<usize, Refused> {
        out.truncate(0);
        let Some(parts) = self
            .messages
            .get(message)
            .and_then(|m| m.parts(&self.blobs))
        else {
            return Ok(0);
        };
        // Every stored message's topic was checked when it came in (from a client, a
        // bridge, another shard or the store).
        let topic = TopicName::trusted(parts.topic);
        // Invariant 1 (ARCHITECTURE.md): an acknowledged message reaches every matching
        // subscription. If the storage cannot hold a copy for each, none is queued and the
        // caller refuses the message (0x97) instead of acknowledging a partial delivery.
        // Per-session queue limits are different: their overflow policy is configured.
        self.router
            .deliveries_scoped(&topic, publisher, scope, out)
            .map_err(|_| Refused::Capacity)?;
        Ok(parts.payload.len())
    }

    /// Queues a message for each of `deliveries`, or for none (see [`Refused`]).
    pub(super) fn queue_deliveries(
        &mut self,
        message: u32,
        deliveries: &S::Deliveries,
        may_wait: bool,
        bytes: usize,
        now: Instant,
    ) -> Result<usize, Refused> {
        let count = deliveries.as_slice().len();
        // Decided once per message, not per delivery: most configurations never wait.
        let full = if may_wait
            && (self.config.overflow_policy == OverflowPolicy::Backpressure || self.bridges_up > 0)
        {
            let qos = self
                .messages
                .get(message)
                .map_or(QoS::AtMostOnce, |m| m.qos);
            deliveries
                .as_slice()
                .iter()
                .filter(|d| self.may_hold_back(d.session.0, qos.min(d.qos)))
                .map(|d| d.session.0)
                .find(|&s| self.must_wait_for(s, bytes))
        } else {
            None
        };
        if !self.queue.has_room_for(count) {
            Err(Refused::Capacity)
        } else if let Some(session) = full {
            Err(Refused::Wait { session })
        } else {
            for delivery in deliveries.as_slice() {
                self.enqueue(message, delivery, false, now);
            }
            Ok(count)
        }
    }

    /// Counts a message dropped for `session` (its queue full): in the broker's stats and,
    /// for a bridge, its own count.
    fn count_dropped(&mut self, session: u32) {
        self.stats.messages_dropped += 1;
        if let Some(SessionKind::Bridge { dropped, .. }) =
            self.sessions.get_mut(session).map(|s| &mut s.kind)
        {
            *dropped = dropped.wrapping_add(1);
        }
    }

    /// Queues `message` for one session. `retained`: sent because of a new subscription,
    /// so RETAIN is set ([MQTT-3.3.1-8]); otherwise RETAIN follows Retain As Published
    /// ([MQTT-3.3.1-12], [MQTT-3.3.1-13]).
    pub(super) fn enqueue(
        &mut self,
        message: u32,
        delivery: &Delivery,
        retained: bool,
        now: Instant,
    ) -> bool {
        let Some(stored) = self.messages.get(message) else {
            return false;
        };
        let qos = stored.qos.min(delivery.qos);
        let retain = retained || (delivery.retain_as_published && stored.retain);
        let bytes = stored.payload_len(&self.blobs) as u32;
        let handle = delivery.session.0;
        let Some(session) = self.sessions.get(handle) else {
            return false;
        };
        let online = session.connection;
        // A bridge forwards QoS 0 too: its host is always there to drain the queue.
        if online.is_none()
            && !session.is_host_driven()
            && qos == QoS::AtMostOnce
            && !self.config.queue_qos0_offline
        {
            return false;
        }
        // A retained change copied to another shard is not a delivery: every shard must
        // hold it, so a full queue does not drop it.
        #[cfg(feature = "alloc")]
        let replica = session.is_peer() && super::shard::is_replica(delivery);
        #[cfg(not(feature = "alloc"))]
        let replica = false;
        let (limit_messages, limit_bytes) = self.queue_limits(session);
        let full = !replica
            && (session.queue.queued as usize >= limit_messages
                || session.queue.queued_bytes as usize + bytes as usize > limit_bytes);
        if full {
            let dropped_oldest = self.config.overflow_policy == OverflowPolicy::DropOldest
                && self.drop_oldest_queued(handle);
            self.count_dropped(handle);
            if !dropped_oldest {
                return false;
            }
        }
        self.next_seq += 1;
        let entry = QueueEntry {
            seq: self.next_seq,
            message: Link::to(message),
            qos,
            retain,
            packet_id: None,
            state: DeliveryState::Queued,
            dup: false,
            needs_send: online.is_some(),
            identifiers: delivery.identifiers.clone(),
            bytes,
            next: Link::NONE,
        };
        let Ok(entry_handle) = self.queue.insert(entry) else {
            self.count_dropped(handle);
            return false;
        };
        if let Some(m) = self.messages.get_mut(message) {
            m.refs += 1;
        }
        let tail = self.sessions.get(handle).and_then(|s| s.queue.tail.get());
        if let Some(t) = tail.and_then(|t| self.queue.get_mut(t)) {
            t.next = Link::to(entry_handle);
        }
        // Whether the new entry is the only one with something to send.
        let mut first = false;
        if let Some(session) = self.sessions.get_mut(handle) {
            if session.queue.head.is_none() {
                session.queue.head = Link::to(entry_handle);
            }
            // Every entry was passed: sending resumes at the new one.
            if session.queue.unsent.is_none() {
                session.queue.unsent = Link::to(entry_handle);
                first = true;
            }
            session.queue.tail = Link::to(entry_handle);
            session.queue.len += 1;
            session.queue.queued += 1;
            session.queue.queued_bytes += bytes;
        }
        let _ = now;
        self.mark_message(handle, entry_handle);
        // Behind an entry still to send, the new one goes out when that one does: the
        // connection already has output signalled, or waits for an acknowledgement to
        // open its window (which signals). Not signalling spares a futile poll_transmit
        // per delivery to a subscriber that is behind.
        if let Some(conn) = online
            && first
        {
            self.signal_transmit(conn);
        }
        true
    }

    /// Removes the oldest entry not yet sent; `false` if every entry is in flight.
    fn drop_oldest_queued(&mut self, session: u32) -> bool {
        let mut prev = None;
        let mut cursor = self.sessions.get(session).and_then(|s| s.queue.head.get());
        while let Some(h) = cursor {
            let Some(entry) = self.queue.get(h) else {
                return false;
            };
            if entry.state == DeliveryState::Queued {
                self.unlink_entry(session, prev, h);
                return true;
            }
            prev = Some(h);
            cursor = entry.next.get();
        }
        false
    }

    /// Removes queue entry `h` (whose predecessor is `prev`) from `session`'s queue.
    pub(super) fn unlink_entry(&mut self, session: u32, prev: Option<u32>, h: u32) {
        let Some(entry) = self.queue.remove(h) else {
            return;
        };
        if self.config.persistence && entry.qos > QoS::AtMostOnce {
            self.mark_message_gone(session, h, entry.seq);
        }
        match prev.and_then(|p| self.queue.get_mut(p)) {
            Some(p) => p.next = entry.next,
            None => {
                if let Some(s) = self.sessions.get_mut(session) {
                    s.queue.head = entry.next;
                }
            }
        }
        if let Some(s) = self.sessions.get_mut(session) {
            if s.queue.tail.get() == Some(h) {
                s.queue.tail = Link::from(prev);
            }
            if s.queue.unsent.get() == Some(h) {
                s.queue.unsent = entry.next;
            }
            if s.queue.unsent_prev.get() == Some(h) {
                s.queue.unsent_prev = Link::from(prev);
            }
            s.queue.len -= 1;
            if entry.state == DeliveryState::Queued {
                s.queue.queued -= 1;
                s.queue.queued_bytes -= entry.bytes;
            } else {
                s.queue.inflight -= 1;
            }
        }
        if entry.state == DeliveryState::Queued {
            self.dequeued(session);
        }
        if let Some(message) = entry.message.get() {
            self.release_message(message);
        }
    }

    /// Entry `h` of `session` (after `prev`) has something to send again (a PUBREL): moves
    /// the session's send cursor back to it if it had passed it.
    fn needs_send_again(&mut self, session: u32, prev: Option<u32>, h: u32) {
        let Some(entry) = self.queue.get_mut(h) else {
            return;
        };
        entry.needs_send = true;
        let seq = entry.seq;
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        // Entries are chained in sequence order (enqueued at the tail, restored sorted).
        let passed = s
            .queue
            .unsent
            .get()
            .and_then(|u| self.queue.get(u))
            .is_none_or(|u| u.seq > seq);
        if passed && let Some(s) = self.sessions.get_mut(session) {
            s.queue.unsent = Link::to(h);
            s.queue.unsent_prev = Link::from(prev);
        }
    }

    /// The queue entry of `session` in flight with `pid` in `state`, and its predecessor.
    fn find_inflight(
        &self,
        session: u32,
        pid: PacketId,
        state: DeliveryState,
    ) -> Option<(Option<u32>, u32)> {
        let mut prev = None;
        let mut cursor = self.sessions.get(session)?.queue.head.get();
        while let Some(h) = cursor {
            let entry = self.queue.get(h)?;
            if entry.packet_id == Some(pid) && entry.state == state {
                return Some((prev, h));
            }
            prev = Some(h);
            cursor = entry.next.get();
        }
        None
    }

    fn session_of(&self, id: ConnectionId) -> Option<u32> {
        self.connection(id)?.session.get()
    }

    /// PUBACK: a QoS 1 delivery is complete (§4.3.2).
    pub(super) fn on_puback(&mut self, id: ConnectionId, ack: &Ack<'_>, _now: Instant) {
        self.complete_inflight(id, ack.packet_id, DeliveryState::AwaitingPubAck);
    }

    /// Ends the delivery in flight with `pid` in `state` (PUBACK, PUBCOMP) and lets the
    /// next queued message take its place in the window.
    fn complete_inflight(&mut self, id: ConnectionId, pid: PacketId, state: DeliveryState) {
        let Some(session) = self.session_of(id) else {
            return;
        };
        if let Some((prev, h)) = self.find_inflight(session, pid, state) {
            self.unlink_entry(session, prev, h);
            self.signal_transmit(id);
        }
    }

    /// PUBREC: the client has the QoS 2 message; answer PUBREL (§4.3.3). A failure code
    /// ends the flow ([MQTT-4.3.3-4] does not apply: there is nothing to release).
    pub(super) fn on_pubrec(&mut self, id: ConnectionId, ack: &Ack<'_>, now: Instant) {
        let Some(session) = self.session_of(id) else {
            return;
        };
        match self.find_inflight(session, ack.packet_id, DeliveryState::AwaitingPubRec) {
            Some((prev, h)) if ack.reason_code.is_error() => self.unlink_entry(session, prev, h),
            Some((prev, h)) => {
                let mut release = None;
                if let Some(entry) = self.queue.get_mut(h) {
                    entry.state = DeliveryState::AwaitingPubComp;
                    entry.dup = false;
                    release = entry.message.take();
                }
                self.needs_send_again(session, prev, h);
                self.mark_message(session, h);
                if let Some(message) = release {
                    self.release_message(message);
                }
            }
            None => {
                // A PUBREC already answered (its PUBREL may have been lost): PUBREL again;
                // an unknown one gets 0x92 (5.0 §3.6.2.1).
                let known =
                    self.find_inflight(session, ack.packet_id, DeliveryState::AwaitingPubComp);
                match known {
                    Some((prev, h)) => self.needs_send_again(session, prev, h),
                    None => self.push_control(
                        id,
                        ControlKind::PubRel(ack.packet_id, ReasonCode::PacketIdentifierNotFound),
                        now,
                    ),
                }
            }
        }
        self.signal_transmit(id);
    }

    /// PUBCOMP: a QoS 2 delivery is complete.
    pub(super) fn on_pubcomp(&mut self, id: ConnectionId, ack: &Ack<'_>, _now: Instant) {
        self.complete_inflight(id, ack.packet_id, DeliveryState::AwaitingPubComp);
    }

    /// PUBREL from the client: forget the identifier and answer PUBCOMP ([MQTT-4.3.3-9]).
    pub(super) fn on_pubrel(&mut self, id: ConnectionId, ack: &Ack<'_>, now: Instant) {
        let Some(session) = self.session_of(id) else {
            return;
        };
        let code = if self.inbound_remove(session, ack.packet_id) {
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        };
        self.push_control(id, ControlKind::PubComp(ack.packet_id, code), now);
    }

    pub(super) fn inbound_contains(&self, session: u32, pid: PacketId) -> bool {
        let mut cursor = self.sessions.get(session).and_then(|s| s.inbound.get());
        while let Some(h) = cursor {
            let Some(entry) = self.inbound.get(h) else {
                return false;
            };
            if entry.packet_id == pid {
                return true;
            }
            cursor = entry.next.get();
        }
        false
    }

    fn inbound_insert(&mut self, session: u32, pid: PacketId) -> Result<(), CapacityError> {
        let head = self.sessions.get(session).map_or(Link::NONE, |s| s.inbound);
        let h = self.inbound.insert(InboundId {
            packet_id: pid,
            next: head,
        })?;
        if let Some(s) = self.sessions.get_mut(session) {
            s.inbound = Link::to(h);
            s.inbound_len += 1;
        }
        self.mark_inbound(session, pid);
        Ok(())
    }

    fn inbound_remove(&mut self, session: u32, pid: PacketId) -> bool {
        let mut prev: Option<u32> = None;
        let mut cursor = self.sessions.get(session).and_then(|s| s.inbound.get());
        while let Some(h) = cursor {
            let Some(entry) = self.inbound.get(h) else {
                return false;
            };
            let next = entry.next;
            if entry.packet_id == pid {
                match prev.and_then(|p| self.inbound.get_mut(p)) {
                    Some(p) => p.next = next,
                    None => {
                        if let Some(s) = self.sessions.get_mut(session) {
                            s.inbound = next;
                        }
                    }
                }
                self.inbound.remove(h);
                if let Some(s) = self.sessions.get_mut(session) {
                    s.inbound_len -= 1;
                }
                self.mark_inbound(session, pid);
                return true;
            }
            prev = Some(h);
            cursor = next.get();
        }
        false
    }

    fn find_alias(&self, id: ConnectionId, alias: u16) -> Option<crate::blob::BlobId> {
        let mut cursor = self.connection(id)?.aliases.get();
        while let Some(h) = cursor {
            let a = self.aliases.get(h)?;
            if a.alias == alias {
                return Some(a.topic);
            }
            cursor = a.next;
        }
        None
    }

    fn set_alias(
        &mut self,
        id: ConnectionId,
        alias: u16,
        topic: &str,
    ) -> Result<(), CapacityError> {
        let blob = self.blobs.insert_copy(topic.as_bytes())?;
        let mut cursor = self.connection(id).and_then(|c| c.aliases.get());
        while let Some(h) = cursor {
            let Some(a) = self.aliases.get_mut(h) else {
                break;
            };
            if a.alias == alias {
                let old = core::mem::replace(&mut a.topic, blob);
                self.blobs.remove(old);
                return Ok(());
            }
            cursor = a.next;
        }
        let head = self.connection(id).and_then(|c| c.aliases.get());
        match self.aliases.insert(super::Alias {
            alias,
            topic: blob,
            next: head,
        }) {
            Ok(h) => {
                if let Some(c) = self.connection_mut(id) {
                    c.aliases = Link::to(h);
                }
                Ok(())
            }
            Err(e) => {
                self.blobs.remove(blob);
                Err(e)
            }
        }
    }
}

/// Where the topic of a message being stored comes from: the packet, or the blob a topic
/// alias points at.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TopicRef<'t> {
    Str(&'t str),
    Blob(crate::blob::BlobId),
}
