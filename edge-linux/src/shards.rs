//! Broker shards (`runtime.shards` > 1): several broker actors, each owning the sessions
//! whose client identifiers map to it, so protocol work (decode, route, queue, encode) runs
//! on several cores at once. The core makes them one broker ([`fulmar_core::broker`]'s
//! shard docs): each stands in for the others with peers, and the actors carry
//! [`Mesh`] messages between them:
//! - **interest**: a filter the shard's own sessions started or stopped subscribing to
//!   (counted here, so each filter is announced once);
//! - **copies**: messages another shard's subscribers must see, at most [`WINDOW`] in
//!   flight per pair of shards (beyond that they wait in the core's peer queue, which is
//!   an online session's for backpressure, so publishers are slowed, not dropped);
//! - **taken**: the copies a shard took, once they are durable there; the sender then
//!   forgets them and releases the acknowledgements that waited for them.
//!
//! A connection is placed by its CONNECT's client identifier ([`shard_of`]), so a client
//! always meets its session on the same shard, across restarts too (the function is
//! stable); a client without identifier goes round robin, and the identifier its shard
//! assigns names that shard.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fulmar_core::broker::{OwnedForward, PeerId, client_shard, retained_owner};
use tokio::sync::mpsc;

use crate::broker_task::BrokerHandle;

/// Most copies in flight from one shard to another; fewer when subscriber queues are
/// smaller ([`window`]).
pub(crate) const WINDOW: usize = 4096;

/// Copies in flight from one shard to another: no more than a subscriber's queue may
/// hold, so a shard whose subscriber is full holds back about as much as one full queue
/// before the publishers on the other shards are slowed.
pub(crate) fn window(max_queued_messages: usize) -> usize {
    max_queued_messages.clamp(1, WINDOW)
}

/// A message between shard actors.
#[derive(Debug)]
pub(crate) enum Mesh {
    /// Shard `from`'s own sessions subscribe to `filter` now (or no longer).
    Interest {
        from: usize,
        filter: String,
        added: bool,
    },
    /// Messages from shard `from` for this shard's sessions, in order.
    Copies {
        from: usize,
        copies: Vec<OwnedForward>,
    },
    /// Shard `from` took these copies (durably, with persistence).
    Taken { from: usize, tokens: Vec<u64> },
    /// Shard `from` is stopping and every copy it sent was taken: it sends no more.
    Done { from: usize },
}

/// One other shard, as an actor sees it.
#[derive(Debug)]
pub(crate) struct PeerLink {
    /// The core's stand-in for it.
    pub(crate) id: PeerId,
    /// Its mesh inbox.
    pub(crate) mesh: mpsc::UnboundedSender<Mesh>,
    /// Copies sent to it and not taken yet.
    pub(crate) in_flight: usize,
    /// Copies it sent that wait here (a local subscriber's queue is full), in order.
    pub(crate) waiting: VecDeque<OwnedForward>,
}

/// What an actor keeps to be one shard of several.
#[derive(Debug)]
pub(crate) struct ShardState {
    pub(crate) index: usize,
    /// Copies in flight to each other shard at most ([`window`]).
    pub(crate) window: usize,
    /// By shard index; `None` at this shard's own index.
    pub(crate) peers: Vec<Option<PeerLink>>,
    /// This shard's sessions' subscriptions per filter.
    pub(crate) interest: HashMap<String, usize>,
    /// "Taken" answers waiting for a commit, with the shard they go to.
    pub(crate) taken_held: Vec<(u64, usize, Vec<u64>)>,
    /// Stopping: this shard told the others it sends no more ([`Mesh::Done`]).
    pub(crate) said_done: bool,
    /// Stopping: which other shards said so, by index.
    pub(crate) done: Vec<bool>,
}

impl ShardState {
    /// Counts an interest change; `true` when the other shards must hear of it.
    pub(crate) fn count_interest(&mut self, filter: &str, added: bool) -> bool {
        if added {
            let count = self.interest.entry(filter.to_owned()).or_default();
            *count += 1;
            *count == 1
        } else {
            match self.interest.get_mut(filter) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    self.interest.remove(filter);
                    true
                }
                None => false,
            }
        }
    }

    /// Sends `message` to shard `to` (a shard that stopped is gone with the broker).
    pub(crate) fn send(&self, to: usize, message: Mesh) {
        if let Some(Some(peer)) = self.peers.get(to) {
            let _ = peer.mesh.send(message);
        }
    }
}

/// The shards' handles, and where a connection goes.
#[derive(Debug, Clone)]
pub(crate) struct Shards {
    handles: Arc<[BrokerHandle]>,
    next: Arc<AtomicUsize>,
    /// How long a connection may take to send its CONNECT, which places it.
    pub(crate) connect_timeout: std::time::Duration,
    /// Largest packet accepted (a first packet beyond it is not waited for).
    pub(crate) max_packet_size: usize,
}

impl Shards {
    pub(crate) fn new(
        handles: Vec<BrokerHandle>,
        connect_timeout: std::time::Duration,
        max_packet_size: usize,
    ) -> Self {
        Self {
            handles: handles.into(),
            next: Arc::new(AtomicUsize::new(0)),
            connect_timeout,
            max_packet_size,
        }
    }

    /// Whether there is more than one shard (connections must then be placed).
    pub(crate) fn is_sharded(&self) -> bool {
        self.handles.len() > 1
    }

    /// The first shard: every handle shares the counters and auth, so any will do for
    /// what is not about a session.
    pub(crate) fn any(&self) -> &BrokerHandle {
        &self.handles[0]
    }

    /// The shard of a client identifier (`None`: the CONNECT had none, or was not read).
    pub(crate) fn pick(&self, client_id: Option<&str>) -> (usize, &BrokerHandle) {
        let n = self.handles.len();
        let index = match client_id.filter(|id| !id.is_empty()) {
            Some(id) => shard_of(id, n),
            None => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        (index, &self.handles[index])
    }

    /// Every shard's handle.
    pub(crate) fn all(&self) -> &[BrokerHandle] {
        &self.handles
    }
}

/// The shard of `client_id` among `n` (the core's [`client_shard`]: stable across runs,
/// and an identifier a shard assigned names that shard).
pub(crate) fn shard_of(client_id: &str, n: usize) -> usize {
    usize::from(client_shard(client_id, u8::try_from(n).unwrap_or(u8::MAX)))
}

/// Which records of the shared store a shard restores and writes (one shard of
/// several; `None`: the only broker, which owns everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) index: usize,
    pub(crate) count: usize,
}

impl Part {
    /// Whether this shard writes the record under `key`: its own sessions' records and
    /// the retained topics the core gives it ([`retained_owner`]), so a reset it
    /// reports clears those and no other shard's.
    pub(crate) fn writes(self, key: &[u8]) -> bool {
        use fulmar_core::persist::Key;
        match Key::decode(key) {
            Ok(Key::Retained(topic)) => {
                let count = u8::try_from(self.count).unwrap_or(u8::MAX);
                usize::from(retained_owner(topic, count)) == self.index
            }
            Ok(
                Key::Session(client)
                | Key::Subscription(client, _)
                | Key::Message(client, _)
                | Key::Inbound(client, _),
            ) => shard_of(client, self.count) == self.index,
            // The core reports what it cannot read, once.
            Err(_) => self.index == 0,
        }
    }

    /// Whether this shard restores the record under `key`: what it writes, and every
    /// retained message (each shard keeps them all).
    pub(crate) fn restores(self, key: &[u8]) -> bool {
        matches!(
            fulmar_core::persist::Key::decode(key),
            Ok(fulmar_core::persist::Key::Retained(_))
        ) || self.writes(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable_and_assigned_identifiers_name_their_shard() {
        assert_eq!(shard_of("sensor-1", 4), shard_of("sensor-1", 4));
        assert_eq!(shard_of("fulmar-02ab34cd00000001", 4), 2);
        assert_eq!(shard_of("fulmar-05ab34cd00000001", 4), 1);
        let spread: std::collections::HashSet<usize> =
            (0..64).map(|i| shard_of(&format!("c{i}"), 4)).collect();
        assert_eq!(spread.len(), 4);
    }

    #[test]
    fn interest_is_announced_on_the_first_and_last_subscription() {
        let mut s = ShardState {
            index: 0,
            window: 1,
            peers: Vec::new(),
            interest: HashMap::new(),
            taken_held: Vec::new(),
            said_done: false,
            done: Vec::new(),
        };
        assert!(s.count_interest("a/#", true));
        assert!(!s.count_interest("a/#", true));
        assert!(!s.count_interest("a/#", false));
        assert!(s.count_interest("a/#", false));
        assert!(!s.count_interest("a/#", false));
    }
}
