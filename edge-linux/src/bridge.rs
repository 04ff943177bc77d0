//! Bridges to upstream brokers (`[[bridges]]` in `fulmar.toml`): the IO of each bridge's
//! MQTT client connection upstream, with the store and forward of the core's bridge.
//!
//! The MQTT client itself — CONNECT (3.1.1 or 5.0, Clean Session 0), the SUBSCRIBE for the
//! `down` filters, the window of messages in flight, the QoS 1 and 2 exchanges, keep alive,
//! the drops of messages larger than upstream takes — is sans-IO protocol logic in
//! [`fulmar_core::uplink::Uplink`], with its specification references and tests. An
//! `Uplink` works on the broker's state (`&mut Broker`), which only the broker actor of
//! the bridge's shard owns (the shard its name maps to, [`crate::shards::shard_of`]), so
//! the `Uplink` lives in that actor (`broker_task::uplinks`), driven like a connection:
//! bytes in, output through a [`Room`](crate::broker_task::Room), a timer at its
//! `poll_timeout`, and a look for new messages whenever the actor routed some.
//!
//! This module is the rest, one task per bridge ([`run`]): it resolves the upstream
//! address (again at every attempt: a cloud broker's address changes), connects TCP with
//! TCP_NODELAY and, with `tls`, runs the TLS handshake (rustls, upstream's certificate
//! verified against `ca_file` and the host of the address, a client certificate if
//! configured), moves bytes between the socket and the actor, and reconnects after a
//! backoff of [`MIN_BACKOFF`] doubling to [`MAX_BACKOFF`] (back to the minimum after a
//! connection upstream had accepted).
//!
//! Store and forward comes from the core's bridge (`Broker::bridge_open`): a bridge is a
//! persistent session with no network client, so what matches its `up` filters is queued
//! for it while upstream is away — bounded by `limits.max_queued_messages` and
//! `limits.max_queued_bytes` (beyond them a message is dropped, counted on
//! `$SYS/broker/bridge/<name>/dropped`), stored with the other sessions when persistence
//! is on — and forwarded in order once connected. While connected, a full queue holds
//! local publishers back instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

use crate::broker_task::{Input, Link, Output, Room, Uplinked, buffers};
use crate::config;
use crate::transport;

/// First wait before reconnecting; it doubles after each failure up to [`MAX_BACKOFF`].
pub(crate) const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between connection attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest wait for the TCP connection (the CONNACK's is the core's).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait, once the broker stops, for the actor's last words upstream (DISCONNECT).
const STOP_LINGER: Duration = Duration::from_secs(1);
/// Bytes read from upstream at once.
const READ_BUF: usize = 16 * 1024;

/// One configured bridge, placed on its shard.
#[derive(Clone)]
pub(crate) struct Bridge {
    /// The client's configuration. It lives as long as the process: the core's `Uplink`
    /// borrows it and lives in an actor task, so it is leaked once at start (a few hundred
    /// bytes per bridge).
    pub(crate) config: &'static fulmar_core::uplink::Config<'static>,
    /// `host:port`, resolved at each connection.
    pub(crate) address: &'static str,
    /// The shard whose actor owns the bridge's session.
    pub(crate) shard: usize,
    /// Its place among that shard's bridges.
    pub(crate) slot: usize,
    /// Set by the actor when upstream accepted a connection (CONNACK), taken by [`run`]
    /// when the connection ends, so the backoff starts over.
    pub(crate) accepted: Arc<AtomicBool>,
    /// With `tls`: the TLS client and the name upstream's certificate must have.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("name", &self.config.client_id)
            .field("address", &self.address)
            .field("shard", &self.shard)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The configured bridges, each on the shard its name maps to among `shards`, with its
/// TLS client loaded (CA certificates that do not load fail here, with the bridge's name).
pub(crate) fn plan(
    bridges: &[config::Bridge],
    shards: usize,
) -> Result<Vec<Bridge>, (String, transport::Error)> {
    let mut per_shard = vec![0usize; shards];
    bridges
        .iter()
        .map(|bridge| {
            let tls = tls_client(bridge).map_err(|e| (bridge.name.clone(), e))?;
            let owned: &'static config::Bridge = Box::leak(Box::new(bridge.clone()));
            let shard = crate::shards::shard_of(&owned.name, shards);
            let slot = per_shard.get(shard).copied().unwrap_or(0);
            if let Some(n) = per_shard.get_mut(shard) {
                *n += 1;
            }
            Ok(Bridge {
                config: Box::leak(Box::new(owned.uplink())),
                address: &owned.address,
                shard,
                slot,
                accepted: Arc::new(AtomicBool::new(false)),
                tls,
            })
        })
        .collect()
}

/// Loads every TLS bridge's CA file and client certificate as [`plan`] does (for
/// `fulmar check-config`); fails with the first bridge's name whose files do not load.
pub(crate) fn check_tls(bridges: &[config::Bridge]) -> Result<(), (String, transport::Error)> {
    for bridge in bridges {
        tls_client(bridge).map_err(|e| (bridge.name.clone(), e))?;
    }
    Ok(())
}

/// A TLS bridge's client: rustls with the `ring` provider (as the listeners), verifying
/// upstream's certificate against the bridge's CA file and the host of its address, and
/// presenting the bridge's client certificate if it has one.
fn tls_client(
    bridge: &config::Bridge,
) -> Result<Option<(TlsConnector, ServerName<'static>)>, transport::Error> {
    if !bridge.tls {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    for ca in transport::tls::certificates(&bridge.ca_file(), "CA certificates")? {
        roots.add(ca)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let client = match (&bridge.cert, &bridge.key) {
        (Some(cert), Some(key)) => {
            let chain = transport::tls::certificates(cert, "client certificate chain")?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|source| transport::Error::Pem {
                    what: "private key",
                    path: key.clone(),
                    source,
                })?;
            builder.with_client_auth_cert(chain, key)?
        }
        // Both or neither: checked with the configuration.
        _ => builder.with_no_client_auth(),
    };
    let host = fulmar_core::uplink::split_host_port(&bridge.address).map_or("", |(host, _)| host);
    // Checked with the configuration.
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| rustls::Error::General(format!("{host:?} is not a server name")))?;
    Ok(Some((TlsConnector::from(Arc::new(client)), name)))
}

/// Connects `bridge` upstream and reconnects it until `stop` changes: the connection's
/// bytes go to the bridge's actor through `inbox`, and what the actor has for upstream
/// comes back through the connection's [`Room`].
pub(crate) async fn run(
    bridge: Bridge,
    inbox: mpsc::Sender<Input>,
    mut stop: watch::Receiver<bool>,
) {
    let name = bridge.config.client_id;
    let address = bridge.address;
    let slot = bridge.slot;
    let mut backoff = MIN_BACKOFF;
    // Failed attempts in a row: only the first of an outage is worth a warning.
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            attempt = connect(address, bridge.tls.as_ref()) => attempt,
            _ = stop.changed() => return,
        };
        match attempt {
            Err(error) => {
                if failures == 0 {
                    warn!(bridge = name, address, %error, "bridge: cannot connect upstream; retrying");
                } else {
                    debug!(bridge = name, address, %error, "bridge: cannot connect upstream");
                }
                failures = failures.saturating_add(1);
                // The actor shows the drop count at each attempt.
                if inbox
                    .send(Input::Uplink(slot, Uplinked::Unreachable))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(stream) => {
                let room = Arc::new(Room::default());
                let link = Link { room: room.clone() };
                let opened = Input::Uplink(slot, Uplinked::Connected(link));
                if inbox.send(opened).await.is_err() {
                    return;
                }
                let ended = serve(stream, &room, &inbox, slot, &mut stop).await;
                // The actor's next output for this connection fails; it lets it go.
                room.writer_gone();
                let Ended::Closed(error) = ended else {
                    return;
                };
                let _ = inbox
                    .send(Input::Uplink(slot, Uplinked::Closed(error)))
                    .await;
                if bridge.accepted.swap(false, Ordering::SeqCst) {
                    backoff = MIN_BACKOFF;
                    failures = 0;
                } else {
                    // TCP up, but no session: refused, or no CONNACK (the actor said why).
                    failures = failures.saturating_add(1);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A byte stream upstream: TCP, or TLS over it.
trait Upstream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Upstream for S {}

/// A connection to `address` (each address it resolves to, in turn) with TCP_NODELAY
/// (MQTT packets are small and latency matters), and the TLS handshake with `tls`, all
/// within [`CONNECT_TIMEOUT`].
async fn connect(
    address: &str,
    tls: Option<&(TlsConnector, ServerName<'static>)>,
) -> std::io::Result<Box<dyn Upstream>> {
    let connecting = async {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(match tls {
            None => Box::new(stream) as Box<dyn Upstream>,
            Some((connector, name)) => Box::new(connector.connect(name.clone(), stream).await?),
        })
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// How a connection upstream ended.
enum Ended {
    /// The broker is stopping.
    Stop,
    /// Upstream closed it, it failed (why, if the socket said), or the actor let it go.
    Closed(Option<std::io::Error>),
}

/// Moves bytes both ways until the connection ends (upstream closed it, it failed, or the
/// actor let it go, whose last output is written first) or `stop` changes.
async fn serve(
    stream: Box<dyn Upstream>,
    room: &Room,
    inbox: &mpsc::Sender<Input>,
    slot: usize,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let read = async {
        let mut buf = vec![0; READ_BUF];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) => return None,
                Ok(n) => n,
                // A TLS alert (a client certificate upstream refused) shows here.
                Err(error) => return Some(error),
            };
            let bytes = buf.get(..n).unwrap_or_default().to_vec();
            // Waits for room in the actor's inbox: TCP then holds upstream back.
            if inbox
                .send(Input::Uplink(slot, Uplinked::Bytes(bytes)))
                .await
                .is_err()
            {
                return None;
            }
        }
    };
    let write = async {
        loop {
            let (bytes, last) = match std::future::poll_fn(|cx| room.poll_next_output(cx)).await {
                Output::Bytes(bytes) => (bytes, false),
                Output::Last(bytes) => (bytes, true),
            };
            if let Err(error) = writer.write_all(&bytes).await {
                return Some(error);
            }
            if room.written(bytes.len()) {
                let _ = inbox.send(Input::Uplink(slot, Uplinked::Drained)).await;
            }
            buffers::give(bytes);
            if last {
                let _ = writer.shutdown().await;
                return None;
            }
        }
    };
    tokio::pin!(write);
    tokio::select! {
        error = read => Ended::Closed(error),
        error = &mut write => Ended::Closed(error),
        _ = stop.changed() => {
            // The actor, stopping too, has the client say DISCONNECT and lets the
            // connection go: its last words are written before the socket closes.
            let _ = tokio::time::timeout(STOP_LINGER, write).await;
            Ended::Stop
        }
    }
}
