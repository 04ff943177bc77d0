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

/// A CONNECT as a [`super::Packet`] carries it: the validated wire body of a decoded
/// packet, or the caller's [`Connect`]. [`ConnectPacket::get`] gives the fields.
///
/// CONNECT is by far the largest packet in fields, and every packet is moved by value
/// through decode and encode; holding it by reference keeps `Packet` small and the hot
/// path (PUBLISH and its acknowledgments) cheap. The body is read again by `get`, once per
/// connection.
#[derive(Clone, Copy)]
pub struct ConnectPacket<'a>(ConnectRepr<'a>);

#[derive(Clone, Copy)]
enum ConnectRepr<'a> {
    /// The body of a CONNECT that `decode` validated.
    Wire(&'a [u8]),
    /// A CONNECT the caller built.
    Built(&'a Connect<'a>),
}

impl<'a> ConnectPacket<'a> {
    /// A body the decoder has validated.
    pub(crate) const fn from_wire(body: &'a [u8]) -> Self {
        Self(ConnectRepr::Wire(body))
    }

    /// The CONNECT's fields.
    pub fn get(&self) -> Connect<'a> {
        match self.0 {
            ConnectRepr::Built(connect) => *connect,
            // Validated when decoded, so reading again cannot fail; should it, an empty
            // CONNECT is safer than a panic.
            ConnectRepr::Wire(body) => Connect::read(&mut Reader::new(body)).unwrap_or(Connect {
                protocol: ProtocolVersion::V5,
                clean_start: true,
                keep_alive: 0,
                properties: Properties::empty(),
                client_id: "",
                will: None,
                username: None,
                password: None,
            }),
        }
    }

    pub(crate) fn size(&self) -> Size {
        match self.0 {
            ConnectRepr::Wire(body) => Size {
                len: body.len(),
                too_large: false,
            },
            ConnectRepr::Built(connect) => connect.size(),
        }
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        match self.0 {
            ConnectRepr::Wire(body) => w.bytes(body),
            ConnectRepr::Built(connect) => connect.write(w),
        }
    }
}

impl<'a> From<&'a Connect<'a>> for ConnectPacket<'a> {
    fn from(connect: &'a Connect<'a>) -> Self {
        Self(ConnectRepr::Built(connect))
    }
}

impl<'a> From<&'a Connect<'a>> for super::Packet<'a> {
    fn from(connect: &'a Connect<'a>) -> Self {
        super::Packet::Connect(connect.into())
    }
}

impl PartialEq for ConnectPacket<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for ConnectPacket<'_> {}

impl core::fmt::Debug for ConnectPacket<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.get().fmt(f)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for ConnectPacket<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "{}", self.get())
    }
}

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

#[cfg(test)]
mod tests {
    //! CONNECT and CONNACK of MQTT 3.1, 3.1.1 and 5.0 as bytes, from the layouts of §3.1 and
    //! §3.2 of each specification.

    use super::*;
    use crate::codec::tests::{
        V3_1, V3_1_1, V5, assert_decode_error, assert_encodes, assert_incomplete_prefixes,
        decode_whole, patched,
    };
    use crate::codec::{Packet, Property};

    static CONNECT_V3_1_1: [u8; 36] = [
        0x10, // CONNECT
        0x22, // remaining length 34
        // Variable header: the non-normative example of 3.1.1 §3.1.2.10
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
        0x04, // protocol level 4
        0xCE, // flags: user name, password, will QoS 1, will, clean session
        0x00, 0x0A, // keep alive 10 s
        // Payload (§3.1.3)
        0x00, 0x03, b'c', b'i', b'd', // client identifier "cid" (offset 12)
        0x00, 0x03, b'w', b'/', b't', // will topic "w/t" (offset 17)
        0x00, 0x03, b'b', b'y', b'e', // will message "bye" (offset 22)
        0x00, 0x03, b'u', b's', b'r', // user name "usr" (offset 27)
        0x00, 0x02, b'p', b'w', // password "pw" (offset 32)
    ];

    fn connect_v3_1_1() -> Connect<'static> {
        Connect {
            protocol: V3_1_1,
            clean_start: true,
            keep_alive: 10,
            properties: Properties::empty(),
            client_id: "cid",
            will: Some(Will {
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Properties::empty(),
                topic: "w/t",
                payload: b"bye",
            }),
            username: Some("usr"),
            password: Some(b"pw"),
        }
    }

    static CONNECT_V3_1: [u8; 38] = [
        0x10, // CONNECT
        0x24, // remaining length 36
        // Variable header: the example of MQTT 3.1 §3.1
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name "MQIsdp"
        0x03, // protocol version 3
        0xCE, // flags: user name, password, will QoS 1, will, clean session
        0x00, 0x0A, // keep alive timer 10 s
        // Payload
        0x00, 0x03, b'c', b'i', b'd', // client identifier "cid"
        0x00, 0x03, b'w', b'/', b't', // will topic "w/t"
        0x00, 0x03, b'b', b'y', b'e', // will message "bye"
        0x00, 0x03, b'u', b's', b'r', // user name "usr"
        0x00, 0x02, b'p', b'w', // password "pw"
    ];

    static CONNECT_V5: [u8; 48] = [
        0x10, // CONNECT
        0x2E, // remaining length 46
        // Variable header: the non-normative example of 5.0 §3.1.2.12
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
        0x05, // protocol version 5
        0xCE, // flags: user name, password, will QoS 1, will, clean start
        0x00, 0x0A, // keep alive 10 s
        0x05, // property length 5
        0x11, 0x00, 0x00, 0x00, 0x0A, // session expiry interval 10 s (offset 13)
        // Payload (§3.1.3)
        0x00, 0x03, b'c', b'i', b'd', // client identifier "cid" (offset 18)
        0x05, // will property length 5
        0x18, 0x00, 0x00, 0x00, 0x1E, // will delay interval 30 s (offset 24)
        0x00, 0x03, b'w', b'/', b't', // will topic "w/t" (offset 29)
        0x00, 0x03, b'b', b'y', b'e', // will payload "bye" (offset 34)
        0x00, 0x03, b'u', b's', b'r', // user name "usr" (offset 39)
        0x00, 0x02, b'p', b'w', // password "pw" (offset 44)
    ];

    static CONNECT_V3_1_1_MINIMAL: [u8; 14] = [
        0x10, // CONNECT
        0x0C, // remaining length 12
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
        0x04, // protocol level 4
        0x02, // flags: clean session
        0x00, 0x3C, // keep alive 60 s
        0x00, 0x00, // client identifier: empty, allowed with clean session ([MQTT-3.1.3-7])
    ];

    static CONNECT_V5_MINIMAL: [u8; 15] = [
        0x10, // CONNECT
        0x0D, // remaining length 13
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
        0x05, // protocol version 5
        0x02, // flags: clean start
        0x00, 0x3C, // keep alive 60 s
        0x00, // property length 0
        0x00, 0x00, // client identifier: empty
    ];

    fn minimal(protocol: ProtocolVersion) -> Connect<'static> {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 60,
            properties: Properties::empty(),
            client_id: "",
            will: None,
            username: None,
            password: None,
        }
    }

    static CONNECT_V5_PASSWORD_ONLY: [u8; 20] = [
        0x10, // CONNECT
        0x12, // remaining length 18
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
        0x05, // protocol version 5
        0x42, // flags: password, clean start; no user name (§3.1.2.9 allows it)
        0x00, 0x00, // keep alive off
        0x00, // property length 0
        0x00, 0x01, b'a', // client identifier "a"
        0x00, 0x02, 0x01, 0x02, // password: binary 01 02
    ];

    static CONNECT_V3_1_1_PASSWORD_ONLY: [u8; 19] = [
        0x10, // CONNECT
        0x11, // remaining length 17
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
        0x04, // protocol level 4
        0x42, // flags: password, clean session; no user name
        0x00, 0x00, // keep alive off
        0x00, 0x01, b'a', // client identifier "a"
        0x00, 0x02, 0x01, 0x02, // password
    ];

    #[test]
    fn connect_v3_1_1_decode() {
        assert_eq!(
            decode_whole(&CONNECT_V3_1_1, V3_1_1),
            Packet::from(&connect_v3_1_1())
        );
        assert_eq!(
            decode_whole(&CONNECT_V3_1_1_MINIMAL, V3_1_1),
            Packet::from(&minimal(V3_1_1))
        );
        assert_incomplete_prefixes(&CONNECT_V3_1_1, V3_1_1);
    }

    #[test]
    fn connect_v3_1_1_encode() {
        // A CONNECT is written for its own protocol, whatever the connection's version.
        for version in [V3_1, V3_1_1, V5] {
            assert_encodes(&Packet::from(&connect_v3_1_1()), version, &CONNECT_V3_1_1);
            assert_encodes(
                &Packet::from(&minimal(V3_1_1)),
                version,
                &CONNECT_V3_1_1_MINIMAL,
            );
        }
    }

    #[test]
    fn connect_v3_1_decode() {
        let expected = Connect {
            protocol: V3_1,
            ..connect_v3_1_1()
        };
        assert_eq!(decode_whole(&CONNECT_V3_1, V3_1), Packet::from(&expected));
    }

    #[test]
    fn connect_v3_1_encode() {
        let connect = Connect {
            protocol: V3_1,
            ..connect_v3_1_1()
        };
        assert_encodes(&Packet::from(&connect), V3_1, &CONNECT_V3_1);
    }

    fn connect_v5() -> Connect<'static> {
        Connect {
            protocol: V5,
            properties: Properties::new(&[Property::SessionExpiryInterval(10)]),
            will: Some(Will {
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Properties::new(&[Property::WillDelayInterval(30)]),
                topic: "w/t",
                payload: b"bye",
            }),
            ..connect_v3_1_1()
        }
    }

    #[test]
    fn connect_v5_decode() {
        assert_eq!(decode_whole(&CONNECT_V5, V5), Packet::from(&connect_v5()));
        assert_eq!(
            decode_whole(&CONNECT_V5_MINIMAL, V5),
            Packet::from(&minimal(V5))
        );
        assert_incomplete_prefixes(&CONNECT_V5, V5);
    }

    #[test]
    fn connect_v5_encode() {
        for version in [V3_1_1, V5] {
            assert_encodes(&Packet::from(&connect_v5()), version, &CONNECT_V5);
            assert_encodes(&Packet::from(&minimal(V5)), version, &CONNECT_V5_MINIMAL);
        }
        // Re-encoding a decoded CONNECT gives its bytes back.
        let decoded = decode_whole(&CONNECT_V5, V5);
        assert_encodes(&decoded, V5, &CONNECT_V5);
    }

    #[test]
    fn connect_is_read_by_the_level_it_announces() {
        // The connection's version is not known before CONNECT; its own level decides.
        assert_eq!(
            decode_whole(&CONNECT_V5, V3_1_1),
            Packet::from(&connect_v5())
        );
        assert_eq!(
            decode_whole(&CONNECT_V3_1_1, V5),
            Packet::from(&connect_v3_1_1())
        );
    }

    #[test]
    fn utf8_string_example_as_client_identifier() {
        // The UTF-8 string example of 3.1.1 §1.5.3 and 5.0 §1.5.4: "A\u{2A6D4}" is
        // 00 05 41 F0 AA 9B 94.
        static CONNECT: [u8; 19] = [
            0x10, // CONNECT
            0x11, // remaining length 17
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
            0x04, // protocol level 4
            0x02, // flags: clean session
            0x00, 0x3C, // keep alive 60 s
            0x00, 0x05, 0x41, 0xF0, 0xAA, 0x9B, 0x94, // client identifier "A\u{2A6D4}"
        ];
        let connect = Connect {
            client_id: "A\u{2A6D4}",
            ..minimal(V3_1_1)
        };
        assert_eq!(decode_whole(&CONNECT, V3_1_1), Packet::from(&connect));
        assert_encodes(&Packet::from(&connect), V3_1_1, &CONNECT);
    }

    #[test]
    fn password_without_user_name() {
        // 5.0 §3.1.2.9: a password may be sent without a user name.
        let connect = Connect {
            protocol: V5,
            clean_start: true,
            keep_alive: 0,
            properties: Properties::empty(),
            client_id: "a",
            will: None,
            username: None,
            password: Some(&[0x01, 0x02]),
        };
        assert_eq!(
            decode_whole(&CONNECT_V5_PASSWORD_ONLY, V5),
            Packet::from(&connect)
        );
        assert_encodes(&Packet::from(&connect), V5, &CONNECT_V5_PASSWORD_ONLY);
        // [MQTT-3.1.2-22] (3.1.1): "If the User Name Flag is set to 0, the Password Flag
        // MUST be set to 0."
        assert_decode_error(
            &CONNECT_V3_1_1_PASSWORD_ONLY,
            V3_1_1,
            DecodeError::PasswordWithoutUsername,
            ReasonCode::ProtocolError,
        );
    }

    #[test]
    fn wrong_protocol_name() {
        // [MQTT-3.1.2-1]: the name must be "MQTT" (or "MQIsdp" for 3.1); otherwise the
        // server closes without a 3.x CONNACK (5.0 may answer 0x84 first).
        let names: [&[u8; 4]; 3] = [b"MQTX", b"mqtt", &[0xFF, 0xFE, 0x00, 0x80]];
        for name in names {
            let bytes = patched(&CONNECT_V3_1_1, 4, name);
            assert_decode_error(
                &bytes,
                V3_1_1,
                DecodeError::InvalidProtocolName,
                ReasonCode::UnsupportedProtocolVersion,
            );
            assert_eq!(DecodeError::InvalidProtocolName.connect_return_code(), None);
            assert_decode_error(
                &patched(&CONNECT_V5, 4, name),
                V5,
                DecodeError::InvalidProtocolName,
                ReasonCode::UnsupportedProtocolVersion,
            );
        }
        // "MQIsdp" misspelt.
        assert_decode_error(
            &patched(&CONNECT_V3_1, 9, b"P"),
            V3_1,
            DecodeError::InvalidProtocolName,
            ReasonCode::UnsupportedProtocolVersion,
        );
    }

    #[test]
    fn unsupported_protocol_level() {
        // [MQTT-3.1.2-2] (3.1.1): answer CONNACK return code 1 (unacceptable protocol level)
        // and close; (5.0): CONNACK 0x84 (Unsupported Protocol Version) and close.
        for level in [0, 1, 2, 3, 6, 0x83, 0xFF] {
            let error = DecodeError::UnsupportedProtocolVersion(level);
            assert_decode_error(
                &patched(&CONNECT_V3_1_1, 8, &[level]),
                V3_1_1,
                error,
                ReasonCode::UnsupportedProtocolVersion,
            );
            assert_eq!(
                error.connect_return_code(),
                Some(ConnectReturnCode::UnacceptableProtocolVersion)
            );
        }
        // "MQIsdp" is only level 3.
        assert_decode_error(
            &patched(&CONNECT_V3_1, 10, &[4]),
            V3_1,
            DecodeError::UnsupportedProtocolVersion(4),
            ReasonCode::UnsupportedProtocolVersion,
        );
    }

    #[test]
    fn reserved_connect_flag() {
        // [MQTT-3.1.2-3]: the server must check that the reserved flag is 0 (5.0: otherwise
        // a Malformed Packet).
        assert_decode_error(
            &patched(&CONNECT_V3_1_1, 9, &[0xCF]),
            V3_1_1,
            DecodeError::ReservedConnectFlag,
            ReasonCode::MalformedPacket,
        );
        assert_decode_error(
            &patched(&CONNECT_V5, 9, &[0xCF]),
            V5,
            DecodeError::ReservedConnectFlag,
            ReasonCode::MalformedPacket,
        );
    }

    #[test]
    fn will_qos_and_retain_need_the_will_flag() {
        // [MQTT-3.1.2-13], [MQTT-3.1.2-15] (3.1.1); [MQTT-3.1.2-11], [MQTT-3.1.2-13] (5.0):
        // with the Will Flag 0, Will QoS and Will Retain must be 0.
        for flags in [0x0A, 0x12, 0x1A, 0x22, 0x2A] {
            assert_decode_error(
                &patched(&CONNECT_V3_1_1_MINIMAL, 9, &[flags]),
                V3_1_1,
                DecodeError::InvalidWillFlags,
                ReasonCode::MalformedPacket,
            );
            assert_decode_error(
                &patched(&CONNECT_V5_MINIMAL, 9, &[flags]),
                V5,
                DecodeError::InvalidWillFlags,
                ReasonCode::MalformedPacket,
            );
        }
    }

    #[test]
    fn will_qos_3() {
        // [MQTT-3.1.2-14] (3.1.1): Will QoS "MUST NOT be 3"; [MQTT-3.1.2-12] (5.0): "A value
        // of 3 (0x03) is a Malformed Packet." Flags 0xDE = 0xCE with both QoS bits.
        assert_decode_error(
            &patched(&CONNECT_V3_1_1, 9, &[0xDE]),
            V3_1_1,
            DecodeError::InvalidWillFlags,
            ReasonCode::MalformedPacket,
        );
        assert_decode_error(
            &patched(&CONNECT_V5, 9, &[0xDE]),
            V5,
            DecodeError::InvalidWillFlags,
            ReasonCode::MalformedPacket,
        );
    }

    #[test]
    fn will_qos_2_and_retain() {
        // Flags 0xF6: user name, password, will retain, will QoS 2, will, clean session.
        let bytes = patched(&CONNECT_V3_1_1, 9, &[0xF6]);
        let mut expected = connect_v3_1_1();
        expected.will = Some(Will {
            qos: QoS::ExactlyOnce,
            retain: true,
            ..expected.will.unwrap()
        });
        assert_eq!(decode_whole(&bytes, V3_1_1), Packet::from(&expected));
        assert_encodes(&Packet::from(&expected), V3_1_1, &bytes);
    }

    #[test]
    fn strings_in_connect_must_be_well_formed_utf8() {
        // Client identifier [MQTT-3.1.3-4], will topic [MQTT-3.1.3-10] (3.1.1) /
        // [MQTT-3.1.3-11] (5.0), user name [MQTT-3.1.3-11] (3.1.1) / [MQTT-3.1.3-12] (5.0):
        // UTF-8 strings, so no surrogates ([MQTT-1.5.3-1], [MQTT-1.5.4-1]) and no U+0000
        // ([MQTT-1.5.3-2], [MQTT-1.5.4-2]).
        let surrogate = [0xED, 0xA0, 0x80]; // U+D800
        let overlong_slash = [0xC0, 0xAF, b'x']; // '/' in two bytes
        for at in [14, 19, 29] {
            for bad in [surrogate, overlong_slash] {
                assert_decode_error(
                    &patched(&CONNECT_V3_1_1, at, &bad),
                    V3_1_1,
                    DecodeError::InvalidUtf8,
                    ReasonCode::MalformedPacket,
                );
            }
            assert_decode_error(
                &patched(&CONNECT_V3_1_1, at + 1, &[0x00]),
                V3_1_1,
                DecodeError::NullCharacter,
                ReasonCode::MalformedPacket,
            );
        }
        for at in [20, 31, 41] {
            assert_decode_error(
                &patched(&CONNECT_V5, at, &surrogate),
                V5,
                DecodeError::InvalidUtf8,
                ReasonCode::MalformedPacket,
            );
            assert_decode_error(
                &patched(&CONNECT_V5, at + 2, &[0x00]),
                V5,
                DecodeError::NullCharacter,
                ReasonCode::MalformedPacket,
            );
        }
    }

    #[test]
    fn will_topic_is_a_topic_name() {
        // [MQTT-3.3.2-2], [MQTT-4.7.1-1]: no wildcards in a topic name.
        for (at, wildcard) in [(21, b'#'), (19, b'+'), (20, b'+')] {
            assert_decode_error(
                &patched(&CONNECT_V3_1_1, at, &[wildcard]),
                V3_1_1,
                DecodeError::WildcardInTopicName,
                ReasonCode::TopicNameInvalid,
            );
        }
        assert_decode_error(
            &patched(&CONNECT_V5, 33, b"#"),
            V5,
            DecodeError::WildcardInTopicName,
            ReasonCode::TopicNameInvalid,
        );
        // [MQTT-4.7.3-1]: topic names are at least one character long.
        static EMPTY_WILL_TOPIC: [u8; 20] = [
            0x10, // CONNECT
            0x12, // remaining length 18
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
            0x04, // protocol level 4
            0x06, // flags: will (QoS 0), clean session
            0x00, 0x3C, // keep alive 60 s
            0x00, 0x01, b'c', // client identifier "c"
            0x00, 0x00, // will topic: empty
            0x00, 0x01, b'x', // will message "x"
        ];
        assert_decode_error(
            &EMPTY_WILL_TOPIC,
            V3_1_1,
            DecodeError::EmptyTopicName,
            ReasonCode::ProtocolError,
        );
    }

    #[test]
    fn connect_properties_are_checked() {
        // §3.1.2.11: Topic Alias is not a CONNECT property. The 5 property bytes become
        // Topic Alias 5 and Request Problem Information 1.
        assert_decode_error(
            &patched(&CONNECT_V5, 13, &[0x23, 0x00, 0x05, 0x17, 0x01]),
            V5,
            DecodeError::PropertyNotAllowed {
                property: 0x23,
                packet: PacketType::Connect,
            },
            ReasonCode::MalformedPacket,
        );
        // Will Delay Interval is a will property (§3.1.3.2.2), not a CONNECT property...
        assert_decode_error(
            &patched(&CONNECT_V5, 13, &[0x18]),
            V5,
            DecodeError::PropertyNotAllowed {
                property: 0x18,
                packet: PacketType::Connect,
            },
            ReasonCode::MalformedPacket,
        );
        // ...and Session Expiry Interval is a CONNECT property, not a will property.
        assert_decode_error(
            &patched(&CONNECT_V5, 24, &[0x11]),
            V5,
            DecodeError::PropertyNotAllowed {
                property: 0x11,
                packet: PacketType::Connect,
            },
            ReasonCode::MalformedPacket,
        );
        // §3.1.2.11.3: Receive Maximum 0; the 5 bytes become Receive Maximum 0 and Request
        // Response Information 1.
        assert_decode_error(
            &patched(&CONNECT_V5, 13, &[0x21, 0x00, 0x00, 0x19, 0x01]),
            V5,
            DecodeError::InvalidPropertyValue(0x21),
            ReasonCode::ProtocolError,
        );
    }

    #[test]
    fn connect_fields_must_fit_the_packet() {
        // A client identifier claiming 48 bytes.
        assert_decode_error(
            &patched(&CONNECT_V3_1_1, 12, &[0x00, 0x30]),
            V3_1_1,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
        // [MQTT-3.1.2-9], [MQTT-3.1.2-19], [MQTT-3.1.2-21] (3.1.1): a flag promises a field
        // the payload does not have (will; user name; user name and password).
        for flags in [0x06, 0x82, 0xC2] {
            assert_decode_error(
                &patched(&CONNECT_V3_1_1_MINIMAL, 9, &[flags]),
                V3_1_1,
                DecodeError::MalformedLength,
                ReasonCode::MalformedPacket,
            );
        }
        // A variable header cut short.
        assert_decode_error(
            &[0x10, 0x03, 0x00, 0x04, b'M'],
            V3_1_1,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
        // A v5 CONNECT without its property length.
        assert_decode_error(
            &[
                0x10, 0x0A, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C,
            ],
            V5,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
        // [MQTT-3.1.2-18], [MQTT-3.1.2-20] (3.1.1): a byte after the last field the flags
        // announce (no user name or password flag here).
        let mut longer = [0u8; 15];
        longer[..14].copy_from_slice(&CONNECT_V3_1_1_MINIMAL);
        longer[1] = 0x0D; // remaining length 13
        assert_decode_error(
            &longer,
            V3_1_1,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
    }

    // CONNACK (§3.2): acknowledge flags, return / reason code, and in 5.0 properties.
    static CONNACK_ACCEPTED: [u8; 4] = [
        0x20, // CONNACK
        0x02, // remaining length 2
        0x00, // acknowledge flags: session present 0
        0x00, // return code 0: connection accepted
    ];

    static CONNACK_SESSION_PRESENT: [u8; 4] = [
        0x20, // CONNACK
        0x02, // remaining length 2
        0x01, // acknowledge flags: session present 1
        0x00, // return code 0: connection accepted
    ];

    static CONNACK_V5_MINIMAL: [u8; 5] = [
        0x20, // CONNACK
        0x03, // remaining length 3
        0x00, // acknowledge flags: session present 0
        0x00, // reason code: Success
        0x00, // property length 0
    ];

    static CONNACK_V5: [u8; 35] = [
        0x20, // CONNACK
        0x21, // remaining length 33
        0x01, // acknowledge flags: session present 1
        0x00, // reason code: Success
        0x1E, // property length 30
        0x12, 0x00, 0x03, b'a', b'-', b'1', // assigned client identifier "a-1"
        0x13, 0x00, 0x1E, // server keep alive 30 s
        0x21, 0x00, 0x14, // receive maximum 20
        0x22, 0x00, 0x0A, // topic alias maximum 10
        0x24, 0x01, // maximum QoS 1
        0x25, 0x00, // retain available: no
        0x27, 0x00, 0x00, 0x04, 0x00, // maximum packet size 1024
        0x28, 0x01, // wildcard subscription available: yes
        0x29, 0x00, // subscription identifiers available: no
        0x2A, 0x01, // shared subscription available: yes
    ];

    const CONNACK_V5_PROPERTIES: [Property<'static>; 10] = [
        Property::AssignedClientIdentifier("a-1"),
        Property::ServerKeepAlive(30),
        Property::ReceiveMaximum(20),
        Property::TopicAliasMaximum(10),
        Property::MaximumQoS(QoS::AtLeastOnce),
        Property::RetainAvailable(false),
        Property::MaximumPacketSize(1024),
        Property::WildcardSubscriptionAvailable(true),
        Property::SubscriptionIdentifierAvailable(false),
        Property::SharedSubscriptionAvailable(true),
    ];

    fn connack(session_present: bool, reason_code: ReasonCode) -> Packet<'static> {
        Packet::ConnAck(ConnAck {
            session_present,
            reason_code,
            properties: Properties::empty(),
        })
    }

    #[test]
    fn connack_v3_1_1_decode() {
        assert_eq!(
            decode_whole(&CONNACK_ACCEPTED, V3_1_1),
            connack(false, ReasonCode::Success)
        );
        assert_eq!(
            decode_whole(&CONNACK_SESSION_PRESENT, V3_1_1),
            connack(true, ReasonCode::Success)
        );
        // 3.1.1 §3.2.2.3: the return codes, read as the 5.0 codes that mean the same.
        let refusals = [
            (1, ReasonCode::UnsupportedProtocolVersion),
            (2, ReasonCode::ClientIdentifierNotValid),
            (3, ReasonCode::ServerUnavailable),
            (4, ReasonCode::BadUserNameOrPassword),
            (5, ReasonCode::NotAuthorized),
        ];
        for (code, reason) in refusals {
            let bytes = patched(&CONNACK_ACCEPTED, 3, &[code]);
            for version in [V3_1, V3_1_1] {
                assert_eq!(decode_whole(&bytes, version), connack(false, reason));
            }
        }
        assert_incomplete_prefixes(&CONNACK_SESSION_PRESENT, V3_1_1);
    }

    #[test]
    fn connack_v3_1_1_encode() {
        assert_encodes(
            &connack(false, ReasonCode::Success),
            V3_1_1,
            &CONNACK_ACCEPTED,
        );
        assert_encodes(
            &connack(true, ReasonCode::Success),
            V3_1_1,
            &CONNACK_SESSION_PRESENT,
        );
    }

    #[test]
    fn connack_v3_1() {
        // MQTT 3.1 §3.2: the first byte is "reserved values, not used"; there is no
        // Session Present flag.
        assert_eq!(
            decode_whole(&CONNACK_ACCEPTED, V3_1),
            connack(false, ReasonCode::Success)
        );
        assert_eq!(
            decode_whole(&patched(&CONNACK_ACCEPTED, 2, &[0xFF]), V3_1),
            connack(false, ReasonCode::Success)
        );
        assert_encodes(&connack(true, ReasonCode::Success), V3_1, &CONNACK_ACCEPTED);
    }

    #[test]
    fn connack_v3_encodes_reason_codes_as_return_codes() {
        // Every CONNACK reason code of 5.0 §3.2.2.2, sent to a 3.x client: the return code
        // of 3.1.1 §3.2.2.3 with the nearest meaning; 3 (Server unavailable) otherwise.
        let table: [(u8, u8); 22] = [
            (0x00, 0), // Success: accepted
            (0x80, 3), // Unspecified error
            (0x81, 3), // Malformed Packet
            (0x82, 3), // Protocol Error
            (0x83, 3), // Implementation specific error
            (0x84, 1), // Unsupported Protocol Version: unacceptable protocol version
            (0x85, 2), // Client Identifier not valid: identifier rejected
            (0x86, 4), // Bad User Name or Password: bad user name or password
            (0x87, 5), // Not authorized: not authorized
            (0x88, 3), // Server unavailable: server unavailable
            (0x89, 3), // Server busy
            (0x8A, 5), // Banned: not authorized
            (0x8C, 4), // Bad authentication method: bad user name or password
            (0x90, 3), // Topic Name invalid
            (0x95, 3), // Packet too large
            (0x97, 3), // Quota exceeded
            (0x99, 3), // Payload format invalid
            (0x9A, 3), // Retain not supported
            (0x9B, 3), // QoS not supported
            (0x9C, 3), // Use another server
            (0x9D, 3), // Server moved
            (0x9F, 3), // Connection rate exceeded
        ];
        let valid = (0..=255u8)
            .filter_map(ReasonCode::from_u8)
            .filter(|c| c.is_valid_for(PacketType::ConnAck))
            .count();
        assert_eq!(valid, table.len());
        for (code, return_code) in table {
            let reason = ReasonCode::from_u8(code).unwrap();
            assert!(reason.is_valid_for(PacketType::ConnAck));
            for version in [V3_1, V3_1_1] {
                assert_encodes(
                    &connack(false, reason),
                    version,
                    &[0x20, 0x02, 0x00, return_code],
                );
            }
        }
        // Properties are left out for 3.x.
        let packet = Packet::ConnAck(ConnAck {
            session_present: true,
            reason_code: ReasonCode::Success,
            properties: Properties::new(&CONNACK_V5_PROPERTIES),
        });
        assert_encodes(&packet, V3_1_1, &CONNACK_SESSION_PRESENT);
    }

    #[test]
    fn connack_v5_decode() {
        assert_eq!(
            decode_whole(&CONNACK_V5_MINIMAL, V5),
            connack(false, ReasonCode::Success)
        );
        assert_eq!(
            decode_whole(&CONNACK_V5, V5),
            Packet::ConnAck(ConnAck {
                session_present: true,
                reason_code: ReasonCode::Success,
                properties: Properties::new(&CONNACK_V5_PROPERTIES),
            })
        );
        assert_eq!(
            decode_whole(&patched(&CONNACK_V5_MINIMAL, 3, &[0x87]), V5),
            connack(false, ReasonCode::NotAuthorized)
        );
        assert_incomplete_prefixes(&CONNACK_V5, V5);
    }

    #[test]
    fn connack_v5_encode() {
        assert_encodes(
            &connack(false, ReasonCode::Success),
            V5,
            &CONNACK_V5_MINIMAL,
        );
        assert_encodes(
            &Packet::ConnAck(ConnAck {
                session_present: true,
                reason_code: ReasonCode::Success,
                properties: Properties::new(&CONNACK_V5_PROPERTIES),
            }),
            V5,
            &CONNACK_V5,
        );
        assert_encodes(
            &connack(false, ReasonCode::BadAuthenticationMethod),
            V5,
            &[0x20, 0x03, 0x00, 0x8C, 0x00],
        );
    }

    #[test]
    fn connack_reserved_flags() {
        // 3.1.1 §3.2.2.1, [MQTT-3.2.2-1] (5.0): bits 7-1 of the acknowledge flags are
        // reserved and must be 0.
        for flags in [0x02, 0x80, 0xFE, 0xFF] {
            assert_decode_error(
                &patched(&CONNACK_ACCEPTED, 2, &[flags]),
                V3_1_1,
                DecodeError::InvalidConnAckFlags,
                ReasonCode::MalformedPacket,
            );
            assert_decode_error(
                &patched(&CONNACK_V5_MINIMAL, 2, &[flags]),
                V5,
                DecodeError::InvalidConnAckFlags,
                ReasonCode::MalformedPacket,
            );
        }
    }

    #[test]
    fn connack_session_present_with_a_refusal() {
        // [MQTT-3.2.2-4] (3.1.1), [MQTT-3.2.2-6] (5.0): a refusal sets Session Present to 0.
        for code in 1..=5 {
            assert_decode_error(
                &patched(&CONNACK_SESSION_PRESENT, 3, &[code]),
                V3_1_1,
                DecodeError::InvalidConnAckFlags,
                ReasonCode::MalformedPacket,
            );
        }
        assert_decode_error(
            &[0x20, 0x03, 0x01, 0x86, 0x00],
            V5,
            DecodeError::InvalidConnAckFlags,
            ReasonCode::MalformedPacket,
        );
    }

    #[test]
    fn connack_codes_not_defined_for_connack() {
        // 3.1.1 §3.2.2.3: return codes 6-255 are reserved.
        for code in [6, 0x80, 0xFF] {
            assert_decode_error(
                &patched(&CONNACK_ACCEPTED, 3, &[code]),
                V3_1_1,
                DecodeError::InvalidReasonCode {
                    packet: PacketType::ConnAck,
                    code,
                },
                ReasonCode::MalformedPacket,
            );
        }
        // [MQTT-3.2.2-8] (5.0): one of the CONNACK reason codes of §3.2.2.2 only.
        for code in [0x01, 0x04, 0x10, 0x18, 0x8B, 0x8E, 0x92, 0xA2, 0xFF] {
            assert_decode_error(
                &patched(&CONNACK_V5_MINIMAL, 3, &[code]),
                V5,
                DecodeError::InvalidReasonCode {
                    packet: PacketType::ConnAck,
                    code,
                },
                ReasonCode::MalformedPacket,
            );
        }
    }

    #[test]
    fn connack_lengths() {
        // 3.x: exactly two bytes.
        assert_decode_error(
            &[0x20, 0x03, 0x00, 0x00, 0x00],
            V3_1_1,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
        assert_decode_error(
            &[0x20, 0x01, 0x00],
            V3_1_1,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
        // 5.0 §3.2.2.3: the property length is not optional in CONNACK.
        assert_decode_error(
            &CONNACK_ACCEPTED,
            V5,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
        // A CONNACK property that belongs elsewhere: Topic Alias.
        assert_decode_error(
            &[0x20, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01],
            V5,
            DecodeError::PropertyNotAllowed {
                property: 0x23,
                packet: PacketType::ConnAck,
            },
            ReasonCode::MalformedPacket,
        );
    }
}
