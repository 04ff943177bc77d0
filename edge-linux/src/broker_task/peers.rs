//! The actor's record of each connection ([`Peer`]) and where it keeps them ([`Peers`]).
//!
//! Every idle connection costs one of these, so it is kept small: a `Peer` is its link to
//! the connection's writer, its id and two flags (32 bytes, checked by a test); what only
//! a busy connection needs (input the core has not consumed, output held for a commit) is
//! boxed while it is there and dropped when it is gone. The records sit in a vector indexed
//! by the core's connection slot, which the core hands out densely and reuses, rather than
//! in a hash map, whose table is larger than the records in it and touched all over.

use std::collections::VecDeque;

use fulmar_core::broker::ConnectionId;

use super::{Hold, Link};

/// The actor's view of one connection.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) link: Link,
    id: ConnectionId,
    /// The writer is [`super::output::OUTPUT_BYTES`] behind: output stays in the core until it
    /// drains.
    pub(super) blocked: bool,
    /// The core stalled this connection's input (backpressure): bytes that still arrive
    /// (read before the reader paused) wait with the unconsumed input until
    /// [`fulmar_core::broker::Event::Resume`].
    pub(super) stalled: bool,
    /// What a busy connection has waiting; `None` while it has nothing.
    busy: Option<Box<Busy>>,
}

/// What waits for a connection besides its link, kept only while there is some.
#[derive(Debug, Default)]
struct Busy {
    /// Bytes received but not consumed by the core yet, from `consumed` on: the start of a
    /// packet whose end has not arrived (the core refuses a packet larger than the maximum
    /// packet size as soon as its fixed header is in), or what a stalled publisher sent
    /// before its reader paused.
    unconsumed: Vec<u8>,
    /// How much of `unconsumed` the core has taken: a backlog is taken from the front
    /// without copying the rest each time.
    consumed: usize,
    /// Output waiting for a commit to be durable, each chunk with the commit it waits for
    /// (0: none, it only waits behind earlier chunks). Already counted in the link's room.
    held: VecDeque<(Hold, Vec<u8>)>,
}

impl Busy {
    fn is_empty(&self) -> bool {
        self.unconsumed.len() <= self.consumed && self.held.is_empty()
    }
}

impl Peer {
    pub(super) fn new(id: ConnectionId, link: Link) -> Self {
        Self {
            link,
            id,
            blocked: false,
            stalled: false,
            busy: None,
        }
    }

    fn busy(&mut self) -> &mut Busy {
        self.busy.get_or_insert_default()
    }

    /// Frees what waited once nothing does any more.
    fn tidy(&mut self) {
        if self.busy.as_ref().is_some_and(|b| b.is_empty()) {
            self.busy = None;
        }
    }

    /// What to hand the core next: the input kept from before (and how much of it the
    /// core has taken), followed by `bytes`.
    pub(super) fn take_input(&mut self, bytes: Vec<u8>) -> (Vec<u8>, usize) {
        let Some(busy) = self
            .busy
            .as_mut()
            .filter(|b| b.unconsumed.len() > b.consumed)
        else {
            return (bytes, 0);
        };
        let mut data = std::mem::take(&mut busy.unconsumed);
        let consumed = std::mem::take(&mut busy.consumed);
        data.extend_from_slice(&bytes);
        self.tidy();
        (data, consumed)
    }

    /// Keeps `data`, of which the core has taken the first `consumed` bytes, for later.
    pub(super) fn keep_input(&mut self, data: Vec<u8>, consumed: usize) {
        if data.len() <= consumed && self.busy.is_none() {
            return;
        }
        let busy = self.busy();
        busy.unconsumed = data;
        busy.consumed = consumed;
        self.tidy();
    }

    /// Adds bytes read while the core holds this connection's input back.
    pub(super) fn stash_input(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.busy().unconsumed.extend_from_slice(bytes);
        }
    }

    /// Whether output waits for a commit.
    pub(super) fn has_held(&self) -> bool {
        self.busy.as_ref().is_some_and(|b| !b.held.is_empty())
    }

    /// What the held output waits for, chunk by chunk.
    pub(super) fn holds(&self) -> impl Iterator<Item = Hold> + '_ {
        self.busy
            .iter()
            .flat_map(|b| b.held.iter().map(|(hold, _)| *hold))
    }

    /// Holds `chunk` back until `hold` is met (and every chunk held before it has left).
    pub(super) fn hold(&mut self, hold: Hold, chunk: Vec<u8>) {
        self.busy().held.push_back((hold, chunk));
    }

    /// Drops the held output; returns how many chunks there were.
    pub(super) fn drop_held(&mut self) -> usize {
        let dropped = self.busy.as_ref().map_or(0, |b| b.held.len());
        if let Some(busy) = self.busy.as_mut() {
            busy.held.clear();
        }
        self.tidy();
        dropped
    }

    /// Sends the held chunks that are `ready` to the writer, in order; `false` when the
    /// writer is gone (then nothing stays held: it would never leave).
    pub(super) fn release_held(&mut self, ready: impl Fn(Hold) -> bool) -> bool {
        let Some(busy) = self.busy.as_mut() else {
            return true;
        };
        let mut sent = true;
        while let Some((hold, _)) = busy.held.front() {
            if !ready(*hold) {
                break;
            }
            let Some((_, chunk)) = busy.held.pop_front() else {
                break;
            };
            if self.link.send(chunk).is_err() {
                busy.held.clear();
                sent = false;
                break;
            }
        }
        self.tidy();
        sent
    }
}

/// The actor's connections, by the core's connection slot.
#[derive(Debug, Default)]
pub(super) struct Peers {
    slots: Vec<Option<Peer>>,
}

impl Peers {
    /// Adds a connection the core just opened.
    pub(super) fn insert(&mut self, peer: Peer) {
        let slot = peer.id.slot() as usize;
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, || None);
        }
        if let Some(place) = self.slots.get_mut(slot) {
            // The core reuses a slot only once its connection is gone, which the actor
            // forgets first; a leftover would only be a forgotten link (dropping it ends its
            // writer).
            *place = Some(peer);
        }
    }

    pub(super) fn get(&self, id: ConnectionId) -> Option<&Peer> {
        self.slots
            .get(id.slot() as usize)?
            .as_ref()
            .filter(|p| p.id == id)
    }

    pub(super) fn get_mut(&mut self, id: ConnectionId) -> Option<&mut Peer> {
        self.slots
            .get_mut(id.slot() as usize)?
            .as_mut()
            .filter(|p| p.id == id)
    }

    /// Forgets connection `id`, if it is known.
    pub(super) fn remove(&mut self, id: ConnectionId) -> Option<Peer> {
        let place = self.slots.get_mut(id.slot() as usize)?;
        let peer = place.take_if(|p| p.id == id)?;
        // The core reuses freed slots before it takes new ones, so they stay dense; the
        // tail is trimmed as it empties, and the vector shrinks after a crowd has gone.
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
        if self.slots.capacity() > 64 && self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to(self.slots.len() * 2);
        }
        Some(peer)
    }

    /// Every connection's id.
    pub(super) fn ids(&self) -> Vec<ConnectionId> {
        self.slots.iter().flatten().map(|p| p.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every idle connection costs the actor.
    #[test]
    fn a_peer_is_small() {
        let size = std::mem::size_of::<Option<Peer>>();
        assert!(size <= 32, "a peer takes {size} bytes");
    }
}
