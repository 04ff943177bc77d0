//! Broker configuration: protocol options and every limit, each reached with a clear
//! reason code rather than a crash or unbounded memory.

use crate::codec::QoS;
use crate::router::ShareStrategy;
use crate::time::Duration;
use crate::topic::TopicLimits;

/// What happens when a session's queue is full and another message arrives for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum OverflowPolicy {
    /// Drop the new message for this session (Mosquitto's behaviour).
    #[default]
    DropNew,
    /// Drop the oldest message not yet in flight to make room.
    DropOldest,
    /// Slow the publisher instead of dropping: a PUBLISH that would overflow the queue of
    /// a session that is online (or a bridge's whose uplink is up) is not taken — not acknowledged, not
    /// consumed from the input — until that queue has drained to half its limits
    /// ([`super::Event::Resume`]). The host stops reading the publisher's socket meanwhile
    /// ([`super::Broker::is_stalled`]), so TCP carries the pressure back to it. Sessions
    /// that are offline cannot drain, so their overflow drops the new message (counted),
    /// as [`OverflowPolicy::DropNew`] does: one absent subscriber never halts a publisher.
    Backpressure,
}

/// Limits and options of a [`super::Broker`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Config {
    /// Transport connections the broker tracks at once, connected or not. A connection
    /// beyond this is refused by [`super::Broker::handle_connect`] before any byte is read.
    pub max_connections: usize,
    /// Connected clients at once; a CONNECT beyond this gets CONNACK 0x97 Quota exceeded
    /// (3.x: 3 Server unavailable).
    pub max_clients: usize,
    /// Sessions kept, online and offline; a new session beyond this is refused like
    /// [`Config::max_clients`].
    pub max_sessions: usize,
    /// Largest packet accepted from a client, fixed header included (5.0 Maximum Packet
    /// Size, announced in CONNACK). Larger packets close the connection with 0x95.
    pub max_packet_size: u32,
    /// Subscriptions per session; more are refused in the SUBACK with 0x97.
    pub max_subscriptions_per_client: usize,
    /// QoS 1 and 2 messages in flight to one client when it gives no Receive Maximum
    /// (3.x): Mosquitto's `max_inflight_messages`.
    pub max_inflight: u16,
    /// The server's Receive Maximum: unacknowledged QoS 2 PUBLISHes a client may send
    /// ([MQTT-3.3.4-7]: more is answered with DISCONNECT 0x93).
    pub receive_maximum: u16,
    /// Messages queued per session (offline, or beyond the in-flight window).
    pub max_queued_messages: usize,
    /// Bytes of queued messages per session.
    pub max_queued_bytes: usize,
    /// What a full queue does.
    pub overflow_policy: OverflowPolicy,
    /// Control packets (acknowledgments, PINGRESP, SUBACK...) one connection may have
    /// waiting to be sent before the broker stops consuming its input: its next packet
    /// stays with the host ([`super::Broker::is_stalled`]) until they are all written
    /// ([`super::Event::Resume`]), so TCP holds back a client that sends faster than it
    /// reads. A fair share of a fixed pool of control packets: with at most
    /// `pool / max_connections - 1` each (one more comes with a closing DISCONNECT), a
    /// client that publishes at QoS 1 or 2 without reading its socket can never fill the
    /// pool, whose exhaustion closes the connection that needs one more (0x89 Server
    /// busy), whoever it is. The limit delays answers, it never drops one: every PUBLISH
    /// consumed is acknowledged, in order [MQTT-4.6.0-2]. `usize::MAX` (the default, for
    /// growable storage): no limit.
    pub max_pending_controls: usize,
    /// With [`OverflowPolicy::Backpressure`]: whether a QoS 0 delivery to a client whose
    /// queue is full holds its publisher back too (`true`), or is dropped for that client
    /// and counted in [`super::Stats::messages_dropped`] (`false`, the default). QoS 0 is
    /// at most once; holding a QoS 0 publisher back behind a slow subscriber only makes
    /// its messages wait, unbounded, in socket buffers (Mosquitto and EMQX drop them too).
    /// QoS 1/2 deliveries, and copies for bridges and peer shards, wait either way.
    pub qos0_backpressure: bool,
    /// Queue QoS 0 messages for offline sessions (off by default, as in Mosquitto).
    pub queue_qos0_offline: bool,
    /// Retained messages kept; a new retained topic beyond this is not retained.
    pub max_retained: usize,
    /// Bytes of retained payload kept.
    pub max_retained_bytes: usize,
    /// Topic length and depth limits for names and filters.
    pub topic_limits: TopicLimits,
    /// Highest QoS the broker grants (5.0 Maximum QoS in CONNACK when below 2).
    pub max_qos: QoS,
    /// Whether retained messages are supported (5.0 Retain Available).
    pub retain_available: bool,
    /// Topic aliases a client may use towards the broker (5.0 Topic Alias Maximum).
    pub topic_alias_maximum: u16,
    /// Upper bound on a session's expiry interval, in seconds (MQTT 3.x persistent
    /// sessions get this too, since they never expire on their own).
    pub max_session_expiry: u32,
    /// Keep alive the broker imposes when a client asks for more, or for none (0 = take
    /// the client's value; 5.0 sends Server Keep Alive when it differs).
    pub max_keep_alive: u16,
    /// Time a new connection gets to send CONNECT before it is closed.
    pub connect_timeout: Duration,
    /// How members of a `$share` group are chosen.
    pub share_strategy: ShareStrategy,
    /// Accept MQTT 3.1 (`MQIsdp`) clients.
    pub allow_v3_1: bool,
    /// Report changes of durable state (persistent sessions, their subscriptions and
    /// QoS 1/2 messages, retained messages) through `Broker::poll_persist`.
    pub persistence: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_clients: 1000,
            max_sessions: 10_000,
            max_packet_size: 256 * 1024,
            max_subscriptions_per_client: 256,
            max_inflight: 20,
            receive_maximum: 64,
            max_queued_messages: 1000,
            max_queued_bytes: 1 << 20,
            overflow_policy: OverflowPolicy::DropNew,
            max_pending_controls: usize::MAX,
            qos0_backpressure: false,
            queue_qos0_offline: false,
            max_retained: 10_000,
            max_retained_bytes: 16 << 20,
            topic_limits: TopicLimits::DEFAULT,
            max_qos: QoS::ExactlyOnce,
            retain_available: true,
            topic_alias_maximum: 16,
            max_session_expiry: 7 * 24 * 3600,
            max_keep_alive: 0,
            connect_timeout: Duration::from_secs(10),
            share_strategy: ShareStrategy::RoundRobin,
            allow_v3_1: true,
            persistence: false,
        }
    }
}
