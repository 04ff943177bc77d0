//! A transport connection as the broker sees it: before CONNECT, connected to a session,
//! or closing; with the control packets waiting to be sent and the client's topic aliases.

use core::num::NonZeroU32;

use crate::blob::BlobId;
use crate::codec::ProtocolVersion;
use crate::storage::Link;
use crate::time::Instant;

/// Identifies a transport connection. Handles are never reused while the broker runs: a
/// stale id (of a connection already closed) is ignored rather than hitting a newcomer.
/// Generations are never zero, so an `Option<ConnectionId>` (every session has one) takes
/// no more room than the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConnectionId {
    pub(crate) slot: u32,
    pub(crate) generation: NonZeroU32,
}

impl ConnectionId {
    /// A number for logs; unique among live connections.
    pub fn slot(&self) -> u32 {
        self.slot
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) enum Phase {
    /// Accepted; the first packet must be CONNECT ([MQTT-3.1.0-1]).
    AwaitingConnect,
    /// CONNECT received; an enhanced authentication exchange (AUTH packets) is under way.
    Authenticating,
    /// CONNECT accepted.
    Connected,
    /// The broker decided to close: pending output is flushed, input is ignored.
    Closing,
}

/// A transport connection's protocol state (kept in [`super::BrokerStorage::Connections`]).
#[derive(Debug)]
pub struct Connection {
    pub(crate) generation: NonZeroU32,
    pub(crate) phase: Phase,
    pub(crate) opened_at: Instant,
    pub(crate) last_received: Instant,
    pub(crate) protocol: ProtocolVersion,
    /// Its session, once CONNECT is accepted.
    pub(crate) session: Link,
    /// Effective keep alive in seconds (0: none).
    pub(crate) keep_alive: u16,
    /// Control packets to send, oldest first.
    pub(crate) controls_head: Link,
    pub(crate) controls_tail: Link,
    /// Inbound topic aliases (5.0 §3.3.2.3.4).
    pub(crate) aliases: Link,
    /// Topic aliases the broker set towards the client.
    pub(crate) outbound_aliases: Link,
    pub(crate) outbound_alias_count: u16,
    /// The client's Topic Alias Maximum: how many aliases the broker may set.
    pub(crate) client_alias_max: u16,
    /// The Authentication Method of an enhanced authentication (5.0 §4.12).
    pub(crate) auth_method: Option<BlobId>,
    /// The CONNECT waiting for its authentication exchange to finish, as encoded bytes.
    pub(crate) pending_connect: Option<BlobId>,
    /// A re-authentication (AUTH 0x19) is under way.
    pub(crate) reauthenticating: bool,
    /// A Transmit event is queued or the host has not drained output since.
    pub(crate) transmit_signalled: bool,
    /// CONNECT was accepted and no [`super::Event::Connected`] reported it yet.
    pub(crate) connected_unreported: bool,
    /// Linked in the broker's event list.
    pub(crate) event_queued: bool,
    pub(crate) event_next: Link,
    /// Close requested, with this reason; reported once through an event.
    pub(crate) close_reason: Option<crate::codec::ReasonCode>,
    pub(crate) close_reported: bool,
    /// Backpressure: the session (handle) whose full queue holds this connection's next
    /// PUBLISH back ([`super::OverflowPolicy::Backpressure`]).
    pub(crate) stalled_on: Link,
    /// Input held back because [`super::Config::max_pending_controls`] control packets
    /// wait to be sent; resumed once they are written.
    pub(crate) controls_full: bool,
    /// The stall ended and no [`super::Event::Resume`] reported it yet.
    pub(crate) resume_unreported: bool,
    /// A PUBLISH begun by [`super::Broker::poll_transmit_pieces`] and not finished.
    pub(crate) partial: Option<super::pieces::Partial>,
}

/// A topic alias the client set on this connection.
#[derive(Debug)]
pub struct Alias {
    pub(crate) alias: u16,
    pub(crate) topic: BlobId,
    pub(crate) next: Option<u32>,
}
