//! The bridge uplink: forwards configured topics to an upstream MQTT broker (a `fulmar`
//! gateway, Mosquitto, a cloud broker) as an MQTT 3.1.1 client (or 5.0, configured) over
//! embassy-net, and optionally brings topics down from it. As a 5.0 client it forwards the
//! 5.0 properties the broker keeps with a message (user properties, content type, response
//! topic, correlation data, payload format indicator) and the Message Expiry Interval
//! left [MQTT-3.3.2-6], so a 5.0 subscriber upstream sees them as published here.
//!
//! Store and forward comes from the core's bridge (`Broker::bridge_open` and the
//! `bridge_*` calls): a bridge is a persistent session with no network client, so every
//! message matching an `up` filter is queued for it while the uplink is down — bounded by
//! the broker's per-session queue limits (beyond them the newest is dropped, counted), and
//! persisted to flash with the other sessions (QoS 1 and 2) when the board persists — and
//! [`run`] forwards the queue in order once connected. What the full backlog drops is
//! counted per bridge (`Broker::bridge_dropped`) and shown at each connection attempt: a
//! warning with the running count, and the count retained on
//! `$SYS/broker/bridge/<client-id>/dropped` for local subscribers. While connected, a full queue holds
//! local publishers back instead (`Broker::bridge_online`): nothing a working link can
//! carry is dropped. A message leaves the queue only when upstream has acknowledged it
//! (PUBACK) [MQTT-4.3.2-1]; when the connection fails, everything unacknowledged is handed
//! out again
//! (`Broker::bridge_rewind`) and goes first after the reconnection, so upstream sees every
//! message at least once and in publish order (§4.6). A message forwarded at QoS 2 (an
//! `up` filter with QoS 2) is released at upstream's PUBREC instead, when upstream owns it
//! (§4.3.3); its packet identifier stays taken, and its PUBREL is sent again after
//! a reconnection (even after a restart, with persistence), until PUBCOMP
//! [MQTT-4.4.0-1]: upstream gets it exactly once.
//!
//! A message larger than upstream takes is dropped and counted with the backlog's drops
//! (`Broker::bridge_oversized`) instead of sent: larger than a 5.0 upstream's Maximum
//! Packet Size [MQTT-3.1.2-24] or than the `max-packet` setting. A 3.1.1 upstream
//! declares no limit, and one that has one (Mosquitto's `max_packet_size`) closes the
//! connection on a larger PUBLISH; the message would go again first after every
//! reconnection, forever, and nothing after it would. So a message that is the oldest
//! unacknowledged one when upstream closes an accepted connection [`CLOSES_BEFORE_DROP`]
//! times in a row is dropped the same way (logged): set `max-packet` to drop such messages
//! at once, without the reconnections.
//!
//! Messages from upstream (the `down` filters, subscribed at QoS 1 at most) enter the
//! local broker through `Broker::bridge_publish`: never sent back up (the bridge's local
//! subscriptions are No Local). Upstream's own session is persistent (Clean Session 0),
//! so what it queued for the board during an outage arrives after the reconnection, and a
//! QoS 1 message is acknowledged only once the local broker has taken it.
//!
//! Configuration ([`Config::parse`]) is a short text, one setting per line (or separated
//! by `;`), so a board can take it from its build environment or a file:
//!
//! ```text
//! # host (IPv4 address or DNS name, resolved at each connection) and port (required)
//! upstream 10.0.2.100:1883
//! # upstream client id, and the local bridge's name (default fulmar-uplink)
//! client-id fulmar-edge-1
//! # seconds, at least 1 (default 30)
//! keep-alive 30
//! # the MQTT version spoken upstream: 3.1.1 (default) or 5
//! protocol 5
//! # credentials upstream, if it wants them (none by default)
//! username edge-1
//! password secret
//! # the largest packet upstream takes, in bytes (default: what a 5.0 upstream declares,
//! # else no limit); larger messages are dropped, counted, instead of sent
//! max-packet 1024
//! # forward matching local messages, at most at this QoS (0, 1 or 2, default 1)
//! up sensors/# 1
//! # bring matching upstream messages down
//! down commands/# 1
//! ```

use embassy_futures::select::{Either3, select3};
use embassy_net::dns::DnsQueryType;
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpEndpoint, Stack};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{Duration, Instant, Timer, with_timeout};
use fulmar_core::broker::BridgeId;
use fulmar_core::codec::{
    Ack, Connect, DecodeError, List, Packet, PacketId, Properties, Property, ProtocolVersion,
    Publish, QoS, QoSPid, ReasonCode, Subscribe, Subscription, SubscriptionOptions, decode,
};

use crate::capacity::{PACKET, SOCKET_RX, UPLINK_TX};
use crate::inbox::{self, Inbox};
use crate::server::{dispatch, now, with};

/// Filters in each direction.
pub const MAX_FILTERS: usize = 4;
/// QoS 1 messages sent upstream and not acknowledged yet: enough to keep a link with some
/// latency busy, few enough that a reconnection re-sends little.
pub const WINDOW: usize = 4;
/// First wait before reconnecting; it doubles after each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Longest wait for the TCP connection and then for the CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Times in a row upstream may close an accepted connection while the same message is the
/// oldest it has not acknowledged, before that message is taken for one upstream refuses
/// (too large for it) and dropped. Three: a restart of upstream, or a lost connection, in
/// the middle of a message is not mistaken for a refusal, and the backlog waits for at
/// most three reconnections (about 2 s: the backoff starts again from 0.5 s after each
/// accepted connection).
pub const CLOSES_BEFORE_DROP: u8 = 3;
/// Longest wait for the DNS answer: a server that answers at all does within a second or
/// two (smoltcp asks again after 1 s, then 2 s), and the backoff retries soon after.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The smallest `max-packet`: room for a PUBLISH with a short topic and payload. (An
/// upstream that takes less could not take the uplink's SUBSCRIBE either.)
pub const MIN_MAX_PACKET: u32 = 64;

/// Topic filters with the highest QoS used on each.
pub type Filters<'a> = heapless::Vec<(&'a str, QoS), MAX_FILTERS>;

/// What the uplink connects to and what it forwards (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config<'a> {
    /// The upstream broker's host: an IPv4 address or a DNS name, looked up again before
    /// every connection (a cloud broker's address changes).
    pub host: &'a str,
    /// The upstream broker's TCP port.
    pub port: u16,
    /// The client identifier upstream; also the local bridge session's name.
    pub client_id: &'a str,
    /// Keep alive announced upstream, in seconds; a PINGREQ goes out after a quarter of
    /// it without sending (upstream's 1.5 times is then far: the board may be late, busy
    /// with a flash write, or its clock behind, as an emulated one is on a loaded host),
    /// and the link is dropped after 1.5 times it without hearing back.
    pub keep_alive: u16,
    /// The MQTT version spoken upstream: 3.1.1 by default (every broker has it), or 5.0.
    pub protocol: ProtocolVersion,
    /// User name and password sent in CONNECT.
    pub username: Option<&'a str>,
    /// The password (without a user name, 3.1.1 cannot send one [MQTT-3.1.2-22]).
    pub password: Option<&'a str>,
    /// The largest packet upstream takes, in bytes (`max-packet`), if the user knows it:
    /// what a 3.1.1 upstream cannot say. A 5.0 upstream's Maximum Packet Size applies too
    /// (the smaller one wins).
    pub max_packet: Option<u32>,
    /// Local messages forwarded upstream.
    pub up: Filters<'a>,
    /// Upstream messages brought down.
    pub down: Filters<'a>,
}

/// Why a configuration text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
#[non_exhaustive]
pub enum ConfigError {
    /// A line starts with a word that is not a setting.
    UnknownSetting,
    /// `upstream` is not a host and port.
    BadAddress,
    /// A setting has no value.
    MissingValue,
    /// A number is out of range: keep-alive 1 to 65 535, QoS 0 to 2, protocol 3.1.1 or 5,
    /// max-packet at least [`MIN_MAX_PACKET`].
    BadNumber,
    /// More than [`MAX_FILTERS`] filters in one direction.
    TooManyFilters,
    /// No `upstream` line.
    NoUpstream,
}

impl<'a> Config<'a> {
    /// Reads a configuration text (see the module documentation). Lines starting with `#`
    /// are comments (`#` elsewhere is the wildcard).
    pub fn parse(text: &'a str) -> Result<Self, ConfigError> {
        let mut upstream = None;
        let mut config = Self {
            host: "",
            port: 0,
            client_id: "fulmar-uplink",
            keep_alive: 30,
            protocol: ProtocolVersion::V3_1_1,
            username: None,
            password: None,
            max_packet: None,
            up: Filters::new(),
            down: Filters::new(),
        };
        for line in text.split(['\n', ';']) {
            if line.trim_start().starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(setting), value) = (words.next(), words.next()) else {
                continue;
            };
            let value = value.ok_or(ConfigError::MissingValue);
            match setting {
                "upstream" => {
                    upstream = Some(host_port(value?).ok_or(ConfigError::BadAddress)?);
                }
                "client-id" => config.client_id = value?,
                "protocol" => {
                    config.protocol = match value? {
                        "3.1.1" => ProtocolVersion::V3_1_1,
                        "5" | "5.0" => ProtocolVersion::V5,
                        _ => return Err(ConfigError::BadNumber),
                    }
                }
                "username" => config.username = Some(value?),
                "password" => config.password = Some(value?),
                // Not 0 (no keep-alive): the uplink needs its pings to find a dead link.
                "keep-alive" => match value?.parse() {
                    Ok(seconds) if seconds > 0 => config.keep_alive = seconds,
                    _ => return Err(ConfigError::BadNumber),
                },
                "max-packet" => match value?.parse() {
                    Ok(bytes) if bytes >= MIN_MAX_PACKET => config.max_packet = Some(bytes),
                    _ => return Err(ConfigError::BadNumber),
                },
                "up" | "down" => {
                    let qos = match words.next().unwrap_or("1") {
                        "0" => QoS::AtMostOnce,
                        "1" => QoS::AtLeastOnce,
                        // Down, subscribed at QoS 1 at most (see `Link::subscribe`).
                        "2" => QoS::ExactlyOnce,
                        _ => return Err(ConfigError::BadNumber),
                    };
                    let filters = if setting == "up" {
                        &mut config.up
                    } else {
                        &mut config.down
                    };
                    filters
                        .push((value?, qos))
                        .map_err(|_| ConfigError::TooManyFilters)?;
                }
                _ => return Err(ConfigError::UnknownSetting),
            }
        }
        (config.host, config.port) = upstream.ok_or(ConfigError::NoUpstream)?;
        Ok(config)
    }
}

/// `host:port`: a host that is not empty (whether it is an address or a name that resolves
/// is learnt at connection time) and a port that is not 0.
fn host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse().ok().filter(|p| *p != 0)?;
    (!host.is_empty()).then_some((host, port))
}

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

/// Why a connection upstream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
enum End {
    /// TCP failed or was closed.
    Socket,
    /// The upstream host name did not resolve (logged with the name).
    Unresolved,
    /// Upstream refused the CONNECT (its reason code).
    Refused(ReasonCode),
    /// Nothing heard for 1.5 times the keep alive, or no CONNACK in time.
    Timeout,
    /// Upstream sent bytes that are not the MQTT it should send.
    Protocol,
    /// A message from upstream found no room here: not acknowledged, so upstream sends
    /// it again after the reconnection.
    LocalFull,
}

/// Opens the bridge (after persistence has restored the broker, so its backlog is
/// there) and runs the uplink forever: connect, forward, reconnect with backoff. Run it
/// in its own task once the network stack is up.
pub async fn run(stack: Stack<'static>, config: Config<'static>) -> ! {
    let opened = with(|state| {
        let bridge = state.broker.bridge_open(config.client_id, now())?;
        for (filter, qos) in &config.up {
            state.broker.bridge_subscribe(bridge, filter, *qos)?;
        }
        // A restored backlog may hold messages handed out before the restart.
        state.broker.bridge_rewind(bridge);
        dispatch(state);
        Ok::<_, ReasonCode>(bridge)
    });
    let bridge = match opened {
        Ok(bridge) => bridge,
        Err(e) => {
            defmt::error!("uplink: cannot open the bridge: {}", e);
            core::future::pending().await
        }
    };
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
    let mut dropped_shown = None;
    // The oldest message upstream had not acknowledged when it closed accepted
    // connections, and how many times in a row (see CLOSES_BEFORE_DROP).
    let mut suspect: Option<(u64, u8)> = None;
    loop {
        report_drops(bridge, config.client_id, &mut dropped_shown);
        stack.wait_config_up().await;
        let mut socket = TcpSocket::new(stack, &mut rx_ring, &mut tx_ring);
        socket.set_nagle_enabled(false);
        // Resolved at every attempt: a cloud broker's address changes, and a name that
        // does not resolve now (no network yet, a DNS outage) may later.
        let upstream = resolve(stack, &config).await;
        let connected = match upstream {
            Ok(upstream) => matches!(
                with_timeout(CONNECT_TIMEOUT, socket.connect(upstream)).await,
                Ok(Ok(()))
            ),
            Err(_) => false,
        };
        let mut link = Link {
            socket,
            bridge,
            config: &config,
            inbox: &mut inbox,
            inflight: heapless::Vec::new(),
            last_sent: Instant::now(),
            last_heard: Instant::now(),
            window: WINDOW,
            max_packet: config.max_packet.map_or(usize::MAX, |bytes| bytes as usize),
            up: false,
            dropped_shown: &mut dropped_shown,
        };
        let end = match upstream {
            Err(end) => end,
            Ok(upstream) if connected => link.serve(upstream).await,
            Ok(_) => End::Socket,
        };
        let was_up = link.up;
        // Tokens follow publish order: the smallest in flight is the oldest.
        let oldest = link.inflight.iter().map(|(_, token)| *token).min();
        link.inbox.clear();
        let mut socket = link.socket;
        let refused = if was_up {
            refused_message(
                &mut suspect,
                (end == End::Socket).then_some(oldest).flatten(),
            )
        } else {
            None
        };
        // Whatever upstream did not acknowledge goes out again, first, next time; until
        // then the queue is the bounded store-and-forward backlog.
        with(|state| {
            if let Some(token) = refused {
                defmt::warn!(
                    "uplink: upstream closed the connection {=u8} times with the same message \
                     unacknowledged: dropped as too large for upstream (set max-packet)",
                    CLOSES_BEFORE_DROP
                );
                // Before the rewind: it takes a message handed out.
                state.broker.bridge_oversized(bridge, token);
            }
            state.broker.bridge_rewind(bridge);
            state.broker.bridge_online(bridge, false);
            dispatch(state);
        });
        socket.abort();
        let _ = with_timeout(Duration::from_millis(200), socket.flush()).await;
        drop(socket);
        if was_up {
            defmt::warn!("uplink: connection lost: {}", end);
            backoff = MIN_BACKOFF;
        } else if !matches!(end, End::Socket | End::Unresolved) {
            // Refused, or no CONNACK: worth a line each attempt. An unreachable upstream
            // (End::Socket) is not, during an outage; a name that did not resolve was
            // logged with the name.
            defmt::warn!("uplink: connection failed: {}", end);
        }
        report_drops(bridge, config.client_id, &mut dropped_shown);
        Timer::after(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Counts a closing of an accepted connection by upstream with `oldest` the oldest message
/// it had not acknowledged (`None`: closed for another reason, or nothing unacknowledged),
/// and returns that message's token when this is the [`CLOSES_BEFORE_DROP`]th time in a
/// row: upstream refuses it.
fn refused_message(suspect: &mut Option<(u64, u8)>, oldest: Option<u64>) -> Option<u64> {
    *suspect = match (*suspect, oldest) {
        (Some((token, closes)), Some(oldest)) if token == oldest => Some((token, closes + 1)),
        (_, oldest) => oldest.map(|token| (token, 1)),
    };
    match *suspect {
        Some((token, closes)) if closes >= CLOSES_BEFORE_DROP => {
            *suspect = None;
            Some(token)
        }
        _ => None,
    }
}

/// Longest `$SYS/broker/bridge/<client-id>/dropped` topic: a longer client id goes
/// without the topic (the warning still says the count).
const DROPPED_TOPIC: usize = 96;

/// Shows the user how many messages the bridge's full backlog dropped, when that changed
/// since `shown` (`None` at boot: the retained count from before a restart is replaced): a
/// warning with the running count, and the count as a retained `$SYS` message. Called at
/// each connection attempt, so during an outage at most once per backoff period (with
/// persistence, each is a flash write).
fn report_drops(bridge: BridgeId, name: &str, shown: &mut Option<u32>) {
    with(|state| {
        let dropped = state.broker.bridge_dropped(bridge);
        if *shown == Some(dropped) {
            return;
        }
        *shown = Some(dropped);
        if dropped > 0 {
            defmt::warn!(
                "uplink: {=u32} messages dropped since boot (backlog full while upstream was \
                 away, or too large for upstream)",
                dropped
            );
        }
        let mut topic = [0u8; DROPPED_TOPIC];
        let mut digits = [0u8; 10];
        // A client id with wildcards makes no topic name: the broker refuses it.
        if let Some(topic) = concat(&mut topic, &["$SYS/broker/bridge/", name, "/dropped"]) {
            let count = decimal(dropped, &mut digits);
            let _ = state
                .broker
                .publish(topic, count, QoS::AtMostOnce, true, now());
            dispatch(state);
        }
    });
}

/// `parts` one after the other in `buf`, if they fit (no `core::fmt`: kilobytes of flash).
fn concat<'b>(buf: &'b mut [u8], parts: &[&str]) -> Option<&'b str> {
    let mut len = 0;
    for part in parts {
        let end = len + part.len();
        buf.get_mut(len..end)?.copy_from_slice(part.as_bytes());
        len = end;
    }
    core::str::from_utf8(buf.get(..len)?).ok()
}

/// `n` in decimal digits, in the end of `buf`.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
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

/// One connection upstream.
struct Link<'s, 'c, 'd> {
    socket: TcpSocket<'s>,
    bridge: BridgeId,
    config: &'c Config<'c>,
    /// Bytes from upstream not decoded yet (a packet not complete yet).
    inbox: &'s mut Inbox,
    /// QoS 1 and 2 messages sent and not completed (PUBACK, PUBCOMP): packet identifier
    /// and bridge token (matched by identifier, so in any order).
    inflight: heapless::Vec<(u16, u64), WINDOW>,
    last_sent: Instant,
    last_heard: Instant,
    /// Messages that may be in flight: [`WINDOW`], or less if a 5.0 upstream's Receive
    /// Maximum says so [MQTT-3.3.4-9].
    window: usize,
    /// The largest packet upstream takes: the smaller of a 5.0 upstream's Maximum Packet
    /// Size and the `max-packet` setting, else no limit.
    max_packet: usize,
    /// Whether upstream accepted the connection (CONNACK 0).
    up: bool,
    /// The bridge's drop count last shown to the user (`report_drops`).
    dropped_shown: &'d mut Option<u32>,
}

/// What the uplink waited for besides its wake signal and timer.
enum Input {
    /// Bytes read into the inbox, 0 at the end of the stream.
    Read(Result<usize, embassy_net::tcp::Error>),
    /// A large buffer for a packet that does not fit the small inbox.
    Large(inbox::Large),
}

/// What an attempt to write a packet found.
enum Wrote<R> {
    /// The packet is in the transmit ring (its length, and what the caller learns).
    Done(usize, R),
    /// The ring's free contiguous room is too small: wait for it to drain.
    NoRoom,
}

impl Link<'_, '_, '_> {
    /// CONNECT, CONNACK, SUBSCRIBE, then forward and receive until the connection ends.
    async fn serve(&mut self, upstream: IpEndpoint) -> End {
        // 5.0: the session outlives the connection only with a Session Expiry Interval
        // [MQTT-3.1.2-23]; the bridge's never expires, like a 3.1.1 Clean Session 0 one.
        let session_expiry = [Property::SessionExpiryInterval(u32::MAX)];
        let connect = Connect {
            protocol: self.config.protocol,
            // Upstream keeps the board's subscriptions and queues for it while it is away.
            clean_start: false,
            keep_alive: self.config.keep_alive,
            properties: if self.config.protocol == ProtocolVersion::V5 {
                Properties::new(&session_expiry)
            } else {
                Properties::empty()
            },
            client_id: self.config.client_id,
            will: None,
            username: self.config.username,
            password: self
                .config
                .username
                .and(self.config.password)
                .map(str::as_bytes),
        };
        if let Err(end) = self.send(&Packet::from(&connect)).await {
            return end;
        }
        match with_timeout(CONNECT_TIMEOUT, self.connack()).await {
            Ok(Ok(())) => {}
            Ok(Err(end)) => return end,
            Err(_) => return End::Timeout,
        }
        self.up = true;
        let bridge = self.bridge;
        // From now on a full queue holds local publishers back rather than dropping.
        with(|state| state.broker.bridge_online(bridge, true));
        defmt::info!("uplink: connected to {}", upstream);
        if let Err(end) = self.subscribe().await {
            return end;
        }
        if let Err(end) = self.release_again().await {
            return end;
        }
        match self.forward().await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    /// Waits for the CONNACK [MQTT-3.2.0-1]: the first packet from upstream.
    async fn connack(&mut self) -> Result<(), End> {
        loop {
            self.receive().await?;
            match decode(self.inbox.bytes(), self.config.protocol, PACKET) {
                Ok((Packet::ConnAck(ack), used)) => {
                    let code = ack.reason_code;
                    if let Some(maximum) = ack.properties.receive_maximum() {
                        self.window = WINDOW.min(usize::from(maximum)).max(1);
                    }
                    if let Some(maximum) = ack.properties.maximum_packet_size() {
                        let maximum = usize::try_from(maximum).unwrap_or(usize::MAX);
                        self.max_packet = self.max_packet.min(maximum);
                    }
                    self.inbox.consume(used);
                    return if code.is_error() {
                        Err(End::Refused(code))
                    } else {
                        Ok(())
                    };
                }
                Err(DecodeError::Incomplete { .. }) => {}
                _ => return Err(End::Protocol),
            }
        }
    }

    /// Sends PUBREL again for the QoS 2 messages upstream received (PUBREC) and did not
    /// complete (PUBCOMP) before the last connection ended, even before a restart
    /// [MQTT-4.4.0-1]; they count in the window until their PUBCOMP.
    async fn release_again(&mut self) -> Result<(), End> {
        let bridge = self.bridge;
        let pending = with(|state| state.broker.bridge_pending_release::<WINDOW>(bridge));
        for (token, id) in pending {
            // Cannot fail: at most WINDOW, and nothing else is in flight yet.
            let _ = self.inflight.push((id.get(), token));
            self.send(&Packet::PubRel(Ack::new(id))).await?;
        }
        Ok(())
    }

    /// Subscribes to the `down` filters, at QoS 1 at most (QoS 2 would need state this
    /// side keeps for no benefit: the local broker takes each message once anyway).
    async fn subscribe(&mut self) -> Result<(), End> {
        let mut subscriptions: heapless::Vec<Subscription<'_>, MAX_FILTERS> = heapless::Vec::new();
        // 5.0: No Local, so upstream never sends back what the uplink forwarded
        // [MQTT-3.8.3-3], and `up` and `down` filters may overlap. (3.1.1 has no way to.)
        let no_local = self.config.protocol == ProtocolVersion::V5;
        for (filter, qos) in &self.config.down {
            let options = SubscriptionOptions {
                no_local,
                ..SubscriptionOptions::qos((*qos).min(QoS::AtLeastOnce))
            };
            // Cannot fail: both hold MAX_FILTERS.
            let _ = subscriptions.push(Subscription::new(filter, options));
        }
        if subscriptions.is_empty() {
            return Ok(());
        }
        let bridge = self.bridge;
        // Unique among the bridge's messages in flight [MQTT-2.2.1-3].
        let Some(packet_id) = with(|state| state.broker.bridge_packet_id(bridge)) else {
            return Err(End::Protocol);
        };
        let packet = Packet::Subscribe(Subscribe {
            packet_id,
            properties: Properties::empty(),
            subscriptions: List::new(&subscriptions),
        });
        self.send(&packet).await
    }

    /// Forwards the bridge's queue within the window, answers upstream, keeps the link
    /// alive; returns only when the connection ends.
    async fn forward(&mut self) -> Result<core::convert::Infallible, End> {
        // A Config built by hand may say 0: pinging every moment would be worse than 1 s.
        let keep_alive = Duration::from_secs(u64::from(self.config.keep_alive.max(1)));
        loop {
            while self.inflight.len() < self.window && self.publish_next().await? {}
            let ping_at = self.last_sent + keep_alive / 4;
            let dead_at = self.last_heard + keep_alive * 3 / 2;
            let timer_at = ping_at.min(dead_at);
            // A packet that does not fit the small inbox waits for a shared large buffer
            // (not reading meanwhile: TCP holds upstream back).
            let need_large = self.inbox.is_full() && !self.inbox.is_large();
            let (socket, inbox) = (&mut self.socket, &mut *self.inbox);
            let input = async {
                if need_large {
                    Input::Large(inbox::borrow().await)
                } else {
                    Input::Read(socket.read(inbox.room()).await)
                }
            };
            match select3(input, WAKE.wait(), Timer::at(timer_at)).await {
                Either3::First(Input::Read(Ok(0) | Err(_))) => return Err(End::Socket),
                Either3::First(Input::Read(Ok(n))) => {
                    self.inbox.add(n);
                    self.last_heard = Instant::now();
                    self.handle_input().await?;
                }
                Either3::First(Input::Large(large)) => self.inbox.use_large(large),
                Either3::Second(()) => {}
                // Woken a quarter of the keep-alive late, this board was not running
                // (an emulator starved by its host, a long flash erase): upstream's answer
                // may be waiting unread in the network stack. Silence counts from now.
                Either3::Third(()) if Instant::now() >= timer_at + keep_alive / 4 => {
                    self.last_heard = Instant::now();
                    self.send(&Packet::PingReq).await?;
                }
                Either3::Third(()) if Instant::now() >= dead_at => return Err(End::Timeout),
                // [MQTT-3.1.2-23]: a control packet within every keep-alive period.
                Either3::Third(()) => self.send(&Packet::PingReq).await?,
            }
        }
    }

    /// Takes the next message from the bridge and writes it upstream; `false` when the
    /// queue has nothing more to hand out.
    async fn publish_next(&mut self) -> Result<bool, End> {
        let bridge = self.bridge;
        let version = self.config.protocol;
        let max_packet = self.max_packet;
        let sent = self
            .write(|buf| {
                // A message is taken from the bridge only when it surely fits: it was at
                // most PACKET bytes when published, and goes out with the same properties
                // at most (a 3.1.1 one as 5.0: one byte more, the empty property length).
                if buf.len() < PACKET + 1 {
                    return Wrote::NoRoom;
                }
                with(|state| {
                    let Some(message) = state.broker.bridge_next(bridge, now()) else {
                        return Wrote::Done(0, None);
                    };
                    // The core numbers QoS 1 and 2 messages and keeps the number (and sets
                    // DUP) when one goes again [MQTT-4.4.0-1].
                    let qos_pid = match (message.packet_id, message.qos) {
                        (Some(id), QoS::AtLeastOnce) => QoSPid::AtLeastOnce(id),
                        (Some(id), QoS::ExactlyOnce) => QoSPid::ExactlyOnce(id),
                        _ => QoSPid::AtMostOnce,
                    };
                    let publish = Publish {
                        dup: message.dup && qos_pid != QoSPid::AtMostOnce,
                        qos_pid,
                        retain: message.retain,
                        topic: message.topic,
                        // Ignored by the 3.1.1 encoding.
                        properties: message.properties(),
                        payload: message.payload,
                    };
                    let token = message.token;
                    let packet = Packet::Publish(publish);
                    // [MQTT-3.1.2-24]: never more than upstream's Maximum Packet Size;
                    // such a message can never go, so it is counted and forgotten.
                    if packet.encoded_len(version) > max_packet {
                        defmt::warn!(
                            "uplink: message larger than upstream's maximum packet size \
                             ({} bytes), dropped",
                            max_packet
                        );
                        state.broker.bridge_oversized(bridge, token);
                        dispatch(state);
                        return Wrote::Done(0, Some((token, None, true)));
                    }
                    let written = packet.encode(version, buf);
                    let acked = qos_pid == QoSPid::AtMostOnce || written.is_err();
                    if written.is_err() {
                        defmt::warn!("uplink: message too large to forward, dropped");
                    }
                    if acked {
                        // QoS 0 is done once written; an unsendable message must not block
                        // the queue.
                        state.broker.bridge_ack(bridge, token);
                    }
                    dispatch(state);
                    let in_flight = match qos_pid {
                        QoSPid::AtLeastOnce(id) | QoSPid::ExactlyOnce(id) if !acked => {
                            Some(id.get())
                        }
                        _ => None,
                    };
                    Wrote::Done(written.unwrap_or(0), Some((token, in_flight, false)))
                })
            })
            .await?;
        match sent {
            None => Ok(false),
            Some((token, in_flight, oversized)) => {
                if let Some(id) = in_flight {
                    // Room is checked by the caller: the push cannot fail.
                    let _ = self.inflight.push((id, token));
                }
                if oversized {
                    report_drops(bridge, self.config.client_id, self.dropped_shown);
                }
                Ok(true)
            }
        }
    }

    /// Handles every whole packet in the inbox.
    async fn handle_input(&mut self) -> Result<(), End> {
        loop {
            let (ack, used) = match decode(self.inbox.bytes(), self.config.protocol, PACKET) {
                Err(DecodeError::Incomplete { .. }) => return Ok(()),
                Err(e) => {
                    defmt::warn!("uplink: bad packet from upstream: {}", e);
                    return Err(End::Protocol);
                }
                Ok((packet, used)) => (handle(packet, self.bridge, &mut self.inflight)?, used),
            };
            self.inbox.consume(used);
            if let Some(reply) = ack {
                self.send(&reply).await?;
            }
        }
    }

    /// Reads more bytes into the inbox (before the CONNACK: a small packet).
    async fn receive(&mut self) -> Result<(), End> {
        if self.inbox.is_full() {
            return Err(End::Protocol);
        }
        match self.socket.read(self.inbox.room()).await {
            Ok(0) | Err(_) => Err(End::Socket),
            Ok(n) => {
                self.inbox.add(n);
                self.last_heard = Instant::now();
                Ok(())
            }
        }
    }

    /// Writes a control packet.
    async fn send(&mut self, packet: &Packet<'_>) -> Result<(), End> {
        let version = self.config.protocol;
        self.write(|buf| match packet.encode(version, buf) {
            Ok(n) => Wrote::Done(n, ()),
            Err(_) => Wrote::NoRoom,
        })
        .await
    }

    /// Runs `encode` on the transmit ring's free room until it writes, waiting for the
    /// ring to drain when the room is too small.
    async fn write<R>(&mut self, mut encode: impl FnMut(&mut [u8]) -> Wrote<R>) -> Result<R, End> {
        loop {
            let wrote = self
                .socket
                .write_with(|buf| match encode(buf) {
                    Wrote::Done(n, r) => (n, Some((n, r))),
                    Wrote::NoRoom => (0, None),
                })
                .await
                .map_err(|_| End::Socket)?;
            match wrote {
                Some((n, r)) => {
                    if n > 0 {
                        self.last_sent = Instant::now();
                    }
                    return Ok(r);
                }
                // An empty ring starts over at its beginning, with room for any packet.
                None if self.socket.send_queue() > 0 => {
                    self.socket.flush().await.map_err(|_| End::Socket)?
                }
                None => {
                    defmt::warn!("uplink: packet larger than the transmit ring");
                    return Err(End::Protocol);
                }
            }
        }
    }
}

/// Upstream ended the exchange of message `id` (PUBACK, PUBCOMP, or a refusal): the bridge
/// forgets it. Acknowledgements come in sending order [MQTT-4.6.0-2]; any order is
/// accepted all the same.
fn complete(bridge: BridgeId, inflight: &mut heapless::Vec<(u16, u64), WINDOW>, id: PacketId) {
    if let Some(at) = inflight.iter().position(|(i, _)| *i == id.get()) {
        let (_, token) = inflight.swap_remove(at);
        with(|state| {
            state.broker.bridge_ack(bridge, token);
            dispatch(state);
        });
    }
}

/// Handles one packet from upstream; returns the answer to send (PUBACK, PUBREL), if any.
fn handle(
    packet: Packet<'_>,
    bridge: BridgeId,
    inflight: &mut heapless::Vec<(u16, u64), WINDOW>,
) -> Result<Option<Packet<'static>>, End> {
    let token_of = |inflight: &heapless::Vec<(u16, u64), WINDOW>, id: PacketId| {
        inflight
            .iter()
            .find(|(i, _)| *i == id.get())
            .map(|(_, t)| *t)
    };
    match packet {
        // QoS 2, first half: upstream has the message and owns it now (§4.3.3): the bridge
        // releases it, and PUBREL goes, again after a reconnection until PUBCOMP
        // [MQTT-4.3.3-3]. A failure code ends the exchange (5.0 §4.3.3).
        Packet::PubRec(ack) => {
            let Some(token) = token_of(inflight, ack.packet_id) else {
                return Ok(None);
            };
            if ack.reason_code.is_error() {
                defmt::warn!("uplink: upstream refused a message: {}", ack.reason_code);
                complete(bridge, inflight, ack.packet_id);
                return Ok(None);
            }
            with(|state| state.broker.bridge_received(bridge, token));
            Ok(Some(Packet::PubRel(Ack::new(ack.packet_id))))
        }
        // QoS 2, second half: the identifier is free again.
        Packet::PubComp(ack) => {
            complete(bridge, inflight, ack.packet_id);
            Ok(None)
        }
        Packet::PubAck(ack) => {
            // 5.0: upstream refused the message (not authorized, quota...): a PUBACK with
            // any reason code ends the exchange (§3.4.2.1), so it is released; worth a line.
            if ack.reason_code.is_error() {
                defmt::warn!("uplink: upstream refused a message: {}", ack.reason_code);
            }
            complete(bridge, inflight, ack.packet_id);
            Ok(None)
        }
        Packet::Publish(publish) => {
            let (qos, ack) = match publish.qos_pid {
                QoSPid::AtMostOnce => (QoS::AtMostOnce, None),
                QoSPid::AtLeastOnce(id) => (QoS::AtLeastOnce, Some(id)),
                // Subscribed at QoS 1 at most: upstream may not send QoS 2 [MQTT-3.8.4-6].
                QoSPid::ExactlyOnce(_) => return Err(End::Protocol),
            };
            let taken = with(|state| {
                let taken = state.broker.bridge_publish(bridge, &publish, now());
                dispatch(state);
                taken
            });
            match taken {
                Ok(_) => Ok(ack.map(|id| Packet::PubAck(Ack::new(id)))),
                Err(_) if qos == QoS::AtMostOnce => Ok(None),
                Err(_) => Err(End::LocalFull),
            }
        }
        Packet::SubAck(ack) => {
            if ack.reason_codes.iter().any(|c| c.is_error()) {
                defmt::warn!("uplink: upstream refused a subscription: {}", ack);
            }
            Ok(None)
        }
        Packet::PingResp => Ok(None),
        // 5.0: upstream closes with a reason (§3.14); reconnect after the backoff.
        Packet::Disconnect(disconnect) => {
            defmt::warn!("uplink: upstream disconnected: {}", disconnect.reason_code);
            Err(End::Socket)
        }
        other => {
            defmt::warn!("uplink: unexpected packet from upstream: {}", other);
            Err(End::Protocol)
        }
    }
}
