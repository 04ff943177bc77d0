//! Backpressure ([`super::OverflowPolicy::Backpressure`]): a publisher whose message cannot be
//! queued for an online subscriber is stalled — its PUBLISH is neither acknowledged nor
//! consumed — and resumed once that subscriber's queue has drained to half its limits.
//!
//! Why half: waking a stalled publisher costs it a retry (decode, store, route). Waking at
//! the first free slot would let one slow subscriber trigger a retry from every stalled
//! publisher per message it reads; at half, each publisher retries once per half-queue of
//! progress.
//!
//! Only sessions that can drain hold a publisher back: online clients, peer shards, and
//! bridges whose host has its uplink up ([`Broker::bridge_online`]). A bridge with its
//! uplink up does so under every policy: the uplink will carry what would otherwise be
//! dropped. An offline session's (or a bridge's without its uplink) full queue drops the
//! new message, counted in [`super::Stats::messages_dropped`], so an absent subscriber or
//! a broken uplink never halts a publisher.
//!
//! A QoS 0 delivery to a client does not hold a publisher back either, unless
//! [`super::Config::qos0_backpressure`] says so: it is dropped (counted) when the client's
//! queue is full, so a QoS 0 publisher never waits on a slow subscriber.

use super::{Broker, BrokerStorage, ConnectionId, Hooks, OverflowPolicy};
use crate::codec::QoS;
use crate::storage::Link;

impl<S: BrokerStorage, H: Hooks> Broker<S, H> {
    /// Whether the connection is stalled by backpressure: its next PUBLISH waits for a
    /// subscriber's queue to drain, or its next packet for its control packets to be
    /// written ([`super::Config::max_pending_controls`]). The host stops reading its socket
    /// until [`super::Event::Resume`], keeping the bytes [`Broker::handle_bytes`] did not
    /// consume.
    pub fn is_stalled(&self, id: ConnectionId) -> bool {
        self.connection(id)
            .is_some_and(|c| c.stalled_on.get().is_some() || c.controls_full)
    }

    /// Whether connection `id` has [`super::Config::max_pending_controls`] control packets
    /// waiting to be sent. A walk of its chain, bounded by the limit (a few on firmware);
    /// none without a limit.
    pub(super) fn controls_at_limit(&self, id: ConnectionId) -> bool {
        let limit = self.config.max_pending_controls;
        if limit == usize::MAX {
            return false;
        }
        let mut next = self.connection(id).and_then(|c| c.controls_head.get());
        for _ in 0..limit {
            let Some(handle) = next else {
                return false;
            };
            next = self.controls.get(handle).and_then(|c| c.next.get());
        }
        true
    }

    /// Whether queueing `bytes` more for `session` must wait, under the backpressure
    /// policy (the caller checks that it applies). An empty queue always takes a message,
    /// however large, so a message beyond the byte limit cannot stall its publisher forever.
    pub(super) fn must_wait_for(&self, session: u32, bytes: usize) -> bool {
        let Some(s) = self.sessions.get(session) else {
            return false;
        };
        // A bridge with its uplink up drains at upstream's pace whatever the policy:
        // dropping what a working link would carry loses it for nothing. Without its
        // uplink it is a store-and-forward backlog, bounded like an offline session.
        let drains = if self.config.overflow_policy == OverflowPolicy::Backpressure {
            s.connection.is_some() || s.is_bridge_up() || s.is_peer()
        } else {
            s.is_bridge_up()
        };
        let queued = s.queue.queued as usize;
        let (messages, limit_bytes) = self.queue_limits(s);
        drains
            && queued > 0
            && (queued >= messages || s.queue.queued_bytes as usize + bytes > limit_bytes)
    }

    /// A session's queue limits, in messages and payload bytes: the configured ones, or for
    /// a stand-in for another shard (which queues for all of that shard's subscribers
    /// at once) 16 times as much (`shard::PEER_QUEUE_FACTOR`).
    pub(super) fn queue_limits(&self, s: &crate::session::Session<S::Text>) -> (usize, usize) {
        let (messages, bytes) = (
            self.config.max_queued_messages,
            self.config.max_queued_bytes,
        );
        #[cfg(feature = "alloc")]
        if s.is_peer() {
            let k = super::shard::PEER_QUEUE_FACTOR;
            return (messages.saturating_mul(k), bytes.saturating_mul(k));
        }
        let _ = s;
        (messages, bytes)
    }

    /// Whether a delivery at `qos` to `session` may hold its publisher back: not a QoS 0
    /// one to a client, unless configured ([`super::Config::qos0_backpressure`]).
    pub(super) fn may_hold_back(&self, session: u32, qos: QoS) -> bool {
        qos != QoS::AtMostOnce
            || self.config.qos0_backpressure
            || self
                .sessions
                .get(session)
                .is_some_and(|s| s.is_host_driven())
    }

    /// Holds connection `id` back until `session`'s queue drains.
    pub(super) fn stall(&mut self, id: ConnectionId, session: u32) {
        self.unstall(id);
        if let Some(c) = self.connection_mut(id) {
            c.stalled_on = Link::to(session);
            if let Some(s) = self.sessions.get_mut(session) {
                s.stalled_publishers += 1;
            }
        }
    }

    /// Forgets a connection's stall without reporting it (it is closing).
    pub(super) fn unstall(&mut self, id: ConnectionId) {
        let Some(session) = self.connection_mut(id).and_then(|c| c.stalled_on.take()) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(session) {
            s.stalled_publishers = s.stalled_publishers.saturating_sub(1);
        }
    }

    /// A message left `session`'s queue (sent, dropped or handed to a bridge): resumes the
    /// publishers waiting on it once the queue is down to half its limits.
    pub(super) fn dequeued(&mut self, session: u32) {
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        let (messages, bytes) = self.queue_limits(s);
        let drained =
            s.queue.queued as usize * 2 <= messages && s.queue.queued_bytes as usize * 2 <= bytes;
        if s.stalled_publishers > 0 && drained {
            self.resume_stalled_on(session);
        }
    }

    /// Resumes every publisher waiting on `session`: it drained, went offline or ended
    /// (after which its queue no longer holds anyone back).
    pub(super) fn resume_stalled_on(&mut self, session: u32) {
        match self.sessions.get_mut(session) {
            Some(s) if s.stalled_publishers > 0 => s.stalled_publishers = 0,
            _ => return,
        }
        #[cfg(feature = "alloc")]
        self.resume_peers_on(session);
        // A scan, but only when a stalled session drains: once per half-queue of progress.
        for slot in 0..self.connections.handle_bound() {
            let Some(c) = self.connections.get_mut(slot) else {
                continue;
            };
            if c.stalled_on.get() == Some(session) {
                c.stalled_on = Link::NONE;
                c.resume_unreported = true;
                self.queue_event(slot);
            }
        }
    }
}
