//! The bridge uplink's MQTT client: forwards a [bridge](crate::broker::Broker::bridge_open)'s
//! messages to an upstream broker (a `fulmar` gateway, Mosquitto, a cloud broker) as an
//! MQTT 3.1.1 or 5.0 client, and brings the `down` topics from it into the local broker.
//!
//! Sans-IO, like the broker: [`Uplink`] never opens a socket or reads a clock. The host
//! (the firmware's embassy task, later the Linux gateway's) resolves the upstream host,
//! opens the TCP connection and drives one connection after another:
//!
//! 1. [`Uplink::on_connected`] when TCP is up; then write what [`Uplink::poll_transmit`]
//!    gives (the CONNECT first) until it returns `Ok(0)`.
//! 2. Pass what arrives to [`Uplink::handle_bytes`], keep what it did not consume, and write
//!    what `poll_transmit` has again; call [`Uplink::handle_timeout`] when
//!    [`Uplink::poll_timeout`] is reached, and `poll_transmit` again whenever the broker may
//!    have new messages for the bridge. [`Uplink::poll_event`] says what is worth a log line.
//! 3. When any of these returns a [`Close`], or the socket closes or fails, call
//!    [`Uplink::on_closed`] and reconnect after a backoff of the host's choosing.
//!
//! The protocol, from the client's side:
//! - CONNECT with Clean Session 0 (5.0: Clean Start 0 and a Session Expiry Interval that
//!   never ends), so upstream keeps the board's subscriptions and queues what the `down`
//!   filters match while the link is down; the first packet back must be CONNACK
//!   [MQTT-3.2.0-1]. A 5.0 upstream's Receive Maximum bounds the window of messages in
//!   flight [MQTT-3.3.4-9], its Maximum Packet Size the packets sent to it [MQTT-3.1.2-24],
//!   its Server Keep Alive replaces the configured keep alive [MQTT-3.2.2-21].
//! - SUBSCRIBE to the `down` filters at QoS 1 at most, No Local with 5.0 [MQTT-3.8.3-3].
//! - Messages leave the bridge's queue in order, at most the window at once. A QoS 1 one
//!   is forgotten at upstream's PUBACK [MQTT-4.3.2-1]; a QoS 2 one is released at PUBREC
//!   (upstream owns it, §4.3.3) and its PUBREL goes, again after every reconnection, until
//!   PUBCOMP [MQTT-4.3.3-3] [MQTT-4.4.0-1]. After a failure everything unacknowledged goes
//!   out again first, with its packet identifier and DUP ([`Broker::bridge_rewind`]).
//! - A message larger than upstream takes (its Maximum Packet Size, or the `max-packet`
//!   setting) is dropped and counted ([`Broker::bridge_oversized`]) instead of sent. A 3.1.1
//!   upstream cannot say its limit and closes the connection on a larger PUBLISH instead
//!   (Mosquitto's `max_packet_size`): the message would go again first after every
//!   reconnection, forever, and nothing after it would. So a message that is the oldest
//!   unacknowledged one when upstream closes an accepted connection [`CLOSES_BEFORE_DROP`]
//!   times in a row is dropped the same way.
//! - A PUBLISH from upstream enters the local broker through [`Broker::bridge_publish`]
//!   (never forwarded back: the bridge's local subscriptions are No Local); at QoS 1 it is
//!   acknowledged only once the broker has taken it. Upstream may not send QoS 2 on a QoS 1
//!   subscription [MQTT-3.8.4-6].
//! - Keep alive: a PINGREQ after a quarter of the keep alive without sending (upstream's
//!   limit of 1.5 times it is then far: the board may be late, busy with a flash write, or
//!   its clock behind) [MQTT-3.1.2-23]; the link is given up after 1.5 times it without
//!   hearing anything. A timer that fires a quarter of the keep alive late means the host
//!   was not running (an emulator starved by its host, a long flash erase): upstream's
//!   answer may be waiting unread, so the silence counts from then instead.
//!
//! The forwarded PUBLISH carries, to a 5.0 upstream, the 5.0 properties the broker kept
//! with the message and the Message Expiry Interval left [MQTT-3.3.2-6].

mod config;

pub use config::{Config, ConfigError, Filters, MAX_FILTERS, MIN_MAX_PACKET, split_host_port};

use crate::broker::{BridgeId, Broker, BrokerStorage, Hooks};
use crate::codec::{
    Ack, Connect, DecodeError, Disconnect, EncodeError, List, Packet, PacketId, PacketType,
    Properties, Property, ProtocolVersion, Publish, QoS, QoSPid, ReasonCode, Subscribe,
    Subscription, SubscriptionOptions, decode,
};
use crate::time::{Duration, Instant};

/// Messages in flight upstream by default ([`Uplink`]'s `WINDOW`): enough to keep a link
/// with some latency busy, few enough that a reconnection re-sends little.
pub const DEFAULT_WINDOW: usize = 4;

/// Times in a row upstream may close an accepted connection while the same message is the
/// oldest it has not acknowledged, before that message is taken for one upstream refuses
/// (too large for it) and dropped. Three: a restart of upstream, or a lost connection, in
/// the middle of a message is not mistaken for a refusal, and the backlog waits for at
/// most three reconnections.
pub const CLOSES_BEFORE_DROP: u8 = 3;

/// Longest wait for the CONNACK after the CONNECT was written.
pub const CONNACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`Uplink::poll_transmit`] needs beyond the broker's
/// [`max_packet_size`](crate::broker::Config::max_packet_size) to take a message: a
/// message forwarded to a 5.0 upstream may be a few bytes longer than when it was
/// published (a 3.1.1 one gains its property length, and its remaining length a byte).
pub const PUBLISH_MARGIN: usize = 8;

/// Acknowledgements of messages from upstream waiting to be written: [`Uplink::handle_bytes`]
/// stops consuming when they are this many, until [`Uplink::poll_transmit`] has written them.
const ACKS: usize = 4;

/// Longest `$SYS/broker/bridge/<client-id>/dropped` topic ([`Uplink::poll_dropped`]): a
/// longer client id goes without the topic.
const DROPPED_TOPIC: usize = 96;

/// Why the uplink ends a connection: the host closes the socket and calls
/// [`Uplink::on_closed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Close {
    /// Upstream refused the CONNECT with this reason code (a 3.1.1 return code as its
    /// 5.0 equivalent).
    Refused(ReasonCode),
    /// No CONNACK within [`CONNACK_TIMEOUT`], or nothing heard for 1.5 times the keep
    /// alive.
    Timeout,
    /// Upstream closed with a DISCONNECT (5.0 §3.14), for this reason.
    Disconnected(ReasonCode),
    /// Upstream sent bytes that are not an MQTT packet.
    Malformed(DecodeError),
    /// Upstream sent a packet it may not send here: something else than CONNACK first
    /// [MQTT-3.2.0-1], a second CONNACK, a packet only a server takes, or a QoS 2 PUBLISH
    /// on subscriptions of QoS 1 at most [MQTT-3.8.4-6].
    Unexpected(PacketType),
    /// A QoS 1 message from upstream found no room in the local broker: it is not
    /// acknowledged, so upstream sends it again after the reconnection.
    LocalFull,
    /// No packet identifier is free for the SUBSCRIBE [MQTT-2.2.1-3].
    NoPacketId,
}

impl core::fmt::Display for Close {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Refused(code) => write!(f, "refused: {code}"),
            Self::Timeout => f.write_str("timed out"),
            Self::Disconnected(code) => write!(f, "disconnected by upstream: {code}"),
            Self::Malformed(e) => write!(f, "malformed packet from upstream: {e}"),
            Self::Unexpected(kind) => write!(f, "unexpected {kind:?} from upstream"),
            Self::LocalFull => f.write_str("no room for a message from upstream"),
            Self::NoPacketId => f.write_str("no packet identifier free"),
        }
    }
}

impl core::error::Error for Close {}

/// Something worth telling the user, from [`Uplink::poll_event`]. Repeats are summed up
/// until polled, so none is lost however rarely the host polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Event {
    /// Upstream accepted the connection (CONNACK).
    Connected {
        /// Upstream resumed the session it kept.
        session_present: bool,
    },
    /// Upstream refused a `down` subscription (this SUBACK code, the first failure).
    SubscriptionRefused(ReasonCode),
    /// Upstream refused messages (PUBACK or PUBREC with a failure code: not authorized,
    /// quota exceeded...): they are released, not sent again.
    MessagesRefused {
        /// How many since the last poll.
        count: u32,
        /// The last refusal's code.
        reason: ReasonCode,
    },
    /// Messages larger than upstream takes were dropped instead of sent, counted by
    /// [`Broker::bridge_dropped`]: a host reporting that count does so again
    /// ([`Uplink::poll_dropped`]).
    Oversized {
        /// How many since the last poll.
        count: u32,
        /// The largest packet upstream takes.
        max_packet: u32,
    },
}

/// What [`Uplink::on_closed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Closed {
    /// Upstream had accepted the connection: the host may start its backoff over.
    pub was_up: bool,
    /// The oldest unacknowledged message was dropped: upstream closed the connection
    /// [`CLOSES_BEFORE_DROP`] times in a row with it unacknowledged.
    pub dropped_refused: bool,
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection.
    Down,
    /// TCP is up since `since`; CONNECT is written (`sent`) or to write.
    Connecting { since: Instant, sent: bool },
    /// Upstream accepted the CONNECT.
    Up,
}

/// A QoS 1 or 2 message written upstream and not completed.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    id: PacketId,
    /// The bridge's token ([`Broker::bridge_ack`]).
    token: u64,
    /// QoS 2: upstream answered PUBREC (it has the message).
    received: bool,
    /// QoS 2: PUBREL is to be written.
    release: bool,
}

/// Refusals and drops not reported yet by [`Uplink::poll_event`].
#[derive(Debug, Clone, Copy, Default)]
struct Notices {
    connected: Option<bool>,
    subscription_refused: Option<ReasonCode>,
    refused: u32,
    refused_reason: Option<ReasonCode>,
    oversized: u32,
}

/// An answer upstream is owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    /// PUBACK for a QoS 1 message the broker took.
    PubAck(PacketId),
    /// PUBREL for a PUBREC about no message in flight.
    StrayRelease(PacketId),
}

/// One bridge's MQTT client connection upstream, across reconnections (see the module
/// documentation). `WINDOW` bounds the messages in flight (and a 5.0 upstream's Receive
/// Maximum may bound them further).
#[derive(Debug)]
pub struct Uplink<'c, const WINDOW: usize = DEFAULT_WINDOW> {
    config: &'c Config<'c>,
    bridge: BridgeId,
    phase: Phase,
    /// Keep alive in force: the configured one, or a 5.0 upstream's Server Keep Alive.
    keep_alive: u16,
    /// QoS 1 and 2 messages written and not completed (PUBACK, PUBCOMP), matched by packet
    /// identifier, so in any order.
    inflight: heapless::Vec<InFlight, WINDOW>,
    /// Answers upstream is owed: PUBACKs for the QoS 1 messages from upstream the broker
    /// took, and PUBRELs for PUBRECs about no message in flight.
    acks: heapless::Deque<Owed, ACKS>,
    /// Messages that may be in flight: `WINDOW`, or less if upstream says so.
    window: usize,
    /// The largest packet upstream takes: the smaller of a 5.0 upstream's Maximum Packet
    /// Size and the `max-packet` setting, else no limit.
    max_packet: u32,
    last_sent: Instant,
    last_heard: Instant,
    /// A PINGREQ is to be written.
    ping_due: bool,
    /// The SUBSCRIBE is to be written, with this identifier.
    subscribe: Option<PacketId>,
    /// This side ended the connection (a [`Close`] other than upstream's DISCONNECT, or
    /// [`Uplink::abort`]): not counted as upstream's closing by [`Uplink::on_closed`].
    ended_here: bool,
    /// The host is stopping ([`Uplink::disconnect`]): `Some(false)` until the DISCONNECT
    /// is written, `Some(true)` after (nothing more goes).
    leaving: Option<bool>,
    /// The oldest message upstream had not acknowledged when it closed accepted
    /// connections, and how many times in a row (see [`CLOSES_BEFORE_DROP`]).
    suspect: Option<(u64, u8)>,
    /// The bridge's drop count last returned by [`Uplink::poll_dropped`].
    dropped_shown: Option<u32>,
    /// The packet the last [`Uplink::poll_transmit`] wrote must wait for durability
    /// ([`Uplink::transmit_needs_durability`]).
    needs_durability: bool,
    notices: Notices,
}

impl<'c, const WINDOW: usize> Uplink<'c, WINDOW> {
    /// Opens the bridge named by `config.client_id` (or finds it again: call this after
    /// the broker is restored from persistence, so the backlog is there) with the `up`
    /// filters, and hands out again what it had handed out before a restart.
    pub fn open<S: BrokerStorage, H: Hooks>(
        broker: &mut Broker<S, H>,
        config: &'c Config<'c>,
        now: Instant,
    ) -> Result<Self, ReasonCode> {
        let bridge = broker.bridge_open(config.client_id, now)?;
        for (filter, qos) in &config.up {
            broker.bridge_subscribe(bridge, filter, *qos)?;
        }
        broker.bridge_rewind(bridge);
        Ok(Self {
            keep_alive: config.keep_alive,
            max_packet: config.max_packet.unwrap_or(u32::MAX),
            config,
            bridge,
            phase: Phase::Down,
            inflight: heapless::Vec::new(),
            acks: heapless::Deque::new(),
            window: WINDOW,
            last_sent: now,
            last_heard: now,
            ping_due: false,
            subscribe: None,
            ended_here: false,
            leaving: None,
            suspect: None,
            dropped_shown: None,
            needs_durability: false,
            notices: Notices::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &'c Config<'c> {
        self.config
    }

    /// The local bridge.
    pub fn bridge(&self) -> BridgeId {
        self.bridge
    }

    /// Whether upstream accepted the current connection.
    pub fn is_up(&self) -> bool {
        self.phase == Phase::Up
    }

    /// The largest packet upstream takes (`u32::MAX`: no limit known).
    pub fn max_packet(&self) -> u32 {
        self.max_packet
    }

    /// Messages written upstream and not completed yet.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// The TCP connection upstream is up: [`Uplink::poll_transmit`] writes the CONNECT
    /// next. (A connection still open is forgotten: call [`Uplink::on_closed`] first.)
    pub fn on_connected(&mut self, now: Instant) {
        self.phase = Phase::Connecting {
            since: now,
            sent: false,
        };
        self.keep_alive = self.config.keep_alive;
        self.inflight.clear();
        self.acks.clear();
        self.window = WINDOW;
        self.max_packet = self.config.max_packet.unwrap_or(u32::MAX);
        self.last_sent = now;
        self.last_heard = now;
        self.ping_due = false;
        self.subscribe = None;
        self.ended_here = false;
        self.leaving = None;
    }

    /// Bytes arrived from upstream: handles the whole packets at their start and returns
    /// how many bytes they took; the host keeps the rest (a packet not complete yet) and
    /// passes it again with what comes next. Call it when bytes arrive and, after writing
    /// what [`Uplink::poll_transmit`] has, again with what is left while it consumes some:
    /// it stops early when a few acknowledgements wait to be written. Each call counts as
    /// hearing from upstream (keep alive).
    ///
    /// An error ends the connection: close the socket and call [`Uplink::on_closed`].
    pub fn handle_bytes<S: BrokerStorage, H: Hooks>(
        &mut self,
        broker: &mut Broker<S, H>,
        bytes: &[u8],
        now: Instant,
    ) -> Result<usize, Close> {
        if self.phase == Phase::Down {
            return Ok(0);
        }
        self.last_heard = now;
        let version = self.config.protocol;
        // What the local broker takes is what it takes from upstream too.
        let max = broker.config().max_packet_size as usize;
        let mut used = 0;
        // Every packet may need an acknowledgement: room for one first.
        while !self.acks.is_full() {
            let rest = bytes.get(used..).unwrap_or_default();
            let (packet, len) = match decode(rest, version, max) {
                Ok(decoded) => decoded,
                Err(DecodeError::Incomplete { .. }) => break,
                Err(e) => return Err(self.end(Close::Malformed(e))),
            };
            if let Err(close) = self.handle_packet(broker, packet, now) {
                return Err(self.end(close));
            }
            used += len;
        }
        Ok(used)
    }

    /// Records that this side ends the connection for `close`.
    fn end(&mut self, close: Close) -> Close {
        // Upstream's DISCONNECT is upstream closing (the closes-in-a-row rule).
        self.ended_here = !matches!(close, Close::Disconnected(_));
        close
    }

    /// Handles one packet from upstream.
    fn handle_packet<S: BrokerStorage, H: Hooks>(
        &mut self,
        broker: &mut Broker<S, H>,
        packet: Packet<'_>,
        now: Instant,
    ) -> Result<(), Close> {
        let bridge = self.bridge;
        match (self.phase, packet) {
            (Phase::Connecting { .. }, Packet::ConnAck(ack)) => {
                let code = ack.reason_code;
                if code.is_error() {
                    return Err(Close::Refused(code));
                }
                let properties = &ack.properties;
                if let Some(maximum) = properties.receive_maximum() {
                    self.window = WINDOW.min(usize::from(maximum)).max(1);
                }
                if let Some(maximum) = properties.maximum_packet_size() {
                    self.max_packet = self.max_packet.min(maximum);
                }
                if let Some(Property::ServerKeepAlive(seconds)) = properties.find(0x13) {
                    self.keep_alive = seconds;
                }
                self.phase = Phase::Up;
                self.notices.connected = Some(ack.session_present);
                // From now on a full queue holds local publishers back rather than
                // dropping.
                broker.bridge_online(bridge, true);
                if !self.config.down.is_empty() {
                    // Unique among the bridge's messages in flight [MQTT-2.2.1-3].
                    let id = broker.bridge_packet_id(bridge).ok_or(Close::NoPacketId)?;
                    self.subscribe = Some(id);
                }
                // QoS 2 messages upstream received before the last connection ended
                // (even before a restart): PUBREL again [MQTT-4.4.0-1]; they count in
                // the window until their PUBCOMP.
                for (token, id) in broker.bridge_pending_release::<WINDOW>(bridge) {
                    // Cannot fail: at most WINDOW, and nothing else is in flight yet.
                    let _ = self.inflight.push(InFlight {
                        id,
                        token,
                        received: true,
                        release: true,
                    });
                }
                Ok(())
            }
            (Phase::Up, Packet::PubAck(ack)) => {
                // 5.0: a PUBACK with any reason code ends the exchange (§3.4.2.1).
                if ack.reason_code.is_error() {
                    self.notice_refused(ack.reason_code);
                }
                self.complete(broker, ack.packet_id);
                Ok(())
            }
            // QoS 2, first half: upstream has the message and owns it now (§4.3.3): the
            // bridge releases it, and PUBREL goes, again after a reconnection until
            // PUBCOMP [MQTT-4.3.3-3]. A failure code ends the exchange (5.0 §4.3.3).
            (Phase::Up, Packet::PubRec(ack)) => {
                if ack.reason_code.is_error() {
                    if self.find(ack.packet_id).is_some() {
                        self.notice_refused(ack.reason_code);
                    }
                    self.complete(broker, ack.packet_id);
                } else if let Some(at) = self.find(ack.packet_id)
                    && let Some(entry) = self.inflight.get_mut(at)
                {
                    broker.bridge_received(bridge, entry.token);
                    entry.received = true;
                    entry.release = true;
                } else {
                    // About no message in flight (a duplicate, or an exchange this side
                    // no longer has): PUBREL all the same, 5.0 with "Packet Identifier
                    // not found" (§3.6.2.1), or upstream would keep the identifier
                    // waiting for a release and take the next message sent under it
                    // for a duplicate (§4.3.3). Room was checked before decoding.
                    let _ = self.acks.push_back(Owed::StrayRelease(ack.packet_id));
                }
                Ok(())
            }
            // QoS 2, second half: the identifier is free again.
            (Phase::Up, Packet::PubComp(ack)) => {
                self.complete(broker, ack.packet_id);
                Ok(())
            }
            (Phase::Up, Packet::Publish(publish)) => {
                let ack = match publish.qos_pid {
                    QoSPid::AtMostOnce => None,
                    QoSPid::AtLeastOnce(id) => Some(id),
                    // Subscribed at QoS 1 at most: upstream may not send QoS 2
                    // [MQTT-3.8.4-6].
                    QoSPid::ExactlyOnce(_) => return Err(Close::Unexpected(PacketType::Publish)),
                };
                match (broker.bridge_publish(bridge, &publish, now), ack) {
                    // Acknowledged only now that the broker has it [MQTT-4.3.2-2].
                    // Room was checked before decoding.
                    (Ok(_), Some(id)) => {
                        let _ = self.acks.push_back(Owed::PubAck(id));
                        Ok(())
                    }
                    (Ok(_), None) | (Err(_), None) => Ok(()),
                    (Err(_), Some(_)) => Err(Close::LocalFull),
                }
            }
            (Phase::Up, Packet::SubAck(ack)) => {
                if let Some(code) = ack.reason_codes.iter().find(|c| c.is_error()) {
                    self.notices.subscription_refused = Some(code);
                }
                Ok(())
            }
            (Phase::Up, Packet::PingResp) => Ok(()),
            // 5.0: upstream closes with a reason (§3.14).
            (_, Packet::Disconnect(disconnect)) => Err(Close::Disconnected(disconnect.reason_code)),
            (_, other) => Err(Close::Unexpected(other.packet_type())),
        }
    }

    /// Where the message with packet identifier `id` is in the window.
    fn find(&self, id: PacketId) -> Option<usize> {
        self.inflight.iter().position(|f| f.id == id)
    }

    /// Upstream ended the exchange of message `id` (PUBACK, PUBCOMP, or a refusal): the
    /// bridge forgets it. Acknowledgements come in sending order [MQTT-4.6.0-2]; any order
    /// is accepted all the same, and one for no message in flight is ignored.
    fn complete<S: BrokerStorage, H: Hooks>(&mut self, broker: &mut Broker<S, H>, id: PacketId) {
        if let Some(at) = self.find(id) {
            let done = self.inflight.swap_remove(at);
            broker.bridge_ack(self.bridge, done.token);
        }
    }

    fn notice_refused(&mut self, reason: ReasonCode) {
        self.notices.refused = self.notices.refused.saturating_add(1);
        self.notices.refused_reason = Some(reason);
    }

    /// Writes the next packet for upstream into `buf` and returns its length; `Ok(0)`
    /// means nothing is waiting. Call it until it returns `Ok(0)` after
    /// [`Uplink::on_connected`], after [`Uplink::handle_bytes`] and
    /// [`Uplink::handle_timeout`], and whenever the broker may have new messages for the
    /// bridge.
    ///
    /// In order: CONNECT, then (once accepted) SUBSCRIBE, PUBREL, PUBACK, PINGREQ, and the
    /// bridge's messages within the window. Only whole packets are written; when the next
    /// does not fit, nothing changes and the error says how large `buf` must be. A message
    /// is taken from the bridge only with room for any message the broker holds: its
    /// `max_packet_size` and [`PUBLISH_MARGIN`]. A message upstream does not take is
    /// dropped on the way ([`Event::Oversized`]).
    pub fn poll_transmit<S: BrokerStorage, H: Hooks>(
        &mut self,
        broker: &mut Broker<S, H>,
        buf: &mut [u8],
        now: Instant,
    ) -> Result<usize, EncodeError> {
        self.needs_durability = false;
        let written = match (self.phase, self.leaving) {
            (_, Some(true)) | (Phase::Down, _) => 0,
            // Nothing was said yet: closing the socket is all it takes.
            (Phase::Connecting { sent: false, .. }, Some(false)) => 0,
            // [MQTT-3.14.4-1]: the last packet; the host closes the connection after it
            // [MQTT-3.14.4-2]. 5.0: Normal disconnection, so the session stays and no
            // will goes (the bridge has none).
            (_, Some(false)) => {
                let written =
                    Packet::Disconnect(Disconnect::default()).encode(self.config.protocol, buf)?;
                self.leaving = Some(true);
                written
            }
            (Phase::Connecting { sent: true, .. }, None) => 0,
            (Phase::Connecting { since, sent: false }, None) => {
                let written = self.write_connect(buf)?;
                self.phase = Phase::Connecting { since, sent: true };
                written
            }
            (Phase::Up, None) => self.transmit_up(broker, buf, now)?,
        };
        if written > 0 {
            self.last_sent = now;
        }
        Ok(written)
    }

    /// Whether the packet the last [`Uplink::poll_transmit`] wrote may leave only once the
    /// broker's state changes so far ([`Broker::poll_persist`]) are durable, for a host
    /// that persists: what a crash must not take back once upstream has seen it. The
    /// PUBACK of a message from upstream (the broker must keep it [MQTT-4.3.2-2]), a PUBREL
    /// (upstream then forgets the identifier: the message must not go again as new), and a
    /// QoS 2 PUBLISH (sent again after a crash, it must carry the same identifier
    /// [MQTT-4.3.3-1]). A QoS 0 or 1 PUBLISH need not wait: after a crash it may go again,
    /// which QoS 1 allows (§4.3.2); nor need the CONNECT, SUBSCRIBE or PINGREQ.
    pub fn transmit_needs_durability(&self) -> bool {
        self.needs_durability
    }

    fn write_connect(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let config = self.config;
        // 5.0: the session outlives the connection only with a Session Expiry Interval
        // [MQTT-3.1.2-23]; the bridge's never expires, like a 3.1.1 Clean Session 0 one.
        let session_expiry = [Property::SessionExpiryInterval(u32::MAX)];
        let connect = Connect {
            protocol: config.protocol,
            // Upstream keeps the board's subscriptions and queues for it while it is away.
            clean_start: false,
            keep_alive: config.keep_alive,
            properties: if config.protocol == ProtocolVersion::V5 {
                Properties::new(&session_expiry)
            } else {
                Properties::empty()
            },
            client_id: config.client_id,
            will: None,
            username: config.username,
            // Without a user name, 3.1.1 cannot send a password [MQTT-3.1.2-22].
            password: config.username.and(config.password).map(str::as_bytes),
        };
        Packet::from(&connect).encode(config.protocol, buf)
    }

    fn transmit_up<S: BrokerStorage, H: Hooks>(
        &mut self,
        broker: &mut Broker<S, H>,
        buf: &mut [u8],
        now: Instant,
    ) -> Result<usize, EncodeError> {
        let version = self.config.protocol;
        if let Some(packet_id) = self.subscribe {
            let written = self.write_subscribe(packet_id, buf)?;
            self.subscribe = None;
            return Ok(written);
        }
        if let Some(entry) = self.inflight.iter_mut().find(|f| f.release) {
            let written = Packet::PubRel(Ack::new(entry.id)).encode(version, buf)?;
            entry.release = false;
            self.needs_durability = true;
            return Ok(written);
        }
        if let Some(owed) = self.acks.front() {
            let packet = match *owed {
                Owed::PubAck(id) => Packet::PubAck(Ack::new(id)),
                Owed::StrayRelease(id) => Packet::PubRel(Ack {
                    reason_code: ReasonCode::PacketIdentifierNotFound,
                    ..Ack::new(id)
                }),
            };
            let written = packet.encode(version, buf)?;
            self.needs_durability = matches!(owed, Owed::PubAck(_));
            self.acks.pop_front();
            return Ok(written);
        }
        if self.ping_due {
            let written = Packet::PingReq.encode(version, buf)?;
            self.ping_due = false;
            return Ok(written);
        }
        self.publish_next(broker, buf, now)
    }

    /// SUBSCRIBE to the `down` filters, at QoS 1 at most (QoS 2 would need state this side
    /// keeps for no benefit: the local broker takes each message once anyway).
    fn write_subscribe(&self, packet_id: PacketId, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let mut subscriptions: heapless::Vec<Subscription<'_>, MAX_FILTERS> = heapless::Vec::new();
        // 5.0: No Local, so upstream never sends back what the uplink forwarded
        // [MQTT-3.8.3-3], and `up` and `down` filters may overlap. (3.1.1 has no way to.)
        let no_local = self.config.protocol == ProtocolVersion::V5;
        for (filter, qos) in &self.config.down {
            let options = SubscriptionOptions {
                no_local,
                ..SubscriptionOptions::qos((*qos).min(QoS::AtLeastOnce))
            };
            // Cannot fail: both hold MAX_FILTERS.
            let _ = subscriptions.push(Subscription::new(filter, options));
        }
        let packet = Packet::Subscribe(Subscribe {
            packet_id,
            properties: Properties::empty(),
            subscriptions: List::new(&subscriptions),
        });
        packet.encode(self.config.protocol, buf)
    }

    /// Takes the bridge's next message and writes it, if the window has room; drops those
    /// larger than upstream takes on the way.
    fn publish_next<S: BrokerStorage, H: Hooks>(
        &mut self,
        broker: &mut Broker<S, H>,
        buf: &mut [u8],
        now: Instant,
    ) -> Result<usize, EncodeError> {
        let version = self.config.protocol;
        let bridge = self.bridge;
        let max_packet = usize::try_from(self.max_packet).unwrap_or(usize::MAX);
        loop {
            if self.inflight.len() >= self.window || self.inflight.is_full() {
                return Ok(0);
            }
            // A message is taken from the bridge only when it surely fits: it was at most
            // max_packet_size bytes when published, and goes out with the same properties
            // at most.
            let required =
                (broker.config().max_packet_size as usize).saturating_add(PUBLISH_MARGIN);
            if buf.len() < required {
                return Err(EncodeError::InsufficientSize { required });
            }
            let Some(message) = broker.bridge_next(bridge, now) else {
                return Ok(0);
            };
            // The core numbers QoS 1 and 2 messages and keeps the number (and DUP) when
            // one goes again [MQTT-4.4.0-1].
            let qos_pid = match (message.packet_id, message.qos) {
                (Some(id), QoS::AtLeastOnce) => QoSPid::AtLeastOnce(id),
                (Some(id), QoS::ExactlyOnce) => QoSPid::ExactlyOnce(id),
                _ => QoSPid::AtMostOnce,
            };
            let token = message.token;
            let packet = Packet::Publish(Publish {
                dup: message.dup && qos_pid != QoSPid::AtMostOnce,
                qos_pid,
                retain: message.retain,
                topic: message.topic,
                // Ignored by the 3.1.1 encoding.
                properties: message.properties(),
                payload: message.payload,
            });
            // [MQTT-3.1.2-24]: never more than upstream's Maximum Packet Size; such a
            // message can never go, so it is counted and forgotten. (One that does not fit
            // `buf` after all cannot go either.)
            let written = if packet.encoded_len(version) > max_packet {
                None
            } else {
                packet.encode(version, buf).ok()
            };
            match (written, qos_pid) {
                (None, _) => {
                    broker.bridge_oversized(bridge, token);
                    self.notices.oversized = self.notices.oversized.saturating_add(1);
                }
                // QoS 0 is done once written.
                (Some(n), QoSPid::AtMostOnce) => {
                    broker.bridge_ack(bridge, token);
                    return Ok(n);
                }
                (Some(n), QoSPid::AtLeastOnce(id) | QoSPid::ExactlyOnce(id)) => {
                    self.needs_durability = matches!(qos_pid, QoSPid::ExactlyOnce(_));
                    // Room was checked above.
                    let _ = self.inflight.push(InFlight {
                        id,
                        token,
                        received: false,
                        release: false,
                    });
                    return Ok(n);
                }
            }
        }
    }

    /// The keep alive in force, if any (a 5.0 upstream may say 0: none).
    fn keep_alive(&self) -> Option<Duration> {
        (self.keep_alive > 0).then(|| Duration::from_secs(u64::from(self.keep_alive)))
    }

    /// When [`Uplink::handle_timeout`] is due: the CONNACK's deadline, the next PINGREQ, or
    /// the end of upstream's silence allowed. `None`: no timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Down => None,
            Phase::Connecting { since, .. } => Some(since + CONNACK_TIMEOUT),
            Phase::Up => {
                let keep_alive = self.keep_alive()?;
                let (ping_at, dead_at) = self.keep_alive_deadlines(keep_alive);
                Some(if self.ping_due {
                    dead_at
                } else {
                    ping_at.min(dead_at)
                })
            }
        }
    }

    /// When a PINGREQ is due (a quarter of the keep alive after the last packet sent) and
    /// when upstream's silence ends the link (1.5 times it after the last bytes heard).
    fn keep_alive_deadlines(&self, keep_alive: Duration) -> (Instant, Instant) {
        let ms = keep_alive.as_millis();
        (
            self.last_sent + Duration::from_millis(ms / 4),
            self.last_heard + Duration::from_millis(ms.saturating_mul(3) / 2),
        )
    }

    /// The host's timer for [`Uplink::poll_timeout`] fired at `now` (early calls do
    /// nothing). A PINGREQ may then be waiting for [`Uplink::poll_transmit`]; an error
    /// ends the connection.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Close> {
        let Some(due) = self.poll_timeout() else {
            return Ok(());
        };
        if now < due {
            return Ok(());
        }
        let Some(keep_alive) = self.keep_alive().filter(|_| self.phase == Phase::Up) else {
            // The CONNACK did not come in time.
            return Err(self.end(Close::Timeout));
        };
        let quarter = Duration::from_millis(keep_alive.as_millis() / 4);
        let (_, dead_at) = self.keep_alive_deadlines(keep_alive);
        if now >= due + quarter {
            // Woken a quarter of the keep alive late, this host was not running: upstream's
            // answer may be waiting unread. Silence counts from now.
            self.last_heard = now;
            self.ping_due = true;
        } else if now >= dead_at {
            return Err(self.end(Close::Timeout));
        } else {
            // [MQTT-3.1.2-23]: a control packet within every keep-alive period.
            self.ping_due = true;
        }
        Ok(())
    }

    /// The host is stopping: the next [`Uplink::poll_transmit`] writes DISCONNECT (once the
    /// CONNECT went; before, there is nothing to say) and nothing after it; then the host
    /// closes the connection and calls [`Uplink::on_closed`]. What upstream did not
    /// acknowledge goes again after the next start (the bridge's session keeps it), and
    /// upstream keeps its session for the bridge. Not counted as upstream's closing.
    pub fn disconnect(&mut self) {
        self.ended_here = true;
        self.leaving = Some(false);
    }

    /// This side ends the connection for a reason of its own (its transmit buffer cannot
    /// hold a packet): [`Uplink::on_closed`] does not count it as upstream's closing.
    pub fn abort(&mut self) {
        self.ended_here = true;
    }

    /// The connection ended (whether a [`Close`] from this type, [`Uplink::abort`], or the
    /// socket closing or failing: upstream or the network ended it). Whatever upstream did
    /// not acknowledge goes out again, first, next time; until then the bridge's queue is
    /// the bounded store-and-forward backlog ([`Broker::bridge_online`]). Call it even when
    /// no connection was made.
    pub fn on_closed<S: BrokerStorage, H: Hooks>(&mut self, broker: &mut Broker<S, H>) -> Closed {
        let was_up = self.phase == Phase::Up;
        let mut refused = None;
        if was_up {
            // Tokens follow publish order: the smallest in flight is the oldest. (A QoS 2
            // message upstream received is not one it refuses.)
            let oldest = self
                .inflight
                .iter()
                .filter(|f| !f.received)
                .map(|f| f.token)
                .min();
            let by_upstream = !self.ended_here;
            refused = self.refused_message(oldest.filter(|_| by_upstream));
        }
        if let Some(token) = refused {
            // Before the rewind: it takes a message handed out.
            broker.bridge_oversized(self.bridge, token);
        }
        broker.bridge_rewind(self.bridge);
        broker.bridge_online(self.bridge, false);
        self.phase = Phase::Down;
        self.inflight.clear();
        self.acks.clear();
        self.ping_due = false;
        self.subscribe = None;
        Closed {
            was_up,
            dropped_refused: refused.is_some(),
        }
    }

    /// Counts a closing of an accepted connection by upstream with `oldest` the oldest
    /// message it had not acknowledged (`None`: closed for another reason, or nothing
    /// unacknowledged), and returns that message's token when this is the
    /// [`CLOSES_BEFORE_DROP`]th time in a row: upstream refuses it.
    fn refused_message(&mut self, oldest: Option<u64>) -> Option<u64> {
        self.suspect = match (self.suspect, oldest) {
            (Some((token, closes)), Some(oldest)) if token == oldest => {
                Some((token, closes.saturating_add(1)))
            }
            (_, oldest) => oldest.map(|token| (token, 1)),
        };
        match self.suspect {
            Some((token, closes)) if closes >= CLOSES_BEFORE_DROP => {
                self.suspect = None;
                Some(token)
            }
            _ => None,
        }
    }

    /// The next thing worth telling the user, if any (see [`Event`]).
    pub fn poll_event(&mut self) -> Option<Event> {
        let notices = &mut self.notices;
        if let Some(session_present) = notices.connected.take() {
            return Some(Event::Connected { session_present });
        }
        if let Some(code) = notices.subscription_refused.take() {
            return Some(Event::SubscriptionRefused(code));
        }
        if let Some(reason) = notices.refused_reason.take() {
            let count = core::mem::take(&mut notices.refused);
            return Some(Event::MessagesRefused { count, reason });
        }
        if notices.oversized > 0 {
            let count = core::mem::take(&mut notices.oversized);
            return Some(Event::Oversized {
                count,
                max_packet: self.max_packet,
            });
        }
        None
    }

    /// The bridge's drop count ([`Broker::bridge_dropped`]: its backlog full while
    /// upstream was away, or messages too large for upstream) when it changed since the
    /// last call (the first call returns it whatever it is); it is then also published,
    /// retained, on `$SYS/broker/bridge/<client-id>/dropped` for local subscribers (with
    /// persistence, each is a flash write: call it at each connection attempt and after
    /// [`Event::Oversized`], not in a loop).
    pub fn poll_dropped<S: BrokerStorage, H: Hooks>(
        &mut self,
        broker: &mut Broker<S, H>,
        now: Instant,
    ) -> Option<u32> {
        let dropped = broker.bridge_dropped(self.bridge);
        if self.dropped_shown == Some(dropped) {
            return None;
        }
        self.dropped_shown = Some(dropped);
        let mut topic = [0u8; DROPPED_TOPIC];
        let mut digits = [0u8; 10];
        let parts = ["$SYS/broker/bridge/", self.config.client_id, "/dropped"];
        // A client id with wildcards makes no topic name: the broker refuses it.
        if let Some(topic) = concat(&mut topic, &parts) {
            let count = decimal(dropped, &mut digits);
            let _ = broker.publish(topic, count, QoS::AtMostOnce, true, now);
        }
        Some(dropped)
    }
}

/// `parts` one after the other in `buf`, if they fit (no `core::fmt`: kilobytes of flash
/// on a microcontroller).
fn concat<'b>(buf: &'b mut [u8], parts: &[&str]) -> Option<&'b str> {
    let mut len = 0;
    for part in parts {
        let end = len + part.len();
        buf.get_mut(len..end)?.copy_from_slice(part.as_bytes());
        len = end;
    }
    core::str::from_utf8(buf.get(..len)?).ok()
}

/// `n` in decimal digits, at the end of `buf`.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut at = buf.len();
    while at > 0 {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_digits() {
        let mut digits = [0u8; 10];
        assert_eq!(decimal(0, &mut digits), b"0");
        assert_eq!(decimal(907, &mut digits), b"907");
        assert_eq!(decimal(u32::MAX, &mut digits), b"4294967295");
    }

    #[test]
    fn concat_needs_room() {
        let mut buf = [0u8; 8];
        assert_eq!(concat(&mut buf, &["ab", "cd"]), Some("abcd"));
        assert_eq!(concat(&mut buf, &["abcde", "fghi"]), None);
    }
}
