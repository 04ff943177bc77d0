//! One client's session state (MQTT 5.0 §4.1): what survives a network connection.
//!
//! A session owns the queue of messages on their way to its client (waiting, or in flight
//! awaiting PUBACK / PUBREC / PUBCOMP), the packet identifiers of QoS 2 messages received
//! from the client and not yet released, its will, and the client's own limits (Receive
//! Maximum, Maximum Packet Size). Queue entries and identifiers live in broker-wide slabs
//! and are chained per session, so a fixed-capacity broker shares one pool between all
//! clients instead of reserving the worst case for each.

use crate::codec::{PacketId, ProtocolVersion, QoS};
use crate::router::{MAX_IDENTIFIERS, SubscriptionId};
use crate::storage::{Link, Text};
use crate::time::{Duration, Instant, MaybeInstant};

/// Session Expiry Interval meaning "never" (§3.1.2.11.2).
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// Where a message on its way to a client stands (§4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DeliveryState {
    /// Not sent yet.
    Queued,
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    AwaitingPubAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    AwaitingPubRec,
    /// PUBREL sent, waiting for PUBCOMP; the message itself is no longer needed.
    AwaitingPubComp,
}

/// One message queued for, or in flight to, a session's client.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    /// Position in the broker-wide order of queued messages; names the entry in
    /// persistence records.
    pub(crate) seq: u64,
    /// The stored message (none once a QoS 2 flow reached PUBREL).
    pub(crate) message: Link,
    /// QoS of this delivery: the lower of the publish QoS and the subscription's.
    pub(crate) qos: QoS,
    /// RETAIN flag to send.
    pub(crate) retain: bool,
    /// Packet identifier, once the entry is in flight.
    pub(crate) packet_id: Option<PacketId>,
    pub(crate) state: DeliveryState,
    /// Whether the next transmission of this entry is a re-delivery (sets DUP).
    pub(crate) dup: bool,
    /// Whether the entry has something to (re)send on the current connection.
    pub(crate) needs_send: bool,
    /// Subscription identifiers to send with the message ([MQTT-3.3.4-4]).
    pub(crate) identifiers: heapless::Vec<SubscriptionId, MAX_IDENTIFIERS>,
    /// Payload bytes counted against the session's queue limit.
    pub(crate) bytes: u32,
    pub(crate) next: Link,
}

/// A QoS 2 packet identifier received from the client and answered with PUBREC, kept until
/// its PUBREL so a re-sent PUBLISH is not delivered twice (§4.3.3, method B).
#[derive(Debug, Clone)]
pub struct InboundId {
    pub(crate) packet_id: PacketId,
    pub(crate) next: Link,
}

/// The will a session publishes if its connection ends abnormally (§3.1.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WillState {
    /// The stored will message.
    pub(crate) message: u32,
    /// Will Delay Interval in seconds (5.0).
    pub(crate) delay: u32,
    /// When the will is due, once the connection has ended.
    pub(crate) due: MaybeInstant,
    /// The will's Message Expiry Interval in seconds, applied when it is published.
    pub(crate) expiry: Option<u32>,
}

/// A FIFO chained through a slab: head, tail and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chain {
    pub(crate) head: Link,
    pub(crate) tail: Link,
    /// Entries in the chain.
    pub(crate) len: u32,
    /// Entries not yet sent (counted against the queue limit).
    pub(crate) queued: u32,
    /// Payload bytes of entries not yet sent.
    pub(crate) queued_bytes: u32,
    /// Entries in flight (sent, awaiting acknowledgment).
    pub(crate) inflight: u32,
    /// Where sending resumes: no entry before `unsent` has anything to send on the
    /// current connection, so `poll_transmit` need not walk past the messages in flight
    /// each time. None with entries in the chain: every entry is passed.
    pub(crate) unsent: Link,
    /// The entry before `unsent` (none: `unsent` is the head), to unlink at the cursor.
    pub(crate) unsent_prev: Link,
}

/// Whose a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionKind {
    /// A network client's.
    Client,
    /// A bridge's: no network client, drained by the host (`Broker::bridge_next`); `up`
    /// while the host has its uplink (`Broker::bridge_online`, not persisted); `dropped`:
    /// messages its full backlog dropped since it was opened or restored (also counted
    /// in `Stats::messages_dropped`), read by `Broker::bridge_dropped`. Kept here rather
    /// than on every session: only a bridge's host has someone to tell.
    Bridge { up: bool, dropped: u32 },
    /// A stand-in for another shard of the same process (`Broker::peer_open`): drained by
    /// the host, never persisted.
    Peer,
}

/// One client's session. `T` holds its client identifier and user name.
#[derive(Debug)]
pub struct Session<T> {
    pub(crate) client_id: T,
    pub(crate) username: Option<T>,
    /// The connection the client is on, if it is online.
    pub(crate) connection: Option<crate::broker::ConnectionId>,
    pub(crate) protocol: ProtocolVersion,
    /// Session Expiry Interval in seconds, already capped by the broker's limit.
    pub(crate) expiry_interval: u32,
    /// When the session's connection ended (expiry counts from here).
    pub(crate) disconnected_at: MaybeInstant,
    /// The client's Receive Maximum: QoS 1/2 messages in flight to it at once.
    pub(crate) receive_maximum: u16,
    /// The client's Maximum Packet Size ([MQTT-3.1.2-24]: never send it more).
    pub(crate) max_packet_size: u32,
    /// The last packet identifier handed out.
    pub(crate) last_packet_id: u16,
    /// How many identifiers after `last_packet_id` are known to be free (held by no
    /// delivery in flight), so they are handed out without looking.
    pub(crate) free_packet_ids: u16,
    pub(crate) queue: Chain,
    pub(crate) inbound: Link,
    pub(crate) inbound_len: u16,
    pub(crate) will: Option<WillState>,
    pub(crate) subscriptions: u32,
    /// The client asked for reason strings and user properties on failures (5.0).
    pub(crate) request_problem_information: bool,
    /// Records of this session were reported for persistence (so a session that stops
    /// being durable must be deleted from the store).
    pub(crate) persisted: bool,
    /// Whose session it is: a network client's, or one the host drains.
    pub(crate) kind: SessionKind,
    /// A client's session counted by `Hooks::claim_session` (released when it ends).
    pub(crate) claimed: bool,
    /// Publishers stalled on this session's full queue (backpressure), woken when it drains.
    pub(crate) stalled_publishers: u32,
}

impl<T: Text> Session<T> {
    /// The client identifier.
    pub fn client_id(&self) -> &str {
        self.client_id.as_str()
    }

    /// The user name the client authenticated with.
    pub fn username(&self) -> Option<&str> {
        self.username.as_ref().map(Text::as_str)
    }

    /// Whether this is a bridge's session rather than a network client's.
    pub fn is_bridge(&self) -> bool {
        matches!(self.kind, SessionKind::Bridge { .. })
    }

    /// Whether this is a stand-in for another shard.
    pub(crate) fn is_peer(&self) -> bool {
        self.kind == SessionKind::Peer
    }

    /// Whether the host drains this session (a bridge's or a peer's) rather than a
    /// network client.
    pub(crate) fn is_host_driven(&self) -> bool {
        self.kind != SessionKind::Client
    }

    /// Whether this is a bridge whose host has its uplink.
    pub(crate) fn is_bridge_up(&self) -> bool {
        matches!(self.kind, SessionKind::Bridge { up: true, .. })
    }

    /// Whether the client is connected.
    pub fn is_online(&self) -> bool {
        self.connection.is_some()
    }

    /// The protocol version of the client's last connection.
    pub fn protocol(&self) -> ProtocolVersion {
        self.protocol
    }

    /// Session Expiry Interval in seconds ([`NEVER_EXPIRES`]: never).
    pub fn expiry_interval(&self) -> u32 {
        self.expiry_interval
    }

    /// Messages queued or in flight.
    pub fn queue_len(&self) -> usize {
        self.queue.len as usize
    }

    /// Subscriptions the session holds.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions as usize
    }

    /// When an offline session expires, if it does.
    pub fn expires_at(&self) -> Option<Instant> {
        let since = self.disconnected_at.get()?;
        if self.expiry_interval == NEVER_EXPIRES {
            return None;
        }
        Some(since + Duration::from_secs(u64::from(self.expiry_interval)))
    }
}
