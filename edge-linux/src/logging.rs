//! Logging: `tracing` events written to stderr, for people (the default) or as one JSON
//! object per line for log collectors (`--log-format json`).
//!
//! Human lines carry colours only on a terminal, so files and journald get plain text. JSON
//! lines put the event's fields at the top level next to `timestamp`, `level`, `target`
//! and `message` (tracing-subscriber's `flatten_event`), which is what Loki, Vector or
//! Elasticsearch ingest without a parsing rule:
//!
//! ```text
//! {"timestamp":"2026-01-01T00:00:00.000000Z","level":"INFO","message":"fulmar 0.1.0 listening on 0.0.0.0:1883 (mqtt)","target":"fulmar_edge::server"}
//! ```

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written (`log.format` in `fulmar.toml`: `"human"` or `"json"`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Plain text for people.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The filter is neither a level nor valid tracing directives.
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        /// The filter given.
        filter: String,
        /// What the parser said.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber is set already.
    #[error("logging is set up already: {0}")]
    Init(String),
}

/// Installs the global subscriber: events passing `filter` (a level such as `info`, or
/// directives such as `info,fulmar_edge=debug`) go to stderr in `format`.
pub fn init(filter: &str, format: LogFormat) -> Result<(), Error> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| Error::Filter {
        filter: filter.to_owned(),
        source,
    })?;
    // Logs go to stderr: stdout stays free for commands that print results.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    installed.map_err(|error| Error::Init(error.to_string()))
}
