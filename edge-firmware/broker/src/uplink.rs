//! The bridge uplink's IO: forwards configured topics to an upstream MQTT broker (a
//! `fulmar` gateway, Mosquitto, a cloud broker) and brings topics down from it, over
//! embassy-net TCP, with the store and forward of the core's bridge.
//!
//! The MQTT client itself — CONNECT (3.1.1 or 5.0, Clean Session 0), CONNACK, the SUBSCRIBE
//! for the `down` filters, the window of messages in flight, the QoS 1 and 2 exchanges and
//! the PUBREL sent again after a reconnection, the drops of messages larger than upstream
//! takes (its Maximum Packet Size, `max-packet`, or [`CLOSES_BEFORE_DROP`] closes in a row
//! on the same message), keep-alive pings, messages from upstream acknowledged once the
//! broker took them, the `$SYS/broker/bridge/<client-id>/dropped` count — is sans-IO
//! protocol logic in `fulmar_core::uplink` ([`Uplink`]), with its specification references
//! and tests, and so is its configuration text ([`Config::parse`], documented there). This
//! module only does what needs the board: it resolves the upstream host (DNS, at every
//! attempt), connects TCP, moves bytes between the socket and [`Uplink`] (a small inbox,
//! a shared large buffer for a large packet from upstream), arms a timer at
//! [`Uplink::poll_timeout`], reconnects with a backoff, and logs through defmt.
//!
//! Store and forward comes from the core's bridge (`Broker::bridge_open`): a bridge is a
//! persistent session with no network client, so every message matching an `up` filter is
//! queued for it while the uplink is down — bounded by the broker's per-session queue
//! limits (beyond them the newest is dropped, counted), and persisted to flash with the
//! other sessions (QoS 1 and 2) when the board persists — and forwarded in order once
//! connected. While connected, a full queue holds local publishers back instead
//! (`Broker::bridge_online`). What the bridge dropped is shown at each connection attempt:
//! a warning with the running count, and the count retained on
//! `$SYS/broker/bridge/<client-id>/dropped` for local subscribers.

use embassy_futures::select::{Either3, select3};
use embassy_net::dns::DnsQueryType;
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpEndpoint, Stack};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{Duration, Instant, Timer, with_timeout};
pub use fulmar_core::uplink::{CLOSES_BEFORE_DROP, Config, ConfigError, MAX_FILTERS};
use fulmar_core::uplink::{Close, Event, PUBLISH_MARGIN, Uplink};

use crate::capacity::{PACKET, SOCKET_RX, UPLINK_TX};
use crate::inbox::{self, Inbox};
use crate::server::{State, dispatch, now, with};

// The client takes a message from the bridge only with this much room free (an empty
// ring has it all): less, and nothing would ever be forwarded.
const _: () = assert!(
    UPLINK_TX >= PACKET + PUBLISH_MARGIN,
    "uplink transmit ring too small"
);

/// First wait before reconnecting; it doubles after each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Longest wait for the TCP connection (the CONNACK's is the core's).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the DNS answer: a server that answers at all does within a second or
/// two (smoltcp asks again after 1 s, then 2 s), and the backoff retries soon after.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the uplink when a board has a configuration: `$text` is an
/// `Option<&'static str>` (a file's contents, `option_env!("FULMAR_UPLINK")`); `None`
/// leaves the uplink off, a text [`Config::parse`] refuses is logged. Defines the uplink's
/// embassy task (tasks cannot be generic) and spawns it on `$spawner` with the network
/// `$stack` (from [`crate::spawn_network`]), after persistence has restored the broker.
#[macro_export]
macro_rules! spawn_uplink {
    ($spawner:expr, $stack:expr, $text:expr) => {{
        #[::embassy_executor::task]
        async fn uplink_task(
            stack: ::embassy_net::Stack<'static>,
            config: $crate::uplink::Config<'static>,
        ) -> ! {
            $crate::uplink::run(stack, config).await
        }

        let text: ::core::option::Option<&'static str> = $text;
        match text.map($crate::uplink::Config::parse) {
            None => ::defmt::info!("uplink: not configured"),
            Some(Ok(config)) => {
                $spawner.spawn(uplink_task($stack, config).expect("one uplink task"))
            }
            Some(Err(e)) => ::defmt::error!("uplink: configuration refused: {}", e),
        }
    }};
}

/// Wakes the uplink: the broker processed input, so the bridge may have messages.
static WAKE: Signal<CriticalSectionRawMutex, ()> = Signal::new();

/// Tells [`run`] the broker changed (called from the server's event dispatch).
pub(crate) fn changed() {
    WAKE.signal(());
}

/// Runs `f` on the broker and passes on what changed (`server::dispatch`), except to the
/// uplink itself: it looks at the broker again before it waits anyway, and a wake-up by
/// its own calls would have it loop without ever waiting.
fn call<R>(f: impl FnOnce(&mut State) -> R) -> R {
    with(|state| {
        let result = f(state);
        dispatch(state);
        WAKE.reset();
        result
    })
}

/// Why a connection upstream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// TCP failed or was closed.
    Socket,
    /// The upstream host name did not resolve (logged with the name).
    Unresolved,
    /// The client ended it (refused, timed out, bad input from upstream...).
    Client(Close),
    /// A packet larger than the transmit ring (a CONNECT with very long credentials).
    TooLarge,
}

impl defmt::Format for End {
    fn format(&self, f: defmt::Formatter<'_>) {
        match self {
            Self::Socket => defmt::write!(f, "Socket"),
            Self::Unresolved => defmt::write!(f, "Unresolved"),
            // The client's reason as it is: `Refused(BadUserNameOrPassword)`.
            Self::Client(close) => defmt::write!(f, "{}", close),
            Self::TooLarge => defmt::write!(f, "TooLarge"),
        }
    }
}

/// Opens the bridge (after persistence has restored the broker, so its backlog is
/// there) and runs the uplink forever: connect, forward, reconnect with backoff. Run it
/// in its own task once the network stack is up.
pub async fn run(stack: Stack<'static>, config: Config<'static>) -> ! {
    let opened = call(|state| Uplink::open(&mut state.broker, &config, now()));
    let mut uplink = match opened {
        Ok(uplink) => uplink,
        Err(e) => {
            defmt::error!("uplink: cannot open the bridge: {}", e);
            core::future::pending().await
        }
    };
    let config = uplink.config();
    defmt::info!(
        "uplink: {=str} to {=str}:{=u16}, {} filters up, {} down",
        config.client_id,
        config.host,
        config.port,
        config.up.len(),
        config.down.len()
    );
    let mut rx_ring = [0u8; SOCKET_RX];
    let mut tx_ring = [0u8; UPLINK_TX];
    // Small packets (acknowledgements) in its own bytes, a large one from upstream in a
    // buffer shared with the socket tasks (inbox.rs).
    let mut inbox = Inbox::new();
    let mut backoff = MIN_BACKOFF;
    loop {
        report_drops(&mut uplink);
        stack.wait_config_up().await;
        let mut socket = TcpSocket::new(stack, &mut rx_ring, &mut tx_ring);
        socket.set_nagle_enabled(false);
        // Resolved at every attempt: a cloud broker's address changes, and a name that
        // does not resolve now (no network yet, a DNS outage) may later.
        let end = match resolve(stack, uplink.config()).await {
            Err(end) => end,
            Ok(upstream) => match with_timeout(CONNECT_TIMEOUT, socket.connect(upstream)).await {
                Ok(Ok(())) => serve(&mut socket, &mut inbox, &mut uplink, upstream).await,
                _ => End::Socket,
            },
        };
        inbox.clear();
        // Whatever upstream did not acknowledge goes out again, first, next time; until
        // then the queue is the bounded store-and-forward backlog.
        let closed = call(|state| uplink.on_closed(&mut state.broker));
        if closed.dropped_refused {
            defmt::warn!(
                "uplink: upstream closed the connection {=u8} times with the same message \
                 unacknowledged: dropped as too large for upstream (set max-packet)",
                CLOSES_BEFORE_DROP
            );
        }
        socket.abort();
        let _ = with_timeout(Duration::from_millis(200), socket.flush()).await;
        drop(socket);
        if closed.was_up {
            defmt::warn!("uplink: connection lost: {}", end);
            backoff = MIN_BACKOFF;
        } else if !matches!(end, End::Socket | End::Unresolved) {
            // Refused, or no CONNACK: worth a line each attempt. An unreachable upstream
            // (End::Socket) is not, during an outage; a name that did not resolve was
            // logged with the name.
            defmt::warn!("uplink: connection failed: {}", end);
        }
        report_drops(&mut uplink);
        Timer::after(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Shows the user how many messages the bridge dropped, when that changed since the last
/// time (at boot: the retained count from before a restart is replaced): a warning with
/// the running count, and (by the core) the count retained on `$SYS`. Called at each
/// connection attempt, so during an outage at most once per backoff period (with
/// persistence, each is a flash write), and after a drop of a message too large.
fn report_drops(uplink: &mut Uplink<'_>) {
    let dropped = call(|state| uplink.poll_dropped(&mut state.broker, now()));
    if let Some(dropped) = dropped.filter(|n| *n > 0) {
        defmt::warn!(
            "uplink: {=u32} messages dropped since boot (backlog full while upstream was \
             away, or too large for upstream)",
            dropped
        );
    }
}

/// The upstream broker's address: its host looked up (an IPv4 address is taken as it
/// is, a name asks the network's DNS server, within [`RESOLVE_TIMEOUT`]).
async fn resolve(stack: Stack<'static>, config: &Config<'_>) -> Result<IpEndpoint, End> {
    let found = with_timeout(
        RESOLVE_TIMEOUT,
        stack.dns_query(config.host, DnsQueryType::A),
    )
    .await;
    match found.map(|r| r.map(|addresses| addresses.first().copied())) {
        Ok(Ok(Some(address))) => Ok(IpEndpoint::new(address, config.port)),
        Ok(Err(e)) => {
            defmt::warn!("uplink: cannot resolve {=str}: {}", config.host, e);
            Err(End::Unresolved)
        }
        _ => {
            defmt::warn!("uplink: cannot resolve {=str}: no answer", config.host);
            Err(End::Unresolved)
        }
    }
}

/// What the uplink waited for besides its wake signal and timer.
enum Input {
    /// Bytes read into the inbox, 0 at the end of the stream.
    Read(Result<usize, embassy_net::tcp::Error>),
    /// A large buffer for a packet that does not fit the small inbox.
    Large(inbox::Large),
}

/// One connection upstream, TCP connected: runs the client until the connection ends.
async fn serve(
    socket: &mut TcpSocket<'_>,
    inbox: &mut Inbox,
    uplink: &mut Uplink<'_>,
    upstream: IpEndpoint,
) -> End {
    uplink.on_connected(now());
    loop {
        if let Err(end) = transmit(socket, uplink).await {
            return end;
        }
        report_events(uplink, upstream);
        let timer = async {
            match uplink.poll_timeout() {
                Some(at) => Timer::at(Instant::from_millis(at.as_millis())).await,
                None => core::future::pending().await,
            }
        };
        // A packet that does not fit the small inbox waits for a shared large buffer
        // (not reading meanwhile: TCP holds upstream back).
        let need_large = inbox.is_full() && !inbox.is_large();
        let input = async {
            if need_large {
                Input::Large(inbox::borrow().await)
            } else {
                Input::Read(socket.read(inbox.room()).await)
            }
        };
        let woke = select3(input, WAKE.wait(), timer).await;
        let handled = match woke {
            Either3::First(Input::Read(Ok(0) | Err(_))) => Err(End::Socket),
            Either3::First(Input::Read(Ok(n))) => {
                inbox.add(n);
                receive(socket, inbox, uplink).await
            }
            Either3::First(Input::Large(large)) => {
                inbox.use_large(large);
                Ok(())
            }
            Either3::Second(()) => Ok(()),
            Either3::Third(()) => uplink.handle_timeout(now()).map_err(End::Client),
        };
        if let Err(end) = handled {
            return end;
        }
    }
}

/// Hands the inbox's whole packets to the client, writing its answers between batches.
async fn receive(
    socket: &mut TcpSocket<'_>,
    inbox: &mut Inbox,
    uplink: &mut Uplink<'_>,
) -> Result<(), End> {
    loop {
        let handled = call(|state| uplink.handle_bytes(&mut state.broker, inbox.bytes(), now()));
        let used = handled.map_err(End::Client)?;
        inbox.consume(used);
        if used == 0 || inbox.is_empty() {
            return Ok(());
        }
        // It stopped for its acknowledgements to be written.
        transmit(socket, uplink).await?;
    }
}

/// Writes what the client has for upstream into the transmit ring, waiting for the ring
/// to drain when its free room is too small for the next packet.
async fn transmit(socket: &mut TcpSocket<'_>, uplink: &mut Uplink<'_>) -> Result<(), End> {
    loop {
        let wrote = socket
            .write_with(|buf| {
                let wrote = call(|state| uplink.poll_transmit(&mut state.broker, buf, now()));
                (wrote.unwrap_or(0), wrote)
            })
            .await
            .map_err(|_| End::Socket)?;
        match wrote {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            // An empty ring starts over at its beginning, with room for any packet.
            Err(_) if socket.send_queue() > 0 => socket.flush().await.map_err(|_| End::Socket)?,
            Err(_) => {
                defmt::warn!("uplink: packet larger than the transmit ring");
                uplink.abort();
                return Err(End::TooLarge);
            }
        }
    }
}

/// Logs what the client reported.
fn report_events(uplink: &mut Uplink<'_>, upstream: IpEndpoint) {
    while let Some(event) = uplink.poll_event() {
        match event {
            Event::Connected { .. } => defmt::info!("uplink: connected to {}", upstream),
            Event::SubscriptionRefused(code) => {
                defmt::warn!("uplink: upstream refused a subscription: {}", code)
            }
            Event::MessagesRefused { count, reason } => {
                defmt::warn!(
                    "uplink: upstream refused {=u32} messages: {}",
                    count,
                    reason
                )
            }
            Event::Oversized { count, max_packet } => {
                defmt::warn!(
                    "uplink: {=u32} messages larger than upstream's maximum packet size \
                     ({=u32} bytes), dropped",
                    count,
                    max_packet
                );
                report_drops(uplink);
            }
            _ => {}
        }
    }
}
