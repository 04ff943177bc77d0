//! Configuration: the schema of `fulmar.toml`, where each value comes from, and how it
//! maps onto [`fulmar_core::broker::Config`].
//!
//! A value is taken from the first of these that sets it:
//! 1. a named command-line flag (`--listen`, `--data-dir`, `--log`, …) or the variable
//!    of the same name that clap reads for it (`FULMAR_LISTEN`, `FULMAR_DATA_DIR`, …);
//! 2. `--set KEY=VALUE` (any key, dotted: `--set limits.max_inflight=10`);
//! 3. a `FULMAR_SECTION__KEY` environment variable (any key of a section, sections and
//!    keys separated by a double underscore: `FULMAR_LIMITS__MAX_INFLIGHT=10`);
//! 4. the TOML file given with `--config FILE` (or `FULMAR_CONFIG`);
//! 5. the defaults of [`Config::default`], which are also what `dist/fulmar.toml`
//!    documents (a test keeps the two equal).
//!
//! Values of variables and of `--set` are TOML values (`10`, `true`, `[{ addr =
//! "0.0.0.0:1883" }]`); anything that does not parse as one is taken as a string, so
//! `FULMAR_AUTH__PASSWORD_FILE=/etc/fulmar/passwd` needs no quotes. Variables whose first
//! segment names no section (`FULMAR_BIN` of the test harness, say) are not configuration
//! and are left alone.
//!
//! Every table refuses unknown keys, and every value is checked while it is read, so a
//! mistake is reported with the file, line and column it is at (see [`ConfigError`]);
//! the few checks that involve two keys run afterwards ([`Config::validate`]).

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroUsize};
use std::path::PathBuf;

use fulmar_core::router::ShareStrategy as CoreShareStrategy;

mod sources;

pub use sources::{ConfigError, Override, RunArgs, load, summary};

pub use crate::logging::LogFormat;
pub use crate::store::SyncPolicy;
use serde::{Deserialize, Deserializer, Serialize, de::Error as _};

/// Address the broker listens on when no listener is configured: MQTT's registered port
/// on every interface.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:1883";

/// Where the broker keeps its data when not told otherwise (relative to the working
/// directory).
pub const DEFAULT_DATA_DIR: &str = "./fulmar-data";

/// The largest packet size the protocol can express (Remaining Length of 268 435 455 plus
/// a 5-byte fixed header would exceed it; the core counts the whole packet).
const MAX_PACKET_SIZE_CEILING: u32 = 268_435_455;

/// Prefix of the environment variables that configure the broker.
pub const ENV_PREFIX: &str = "FULMAR_";

/// Everything the broker runs with: the schema of `fulmar.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for the broker's data (the database); created at start if missing.
    pub data_dir: PathBuf,
    /// Where clients connect.
    pub listeners: Listeners,
    /// Storage of sessions, subscriptions, retained and in-flight messages.
    pub persistence: Persistence,
    /// Who may connect and what they may do.
    pub auth: Auth,
    /// Bounds on what clients may cost.
    pub limits: Limits,
    /// Protocol options announced to clients.
    pub mqtt: Mqtt,
    /// `$SYS` topics and the Prometheus endpoint.
    pub metrics: Metrics,
    /// Logging.
    pub log: Log,
    /// How the broker uses the machine's cores.
    pub runtime: Runtime,
    /// Bridges to upstream brokers (none by default).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bridges: Vec<Bridge>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listeners: Listeners::default(),
            persistence: Persistence::default(),
            auth: Auth::default(),
            limits: Limits::default(),
            mqtt: Mqtt::default(),
            metrics: Metrics::default(),
            log: Log::default(),
            runtime: Runtime::default(),
            bridges: Vec::new(),
        }
    }
}

/// The sections of [`Config`] that are tables: the first segment of a configuring
/// environment variable must be one of them. A test checks the list against the schema.
const SECTIONS: [&str; 8] = [
    "listeners",
    "persistence",
    "auth",
    "limits",
    "mqtt",
    "metrics",
    "log",
    "runtime",
];

// --- runtime ------------------------------------------------------------------------------

/// How protocol work is spread over the machine's cores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Runtime {
    /// Broker shards: each owns the sessions whose client identifiers hash to it and runs
    /// on its own task, so routing runs on several cores at once; they forward messages to
    /// each other and behave as one broker. `"auto"` (default): one per core this process
    /// may run on ([`ShardCount::resolve`]).
    pub shards: ShardCount,
    /// Milliseconds a plain-TCP connection stays idle (no byte in or out) before it parks:
    /// it gives up its tokio task and reactor registration (about 0.5 KB) and waits as a
    /// socket in the broker's own epoll set (the `park` module's docs). 0: never park.
    pub park_after_ms: u32,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            shards: ShardCount::Auto,
            park_after_ms: 2000,
        }
    }
}

/// How many broker shards run: one per core, or a fixed number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardCount {
    /// One per core the process may run on (its CPU affinity and cgroup quota, as
    /// [`std::thread::available_parallelism`] reports them), at most [`ShardCount::MAX_AUTO`].
    Auto,
    /// This many, from 1 to [`ShardCount::MAX`].
    Fixed(NonZeroUsize),
}

impl ShardCount {
    /// The most shards a configuration may ask for: every pair of shards exchanges
    /// interest and copies, and a shard's index is one byte of the client identifiers it
    /// assigns.
    pub const MAX: usize = 64;
    /// The most shards `"auto"` starts: beyond this a message with subscribers everywhere
    /// is copied to more shards than its routing saves.
    pub const MAX_AUTO: usize = 16;

    /// The number of shards to start.
    pub fn resolve(self) -> NonZeroUsize {
        match self {
            Self::Fixed(n) => n,
            Self::Auto => std::thread::available_parallelism()
                .map_or(NonZeroUsize::MIN, |n| n.min(nonzero(Self::MAX_AUTO))),
        }
    }
}

impl Serialize for ShardCount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => serializer.serialize_str("auto"),
            Self::Fixed(n) => serializer.serialize_u64(n.get() as u64),
        }
    }
}

impl<'de> Deserialize<'de> for ShardCount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ShardCount;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "\"auto\" or a number of shards from 1 to {}",
                    ShardCount::MAX
                )
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ShardCount, E> {
                if text == "auto" {
                    Ok(ShardCount::Auto)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(text), &self))
                }
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ShardCount, E> {
                usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= ShardCount::MAX)
                    .and_then(NonZeroUsize::new)
                    .map(ShardCount::Fixed)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ShardCount, E> {
                self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

// --- listeners ----------------------------------------------------------------------------

/// Listeners of each kind; several of each are allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listeners {
    /// MQTT over plain TCP.
    pub tcp: Vec<TcpListener>,
    /// MQTT over TLS.
    pub tls: Vec<TlsListener>,
    /// MQTT over WebSocket (subprotocol `mqtt`).
    pub ws: Vec<WsListener>,
    /// MQTT over WebSocket over TLS.
    pub wss: Vec<TlsListener>,
}

impl Default for Listeners {
    fn default() -> Self {
        Self {
            tcp: vec![TcpListener {
                addr: SocketAddr::from(([0, 0, 0, 0], 1883)),
            }],
            tls: Vec::new(),
            ws: Vec::new(),
            wss: Vec::new(),
        }
    }
}

impl Listeners {
    /// Whether no listener of any kind is configured.
    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.tls.is_empty() && self.ws.is_empty() && self.wss.is_empty()
    }
}

/// A plain TCP listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpListener {
    /// Address and port (`0.0.0.0:1883`, `[::]:1883`; port 0 picks a free one).
    pub addr: SocketAddr,
}

/// A WebSocket listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsListener {
    /// Address and port.
    pub addr: SocketAddr,
    /// HTTP path of the WebSocket endpoint (what MQTT.js connects to by default).
    #[serde(default = "default_ws_path", deserialize_with = "ws_path")]
    pub path: String,
}

/// A TLS listener: MQTT over TLS in `listeners.tls`, MQTT over WebSocket over TLS in
/// `listeners.wss` (where it also has a `path`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListener {
    /// Address and port (MQTT over TLS is registered as 8883).
    pub addr: SocketAddr,
    /// `listeners.wss` only: HTTP path of the WebSocket endpoint (default `/mqtt`, see
    /// [`TlsListener::ws_path`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_ws_path"
    )]
    pub path: Option<String>,
    /// The server's certificate chain, PEM.
    pub cert: PathBuf,
    /// The server's private key, PEM.
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates are verified against; without it
    /// client certificates are not asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// Refuse clients that present no valid certificate (needs `client_ca`).
    #[serde(default)]
    pub require_client_cert: bool,
    /// Take the username from the client's certificate.
    #[serde(default)]
    pub identity_from_cert: CertIdentity,
}

impl TlsListener {
    /// The WebSocket path of a `listeners.wss` entry.
    pub fn ws_path(&self) -> &str {
        self.path.as_deref().unwrap_or(DEFAULT_WS_PATH)
    }
}

/// Which part of a verified client certificate becomes the client's username.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertIdentity {
    /// None: the username is the one in CONNECT.
    #[default]
    None,
    /// The subject's Common Name.
    Cn,
    /// The first Subject Alternative Name (DNS name, e-mail or URI).
    San,
}

/// The WebSocket path MQTT.js and most browser clients use.
pub const DEFAULT_WS_PATH: &str = "/mqtt";

fn default_ws_path() -> String {
    DEFAULT_WS_PATH.to_owned()
}

fn some_ws_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    ws_path(d).map(Some)
}

fn ws_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let path = String::deserialize(d)?;
    if path.starts_with('/') {
        Ok(path)
    } else {
        Err(D::Error::custom(format!(
            "a WebSocket path must start with `/`, not {path:?}"
        )))
    }
}

// --- persistence --------------------------------------------------------------------------

/// Storage of durable state in `data_dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Persistence {
    /// Keep sessions, subscriptions, retained and QoS 1/2 messages across restarts.
    pub enabled: bool,
    /// When a message counts as durable (and is acknowledged).
    pub sync: SyncPolicy,
}

impl Default for Persistence {
    fn default() -> Self {
        Self {
            enabled: true,
            sync: SyncPolicy::Batch,
        }
    }
}

// --- auth ---------------------------------------------------------------------------------

/// Authentication and authorization.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// Let clients connect without a username. When not set: allowed without a
    /// `password_file`, refused with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
    /// Users and password hashes (`fulmar passwd FILE USER`; Mosquitto's `mosquitto_passwd`
    /// files are accepted too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Who may publish and subscribe to what (Mosquitto's `acl_file` syntax). Without it
    /// every client may use every topic except `$SYS`, which is read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl_file: Option<PathBuf>,
}

impl Auth {
    /// Whether clients without a username are let in, `allow_anonymous` or its default.
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous.unwrap_or(self.password_file.is_none())
    }
}

// --- limits -------------------------------------------------------------------------------

/// What clients may cost. The defaults keep a 1 GB Raspberry Pi safe: the queues of all
/// sessions together (`max_sessions` × `max_queued_bytes`) stay under 512 MiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Transport connections served at once; more are closed as soon as accepted.
    pub max_connections: NonZeroUsize,
    /// Sessions kept, online and offline; a new one beyond this is refused (CONNACK 0x97).
    /// Raised to `max_connections` when below it.
    pub max_sessions: NonZeroUsize,
    /// New connections per second from one client address (IPv6: one /64); beyond it
    /// new connections are closed at once. 0 turns the limit off.
    pub connection_rate: u32,
    /// Connections one address may open at once before `connection_rate` applies.
    pub connection_burst: NonZeroU16,
    /// Apply the connection rate to loopback clients (127.0.0.0/8, ::1) too. Off so local
    /// bridges, tools and benchmarks on the gateway itself are not slowed.
    pub rate_limit_loopback: bool,
    /// Seconds a new connection gets to send CONNECT before it is closed.
    pub connect_timeout_secs: u16,
    /// Largest packet accepted from a client, fixed header included (5.0 Maximum Packet
    /// Size); a larger one closes the connection.
    #[serde(deserialize_with = "packet_size")]
    pub max_packet_size: u32,
    /// QoS 1/2 messages in flight to a client that gives no Receive Maximum (3.x).
    pub max_inflight: NonZeroU16,
    /// QoS 2 messages a client may have unacknowledged towards the broker (5.0 Receive
    /// Maximum).
    pub receive_maximum: NonZeroU16,
    /// Messages queued per session (offline, or beyond the in-flight window).
    pub max_queued_messages: NonZeroUsize,
    /// Bytes of queued messages per session.
    pub max_queued_bytes: NonZeroUsize,
    /// What happens when a session's queue is full.
    pub overflow: Overflow,
    /// With [`Overflow::Backpressure`]: QoS 0 messages hold their publisher back too
    /// (`true`), or are dropped (counted) for a client whose queue is full (`false`).
    pub qos0_backpressure: bool,
    /// Subscriptions per session; more are refused in the SUBACK (0x97).
    pub max_subscriptions_per_client: NonZeroUsize,
    /// Longest topic name or filter, in bytes.
    #[serde(deserialize_with = "topic_length")]
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter.
    pub max_topic_depth: NonZeroUsize,
    /// Retained messages kept; a new retained topic beyond this is not retained.
    pub max_retained: usize,
    /// Bytes of retained payloads kept.
    pub max_retained_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: nonzero(1024),
            max_sessions: nonzero(2048),
            connection_rate: 20,
            connection_burst: NonZeroU16::MIN.saturating_add(99),
            rate_limit_loopback: false,
            connect_timeout_secs: 10,
            max_packet_size: 256 * 1024,
            // A window of 20 (Mosquitto's) leaves a fast subscriber waiting on round trips:
            // with 500 subscribers, 100 delivered 2-4x as much per second.
            max_inflight: NonZeroU16::MIN.saturating_add(99),
            receive_maximum: NonZeroU16::MIN.saturating_add(63),
            max_queued_messages: nonzero(1000),
            max_queued_bytes: nonzero(256 * 1024),
            overflow: Overflow::Backpressure,
            // Held back by default, like QoS 1/2: dropping QoS 0 under overload frees
            // the publishers to flood, and then the broker's time goes to reading and
            // dropping rather than delivering (README, "QoS 0 under overload").
            qos0_backpressure: true,
            max_subscriptions_per_client: nonzero(256),
            max_topic_length: 1024,
            max_topic_depth: nonzero(32),
            max_retained: 10_000,
            max_retained_bytes: 16 << 20,
        }
    }
}

/// A non-zero constant (`NonZeroUsize::new(n).unwrap()` without the unwrap).
const fn nonzero(n: usize) -> NonZeroUsize {
    match NonZeroUsize::new(n) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    }
}

/// What a full session queue does with one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Slow the publisher down (its socket is not read, its acknowledgements wait) until
    /// there is room: nothing is dropped.
    #[default]
    Backpressure,
    /// Drop the new message for that session (Mosquitto's behaviour); counted.
    DropNew,
    /// Drop the session's oldest queued message not yet in flight; counted.
    DropOldest,
}

fn packet_size<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 64..=MAX_PACKET_SIZE_CEILING, "bytes")
}

fn topic_length<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    // A topic is a UTF-8 string with a 16-bit length prefix [MQTT-1.5.4-1].
    in_range(d, 1..=usize::from(u16::MAX), "bytes")
}

/// Reads an integer and checks it lies in `range`.
fn in_range<'de, D, T>(d: D, range: std::ops::RangeInclusive<T>, unit: &str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + PartialOrd + fmt::Display,
{
    let value = T::deserialize(d)?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(D::Error::custom(format!(
            "{value} is out of range: expected {} to {} {unit}",
            range.start(),
            range.end()
        )))
    }
}

// --- mqtt ---------------------------------------------------------------------------------

/// Protocol options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mqtt {
    /// Highest QoS granted (0, 1 or 2; 5.0 Maximum QoS).
    #[serde(deserialize_with = "qos")]
    pub max_qos: u8,
    /// Keep retained messages (5.0 Retain Available).
    pub retain_available: bool,
    /// Topic aliases a 5.0 client may use towards the broker (0: none).
    pub topic_alias_maximum: u16,
    /// Longest session expiry granted, in seconds; 3.x persistent sessions get this too.
    pub max_session_expiry_secs: u32,
    /// Keep alive imposed on clients asking for more or for none, in seconds (0: take the
    /// client's).
    pub max_keep_alive_secs: u16,
    /// Queue QoS 0 messages for offline persistent sessions.
    pub queue_qos0_offline: bool,
    /// Accept MQTT 3.1 (`MQIsdp`) clients.
    pub allow_v3_1: bool,
    /// How a `$share` group picks the member that gets a message.
    #[serde(
        deserialize_with = "share_strategy",
        serialize_with = "share_strategy_name"
    )]
    pub shared_subscriptions: CoreShareStrategy,
}

impl Default for Mqtt {
    fn default() -> Self {
        Self {
            max_qos: 2,
            retain_available: true,
            topic_alias_maximum: 16,
            max_session_expiry_secs: 7 * 24 * 3600,
            max_keep_alive_secs: 0,
            queue_qos0_offline: false,
            allow_v3_1: true,
            shared_subscriptions: CoreShareStrategy::RoundRobin,
        }
    }
}

fn qos<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    in_range(d, 0..=2, "(QoS)")
}

/// The names of the core's shared-subscription strategies in the file (the core's own
/// type is used, read and written through these names).
const SHARE_STRATEGIES: [(&str, CoreShareStrategy); 4] = [
    ("round-robin", CoreShareStrategy::RoundRobin),
    ("random", CoreShareStrategy::Random),
    ("hash-publisher", CoreShareStrategy::HashPublisher),
    ("hash-topic", CoreShareStrategy::HashTopic),
];

fn share_strategy<'de, D: Deserializer<'de>>(d: D) -> Result<CoreShareStrategy, D::Error> {
    let name = String::deserialize(d)?;
    SHARE_STRATEGIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, s)| s)
        .ok_or_else(|| {
            D::Error::unknown_variant(
                &name,
                &["round-robin", "random", "hash-publisher", "hash-topic"],
            )
        })
}

fn share_strategy_name<S: serde::Serializer>(
    strategy: &CoreShareStrategy,
    s: S,
) -> Result<S::Ok, S::Error> {
    let name = SHARE_STRATEGIES
        .iter()
        .find(|(_, x)| x == strategy)
        .map_or("round-robin", |&(n, _)| n);
    s.serialize_str(name)
}

// --- metrics and log ----------------------------------------------------------------------

/// Observability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    /// Address of the HTTP listener serving Prometheus `/metrics`; none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Seconds between `$SYS/broker/...` updates (0: no `$SYS` topics).
    pub sys_interval_secs: u32,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            listen: None,
            sys_interval_secs: 10,
        }
    }
}

/// Logging (to stderr).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// A level (`error`, `warn`, `info`, `debug`, `trace`) or tracing directives such as
    /// `info,fulmar_edge=debug`.
    #[serde(deserialize_with = "log_level")]
    pub level: String,
    /// Line format.
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Human,
        }
    }
}

fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let level = String::deserialize(d)?;
    check_log_level(&level).map_err(D::Error::custom)?;
    Ok(level)
}

/// Whether `level` is a valid tracing filter. Stricter than tracing: a bare word must be a
/// level, because tracing would take a misspelt level (`debgu`) as the name of a target
/// and quietly log almost nothing.
pub fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let bad = |why: String| format!("invalid log level {level:?}: {why}");
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', ':', '[']);
        if bare && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(bad(format!(
                "`{directive}` is not a level (error, warn, info, debug, trace, off)"
            )));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(drop)
        .map_err(|e| bad(e.to_string()))
}

// --- bridges ------------------------------------------------------------------------------

/// A bridge to an upstream broker (Mosquitto's `connection` / `address` / `topic`): a
/// persistent local session that queues what matches its `up` filters (store and forward,
/// see `crate::bridge`) and an MQTT client connection upstream that forwards it, and
/// brings what matches the `down` filters into this broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    /// The client identifier upstream, and the name of the local bridge session (unique
    /// among the bridges; a local client with this identifier is refused while the bridge
    /// exists).
    #[serde(deserialize_with = "bridge_name")]
    pub name: String,
    /// The upstream broker, `host:port`; the host is resolved again before every
    /// connection (a cloud broker's address changes).
    #[serde(deserialize_with = "bridge_address")]
    pub address: String,
    /// Speak MQTT over TLS upstream (rustls): upstream's certificate is verified against
    /// `ca_file` and must name the host of `address`.
    #[serde(default)]
    pub tls: bool,
    /// CA certificates (PEM) upstream's certificate is verified against, with `tls`.
    /// Default: the system's bundle, [`SYSTEM_CA_FILE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// With `tls`: the client certificate chain (PEM) presented to upstream, for brokers
    /// that authenticate clients by certificate (needs `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// With `tls`: the client certificate's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// The MQTT version spoken upstream.
    #[serde(default)]
    pub protocol: BridgeProtocol,
    /// Keep alive announced upstream, in seconds (at least 1).
    #[serde(default = "default_bridge_keep_alive", deserialize_with = "keep_alive")]
    pub keep_alive: u16,
    /// User name sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password sent upstream (needs `username`: 3.1.1 cannot send one without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The largest packet upstream takes, in bytes, when it cannot say so itself (3.1.1);
    /// larger messages are dropped, counted, instead of sent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bridge_max_packet"
    )]
    pub max_packet: Option<u32>,
    /// Local messages forwarded upstream.
    #[serde(default, deserialize_with = "bridge_filters")]
    pub up: Vec<BridgeFilter>,
    /// Upstream messages brought into this broker.
    #[serde(default, deserialize_with = "bridge_filters")]
    pub down: Vec<BridgeFilter>,
}

/// A topic filter a bridge forwards, with the highest QoS it forwards at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeFilter {
    /// Topic filter (`+` and `#` wildcards).
    #[serde(deserialize_with = "topic_filter")]
    pub filter: String,
    /// Highest QoS (0, 1 or 2; `down` filters are subscribed at 1 at most).
    #[serde(default = "default_bridge_qos", deserialize_with = "qos")]
    pub qos: u8,
}

/// The MQTT version a bridge speaks upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BridgeProtocol {
    /// MQTT 3.1.1 (every broker has it).
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.0.
    #[serde(rename = "5")]
    V5,
}

/// The CA bundle of Debian and its derivatives (package `ca-certificates`), which a TLS
/// bridge verifies upstream against when it names no `ca_file`.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn default_bridge_keep_alive() -> u16 {
    30
}

fn default_bridge_qos() -> u8 {
    1
}

fn bridge_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    // A client identifier is a UTF-8 string of at most 65 535 bytes [MQTT-3.1.3-4]; an
    // empty one would ask upstream to assign one, and the bridge's session must keep its
    // name across connections.
    if name.is_empty() || name.len() > usize::from(u16::MAX) {
        return Err(D::Error::custom(
            "a bridge name is a client identifier of 1 to 65535 bytes",
        ));
    }
    Ok(name)
}

fn bridge_address<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let address = String::deserialize(d)?;
    match fulmar_core::uplink::split_host_port(&address) {
        Some(_) => Ok(address),
        None => Err(D::Error::custom(format!(
            "{address:?} is not host:port (a name or an address, and a port)"
        ))),
    }
}

fn keep_alive<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    in_range(d, 1..=u16::MAX, "seconds")
}

fn bridge_max_packet<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let min = fulmar_core::uplink::MIN_MAX_PACKET;
    in_range(d, min..=MAX_PACKET_SIZE_CEILING, "bytes").map(Some)
}

fn bridge_filters<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<BridgeFilter>, D::Error> {
    let filters = Vec::<BridgeFilter>::deserialize(d)?;
    let max = fulmar_core::uplink::MAX_FILTERS;
    if filters.len() > max {
        return Err(D::Error::custom(format!(
            "{} filters: a bridge forwards at most {max} in each direction",
            filters.len()
        )));
    }
    Ok(filters)
}

fn topic_filter<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use fulmar_core::topic::{SubscriptionFilter, TopicLimits};
    let filter = String::deserialize(d)?;
    // The syntax here [MQTT-4.7.1-1] [MQTT-4.7.1-2]; the configured length and depth limits
    // are checked when the bridge opens.
    if let Err(error) = SubscriptionFilter::parse(&filter, &TopicLimits::DEFAULT) {
        return Err(D::Error::custom(format!(
            "{filter:?} is not a topic filter: {error}"
        )));
    }
    if filter.starts_with("$share/") {
        return Err(D::Error::custom(
            "a bridge filter cannot be a shared subscription",
        ));
    }
    Ok(filter)
}

impl Bridge {
    /// The CA file a TLS bridge verifies upstream's certificate against.
    pub fn ca_file(&self) -> PathBuf {
        self.ca_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_FILE))
    }

    /// The client's configuration in the core's terms, borrowing from this one (the
    /// address is resolved by the host, so `host` and `port` are only shown in logs).
    pub fn uplink(&self) -> fulmar_core::uplink::Config<'_> {
        use fulmar_core::codec::ProtocolVersion;
        let (host, port) =
            fulmar_core::uplink::split_host_port(&self.address).unwrap_or((&self.address, 0));
        let mut config = fulmar_core::uplink::Config::new(host, port);
        config.client_id = &self.name;
        config.keep_alive = self.keep_alive;
        config.protocol = match self.protocol {
            BridgeProtocol::V311 => ProtocolVersion::V3_1_1,
            BridgeProtocol::V5 => ProtocolVersion::V5,
        };
        config.username = self.username.as_deref();
        config.password = self.password.as_deref();
        config.max_packet = self.max_packet;
        for (list, filters) in [(&mut config.up, &self.up), (&mut config.down, &self.down)] {
            for f in filters {
                // Never more than MAX_FILTERS: checked when read.
                let _ = list.push((f.filter.as_str(), qos_of(f.qos)));
            }
        }
        config
    }
}

/// The core's QoS of a checked number (0 to 2).
fn qos_of(qos: u8) -> fulmar_core::codec::QoS {
    use fulmar_core::codec::QoS;
    match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

// --- mapping onto the core ----------------------------------------------------------------

impl Config {
    /// The broker state machine's configuration.
    pub fn core(&self) -> fulmar_core::broker::Config {
        use fulmar_core::broker::OverflowPolicy;
        let l = &self.limits;
        let m = &self.mqtt;
        let max_connections = l.max_connections.get();
        fulmar_core::broker::Config {
            // The accept loop enforces the same number before the core sees a connection,
            // so the core's refusal is only a backstop.
            max_connections,
            // Every served connection may become a client.
            max_clients: max_connections,
            max_sessions: l.max_sessions.get().max(max_connections),
            max_packet_size: l.max_packet_size,
            max_subscriptions_per_client: l.max_subscriptions_per_client.get(),
            max_inflight: l.max_inflight.get(),
            receive_maximum: l.receive_maximum.get(),
            max_queued_messages: l.max_queued_messages.get(),
            max_queued_bytes: l.max_queued_bytes.get(),
            overflow_policy: match l.overflow {
                // A full subscriber queue slows its publishers rather than dropping
                // messages that were acknowledged (Mosquitto drops: DropNew).
                Overflow::Backpressure => OverflowPolicy::Backpressure,
                Overflow::DropNew => OverflowPolicy::DropNew,
                Overflow::DropOldest => OverflowPolicy::DropOldest,
            },
            // Growable storage: a client's pending answers take no other client's room (its
            // writer's own bound holds it back).
            max_pending_controls: usize::MAX,
            // QoS 0 is at most once: a slow subscriber drops it rather than make its
            // publisher wait, unbounded, in socket buffers (unless asked to).
            qos0_backpressure: l.qos0_backpressure,
            queue_qos0_offline: m.queue_qos0_offline,
            max_retained: l.max_retained,
            max_retained_bytes: l.max_retained_bytes,
            topic_limits: fulmar_core::topic::TopicLimits {
                max_len: l.max_topic_length,
                max_depth: l.max_topic_depth.get(),
            },
            max_qos: qos_of(m.max_qos),
            retain_available: m.retain_available,
            topic_alias_maximum: m.topic_alias_maximum,
            max_session_expiry: m.max_session_expiry_secs,
            max_keep_alive: m.max_keep_alive_secs,
            connect_timeout: fulmar_core::time::Duration::from_secs(u64::from(
                l.connect_timeout_secs,
            )),
            share_strategy: m.shared_subscriptions,
            allow_v3_1: m.allow_v3_1,
            // The store takes what the core reports (`poll_persist`) only when it is open.
            persistence: self.persistence.enabled,
        }
    }

    /// Where and how the store keeps the broker's state.
    pub fn store_settings(&self) -> crate::store::Settings {
        crate::store::Settings {
            enabled: self.persistence.enabled,
            data_dir: self.data_dir.clone(),
            sync: self.persistence.sync,
        }
    }

    /// Checks that the files the configuration names (certificates, keys, password and
    /// ACL files) are there, so a typo is reported with its key rather than later by the
    /// part that opens the file. Relative paths are relative to the working directory.
    pub fn check_files(&self) -> Result<(), Invalid> {
        let secure = [("tls", &self.listeners.tls), ("wss", &self.listeners.wss)];
        let listener_files = secure.into_iter().flat_map(|(kind, listeners)| {
            listeners.iter().enumerate().flat_map(move |(i, l)| {
                [
                    ("cert", Some(&l.cert)),
                    ("key", Some(&l.key)),
                    ("client_ca", l.client_ca.as_ref()),
                ]
                .into_iter()
                .filter_map(move |(name, path)| {
                    Some((format!("listeners.{kind}.{i}.{name}"), path?))
                })
            })
        });
        let auth_files = [
            ("auth.password_file", self.auth.password_file.as_ref()),
            ("auth.acl_file", self.auth.acl_file.as_ref()),
        ]
        .into_iter()
        .filter_map(|(key, path)| Some((key.to_owned(), path?)));
        let bridge_files = self.bridges.iter().enumerate().flat_map(|(i, b)| {
            [("ca_file", &b.ca_file), ("cert", &b.cert), ("key", &b.key)]
                .into_iter()
                .filter_map(move |(name, path)| {
                    Some((format!("bridges.{i}.{name}"), path.as_ref()?))
                })
        });
        for (key, path) in listener_files.chain(auth_files).chain(bridge_files) {
            if !path.is_file() {
                let message = format!("{} is not a readable file", path.display());
                return Err(Invalid::new(key, message));
            }
        }
        Ok(())
    }

    /// Checks that involve more than one key (each value alone was checked when read).
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.listeners.is_empty() {
            return Err(Invalid::new(
                "listeners",
                "no listener configured: give at least one (e.g. --listen 0.0.0.0:1883)",
            ));
        }
        if let Some(i) = self.listeners.tls.iter().position(|l| l.path.is_some()) {
            return Err(Invalid::new(
                format!("listeners.tls.{i}.path"),
                "only WebSocket listeners (listeners.wss) have a path",
            ));
        }
        let secure = [("tls", &self.listeners.tls), ("wss", &self.listeners.wss)];
        for (kind, listeners) in secure {
            let needs_ca = listeners
                .iter()
                .position(|l| l.require_client_cert && l.client_ca.is_none());
            if let Some(i) = needs_ca {
                return Err(Invalid::new(
                    format!("listeners.{kind}.{i}.require_client_cert"),
                    "require_client_cert needs client_ca (the CA that signs client certificates)",
                ));
            }
            // Without a CA no certificate is asked for, so there would never be an identity.
            let identity_without_ca = listeners
                .iter()
                .position(|l| l.identity_from_cert != CertIdentity::None && l.client_ca.is_none());
            if let Some(i) = identity_without_ca {
                return Err(Invalid::new(
                    format!("listeners.{kind}.{i}.identity_from_cert"),
                    "identity_from_cert needs client_ca: without it clients are not asked for a \
                     certificate",
                ));
            }
        }
        for (i, bridge) in self.bridges.iter().enumerate() {
            let taken = self.bridges.get(..i).unwrap_or_default();
            if taken.iter().any(|b| b.name == bridge.name) {
                return Err(Invalid::new(
                    format!("bridges.{i}.name"),
                    format!("two bridges are named {:?}", bridge.name),
                ));
            }
            // [MQTT-3.1.2-22]: 3.1.1 has no password without a user name.
            if bridge.password.is_some() && bridge.username.is_none() {
                return Err(Invalid::new(
                    format!("bridges.{i}.password"),
                    "a password needs a username",
                ));
            }
            let tls_only = [
                ("ca_file", bridge.ca_file.is_some()),
                ("cert", bridge.cert.is_some()),
                ("key", bridge.key.is_some()),
            ];
            if let Some((key, _)) = tls_only.iter().find(|(_, set)| *set && !bridge.tls) {
                return Err(Invalid::new(
                    format!("bridges.{i}.{key}"),
                    format!("{key} needs tls = true"),
                ));
            }
            if bridge.cert.is_some() != bridge.key.is_some() {
                let key = if bridge.cert.is_some() { "cert" } else { "key" };
                return Err(Invalid::new(
                    format!("bridges.{i}.{key}"),
                    "a client certificate needs both cert and key",
                ));
            }
            let host =
                fulmar_core::uplink::split_host_port(&bridge.address).map_or("", |(host, _)| host);
            let named = rustls::pki_types::ServerName::try_from(host).is_ok();
            if bridge.tls && !named {
                return Err(Invalid::new(
                    format!("bridges.{i}.address"),
                    format!("{host:?} is not a name a TLS certificate can have"),
                ));
            }
            if bridge.up.is_empty() && bridge.down.is_empty() {
                return Err(Invalid::new(
                    format!("bridges.{i}.name"),
                    "the bridge forwards nothing: give `up` or `down` filters",
                ));
            }
        }
        if self.limits.max_queued_bytes.get() < self.limits.max_packet_size as usize {
            return Err(Invalid::new(
                "limits.max_queued_bytes",
                format!(
                    "max_queued_bytes ({}) is below max_packet_size ({}): a message of the \
                     largest size could never be queued",
                    self.limits.max_queued_bytes, self.limits.max_packet_size
                ),
            ));
        }
        Ok(())
    }
}

/// A check of [`Config::validate`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The dotted key the problem is reported at (array indices as numbers).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl Invalid {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::sources::from_text;
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        from_text(std::path::Path::new("test.toml"), text)
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn the_shipped_file_documents_the_defaults() {
        let text = include_str!("../dist/fulmar.toml");
        assert_eq!(parse(text).unwrap(), Config::default());
    }

    /// A configuration with every optional key set and one listener of each kind, so its
    /// serialization names every key of the schema.
    fn everything() -> Config {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let mut config = Config::default();
        config.listeners.tls.push(TlsListener {
            addr,
            path: None,
            cert: "c".into(),
            key: "k".into(),
            client_ca: Some("ca".into()),
            require_client_cert: true,
            identity_from_cert: CertIdentity::Cn,
        });
        config.listeners.ws.push(WsListener {
            addr,
            path: "/mqtt".into(),
        });
        config.listeners.wss.push(TlsListener {
            addr,
            path: Some("/mqtt".into()),
            cert: "c".into(),
            key: "k".into(),
            client_ca: Some("ca".into()),
            require_client_cert: true,
            identity_from_cert: CertIdentity::San,
        });
        config.auth = Auth {
            allow_anonymous: Some(false),
            password_file: Some("p".into()),
            acl_file: Some("a".into()),
        };
        config.metrics.listen = Some(addr);
        config.bridges.push(Bridge {
            name: "edge".into(),
            address: "cloud:1883".into(),
            tls: true,
            ca_file: Some("ca".into()),
            cert: Some("c".into()),
            key: Some("k".into()),
            protocol: BridgeProtocol::V5,
            keep_alive: 30,
            username: Some("u".into()),
            password: Some("p".into()),
            max_packet: Some(1024),
            up: vec![BridgeFilter {
                filter: "sensors/#".into(),
                qos: 1,
            }],
            down: vec![BridgeFilter {
                filter: "commands/#".into(),
                qos: 1,
            }],
        });
        config
    }

    /// The keys under `value`, each with whether it is a list of tables.
    fn keys(value: &toml::Value, prefix: &str, out: &mut Vec<(String, bool)>) {
        let Some(table) = value.as_table() else {
            return;
        };
        for (k, v) in table {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(_) => keys(v, &path, out),
                toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
                    out.push((path.clone(), true));
                    for item in items {
                        keys(item, &path, out);
                    }
                }
                _ => out.push((path, false)),
            }
        }
    }

    #[test]
    fn the_shipped_file_documents_every_key() {
        let text = include_str!("../dist/fulmar.toml");
        let mut all = Vec::new();
        keys(&toml::Value::try_from(everything()).unwrap(), "", &mut all);
        for (key, list) in all {
            let name = key.rsplit('.').next().unwrap();
            // Set (`name = …`) or shown commented out (`# name = …`); a list of tables by
            // its header (`[[listeners.tls]]`).
            let documented = text.lines().any(|line| {
                let line = line.trim_start_matches(['#', ' ']);
                if list {
                    line.starts_with(&format!("[[{key}]]"))
                } else {
                    line.starts_with(&format!("{name} ="))
                }
            });
            assert!(documented, "dist/fulmar.toml does not document `{key}`");
        }
        // And the full example round-trips through TOML.
        // (Read without the checks: its files do not exist.)
        let written = toml::to_string(&everything()).unwrap();
        assert_eq!(toml::from_str::<Config>(&written).unwrap(), everything());
    }

    #[test]
    fn sections_are_the_tables_of_the_schema() {
        let value = toml::Value::try_from(everything()).unwrap();
        let mut tables: Vec<&str> = value
            .as_table()
            .unwrap()
            .iter()
            .filter(|(_, v)| v.is_table())
            .map(|(k, _)| k.as_str())
            .collect();
        tables.sort_unstable();
        let mut sections = SECTIONS.to_vec();
        sections.sort_unstable();
        assert_eq!(tables, sections);
    }

    fn error_at(text: &str) -> (usize, usize, String) {
        let error = parse(text).unwrap_err();
        let (_, line, column) = error.location().expect("a location");
        (line, column, error.to_string())
    }

    #[test]
    fn an_unknown_key_is_pointed_at() {
        let (line, column, message) =
            error_at("[limits]\nmax_inflight = 5\n  max_conections = 3\n");
        assert_eq!((line, column), (3, 3), "{message}");
        assert!(
            message.starts_with("test.toml:3:3: unknown field `max_conections`"),
            "{message}"
        );
    }

    #[test]
    fn bad_values_are_pointed_at() {
        let cases = [
            ("[limits]\nmax_packet_size = 10\n", (2, 19), "out of range"),
            ("[limits]\nmax_inflight = 0\n", (2, 16), "nonzero"),
            (
                "[limits]\noverflow = \"drop\"\n",
                (2, 12),
                "unknown variant",
            ),
            ("[[listeners.tcp]]\naddr = \"nowhere\"\n", (2, 8), "address"),
            (
                "[[listeners.ws]]\naddr = \"[::1]:80\"\npath = \"mqtt\"\n",
                (3, 8),
                "start with",
            ),
            ("[log]\nlevel = \"debgu\"\n", (2, 9), "log level"),
            ("[persistence]\nsync = 1\n", (2, 8), "sync"),
            ("[runtime]\nshards = 0\n", (2, 10), "from 1 to 64"),
            ("[runtime]\nshards = 65\n", (2, 10), "from 1 to 64"),
            ("[runtime]\nshards = \"all\"\n", (2, 10), "\"auto\""),
            (
                "[[bridges]]\nname = \"b\"\naddress = \"h:1\"\nup = [{ filter = \"a/#/b\" }]\n",
                (4, 18),
                "not a topic filter",
            ),
            (
                "[[bridges]]\nname = \"b\"\naddress = \"nowhere\"\n",
                (3, 11),
                "host:port",
            ),
            (
                "[[bridges]]\nname = \"b\"\naddress = \"h:1\"\nkeep_alive = 0\n",
                (4, 14),
                "out of range",
            ),
            (
                "[[bridges]]\nname = \"b\"\naddress = \"h:1\"\nprotocol = \"4\"\n",
                (4, 12),
                "unknown variant",
            ),
        ];
        for (text, at, words) in cases {
            let (line, column, message) = error_at(text);
            assert_eq!((line, column), at, "{text}: {message}");
            assert!(message.contains(words), "{text}: {message}");
        }
    }

    #[test]
    fn a_bridge_maps_onto_the_uplink_client() {
        let text = "[[bridges]]\nname = \"edge-1\"\naddress = \"[::1]:1884\"\nprotocol = \"5\"\n\
                    username = \"u\"\npassword = \"p\"\n\
                    [[bridges.up]]\nfilter = \"sensors/#\"\n\
                    [[bridges.down]]\nfilter = \"commands/#\"\nqos = 0\n";
        let config = parse(text).unwrap();
        let bridge = &config.bridges[0];
        let uplink = bridge.uplink();
        assert_eq!((uplink.host, uplink.port), ("::1", 1884));
        assert_eq!(uplink.client_id, "edge-1");
        assert_eq!(uplink.keep_alive, 30);
        assert_eq!(uplink.protocol, fulmar_core::codec::ProtocolVersion::V5);
        assert_eq!((uplink.username, uplink.password), (Some("u"), Some("p")));
        assert_eq!(
            uplink.up.as_slice(),
            [("sensors/#", fulmar_core::codec::QoS::AtLeastOnce)]
        );
        assert_eq!(
            uplink.down.as_slice(),
            [("commands/#", fulmar_core::codec::QoS::AtMostOnce)]
        );
        // Checks across keys point at the key.
        let (line, _, message) = error_at(
            "[[bridges]]\nname = \"b\"\naddress = \"h:1\"\npassword = \"p\"\nup = [{ filter = \"a\" }]\n",
        );
        assert_eq!(line, 4, "{message}");
        assert!(message.contains("username"), "{message}");
        let twice = "[[bridges]]\nname = \"b\"\naddress = \"h:1\"\nup = [{ filter = \"a\" }]\n";
        let (line, _, message) = error_at(&format!("{twice}{twice}"));
        assert_eq!(line, 6, "{message}");
        assert!(message.contains("two bridges"), "{message}");
        let (_, _, message) = error_at("[[bridges]]\nname = \"b\"\naddress = \"h:1\"\n");
        assert!(message.contains("forwards nothing"), "{message}");
        let tls = "[[bridges]]\nname = \"b\"\naddress = \"h:1\"\nup = [{ filter = \"a\" }]\n";
        let (line, _, message) = error_at(&format!("{tls}ca_file = \"/nonexistent\"\n"));
        assert_eq!(line, 5, "{message}");
        assert!(message.contains("needs tls"), "{message}");
        let (line, _, message) = error_at(&format!("{tls}tls = true\ncert = \"c.pem\"\n"));
        assert_eq!(line, 6, "{message}");
        assert!(message.contains("both cert and key"), "{message}");
        let (line, _, message) = error_at(&format!(
            "{tls}tls = true\nca_file = \"/nonexistent/ca.pem\"\n"
        ));
        assert_eq!(line, 6, "{message}");
        assert!(message.contains("not a readable file"), "{message}");
        let text = format!("{tls}tls = true\n");
        let bridge = &parse(&text).unwrap().bridges[0];
        assert_eq!(bridge.ca_file(), PathBuf::from(SYSTEM_CA_FILE));
    }

    #[test]
    fn shards_are_one_per_core_unless_fixed() {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let auto = parse("").unwrap().runtime.shards;
        assert_eq!(auto, ShardCount::Auto);
        assert_eq!(auto.resolve().get(), cores.min(ShardCount::MAX_AUTO));
        let fixed = parse("[runtime]\nshards = 3\n").unwrap().runtime.shards;
        assert_eq!(fixed.resolve().get(), 3);
        let auto = parse("[runtime]\nshards = \"auto\"\n")
            .unwrap()
            .runtime
            .shards;
        assert_eq!(auto, ShardCount::Auto);
    }

    #[test]
    fn checks_across_keys_point_at_the_key() {
        let text = "[[listeners.tls]]\naddr = \"0.0.0.0:8883\"\ncert = \"c\"\nkey = \"k\"\n\
                    require_client_cert = true\n";
        let (line, column, message) = error_at(text);
        assert_eq!((line, column), (5, 23), "{message}");
        assert!(message.contains("client_ca"), "{message}");
        let text = "[[listeners.wss]]\naddr = \"0.0.0.0:8443\"\ncert = \"c\"\nkey = \"k\"\n\
                    identity_from_cert = \"cn\"\n";
        let (line, column, message) = error_at(text);
        assert_eq!((line, column), (5, 22), "{message}");
        assert!(message.contains("client_ca"), "{message}");
        let (line, column, message) =
            error_at("data_dir = \"d\"\n[auth]\npassword_file = \"/nonexistent/passwd\"\n");
        assert_eq!((line, column), (3, 17), "{message}");
        assert!(message.contains("auth.password_file"), "{message}");
        let text = "[[listeners.tls]]\naddr = \"0.0.0.0:8883\"\ncert = \"c\"\nkey = \"k\"\npath = \"/x\"\n";
        let (line, _, message) = error_at(text);
        assert_eq!(line, 5, "{message}");
        let (_, _, message) = error_at("[limits]\nmax_queued_bytes = 100\n");
        assert!(message.contains("max_queued_bytes"), "{message}");
    }

    #[test]
    fn the_defaults_reach_the_core() {
        let core = Config::default().core();
        assert_eq!(core.max_connections, 1024);
        assert_eq!(core.max_sessions, 2048);
        assert_eq!(core.max_packet_size, 256 * 1024);
        assert_eq!(core.connect_timeout.as_millis(), 10_000);
        assert_eq!(core.topic_limits.max_len, 1024);
        let mut config = Config::default();
        config.limits.overflow = Overflow::DropOldest;
        config.mqtt.max_qos = 1;
        let core = config.core();
        assert_eq!(
            core.overflow_policy,
            fulmar_core::broker::OverflowPolicy::DropOldest
        );
        assert_eq!(core.max_qos, fulmar_core::codec::QoS::AtLeastOnce);
    }

    #[test]
    fn anonymous_access_follows_the_password_file() {
        let mut auth = Auth::default();
        assert!(auth.anonymous_allowed());
        auth.password_file = Some("p".into());
        assert!(!auth.anonymous_allowed());
        auth.allow_anonymous = Some(true);
        assert!(auth.anonymous_allowed());
    }
}
