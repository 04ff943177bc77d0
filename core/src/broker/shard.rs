//! Shards: several brokers in one process, each owning some of the sessions, that forward
//! messages to each other so that together they behave as one broker. This is how a host
//! spreads protocol work over CPU cores without one lock or one thread for routing.
//!
//! Every broker stands in for each of the others with a **peer**: a session with no
//! network client, like a bridge's, that subscribes to what the other broker's own
//! sessions subscribe to. The host learns those subscriptions from
//! [`Broker::poll_interest`] (every local subscription added or removed, filter text
//! included) and tells the other brokers with [`Broker::peer_subscribe`] and
//! [`Broker::peer_unsubscribe`] (it counts per filter, so each filter is announced once).
//! A message published here is then routed as usual; the copies that land in a peer's
//! queue are what the other broker must see. The host takes them with
//! [`Broker::peer_next`], hands them to the other broker, which routes them to its own
//! sessions only with [`Broker::forward_publish`], and releases them with
//! [`Broker::peer_ack`] once that broker took them (and, with persistence, made them
//! durable).
//!
//! What makes the brokers one:
//! - **Shared subscriptions** ([MQTT-4.8.2-2]: each message to one member of a group): a
//!   peer is one member of each group the other broker has members in, so the publishing
//!   broker chooses once, among its own members and the peers. A copy forwarded for a
//!   group names it by [`crate::router::share_key`], and the receiving broker delivers it
//!   only to that group, to one of its own members.
//! - **Retained messages**: every broker keeps all of them, so a new subscription is served
//!   locally. A retained PUBLISH goes to every peer (a retain-only copy where no
//!   subscription asked for it). Two shards may change the same topic at the same time, so
//!   each change carries a stamp (a Lamport clock and the shard's index): every broker
//!   keeps the change with the highest stamp, and all end with the same message. Only
//!   the broker the topic maps to ([`Broker::enable_sharding`]) persists its changes,
//!   its own and the newer ones forwarded to it, so the store sees every change of a
//!   topic in the order of their stamps, from one writer.
//! - **Acknowledgements**: a peer's queue is an online session's for backpressure, so a
//!   publisher is slowed when another broker cannot take more. The host holds back a
//!   PUBACK or PUBREC until every peer has taken what was queued before it
//!   ([`Broker::peer_oldest`], [`Broker::last_seq`]), so an acknowledged message is in
//!   every broker that has a subscriber for it.
//! - **Backpressure on forwarded messages**: [`Broker::forward_publish`] refuses a copy
//!   whose local subscriber's queue is full, under
//!   [`super::OverflowPolicy::Backpressure`]; the host keeps it (and what the same peer
//!   sent after it) and tries again once [`Broker::peer_stalled`] says so.
//!
//! Needs the `alloc` feature: the stand-ins and stamps live on the heap.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

use super::publish::{Refused, TopicRef};
use super::{Broker, BrokerStorage, Hooks};
use crate::codec::{QoS, ReasonCode, SubscriptionOptions};
use crate::router::{Delivery, SUBSCRIPTION_ID_MAX, Scope, SessionId, SubscriptionId};
use crate::session::NEVER_EXPIRES;
use crate::storage::Storage;
use crate::time::Instant;
use crate::topic::SubscriptionFilter;

/// Handle of a peer, from [`Broker::peer_open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub(crate) u32);

/// Why a copy is forwarded: which of the receiving broker's subscriptions it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardScope {
    /// Its sessions' plain subscriptions (and, if retained, its retained store).
    Plain,
    /// One member of the share group with this [`crate::router::share_key`].
    Group(u32),
    /// No subscription: a retained message every broker must hold.
    RetainOnly,
}

/// A message for another broker, from [`Broker::peer_next`]; the same fields go to its
/// [`Broker::forward_publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward<'b> {
    /// Pass to [`Broker::peer_ack`] once the other broker took it.
    pub token: u64,
    /// Topic name.
    pub topic: &'b str,
    /// 5.0 properties in wire form (user properties, content type, response topic,
    /// correlation data, payload format), without those set per delivery.
    pub properties: &'b [u8],
    /// Payload.
    pub payload: &'b [u8],
    /// QoS as published.
    pub qos: QoS,
    /// RETAIN as published.
    pub retain: bool,
    /// Seconds left of the Message Expiry Interval, if it has one.
    pub expiry: Option<u32>,
    /// Which subscriptions it is for.
    pub scope: ForwardScope,
    /// For a retained message, the order of its change (see the module docs); else 0.
    pub stamp: u64,
}

impl Forward<'_> {
    /// An owned copy, to hand to another broker that runs elsewhere (another task): its
    /// topic, properties and payload in one allocation.
    pub fn to_owned(&self) -> OwnedForward {
        let mut bytes =
            Vec::with_capacity(self.topic.len() + self.properties.len() + self.payload.len());
        bytes.extend_from_slice(self.topic.as_bytes());
        bytes.extend_from_slice(self.properties);
        bytes.extend_from_slice(self.payload);
        OwnedForward {
            bytes,
            topic_len: self.topic.len(),
            properties_len: self.properties.len(),
            fields: Forward {
                topic: "",
                properties: &[],
                payload: &[],
                ..*self
            },
        }
    }
}

/// A [`Forward`] that owns its bytes ([`Forward::to_owned`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedForward {
    /// Topic, properties and payload, in this order.
    bytes: Vec<u8>,
    topic_len: usize,
    properties_len: usize,
    /// Everything else, with the borrowed fields left empty.
    fields: Forward<'static>,
}

impl OwnedForward {
    /// The token to acknowledge it with ([`Broker::peer_ack`]).
    pub fn token(&self) -> u64 {
        self.fields.token
    }

    /// The borrowed form, for [`Broker::forward_publish`].
    pub fn forward(&self) -> Forward<'_> {
        let (topic, rest) = self.bytes.split_at(self.topic_len);
        let (properties, payload) = rest.split_at(self.properties_len);
        Forward {
            // Copied from a `&str` by `to_owned`.
            topic: core::str::from_utf8(topic).unwrap_or_default(),
            properties,
            payload,
            ..self.fields
        }
    }
}

/// A subscription of this broker's own sessions appeared or went, from
/// [`Broker::poll_interest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterestChange {
    /// The filter as subscribed, with any `$share/{group}/` prefix.
    pub filter: String,
    /// Added (else removed).
    pub added: bool,
}

/// Why [`Broker::forward_publish`] did not take a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    /// A local subscriber's queue is full (backpressure): keep the copy, and every later
    /// one from the same peer, until [`Broker::peer_stalled`] is `false`.
    Stalled,
    /// No room for the message; it is dropped here (counted), like a local PUBLISH the
    /// storage cannot hold.
    Capacity,
    /// Not a peer of this broker, or malformed properties.
    Invalid,
}

/// How many times a subscriber's queue limits a stand-in for another shard may hold: it
/// queues for every subscriber of that shard, so one subscriber's limits would stall
/// publishers long before any of them is behind.
pub(crate) const PEER_QUEUE_FACTOR: usize = 16;

/// Marks a retain-only copy among a queue entry's identifiers (no share key takes it).
const RETAIN_ONLY: u32 = SUBSCRIPTION_ID_MAX;

/// Whether a delivery to a peer is a retain-only copy.
pub(super) fn is_replica(delivery: &Delivery) -> bool {
    delivery
        .identifiers
        .first()
        .is_some_and(|id| id.get() == RETAIN_ONLY)
}

/// What a sharded broker keeps beyond a plain one.
#[derive(Debug, Default)]
pub(crate) struct ShardState {
    /// This broker's index among the shards (the low byte of its stamps).
    index: u8,
    /// How many shards there are.
    count: u8,
    /// Lamport clock of retained changes.
    clock: u64,
    /// Peers, by session handle; the session a forwarded copy from it waits on.
    peers: BTreeMap<u32, Option<u32>>,
    /// Local subscription changes the host has not taken yet.
    interest: VecDeque<InterestChange>,
    /// Stamp of the last change kept per retained topic (clears included, so an older
    /// change arriving later cannot bring a cleared message back).
    topic_stamps: BTreeMap<String, u64>,
    /// Stamps of retained messages still stored, by message handle (for their copies).
    message_stamps: BTreeMap<u32, u64>,
}

impl ShardState {
    /// How many stand-ins for other shards this broker has.
    pub(super) fn peer_count(&self) -> usize {
        self.peers.len()
    }
}

impl<S: BrokerStorage, H: Hooks> Broker<S, H> {
    /// Makes this broker shard `index` of `count` (see the broker module docs, "Shards"):
    /// from now on its local subscription changes are reported by
    /// [`Broker::poll_interest`], retained changes are stamped, and it persists the
    /// retained topics that map to it (a stable hash of the topic name, the same in every
    /// shard) and no others. Call before any client connects.
    pub fn enable_sharding(&mut self, index: u8, count: u8) {
        self.shard = Some(Box::new(ShardState {
            index,
            count: count.max(1),
            ..ShardState::default()
        }));
    }

    /// This broker's shard index, if it is one of several. An identifier this broker
    /// assigns to a client starts with `fulmar-` and this index in two hex digits.
    pub fn shard_index(&self) -> Option<u8> {
        self.shard.as_ref().map(|s| s.index)
    }

    /// Opens the stand-in for another shard. `name` must be unique and not a client's.
    pub fn peer_open(&mut self, name: &str, now: Instant) -> Result<PeerId, ReasonCode> {
        if self.shard.is_none() || self.find_session(name).is_some() {
            return Err(ReasonCode::ClientIdentifierNotValid);
        }
        let handle = self.create_session(name)?;
        if let Some(s) = self.sessions.get_mut(handle) {
            s.expiry_interval = NEVER_EXPIRES;
            s.disconnected_at = Some(now).into();
            s.kind = crate::session::SessionKind::Peer;
        }
        if let Some(shard) = &mut self.shard {
            shard.peers.insert(handle, None);
        }
        Ok(PeerId(handle))
    }

    /// The other shard's sessions subscribe to `filter` (plain or `$share/...`).
    pub fn peer_subscribe(&mut self, peer: PeerId, filter: &str) -> Result<(), ReasonCode> {
        let parsed = SubscriptionFilter::parse(filter, &self.config.topic_limits)
            .map_err(|_| ReasonCode::TopicFilterInvalid)?;
        // QoS 2 and Retain As Published: the other broker applies its subscribers' own
        // options. A group stand-in carries the group's key, which its copies then name.
        let options = SubscriptionOptions {
            retain_as_published: true,
            ..SubscriptionOptions::qos(QoS::ExactlyOnce)
        };
        let identifier = parsed.group().and_then(|group| {
            SubscriptionId::new(crate::router::share_key(group, parsed.filter().as_str()))
        });
        let existed = self
            .router
            .subscribe(SessionId(peer.0), &parsed, options, identifier)
            .map_err(|_| ReasonCode::QuotaExceeded)?;
        if !existed && let Some(s) = self.sessions.get_mut(peer.0) {
            s.subscriptions += 1;
        }
        Ok(())
    }

    /// The other shard's sessions no longer subscribe to `filter`.
    pub fn peer_unsubscribe(&mut self, peer: PeerId, filter: &str) -> bool {
        let Ok(parsed) = SubscriptionFilter::parse(filter, &self.config.topic_limits) else {
            return false;
        };
        let removed = self.router.unsubscribe(SessionId(peer.0), &parsed);
        if removed && let Some(s) = self.sessions.get_mut(peer.0) {
            s.subscriptions -= 1;
        }
        removed
    }

    /// The oldest copy for `peer` not handed out yet; it stays queued until
    /// [`Broker::peer_ack`]. Expired messages are dropped on the way.
    pub fn peer_next(&mut self, peer: PeerId, now: Instant) -> Option<Forward<'_>> {
        let found = self.take_next_for_host(peer.0, now)?;
        let entry = self.queue.get(found)?;
        let handle = entry.message.get()?;
        let message = self.messages.get(handle)?;
        let parts = message.parts(&self.blobs)?;
        let scope = match entry.identifiers.first().map(|id| id.get()) {
            Some(RETAIN_ONLY) => ForwardScope::RetainOnly,
            Some(key) => ForwardScope::Group(key),
            None => ForwardScope::Plain,
        };
        let stamp = self
            .shard
            .as_ref()
            .and_then(|s| s.message_stamps.get(&handle).copied())
            .unwrap_or(0);
        Some(Forward {
            token: entry.seq,
            topic: parts.topic,
            properties: parts.properties,
            payload: parts.payload,
            qos: message.qos,
            retain: message.retain,
            expiry: message.expires_at.map(|at| {
                let ms = at.as_millis().saturating_sub(now.as_millis());
                u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX).max(1)
            }),
            scope,
            stamp,
        })
    }

    /// The other shard took copy `token`: forget it.
    pub fn peer_ack(&mut self, peer: PeerId, token: u64) -> bool {
        self.ack_for_host(peer.0, token)
    }

    /// The sequence number of the oldest copy for `peer` not acknowledged yet; `None`
    /// when it has everything. Compare with [`Broker::last_seq`] taken when an
    /// acknowledgement was produced: once every peer's oldest is above it (or `None`),
    /// every copy the acknowledged message caused has been taken.
    pub fn peer_oldest(&self, peer: PeerId) -> Option<u64> {
        let head = self.sessions.get(peer.0)?.queue.head.get()?;
        self.queue.get(head).map(|e| e.seq)
    }

    /// The sequence number of the newest delivery queued so far, to any session.
    pub fn last_seq(&self) -> u64 {
        self.next_seq
    }

    /// Copies waiting for `peer` or handed out and not acknowledged.
    pub fn peer_backlog(&self, peer: PeerId) -> usize {
        self.sessions
            .get(peer.0)
            .map_or(0, |s| s.queue.len as usize)
    }

    /// Whether a copy from `peer` waits for a local subscriber's queue to drain
    /// ([`ForwardError::Stalled`]).
    pub fn peer_stalled(&self, peer: PeerId) -> bool {
        self.shard
            .as_ref()
            .and_then(|s| s.peers.get(&peer.0).copied().flatten())
            .is_some()
    }

    /// The next change in this broker's own subscriptions, for the other shards.
    pub fn poll_interest(&mut self) -> Option<InterestChange> {
        self.shard.as_mut()?.interest.pop_front()
    }

    /// Routes a copy another shard forwarded (see [`Forward`]) to this broker's own
    /// sessions, and keeps it if it is the newest change of a retained topic. Returns how
    /// many sessions it was queued for.
    pub fn forward_publish(
        &mut self,
        from: PeerId,
        forward: &Forward<'_>,
        now: Instant,
    ) -> Result<usize, ForwardError> {
        if !self.is_peer(from.0) {
            return Err(ForwardError::Invalid);
        }
        // Routing trusts a stored message's topic: a copy's was checked by the shard it
        // was published to, but this is the host's word.
        if crate::topic::TopicName::new(forward.topic, &crate::topic::TopicLimits::DEFAULT).is_err()
        {
            return Err(ForwardError::Invalid);
        }
        let properties = crate::codec::properties::publish_properties_from_wire(forward.properties)
            .map_err(|_| ForwardError::Invalid)?;
        let message = self
            .store_message(
                TopicRef::Str(forward.topic),
                &properties,
                forward.payload,
                forward.qos,
                forward.retain,
                forward.expiry,
                now,
            )
            .map_err(|_| {
                self.stats.messages_dropped += 1;
                ForwardError::Capacity
            })?;
        let group = match forward.scope {
            ForwardScope::Plain => Some(None),
            ForwardScope::Group(key) => Some(Some(key)),
            ForwardScope::RetainOnly => None,
        };
        let routed = match group {
            Some(group) => self.route_forwarded(message, group, now),
            None => Ok(0),
        };
        match routed {
            Ok(_) => {
                // A group's copy is one of several: the plain or retain-only copy carries
                // the retained change.
                if forward.retain && !matches!(forward.scope, ForwardScope::Group(_)) {
                    self.apply_forwarded_retained(message, forward);
                }
            }
            Err(Refused::Wait { session }) => {
                if let Some(shard) = &mut self.shard {
                    shard.peers.insert(from.0, Some(session));
                }
                if let Some(s) = self.sessions.get_mut(session) {
                    s.stalled_publishers += 1;
                }
            }
            Err(Refused::Capacity) => self.stats.messages_dropped += 1,
        }
        self.release_message(message);
        routed.map_err(|refused| match refused {
            Refused::Wait { .. } => ForwardError::Stalled,
            Refused::Capacity => ForwardError::Capacity,
        })
    }

    /// Routes a forwarded message to local sessions only: plain subscriptions, or the one
    /// share group `group` names.
    fn route_forwarded(
        &mut self,
        message: u32,
        group: Option<u32>,
        now: Instant,
    ) -> Result<usize, Refused> {
        let Some(shard) = self.shard.as_ref() else {
            return Ok(0);
        };
        let peers = &shard.peers;
        let is_local = |s: SessionId| !peers.contains_key(&s.0);
        let scope = Scope::Forwarded {
            group,
            is_local: &is_local,
        };
        let mut deliveries = core::mem::take(&mut self.deliveries);
        let routed = self.route_into(message, None, scope, &mut deliveries);
        let result =
            routed.and_then(|bytes| self.queue_deliveries(message, &deliveries, true, bytes, now));
        deliveries.truncate(0);
        self.deliveries = deliveries;
        result
    }

    /// Whether this broker persists the retained topic of `message` (see
    /// [`Broker::enable_sharding`]): two shards writing the same topic could otherwise
    /// leave on disk whichever commit landed last rather than the newest change.
    pub(super) fn owns_retained_of(&self, message: u32) -> bool {
        let Some(shard) = self.shard.as_ref() else {
            return true;
        };
        self.messages
            .get(message)
            .and_then(|m| m.parts(&self.blobs))
            .is_none_or(|p| retained_owner(p.topic, shard.count) == shard.index)
    }

    /// Keeps a forwarded retained change if its stamp is the newest for its topic.
    fn apply_forwarded_retained(&mut self, message: u32, forward: &Forward<'_>) {
        let Some(shard) = self.shard.as_mut() else {
            return;
        };
        shard.clock = shard.clock.max(forward.stamp >> 8);
        let newer = shard
            .topic_stamps
            .get(forward.topic)
            .is_none_or(|&kept| forward.stamp > kept);
        if !newer {
            return;
        }
        match shard.topic_stamps.get_mut(forward.topic) {
            Some(kept) => *kept = forward.stamp,
            None => {
                shard
                    .topic_stamps
                    .insert(String::from(forward.topic), forward.stamp);
            }
        }
        shard.message_stamps.insert(message, forward.stamp);
        // Persisted here only if the topic maps to this shard.
        self.mark_retained_topic_of(message);
        self.retain_unpersisted(message, forward.payload.is_empty());
    }

    /// A local retained change: stamps it (see the module docs).
    pub(super) fn stamp_retained(&mut self, message: u32) {
        let Some(shard) = self.shard.as_mut() else {
            return;
        };
        let Some(topic) = self
            .messages
            .get(message)
            .and_then(|m| m.parts(&self.blobs))
            .map(|p| p.topic)
        else {
            return;
        };
        shard.clock += 1;
        let stamp = (shard.clock << 8) | u64::from(shard.index);
        match shard.topic_stamps.get_mut(topic) {
            Some(kept) => *kept = stamp,
            None => {
                shard.topic_stamps.insert(String::from(topic), stamp);
            }
        }
        shard.message_stamps.insert(message, stamp);
    }

    /// Queues a retain-only copy of a local retained change for every peer that did not
    /// get a plain copy of it: every shard holds every retained message.
    pub(super) fn replicate_retained(&mut self, message: u32, routed: &[Delivery], now: Instant) {
        let Some(shard) = self.shard.as_ref() else {
            return;
        };
        let missing: Vec<u32> = shard
            .peers
            .keys()
            .copied()
            .filter(|p| !routed.iter().any(|d| d.session.0 == *p && !d.shared))
            .collect();
        for peer in missing {
            let mut identifiers = heapless::Vec::new();
            if let Some(mark) = SubscriptionId::new(RETAIN_ONLY) {
                let _ = identifiers.push(mark);
            }
            let delivery = Delivery {
                session: SessionId(peer),
                qos: QoS::ExactlyOnce,
                retain_as_published: true,
                identifiers,
                shared: false,
            };
            self.enqueue(message, &delivery, false, now);
        }
    }

    /// A message was freed: its stamp goes with it.
    pub(super) fn forget_stamp(&mut self, message: u32) {
        if let Some(shard) = self.shard.as_mut() {
            shard.message_stamps.remove(&message);
        }
    }

    /// Subscriptions of the stand-ins for other shards.
    pub(super) fn peer_subscriptions(&self) -> usize {
        self.shard.as_ref().map_or(0, |shard| {
            shard
                .peers
                .keys()
                .filter_map(|p| self.sessions.get(*p))
                .map(|s| s.subscriptions as usize)
                .sum()
        })
    }

    /// Whether `session` stands in for another shard.
    pub(super) fn is_peer(&self, session: u32) -> bool {
        self.sessions.get(session).is_some_and(|s| s.is_peer())
    }

    /// Reports a local subscription change to the host (sharded brokers only).
    pub(super) fn note_interest(&mut self, session: u32, filter: &str, added: bool) {
        if self.shard.is_none() || self.is_peer(session) {
            return;
        }
        if let Some(shard) = self.shard.as_mut() {
            shard.interest.push_back(InterestChange {
                filter: String::from(filter),
                added,
            });
        }
    }

    /// Reports every subscription of an ending session as removed.
    pub(super) fn note_interest_gone(&mut self, session: u32) {
        if self.shard.is_none() || self.is_peer(session) {
            return;
        }
        let mut scratch = alloc::vec![0u8; self.config.max_packet_size as usize];
        let mut gone = Vec::new();
        self.router
            .for_each_subscription(SessionId(session), &mut scratch, |filter, _, _| {
                gone.push(InterestChange {
                    filter: String::from(filter),
                    added: false,
                });
            });
        if let Some(shard) = self.shard.as_mut() {
            shard.interest.extend(gone);
        }
    }

    /// A drained session releases the peers whose copies waited on it.
    pub(super) fn resume_peers_on(&mut self, session: u32) {
        if let Some(shard) = self.shard.as_mut() {
            for waiting in shard.peers.values_mut() {
                if *waiting == Some(session) {
                    *waiting = None;
                }
            }
        }
    }
}

/// The shard, among `count`, that persists the changes of retained `topic` (see
/// [`Broker::enable_sharding`]): the same in every shard and every run. A host whose
/// shards share one store clears only its own records on [`super::PersistOp::Reset`], so
/// it needs to know.
pub fn retained_owner(topic: &str, count: u8) -> u8 {
    (stable_hash(topic) % u64::from(count.max(1))) as u8
}

/// The shard, among `count`, whose broker keeps the session of `client_id`: the same in
/// every run, so a host that places each connection by this finds a restored session
/// where its client connects. An identifier a sharded broker assigned (`fulmar-` and 16
/// hex digits) names its shard in its first two digits.
pub fn client_shard(client_id: &str, count: u8) -> u8 {
    let count = count.max(1);
    if let Some(hex) = client_id.strip_prefix("fulmar-")
        && hex.len() == 16
        && let Some(index) = hex.get(..2).and_then(|d| u8::from_str_radix(d, 16).ok())
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return index % count;
    }
    (stable_hash(client_id) % u64::from(count)) as u8
}

/// FNV-1a: stable across runs and processes, unlike a randomly keyed hasher.
fn stable_hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}
