//! The broker actor: ONE tokio task owns the [`Broker`] state machine and drives it the way
//! the [core's module docs](fulmar_core::broker) describe, in the manner `quinn` drives
//! `quinn-proto`.
//!
//! Connection tasks talk to it through [`BrokerHandle`] over one bounded channel of
//! [`Input`]s: a connection opened, bytes arrived, it closed, its writer has room again.
//! The actor feeds each to the core, then drains [`Broker::poll_event`]:
//! - [`Event::Transmit`]: [`Broker::poll_transmit`] into one reused buffer, and each chunk
//!   to that connection's writer, which is woken once the actor is done with the input at
//!   hand ([`Wakes`]) and writes all it got with one system call (the [`output`] module).
//!   Each connection may have at most [`OUTPUT_BYTES`](output::OUTPUT_BYTES) written
//!   by the actor but not yet by its writer ([`Room`]); beyond that the actor stops taking
//!   that connection's output (the core keeps it queued, under its own limits) until the
//!   writer is down to half, which it reports with [`Input::Drained`] (and which the actor
//!   also checks for itself while it is busy with other input, so the report does not wait
//!   behind a long queue of input). No byte is dropped.
//! - [`Event::Close`]: whatever the core still has for the connection goes to the writer as
//!   its last words, the writer flushes and closes, and the core forgets the connection.
//!
//! Between inputs it sleeps until [`Broker::poll_timeout`] or the next `$SYS`
//! publication ([`SysTree`]). Core time is milliseconds since the Unix epoch, so stored
//! expiry times mean the same after a restart. After each wake-up it copies the core's
//! counters into [`Metrics`] for `/metrics`.
//!
//! The parts: [`output`] (a connection's output on its way to the writer), [`peers`] (the
//! actor's record of each connection), [`mesh`] (what a shard exchanges with the others)
//! and [`stop`] (a graceful stop).
//!
//! ## Persistence
//! With a [`Store`], the actor restores it into the core before it starts (so before any
//! connection is served), collects the core's [`Broker::poll_persist`] ops after every
//! input, timeout and transmitted chunk, and has the [`Committer`] commit them on the
//! store's own thread. Output is tagged with the commit it depends on
//! ([`Committer::hold_until`]) and waits with its [`Peer`] until that commit is durable, so
//! no PUBACK, PUBREC or PUBCOMP leaves before the state it acknowledges is on disk, and no
//! QoS 2 delivery leaves before its packet identifier is
//! ([`Broker::transmit_needs_durability`]); a chunk of QoS 0/1 deliveries only waits behind
//! earlier held output of its connection, to keep the order. Held output counts against the
//! connection's [`OUTPUT_BYTES`](output::OUTPUT_BYTES) like output in the writer's
//! channel. A connection the core closes while its output is held is parked until the
//! commit ends, then gets its output and last words in order.
//!
//! ## Shards
//! With `runtime.shards` > 1 there is one actor per shard, each owning the core broker of
//! the sessions whose client identifiers map to it ([`crate::shards`]), so protocol work
//! (decode, route, queue, encode) runs on as many cores. Between inputs an actor
//! exchanges [`Mesh`] messages with the others: its sessions' interest, copies of messages
//! their sessions must see, and "taken" answers. With persistence, an acknowledgement
//! (PUBACK, PUBREC…) waits with its [`Peer`] until every other shard has taken the copies
//! queued before it ([`Hold::seq`]), as it waits for the disk ([`Hold::commit`]), and a
//! shard answers "taken" only once what a copy changed there is durable: kill -9 loses no
//! acknowledged message on any shard. Without persistence nothing acknowledged survives a
//! crash anyway, so acknowledgements do not wait for that round trip.
//!
//! ## Backpressure
//! With [`fulmar_core::broker::OverflowPolicy::Backpressure`], the core refuses to take a
//! PUBLISH whose subscriber's queue is full ([`Broker::is_stalled`]). The actor then keeps
//! the unconsumed bytes, pauses that connection's reader ([`Room::input_allowed`]) so the
//! socket is not read and TCP slows the publisher, and on [`Event::Resume`] feeds the held
//! bytes again and lets the reader go on. Other connections are not affected.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fulmar_core::broker::{Broker, ConnectionId, Event, Growable, PeerId};
use fulmar_core::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::auth::{Admission, Auth, EdgeHooks, SessionBudget};
use crate::connection::Origin;
use crate::metrics::sys::SysTree;
use crate::metrics::{Metrics, Refusal};
use crate::shards::{self, Mesh, PeerLink, ShardState, Shards};
use crate::store::{self, Committer, Store, SyncPolicy};

mod mesh;
mod output;
mod peers;
mod stop;
mod uplinks;

use output::Wakes;
pub(crate) use output::{Link, Output, Room, buffers};
use peers::{Peer, Peers};
pub(crate) use uplinks::Uplinked;

/// Inputs waiting for the actor; readers wait when it is full.
const INBOX: usize = 1024;
/// Inputs the actor takes per wake-up before it re-arms its timer (`poll_timeout` scans
/// every connection and session, so not after every input).
const BATCH: usize = 256;
/// Messages from other shards taken per wake-up, at most.
const MESH_BATCH: usize = 1024;
/// How long a stopping shard keeps exchanging copies with the others, so that the
/// acknowledgements waiting for them can go out (the server waits 5 s for connections).
const SHARD_DRAIN: std::time::Duration = std::time::Duration::from_secs(3);
/// Bytes of input handed to the core per call. `handle_bytes` handles every whole packet it
/// is given before the host can drain any output, and a subscriber's queue in the core is
/// bounded ([`fulmar_core::broker::Config::max_queued_messages`]): a 16 KiB read of small
/// QoS 0 PUBLISHes (over a thousand) would overflow it for a subscriber that keeps up
/// perfectly well. Feeding 4 KiB at a time and draining in between keeps a burst within it.
const FEED_STEP: usize = 4 * 1024;
/// Room beyond the maximum packet size in the transmit buffer: an outgoing PUBLISH can be
/// larger than the one that came in (a 3.x publisher's message to a 5.0 subscriber gains
/// properties: subscription identifiers, topic alias, message expiry).
const TRANSMIT_MARGIN: usize = 1024;

/// A message to the actor.
#[derive(Debug)]
pub(crate) enum Input {
    /// A transport connection was accepted; the actor answers with its id, or `None` when
    /// the core refuses it.
    Opened {
        origin: Origin,
        link: Link,
        reply: oneshot::Sender<Option<ConnectionId>>,
    },
    /// Bytes read from a connection.
    Bytes(ConnectionId, Vec<u8>),
    /// The connection's socket is finished (peer closed, I/O error, or after the broker
    /// closed it); ignored when the actor already let it go.
    Closed(ConnectionId),
    /// The connection's writer took a chunk after the actor found its channel full.
    Drained(ConnectionId),
    /// News from a bridge's connection upstream: the bridge's slot among this shard's,
    /// and what happened.
    Uplink(usize, Uplinked),
    /// Flush and close every connection, then stop.
    Shutdown,
}

/// The actor is gone (the broker is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gone;

/// A cheap handle connection tasks use to reach the actor.
#[derive(Debug, Clone)]
pub(crate) struct BrokerHandle {
    /// Which shard this is (0 when there is one).
    shard: usize,
    inbox: mpsc::Sender<Input>,
    auth: Arc<Auth>,
}

impl BrokerHandle {
    /// How connection `id`'s first bytes get in: its credentials are checked on its own
    /// task (see [`crate::auth`]). `identity`: its TLS client certificate's name, when the
    /// listener takes that as the user name.
    pub(crate) fn admission(&self, id: ConnectionId, identity: Option<String>) -> Admission {
        Admission::new(self.auth.clone(), (self.shard, id), identity)
    }

    /// Registers a new connection; `None` when the core refuses it or the actor is gone.
    pub(crate) async fn open(&self, origin: Origin, link: Link) -> Option<ConnectionId> {
        let (reply, answer) = oneshot::channel();
        self.inbox
            .send(Input::Opened {
                origin,
                link,
                reply,
            })
            .await
            .ok()?;
        answer.await.ok().flatten()
    }

    /// The actor's inbox, for a connection's task, which hands it its input without
    /// waiting where it can (`try_send`) and keeps only this (not a whole handle).
    pub(crate) fn inbox(&self) -> mpsc::Sender<Input> {
        self.inbox.clone()
    }

    /// Asks the actor to flush and close every connection and stop.
    pub(crate) async fn shutdown(&self) {
        let _ = self.send(Input::Shutdown).await;
    }

    /// Hands `input` to the actor, waiting for room in its inbox.
    pub(crate) async fn send(&self, input: Input) -> Result<(), Gone> {
        self.inbox.send(input).await.map_err(|_| Gone)
    }
}

/// A broker state machine ready to run: restored from its store, if it has one.
#[derive(Debug)]
pub(crate) struct Prepared {
    broker: Broker<Growable, EdgeHooks>,
    /// Its shard index, and its stand-ins for the other shards (by index).
    shard: usize,
    peers: Vec<Option<PeerId>>,
    auth: Arc<Auth>,
    store: Option<Store>,
    clock: Clock,
    buffer: Vec<u8>,
    /// The bridges whose sessions this shard owns.
    uplinks: Vec<uplinks::UplinkState>,
}

/// Builds the broker state machines, one per shard, and restores `store` into them (before
/// any connection is served): each shard takes its own sessions' records
/// ([`shards::shard_of`]) and every retained message.
pub(crate) fn prepare(
    mut config: fulmar_core::broker::Config,
    store: Option<Store>,
    auth: Arc<Auth>,
    count: usize,
) -> Result<Vec<Prepared>, store::Error> {
    config.persistence = store.is_some();
    // The limit on client sessions holds across shards (the hooks count them); each core's
    // own limit also makes room for its stand-ins for the other shards.
    let sessions = Arc::new(SessionBudget::new(config.max_sessions));
    config.max_sessions = config.max_sessions.saturating_add(count - 1);
    let clock = Clock::start();
    let seed = random_seed();
    let mut prepared = Vec::with_capacity(count);
    for shard in 0..count {
        let hooks = EdgeHooks::for_shard(auth.clone(), shard, sessions.clone());
        let mut broker = Broker::with_hooks(config.clone(), seed ^ shard as u64, hooks);
        if count > 1 {
            broker.enable_sharding(
                u8::try_from(shard).unwrap_or(u8::MAX),
                u8::try_from(count).unwrap_or(u8::MAX),
            );
        }
        let part = (count > 1).then_some(shards::Part {
            index: shard,
            count,
        });
        let store = store.as_ref().map(|s| s.share(part));
        if let Some(store) = &store {
            store.restore_where(&mut broker, clock.now(), |key| {
                part.is_none_or(|part| part.restores(key))
            })?;
        }
        let mut peers = vec![None; count];
        if count > 1 {
            for (other, slot) in peers.iter_mut().enumerate().filter(|(o, _)| *o != shard) {
                let name = format!("$fulmar/shard/{other}");
                *slot = broker.peer_open(&name, clock.now()).ok();
            }
        }
        prepared.push(Prepared {
            broker,
            shard,
            peers,
            auth: auth.clone(),
            store,
            clock,
            buffer: vec![0; config.max_packet_size as usize + TRANSMIT_MARGIN],
            uplinks: Vec::new(),
        });
    }
    Ok(prepared)
}

impl Prepared {
    /// What decides who may connect and what they may do.
    pub(crate) fn auth(&self) -> Arc<Auth> {
        self.auth.clone()
    }

    /// Opens the bridges whose sessions this shard owns (`bridges` are this shard's, in
    /// slot order), after the restore, so each one's backlog is there. Fails with the
    /// name of a bridge the core refuses (a local session of that name is connected, or a
    /// filter is beyond the configured topic limits) and why.
    pub(crate) fn open_bridges(
        &mut self,
        bridges: &[crate::bridge::Bridge],
    ) -> Result<(), (&'static str, fulmar_core::codec::ReasonCode)> {
        self.uplinks = uplinks::open(&mut self.broker, bridges, self.clock.now())?;
        Ok(())
    }

    /// Starts one actor per shard (and each one's store writer thread) on the current
    /// runtime; the first publishes `$SYS` every `sys_interval` (never when zero).
    pub(crate) fn spawn_all(
        prepared: Vec<Self>,
        metrics: Arc<Metrics>,
        sys_interval: std::time::Duration,
    ) -> std::io::Result<(Shards, Vec<tokio::task::JoinHandle<()>>)> {
        let count = prepared.len();
        let (connect_timeout, max_packet_size, window) = prepared.first().map_or((0, 0, 1), |p| {
            let config = p.broker.config();
            (
                config.connect_timeout.as_millis(),
                config.max_packet_size as usize,
                shards::window(config.max_queued_messages),
            )
        });
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..count)
            .map(|_| mpsc::unbounded_channel::<Mesh>())
            .unzip();
        let mut handles = Vec::with_capacity(count);
        let mut tasks = Vec::with_capacity(count);
        for (this, mesh) in prepared.into_iter().zip(receivers) {
            let store = this.store.map(Store::start).transpose()?;
            let (inbox, receiver) = mpsc::channel(INBOX);
            let shard = (count > 1).then(|| ShardState {
                index: this.shard,
                window,
                peers: this
                    .peers
                    .iter()
                    .enumerate()
                    .map(|(j, id)| {
                        id.map(|id| PeerLink {
                            id,
                            mesh: senders[j].clone(),
                            in_flight: 0,
                            waiting: std::collections::VecDeque::new(),
                        })
                    })
                    .collect(),
                interest: HashMap::new(),
                taken_held: Vec::new(),
                said_done: false,
                done: vec![false; count],
            });
            let sys = if this.shard == 0 {
                sys_interval
            } else {
                std::time::Duration::ZERO
            };
            let actor = Actor {
                broker: this.broker,
                links: Peers::default(),
                blocked: Vec::new(),
                resumed: Vec::new(),
                clock: this.clock,
                buffer: this.buffer,
                store,
                holding: Vec::new(),
                wakes: Wakes::default(),
                parked: Vec::new(),
                metrics: metrics.clone(),
                sys: SysTree::new(sys, this.clock.started),
                shard,
                shard_count: count,
                copies_first: false,
                stopping: None,
                uplinks: this.uplinks,
            };
            tasks.push(tokio::spawn(actor.run(receiver, mesh)));
            handles.push(BrokerHandle {
                shard: this.shard,
                inbox,
                auth: this.auth,
            });
        }
        drop(senders);
        let timeout = std::time::Duration::from_millis(connect_timeout);
        Ok((Shards::new(handles, timeout, max_packet_size), tasks))
    }
}

/// Core time: milliseconds since the Unix epoch, advanced by the runtime's monotonic clock
/// (a wall-clock step while running does not move it).
#[derive(Debug, Clone, Copy)]
struct Clock {
    started: tokio::time::Instant,
    /// Unix time in milliseconds at `started`.
    origin: u64,
}

impl Clock {
    fn start() -> Self {
        let origin = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            started: tokio::time::Instant::now(),
            origin,
        }
    }

    fn now(&self) -> Instant {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Instant::from_millis(self.origin.saturating_add(ms))
    }

    /// The tokio instant of a core instant.
    fn deadline(&self, at: Instant) -> tokio::time::Instant {
        self.started + std::time::Duration::from_millis(at.as_millis().saturating_sub(self.origin))
    }
}

/// A seed for the core's hash tables (keyed against collision attacks) and assigned client
/// identifiers: `RandomState` is randomly keyed per process by the standard library.
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::process::id())
}

/// A connection the core closed while output for it waited for a commit.
#[derive(Debug)]
struct Parked {
    peer: Peer,
    /// Its last words, sent after the held output.
    last: Vec<u8>,
    /// What they wait for.
    until: Hold,
}

/// What output may leave now: the last durable commit, and the oldest copy another shard
/// has not taken yet.
#[derive(Debug, Clone, Copy)]
struct Readiness {
    durable: u64,
    oldest: Option<u64>,
}

impl Readiness {
    fn allows(self, hold: Hold) -> bool {
        hold.commit <= self.durable && (hold.seq == 0 || self.oldest.is_none_or(|o| o > hold.seq))
    }
}

/// What a chunk of output waits for before it may leave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Hold {
    /// This commit must be durable (0: none).
    commit: u64,
    /// Every other shard must have taken the copies queued up to this sequence number
    /// (0: none): an acknowledged message is in every shard that has a subscriber for it.
    seq: u64,
}

impl Hold {
    fn is_none(self) -> bool {
        self == Self::default()
    }

    fn max(self, other: Self) -> Self {
        Self {
            commit: self.commit.max(other.commit),
            seq: self.seq.max(other.seq),
        }
    }
}

struct Actor {
    broker: Broker<Growable, EdgeHooks>,
    links: Peers,
    /// Connections whose output waits for their writer.
    blocked: Vec<ConnectionId>,
    clock: Clock,
    /// Connections the core resumed ([`Event::Resume`]) whose held input is not fed yet.
    resumed: Vec<ConnectionId>,
    /// Reused for every `poll_transmit`; large enough for the largest packet.
    buffer: Vec<u8>,
    metrics: Arc<Metrics>,
    sys: SysTree,
    /// Commits the core's state changes; `None` without persistence.
    store: Option<Committer>,
    /// Connections with held output (may name gone connections; checked when released).
    holding: Vec<ConnectionId>,
    /// Writers given output since the actor last woke them.
    wakes: Wakes,
    parked: Vec<Parked>,
    /// Set when this actor is one shard of several.
    shard: Option<ShardState>,
    shard_count: usize,
    /// Whether other shards' waiting copies went before local publishers at the last
    /// resume (they alternate).
    copies_first: bool,
    /// Set once told to stop (a shard of several): every connection is closed and parked,
    /// and copies still move between the shards until this deadline at the latest.
    stopping: Option<tokio::time::Instant>,
    /// The bridges whose sessions this shard owns, each with its client ([`uplinks`]).
    uplinks: Vec<uplinks::UplinkState>,
}

/// What happened when the actor tried to move a connection's output to its writer.
enum Flush {
    /// All output taken (or the connection is unknown).
    Done,
    /// The writer is behind; resumed when it drains.
    Blocked,
    /// The writer is gone (its socket failed).
    WriterGone,
}

impl Actor {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Input>,
        mut mesh: mpsc::UnboundedReceiver<Mesh>,
    ) {
        // Subscriptions restored from the store are the other shards' business too.
        self.exchange(self.now());
        let mut batch = Vec::with_capacity(BATCH);
        // After a timeout was handled, never re-arm sooner than 1 ms later: a deadline the
        // core failed to clear would otherwise spin this task.
        let mut floor = self.clock.started;
        let mut inbox_open = true;
        loop {
            if !self.uplinks.is_empty() && self.stopping.is_none() {
                // Whatever woke the actor may have queued messages for a bridge.
                let now = self.now();
                self.drive_uplinks(now);
                self.settle().await;
            }
            // Done with what woke it: the writers take what it gave them.
            self.wakes.wake_all();
            // poll_timeout scans every connection and session; once per batch, not per input.
            // While a shard stops, the core's time stands still: a delayed will or a session
            // expiry due in the drain window waits for the restart (it is stored with its
            // due time), instead of making copies after this shard told the others it had
            // none left, which they might no longer take.
            let deadline = match self.stopping {
                None => {
                    let core = [self.broker.poll_timeout(), self.uplink_deadline()]
                        .into_iter()
                        .flatten()
                        .min()
                        .map(|at| self.clock.deadline(at).max(floor));
                    [core, self.sys.next_due()].into_iter().flatten().min()
                }
                Some(stop) => Some(stop),
            };
            // The disk is far behind: take no more input until the commit in flight ends
            // (readers then wait, and TCP slows the clients).
            let accepting = !self.store.as_ref().is_some_and(Committer::saturated);
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = inbox.recv_many(&mut batch, BATCH), if accepting && inbox_open => {
                    if received == 0 {
                        if self.stopping.is_some() {
                            inbox_open = false;
                            continue;
                        }
                        // Every handle is gone: nobody can talk to the broker any more.
                        break;
                    }
                    for input in batch.drain(..) {
                        let now = self.now();
                        if self.stopping.is_some() {
                            // Every connection is closed: what still comes from them is
                            // theirs to send again (nothing of it was acknowledged).
                            continue;
                        }
                        if let Input::Shutdown = input {
                            self.stop_clients(now);
                            if self.shard.is_none() {
                                self.finish_shutdown().await;
                                return;
                            }
                            self.stopping =
                                Some(tokio::time::Instant::now() + SHARD_DRAIN);
                            break;
                        }
                        self.handle(input, now);
                        // Output after every input, not once per batch: a read can hold
                        // hundreds of small PUBLISHes, and a subscriber's queue in the core
                        // is bounded, so waiting for the whole batch would make it overflow.
                        self.pump(now);
                        self.resume_drained(now);
                        self.resume_stalled(now);
                        self.settle().await;
                    }
                    // Copies for the other shards go once per batch: one message (and one
                    // wake-up) each, not one per input.
                    let now = self.now();
                    self.exchange(now);
                }
                Some(message) = mesh.recv(), if self.shard.is_some() => {
                    let now = self.now();
                    self.on_mesh(message, now);
                    // Everything the other shards sent meanwhile, not one message per
                    // wake-up: client input comes in batches, and acknowledgements wait
                    // for these.
                    for _ in 0..MESH_BATCH {
                        let Ok(message) = mesh.try_recv() else { break };
                        self.on_mesh(message, now);
                    }
                    self.pump(now);
                    self.resume_drained(now);
                    self.resume_stalled(now);
                    self.exchange(now);
                    self.settle().await;
                    self.release();
                }
                id = completion(&mut self.store) => {
                    self.committed(id);
                    self.settle().await;
                }
                // While stopping, this is the end of the drain window (checked below).
                () = sleep => if self.stopping.is_none() {
                    let now = self.now();
                    self.broker.handle_timeout(now);
                    self.uplink_timeouts(now);
                    self.pump(now);
                    self.resume_stalled(now);
                    self.exchange(now);
                    self.settle().await;
                    floor = tokio::time::Instant::now() + std::time::Duration::from_millis(1);
                }
            }
            match self.stopping {
                None => self.observe(),
                Some(deadline) => {
                    let drained = self.drained();
                    if drained || tokio::time::Instant::now() >= deadline {
                        if !drained {
                            warn!(
                                "stopping before the other shards took every copy: the \
                                 acknowledgements waiting for them are not sent"
                            );
                        }
                        self.finish_shutdown().await;
                        return;
                    }
                }
            }
        }
        self.wakes.wake_all();
        if let Some(store) = self.store.take() {
            store.close().await;
        }
    }

    /// Refreshes the counters `/metrics` reads and publishes `$SYS` when due.
    fn observe(&mut self) {
        match &self.shard {
            Some(shard) => self.metrics.record_shard(
                shard.index,
                self.shard_count,
                &self.broker.stats(),
                self.broker.subscription_count(),
            ),
            None => self
                .metrics
                .record_core(&self.broker.stats(), self.broker.subscription_count()),
        }
        self.record_uplinks();
        let now = self.now();
        let at = tokio::time::Instant::now();
        if self
            .sys
            .publish_if_due(&mut self.broker, &self.metrics, at, now)
        {
            self.pump(now);
            self.exchange(now);
        }
    }

    /// Moves the core's state changes towards the disk after an input or a timeout: with
    /// [`SyncPolicy::Always`] commits them and waits; otherwise starts a commit unless one
    /// is in flight (then they join the next one: group commit).
    async fn settle(&mut self) {
        let Some(store) = &mut self.store else {
            return;
        };
        store.collect(&mut self.broker);
        if let Some(id) = store.try_completion() {
            self.committed(id);
        }
        let Some(store) = &mut self.store else {
            return;
        };
        if store.sync() == SyncPolicy::Always {
            // Output that needs no commit leaves meanwhile.
            self.wakes.wake_all();
            store.commit_all().await;
            self.release();
        } else {
            store.start_commit();
        }
    }

    /// Commit `id` is done: output waiting for it leaves.
    fn committed(&mut self, id: u64) {
        if let Some(store) = &mut self.store {
            store.completed(id);
        }
        self.release();
    }

    /// Hands the writers every held chunk whose commit is durable, and the last words of
    /// parked connections whose output is all released.
    fn release(&mut self) {
        let ready = self.readiness();
        if let Some(shard) = &mut self.shard {
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut shard.taken_held)
                .into_iter()
                .partition(|(commit, _, _)| *commit <= ready.durable);
            shard.taken_held = later;
            for (_, to, tokens) in due {
                let from = shard.index;
                shard.send(to, Mesh::Taken { from, tokens });
            }
        }
        let mut holding = std::mem::take(&mut self.holding);
        holding.retain(|id| {
            let Some(peer) = self.links.get_mut(*id) else {
                return false;
            };
            // When the writer is gone, the reader reports the close.
            peer.release_held(|hold| ready.allows(hold));
            peer.has_held()
        });
        holding.dedup();
        self.holding = holding;
        let (due, waiting): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| ready.allows(p.until));
        self.parked = waiting;
        for mut parked in due {
            // Everything of a parked connection waits for `until`.
            parked.peer.release_held(|_| true);
            parked.peer.link.finish(parked.last);
        }
        self.release_uplinks(ready);
    }

    /// What held output may leave now.
    fn readiness(&self) -> Readiness {
        // Copies to other shards are taken in order: below the oldest one still pending
        // everywhere, every acknowledgement may go.
        let oldest = self.shard.as_ref().and_then(|shard| {
            shard
                .peers
                .iter()
                .flatten()
                .filter_map(|p| self.broker.peer_oldest(p.id))
                .min()
        });
        Readiness {
            durable: self.store.as_ref().map_or(u64::MAX, Committer::durable),
            oldest,
        }
    }

    /// Core time.
    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn handle(&mut self, input: Input, now: Instant) {
        match input {
            Input::Opened {
                origin,
                link,
                reply,
            } => {
                let peer = origin.peer;
                let id = match self.broker.handle_connect(now) {
                    Ok(id) => id,
                    Err(error) => {
                        warn!(%peer, ?error, "connection refused by the broker");
                        self.metrics.refused(Refusal::Broker);
                        let _ = reply.send(None);
                        return;
                    }
                };
                if reply.send(Some(id)).is_err() {
                    // The connection task is gone already.
                    self.broker.handle_disconnect(id, now);
                    return;
                }
                // Later lines name the connection by `conn` only: the actor keeps no address
                // per connection (every idle connection would pay for it).
                debug!(
                    %peer,
                    conn = id.slot(),
                    identity = origin.identity.as_deref(),
                    "connection opened"
                );
                self.links.insert(Peer::new(id, link));
            }
            Input::Bytes(id, bytes) => {
                self.metrics.received(bytes.len());
                self.feed(id, bytes, now);
            }
            Input::Closed(id) => {
                if self.links.remove(id).is_some() {
                    debug!(
                        conn = id.slot(),
                        client = self.broker.connection_client_id(id).unwrap_or(""),
                        "connection closed by the peer"
                    );
                    self.broker.handle_disconnect(id, now);
                }
            }
            Input::Drained(id) => self.unblock(id, now),
            Input::Uplink(slot, what) => self.on_uplink(slot, what, now),
            // Handled by `run`, which stops after it.
            Input::Shutdown => {}
        }
    }

    /// Hands bytes read from a connection to the core, [`FEED_STEP`] bytes at a time with
    /// the output drained in between, and keeps what it did not consume (the start of a
    /// packet) for the next read.
    fn feed(&mut self, id: ConnectionId, bytes: Vec<u8>, now: Instant) {
        let Some(peer) = self.links.get_mut(id) else {
            return;
        };
        if peer.stalled {
            // Read before the reader paused: it waits with the held-back PUBLISH.
            peer.stash_input(&bytes);
            return;
        }
        let (data, mut offset) = peer.take_input(bytes);
        while offset < data.len() {
            let end = data.len().min(offset + FEED_STEP);
            let mut used =
                self.broker
                    .handle_bytes(id, data.get(offset..end).unwrap_or_default(), now);
            if used == 0 && end < data.len() {
                // The next packet is longer than a step: give it everything there is.
                used = self
                    .broker
                    .handle_bytes(id, data.get(offset..).unwrap_or_default(), now);
            }
            offset += used;
            if self.broker.is_stalled(id) {
                // Backpressure: a subscriber's queue is full. Stop reading this publisher
                // until the core resumes it; its PUBLISH is neither taken nor acked.
                if let Some(peer) = self.links.get_mut(id) {
                    debug!(
                        conn = id.slot(),
                        "input paused: a subscriber's queue is full"
                    );
                    peer.stalled = true;
                    peer.link.room.pause_input();
                }
                self.metrics.stalled();
                self.pump(now);
                break;
            }
            if used == 0 {
                break;
            }
            self.pump(now);
        }
        // The connection may have been closed meanwhile; then the rest is moot.
        // A partial packet is copied out; a longer rest (a stalled publisher's backlog)
        // stays where it is.
        if let Some(peer) = self.links.get_mut(id) {
            let rest = data.get(offset..).unwrap_or_default();
            let (kept, consumed) = if rest.len() > FEED_STEP {
                (data, offset)
            } else {
                (rest.to_vec(), 0)
            };
            peer.keep_input(kept, consumed);
        }
    }

    /// Feeds every connection the core resumed the input it held back, and lets its
    /// reader read again unless the core stalls it anew.
    fn resume_stalled(&mut self, now: Instant) {
        // Local publishers and other shards' copies may wait for the same subscriber:
        // who goes first alternates, or the first would take all the room every time.
        if self.shard.is_some() && !self.resumed.is_empty() {
            self.copies_first = !self.copies_first;
            if self.copies_first {
                self.retry_copies(now);
            }
        }
        while let Some(id) = self.resumed.pop() {
            let Some(peer) = self.links.get_mut(id) else {
                continue;
            };
            peer.stalled = false;
            debug!(conn = id.slot(), "input resumes");
            self.feed(id, Vec::new(), now);
            if let Some(peer) = self.links.get(id)
                && !peer.stalled
            {
                peer.link.room.resume_input();
            }
        }
    }

    /// Resumes the output of a blocked connection.
    fn unblock(&mut self, id: ConnectionId, now: Instant) {
        if let Some(peer) = self.links.get_mut(id)
            && peer.blocked
        {
            peer.blocked = false;
            self.blocked.retain(|b| *b != id);
            debug!(conn = id.slot(), "output resumes");
            self.transmit(id, now);
        }
    }

    /// Resumes every blocked connection whose writer has drained. The writer reports it too
    /// ([`Input::Drained`]), but that report queues behind all other input.
    fn resume_drained(&mut self, now: Instant) {
        if self.blocked.is_empty() {
            return;
        }
        let drained: Vec<ConnectionId> = self
            .blocked
            .iter()
            .copied()
            .filter(|id| self.links.get(*id).is_none_or(|p| p.link.room.drained()))
            .collect();
        for id in drained {
            self.blocked.retain(|b| *b != id);
            self.unblock(id, now);
        }
        self.pump(now);
    }

    /// Acts on every event the core has.
    fn pump(&mut self, now: Instant) {
        while let Some(event) = self.broker.poll_event() {
            match event {
                Event::Transmit(id) => self.transmit(id, now),
                Event::Connected(id) => {
                    self.metrics.connected();
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        let client = self.broker.connection_client_id(id).unwrap_or("");
                        // The user name it was accepted under: a certificate's identity,
                        // where the listener takes that as the user name.
                        let user = self.broker.session(client).and_then(|s| s.username());
                        debug!(
                            conn = id.slot(),
                            client,
                            user,
                            shard = self.shard.as_ref().map(|s| s.index),
                            "client connected"
                        );
                    }
                }
                Event::Resume(id) => self.resumed.push(id),
                Event::Close(id, reason) => self.close(id, reason, now),
            }
        }
    }

    /// Moves a connection's output to its writer, as far as the writer's channel allows.
    fn transmit(&mut self, id: ConnectionId, now: Instant) {
        match self.flush(id, now) {
            Flush::Done => {}
            Flush::Blocked => {
                debug!(conn = id.slot(), "output waits for a slow reader");
                self.blocked.push(id);
            }
            Flush::WriterGone => {
                if self.links.remove(id).is_some() {
                    debug!(conn = id.slot(), "connection lost while writing");
                }
                self.broker.handle_disconnect(id, now);
            }
        }
    }

    fn flush(&mut self, id: ConnectionId, now: Instant) -> Flush {
        let Some(peer) = self.links.get_mut(id) else {
            return Flush::Done;
        };
        if peer.blocked {
            return Flush::Done;
        }
        loop {
            if peer.link.is_closed() {
                return Flush::WriterGone;
            }
            // Room first, bytes second: output never leaves the core without a place to go.
            if !peer.link.room.has_room() {
                // Ask the writer to report room, then look again: it may have written
                // between the two, before it could see the flag.
                peer.link.room.wanted.store(true, Ordering::SeqCst);
                if !peer.link.room.has_room() {
                    peer.blocked = true;
                    return Flush::Blocked;
                }
                peer.link.room.wanted.store(false, Ordering::SeqCst);
            }
            let n = match self.broker.poll_transmit(id, &mut self.buffer, now) {
                Ok(n) => n,
                // A packet larger than any we expected: grow, then carry on.
                Err(error) if grow_for(&mut self.buffer, error) => continue,
                Err(_) => return Flush::Done,
            };
            let Some(bytes) = self.buffer.get(..n).filter(|b| !b.is_empty()) else {
                return Flush::Done;
            };
            peer.link.room.add_queued(n);
            self.metrics.sent(n);
            // Transmitting changes durable state too (a QoS 2 delivery's packet identifier):
            // a chunk that holds an acknowledgement, a PUBREL or a QoS 2 delivery waits for
            // everything polled up to now. QoS 0/1 deliveries need not wait (the core says
            // which is which), so a persistent subscriber is not held to the disk's pace.
            let needs = self.broker.transmit_needs_durability();
            let hold = output_hold(
                needs,
                &mut self.store,
                &mut self.broker,
                self.shard.as_ref(),
            );
            if !hold.is_none() || peer.has_held() {
                if !peer.has_held() {
                    self.holding.push(id);
                }
                peer.hold(hold, bytes.to_vec());
            } else {
                if peer.link.append(bytes, &mut self.wakes).is_err() {
                    return Flush::WriterGone;
                }
            }
        }
    }

    /// The core closes a connection: its pending output becomes the writer's last words.
    fn close(&mut self, id: ConnectionId, reason: fulmar_core::codec::ReasonCode, now: Instant) {
        if let Some(peer) = self.links.remove(id) {
            debug!(
                conn = id.slot(),
                client = self.broker.connection_client_id(id).unwrap_or(""),
                ?reason,
                "closing connection"
            );
            let last = self.drain(id, now);
            let commit = self.store.as_mut().and_then(|store| {
                store.collect(&mut self.broker);
                store.hold_until()
            });
            if commit.is_some() || peer.has_held() {
                let until = peer.holds().fold(
                    Hold {
                        commit: commit.unwrap_or(0),
                        seq: 0,
                    },
                    Hold::max,
                );
                self.parked.push(Parked { peer, last, until });
            } else {
                // The writer writes what its channel holds, then these, then closes: the
                // channel closes when `peer` is dropped here.
                peer.link.finish(last);
            }
        }
        self.broker.handle_disconnect(id, now);
    }

    /// Everything the core has for a connection, ignoring the writer's channel limit (a
    /// closing connection only has a few control packets left).
    fn drain(&mut self, id: ConnectionId, now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let n = match self.broker.poll_transmit(id, &mut self.buffer, now) {
                Ok(n) => n,
                Err(error) if grow_for(&mut self.buffer, error) => continue,
                Err(_) => return out,
            };
            match self.buffer.get(..n) {
                Some(bytes) if !bytes.is_empty() => {
                    self.metrics.sent(n);
                    out.extend_from_slice(bytes);
                }
                _ => return out,
            }
        }
    }
}

/// What output waits for when it `needs` durability: everything the core changed up to
/// now is durable, and (with a store, one shard of several) every other shard took the
/// copies queued up to now. Without a store nothing acknowledged survives a crash anyway,
/// and waiting for the other shards' answer would only add a round trip. Either way what
/// the core changed is collected, to join the next commit.
fn output_hold(
    needs: bool,
    store: &mut Option<Committer>,
    broker: &mut Broker<Growable, EdgeHooks>,
    shard: Option<&ShardState>,
) -> Hold {
    let Some(store) = store else {
        return Hold::default();
    };
    store.collect(broker);
    if !needs {
        return Hold::default();
    }
    let seq = shard.and_then(|shard| {
        let seq = broker.last_seq();
        let pending = shard
            .peers
            .iter()
            .flatten()
            .any(|p| broker.peer_oldest(p.id).is_some_and(|oldest| oldest <= seq));
        pending.then_some(seq)
    });
    Hold {
        commit: store.hold_until().unwrap_or(0),
        seq: seq.unwrap_or(0),
    }
}

/// The commit the actor waits for, if a store is in use.
async fn completion(store: &mut Option<Committer>) -> u64 {
    match store {
        Some(store) => store.completion().await,
        None => std::future::pending().await,
    }
}

/// Grows the transmit buffer to what the core asked for; `false` for any other error
/// (which the core does not return: it drops a packet it can never encode).
fn grow_for(buffer: &mut Vec<u8>, error: fulmar_core::codec::EncodeError) -> bool {
    match error {
        fulmar_core::codec::EncodeError::InsufficientSize { required }
            if required > buffer.len() =>
        {
            buffer.resize(required, 0);
            true
        }
        _ => false,
    }
}
