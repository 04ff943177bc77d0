//! Observability: the broker's counters in one place, and the two ways they leave the
//! process, `$SYS/broker/...` topics ([`sys`]) and a Prometheus endpoint ([`http`],
//! rendered by [`prometheus`]).
//!
//! [`Metrics`] is shared (`Arc`) by every task. It holds two kinds of numbers:
//! - **host counters**, kept by the runtime where things happen (the accept loop, the
//!   connection handle, the broker actor): connections accepted and refused (by reason),
//!   bytes read from and handed to sockets, CONNECTs accepted, publishers paused by
//!   backpressure. Each is one relaxed atomic
//!   add on the hot path; nothing here takes a lock.
//! - **the core's counters** ([`fulmar_core::broker::Stats`]), which live inside the broker
//!   state machine. The task that owns the broker copies them in with
//!   [`Metrics::record_core`] after each wake-up (a copy of a few words), so readers never
//!   have to reach into the broker, and a scrape never waits behind broker work.
//!
//! - **bridges' state** (`[[bridges]]`): whether each is connected upstream, its backlog
//!   and its drops, recorded by the actor that owns it ([`Metrics::record_bridge`]) with
//!   the core's counters, under a lock only bridges take.
//!
//! Readers take a [`Snapshot`]: plain numbers, consistent enough for monitoring (each
//! counter is read on its own; counters never go backwards).

pub mod http;
pub mod prometheus;
pub mod sys;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fulmar_core::broker::Stats;

// The settings (`[metrics]` in fulmar.toml: `listen`, `sys_interval_secs`) live in
// `crate::config::Metrics`.

/// Why a transport connection was closed as soon as it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The server's connection limit (`--max-connections`) was reached.
    Limit,
    /// The peer's address opened connections faster than its allowed rate.
    Rate,
    /// The broker state machine refused it (its own connection limit).
    Broker,
}

impl Refusal {
    /// Every reason, in the order metrics list them.
    pub const ALL: [Refusal; 3] = [Refusal::Limit, Refusal::Rate, Refusal::Broker];

    /// The label value metrics use for this reason.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::Rate => "rate",
            Refusal::Broker => "broker",
        }
    }

    fn index(self) -> usize {
        match self {
            Refusal::Limit => 0,
            Refusal::Rate => 1,
            Refusal::Broker => 2,
        }
    }
}

/// The counters. See the [module documentation](self).
#[derive(Debug)]
pub struct Metrics {
    started: std::time::Instant,
    /// Transport connections accepted by a listener (refused ones included).
    accepted: AtomicU64,
    /// Connections closed at once, per [`Refusal`].
    refused: [AtomicU64; 3],
    /// Connections served now.
    open: AtomicU64,
    /// CONNECTs the broker accepted (a client session started).
    connects: AtomicU64,
    /// Times a client's input was paused because a subscriber's queue was full.
    stalls: AtomicU64,
    /// Bytes read from clients, before the broker parsed them.
    bytes_received: AtomicU64,
    /// Bytes handed to client sockets.
    bytes_sent: AtomicU64,
    /// Most clients connected at once, as seen at each [`Metrics::record_core`].
    clients_maximum: AtomicU64,
    /// The core's counters as of the last [`Metrics::record_core`].
    core: CoreCounters,
    /// Each shard's last counters, summed into `core` (with several shards).
    shards: std::sync::Mutex<Vec<(Stats, usize)>>,
    /// Each bridge's last state, by name.
    bridges: std::sync::Mutex<std::collections::BTreeMap<&'static str, BridgeState>>,
}

/// A bridge's state, as its actor last recorded it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeState {
    /// Connected upstream (its CONNECT accepted) now.
    pub up: bool,
    /// Messages waiting for upstream or in flight to it.
    pub backlog: u64,
    /// Messages dropped since start: the backlog full while upstream was away, or larger
    /// than upstream takes.
    pub dropped: u64,
}

/// [`Stats`] as atomics, plus the router's subscription count.
#[derive(Debug, Default)]
struct CoreCounters {
    clients_connected: AtomicU64,
    sessions: AtomicU64,
    subscriptions: AtomicU64,
    packets_received: AtomicU64,
    packets_sent: AtomicU64,
    messages_received: AtomicU64,
    messages_sent: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_expired: AtomicU64,
    dropped_oversized: AtomicU64,
    retained: AtomicU64,
    messages_stored: AtomicU64,
    deliveries_queued: AtomicU64,
    protocol_errors: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counters starting at zero; uptime counts from now.
    pub fn new() -> Self {
        Self {
            started: std::time::Instant::now(),
            accepted: AtomicU64::new(0),
            refused: Default::default(),
            open: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            clients_maximum: AtomicU64::new(0),
            core: CoreCounters::default(),
            shards: std::sync::Mutex::default(),
            bridges: std::sync::Mutex::default(),
        }
    }

    /// A listener accepted a transport connection.
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// A just-accepted connection was closed at once.
    pub fn refused(&self, why: Refusal) {
        if let Some(counter) = self.refused.get(why.index()) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection is served from now until the returned guard is dropped.
    pub fn serving(self: &std::sync::Arc<Self>) -> Serving {
        self.open.fetch_add(1, Ordering::Relaxed);
        Serving(self.clone())
    }

    /// A connection is served from now until [`Metrics::ended`] (for a holder that counts
    /// it without a [`Serving`] of its own).
    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection counted with [`Metrics::opened`] is no longer served.
    pub(crate) fn ended(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// The broker accepted a CONNECT.
    pub fn connected(&self) {
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    /// A client's input was paused: it published to a subscriber whose queue is full
    /// (backpressure, instead of dropping the message). With shards, also a shard pausing
    /// the copies another sent it for such a subscriber: the publishers there are held
    /// back through their acknowledgements.
    pub fn stalled(&self) {
        self.stalls.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` bytes were read from a client.
    pub fn received(&self, n: usize) {
        self.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` bytes were handed to a client's socket.
    pub fn sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Copies the core's counters in; `subscriptions` is
    /// [`fulmar_core::broker::Broker::subscription_count`].
    pub fn record_core(&self, stats: &Stats, subscriptions: usize) {
        let c = &self.core;
        let set = |counter: &AtomicU64, value: u64| counter.store(value, Ordering::Relaxed);
        set(&c.clients_connected, stats.clients_connected);
        set(&c.sessions, stats.sessions);
        set(&c.subscriptions, subscriptions as u64);
        set(&c.packets_received, stats.packets_received);
        set(&c.packets_sent, stats.packets_sent);
        set(&c.messages_received, stats.messages_received);
        set(&c.messages_sent, stats.messages_sent);
        set(&c.dropped_queue_full, stats.messages_dropped);
        set(&c.dropped_expired, stats.messages_expired);
        set(&c.dropped_oversized, stats.messages_oversized);
        set(&c.retained, stats.retained);
        set(&c.messages_stored, stats.messages_stored);
        set(&c.deliveries_queued, stats.deliveries_queued);
        set(&c.protocol_errors, stats.protocol_errors);
        self.clients_maximum
            .fetch_max(stats.clients_connected, Ordering::Relaxed);
    }

    /// Shard `index` of `count` reports its core's counters; the sum of every shard's is
    /// what `/metrics` and `$SYS` show ([`Stats::add_shard`]).
    pub fn record_shard(&self, index: usize, count: usize, stats: &Stats, subscriptions: usize) {
        let total = {
            let mut shards = self
                .shards
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if shards.len() < count {
                shards.resize(count, (Stats::ZERO, 0));
            }
            if let Some(slot) = shards.get_mut(index) {
                *slot = (*stats, subscriptions);
            }
            shards
                .iter()
                .fold((Stats::ZERO, 0), |(mut sum, subs), (s, n)| {
                    sum.add_shard(s);
                    (sum, subs + n)
                })
        };
        self.record_core(&total.0, total.1);
    }

    /// Bridge `name` is in `state` now.
    pub fn record_bridge(&self, name: &'static str, state: BridgeState) {
        self.bridges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, state);
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let c = &self.core;
        Snapshot {
            uptime: self.started.elapsed(),
            connections_accepted: get(&self.accepted),
            connections_refused: Refusal::ALL
                .map(|why| (why, self.refused.get(why.index()).map_or(0, &get))),
            connections_open: get(&self.open),
            connections_parked: crate::park::parked(),
            connects: get(&self.connects),
            stalls: get(&self.stalls),
            bytes_received: get(&self.bytes_received),
            bytes_sent: get(&self.bytes_sent),
            clients_connected: get(&c.clients_connected),
            clients_maximum: get(&self.clients_maximum),
            sessions: get(&c.sessions),
            subscriptions: get(&c.subscriptions),
            packets_received: get(&c.packets_received),
            packets_sent: get(&c.packets_sent),
            messages_received: get(&c.messages_received),
            messages_sent: get(&c.messages_sent),
            dropped_queue_full: get(&c.dropped_queue_full),
            dropped_expired: get(&c.dropped_expired),
            dropped_oversized: get(&c.dropped_oversized),
            retained: get(&c.retained),
            messages_stored: get(&c.messages_stored),
            deliveries_queued: get(&c.deliveries_queued),
            protocol_errors: get(&c.protocol_errors),
            bridges: self
                .bridges
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|(name, state)| (*name, *state))
                .collect(),
        }
    }
}

/// Counts a connection as open while it lives; from [`Metrics::serving`].
#[derive(Debug)]
pub struct Serving(std::sync::Arc<Metrics>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every counter at one moment. Totals count since the broker started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Time since the broker started.
    pub uptime: Duration,
    /// Transport connections accepted by the listeners, refused ones included.
    pub connections_accepted: u64,
    /// Connections closed as soon as they were accepted, per reason.
    pub connections_refused: [(Refusal, u64); 3],
    /// Transport connections served now.
    pub connections_open: u64,
    /// Of those, idle connections parked now (no task of their own; see `runtime.park_after_ms`).
    pub connections_parked: u64,
    /// CONNECTs accepted.
    pub connects: u64,
    /// Times a client's input was paused by backpressure.
    pub stalls: u64,
    /// Bytes read from clients.
    pub bytes_received: u64,
    /// Bytes handed to client sockets.
    pub bytes_sent: u64,
    /// Clients connected now.
    pub clients_connected: u64,
    /// Most clients connected at once.
    pub clients_maximum: u64,
    /// Sessions held, online and offline.
    pub sessions: u64,
    /// Subscriptions, all sessions together.
    pub subscriptions: u64,
    /// MQTT control packets received.
    pub packets_received: u64,
    /// MQTT control packets sent.
    pub packets_sent: u64,
    /// PUBLISH packets received from clients.
    pub messages_received: u64,
    /// PUBLISH packets sent to clients.
    pub messages_sent: u64,
    /// Messages not queued for a session because its queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because their Message Expiry Interval passed before delivery.
    pub dropped_expired: u64,
    /// Messages not sent because they exceed the client's Maximum Packet Size.
    pub dropped_oversized: u64,
    /// Retained messages held.
    pub retained: u64,
    /// Distinct messages held (retained or queued).
    pub messages_stored: u64,
    /// Deliveries waiting for, or in flight to, sessions.
    pub deliveries_queued: u64,
    /// Connections closed for a protocol violation or a malformed packet.
    pub protocol_errors: u64,
    /// Each bridge's state, by name.
    pub bridges: Vec<(&'static str, BridgeState)>,
}

impl Snapshot {
    /// Messages dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_expired + self.dropped_oversized
    }

    /// Sessions held for clients that are not connected.
    pub fn clients_disconnected(&self) -> u64 {
        self.sessions.saturating_sub(self.clients_connected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_and_snapshots() {
        let metrics = Arc::new(Metrics::new());
        metrics.accepted();
        metrics.accepted();
        metrics.refused(Refusal::Rate);
        metrics.received(10);
        metrics.sent(7);
        let open = metrics.serving();
        let stats = Stats {
            clients_connected: 3,
            sessions: 5,
            messages_dropped: 2,
            messages_expired: 1,
            ..Stats::default()
        };
        metrics.record_core(&stats, 4);
        metrics.record_core(
            &Stats {
                clients_connected: 1,
                ..stats
            },
            4,
        );
        let s = metrics.snapshot();
        assert_eq!(s.connections_accepted, 2);
        assert_eq!(
            s.connections_refused,
            [
                (Refusal::Limit, 0),
                (Refusal::Rate, 1),
                (Refusal::Broker, 0)
            ]
        );
        assert_eq!(s.connections_open, 1);
        assert_eq!((s.bytes_received, s.bytes_sent), (10, 7));
        assert_eq!(s.clients_connected, 1);
        assert_eq!(s.clients_maximum, 3, "the peak stays");
        assert_eq!(s.clients_disconnected(), 4);
        assert_eq!(s.subscriptions, 4);
        assert_eq!(s.dropped(), 3);
        drop(open);
        assert_eq!(metrics.snapshot().connections_open, 0);
    }
}
