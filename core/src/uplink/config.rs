//! What an uplink connects to and what it forwards, and the short text format a host may
//! read it from (the firmware takes it from its build environment or a file).
//!
//! One setting per line (or separated by `;`); lines starting with `#` are comments (`#`
//! elsewhere is the wildcard):
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
//!
//! The settings are the protocol's (what goes into CONNECT and SUBSCRIBE, what the client
//! does with upstream's limits), so they live here with the client, and every host reads the
//! same text the same way. How a host resolves `upstream` is its own business.

use crate::codec::{ProtocolVersion, QoS};

/// Filters in each direction.
pub const MAX_FILTERS: usize = 4;

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
    /// User name sent in CONNECT.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::UnknownSetting => "unknown setting",
            Self::BadAddress => "upstream is not host:port",
            Self::MissingValue => "a setting has no value",
            Self::BadNumber => "a number is out of range",
            Self::TooManyFilters => "too many filters in one direction",
            Self::NoUpstream => "no upstream",
        })
    }
}

impl core::error::Error for ConfigError {}

impl<'a> Config<'a> {
    /// The defaults, with `host` and `port` as upstream and nothing forwarded.
    pub fn new(host: &'a str, port: u16) -> Self {
        Self {
            host,
            port,
            client_id: "fulmar-uplink",
            keep_alive: 30,
            protocol: ProtocolVersion::V3_1_1,
            username: None,
            password: None,
            max_packet: None,
            up: Filters::new(),
            down: Filters::new(),
        }
    }

    /// Reads a configuration text (see the module documentation).
    pub fn parse(text: &'a str) -> Result<Self, ConfigError> {
        let mut upstream = None;
        let mut config = Self::new("", 0);
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
                    upstream = Some(split_host_port(value?).ok_or(ConfigError::BadAddress)?);
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
                        // Down, subscribed at QoS 1 at most (see `Uplink`'s SUBSCRIBE).
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

/// The host and port of `host:port` (an IPv6 address in brackets: `[::1]:1883`): a host
/// that is not empty (whether it is an address or a name that resolves is learnt at
/// connection time) and a port that is not 0.
pub fn split_host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse().ok().filter(|p| *p != 0)?;
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_split_with_or_without_brackets() {
        assert_eq!(split_host_port("broker:1883"), Some(("broker", 1883)));
        assert_eq!(split_host_port("[::1]:8883"), Some(("::1", 8883)));
        assert_eq!(split_host_port("10.0.2.2:1"), Some(("10.0.2.2", 1)));
        for bad in [
            "broker",
            "broker:0",
            ":1883",
            "[]:1883",
            "broker:x",
            "broker:70000",
        ] {
            assert_eq!(split_host_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_every_setting() {
        let text = "# a comment\nupstream broker.example:8883\nclient-id edge-1; keep-alive 12\n\
                    protocol 5\nusername u\npassword p\nmax-packet 512\n\
                    up sensors/# 2\nup status\ndown commands/# 0\n";
        let config = Config::parse(text).unwrap();
        assert_eq!((config.host, config.port), ("broker.example", 8883));
        assert_eq!(config.client_id, "edge-1");
        assert_eq!(config.keep_alive, 12);
        assert_eq!(config.protocol, ProtocolVersion::V5);
        assert_eq!((config.username, config.password), (Some("u"), Some("p")));
        assert_eq!(config.max_packet, Some(512));
        assert_eq!(
            &config.up[..],
            [
                ("sensors/#", QoS::ExactlyOnce),
                ("status", QoS::AtLeastOnce)
            ]
        );
        assert_eq!(&config.down[..], [("commands/#", QoS::AtMostOnce)]);
    }

    #[test]
    fn defaults_need_only_upstream() {
        let config = Config::parse("upstream 10.0.2.100:1883").unwrap();
        assert_eq!(config, Config::new("10.0.2.100", 1883));
        assert_eq!(config.client_id, "fulmar-uplink");
        assert_eq!(config.keep_alive, 30);
        assert_eq!(config.protocol, ProtocolVersion::V3_1_1);
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let refused = [
            ("", ConfigError::NoUpstream),
            ("upstream host", ConfigError::BadAddress),
            ("upstream :1883", ConfigError::BadAddress),
            ("upstream host:0", ConfigError::BadAddress),
            ("upstream h:1; keep-alive 0", ConfigError::BadNumber),
            ("upstream h:1; max-packet 63", ConfigError::BadNumber),
            ("upstream h:1; protocol 4", ConfigError::BadNumber),
            ("upstream h:1; up a 3", ConfigError::BadNumber),
            ("upstream h:1; client-id", ConfigError::MissingValue),
            ("upstream h:1; colour blue", ConfigError::UnknownSetting),
            (
                "upstream h:1; down a; down b; down c; down d; down e",
                ConfigError::TooManyFilters,
            ),
        ];
        for (text, error) in refused {
            assert_eq!(Config::parse(text), Err(error), "{text}");
        }
    }
}
