//! Configuration: the command line (clap) and the [`Config`] the runtime runs with.
//!
//! [`Cli`] is what the user types; [`Config`] is what the runtime needs, with
//! [`Config::core`] giving the [`fulmar_core::broker::Config`] for the broker state
//! machine. Keeping the two apart lets the TOML file, `FULMAR_…` variables and flags of
//! later steps all end in one `Config`.
//!
//! Not yet done (later steps of the edge broker issue): `--config FILE` (TOML),
//! `check-config`, `--data-dir`, TLS and WebSocket listeners, auth and ACL files, and the
//! remaining core limits as flags. Every other core option keeps its
//! [`fulmar_core::broker::Config::default`] value.

use std::net::SocketAddr;

use clap::Parser;

use crate::logging::LogFormat;
use crate::metrics;

/// Address the broker listens on when no `--listen` is given: MQTT's registered port on
/// every interface.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:1883";

/// Transport connections served at once when not told otherwise. Matches a common
/// `ulimit -n` of 1024 so the default never runs into the open-file limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The `fulmar` command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "fulmar",
    version,
    about = "Fulmar: an MQTT 3.1/3.1.1/5.0 broker for Linux gateways",
    long_about = "Fulmar: an MQTT 3.1/3.1.1/5.0 broker for Linux gateways.\n\n\
                  With no arguments it serves MQTT over TCP on 0.0.0.0:1883 and lets any \
                  client connect (authentication arrives in a later version)."
)]
pub struct Cli {
    /// Serve MQTT over plain TCP on ADDR (host:port). Repeat for several listeners; port 0
    /// picks a free port, which the startup log line reports.
    #[arg(
        long = "listen",
        value_name = "ADDR",
        default_value = DEFAULT_LISTEN,
        env = "FULMAR_LISTEN",
        value_delimiter = ','
    )]
    pub listen: Vec<SocketAddr>,

    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives such as
    /// `info,fulmar_edge=debug`.
    #[arg(
        long = "log",
        value_name = "LEVEL",
        default_value = "info",
        env = "FULMAR_LOG"
    )]
    pub log: String,

    /// Transport connections served at once; more are closed as soon as they are accepted.
    #[arg(
        long = "max-connections",
        value_name = "N",
        default_value_t = DEFAULT_MAX_CONNECTIONS,
        env = "FULMAR_MAX_CONNECTIONS",
        value_parser = at_least_one
    )]
    pub max_connections: usize,

    /// Largest MQTT packet accepted from a client, in bytes (announced to MQTT 5 clients as
    /// Maximum Packet Size); a larger one closes that client's connection.
    #[arg(
        long = "max-packet-size",
        value_name = "BYTES",
        default_value_t = fulmar_core::broker::Config::default().max_packet_size,
        env = "FULMAR_MAX_PACKET_SIZE",
        value_parser = clap::value_parser!(u32).range(64..=268_435_455)
    )]
    pub max_packet_size: u32,

    /// Log line format: `human` (plain text) or `json` (one JSON object per line).
    #[arg(
        long = "log-format",
        value_name = "FORMAT",
        value_enum,
        default_value_t = LogFormat::Human,
        env = "FULMAR_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    /// Seconds between publications of the `$SYS/broker/...` topics (Mosquitto's
    /// sys_interval); 0 turns them off.
    #[arg(
        long = "sys-interval",
        value_name = "SECONDS",
        default_value_t = crate::metrics::DEFAULT_SYS_INTERVAL.as_secs(),
        env = "FULMAR_SYS_INTERVAL"
    )]
    pub sys_interval: u64,

    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given; there is no
    /// authentication, so prefer a loopback address such as 127.0.0.1:9883).
    #[arg(
        long = "metrics-listen",
        value_name = "ADDR",
        env = "FULMAR_METRICS_LISTEN"
    )]
    pub metrics_listen: Option<SocketAddr>,

    /// Persistence: `--data-dir`, `--sync`, `--persistence`.
    #[command(flatten)]
    pub store: crate::store::Args,

    /// A tool to run instead of the broker.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Tools `fulmar` runs instead of the broker.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Load generator for any MQTT broker: `conn`, `pub`, `sub`, `pubsub` (see `fulmar
    /// bench --help`).
    Bench(crate::bench::BenchArgs),
}

/// A count that must not be zero.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// What the runtime runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Plain TCP listeners.
    pub listen: Vec<SocketAddr>,
    /// Transport connections served at once.
    pub max_connections: usize,
    /// Largest packet accepted from a client, fixed header included.
    pub max_packet_size: u32,
    /// `$SYS` topics and the Prometheus endpoint.
    pub metrics: metrics::Settings,
    /// Where and how state is kept.
    pub store: crate::store::Settings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 1883))],
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_packet_size: fulmar_core::broker::Config::default().max_packet_size,
            metrics: metrics::Settings::default(),
            store: crate::store::Settings::default(),
        }
    }
}

impl Config {
    /// The broker state machine's configuration: the core defaults, with the limits this
    /// configuration sets.
    pub fn core(&self) -> fulmar_core::broker::Config {
        let defaults = fulmar_core::broker::Config::default();
        fulmar_core::broker::Config {
            // The accept loop enforces the same number before the core sees a connection,
            // so the core's refusal is only a backstop.
            max_connections: self.max_connections,
            // Every served connection may become a client.
            max_clients: self.max_connections,
            max_sessions: defaults.max_sessions.max(self.max_connections),
            max_packet_size: self.max_packet_size,
            persistence: self.store.enabled,
            ..defaults
        }
    }
}

impl From<&Cli> for Config {
    fn from(cli: &Cli) -> Self {
        Self {
            listen: cli.listen.clone(),
            max_connections: cli.max_connections,
            max_packet_size: cli.max_packet_size,
            metrics: metrics::Settings {
                sys_interval: std::time::Duration::from_secs(cli.sys_interval),
                http_listen: cli.metrics_listen,
            },
            store: crate::store::Settings::from(&cli.store),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_arguments_give_the_defaults() {
        let cli = Cli::try_parse_from(["fulmar"]).unwrap();
        assert_eq!(Config::from(&cli), Config::default());
        assert_eq!(cli.log, "info");
    }

    #[test]
    fn listen_repeats() {
        let cli = Cli::try_parse_from([
            "fulmar",
            "--listen",
            "127.0.0.1:1883",
            "--listen",
            "[::1]:8883",
        ])
        .unwrap();
        assert_eq!(
            cli.listen,
            vec![
                "127.0.0.1:1883".parse::<SocketAddr>().unwrap(),
                "[::1]:8883".parse().unwrap()
            ]
        );
    }

    #[test]
    fn limits_reach_the_core() {
        let cli = Cli::try_parse_from([
            "fulmar",
            "--max-connections",
            "50",
            "--max-packet-size",
            "4096",
        ])
        .unwrap();
        let core = Config::from(&cli).core();
        assert_eq!(core.max_connections, 50);
        assert_eq!(core.max_clients, 50);
        assert_eq!(core.max_packet_size, 4096);
    }

    #[test]
    fn observability_flags() {
        let cli = Cli::try_parse_from([
            "fulmar",
            "--log-format",
            "json",
            "--sys-interval",
            "0",
            "--metrics-listen",
            "127.0.0.1:9883",
        ])
        .unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        let config = Config::from(&cli);
        assert!(config.metrics.sys_interval.is_zero());
        assert_eq!(
            config.metrics.http_listen,
            Some("127.0.0.1:9883".parse().unwrap())
        );
        assert!(Cli::try_parse_from(["fulmar", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Cli::try_parse_from(["fulmar", "--listen", "nowhere"]).is_err());
        assert!(Cli::try_parse_from(["fulmar", "--max-packet-size", "1"]).is_err());
        assert!(Cli::try_parse_from(["fulmar", "--max-connections", "0"]).is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
