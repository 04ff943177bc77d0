//! Where the values of a [`Config`] come from: the `fulmar` / `fulmar run` flags
//! ([`RunArgs`]), `FULMAR_…` variables and `--set` ([`Override`]), the TOML file, and the
//! errors that point into it ([`ConfigError`]). See the [parent module](super) for the
//! order of precedence.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    Config, ENV_PREFIX, Invalid, LogFormat, MAX_PACKET_SIZE_CEILING, Overflow, SECTIONS,
    SyncPolicy, TcpListener, WsListener, check_log_level, default_ws_path,
};

// --- the command line ---------------------------------------------------------------------

/// The flags of `fulmar` / `fulmar run`: the configuration file, the few settings people
/// change most often, and `--set` for any other key. Each named flag can also be given as
/// the variable in its help.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// Read the configuration from FILE (TOML; every key is documented in
    /// dist/fulmar.toml). Without it, the defaults.
    #[arg(long, short = 'c', value_name = "FILE", env = "FULMAR_CONFIG")]
    pub config: Option<PathBuf>,

    /// Serve MQTT over plain TCP on ADDR (host:port), instead of the file's TCP listeners;
    /// repeat for several. Default: 0.0.0.0:1883. Port 0 picks a free port, which the
    /// startup log line reports.
    #[arg(
        long,
        value_name = "ADDR",
        env = "FULMAR_LISTEN",
        value_delimiter = ','
    )]
    pub listen: Vec<SocketAddr>,

    /// Serve MQTT over WebSocket on ADDR (path /mqtt), instead of the file's WebSocket
    /// listeners; repeat for several.
    #[arg(
        long,
        value_name = "ADDR",
        env = "FULMAR_WS_LISTEN",
        value_delimiter = ','
    )]
    pub ws_listen: Vec<SocketAddr>,

    /// Keep the broker's data in DIR (created if missing). Default: ./fulmar-data.
    #[arg(long, value_name = "DIR", env = "FULMAR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// When acknowledgements (PUBACK, PUBREC) and deliveries wait for the disk: `always`
    /// (an fsync per input), `batch` (group commit: one fsync for many inputs) or `none`
    /// (never; state is synced once a second, so a crash of the machine may lose the last
    /// second). Default: batch.
    #[arg(long, value_name = "POLICY", env = "FULMAR_SYNC")]
    pub sync: Option<SyncPolicy>,

    /// Keep state on disk (`false`: everything lives in memory and is lost on exit).
    /// Default: true.
    #[arg(
        long,
        value_name = "BOOL",
        env = "FULMAR_PERSISTENCE",
        action = clap::ArgAction::Set
    )]
    pub persistence: Option<bool>,

    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives such
    /// as `info,fulmar_edge=debug`. Default: info.
    #[arg(long, value_name = "LEVEL", env = "FULMAR_LOG", value_parser = log_level_arg)]
    pub log: Option<String>,

    /// Log line format. Default: human.
    #[arg(long, value_name = "FORMAT", env = "FULMAR_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Seconds between publications of the `$SYS/broker/...` topics (Mosquitto's
    /// sys_interval); 0 turns them off. Default: 10.
    #[arg(long, value_name = "SECONDS", env = "FULMAR_SYS_INTERVAL")]
    pub sys_interval: Option<u32>,

    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given; there is no
    /// authentication, so prefer a loopback address such as 127.0.0.1:9883).
    #[arg(long, value_name = "ADDR", env = "FULMAR_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Transport connections served at once; more are closed as soon as they are
    /// accepted. Default: 1024.
    #[arg(long, value_name = "N", env = "FULMAR_MAX_CONNECTIONS")]
    pub max_connections: Option<NonZeroUsize>,

    /// Largest MQTT packet accepted from a client, in bytes (announced to MQTT 5 clients
    /// as Maximum Packet Size); a larger one closes that client's connection.
    /// Default: 262144.
    #[arg(
        long,
        value_name = "BYTES",
        env = "FULMAR_MAX_PACKET_SIZE",
        value_parser = clap::value_parser!(u32).range(64..=i64::from(MAX_PACKET_SIZE_CEILING))
    )]
    pub max_packet_size: Option<u32>,

    /// Set any configuration key (dotted, as in the file; the value is TOML), e.g.
    /// `--set limits.max_inflight=10` or `--set auth.allow_anonymous=false`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = Override::from_set)]
    pub set: Vec<Override>,
}

fn log_level_arg(level: &str) -> Result<String, String> {
    check_log_level(level).map(|()| level.to_owned())
}

impl RunArgs {
    /// The configuration these flags, the `FULMAR_…` variables of the process and the
    /// file (if given) describe, in that order of precedence.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        let mut overrides = Override::from_env(vars);
        overrides.extend(self.set.iter().cloned());
        load(self.config.as_deref(), &overrides, |config| {
            self.apply(config)
        })
    }

    /// Lays the named flags over `config`.
    pub fn apply(&self, config: &mut Config) {
        if !self.listen.is_empty() {
            config.listeners.tcp = self
                .listen
                .iter()
                .map(|&addr| TcpListener { addr })
                .collect();
        }
        if !self.ws_listen.is_empty() {
            config.listeners.ws = self
                .ws_listen
                .iter()
                .map(|&addr| WsListener {
                    addr,
                    path: default_ws_path(),
                })
                .collect();
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir.clone_from(dir);
        }
        if let Some(sync) = self.sync {
            config.persistence.sync = sync;
        }
        if let Some(enabled) = self.persistence {
            config.persistence.enabled = enabled;
        }
        if let Some(level) = &self.log {
            config.log.level.clone_from(level);
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        if let Some(secs) = self.sys_interval {
            config.metrics.sys_interval_secs = secs;
        }
        if let Some(addr) = self.metrics_listen {
            config.metrics.listen = Some(addr);
        }
        if let Some(n) = self.max_connections {
            config.limits.max_connections = n;
        }
        if let Some(n) = self.max_packet_size {
            config.limits.max_packet_size = n;
        }
    }
}

// --- loading ------------------------------------------------------------------------------

/// Why a configuration could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    File {
        /// The file.
        path: PathBuf,
        /// Its text (for the line and column).
        text: String,
        /// The parser's error, with the span of the offending key or value.
        error: Box<toml::de::Error>,
    },
    /// A check involving several keys failed; `at` is where in the file the key is, if it
    /// is in the file.
    Invalid {
        /// The file and line:column of the key, when the file sets it.
        at: Option<(PathBuf, usize, usize)>,
        /// The failed check.
        invalid: Invalid,
    },
    /// An environment variable or `--set` option does not fit the schema.
    Override {
        /// `FULMAR_…=…` or `--set …`.
        source: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// The file, line and column (1-based) of the error, when it is in a file.
    pub fn location(&self) -> Option<(&Path, usize, usize)> {
        match self {
            Self::File { path, text, error } => {
                let span = error.span()?;
                let (line, column) = line_column(text, span.start);
                Some((path, line, column))
            }
            Self::Invalid {
                at: Some((path, line, column)),
                ..
            } => Some((path, *line, *column)),
            _ => None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Self::File { path, text, error } => {
                // `path:line:column: message` first, as compilers do (editors jump to it),
                // then the line with a caret under the problem.
                let Some(span) = error.span() else {
                    return write!(f, "{}: {}", path.display(), error.message());
                };
                let (line, column) = line_column(text, span.start);
                writeln!(f, "{}:{line}:{column}: {}", path.display(), error.message())?;
                let content = text.lines().nth(line - 1).unwrap_or_default();
                // The span's characters up to the end of its line, at least one.
                let width = text
                    .get(span.start..)
                    .and_then(|rest| rest.get(..span.len().min(rest.len())))
                    .and_then(|spanned| spanned.split('\n').next())
                    .map_or(1, |s| s.chars().count().max(1));
                let gutter = " ".repeat(line.to_string().len());
                writeln!(f, "{gutter} |")?;
                writeln!(f, "{line} | {content}")?;
                write!(
                    f,
                    "{gutter} | {}{}",
                    " ".repeat(column - 1),
                    "^".repeat(width)
                )
            }
            Self::Invalid { at, invalid } => match at {
                Some((path, line, column)) => {
                    write!(f, "{}:{line}:{column}: {invalid}", path.display())
                }
                None => write!(f, "{invalid}"),
            },
            Self::Override { source, message } => write!(f, "{source}: {}", message.trim_end()),
        }
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// One value set from outside the file: by a variable or `--set`.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Where it came from, for error messages (`FULMAR_LIMITS__MAX_INFLIGHT=0`).
    pub source: String,
    /// The dotted key path.
    pub key: Vec<String>,
    /// The value.
    pub value: toml::Value,
}

impl Override {
    /// Parses `--set KEY=VALUE`.
    pub fn from_set(option: &str) -> Result<Self, String> {
        let (key, value) = option
            .split_once('=')
            .ok_or_else(|| format!("expected KEY=VALUE, got {option:?}"))?;
        let key: Vec<String> = key.trim().split('.').map(str::to_owned).collect();
        if key.iter().any(String::is_empty) {
            return Err(format!("bad key in {option:?}"));
        }
        Ok(Self {
            source: format!("--set {option}"),
            key,
            value: parse_value(value.trim()),
        })
    }

    /// The overrides in `vars` (the process environment): `FULMAR_SECTION__KEY=VALUE`
    /// whose section is one of the configuration's. Others are not configuration.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Self> {
        let mut found: Vec<Self> = vars
            .into_iter()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix(ENV_PREFIX)?;
                let key: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
                let section = key.first()?;
                if key.len() < 2 || !SECTIONS.contains(&section.as_str()) {
                    return None;
                }
                Some(Self {
                    source: format!("{name}={value}"),
                    key,
                    value: parse_value(&value),
                })
            })
            .collect();
        // The environment has no order; sort so a conflict resolves the same way each time.
        found.sort_by(|a, b| a.source.cmp(&b.source));
        found
    }
}

/// A TOML value, or the text itself as a string when it is not one.
fn parse_value(text: &str) -> toml::Value {
    // Parsed as the value of a one-key document: a text that smuggles in more keys
    // (`1\nother = 2`) is not a value and stays a string.
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .filter(|t| t.len() == 1)
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

/// Sets the dotted `key` to `new` under `value`, creating tables on the way; a number
/// walks into an existing list (`listeners.tcp.0.addr`). `walked` is the key so far, for
/// error messages.
fn set_path(
    value: &mut toml::Value,
    walked: &str,
    key: &[String],
    new: toml::Value,
) -> Result<(), String> {
    let Some((part, rest)) = key.split_first() else {
        *value = new;
        return Ok(());
    };
    let here = if walked.is_empty() {
        part.clone()
    } else {
        format!("{walked}.{part}")
    };
    let next = match value {
        toml::Value::Table(table) => table
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new())),
        toml::Value::Array(items) => {
            let index: usize = part
                .parse()
                .map_err(|_| format!("`{walked}` is a list: name an element (`{walked}.0`)"))?;
            items
                .get_mut(index)
                .ok_or_else(|| format!("`{walked}` has no element {index}"))?
        }
        _ => return Err(format!("`{walked}` is not a table")),
    };
    set_path(next, &here, rest, new)
}

/// Lays `over` onto `base`: tables merge key by key, anything else (lists too) replaces.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(base), toml::Value::Table(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// Reads `text` as the file `path` on its own (tests).
#[cfg(test)]
pub(super) fn from_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|error| ConfigError::File {
        path: path.to_owned(),
        text: text.to_owned(),
        error: Box::new(error),
    })?;
    validated(config, Some((path, text)))
}

fn validated(config: Config, file: Option<(&Path, &str)>) -> Result<Config, ConfigError> {
    let checked = config.validate().and_then(|()| config.check_files());
    checked.map_err(|invalid| ConfigError::Invalid {
        at: file.and_then(|(path, text)| {
            let (line, column) = find_key(text, &invalid.key)?;
            Some((path.to_owned(), line, column))
        }),
        invalid,
    })?;
    Ok(config)
}

/// Line and column of the dotted `key` in the TOML `text`, if the text sets it.
fn find_key(text: &str, key: &str) -> Option<(usize, usize)> {
    let table = toml::de::DeTable::parse(text).ok()?;
    let mut parts = key.split('.');
    let first = parts.next()?;
    let mut value = table.get_ref().get(first)?;
    let mut span = value.span();
    for part in parts {
        let next = match part.parse::<usize>() {
            Ok(i) => value.get_ref().get(i),
            Err(_) => value.get_ref().get(part),
        }?;
        span = next.span();
        value = next;
    }
    Some(line_column(text, span.start))
}

/// Loads the configuration: the defaults, then the file (if any), then `overrides` in
/// order (later ones win), then `flags` (the named command-line flags), then checks the
/// result.
pub fn load(
    file: Option<&Path>,
    overrides: &[Override],
    flags: impl FnOnce(&mut Config),
) -> Result<Config, ConfigError> {
    let (table_of_file, text) = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let file_error = |error| ConfigError::File {
                path: path.to_owned(),
                text: text.clone(),
                error: Box::new(error),
            };
            // Read once into the schema, for errors that point into the file, and once
            // as a table, to lay the overrides over.
            toml::from_str::<Config>(&text).map_err(file_error)?;
            let table: toml::Table = toml::from_str(&text).map_err(file_error)?;
            (table, Some(text))
        }
        None => (toml::Table::new(), None),
    };
    // The defaults as a tree, so an override can also reach into a default list
    // (`listeners.tcp.0.addr`); the file laid over them.
    let mut table =
        toml::Value::try_from(Config::default()).map_err(|e| ConfigError::Override {
            source: "the defaults".to_owned(),
            message: e.to_string(),
        })?;
    merge(&mut table, toml::Value::Table(table_of_file));
    for o in overrides {
        let fail = |message: String| ConfigError::Override {
            source: o.source.clone(),
            message,
        };
        set_path(&mut table, "", &o.key, o.value.clone()).map_err(fail)?;
        // Checked one at a time so an error names the override that caused it.
        Config::deserialize(table.clone()).map_err(|e| fail(e.to_string()))?;
    }
    let mut config = Config::deserialize(table).map_err(|e| {
        // Unreachable: the file and each override were checked above.
        ConfigError::Override {
            source: "configuration".to_owned(),
            message: e.to_string(),
        }
    })?;
    flags(&mut config);
    match (file, text.as_deref()) {
        (Some(path), Some(text)) => validated(config, Some((path, text))),
        _ => validated(config, None),
    }
}

/// A short description of `config` for `check-config` and the startup log.
pub fn summary(config: &Config) -> String {
    let mut lines = Vec::new();
    let l = &config.listeners;
    let mut listeners: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    listeners.insert("tcp", l.tcp.iter().map(|x| x.addr.to_string()).collect());
    listeners.insert("tls", l.tls.iter().map(|x| x.addr.to_string()).collect());
    listeners.insert(
        "ws",
        l.ws.iter()
            .map(|x| format!("{}{}", x.addr, x.path))
            .collect(),
    );
    listeners.insert(
        "wss",
        l.wss
            .iter()
            .map(|x| format!("{}{}", x.addr, x.ws_path()))
            .collect(),
    );
    let listeners: Vec<String> = listeners
        .into_iter()
        .filter(|(_, addrs)| !addrs.is_empty())
        .map(|(kind, addrs)| format!("{kind} {}", addrs.join(", ")))
        .collect();
    lines.push(format!("listeners: {}", listeners.join("; ")));
    lines.push(format!("data_dir: {}", config.data_dir.display()));
    let p = &config.persistence;
    lines.push(if p.enabled {
        format!(
            "persistence: on, sync {}",
            match p.sync {
                SyncPolicy::Always => "always",
                SyncPolicy::Batch => "batch",
                SyncPolicy::None => "none",
            }
        )
    } else {
        "persistence: off".to_owned()
    });
    let a = &config.auth;
    lines.push(format!(
        "auth: anonymous {}, password file {}, ACL file {}",
        if a.anonymous_allowed() {
            "allowed"
        } else {
            "refused"
        },
        a.password_file
            .as_deref()
            .map_or_else(|| "none".to_owned(), |p| p.display().to_string()),
        a.acl_file
            .as_deref()
            .map_or_else(|| "none".to_owned(), |p| p.display().to_string()),
    ));
    let lim = &config.limits;
    lines.push(format!(
        "limits: {} connections, {} new/s per address, {} B packets, {} queued messages \
         / {} B per session, overflow {}",
        lim.max_connections,
        lim.connection_rate,
        lim.max_packet_size,
        lim.max_queued_messages,
        lim.max_queued_bytes,
        match lim.overflow {
            Overflow::Backpressure => "backpressure",
            Overflow::DropNew => "drop-new",
            Overflow::DropOldest => "drop-oldest",
        }
    ));
    let m = &config.metrics;
    lines.push(format!(
        "metrics: $SYS {}, Prometheus {}",
        match m.sys_interval_secs {
            0 => "off".to_owned(),
            secs => format!("every {secs} s"),
        },
        m.listen
            .map_or_else(|| "off".to_owned(), |a| format!("at http://{a}/metrics"))
    ));
    if !config.bridges.is_empty() {
        let bridges: Vec<String> = config
            .bridges
            .iter()
            .map(|b| {
                let tls = if b.tls { " (TLS)" } else { "" };
                format!(
                    "{} to {}{tls}, {} up / {} down",
                    b.name,
                    b.address,
                    b.up.len(),
                    b.down.len()
                )
            })
            .collect();
        lines.push(format!("bridges: {}", bridges.join("; ")));
    }
    lines.push(format!(
        "log: {} ({})",
        config.log.level,
        match config.log.format {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        }
    ));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_beat_the_file_and_name_their_source() {
        let env = Override::from_env([
            ("FULMAR_LIMITS__MAX_INFLIGHT".to_owned(), "7".to_owned()),
            (
                "FULMAR_AUTH__PASSWORD_FILE".to_owned(),
                // Any file that exists: the path is checked.
                concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml").to_owned(),
            ),
            // Not configuration: no such section.
            ("FULMAR_BIN".to_owned(), "/bin/x".to_owned()),
            ("FULMAR_FUZZ_SECONDS".to_owned(), "3".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
        ]);
        assert_eq!(env.len(), 2);
        let mut all = env;
        all.push(Override::from_set("log.format=json").unwrap());
        all.push(Override::from_set("listeners.tcp=[{addr=\"127.0.0.1:5\"}]").unwrap());
        let config = load(None, &all, |_| {}).unwrap();
        assert_eq!(config.limits.max_inflight.get(), 7);
        assert_eq!(
            config.auth.password_file,
            Some(PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/Cargo.toml"
            )))
        );
        assert!(!config.auth.anonymous_allowed());
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.listeners.tcp[0].addr.port(), 5);

        let bad = [
            Override::from_set("limits.max_inflight=0").unwrap(),
            Override::from_set("log.format=json").unwrap(),
        ];
        let error = load(None, &bad, |_| {}).unwrap_err().to_string();
        assert!(error.starts_with("--set limits.max_inflight=0"), "{error}");
        let typo = Override::from_env([("FULMAR_LIMITS__MAX_INFLIHGT".into(), "1".into())]);
        let error = load(None, &typo, |_| {}).unwrap_err().to_string();
        assert!(error.contains("FULMAR_LIMITS__MAX_INFLIHGT") && error.contains("unknown field"));
    }

    #[test]
    fn an_override_can_reach_into_a_list() {
        let set = [Override::from_set("listeners.tcp.0.addr=\"127.0.0.1:9\"").unwrap()];
        let config = load(None, &set, |_| {}).unwrap();
        assert_eq!(config.listeners.tcp[0].addr.port(), 9);
        let set = [Override::from_set("listeners.tcp.addr=1").unwrap()];
        assert!(load(None, &set, |_| {}).is_err());
    }

    #[test]
    fn a_value_that_is_not_toml_is_a_string() {
        assert_eq!(parse_value("10"), toml::Value::Integer(10));
        assert_eq!(parse_value("true"), toml::Value::Boolean(true));
        assert_eq!(parse_value("/a b"), toml::Value::String("/a b".into()));
        assert_eq!(
            parse_value("1\nx = 2"),
            toml::Value::String("1\nx = 2".into())
        );
    }
}
