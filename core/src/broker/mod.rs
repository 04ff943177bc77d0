//! The broker: sessions, routing, retained messages and wills, as a state machine a
//! single-threaded host drives (sans-IO, in the manner of `quinn-proto`).
//!
//! ## Driving it
//! Methods come in four kinds:
//! - **inputs** `handle_*`: a transport connection opened ([`Broker::handle_connect`]),
//!   bytes arrived on it ([`Broker::handle_bytes`]), it closed
//!   ([`Broker::handle_disconnect`]), or time passed ([`Broker::handle_timeout`]). Each
//!   takes the current [`Instant`]; the broker never reads a clock.
//! - **outputs** `poll_*`: [`Broker::poll_transmit`] writes the bytes to send on a
//!   connection into the caller's buffer; [`Broker::poll_event`] says which connections
//!   have output ([`Event::Transmit`]) and which must be closed ([`Event::Close`]);
//!   [`Broker::poll_timeout`] says when to call [`Broker::handle_timeout`] next.
//! - **commands**: [`Broker::publish`] injects a message (bridges, `$SYS`).
//! - **getters**: [`Broker::stats`], [`Broker::session`], [`Broker::retained_count`]...
//!
//! A host loop: on accept call `handle_connect`; on readable data `handle_bytes` (keep the
//! bytes it did not consume for next time); then drain `poll_event`, and for each
//! `Transmit` (or simply each connection with a writable socket) call `poll_transmit`
//! until it returns 0; on `Close`, flush and close the socket, then `handle_disconnect`;
//! sleep until `poll_timeout` or the next input. With [`OverflowPolicy::Backpressure`],
//! stop reading a connection while [`Broker::is_stalled`] says a subscriber's full queue
//! holds its next PUBLISH back, and on [`Event::Resume`] pass its kept bytes again.
//!
//! ```
//! # #[cfg(feature = "alloc")] {
//! use fulmar_core::broker::{Broker, Config, Event, Growable};
//! use fulmar_core::codec::{decode, Packet, ProtocolVersion, ReasonCode};
//! use fulmar_core::time::Instant;
//!
//! let mut broker = Broker::<Growable>::new(Config::default(), 42);
//! let now = Instant::ZERO;
//! let conn = broker.handle_connect(now).unwrap();
//! // CONNECT, MQTT 3.1.1, clean session, keep alive 60 s, client id "a".
//! let connect = [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'a'];
//! assert_eq!(broker.handle_bytes(conn, &connect, now), connect.len());
//! assert_eq!(broker.poll_event(), Some(Event::Connected(conn)));
//! assert_eq!(broker.poll_event(), Some(Event::Transmit(conn)));
//! let mut out = [0u8; 64];
//! let n = broker.poll_transmit(conn, &mut out, now).unwrap();
//! let (packet, _) = decode(&out[..n], ProtocolVersion::V3_1_1, 64).unwrap();
//! let Packet::ConnAck(ack) = packet else { panic!() };
//! assert_eq!(ack.reason_code, ReasonCode::Success);
//! # }
//! ```
//!
//! ## Shards (`alloc`)
//!
//! Several brokers in one process can act as one, each owning some of the sessions, so a
//! host spreads protocol work over cores without a shared lock ([`Broker::enable_sharding`]).
//! Each stands in for every other with a *peer* ([`Broker::peer_open`]): a session with no
//! client that subscribes to what the other broker's sessions subscribe to, as the host
//! relays from [`Broker::poll_interest`] to [`Broker::peer_subscribe`] /
//! [`Broker::peer_unsubscribe`]. A message published here is routed as usual; the copies
//! queued for a peer go to that broker ([`Broker::peer_next`], [`Broker::forward_publish`],
//! then [`Broker::peer_ack`]), which delivers them to its own sessions only. A shared
//! subscription's member is chosen once, by the broker the message was published to (a
//! peer is one member of each group the other broker has members in; a copy for a group
//! names it). Every broker keeps every retained message; concurrent changes to one topic
//! on two brokers are ordered by stamps (a Lamport clock and the broker's index), so all
//! keep the same one. A peer's queue is an online session's for backpressure (with 16
//! times a subscriber's limits, as it queues for all of that broker's subscribers), and a
//! copy refused by a full local subscriber waits ([`ForwardError::Stalled`],
//! [`Broker::peer_stalled`]). A host that persists holds an acknowledgement until every
//! peer has taken the copies queued before it ([`Broker::peer_oldest`],
//! [`Broker::last_seq`]). `fulmar-edge` runs shards this way (`runtime.shards`).

mod auth;
mod backpressure;
mod bridge;
mod config;
mod connect;
mod connection;
mod hooks;
mod message;
mod persistence;
mod pieces;
mod publish;
#[cfg(feature = "alloc")]
mod shard;
mod storage;
mod subscribe;
mod timers;
mod transmit;

pub use bridge::{BridgeId, BridgeMessage};
pub use config::{Config, OverflowPolicy};
pub use connection::{Alias, Connection, ConnectionId};
pub use hooks::{
    AUTH_RESPONSE_MAX, AllowAll, AuthOutcome, AuthStep, ClientInfo, ConnectRequest, Hooks,
};
pub use message::Message;
pub use persistence::{PendingChange, PersistOp};
#[cfg(feature = "alloc")]
pub use shard::{
    Forward, ForwardError, ForwardScope, InterestChange, OwnedForward, PeerId, client_shard,
    retained_owner,
};
pub use storage::BrokerStorage;
#[cfg(feature = "alloc")]
pub use storage::Growable;
pub use transmit::Control;

use crate::blob::BlobStore;
use crate::codec::{DecodeError, Packet, ProtocolVersion, ReasonCode};
use crate::router::Router;
use crate::session::{InboundId, QueueEntry, Session};
use crate::storage::{Link, Slab};
use crate::time::Instant;
use connection::Phase;

/// Something the host must act on, from [`Broker::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// The connection has bytes to send: call [`Broker::poll_transmit`].
    Transmit(ConnectionId),
    /// A client's CONNECT was accepted on this connection (for logs and metrics:
    /// [`Broker::connection_client_id`] names it).
    Connected(ConnectionId),
    /// Close the connection once its pending output is written, then call
    /// [`Broker::handle_disconnect`]. The reason is informational (for logs); any
    /// DISCONNECT or CONNACK carrying it is already part of the pending output.
    Close(ConnectionId, ReasonCode),
    /// The connection was stalled by backpressure ([`OverflowPolicy::Backpressure`]) and
    /// may go on: pass its unconsumed bytes to [`Broker::handle_bytes`] again and resume
    /// reading its socket.
    Resume(ConnectionId),
}

/// A message in a session's queue, as [`Broker::for_each_queued`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedView<'b> {
    /// Topic (absent once a QoS 2 delivery has reached PUBREL).
    pub topic: Option<&'b str>,
    /// Payload (absent likewise).
    pub payload: Option<&'b [u8]>,
    /// QoS of the delivery.
    pub qos: crate::codec::QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Where the delivery stands.
    pub state: crate::session::DeliveryState,
    /// Packet identifier, once in flight.
    pub packet_id: Option<crate::codec::PacketId>,
}

/// Why [`Broker::handle_connect`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConnectError {
    /// [`Config::max_connections`] transport connections are open.
    TooManyConnections,
}

/// Counters a host publishes as `$SYS/broker/...` topics and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stats {
    /// Clients connected now.
    pub clients_connected: u64,
    /// Sessions held, online and offline.
    pub sessions: u64,
    /// Control packets received.
    pub packets_received: u64,
    /// Control packets sent.
    pub packets_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// PUBLISH packets received from clients.
    pub messages_received: u64,
    /// PUBLISH packets sent to clients.
    pub messages_sent: u64,
    /// Messages not delivered to a session because its queue was full.
    pub messages_dropped: u64,
    /// Messages dropped because they expired before delivery.
    pub messages_expired: u64,
    /// Messages not sent because they exceed the client's Maximum Packet Size.
    pub messages_oversized: u64,
    /// Retained messages held.
    pub retained: u64,
    /// Distinct messages held: retained, or waiting for (or in flight to) a session. A
    /// message queued for several sessions is stored, and counted, once.
    pub messages_stored: u64,
    /// Deliveries waiting for, or in flight to, sessions: one per message and session.
    pub deliveries_queued: u64,
    /// Connections closed for a protocol violation or malformed packet.
    pub protocol_errors: u64,
}

impl Stats {
    /// Adds the figures of another shard of the same broker ([`Broker::enable_sharding`]):
    /// counters and sessions add up; retained messages are in every shard, so they are
    /// counted once.
    pub fn add_shard(&mut self, other: &Self) {
        self.clients_connected += other.clients_connected;
        self.sessions += other.sessions;
        self.packets_received += other.packets_received;
        self.packets_sent += other.packets_sent;
        self.bytes_received += other.bytes_received;
        self.bytes_sent += other.bytes_sent;
        self.messages_received += other.messages_received;
        self.messages_sent += other.messages_sent;
        self.messages_dropped += other.messages_dropped;
        self.messages_expired += other.messages_expired;
        self.messages_oversized += other.messages_oversized;
        self.retained = self.retained.max(other.retained);
        self.messages_stored += other.messages_stored;
        self.deliveries_queued += other.deliveries_queued;
        self.protocol_errors += other.protocol_errors;
    }
}

/// The configuration of [`Broker::unconfigured`]: every limit zero (no connection is
/// accepted), every option off, so the whole broker is zero bytes.
const UNCONFIGURED: Config = Config {
    max_connections: 0,
    max_clients: 0,
    max_sessions: 0,
    max_packet_size: 0,
    max_subscriptions_per_client: 0,
    max_inflight: 0,
    receive_maximum: 0,
    max_queued_messages: 0,
    max_queued_bytes: 0,
    overflow_policy: OverflowPolicy::DropNew,
    max_pending_controls: 0,
    qos0_backpressure: false,
    queue_qos0_offline: false,
    max_retained: 0,
    max_retained_bytes: 0,
    topic_limits: crate::topic::TopicLimits {
        max_len: 0,
        max_depth: 0,
    },
    max_qos: crate::codec::QoS::AtMostOnce,
    retain_available: false,
    topic_alias_maximum: 0,
    max_session_expiry: 0,
    max_keep_alive: 0,
    connect_timeout: crate::time::Duration::ZERO,
    share_strategy: crate::router::ShareStrategy::RoundRobin,
    allow_v3_1: false,
    persistence: false,
};

impl Stats {
    /// Every counter at zero.
    pub const ZERO: Self = Self {
        clients_connected: 0,
        sessions: 0,
        packets_received: 0,
        packets_sent: 0,
        bytes_received: 0,
        bytes_sent: 0,
        messages_received: 0,
        messages_sent: 0,
        messages_dropped: 0,
        messages_expired: 0,
        messages_oversized: 0,
        retained: 0,
        protocol_errors: 0,
        messages_stored: 0,
        deliveries_queued: 0,
    };
}

impl Default for Stats {
    fn default() -> Self {
        Self::ZERO
    }
}

/// The broker. See the [module documentation](self).
pub struct Broker<S: BrokerStorage, H: Hooks = AllowAll> {
    config: Config,
    hooks: H,
    router: Router<S::Router>,
    connections: Slab<Connection, S::Connections>,
    sessions: Slab<Session<S::Text>, S::Sessions>,
    messages: Slab<Message, S::Messages>,
    blobs: S::Blobs,
    queue: Slab<QueueEntry, S::Queue>,
    controls: Slab<Control, S::Controls>,
    inbound: Slab<InboundId, S::Inbound>,
    aliases: Slab<Alias, S::Aliases>,
    retained: Slab<u32, S::Retained>,
    /// Payload bytes of the retained messages (against `Config::max_retained_bytes`),
    /// kept as messages are retained and released rather than summed per publish.
    retained_bytes: usize,
    /// What the last `poll_transmit` wrote must wait for durable state (see
    /// [`Broker::transmit_needs_durability`]).
    transmit_needs_durability: bool,
    /// No retained message expires before this (it may be earlier than the real first
    /// expiry after removals, which costs one needless scan); `None`: none expires.
    retained_expiry: Option<Instant>,
    retained_index: crate::index::Index<S::RetainedSlots>,
    client_index: crate::index::Index<S::ClientSlots>,
    deliveries: S::Deliveries,
    events_head: Option<u32>,
    events_tail: Option<u32>,
    seed: u64,
    next_generation: u32,
    assigned_ids: u64,
    next_seq: u64,
    persistence: persistence::PersistState<S>,
    /// Room to re-read a CONNECT held during enhanced authentication.
    scratch: S::Scratch,
    /// Set while a held CONNECT is processed after its authentication succeeded: the
    /// method and data blobs for its CONNACK.
    auth_replay: Option<(crate::blob::BlobId, Option<crate::blob::BlobId>)>,
    /// Method and data blobs for the CONNACK of the CONNECT being processed.
    connack_auth: Option<(crate::blob::BlobId, Option<crate::blob::BlobId>)>,
    stats: Stats,
    /// Bridges whose host has an uplink (`Broker::bridge_online`): while there is one,
    /// publishes are checked for a full bridge queue whatever the overflow policy.
    bridges_up: u32,
    /// Set when this broker is one shard of several (`alloc` only).
    #[cfg(feature = "alloc")]
    shard: Option<alloc::boxed::Box<shard::ShardState>>,
}

impl<S: BrokerStorage, H: Hooks> core::fmt::Debug for Broker<S, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Broker")
            .field("connections", &self.connections.len())
            .field("sessions", &self.sessions.len())
            .field("messages", &self.messages.len())
            .field("router", &self.router)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<S: BrokerStorage> Broker<S, AllowAll> {
    /// A broker that lets anyone connect, publish and subscribe. `seed` should be random
    /// per process (it keys hash tables against collision attacks and names assigned
    /// client identifiers).
    ///
    /// `const`: a fixed-capacity broker can be built at compile time in a `static`
    /// (`static_cell::ConstStaticCell`, a `static` mutex), with no stack copy of its
    /// storage; a firmware sets the seed from its random source with [`Broker::configure`]
    /// before accepting connections.
    pub const fn new(config: Config, seed: u64) -> Self {
        Self::with_hooks(config, seed, AllowAll)
    }
}

impl<S: BrokerStorage, H: Hooks> Broker<S, H> {
    /// A broker that asks `hooks` who may connect, publish and subscribe.
    pub const fn with_hooks(config: Config, seed: u64, hooks: H) -> Self {
        Self {
            router: Router::new(seed, config.share_strategy),
            config,
            hooks,
            connections: Slab::new(),
            sessions: Slab::new(),
            messages: Slab::new(),
            blobs: S::Blobs::EMPTY,
            queue: Slab::new(),
            controls: Slab::new(),
            inbound: Slab::new(),
            aliases: Slab::new(),
            retained: Slab::new(),
            retained_bytes: 0,
            transmit_needs_durability: false,
            retained_expiry: None,
            retained_index: crate::index::Index::new(),
            client_index: crate::index::Index::new(),
            deliveries: <S::Deliveries as crate::storage::Storage<crate::router::Delivery>>::EMPTY,
            events_head: None,
            events_tail: None,
            seed,
            next_generation: 0,
            assigned_ids: 0,
            next_seq: 0,
            persistence: persistence::PersistState::new(),
            scratch: <S::Scratch as crate::storage::Storage<u8>>::EMPTY,
            auth_replay: None,
            connack_auth: None,
            stats: Stats::ZERO,
            bridges_up: 0,
            #[cfg(feature = "alloc")]
            shard: None,
        }
    }

    /// A broker that accepts no connection until [`Broker::configure`] gives it a
    /// configuration and a seed.
    ///
    /// Every byte of it is zero, so a fixed-capacity broker in a `static` (for example
    /// `static_cell::ConstStaticCell::new(Broker::unconfigured(hooks))`) lands in `.bss`:
    /// no image of it in flash, no copy of it on the stack. [`Broker::new`] is `const`
    /// too, but its configuration makes the `static` an initialised one, whose image the
    /// firmware carries in flash.
    pub const fn unconfigured(hooks: H) -> Self {
        Self::with_hooks(UNCONFIGURED, 0, hooks)
    }

    /// Sets the configuration and the seed of a broker that holds no connection, session,
    /// subscription or retained message yet (one built by [`Broker::unconfigured`], or
    /// built before its random source was available). The seed keys the hash indexes, the
    /// random share strategy and assigned client identifiers. The answer says whether the
    /// broker was empty and so took them.
    pub fn configure(&mut self, config: Config, seed: u64) -> bool {
        if !self.connections.is_empty()
            || !self.sessions.is_empty()
            || !self.retained.is_empty()
            || !self.router.reset(seed, config.share_strategy)
        {
            return false;
        }
        self.config = config;
        self.seed = seed;
        true
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The hooks.
    pub fn hooks_mut(&mut self) -> &mut H {
        &mut self.hooks
    }

    /// Counters for `$SYS` and metrics.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats;
        // A shard's stand-ins for the others are not sessions anyone holds.
        #[cfg(feature = "alloc")]
        let peers = self.shard.as_ref().map_or(0, |s| s.peer_count());
        #[cfg(not(feature = "alloc"))]
        let peers = 0;
        stats.sessions = self.sessions.len().saturating_sub(peers) as u64;
        stats.retained = self.retained.len() as u64;
        stats.messages_stored = self.messages.len() as u64;
        stats.deliveries_queued = self.queue.len() as u64;
        stats
    }

    /// The session of `client_id`, if the broker holds one.
    pub fn session(&self, client_id: &str) -> Option<&Session<S::Text>> {
        self.find_session(client_id)
            .and_then(|h| self.sessions.get(h))
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Calls `f` with every session.
    pub fn for_each_session(&self, mut f: impl FnMut(&Session<S::Text>)) {
        for (_, session) in self.sessions.iter() {
            f(session);
        }
    }

    /// Calls `f` with each subscription of `client_id`'s session: the filter as written
    /// in SUBSCRIBE (rebuilt in `scratch`), options and identifier.
    pub fn for_each_subscription(
        &self,
        client_id: &str,
        scratch: &mut [u8],
        f: impl FnMut(&str, crate::codec::SubscriptionOptions, Option<crate::router::SubscriptionId>),
    ) {
        if let Some(h) = self.find_session(client_id) {
            self.router
                .for_each_subscription(crate::router::SessionId(h), scratch, f);
        }
    }

    /// Calls `f` with each message queued for or in flight to `client_id`, in order.
    pub fn for_each_queued(&self, client_id: &str, mut f: impl FnMut(QueuedView<'_>)) {
        let Some(session) = self
            .find_session(client_id)
            .and_then(|h| self.sessions.get(h))
        else {
            return;
        };
        let mut cursor = session.queue.head.get();
        while let Some(entry) = cursor.and_then(|c| self.queue.get(c)) {
            let parts = entry
                .message
                .get()
                .and_then(|m| self.messages.get(m))
                .and_then(|m| m.parts(&self.blobs));
            f(QueuedView {
                topic: parts.map(|p| p.topic),
                payload: parts.map(|p| p.payload),
                qos: entry.qos,
                retain: entry.retain,
                state: entry.state,
                packet_id: entry.packet_id,
            });
            cursor = entry.next.get();
        }
    }

    /// Calls `f` with each retained message: topic, payload and QoS.
    pub fn for_each_retained(&self, mut f: impl FnMut(&str, &[u8], crate::codec::QoS)) {
        for (_, &message) in self.retained.iter() {
            if let Some(m) = self.messages.get(message)
                && let Some(parts) = m.parts(&self.blobs)
            {
                f(parts.topic, parts.payload, m.qos);
            }
        }
    }

    /// Number of subscriptions, all sessions together (a sharded broker's stand-ins for
    /// the other shards not included: they mirror the other shards' own).
    pub fn subscription_count(&self) -> usize {
        #[cfg(feature = "alloc")]
        let mirrored = self.peer_subscriptions();
        #[cfg(not(feature = "alloc"))]
        let mirrored = 0;
        self.router.len() - mirrored
    }

    /// The session a connection is attached to.
    pub fn connection_client_id(&self, id: ConnectionId) -> Option<&str> {
        let session = self.connection(id)?.session.get()?;
        self.sessions.get(session).map(|s| s.client_id())
    }

    /// A new transport connection was accepted. The broker gives it
    /// [`Config::connect_timeout`] to send CONNECT.
    pub fn handle_connect(&mut self, now: Instant) -> Result<ConnectionId, ConnectError> {
        if self.connections.len() >= self.config.max_connections {
            return Err(ConnectError::TooManyConnections);
        }
        // Generations start at 1 (`next_generation` starts at 0 so a new broker is all
        // zero bytes).
        let generation =
            core::num::NonZeroU32::new(self.next_generation).unwrap_or(core::num::NonZeroU32::MIN);
        let slot = self
            .connections
            .insert(Connection {
                generation,
                phase: Phase::AwaitingConnect,
                opened_at: now,
                last_received: now,
                protocol: ProtocolVersion::V5,
                session: Link::NONE,
                keep_alive: 0,
                controls_head: Link::NONE,
                controls_tail: Link::NONE,
                aliases: Link::NONE,
                outbound_aliases: Link::NONE,
                outbound_alias_count: 0,
                client_alias_max: 0,
                auth_method: None,
                pending_connect: None,
                reauthenticating: false,
                transmit_signalled: false,
                connected_unreported: false,
                event_queued: false,
                event_next: Link::NONE,
                close_reason: None,
                close_reported: false,
                stalled_on: Link::NONE,
                controls_full: false,
                resume_unreported: false,
                partial: None,
            })
            .map_err(|_| ConnectError::TooManyConnections)?;
        self.next_generation = generation.get().wrapping_add(1).max(1);
        Ok(ConnectionId { slot, generation })
    }

    /// Bytes arrived on a connection. Returns how many were consumed: whole packets only,
    /// so the host keeps the rest (an incomplete packet) and passes it again with more.
    ///
    /// A malformed packet or a protocol violation closes this connection only, with the
    /// reason code the specification gives ([`Event::Close`]); the bytes are then all
    /// reported consumed.
    pub fn handle_bytes(&mut self, id: ConnectionId, bytes: &[u8], now: Instant) -> usize {
        self.handle_bytes_limited(id, bytes, now, usize::MAX)
    }

    /// [`Broker::handle_bytes`], handling at most `max_packets` packets. A host uses it to
    /// drain output between packets, so one large read of small PUBLISHes does not fill
    /// subscribers' queues before any of them could be sent; it calls again (without
    /// waiting for the socket) while unconsumed whole packets remain.
    pub fn handle_bytes_limited(
        &mut self,
        id: ConnectionId,
        bytes: &[u8],
        now: Instant,
        max_packets: usize,
    ) -> usize {
        let mut consumed = 0;
        let mut handled = 0;
        loop {
            if handled == max_packets {
                return consumed;
            }
            let Some(conn) = self.connection(id) else {
                return bytes.len();
            };
            if conn.phase == Phase::Closing {
                return bytes.len();
            }
            let version = conn.protocol;
            let awaiting_connect = conn.phase == Phase::AwaitingConnect;
            let rest = &bytes[consumed..];
            if rest.is_empty() {
                return consumed;
            }
            if self.controls_at_limit(id) {
                // Its answers are not being read: the rest waits with the host until they
                // are written ([`Event::Resume`]), rather than taking other clients' room.
                if let Some(c) = self.connection_mut(id) {
                    c.controls_full = true;
                }
                return consumed;
            }
            match crate::codec::decode(rest, version, self.config.max_packet_size as usize) {
                Ok((packet, used)) => {
                    if let Some(c) = self.connection_mut(id) {
                        c.last_received = now;
                    }
                    self.handle_packet(id, &packet, now);
                    if self.is_stalled(id) {
                        // Backpressure: the PUBLISH was not taken and stays with the host
                        // until [`Event::Resume`].
                        return consumed;
                    }
                    consumed += used;
                    self.stats.packets_received += 1;
                    self.stats.bytes_received += used as u64;
                    handled += 1;
                }
                Err(DecodeError::Incomplete { .. }) => return consumed,
                Err(error) => {
                    self.stats.protocol_errors += 1;
                    if awaiting_connect {
                        self.refuse_connect_on_decode_error(id, &error, rest);
                    } else {
                        // The codec rejects a Topic Alias of 0 as a zero property value
                        // (0x82); the broker answers it as any invalid alias, with 0x94
                        // ([MQTT-3.3.2-8], as publish.rs does for aliases above the maximum).
                        let reason = match error {
                            DecodeError::InvalidPropertyValue(0x23) => {
                                ReasonCode::TopicAliasInvalid
                            }
                            _ => error.reason_code(),
                        };
                        self.close(id, reason, now);
                    }
                    return bytes.len();
                }
            }
        }
    }

    /// A decoded packet arrived on a connection (for hosts that decode themselves). Under
    /// [`OverflowPolicy::Backpressure`], check [`Broker::is_stalled`] afterwards: a stalled
    /// PUBLISH was not taken and must be passed again after [`Event::Resume`].
    pub fn handle_packet(&mut self, id: ConnectionId, packet: &Packet<'_>, now: Instant) {
        let Some(conn) = self.connection(id) else {
            return;
        };
        match (conn.phase, packet) {
            (Phase::Closing, _) => {}
            (Phase::AwaitingConnect, Packet::Connect(connect)) => {
                self.on_connect(id, &connect.get(), now)
            }
            // [MQTT-3.1.0-1]: the first packet must be CONNECT; close without answering.
            (Phase::AwaitingConnect, _) => {
                self.stats.protocol_errors += 1;
                self.close_silently(id, ReasonCode::ProtocolError, now);
            }
            // [MQTT-3.1.0-2]: a second CONNECT is a protocol violation.
            (Phase::Connected, Packet::Connect(_)) => {
                self.stats.protocol_errors += 1;
                self.close(id, ReasonCode::ProtocolError, now);
            }
            (Phase::Connected, Packet::Publish(publish)) => self.on_publish(id, publish, now),
            (Phase::Connected, Packet::PubAck(ack)) => self.on_puback(id, ack, now),
            (Phase::Connected, Packet::PubRec(ack)) => self.on_pubrec(id, ack, now),
            (Phase::Connected, Packet::PubRel(ack)) => self.on_pubrel(id, ack, now),
            (Phase::Connected, Packet::PubComp(ack)) => self.on_pubcomp(id, ack, now),
            (Phase::Connected, Packet::Subscribe(sub)) => self.on_subscribe(id, sub, now),
            (Phase::Connected, Packet::Unsubscribe(unsub)) => self.on_unsubscribe(id, unsub, now),
            (Phase::Connected, Packet::PingReq) => {
                self.push_control(id, transmit::ControlKind::PingResp, now);
            }
            (Phase::Connected, Packet::Disconnect(disconnect)) => {
                self.on_disconnect_packet(id, disconnect, now)
            }
            (Phase::Connected | Phase::Authenticating, Packet::Auth(auth)) => {
                self.on_auth(id, auth, now)
            }
            (Phase::Authenticating, Packet::Disconnect(_)) => {
                self.close_silently(id, ReasonCode::Success, now)
            }
            // [MQTT-4.12.0-?]: nothing but AUTH (or DISCONNECT) before the exchange ends.
            (Phase::Authenticating, _) => {
                self.stats.protocol_errors += 1;
                self.close_silently(id, ReasonCode::ProtocolError, now);
            }
            // Packets only a server sends.
            (
                Phase::Connected,
                Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp,
            ) => {
                self.stats.protocol_errors += 1;
                self.close(id, ReasonCode::ProtocolError, now);
            }
        }
    }

    /// Closes a connection on the host's initiative (shutdown: 0x8B Server shutting down; an
    /// administrator's kick: 0x98; a write timeout): a 5.0 client is sent DISCONNECT with
    /// `reason`, then [`Event::Close`] follows. The will is published unless `reason` is
    /// Success.
    pub fn close_connection(&mut self, id: ConnectionId, reason: ReasonCode, now: Instant) {
        let reason = if reason.is_valid_for(crate::codec::PacketType::Disconnect) {
            reason
        } else {
            ReasonCode::UnspecifiedError
        };
        self.close(id, reason, now);
    }

    /// The protocol version of a connection (5.0 until its CONNECT says otherwise).
    pub fn connection_protocol(&self, id: ConnectionId) -> Option<ProtocolVersion> {
        self.connection(id).map(|c| c.protocol)
    }

    /// The transport connection is gone (closed by the peer, by an error, or by the host
    /// after an [`Event::Close`]). Without a DISCONNECT first this is an abnormal end: the
    /// will is published (after its delay) and a clean session ends.
    pub fn handle_disconnect(&mut self, id: ConnectionId, now: Instant) {
        let Some(conn) = self.connection(id) else {
            return;
        };
        if conn.phase != Phase::Closing {
            self.detach_session(id, true, now);
        }
        self.release_connection(id);
    }

    /// The next event, or `None`.
    pub fn poll_event(&mut self) -> Option<Event> {
        while let Some(slot) = self.events_head {
            let conn = self.connections.get_mut(slot)?;
            self.events_head = conn.event_next.take();
            if self.events_head.is_none() {
                self.events_tail = None;
            }
            conn.event_queued = false;
            let id = ConnectionId {
                slot,
                generation: conn.generation,
            };
            if let Some(reason) = conn.close_reason
                && !conn.close_reported
            {
                conn.close_reported = true;
                // Output may still be pending; the host flushes it before closing.
                return Some(Event::Close(id, reason));
            }
            if conn.connected_unreported {
                conn.connected_unreported = false;
                // Its output, if any, is reported next.
                if conn.transmit_signalled || conn.resume_unreported {
                    self.queue_event(slot);
                }
                return Some(Event::Connected(id));
            }
            if conn.resume_unreported && conn.phase != Phase::Closing {
                conn.resume_unreported = false;
                if conn.transmit_signalled {
                    self.queue_event(slot);
                }
                return Some(Event::Resume(id));
            }
            if conn.transmit_signalled && conn.phase != Phase::Closing {
                return Some(Event::Transmit(id));
            }
        }
        None
    }

    // --- internals shared by the submodules ---

    fn connection(&self, id: ConnectionId) -> Option<&Connection> {
        self.connections
            .get(id.slot)
            .filter(|c| c.generation == id.generation)
    }

    fn connection_mut(&mut self, id: ConnectionId) -> Option<&mut Connection> {
        self.connections
            .get_mut(id.slot)
            .filter(|c| c.generation == id.generation)
    }

    fn find_session(&self, client_id: &str) -> Option<u32> {
        let hash = self.client_hash(client_id);
        self.client_index.find(hash, |h| {
            self.sessions
                .get(h)
                .is_some_and(|s| s.client_id() == client_id)
        })
    }

    fn client_hash(&self, client_id: &str) -> u32 {
        crate::index::hash_key(self.seed, 0, client_id.as_bytes())
    }

    /// Queues an event for the connection in `slot` unless one is already queued.
    fn queue_event(&mut self, slot: u32) {
        let Some(conn) = self.connections.get_mut(slot) else {
            return;
        };
        if conn.event_queued {
            return;
        }
        conn.event_queued = true;
        conn.event_next = Link::NONE;
        match self.events_tail.and_then(|t| self.connections.get_mut(t)) {
            Some(tail) => tail.event_next = Link::to(slot),
            None => self.events_head = Some(slot),
        }
        self.events_tail = Some(slot);
    }

    /// Notes that a connection has output, queueing one [`Event::Transmit`].
    fn signal_transmit(&mut self, id: ConnectionId) {
        let Some(conn) = self.connection_mut(id) else {
            return;
        };
        if conn.transmit_signalled {
            return;
        }
        conn.transmit_signalled = true;
        self.queue_event(id.slot);
    }

    /// Closes a connection because of `reason`: a 5.0 client is sent DISCONNECT with it
    /// first (§4.13), then the host is asked to close. The will is published.
    fn close(&mut self, id: ConnectionId, reason: ReasonCode, now: Instant) {
        let Some(conn) = self.connection(id) else {
            return;
        };
        if conn.phase == Phase::Connected && conn.protocol.is_v5() {
            self.push_control(id, transmit::ControlKind::Disconnect(reason), now);
        }
        self.close_silently(id, reason, now);
    }

    /// Closes a connection without sending anything more.
    fn close_silently(&mut self, id: ConnectionId, reason: ReasonCode, now: Instant) {
        let Some(conn) = self.connection(id) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        let normal = reason == ReasonCode::Success;
        self.detach_session(id, !normal, now);
        if let Some(conn) = self.connection_mut(id) {
            conn.phase = Phase::Closing;
            conn.close_reason = Some(reason);
        }
        self.queue_event(id.slot);
    }

    /// Frees a connection's slot and everything chained to it.
    fn release_connection(&mut self, id: ConnectionId) {
        self.unstall(id);
        self.end_partial(id);
        let Some(conn) = self.connection(id) else {
            return;
        };
        let mut control = conn.controls_head.get();
        let mut alias = conn.aliases.get();
        let mut outbound = conn.outbound_aliases.get();
        let event_queued = conn.event_queued;
        let auth_blobs = [conn.auth_method, conn.pending_connect];
        for blob in auth_blobs.into_iter().flatten() {
            self.blobs.remove(blob);
        }
        while let Some(handle) = control {
            control = self.controls.remove(handle).and_then(|c| {
                c.free(&mut self.blobs);
                c.next.get()
            });
        }
        while let Some(handle) = alias.or(outbound) {
            let next = self.aliases.remove(handle).and_then(|a| {
                self.blobs.remove(a.topic);
                a.next
            });
            if alias.is_some() {
                alias = next;
            } else {
                outbound = next;
            }
        }
        // Unlink from the event list, if queued.
        if event_queued {
            let mut prev: Option<u32> = None;
            let mut cursor = self.events_head;
            while let Some(slot) = cursor {
                let next = self.connections.get(slot).and_then(|c| c.event_next.get());
                if slot == id.slot {
                    match prev.and_then(|p| self.connections.get_mut(p)) {
                        Some(p) => p.event_next = next.into(),
                        None => self.events_head = next,
                    }
                    if self.events_tail == Some(slot) {
                        self.events_tail = prev;
                    }
                    break;
                }
                prev = Some(slot);
                cursor = next;
            }
        }
        self.connections.remove(id.slot);
    }
}
