//! Listeners and the accept loop, in the manner of mini-redis: bind first (so a taken port
//! is an error at startup, not a log line later), accept with a connection limit, spawn one
//! task per connection, and on shutdown stop accepting and wait for every connection task.
//!
//! Before a connection is served it passes the per-address rate limit
//! (`crate::rate_limit`) and the connection limit; both close it at once otherwise.
//!
//! Each listener has an `Acceptor` for its protocol (plain MQTT, TLS, WebSocket, secure
//! WebSocket; see [`crate::transport`]); the accept loop is the same for all of them, and
//! every socket gets TCP_NODELAY before its handshakes, which run in the connection's
//! task.
//!
//! Not yet done: MQTT-SN listeners.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::auth::{self, Auth};
use crate::bridge;
use crate::broker_task;
use crate::config::Config;
use crate::connection::LINGER;
use crate::metrics::{self, Metrics, Refusal};
use crate::rate_limit::{RateLimit, Verdict};
use crate::shards::Shards;
use crate::store::{self, Store};
use crate::transport::{self, Acceptor, Listener, Protocol};

/// How long shutdown waits for connections to flush and close before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after an accept error (out of file descriptors, say) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listener could not be bound (address in use, no permission, no such address).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A listener's TLS or WebSocket settings are not usable (a certificate or key file
    /// missing or invalid, say).
    #[error("cannot set up the listener on {addr}")]
    Listener {
        /// The listener's address.
        addr: SocketAddr,
        /// What is wrong.
        #[source]
        source: transport::Error,
    },
    /// The bound address of a listener could not be read back.
    #[error("cannot read the address of a listener")]
    LocalAddr(#[source] io::Error),
    /// No listener is configured.
    #[error("no listener configured: give at least one --listen address")]
    NoListener,
    /// The password or ACL file cannot be read or has a bad line.
    #[error(transparent)]
    Auth(#[from] auth::Error),
    /// The store could not be opened or restored.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A thread the broker needs could not be started.
    #[error("cannot start a thread")]
    Thread(#[source] io::Error),
    /// The core refused to open a bridge (a connected local client has its name, or a
    /// filter is beyond `limits.max_topic_length` or `limits.max_topic_depth`).
    #[error("cannot open the bridge {name:?}: {reason}")]
    Bridge {
        /// The bridge's name.
        name: String,
        /// The core's reason.
        reason: fulmar_core::codec::ReasonCode,
    },
    /// A TLS bridge's CA certificates cannot be loaded.
    #[error("cannot set up TLS for the bridge {name:?}")]
    BridgeTls {
        /// The bridge's name.
        name: String,
        /// What is wrong.
        #[source]
        source: transport::Error,
    },
}

/// A broker whose listeners are bound, ready to [`Server::run`].
#[derive(Debug)]
pub struct Server {
    config: Config,
    listeners: Vec<Bound>,
    /// The Prometheus endpoint's listener, when configured.
    metrics_listener: Option<(TcpListener, SocketAddr)>,
    metrics: Arc<Metrics>,
    /// One per shard.
    broker: Vec<broker_task::Prepared>,
    /// The bridges upstream, each opened on its shard.
    bridges: Vec<bridge::Bridge>,
}

/// A bound MQTT listener.
#[derive(Debug)]
struct Bound {
    listener: TcpListener,
    /// Where it is bound (the real port where 0 was asked).
    addr: SocketAddr,
    protocol: Protocol,
    acceptor: Arc<Acceptor>,
}

impl Server {
    /// Loads every listener's certificates and keys (and the TLS bridges' CA files and
    /// client certificates) the way [`Server::bind`] does, without binding anything:
    /// `fulmar check-config` reports a certificate that does not parse or a key that does
    /// not match it.
    pub fn check_listeners(config: &Config) -> Result<(), Error> {
        for Listener { addr, protocol } in transport::listeners(&config.listeners) {
            Acceptor::new(&protocol, &config.limits)
                .map_err(|source| Error::Listener { addr, source })?;
        }
        // And the TLS bridges' CA files and client certificates.
        bridge::check_tls(&config.bridges)
            .map_err(|(name, source)| Error::BridgeTls { name, source })
    }

    /// Binds every listener of `config`, opens its store and restores the broker's state
    /// from it. Nothing is accepted until [`Server::run`].
    pub async fn bind(config: Config) -> Result<Self, Error> {
        let wanted = transport::listeners(&config.listeners);
        if wanted.is_empty() {
            return Err(Error::NoListener);
        }
        // Files first: a bad line stops the broker before it listens.
        let auth = Arc::new(Auth::load(&config.auth, config.limits.max_packet_size)?);
        let mut listeners = Vec::with_capacity(wanted.len());
        for Listener { addr, protocol } in wanted {
            // Certificates first: a bad file fails before any port is taken.
            let acceptor = Acceptor::new(&protocol, &config.limits)
                .map_err(|source| Error::Listener { addr, source })?;
            let (listener, addr) = bind(addr).await?;
            listeners.push(Bound {
                listener,
                addr,
                protocol,
                acceptor: Arc::new(acceptor),
            });
        }
        let metrics_listener = match config.metrics.listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let store = if config.persistence.enabled {
            Some(Store::open(&config.store_settings())?)
        } else {
            warn!("persistence is off: sessions and retained messages are lost on exit");
            None
        };
        let shards = config.runtime.shards.resolve().get();
        let mut broker = broker_task::prepare(config.core(), store, auth, shards)?;
        let bridges = bridge::plan(&config.bridges, shards)
            .map_err(|(name, source)| Error::BridgeTls { name, source })?;
        for (shard, prepared) in broker.iter_mut().enumerate() {
            let own: Vec<bridge::Bridge> = bridges
                .iter()
                .filter(|b| b.shard == shard)
                .cloned()
                .collect();
            prepared
                .open_bridges(&own)
                .map_err(|(name, reason)| Error::Bridge {
                    name: name.to_owned(),
                    reason,
                })?;
        }
        Ok(Self {
            config,
            listeners,
            metrics_listener,
            metrics: Arc::new(Metrics::new()),
            broker,
            bridges,
        })
    }

    /// The broker's counters (what `$SYS` and `/metrics` publish).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The addresses the MQTT listeners are bound to (with the real port where 0 was
    /// asked): plain TCP first, then TLS, WebSocket and secure WebSocket.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|bound| bound.addr).collect()
    }

    /// Each MQTT listener's bound address and protocol, in the order of
    /// [`Server::local_addrs`].
    pub fn listeners(&self) -> Vec<Listener> {
        self.listeners
            .iter()
            .map(|bound| Listener {
                addr: bound.addr,
                protocol: bound.protocol.clone(),
            })
            .collect()
    }

    /// Serves until `shutdown` completes, then stops accepting, flushes and closes every
    /// connection (waiting at most a few seconds for them) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let metrics = self.metrics;
        let Some(auth) = self.broker.first().map(broker_task::Prepared::auth) else {
            return Ok(());
        };
        if self.broker.len() > 1 {
            info!(
                shards = self.broker.len(),
                "sessions are spread over broker shards"
            );
        }
        let (broker, actors) = broker_task::Prepared::spawn_all(
            self.broker,
            metrics.clone(),
            Duration::from_secs(u64::from(self.config.metrics.sys_interval_secs)),
        )
        .map_err(Error::Thread)?;
        let park_after = self.config.runtime.park_after_ms;
        if park_after > 0
            && let Err(error) = crate::park::start(Duration::from_millis(park_after.into()))
        {
            warn!(%error, "cannot start the parking lot: idle connections keep their tasks");
        }
        let (stop, stopped) = watch::channel(false);
        // Held by the gate, which every accept loop and every connection holds: `recv`
        // returns `None` once all are gone.
        let (tracker, mut all_done) = mpsc::channel::<()>(1);
        let gate = Arc::new(Gate::new(&self.config.limits, metrics.clone(), tracker));

        // One line, every listener: `127.0.0.1:1883 (mqtt), 127.0.0.1:8080 (ws /mqtt)`.
        let addrs: Vec<String> = self
            .listeners
            .iter()
            .map(|bound| format!("{} ({})", bound.addr, bound.protocol))
            .collect();
        info!(
            "fulmar {} listening on {}",
            env!("CARGO_PKG_VERSION"),
            addrs.join(", ")
        );
        info!("data directory: {}", self.config.data_dir.display());
        auth.log_startup();
        tokio::spawn(auth.clone().reload_on_hangup());
        if let Some((listener, addr)) = self.metrics_listener {
            info!("Prometheus metrics at http://{addr}/metrics");
            tokio::spawn(metrics::http::serve(
                listener,
                addr,
                metrics.clone(),
                stopped.clone(),
            ));
        }
        for bridge in self.bridges {
            if let Some(shard) = broker.all().get(bridge.shard) {
                tokio::spawn(bridge::run(bridge, shard.inbox(), stopped.clone()));
            }
        }
        for bound in self.listeners {
            tokio::spawn(accept_loop(
                bound.listener,
                bound.addr,
                bound.acceptor,
                gate.clone(),
                broker.clone(),
                stopped.clone(),
            ));
        }
        drop(gate);

        shutdown.await;
        info!("shutting down: no new connections; flushing and closing the open ones");
        let _ = stop.send(true);
        for shard in broker.all() {
            shard.shutdown().await;
        }
        drop(broker);
        if tokio::time::timeout(SHUTDOWN_GRACE + LINGER, all_done.recv())
            .await
            .is_err()
        {
            warn!("some connections did not close in time; dropping them");
        }
        for actor in actors {
            let _ = actor.await;
        }
        info!("stopped");
        Ok(())
    }
}

/// What lives exactly as long as a connection (in its task, or parked): it counts against
/// `limits.max_connections` and in the open-connections gauge until dropped, and keeps the
/// gate (and so the tracker shutdown waits on) alive. One pointer: every parked connection
/// carries one.
#[derive(Debug)]
pub(crate) struct Guard(Arc<Gate>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.limit.add_permits(1);
        self.0.metrics.ended();
    }
}

/// What a new connection passes before it is served, shared by every listener: the
/// per-address rate (whichever port the address uses) and the connection limit.
#[derive(Debug)]
struct Gate {
    /// A permit per connection served; each is given back when its [`Guard`] drops.
    limit: Semaphore,
    rate: Option<std::sync::Mutex<RateLimit>>,
    metrics: Arc<Metrics>,
    /// Dropped with the gate, once every accept loop and connection is gone.
    _tracker: mpsc::Sender<()>,
}

impl Gate {
    fn new(
        limits: &crate::config::Limits,
        metrics: Arc<Metrics>,
        tracker: mpsc::Sender<()>,
    ) -> Self {
        Self {
            limit: Semaphore::new(limits.max_connections.get()),
            rate: RateLimit::new(
                limits.connection_rate,
                limits.connection_burst.get(),
                limits.rate_limit_loopback,
            )
            .map(std::sync::Mutex::new),
            metrics,
            _tracker: tracker,
        }
    }

    /// The guard of a connection from `peer` to serve, or `None` if it must be closed now.
    fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<Guard> {
        self.metrics.accepted();
        if let Some(rate) = &self.rate {
            // A poisoned lock only means another accept loop panicked mid-update; the
            // buckets are still usable.
            let verdict = rate
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .check(peer.ip(), std::time::Instant::now());
            match verdict {
                Verdict::Allow => {}
                Verdict::RefuseFirst => {
                    self.metrics.refused(Refusal::Rate);
                    warn!(%peer, "connection rate limit reached for this address \
                                  (limits.connection_rate); closing its new connections");
                    return None;
                }
                Verdict::Refuse => {
                    self.metrics.refused(Refusal::Rate);
                    debug!(%peer, "connection rate limit: closed");
                    return None;
                }
            }
        }
        let Ok(permit) = self.limit.try_acquire() else {
            self.metrics.refused(Refusal::Limit);
            warn!(%peer, "connection limit reached (limits.max_connections); closing the new connection");
            return None;
        };
        // Given back by the guard's `Drop`: a guard is one pointer, a permit two words.
        permit.forget();
        self.metrics.opened();
        Some(Guard(self.clone()))
    }
}

/// Accepts connections on one listener until told to stop.
async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    acceptor: Arc<Acceptor>,
    gate: Arc<Gate>,
    broker: Shards,
    mut stop: watch::Receiver<bool>,
) {
    while let Some((stream, peer)) = accept(&listener, addr, &mut stop).await {
        let Some(guard) = gate.admit(peer) else {
            drop(stream);
            continue;
        };
        configure(&stream, peer);
        // Held by the task, dropped when it ends. No `async` block around the connection:
        // every idle connection costs its task, and a block would hold its captures too.
        tokio::spawn(acceptor.serve(stream, peer, broker.clone()).holding(guard));
    }
    debug!(listener = %addr, "stopped accepting");
}

/// The next connection on `listener` (bound to `addr`), or `None` once `stop` changes.
pub(crate) async fn accept(
    listener: &TcpListener,
    addr: SocketAddr,
    stop: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return None,
        };
        match accepted {
            Ok(accepted) => return Some(accepted),
            Err(error) => {
                // EMFILE and friends: the listener is fine, the process is short of
                // something. Wait a little rather than spin.
                error!(listener = %addr, %error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Binds a listener; returns it with its bound address.
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let local = listener.local_addr().map_err(Error::LocalAddr)?;
    Ok((listener, local))
}

/// Socket options for a served connection.
fn configure(stream: &TcpStream, peer: SocketAddr) {
    // MQTT packets are small and latency matters: Nagle would hold them back (~40 ms at
    // the tail against a delayed ACK).
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
}
