//! The actor's side of its shard's bridges: each bridge's [`Uplink`] (the core's sans-IO
//! MQTT client, `fulmar_core::uplink`) lives here, next to the broker it works on, and is
//! driven like a connection: bytes from its IO task (`crate::bridge`) go to
//! [`Uplink::handle_bytes`], what [`Uplink::poll_transmit`] writes goes to the connection's
//! [`Room`](super::Room) (with a store, what [`Uplink::transmit_needs_durability`] names
//! is held until the state it reflects is durable, as a client's output is), the actor's timer covers [`Uplink::poll_timeout`], and after every
//! wake-up the actor looks for new messages for the bridge (the queue may have grown).
//! What the client reports ([`Uplink::poll_event`], the drop count) becomes log lines
//! and the retained `$SYS/broker/bridge/<name>/dropped`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fulmar_core::broker::{Broker, Growable};
use fulmar_core::codec::ReasonCode;
use fulmar_core::time::Instant;
use fulmar_core::uplink::{CLOSES_BEFORE_DROP, Close, Event, Uplink};
use tracing::{info, warn};

use super::{Actor, Hold, Link, Readiness, grow_for, output_hold};
use crate::auth::EdgeHooks;
use crate::bridge::Bridge;
use crate::metrics::BridgeState;

/// Messages a bridge has in flight upstream at most (a 5.0 upstream's Receive Maximum may
/// say fewer): enough to keep a link with some latency busy, few enough that a
/// reconnection sends little again.
pub(crate) const WINDOW: usize = 16;

/// What a bridge's IO task tells the actor.
#[derive(Debug)]
pub(crate) enum Uplinked {
    /// TCP is up: the client's output goes to this link.
    Connected(Link),
    /// Bytes from upstream.
    Bytes(Vec<u8>),
    /// The connection ended (upstream closed it, it failed, or the actor let it go), with
    /// the socket's error if it had one.
    Closed(Option<std::io::Error>),
    /// The connection's writer took its output after the actor found the room full.
    Drained,
    /// A connection attempt failed (the drop count is shown at every attempt).
    Unreachable,
}

/// One bridge of this shard.
#[derive(Debug)]
pub(super) struct UplinkState {
    uplink: Uplink<'static, WINDOW>,
    address: &'static str,
    /// The current connection's output; `None` while there is none.
    link: Option<Link>,
    /// Bytes from upstream the client has not consumed yet (the start of a packet).
    input: Vec<u8>,
    /// Output waiting for a commit (or for other shards), in order.
    held: VecDeque<(Hold, Vec<u8>)>,
    /// The writer is behind: output waits in the core until it drains.
    blocked: bool,
    /// Tells the IO task that upstream accepted (its backoff starts over).
    accepted: Arc<AtomicBool>,
}

/// Opens `bridges` (this shard's, in slot order) on `broker`, after it was restored so
/// each bridge's backlog is there; each one's drop count is published at once (retained).
pub(super) fn open(
    broker: &mut Broker<Growable, EdgeHooks>,
    bridges: &[Bridge],
    now: Instant,
) -> Result<Vec<UplinkState>, (&'static str, ReasonCode)> {
    bridges
        .iter()
        .map(|bridge| {
            let name = bridge.config.client_id;
            let mut uplink = Uplink::open(broker, bridge.config, now).map_err(|e| (name, e))?;
            show_dropped(&mut uplink, broker, now);
            info!(
                bridge = name,
                address = bridge.address,
                up = bridge.config.up.len(),
                down = bridge.config.down.len(),
                "bridge opened"
            );
            Ok(UplinkState {
                uplink,
                address: bridge.address,
                link: None,
                input: Vec::new(),
                held: VecDeque::new(),
                blocked: false,
                accepted: bridge.accepted.clone(),
            })
        })
        .collect()
}

/// Publishes the bridge's drop count when it changed (the core retains it on `$SYS`) and
/// warns with the running count.
fn show_dropped(
    uplink: &mut Uplink<'static, WINDOW>,
    broker: &mut Broker<Growable, EdgeHooks>,
    now: Instant,
) {
    if let Some(dropped) = uplink.poll_dropped(broker, now).filter(|n| *n > 0) {
        warn!(
            bridge = uplink.config().client_id,
            dropped,
            "bridge: messages dropped since start (backlog full while upstream was away, or \
             too large for upstream)"
        );
    }
}

/// Why the actor ends a bridge's connection.
enum End {
    /// The client's reason.
    Client(Close),
    /// The socket closed or failed (with its error, when it said).
    Lost(Option<std::io::Error>),
    /// The client's packet does not fit any buffer (not expected: the buffer grows).
    TooLarge,
    /// The broker is stopping: the client said DISCONNECT.
    Stopping,
}

impl Actor {
    /// Acts on what bridge `slot`'s IO task reported.
    pub(super) fn on_uplink(&mut self, slot: usize, what: Uplinked, now: Instant) {
        let Some(state) = self.uplinks.get_mut(slot) else {
            return;
        };
        match what {
            Uplinked::Connected(link) => {
                if state.link.is_some() {
                    // Not expected (the IO task reports the end first): the old one is over.
                    self.end_uplink(slot, End::Lost(None), now);
                }
                let Some(state) = self.uplinks.get_mut(slot) else {
                    return;
                };
                state.link = Some(link);
                state.uplink.on_connected(now);
                // Shown at each connection as at each failed attempt: an outage may have
                // dropped messages since the last attempt.
                show_dropped(&mut state.uplink, &mut self.broker, now);
                self.pump(now);
                self.transmit_uplink(slot, now);
            }
            Uplinked::Bytes(bytes) => {
                if state.link.is_none() {
                    // From a connection the actor already let go.
                    return;
                }
                state.input.extend_from_slice(&bytes);
                self.receive_uplink(slot, now);
            }
            Uplinked::Closed(error) => {
                if state.link.is_some() {
                    self.end_uplink(slot, End::Lost(error), now);
                }
            }
            Uplinked::Drained => {
                state.blocked = false;
                let waiting = !state.input.is_empty();
                self.transmit_uplink(slot, now);
                if waiting {
                    // It stopped for its acknowledgements, which could not be written.
                    self.receive_uplink(slot, now);
                }
            }
            Uplinked::Unreachable => {
                show_dropped(&mut state.uplink, &mut self.broker, now);
                self.pump(now);
            }
        }
    }

    /// Hands the bridge's input to its client, writing its answers between batches (it
    /// stops consuming while acknowledgements wait to be written: once they are, it takes
    /// more). While the writer is behind, the rest waits for [`Uplinked::Drained`].
    fn receive_uplink(&mut self, slot: usize, now: Instant) {
        // Whether the last call consumed nothing: once more after writing, then it is the
        // start of a packet whose end has not come.
        let mut stuck = false;
        loop {
            let Some(state) = self.uplinks.get_mut(slot) else {
                return;
            };
            let handled = state
                .uplink
                .handle_bytes(&mut self.broker, &state.input, now);
            match handled {
                Ok(used) => {
                    state.input.drain(..used.min(state.input.len()));
                    // Messages from upstream reach local subscribers.
                    self.pump(now);
                    self.transmit_uplink(slot, now);
                    let Some(state) = self.uplinks.get(slot) else {
                        return;
                    };
                    if state.input.is_empty() || state.blocked || (used == 0 && stuck) {
                        return;
                    }
                    stuck = used == 0;
                }
                Err(close) => {
                    self.pump(now);
                    self.end_uplink(slot, End::Client(close), now);
                    return;
                }
            }
        }
    }

    /// Looks at every connected bridge for output: new messages to forward (the broker
    /// routed some), acknowledgements, pings.
    pub(super) fn drive_uplinks(&mut self, now: Instant) {
        for slot in 0..self.uplinks.len() {
            self.transmit_uplink(slot, now);
        }
    }

    /// The broker is stopping: each connected bridge says DISCONNECT upstream, its last
    /// packet, and lets its connection go (its writer writes it and closes). What upstream
    /// did not acknowledge stays in the bridge's session for the next start. (A
    /// DISCONNECT behind output still waiting for a commit is not sent: the socket just
    /// closes, which upstream takes as a lost connection.)
    pub(super) fn disconnect_uplinks(&mut self, now: Instant) {
        for slot in 0..self.uplinks.len() {
            let Some(state) = self.uplinks.get_mut(slot).filter(|s| s.link.is_some()) else {
                continue;
            };
            state.uplink.disconnect();
            self.transmit_uplink(slot, now);
            self.end_uplink(slot, End::Stopping, now);
        }
    }

    /// Records each bridge's state for `/metrics`.
    pub(super) fn record_uplinks(&self) {
        for state in &self.uplinks {
            let bridge = state.uplink.bridge();
            self.metrics.record_bridge(
                state.uplink.config().client_id,
                BridgeState {
                    up: state.uplink.is_up(),
                    backlog: self.broker.bridge_backlog(bridge) as u64,
                    dropped: u64::from(self.broker.bridge_dropped(bridge)),
                },
            );
        }
    }

    /// When the next bridge timer is due.
    pub(super) fn uplink_deadline(&self) -> Option<Instant> {
        self.uplinks
            .iter()
            .filter(|s| s.link.is_some())
            .filter_map(|s| s.uplink.poll_timeout())
            .min()
    }

    /// Runs the bridge timers that are due.
    pub(super) fn uplink_timeouts(&mut self, now: Instant) {
        for slot in 0..self.uplinks.len() {
            let Some(state) = self.uplinks.get_mut(slot).filter(|s| s.link.is_some()) else {
                continue;
            };
            match state.uplink.handle_timeout(now) {
                Ok(()) => self.transmit_uplink(slot, now),
                Err(close) => self.end_uplink(slot, End::Client(close), now),
            }
        }
    }

    /// Moves what bridge `slot`'s client has for upstream to its connection's writer, as
    /// far as the writer's room allows.
    fn transmit_uplink(&mut self, slot: usize, now: Instant) {
        let Some(state) = self.uplinks.get_mut(slot) else {
            return;
        };
        let mut end = None;
        if let Some(link) = &state.link
            && !state.blocked
        {
            loop {
                let room = &link.room;
                // Room first, bytes second, as for a client (see `Actor::flush`).
                if !room.has_room() {
                    room.wanted.store(true, Ordering::SeqCst);
                    if !room.has_room() {
                        state.blocked = true;
                        break;
                    }
                    room.wanted.store(false, Ordering::SeqCst);
                }
                let n = match state
                    .uplink
                    .poll_transmit(&mut self.broker, &mut self.buffer, now)
                {
                    Ok(n) => n,
                    Err(error) if grow_for(&mut self.buffer, error) => continue,
                    Err(_) => {
                        state.uplink.abort();
                        end = Some(End::TooLarge);
                        break;
                    }
                };
                let Some(bytes) = self.buffer.get(..n).filter(|b| !b.is_empty()) else {
                    break;
                };
                room.add_queued(n);
                // A PUBACK for a message from upstream, a PUBREL, a QoS 2 PUBLISH wait for
                // the state changes up to now (the core says which); a QoS 0/1 PUBLISH
                // goes at once, unless earlier output waits (the order).
                let needs = state.uplink.transmit_needs_durability();
                let shard = self.shard.as_ref();
                let hold = output_hold(needs, &mut self.store, &mut self.broker, shard);
                if !hold.is_none() || !state.held.is_empty() {
                    state.held.push_back((hold, bytes.to_vec()));
                } else if link.append(bytes, &mut self.wakes).is_err() {
                    end = Some(End::Lost(None));
                    break;
                }
            }
        }
        self.uplink_events(slot, now);
        if let Some(end) = end {
            self.end_uplink(slot, end, now);
        }
    }

    /// Hands the writers of the bridges the held output that may leave now.
    pub(super) fn release_uplinks(&mut self, ready: Readiness) {
        for state in &mut self.uplinks {
            let Some(link) = &state.link else {
                continue;
            };
            while let Some((hold, _)) = state.held.front()
                && ready.allows(*hold)
            {
                let Some((_, bytes)) = state.held.pop_front() else {
                    break;
                };
                // A writer gone is reported by its IO task.
                let _ = link.append(&bytes, &mut self.wakes);
            }
        }
    }

    /// Logs what bridge `slot`'s client reported.
    fn uplink_events(&mut self, slot: usize, now: Instant) {
        let Some(state) = self.uplinks.get_mut(slot) else {
            return;
        };
        let name = state.uplink.config().client_id;
        let address = state.address;
        let mut dropped = false;
        while let Some(event) = state.uplink.poll_event() {
            match event {
                Event::Connected { session_present } => {
                    state.accepted.store(true, Ordering::SeqCst);
                    info!(
                        bridge = name,
                        address, session_present, "bridge: connected upstream"
                    );
                }
                Event::SubscriptionRefused(code) => {
                    warn!(bridge = name, %code, "bridge: upstream refused a subscription");
                }
                Event::MessagesRefused { count, reason } => {
                    warn!(bridge = name, count, %reason, "bridge: upstream refused messages");
                }
                Event::Oversized { count, max_packet } => {
                    warn!(
                        bridge = name,
                        count,
                        max_packet,
                        "bridge: messages larger than upstream's maximum packet size dropped"
                    );
                    dropped = true;
                }
                _ => {}
            }
        }
        if dropped {
            show_dropped(&mut state.uplink, &mut self.broker, now);
            self.pump(now);
        }
    }

    /// Ends bridge `slot`'s connection: the client rewinds what upstream did not
    /// acknowledge, and the link is dropped (its writer writes what it has and closes).
    fn end_uplink(&mut self, slot: usize, end: End, now: Instant) {
        let Some(state) = self.uplinks.get_mut(slot) else {
            return;
        };
        let name = state.uplink.config().client_id;
        let address = state.address;
        // Output held for a commit goes no further: the connection is over, and what it
        // did not acknowledge goes again on the next one.
        state.held.clear();
        state.input.clear();
        state.blocked = false;
        drop(state.link.take());
        let closed = state.uplink.on_closed(&mut self.broker);
        let reason = match end {
            End::Client(close) => close.to_string(),
            End::Lost(None) => "connection closed".to_owned(),
            End::Lost(Some(error)) => error.to_string(),
            End::TooLarge => "a packet larger than the transmit buffer".to_owned(),
            End::Stopping => {
                info!(
                    bridge = name,
                    address, "bridge: disconnected from upstream (stopping)"
                );
                show_dropped(&mut state.uplink, &mut self.broker, now);
                self.pump(now);
                return;
            }
        };
        if closed.was_up {
            warn!(bridge = name, address, %reason, "bridge: connection upstream lost");
        } else {
            warn!(bridge = name, address, %reason, "bridge: connection upstream failed");
        }
        if closed.dropped_refused {
            warn!(
                bridge = name,
                closes = CLOSES_BEFORE_DROP,
                "bridge: upstream closed the connection with the same message unacknowledged \
                 each time: dropped as too large for upstream (set max_packet)"
            );
        }
        show_dropped(&mut state.uplink, &mut self.broker, now);
        self.pump(now);
    }
}
