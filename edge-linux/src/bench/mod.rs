//! `fulmar bench`: a load generator for any MQTT broker, in the manner of `emqtt-bench`
//! and `nanomq bench`.
//!
//! - `fulmar bench conn`: opens many connections and holds them idle (with keep-alive
//!   pings), for memory-per-connection measurements; reports connect latency.
//! - `fulmar bench pub`: many publishers at a QoS, payload size and rate; reports sent and
//!   acknowledged messages per second.
//! - `fulmar bench sub`: many subscribers; reports received messages per second,
//!   end-to-end latency (from the time stamped in each payload), duplicates and holes in
//!   each publisher's sequence.
//! - `fulmar bench pubsub`: publishers and subscribers in one process. Knowing exactly what
//!   was sent, it reports delivered messages per second, latency, and the exact number of
//!   lost and duplicated deliveries; `cargo xtask bench` runs its scenarios with it.
//!
//! Topics may contain `%i`, replaced by the client's index (0-based), so `bench/%i`
//! gives each publisher its own topic. Clients speak MQTT 3.1.1 (or 5.0) through
//! [`fulmar_core::codec`] over tokio TCP with TCP_NODELAY; the tool adds no dependency.
//! Every connection sends a Keep Alive (60 s by default) and pings at half of it: some
//! brokers (rumqttd) refuse a Keep Alive of 0.
//!
//! Each command ends with a human summary and one machine-readable line starting with
//! `result:` (space-separated `key=value` pairs), which `cargo xtask bench` parses.

mod client;
mod conn;
mod load;
mod stats;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Args, Subcommand};
use fulmar_core::codec::{ProtocolVersion, QoS};

use client::Dialer;

/// Why a load run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the tool was doing.
        context: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The broker closed a connection the tool still needed.
    #[error("the broker closed a connection")]
    Closed,
    /// The broker sent something the tool cannot make sense of.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The broker refused a connection or a subscription.
    #[error("{0}")]
    Refused(String),
    /// The broker did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// The arguments do not describe a run that can be made.
    #[error("{0}")]
    Usage(String),
}

impl BenchError {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// `fulmar bench`: its modes.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to run.
    #[command(subcommand)]
    pub mode: Mode,
}

/// The modes of `fulmar bench`.
#[derive(Debug, Clone, Subcommand)]
pub enum Mode {
    /// Open many connections and hold them idle (memory per connection, connect rate).
    Conn(ConnArgs),
    /// Publish from many clients at a fixed QoS, payload size and rate.
    Pub(PubArgs),
    /// Subscribe with many clients; report rate, latency, duplicates and holes.
    Sub(SubArgs),
    /// Publishers and subscribers in one process, with exact loss and duplicate counts.
    Pubsub(PubSubArgs),
}

/// Where to connect and how every client says hello.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Broker host name or address.
    #[arg(short = 'H', long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(short, long, default_value_t = 1883)]
    pub port: u16,
    /// MQTT version the clients speak: 3.1.1 (or 4) and 5 (or 5.0).
    #[arg(short = 'V', long = "mqtt-version", default_value = "3.1.1", value_parser = parse_version)]
    pub version: ProtocolVersion,
    /// Keep Alive in CONNECT, in seconds; clients ping at half of it. Not 0: some brokers
    /// refuse that.
    #[arg(short, long, default_value_t = 60, value_parser = clap::value_parser!(u16).range(1..))]
    pub keep_alive: u16,
    /// Username sent in CONNECT.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password sent in CONNECT.
    #[arg(short = 'P', long)]
    pub password: Option<String>,
    /// Connect over TLS, verifying the broker's certificate against this CA file (PEM).
    #[arg(long, value_name = "CA_FILE")]
    pub tls: Option<std::path::PathBuf>,
    /// The name the broker's certificate must carry (default: --host).
    #[arg(long, requires = "tls")]
    pub tls_server_name: Option<String>,
    /// Connect over WebSocket (subprotocol `mqtt`) to this path, e.g. `/mqtt`.
    #[arg(long, value_name = "PATH", conflicts_with = "tls")]
    pub ws: Option<String>,
}

/// What a published message looks like and how fast it goes.
#[derive(Debug, Clone, Args)]
pub struct PublishOptions {
    /// QoS of each PUBLISH (and of the subscriptions, for `pubsub`).
    #[arg(short, long, default_value = "0", value_parser = parse_qos)]
    pub qos: QoS,
    /// Payload bytes per message; the first 24 hold the time stamp and message identity.
    #[arg(short, long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(stats::STAMP_LEN as i64..=1 << 20))]
    pub size: u32,
    /// Messages per second per publisher; 0 sends as fast as the broker takes them.
    #[arg(short, long, default_value_t = 0.0)]
    pub rate: f64,
    /// Unacknowledged QoS 1/2 messages each publisher may have in flight (at most the
    /// broker's Receive Maximum, for MQTT 5). The default stays within what brokers
    /// commonly accept from 3.1.1 clients, which cannot be told a limit.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub inflight: u16,
}

/// `fulmar bench conn`.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    #[command(flatten)]
    pub target: Target,
    /// Connections to open.
    #[arg(short, long, default_value_t = 1000)]
    pub count: usize,
    /// Connections opened per second; 0 opens them as fast as the broker accepts.
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Seconds to hold the connections once all are open; 0 holds them until Ctrl-C.
    #[arg(short, long, default_value_t = 10.0)]
    pub duration: f64,
}

/// `fulmar bench pub`.
#[derive(Debug, Clone, Args)]
pub struct PubArgs {
    #[command(flatten)]
    pub target: Target,
    /// Publishers.
    #[arg(short, long, default_value_t = 10)]
    pub count: usize,
    /// Topic; `%i` is replaced by the publisher's index.
    #[arg(short, long, default_value = "bench/%i")]
    pub topic: String,
    #[command(flatten)]
    pub publish: PublishOptions,
    /// Seconds to publish for.
    #[arg(short, long, default_value_t = 10.0)]
    pub duration: f64,
}

/// `fulmar bench sub`.
#[derive(Debug, Clone, Args)]
pub struct SubArgs {
    #[command(flatten)]
    pub target: Target,
    /// Subscribers.
    #[arg(short, long, default_value_t = 10)]
    pub count: usize,
    /// Topic filter; `%i` is replaced by the subscriber's index.
    #[arg(short, long, default_value = "bench/#")]
    pub topic: String,
    /// QoS of the subscriptions.
    #[arg(short, long, default_value = "0", value_parser = parse_qos)]
    pub qos: QoS,
    /// Seconds to receive for; 0 receives until Ctrl-C.
    #[arg(short, long, default_value_t = 10.0)]
    pub duration: f64,
}

/// `fulmar bench pubsub`.
#[derive(Debug, Clone, Args)]
pub struct PubSubArgs {
    #[command(flatten)]
    pub target: Target,
    /// Publishers.
    #[arg(long, default_value_t = 10)]
    pub publishers: usize,
    /// Subscribers.
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// Topic each publisher publishes to; `%i` is replaced by its index.
    #[arg(long, default_value = "bench/%i")]
    pub pub_topic: String,
    /// Filter each subscriber subscribes to; `%i` is replaced by its index.
    #[arg(long, default_value = "bench/#")]
    pub sub_topic: String,
    #[command(flatten)]
    pub publish: PublishOptions,
    /// Seconds to publish for.
    #[arg(short, long, default_value_t = 5.0)]
    pub duration: f64,
    /// After publishing, seconds without any delivery after which the messages still
    /// missing count as lost.
    #[arg(long, default_value_t = 2.0)]
    pub drain_idle: f64,
}

/// Runs one `fulmar bench` command and prints its report on stdout.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    match args.mode {
        Mode::Conn(args) => conn::run(&args).await,
        Mode::Pub(args) => load::publish(&args).await,
        Mode::Sub(args) => load::subscribe(&args).await,
        Mode::Pubsub(args) => load::pubsub(&args).await,
    }
}

impl Target {
    /// The connection settings for every client of the run.
    fn dialer(&self) -> Result<Dialer, BenchError> {
        let addr = resolve(&self.host, self.port)?;
        let tls = match &self.tls {
            Some(ca) => Some(client::Tls::new(
                ca,
                self.tls_server_name.as_deref().unwrap_or(&self.host),
            )?),
            None => None,
        };
        Ok(Dialer {
            addr,
            version: self.version,
            keep_alive: self.keep_alive,
            username: self.username.clone(),
            password: self.password.clone(),
            tls,
            ws: self
                .ws
                .as_ref()
                .map(|path| format!("ws://{}:{}{path}", self.host, self.port)),
        })
    }

    /// How often an idle client pings: half the Keep Alive, so a ping that is late by a
    /// scheduling hiccup still arrives in time ([MQTT-3.1.2-24] allows 1.5 times it).
    fn ping_every(&self) -> Duration {
        Duration::from_millis(u64::from(self.keep_alive) * 500)
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, BenchError> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| BenchError::io(format!("resolve {host}"), e))?
        .next()
        .ok_or_else(|| BenchError::Usage(format!("{host} has no address")))
}

/// A duration in seconds from the command line.
fn seconds(value: f64, what: &str) -> Result<Duration, BenchError> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| BenchError::Usage(format!("{what} must be a number of seconds, not {value}")))
}

/// `pattern` with `%i` replaced by `index`.
fn expand(pattern: &str, index: usize) -> String {
    pattern.replace("%i", &index.to_string())
}

fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "3.1.1" | "4" => Ok(ProtocolVersion::V3_1_1),
        "5" | "5.0" => Ok(ProtocolVersion::V5),
        _ => Err("expected 3.1.1 (or 4) or 5 (or 5.0)".to_owned()),
    }
}

fn parse_qos(s: &str) -> Result<QoS, String> {
    match s {
        "0" => Ok(QoS::AtMostOnce),
        "1" => Ok(QoS::AtLeastOnce),
        "2" => Ok(QoS::ExactlyOnce),
        _ => Err("expected 0, 1 or 2".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn pubsub_arguments_parse() {
        let cli = Cli::try_parse_from([
            "bench",
            "pubsub",
            "--publishers",
            "100",
            "-q",
            "1",
            "-s",
            "1024",
            "-k",
            "30",
            "-V",
            "5",
        ])
        .unwrap();
        let Mode::Pubsub(args) = cli.bench.mode else {
            panic!("not pubsub: {cli:?}")
        };
        assert_eq!(args.publishers, 100);
        assert_eq!(args.publish.qos, QoS::AtLeastOnce);
        assert_eq!(args.publish.size, 1024);
        assert_eq!(args.target.keep_alive, 30);
        assert_eq!(args.target.version, ProtocolVersion::V5);
        assert_eq!(args.target.ping_every(), Duration::from_secs(15));
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            &["bench", "pub", "-q", "3"][..],
            &["bench", "pub", "-s", "8"],
            &["bench", "sub", "-k", "0"],
            &["bench", "conn", "-V", "3"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn topics_expand_the_index() {
        assert_eq!(expand("bench/%i/x", 42), "bench/42/x");
        assert_eq!(expand("bench/#", 42), "bench/#");
    }
}
