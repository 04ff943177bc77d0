//! What an actor that is one shard of several exchanges with the others ([`Mesh`]): its
//! sessions' interest, the copies their sessions must see (a window of them in flight per
//! pair of shards), and "taken" answers once what a copy changed here is durable.

use fulmar_core::broker::ForwardError;
use fulmar_core::time::Instant;
use tracing::warn;

use super::Actor;
use crate::shards::Mesh;

impl Actor {
    /// Tells the other shards what changed here: this shard's subscriptions (each filter
    /// once) and the copies of messages their sessions must see (up to
    /// [`crate::shards::window`] in flight each). Then takes the copies that waited for a local
    /// subscriber's queue, where it has room again.
    pub(super) fn exchange(&mut self, now: Instant) {
        let Some(shard) = &mut self.shard else {
            return;
        };
        while let Some(change) = self.broker.poll_interest() {
            if shard.count_interest(&change.filter, change.added) {
                for to in 0..shard.peers.len() {
                    let message = Mesh::Interest {
                        from: shard.index,
                        filter: change.filter.clone(),
                        added: change.added,
                    };
                    shard.send(to, message);
                }
            }
        }
        let from = shard.index;
        for link in shard.peers.iter_mut().flatten() {
            let mut copies = Vec::new();
            while link.in_flight < shard.window {
                let Some(forward) = self.broker.peer_next(link.id, now) else {
                    break;
                };
                copies.push(forward.to_owned());
                link.in_flight += 1;
            }
            if !copies.is_empty() {
                let _ = link.mesh.send(Mesh::Copies { from, copies });
            }
        }
        self.retry_copies(now);
    }

    /// Takes the copies that waited for a local subscriber's queue, where there is room.
    pub(super) fn retry_copies(&mut self, now: Instant) {
        let Some(shard) = &self.shard else {
            return;
        };
        let waiting: Vec<usize> = shard
            .peers
            .iter()
            .enumerate()
            .filter_map(|(j, p)| p.as_ref().filter(|p| !p.waiting.is_empty()).map(|_| j))
            .collect();
        for from in waiting {
            self.take_copies(from, now);
        }
    }

    /// A message from another shard.
    pub(super) fn on_mesh(&mut self, message: Mesh, now: Instant) {
        let Some(shard) = &mut self.shard else {
            return;
        };
        match message {
            Mesh::Interest {
                from,
                filter,
                added,
            } => {
                let Some(Some(link)) = shard.peers.get(from) else {
                    return;
                };
                if added {
                    if let Err(error) = self.broker.peer_subscribe(link.id, &filter) {
                        warn!(shard = from, %filter, ?error, "a shard's subscription not mirrored");
                    }
                } else {
                    self.broker.peer_unsubscribe(link.id, &filter);
                }
            }
            Mesh::Copies { from, copies } => {
                if let Some(Some(link)) = shard.peers.get_mut(from) {
                    link.waiting.extend(copies);
                }
                self.take_copies(from, now);
            }
            Mesh::Done { from } => {
                if let Some(done) = shard.done.get_mut(from) {
                    *done = true;
                }
            }
            Mesh::Taken { from, tokens } => {
                if let Some(Some(link)) = shard.peers.get_mut(from) {
                    link.in_flight = link.in_flight.saturating_sub(tokens.len());
                    for token in tokens {
                        self.broker.peer_ack(link.id, token);
                    }
                }
            }
        }
    }

    /// Routes the copies shard `from` sent, in order, until a local subscriber's full
    /// queue stops them; answers "taken" once what they changed is durable.
    pub(super) fn take_copies(&mut self, from: usize, now: Instant) {
        let Some(shard) = &mut self.shard else {
            return;
        };
        let Some(Some(link)) = shard.peers.get_mut(from) else {
            return;
        };
        if self.broker.peer_stalled(link.id) {
            return;
        }
        let mut taken = Vec::new();
        while let Some(copy) = link.waiting.front() {
            match self.broker.forward_publish(link.id, &copy.forward(), now) {
                Err(ForwardError::Stalled) => {
                    // A local subscriber's queue is full: the other shard's publishers are
                    // held back (their acknowledgements wait for these copies), which is a
                    // stall as much as a local publisher's paused input. Counted once per
                    // stop: a stalled link is not retried until the core resumes it.
                    self.metrics.stalled();
                    break;
                }
                Err(error @ (ForwardError::Capacity | ForwardError::Invalid)) => {
                    warn!(
                        shard = from,
                        ?error,
                        "a message from another shard was dropped"
                    );
                }
                Ok(_) => {}
            }
            taken.push(copy.token());
            link.waiting.pop_front();
        }
        if taken.is_empty() {
            return;
        }
        let commit = self.store.as_mut().and_then(|store| {
            store.collect(&mut self.broker);
            store.hold_until()
        });
        match commit {
            Some(commit) => shard.taken_held.push((commit, from, taken)),
            None => {
                let index = shard.index;
                shard.send(
                    from,
                    Mesh::Taken {
                        from: index,
                        tokens: taken,
                    },
                );
            }
        }
        self.pump(now);
    }
}
