//! Bridges: forwarding messages between this broker and another one (an edge gateway, a
//! cloud cluster) through the host's own MQTT client connection.
//!
//! A bridge is a persistent session with no network client. Its subscriptions say what
//! goes upstream; everything matching is queued for it like for any offline session —
//! bounded, persisted through [`Broker::poll_persist`] (QoS 1/2), so messages taken while
//! the uplink is down are forwarded later, in order (store and forward). The host takes
//! them with [`Broker::bridge_next`], sends them upstream and, once upstream has
//! acknowledged, releases them with [`Broker::bridge_ack`]; after an uplink failure,
//! [`Broker::bridge_rewind`] hands the unacknowledged ones out again.
//!
//! The host tells the broker whether its uplink is up ([`Broker::bridge_online`]). While it
//! is, a full bridge queue holds publishers back (backpressure, whatever the configured
//! overflow policy) instead of dropping what the link would carry a moment later; while it
//! is not, the queue is the store-and-forward backlog, bounded by
//! [`super::Config::max_queued_messages`] and [`super::Config::max_queued_bytes`] like an
//! offline session's, and a message beyond that is handled by the overflow policy (dropped,
//! counted in [`super::Stats::messages_dropped`] and per bridge, [`Broker::bridge_dropped`]).
//!
//! Messages arriving from upstream enter with [`Broker::bridge_publish`]. Bridge
//! subscriptions are No Local, so a message the bridge brought in is never sent back up:
//! that is the loop prevention.

use super::publish::Injected;
use super::{Broker, BrokerStorage, Hooks};
use crate::codec::{
    List, PacketId, Properties, Property, Publish, QoS, ReasonCode, SubscriptionOptions,
};
use crate::router::SessionId;
use crate::session::{DeliveryState, NEVER_EXPIRES, SessionKind};
use crate::storage::{CapacityError, Link};
use crate::time::Instant;
use crate::topic::SubscriptionFilter;

/// Handle of a bridge, from [`Broker::bridge_open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BridgeId(pub(crate) u32);

/// A message to forward upstream, from [`Broker::bridge_next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeMessage<'b> {
    /// Pass to [`Broker::bridge_ack`] once upstream has the message.
    pub token: u64,
    /// Topic name.
    pub topic: &'b str,
    /// Payload.
    pub payload: &'b [u8],
    /// QoS: the lower of the published QoS and the bridge subscription's.
    pub qos: QoS,
    /// RETAIN as published.
    pub retain: bool,
    /// The packet identifier to send it upstream with (QoS 1 and 2): given at its first
    /// hand-out and kept across [`Broker::bridge_rewind`] and restarts, since a client that
    /// resumes its session upstream re-sends unacknowledged messages with their original
    /// identifiers [MQTT-4.4.0-1].
    pub packet_id: Option<PacketId>,
    /// It was handed out before and may have reached upstream: send it with DUP
    /// [MQTT-3.3.1-1].
    pub dup: bool,
    /// The 5.0 properties the broker kept from the PUBLISH (user properties, content type,
    /// response topic, correlation data, payload format indicator), in wire form.
    kept: &'b [u8],
    /// Message Expiry Interval: the seconds left (5.0 §3.3.2.3.3), if it has one.
    expiry: Option<Property<'static>>,
}

impl BridgeMessage<'_> {
    /// The properties to forward the message with to a 5.0 upstream: those the broker kept
    /// and the Message Expiry Interval left [MQTT-3.3.2-6] (the Topic Alias and Subscription
    /// Identifiers were this broker's, and are not forwarded).
    pub fn properties(&self) -> Properties<'_> {
        List::from_wire_and_items(self.kept, self.expiry.as_slice())
    }
}

impl<S: BrokerStorage, H: Hooks> Broker<S, H> {
    /// Opens the bridge `name` (its session's client identifier), or finds it again after
    /// a restart or a restore. A network client with the same identifier is refused.
    pub fn bridge_open(&mut self, name: &str, now: Instant) -> Result<BridgeId, ReasonCode> {
        let handle = match self.find_session(name) {
            Some(h) => h,
            None => {
                let h = self.create_session(name)?;
                if let Some(s) = self.sessions.get_mut(h) {
                    s.expiry_interval = NEVER_EXPIRES;
                    s.disconnected_at = Some(now).into();
                }
                h
            }
        };
        let Some(session) = self.sessions.get_mut(handle) else {
            return Err(ReasonCode::UnspecifiedError);
        };
        if session.connection.is_some() {
            // The identifier belongs to a connected network client.
            return Err(ReasonCode::ClientIdentifierNotValid);
        }
        if !session.is_bridge() {
            session.kind = SessionKind::Bridge {
                up: false,
                dropped: 0,
            };
        }
        session.expiry_interval = NEVER_EXPIRES;
        self.unclaim_session(handle);
        self.mark_session(handle);
        Ok(BridgeId(handle))
    }

    /// Whether the host's uplink for `bridge` is up (it starts down, and is down again
    /// after a restart). Up: a full queue stalls publishers until the host takes messages
    /// with [`Broker::bridge_next`]. Down: a full queue drops (see the module
    /// documentation), and publishers stalled on it go on.
    pub fn bridge_online(&mut self, bridge: BridgeId, online: bool) {
        let Some(session) = self.sessions.get_mut(bridge.0).filter(|s| s.is_bridge()) else {
            return;
        };
        if session.is_bridge_up() == online {
            return;
        }
        if let SessionKind::Bridge { up, .. } = &mut session.kind {
            *up = online;
        }
        if online {
            self.bridges_up += 1;
        } else {
            self.bridges_up -= 1;
            self.resume_stalled_on(bridge.0);
        }
    }

    /// Forwards messages matching `filter` over the bridge, at most at `qos`.
    pub fn bridge_subscribe(
        &mut self,
        bridge: BridgeId,
        filter: &str,
        qos: QoS,
    ) -> Result<(), ReasonCode> {
        let parsed = SubscriptionFilter::parse(filter, &self.config.topic_limits)
            .map_err(|_| ReasonCode::TopicFilterInvalid)?;
        // No Local: what the bridge brought in never goes back out (loop prevention).
        let options = SubscriptionOptions {
            no_local: true,
            ..SubscriptionOptions::qos(qos)
        };
        let existed = self
            .router
            .subscribe(SessionId(bridge.0), &parsed, options, None)
            .map_err(|_| ReasonCode::QuotaExceeded)?;
        if !existed && let Some(s) = self.sessions.get_mut(bridge.0) {
            s.subscriptions += 1;
        }
        #[cfg(feature = "alloc")]
        if !existed {
            self.note_interest(bridge.0, filter, true);
        }
        self.mark_subscription(bridge.0, filter);
        Ok(())
    }

    /// A PUBLISH arrived from upstream: route it to local subscribers (never back to this
    /// bridge), storing it if retained. Its QoS is the one it came with (its packet
    /// identifier and DUP are upstream's business). Of its 5.0 properties (none from a 3.x
    /// upstream), those a message keeps go on with it to local subscribers (user
    /// properties, content type, response topic, correlation data, payload format
    /// indicator [MQTT-3.3.2-4]), and a Message Expiry Interval counts down from here; a
    /// Topic Alias is upstream's and must have been resolved into `topic`.
    pub fn bridge_publish(
        &mut self,
        bridge: BridgeId,
        publish: &Publish<'_>,
        now: Instant,
    ) -> Result<usize, CapacityError> {
        let message = Injected {
            topic: publish.topic,
            properties: &publish.properties,
            payload: publish.payload,
            qos: publish.qos_pid.qos(),
            retain: publish.retain,
        };
        self.inject(&message, Some(SessionId(bridge.0)), now)
    }

    /// The oldest queued message not yet handed out, to forward upstream. It stays queued
    /// until [`Broker::bridge_ack`]; expired messages are dropped on the way.
    pub fn bridge_next(&mut self, bridge: BridgeId, now: Instant) -> Option<BridgeMessage<'_>> {
        if !self.sessions.get(bridge.0).is_some_and(|s| s.is_bridge()) {
            return None;
        }
        let found = self.take_next_for_host(bridge.0, now)?;
        if let Some(entry) = self.queue.get_mut(found)
            && entry.qos == QoS::ExactlyOnce
        {
            // Forwarded at QoS 2: [`Broker::bridge_received`] at PUBREC, then
            // [`Broker::bridge_ack`] at PUBCOMP.
            entry.state = DeliveryState::AwaitingPubRec;
        }
        let unnumbered = self
            .queue
            .get(found)
            .is_some_and(|e| e.qos != QoS::AtMostOnce && e.packet_id.is_none());
        if unnumbered {
            let packet_id = self.bridge_packet_id(bridge);
            if let Some(entry) = self.queue.get_mut(found) {
                entry.packet_id = packet_id;
            }
        }
        let entry = self.queue.get(found)?;
        let message = self.messages.get(entry.message.get()?)?;
        let parts = message.parts(&self.blobs)?;
        // Not expired: `take_next_for_host` dropped expired messages.
        let expiry = message.expires_at.map(|at| {
            let left = (at - now).as_secs_ceil();
            Property::MessageExpiryInterval(left.min(u64::from(u32::MAX)) as u32)
        });
        Some(BridgeMessage {
            token: entry.seq,
            topic: parts.topic,
            payload: parts.payload,
            qos: entry.qos,
            retain: message.retain,
            packet_id: entry.packet_id,
            dup: entry.dup,
            kept: parts.properties,
            expiry,
        })
    }

    /// A packet identifier no message of the bridge holds, for another packet the host
    /// sends upstream (a SUBSCRIBE): identifiers in flight must be unique
    /// [MQTT-2.2.1-3]. `None` if all 65 535 are taken.
    pub fn bridge_packet_id(&mut self, bridge: BridgeId) -> Option<PacketId> {
        self.sessions.get(bridge.0).filter(|s| s.is_bridge())?;
        // Unlike a client's window, a bridge's queue also holds rewound messages with
        // numbers: the identifiers are checked against the whole queue.
        self.next_packet_id(bridge.0)
    }

    /// Upstream has the message `token` (PUBACK; PUBCOMP for QoS 2), or refused it: forget
    /// it, and its packet identifier.
    pub fn bridge_ack(&mut self, bridge: BridgeId, token: u64) -> bool {
        self.ack_for_host(bridge.0, token)
    }

    /// The message `token` is larger than upstream takes (its Maximum Packet Size
    /// [MQTT-3.1.2-24], or what the host learnt otherwise), so it may never be sent: forget
    /// it, counted in [`super::Stats::messages_oversized`] like a message too large for a
    /// client, and in the bridge's [`Broker::bridge_dropped`]. Sending it anyway would only
    /// get the uplink closed, and the message sent again after every reconnection.
    pub fn bridge_oversized(&mut self, bridge: BridgeId, token: u64) -> bool {
        let forgotten = self.ack_for_host(bridge.0, token);
        if forgotten {
            self.stats.messages_oversized += 1;
            if let Some(SessionKind::Bridge { dropped, .. }) =
                self.sessions.get_mut(bridge.0).map(|s| &mut s.kind)
            {
                *dropped = dropped.wrapping_add(1);
            }
        }
        forgotten
    }

    /// Upstream answered PUBREC for the QoS 2 message `token`: it owns the message now
    /// (§4.3.3), which is released here and never sent again; the entry stays, with its
    /// packet identifier, until PUBCOMP ([`Broker::bridge_ack`]), and after a reconnection
    /// its PUBREL goes again ([`Broker::bridge_pending_release`], [MQTT-4.4.0-1]).
    pub fn bridge_received(&mut self, bridge: BridgeId, token: u64) -> bool {
        let session = bridge.0;
        let mut cursor = self.sessions.get(session).and_then(|s| s.queue.head.get());
        while let Some(h) = cursor {
            let Some(entry) = self.queue.get_mut(h) else {
                return false;
            };
            if entry.seq == token && entry.state == DeliveryState::AwaitingPubRec {
                entry.state = DeliveryState::AwaitingPubComp;
                entry.dup = false;
                let release = entry.message.take();
                self.mark_message(session, h);
                if let Some(message) = release {
                    self.release_message(message);
                }
                return true;
            }
            cursor = entry.next.get();
        }
        false
    }

    /// The QoS 2 messages upstream has received (PUBREC) but not completed (PUBCOMP), as
    /// (token, packet identifier), in order: after a reconnection their PUBREL goes again
    /// [MQTT-4.4.0-1]. At most `N` of them (the host's window).
    pub fn bridge_pending_release<const N: usize>(
        &self,
        bridge: BridgeId,
    ) -> heapless::Vec<(u64, PacketId), N> {
        let mut pending = heapless::Vec::new();
        let mut cursor = self.sessions.get(bridge.0).and_then(|s| s.queue.head.get());
        while let Some(entry) = cursor.and_then(|h| self.queue.get(h)) {
            if entry.state == DeliveryState::AwaitingPubComp
                && let Some(id) = entry.packet_id
                && pending.push((entry.seq, id)).is_err()
            {
                break;
            }
            cursor = entry.next.get();
        }
        pending
    }

    /// Marks the oldest queued entry of a host-drained session (a bridge's, a peer
    /// shard's) as handed out and returns it; expired messages are dropped on the way.
    pub(super) fn take_next_for_host(&mut self, session: u32, now: Instant) -> Option<u32> {
        // From the send cursor, not the head: what is before it is handed out already,
        // and a peer shard's queue holds a whole window of those.
        let (mut prev, mut cursor) = self
            .sessions
            .get(session)
            .map(|s| (s.queue.unsent_prev.get(), s.queue.unsent.get()))?;
        let found = loop {
            let h = cursor?;
            let entry = self.queue.get(h)?;
            let next = entry.next.get();
            if entry.state == DeliveryState::Queued {
                let expired = entry
                    .message
                    .get()
                    .and_then(|m| self.messages.get(m))
                    .is_none_or(|m| m.expires_at.is_some_and(|at| at <= now));
                if expired {
                    self.stats.messages_expired += 1;
                    self.unlink_entry(session, prev, h);
                    cursor = next;
                    continue;
                }
                break h;
            }
            prev = Some(h);
            cursor = next;
        };
        let (bytes, next) = self
            .queue
            .get(found)
            .map_or((0, None), |e| (e.bytes, e.next.get()));
        if let Some(entry) = self.queue.get_mut(found) {
            entry.state = DeliveryState::AwaitingPubAck;
        }
        if let Some(s) = self.sessions.get_mut(session) {
            s.queue.queued -= 1;
            s.queue.queued_bytes -= bytes;
            s.queue.inflight += 1;
            s.queue.unsent_prev = Link::to(found);
            s.queue.unsent = Link::from(next);
        }
        self.dequeued(session);
        self.mark_message(session, found);
        Some(found)
    }

    /// Forgets the handed-out entry `token` of a host-drained session.
    pub(super) fn ack_for_host(&mut self, session: u32, token: u64) -> bool {
        let mut prev = None;
        let mut cursor = self.sessions.get(session).and_then(|s| s.queue.head.get());
        while let Some(h) = cursor {
            let Some(entry) = self.queue.get(h) else {
                return false;
            };
            if entry.seq == token && entry.state != DeliveryState::Queued {
                self.unlink_entry(session, prev, h);
                return true;
            }
            prev = Some(h);
            cursor = entry.next.get();
        }
        false
    }

    /// The uplink failed: every message handed out and not acknowledged goes out again,
    /// in the original order, with its packet identifier and DUP set (a QoS 2 one that
    /// upstream has received stays as it is: see [`Broker::bridge_pending_release`]).
    pub fn bridge_rewind(&mut self, bridge: BridgeId) {
        let mut cursor = self.sessions.get(bridge.0).and_then(|s| s.queue.head.get());
        let mut returned = (0u32, 0u32);
        while let Some(h) = cursor {
            let Some(entry) = self.queue.get_mut(h) else {
                break;
            };
            // Released at PUBREC: upstream has it; only its PUBREL goes again.
            if entry.state != DeliveryState::Queued && entry.state != DeliveryState::AwaitingPubComp
            {
                entry.state = DeliveryState::Queued;
                // It may have reached upstream: sent again with DUP, same identifier.
                entry.dup = true;
                returned.0 += 1;
                returned.1 += entry.bytes;
            }
            cursor = entry.next.get();
        }
        if let Some(s) = self.sessions.get_mut(bridge.0) {
            s.queue.inflight -= returned.0;
            s.queue.queued += returned.0;
            s.queue.queued_bytes += returned.1;
            // Everything goes out again from the start.
            s.queue.unsent = s.queue.head;
            s.queue.unsent_prev = Link::NONE;
        }
    }

    /// Messages the bridge dropped since it was opened: those its full backlog dropped
    /// while its uplink was down, and those too large for upstream
    /// ([`Broker::bridge_oversized`]); wraps at `u32::MAX`. The host shows it to its user (a log, a `$SYS` topic).
    pub fn bridge_dropped(&self, bridge: BridgeId) -> u32 {
        self.sessions.get(bridge.0).map_or(0, |s| match s.kind {
            SessionKind::Bridge { dropped, .. } => dropped,
            _ => 0,
        })
    }

    /// Messages waiting for or in flight over the bridge.
    pub fn bridge_backlog(&self, bridge: BridgeId) -> usize {
        self.sessions
            .get(bridge.0)
            .map_or(0, |s| s.queue.len as usize)
    }
}
