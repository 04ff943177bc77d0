//! How an actor stops (SIGTERM, SIGINT): it closes every connection and parks it (bridges
//! say DISCONNECT upstream and close); with
//! shards it keeps exchanging copies until every shard took what the others sent; then it
//! makes everything durable, sends the held output that may leave and closes the store.

use fulmar_core::time::Instant;
use tracing::{debug, info, warn};

use super::{Actor, Hold, Parked};
use crate::shards::Mesh;

impl Actor {
    /// The first step of stopping: every connection is closed in the core (5.0 clients are
    /// told why, DISCONNECT 0x8B; wills go out) and parked, its last words behind the
    /// output it holds, which leaves as its commit and the other shards' taking allow.
    pub(super) fn stop_clients(&mut self, now: Instant) {
        self.pump(now);
        let stats = self.broker.stats();
        info!(
            shard = self.shard.as_ref().map(|s| s.index),
            received = stats.messages_received,
            sent = stats.messages_sent,
            dropped = stats.messages_dropped,
            expired = stats.messages_expired,
            oversized = stats.messages_oversized,
            protocol_errors = stats.protocol_errors,
            "message counters"
        );
        let ids = self.links.ids();
        debug!(connections = ids.len(), "closing every connection");
        for id in &ids {
            self.broker.close_connection(
                *id,
                fulmar_core::codec::ReasonCode::ServerShuttingDown,
                now,
            );
        }
        self.pump(now);
        let ids = self.links.ids();
        for id in ids {
            let last = match self.links.get(id) {
                // A blocked connection's writer is behind: what is still in the core
                // stays there rather than pile up behind it.
                Some(peer) if peer.blocked => Vec::new(),
                Some(_) => self.drain(id, now),
                None => continue,
            };
            if let Some(peer) = self.links.remove(id) {
                let until = peer.holds().fold(Hold::default(), Hold::max);
                self.parked.push(Parked { peer, last, until });
            }
        }
        // Bridges too: upstream is told, and their sessions keep what it did not have.
        self.disconnect_uplinks(now);
        if let Some(store) = &mut self.store {
            store.collect(&mut self.broker);
        }
        self.exchange(now);
    }

    /// Whether a stopping shard may finish: the other shards took every copy it sent
    /// (then it tells them so, once) and each of them said the same. A shard that has
    /// not taken another's copies keeps that one running.
    pub(super) fn drained(&mut self) -> bool {
        let Some(shard) = &mut self.shard else {
            return true;
        };
        let taken = shard.taken_held.is_empty()
            && shard
                .peers
                .iter()
                .flatten()
                .all(|p| self.broker.peer_backlog(p.id) == 0);
        if taken && !shard.said_done {
            shard.said_done = true;
            let from = shard.index;
            for to in 0..shard.peers.len() {
                shard.send(to, Mesh::Done { from });
            }
        }
        shard.said_done
            && shard
                .peers
                .iter()
                .zip(&shard.done)
                .all(|(peer, done)| peer.is_none() || *done)
    }

    /// The last step of stopping: every state change is made durable, each connection gets
    /// the held output that may leave now and its last words, and the store closes.
    /// Acknowledgements whose copies another shard never took are not sent: the client
    /// still owns those messages.
    pub(super) async fn finish_shutdown(&mut self) {
        self.wakes.wake_all();
        if let Some(store) = &mut self.store {
            store.collect(&mut self.broker);
            store.commit_all().await;
        }
        self.release();
        let ready = self.readiness();
        let mut withheld = 0;
        for mut parked in std::mem::take(&mut self.parked) {
            parked.peer.release_held(|hold| ready.allows(hold));
            withheld += parked.peer.drop_held();
            parked.peer.link.finish(parked.last);
        }
        if withheld > 0 {
            warn!(
                chunks = withheld,
                "output held for copies no other shard took was not sent"
            );
        }
        if let Some(store) = self.store.take() {
            store.close().await;
            info!("state saved");
        }
    }
}
