//! The broker in a `static`, and the loop each socket task runs.
//!
//! One [`State`] holds the broker and which socket slot serves which connection; every
//! access takes it for one synchronous call (a critical section, microseconds), never
//! across an `.await`. A board spawns [`SOCKETS`] tasks running [`serve_slot`], one per
//! TCP socket: each accepts a client, feeds what it sends to `Broker::handle_bytes`, and
//! writes what `Broker::poll_transmit_pieces` has for it (a PUBLISH in pieces, as the
//! transmit ring has room). Output for other connections (a
//! PUBLISH routed to them, a will, a keep-alive expiry) is announced by the broker's
//! events; whichever task drains them wakes the slot concerned through its [`Signal`].
//! Timers (keep-alive, connect timeout, message expiry) come from `Broker::poll_timeout`
//! and an `embassy-time` timer in every waiting task.

use core::cell::RefCell;

use defmt::{info, warn};
use embassy_futures::select::{Either3, select3};
use embassy_net::Stack;
use embassy_net::tcp::TcpSocket;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{Duration, Timer, with_timeout};
use fulmar_core::broker::{AllowAll, Broker, ConnectionId, Event};

use crate::capacity::{MQTT_PORT, PACKET, SOCKET_RX, SOCKET_TX, SOCKETS, Storage, config};
use crate::inbox::{self, Inbox};

/// The broker and the slot bookkeeping, behind one lock.
pub(crate) struct State {
    pub(crate) broker: Broker<Storage>,
    /// The connection each socket slot serves.
    owners: [Option<ConnectionId>; SOCKETS],
    /// The broker asked to close the slot's connection (`Event::Close`).
    closing: [bool; SOCKETS],
}

/// All zero bytes at build time (`Broker::unconfigured`): in `.bss`, never copied.
static STATE: Mutex<CriticalSectionRawMutex, RefCell<State>> = Mutex::new(RefCell::new(State {
    broker: Broker::unconfigured(AllowAll),
    owners: [None; SOCKETS],
    closing: [false; SOCKETS],
}));

/// Longest a connection's pending output may take to enter its socket.
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(30);

/// Wakes a slot's task: the broker has output for its connection, or wants it closed.
static WAKE: [Signal<CriticalSectionRawMutex, ()>; SOCKETS] = [const { Signal::new() }; SOCKETS];

/// Configures the broker; call once, before spawning the socket tasks. `seed` keys its
/// hash indexes: take it from the board's random source (or its unique id). `persistent`:
/// the board runs [`crate::persist::run`], so the broker tracks durable changes (build
/// with this crate's `persistence` feature, which makes room for them).
pub fn start(seed: u64, persistent: bool) {
    if persistent && !cfg!(feature = "persistence") {
        warn!("persistence without the `persistence` feature: every change rewrites all");
    }
    let config = fulmar_core::broker::Config {
        persistence: persistent,
        ..config()
    };
    let configured = with(|state| state.broker.configure(config, seed));
    inbox::init();
    info!(
        "fulmar broker: {} clients, {} sockets, {} B packets, port {}, configured: {}",
        crate::capacity::CLIENTS,
        SOCKETS,
        PACKET,
        MQTT_PORT,
        configured
    );
}

pub(crate) fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.lock(|state| f(&mut state.borrow_mut()))
}

/// The core's clock: milliseconds of `embassy-time`.
pub(crate) fn now() -> fulmar_core::time::Instant {
    fulmar_core::time::Instant::from_millis(embassy_time::Instant::now().as_millis())
}

/// Drains the broker's events: marks connections to close and wakes their slots; and
/// lets the persistence task look for durable changes (and the uplink for messages to
/// forward). Call after every broker call that may have changed something.
pub(crate) fn dispatch(state: &mut State) {
    crate::persist::changed();
    #[cfg(feature = "uplink")]
    crate::uplink::changed();
    while let Some(event) = state.broker.poll_event() {
        let (conn, close) = match event {
            // Output to write, or (Resume) a publisher held back by a full subscriber
            // queue may go on.
            Event::Transmit(conn) | Event::Resume(conn) => (conn, false),
            Event::Connected(conn) => {
                if let Some(id) = state.broker.connection_client_id(conn) {
                    info!("client {=str} connected", id);
                }
                continue;
            }
            Event::Close(conn, reason) => {
                info!("closing {}: {}", conn, reason);
                (conn, true)
            }
        };
        if let Some(slot) = state.owners.iter().position(|o| *o == Some(conn)) {
            state.closing[slot] |= close;
            WAKE[slot].signal(());
        }
    }
}

/// Serves MQTT clients on socket slot `slot` (0 to [`SOCKETS`] − 1), one after another,
/// forever. Run it in one task per slot.
pub async fn serve_slot(stack: Stack<'static>, slot: usize) -> ! {
    let mut rx_ring = [0u8; SOCKET_RX];
    let mut tx_ring = [0u8; SOCKET_TX];
    // Bytes of a packet not complete yet: the core consumes whole packets only.
    let mut inbox = Inbox::new();
    loop {
        let mut socket = TcpSocket::new(stack, &mut rx_ring, &mut tx_ring);
        if let Err(e) = socket.accept(MQTT_PORT).await {
            warn!("slot {}: accept failed: {}", slot, e);
            continue;
        }
        socket.set_nagle_enabled(false);
        let accepted = with(|state| {
            let conn = state.broker.handle_connect(now()).ok()?;
            state.owners[slot] = Some(conn);
            state.closing[slot] = false;
            Some(conn)
        });
        let Some(conn) = accepted else {
            // Cannot happen with SOCKETS == max_connections; reset rather than hang.
            warn!("slot {}: no broker connection left", slot);
            close(&mut socket, false).await;
            continue;
        };
        info!("slot {}: {} from {}", slot, conn, socket.remote_endpoint());
        WAKE[slot].reset();
        let graceful = run(&mut socket, slot, conn, &mut inbox).await;
        inbox.clear();
        with(|state| {
            // An abrupt end (no DISCONNECT) publishes the client's will [MQTT-3.1.2-8].
            state.broker.handle_disconnect(conn, now());
            state.owners[slot] = None;
            dispatch(state);
        });
        close(&mut socket, graceful).await;
        info!("slot {}: {} closed", slot, conn);
    }
}

/// Runs one connection until the broker closes it (`true`: close gracefully) or the
/// client goes away (`false`).
async fn run(
    socket: &mut TcpSocket<'_>,
    slot: usize,
    conn: ConnectionId,
    inbox: &mut Inbox,
) -> bool {
    // The broker held this connection's input back when it was last fed.
    let mut held = false;
    loop {
        // A client that stops reading cannot hold its slot: its output must drain within
        // OUTPUT_TIMEOUT (the broker's queues are a few KB), or it is cut off.
        if !matches!(
            with_timeout(OUTPUT_TIMEOUT, write_output(socket, conn)).await,
            Ok(Ok(()))
        ) {
            return false;
        }
        let (closing, stalled, deadline) = with(|state| {
            (
                state.closing[slot],
                state.broker.is_stalled(conn),
                state.broker.poll_timeout(),
            )
        });
        if closing {
            return true;
        }
        // Held back (a subscriber's queue was full, or its own answers were waiting to be
        // written: `Config::max_pending_controls`) and free again: the held bytes go in.
        if held && !stalled {
            held = false;
            if !inbox.is_empty() {
                match feed(conn, inbox) {
                    Some(stalled) => held = stalled,
                    None => return false,
                }
                continue;
            }
        }
        let deadline = deadline.map_or_else(
            || embassy_time::Instant::now() + Duration::from_secs(3600),
            |at| embassy_time::Instant::from_millis(at.as_millis()),
        );
        // A large buffer held by a packet that does not complete goes back (inbox.rs).
        let hold = inbox.large_deadline().filter(|_| !stalled);
        let deadline = hold.map_or(deadline, |hold| hold.min(deadline));
        // A connection stalled by backpressure (a subscriber's queue is full) is not read:
        // TCP slows its publisher down until the broker resumes it. Neither is one whose
        // packet does not fit its inbox, until a large buffer is free.
        let need_large = !stalled && !inbox.is_large() && inbox.is_full();
        let read = async {
            if stalled {
                core::future::pending().await
            } else if need_large {
                Input::Large(inbox::borrow().await)
            } else {
                Input::Read(socket.read(inbox.room()).await)
            }
        };
        match select3(read, WAKE[slot].wait(), Timer::at(deadline)).await {
            // End of stream or reset.
            Either3::First(Input::Read(Ok(0) | Err(_))) => return false,
            Either3::First(Input::Read(Ok(n))) => {
                inbox.add(n);
                match feed(conn, inbox) {
                    Some(stalled) => held = stalled,
                    None => {
                        warn!("slot {}: receive buffer full without a whole packet", slot);
                        return false;
                    }
                }
            }
            Either3::First(Input::Large(large)) => inbox.use_large(large),
            // Output to write, a resumption (handled at the top), or closing.
            Either3::Second(()) => {}
            Either3::Third(()) if hold.is_some_and(|h| embassy_time::Instant::now() >= h) => {
                warn!("slot {}: a large packet did not complete in time", slot);
                return false;
            }
            Either3::Third(()) => with(|state| {
                state.broker.handle_timeout(now());
                dispatch(state);
            }),
        }
    }
}

/// What a socket task waited for besides its wake signal and timer.
enum Input {
    /// Bytes read into the inbox, 0 at the end of the stream.
    Read(Result<usize, embassy_net::tcp::Error>),
    /// A large buffer for a packet that does not fit the inbox.
    Large(inbox::Large),
}

/// Passes the bytes held in `inbox` to the broker and keeps what it did not consume (an
/// incomplete packet, or one held back by backpressure); returns whether the broker holds
/// the connection's input back. `None` if a large buffer is full, nothing was consumed
/// and nothing is held back: the core refuses packets over PACKET bytes before they fill
/// it, so that would be a connection that cannot make progress. (A full small inbox asks
/// for a large buffer instead.)
fn feed(conn: ConnectionId, inbox: &mut Inbox) -> Option<bool> {
    let (used, stalled) = with(|state| {
        let used = state.broker.handle_bytes(conn, inbox.bytes(), now());
        dispatch(state);
        (used, state.broker.is_stalled(conn))
    });
    inbox.consume(used);
    (!(inbox.is_large() && inbox.is_full()) || used > 0 || stalled).then_some(stalled)
}

/// Writes everything the broker has for `conn` into the socket, straight into its
/// transmit ring, in pieces as room appears. Fails when the socket is gone.
async fn write_output(socket: &mut TcpSocket<'_>, conn: ConnectionId) -> Result<(), ()> {
    loop {
        let polled = socket
            .write_with(|buf| {
                match with(|state| state.broker.poll_transmit_pieces(conn, buf, now())) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                }
            })
            .await
            .map_err(|_| ())?;
        match polled {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            // The next control packet is larger than the ring's free contiguous room: once
            // the ring has drained it starts over at its beginning, with room for it.
            Err(_) if socket.send_queue() > 0 => socket.flush().await.map_err(|_| ())?,
            Err(e) => {
                warn!("control packet larger than the transmit ring: {}", e);
                return Err(());
            }
        }
    }
}

/// Closes the socket: FIN after the last bytes (`graceful`) or reset, within bounded
/// time, so the slot listens again soon.
async fn close(socket: &mut TcpSocket<'_>, graceful: bool) {
    if graceful {
        socket.close();
        let _ = with_timeout(Duration::from_secs(2), socket.flush()).await;
    }
    socket.abort();
    let _ = with_timeout(Duration::from_millis(200), socket.flush()).await;
}

/// A static IPv4 configuration: `address`/24 behind `gateway`, with `dns` the DNS server
/// (used only by the uplink, to look its `upstream` host name up).
pub fn static_ipv4(
    address: embassy_net::Ipv4Address,
    gateway: embassy_net::Ipv4Address,
    dns: Option<embassy_net::Ipv4Address>,
) -> embassy_net::Config {
    let mut dns_servers = heapless::Vec::new();
    if let Some(server) = dns {
        // Cannot fail: room for 3.
        let _ = dns_servers.push(server);
    }
    embassy_net::Config::ipv4_static(embassy_net::StaticConfigV4 {
        address: embassy_net::Ipv4Cidr::new(address, 24),
        gateway: Some(gateway),
        dns_servers,
    })
}

/// Starts a board's network and broker: an embassy-net stack on `$device` (a value of the
/// `embassy-net-driver` type `$driver`) configured by `$config` (an `embassy_net::Config`,
/// such as [`static_ipv4`]), its runner task, and one [`serve_slot`] task per socket.
/// Expands in the board's `main` (after [`start`]), since embassy tasks cannot be generic;
/// the board depends on `embassy-executor`, `embassy-net` and `static_cell`. A board whose
/// configuration takes sockets of its own (DHCP: one) adds `, extra_sockets = N`: each
/// socket slot costs a few hundred bytes of RAM, so none is reserved by default.
#[macro_export]
macro_rules! spawn_network {
    (
        $spawner:expr, $driver:ty, $device:expr, $config:expr, $seed:expr
        $(, extra_sockets = $extra:expr)? $(,)?
    ) => {{
        use $crate::capacity::SOCKETS;

        #[::embassy_executor::task]
        async fn net_task(mut runner: ::embassy_net::Runner<'static, $driver>) -> ! {
            runner.run().await
        }

        #[::embassy_executor::task(pool_size = SOCKETS)]
        async fn slot_task(stack: ::embassy_net::Stack<'static>, slot: usize) -> ! {
            $crate::server::serve_slot(stack, slot).await
        }

        // One socket slot per TCP socket, the uplink's (and its DNS), and the board's own.
        static RESOURCES: ::static_cell::StaticCell<
            ::embassy_net::StackResources<
                { SOCKETS + $crate::capacity::UPLINK_SOCKETS $(+ $extra)? },
            >,
        > = ::static_cell::StaticCell::new();
        let resources = RESOURCES.init(::embassy_net::StackResources::new());
        let (stack, runner) = ::embassy_net::new($device, $config, resources, $seed);
        $spawner.spawn(net_task(runner).expect("one network task"));
        for slot in 0..SOCKETS {
            $spawner.spawn(slot_task(stack, slot).expect("a task per socket"));
        }
        ::defmt::info!("MQTT on port {}", $crate::capacity::MQTT_PORT);
        stack
    }};
}
