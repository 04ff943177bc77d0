//! CONNECT (§3.1) and CONNACK (§3.2): opening a session and the server's answer.

use super::error::DecodeError;
use super::properties::{Properties, Scope, read_properties, write_properties};
use super::publish::check_topic_name;
use super::reason::{ConnectReturnCode, ReasonCode};
use super::types::{ProtocolVersion, QoS};
use super::wire::{Reader, Writer};
use super::{PacketType, Size, read_reason_code};

/// A CONNECT packet: the first packet a client sends (§3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Connect<'a> {
    /// The protocol the client speaks; it decides how the rest of the connection is coded.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.x) / Clean Start (5.0): discard any existing session.
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns the mechanism off.
    pub keep_alive: u16,
    /// CONNECT properties (5.0 only).
    pub properties: Properties<'a>,
    /// The client identifier; may be empty (the server then assigns one or refuses).
    pub client_id: &'a str,
    /// The will message, published if the connection ends abnormally.
    pub will: Option<Will<'a>>,
    /// The user name.
    pub username: Option<&'a str>,
    /// The password (binary data; a UTF-8 string in 3.1).
    pub password: Option<&'a [u8]>,
}

/// The will message carried in CONNECT (§3.1.2.5, §3.1.3.2 to §3.1.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Will<'a> {
    /// QoS to publish the will with.
    pub qos: QoS,
    /// Whether the will is published as a retained message.
    pub retain: bool,
    /// Will properties (5.0 only): delay, expiry, content type and the like.
    pub properties: Properties<'a>,
    /// The topic the will is published to.
    pub topic: &'a str,
    /// The will payload.
    pub payload: &'a [u8],
}

const RESERVED: u8 = 0b0000_0001;
const CLEAN_START: u8 = 0b0000_0010;
const WILL: u8 = 0b0000_0100;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_RETAIN: u8 = 0b0010_0000;
const PASSWORD: u8 = 0b0100_0000;
const USERNAME: u8 = 0b1000_0000;

impl<'a> Connect<'a> {
    /// Reads the protocol name and level ([MQTT-3.1.2-1], [MQTT-3.1.2-2]).
    fn read_protocol(r: &mut Reader<'a>) -> Result<ProtocolVersion, DecodeError> {
        // The name is checked as bytes: a name that is not even UTF-8 is still just an
        // unknown protocol, which a broker answers by closing, not a malformed string.
        let name = r.binary()?;
        let level = r.u8()?;
        match (name, level) {
            (b"MQTT", 4) => Ok(ProtocolVersion::V3_1_1),
            (b"MQTT", 5) => Ok(ProtocolVersion::V5),
            (b"MQIsdp", 3) => Ok(ProtocolVersion::V3_1),
            (b"MQTT" | b"MQIsdp", level) => Err(DecodeError::UnsupportedProtocolVersion(level)),
            _ => Err(DecodeError::InvalidProtocolName),
        }
    }

    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let protocol = Self::read_protocol(r)?;
        let v5 = protocol.is_v5();
        let flags = r.u8()?;
        if flags & RESERVED != 0 {
            // [MQTT-3.1.2-3]: the reserved flag must be 0.
            return Err(DecodeError::ReservedConnectFlag);
        }
        let will_flag = flags & WILL != 0;
        let will_qos_bits = (flags >> WILL_QOS_SHIFT) & 0b11;
        let will_retain = flags & WILL_RETAIN != 0;
        if !will_flag && (will_qos_bits != 0 || will_retain) {
            // [MQTT-3.1.2-11], [MQTT-3.1.2-13] (5.0): no will, so no will QoS or retain.
            return Err(DecodeError::InvalidWillFlags);
        }
        // [MQTT-3.1.2-12] (5.0): will QoS 3 is malformed.
        let will_qos = QoS::from_bits(will_qos_bits).map_err(|_| DecodeError::InvalidWillFlags)?;
        let has_username = flags & USERNAME != 0;
        let has_password = flags & PASSWORD != 0;
        if !v5 && has_password && !has_username {
            // [MQTT-3.1.2-22] (3.1.1): a password needs a user name before 5.0.
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16()?;
        let properties = if v5 {
            read_properties(r, Scope::CONNECT)?
        } else {
            Properties::empty()
        };
        // [MQTT-3.1.3-4]: the client identifier is a UTF-8 string.
        let client_id = r.str()?;
        let will = if will_flag {
            let properties = if v5 {
                read_properties(r, Scope::WILL)?
            } else {
                Properties::empty()
            };
            let topic = r.str()?;
            check_topic_name(topic)?;
            let payload = r.binary()?;
            Some(Will {
                qos: will_qos,
                retain: will_retain,
                properties,
                topic,
                payload,
            })
        } else {
            None
        };
        let username = if has_username { Some(r.str()?) } else { None };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        Ok(Self {
            protocol,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    pub(crate) fn size(&self) -> Size {
        let v5 = self.protocol.is_v5();
        let mut size = Size::default();
        size.field(self.protocol.protocol_name().len());
        size.add(1 + 1 + 2); // level, flags, keep alive
        if v5 {
            size.properties(&self.properties);
        }
        size.field(self.client_id.len());
        if let Some(will) = &self.will {
            if v5 {
                size.properties(&will.properties);
            }
            size.field(will.topic.len());
            size.field(will.payload.len());
        }
        if let Some(username) = self.username {
            size.field(username.len());
        }
        if let Some(password) = self.password {
            size.field(password.len());
        }
        size
    }

    fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.clean_start {
            flags |= CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= WILL | will.qos.level() << WILL_QOS_SHIFT;
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        flags
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        let v5 = self.protocol.is_v5();
        w.str(self.protocol.protocol_name());
        w.u8(self.protocol.level());
        w.u8(self.flags());
        w.u16(self.keep_alive);
        if v5 {
            write_properties(w, &self.properties);
        }
        w.str(self.client_id);
        if let Some(will) = &self.will {
            if v5 {
                write_properties(w, &will.properties);
            }
            w.str(will.topic);
            w.binary(will.payload);
        }
        if let Some(username) = self.username {
            w.str(username);
        }
        if let Some(password) = self.password {
            w.binary(password);
        }
    }
}

/// A CONNACK packet: the server's answer to CONNECT (§3.2).
///
/// The result is a 5.0 [`ReasonCode`] in every version; for 3.1 and 3.1.1 it is
/// translated to and from the [`ConnectReturnCode`] with the same meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConnAck<'a> {
    /// Whether the server resumed a stored session (always false in 3.1).
    pub session_present: bool,
    /// The outcome of the connection attempt.
    pub reason_code: ReasonCode,
    /// CONNACK properties (5.0 only).
    pub properties: Properties<'a>,
}

impl<'a> ConnAck<'a> {
    pub(crate) fn read(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let flags = r.u8()?;
        let session_present = match version {
            // 3.1 had no Session Present flag: the byte was reserved and unused.
            ProtocolVersion::V3_1 => false,
            // [MQTT-3.2.2-1] (5.0), §3.2.2.1 (3.1.1): bits 7-1 are reserved.
            _ if flags & 0xFE != 0 => return Err(DecodeError::InvalidConnAckFlags),
            _ => flags & 1 != 0,
        };
        let (reason_code, properties) = if version.is_v5() {
            let code = read_reason_code(r, PacketType::ConnAck)?;
            (code, read_properties(r, Scope::CONNACK)?)
        } else {
            let code = r.u8()?;
            let code = ConnectReturnCode::from_u8(code).ok_or(DecodeError::InvalidReasonCode {
                packet: PacketType::ConnAck,
                code,
            })?;
            (code.to_reason_code(), Properties::empty())
        };
        if session_present && reason_code.is_error() {
            // [MQTT-3.2.2-4] (3.1.1), [MQTT-3.2.2-6] (5.0): no session on a refusal.
            return Err(DecodeError::InvalidConnAckFlags);
        }
        Ok(Self {
            session_present,
            reason_code,
            properties,
        })
    }

    pub(crate) fn size(&self, version: ProtocolVersion) -> Size {
        let mut size = Size {
            len: 2,
            too_large: false,
        };
        if version.is_v5() {
            size.properties(&self.properties);
        }
        size
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, version: ProtocolVersion) {
        let session_present = self.session_present && version != ProtocolVersion::V3_1;
        w.u8(session_present as u8);
        if version.is_v5() {
            w.u8(self.reason_code.value());
            write_properties(w, &self.properties);
        } else {
            w.u8(self.reason_code.to_connect_return_code() as u8);
        }
    }
}
