//! DISCONNECT (§3.14) and AUTH (§3.15): the packets that end or re-check a session.
//! (PINGREQ and PINGRESP have no body and live in [`super::Packet`] directly.)

use super::error::DecodeError;
use super::properties::{Properties, Scope, read_properties, write_properties};
use super::reason::ReasonCode;
use super::types::ProtocolVersion;
use super::wire::{Reader, Writer};
use super::{PacketType, Size, read_reason_code};

/// A DISCONNECT packet (§3.14). Before 5.0 it has no body: the code is always
/// [`ReasonCode::Success`] (normal disconnection) and there are no properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Disconnect<'a> {
    /// Why the connection is closing (5.0).
    pub reason_code: ReasonCode,
    /// DISCONNECT properties (5.0 only): session expiry, reason string, server reference.
    pub properties: Properties<'a>,
}

impl Default for Disconnect<'_> {
    fn default() -> Self {
        Self::new(ReasonCode::Success)
    }
}

impl<'a> Disconnect<'a> {
    /// A DISCONNECT with `reason_code` and no properties.
    pub const fn new(reason_code: ReasonCode) -> Self {
        Self {
            reason_code,
            properties: Properties::empty(),
        }
    }

    pub(crate) fn read(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let (reason_code, properties) = if version.is_v5() {
            read_code_and_properties(r, PacketType::Disconnect, Scope::DISCONNECT)?
        } else {
            (ReasonCode::Success, Properties::empty())
        };
        Ok(Self {
            reason_code,
            properties,
        })
    }

    pub(crate) fn size(&self, version: ProtocolVersion) -> Size {
        if version.is_v5() {
            code_and_properties_size(self.reason_code, &self.properties)
        } else {
            Size::default()
        }
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, version: ProtocolVersion) {
        if version.is_v5() {
            write_code_and_properties(w, self.reason_code, &self.properties);
        }
    }
}

/// An AUTH packet (§3.15, 5.0 only): one step of an extended authentication exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Auth<'a> {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Authentication method and data, reason string, user properties.
    pub properties: Properties<'a>,
}

impl<'a> Auth<'a> {
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let (reason_code, properties) = read_code_and_properties(r, PacketType::Auth, Scope::AUTH)?;
        Ok(Self {
            reason_code,
            properties,
        })
    }

    pub(crate) fn size(&self) -> Size {
        code_and_properties_size(self.reason_code, &self.properties)
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        write_code_and_properties(w, self.reason_code, &self.properties);
    }
}

/// The 5.0 body shared by DISCONNECT, AUTH and the tail of PUBACK/PUBREC/PUBREL/PUBCOMP: an optional reason code, then optional
/// properties. An empty body means Success with no properties ([MQTT-3.14.2-1] allows
/// omitting the code, [MQTT-3.15.2-1] likewise for AUTH); a lone code means no properties.
pub(crate) fn read_code_and_properties<'a>(
    r: &mut Reader<'a>,
    packet: PacketType,
    scope: Scope,
) -> Result<(ReasonCode, Properties<'a>), DecodeError> {
    if r.is_empty() {
        return Ok((ReasonCode::Success, Properties::empty()));
    }
    let code = read_reason_code(r, packet)?;
    let properties = if r.is_empty() {
        Properties::empty()
    } else {
        read_properties(r, scope)?
    };
    Ok((code, properties))
}

pub(crate) fn code_and_properties_size(code: ReasonCode, properties: &Properties<'_>) -> Size {
    let mut size = Size::default();
    if !properties.is_empty() {
        size.add(1);
        size.properties(properties);
    } else if code != ReasonCode::Success {
        size.add(1);
    }
    size
}

pub(crate) fn write_code_and_properties(
    w: &mut Writer<'_>,
    code: ReasonCode,
    properties: &Properties<'_>,
) {
    if !properties.is_empty() {
        w.u8(code.value());
        write_properties(w, properties);
    } else if code != ReasonCode::Success {
        w.u8(code.value());
    }
}

#[cfg(test)]
mod tests {
    //! DISCONNECT (§3.14) and AUTH (§3.15, 5.0 only) as bytes, from the layouts of MQTT
    //! 3.1.1 and 5.0.

    use super::*;
    use crate::codec::tests::{
        V3_1, V3_1_1, V5, assert_decode_error, assert_encodes, assert_incomplete_prefixes,
        decode_whole, patched,
    };
    use crate::codec::{EncodeError, Packet, Property};

    static DISCONNECT_BYTES: [u8; 2] = [
        0xE0, // DISCONNECT, flags 0000
        0x00, // remaining length 0: in 3.x always; in 5.0 Normal disconnection
    ];

    #[test]
    fn disconnect_v3() {
        // 3.1.1 §3.14.2, §3.14.3: no variable header, no payload.
        for version in [V3_1, V3_1_1] {
            assert_eq!(
                decode_whole(&DISCONNECT_BYTES, version),
                Packet::Disconnect(Disconnect::default())
            );
            assert_encodes(
                &Packet::Disconnect(Disconnect::default()),
                version,
                &DISCONNECT_BYTES,
            );
            // A 5.0 reason code and properties have no place in 3.x.
            let disconnect = Disconnect {
                reason_code: ReasonCode::ServerShuttingDown,
                properties: Properties::new(&[Property::ReasonString("bye")]),
            };
            assert_encodes(&Packet::Disconnect(disconnect), version, &DISCONNECT_BYTES);
            // A body is malformed.
            assert_decode_error(
                &[0xE0, 0x01, 0x00],
                version,
                DecodeError::MalformedLength,
                ReasonCode::MalformedPacket,
            );
        }
    }

    static DISCONNECT_V5_CODE: [u8; 3] = [
        0xE0, // DISCONNECT
        0x01, // remaining length 1: a reason code, no property length (§3.14.2.2.1)
        0x04, // reason code: Disconnect with Will Message
    ];

    static DISCONNECT_V5: [u8; 26] = [
        0xE0, // DISCONNECT
        0x18, // remaining length 24
        0x9C, // reason code: Use another server
        0x16, // property length 22
        0x1C, 0x00, 0x04, b's', b'r', b'v', b'2', // server reference "srv2" (offset 4)
        0x1F, 0x00, 0x05, b'm', b'o', b'v', b'e', b'd', // reason string "moved" (offset 11)
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property k = v (offset 19)
    ];

    const DISCONNECT_V5_PROPERTIES: [Property<'static>; 3] = [
        Property::ServerReference("srv2"),
        Property::ReasonString("moved"),
        Property::UserProperty("k", "v"),
    ];

    #[test]
    fn disconnect_v5_decode() {
        // §3.14.2.1: "The Reason Code and Property Length can be omitted if the Reason Code
        // is 0x00 (Normal disconnecton) and there are no Properties. In this case the
        // DISCONNECT has a Remaining Length of 0." §3.14.2.2.1: "If the Remaining Length
        // is less than 2, a value of 0 is used" for the property length.
        assert_eq!(
            decode_whole(&DISCONNECT_BYTES, V5),
            Packet::Disconnect(Disconnect::default())
        );
        assert_eq!(
            decode_whole(&DISCONNECT_V5_CODE, V5),
            Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWill))
        );
        // Remaining length 2: a reason code and an empty property block.
        assert_eq!(
            decode_whole(&[0xE0, 0x02, 0x00, 0x00], V5),
            Packet::Disconnect(Disconnect::default())
        );
        assert_eq!(
            decode_whole(&DISCONNECT_V5, V5),
            Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::UseAnotherServer,
                properties: Properties::new(&DISCONNECT_V5_PROPERTIES),
            })
        );
        assert_incomplete_prefixes(&DISCONNECT_V5, V5);
    }

    #[test]
    fn disconnect_v5_encode() {
        // The shortest form that says it: nothing for Normal disconnection, the code alone
        // without properties.
        assert_encodes(
            &Packet::Disconnect(Disconnect::default()),
            V5,
            &DISCONNECT_BYTES,
        );
        assert_encodes(
            &Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWill)),
            V5,
            &DISCONNECT_V5_CODE,
        );
        assert_encodes(
            &Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::UseAnotherServer,
                properties: Properties::new(&DISCONNECT_V5_PROPERTIES),
            }),
            V5,
            &DISCONNECT_V5,
        );
        // Normal disconnection with properties writes the 0x00.
        assert_encodes(
            &Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::Success,
                properties: Properties::new(&[Property::SessionExpiryInterval(0)]),
            }),
            V5,
            &[
                0xE0, // DISCONNECT
                0x07, // remaining length 7
                0x00, // reason code: Normal disconnection
                0x05, // property length 5
                0x11, 0x00, 0x00, 0x00, 0x00, // session expiry interval 0
            ],
        );
    }

    #[test]
    fn disconnect_v5_invalid() {
        // [MQTT-3.14.1-1]: reserved flags must be 0.
        assert_decode_error(
            &[0xE1, 0x00],
            V5,
            DecodeError::InvalidHeaderFlags {
                packet: PacketType::Disconnect,
                flags: 1,
            },
            ReasonCode::MalformedPacket,
        );
        // [MQTT-3.14.2-1]: one of the DISCONNECT reason codes of §3.14.2.1.
        let allowed = [
            0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93,
            0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1,
            0xA2,
        ];
        for code in 0..=255u8 {
            let bytes = [0xE0, 0x01, code];
            if allowed.contains(&code) {
                let expected = Disconnect::new(ReasonCode::from_u8(code).unwrap());
                assert_eq!(decode_whole(&bytes, V5), Packet::Disconnect(expected));
            } else {
                assert_decode_error(
                    &bytes,
                    V5,
                    DecodeError::InvalidReasonCode {
                        packet: PacketType::Disconnect,
                        code,
                    },
                    ReasonCode::MalformedPacket,
                );
            }
        }
        // §3.14.2.2: Receive Maximum is not a DISCONNECT property. The 7 bytes of the
        // server reference become Receive Maximum 5 and a reason string "x".
        assert_decode_error(
            &patched(
                &DISCONNECT_V5,
                4,
                &[0x21, 0x00, 0x05, 0x1F, 0x00, 0x01, b'x'],
            ),
            V5,
            DecodeError::PropertyNotAllowed {
                property: 0x21,
                packet: PacketType::Disconnect,
            },
            ReasonCode::MalformedPacket,
        );
        // A property length running past the packet.
        assert_decode_error(
            &patched(&DISCONNECT_V5, 3, &[0x17]),
            V5,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
        // §3.14.2.2.3: "It is a Protocol Error to include the Reason String more than once"
        // (the server reference becomes a reason string "srv2").
        assert_decode_error(
            &patched(&DISCONNECT_V5, 4, &[0x1F]),
            V5,
            DecodeError::DuplicateProperty(0x1F),
            ReasonCode::ProtocolError,
        );
    }

    static AUTH_V5_CODE: [u8; 3] = [
        0xF0, // AUTH, flags 0000
        0x01, // remaining length 1: a reason code, no property length (§3.15.2.2.1)
        0x18, // reason code: Continue authentication
    ];

    static AUTH_V5: [u8; 25] = [
        0xF0, // AUTH, flags 0000
        0x17, // remaining length 23
        0x18, // reason code: Continue authentication
        0x15, // property length 21
        0x15, 0x00, 0x0B, // authentication method, 11 bytes (offset 4)
        b'S', b'C', b'R', b'A', b'M', b'-', b'S', b'H', b'A', b'-', b'1', // "SCRAM-SHA-1"
        0x16, 0x00, 0x04, 0x00, 0x01, 0xFE, 0xFF, // authentication data 00 01 FE FF
    ];

    fn auth_v5() -> Packet<'static> {
        Packet::Auth(Auth {
            reason_code: ReasonCode::ContinueAuthentication,
            properties: Properties::new(&[
                Property::AuthenticationMethod("SCRAM-SHA-1"),
                Property::AuthenticationData(&[0x00, 0x01, 0xFE, 0xFF]),
            ]),
        })
    }

    fn auth(reason_code: ReasonCode) -> Packet<'static> {
        Packet::Auth(Auth {
            reason_code,
            properties: Properties::empty(),
        })
    }

    #[test]
    fn auth_v5_decode() {
        // §3.15.2.1: "The Reason Code and Property Length can be omitted if the Reason Code
        // is 0x00 (Success) and there are no Properties. In this case the AUTH has a
        // Remaining Length of 0."
        assert_eq!(decode_whole(&[0xF0, 0x00], V5), auth(ReasonCode::Success));
        assert_eq!(
            decode_whole(&AUTH_V5_CODE, V5),
            auth(ReasonCode::ContinueAuthentication)
        );
        assert_eq!(decode_whole(&AUTH_V5, V5), auth_v5());
        assert_incomplete_prefixes(&AUTH_V5, V5);
    }

    #[test]
    fn auth_v5_encode() {
        assert_encodes(&auth(ReasonCode::Success), V5, &[0xF0, 0x00]);
        assert_encodes(&auth(ReasonCode::ContinueAuthentication), V5, &AUTH_V5_CODE);
        assert_encodes(&auth(ReasonCode::ReAuthenticate), V5, &[0xF0, 0x01, 0x19]);
        assert_encodes(&auth_v5(), V5, &AUTH_V5);
    }

    #[test]
    fn auth_does_not_exist_before_5() {
        // 3.1.1 §2.2.1 table 2.1: packet type 15 is reserved.
        for version in [V3_1, V3_1_1] {
            assert_decode_error(
                &[0xF0, 0x00],
                version,
                DecodeError::InvalidPacketType(15),
                ReasonCode::MalformedPacket,
            );
            let mut buf = [0xAA; 32];
            assert_eq!(
                auth_v5().encode(version, &mut buf),
                Err(EncodeError::UnsupportedInVersion)
            );
            assert_eq!(buf, [0xAA; 32]);
        }
    }

    #[test]
    fn auth_v5_invalid() {
        // [MQTT-3.15.1-1]: flags 0000.
        assert_decode_error(
            &patched(&AUTH_V5_CODE, 0, &[0xF1]),
            V5,
            DecodeError::InvalidHeaderFlags {
                packet: PacketType::Auth,
                flags: 1,
            },
            ReasonCode::MalformedPacket,
        );
        // [MQTT-3.15.2-1]: 0x00, 0x18 or 0x19 only.
        for code in 0..=255u8 {
            let bytes = [0xF0, 0x01, code];
            if [0x00, 0x18, 0x19].contains(&code) {
                assert_eq!(decode_whole(&bytes, V5).packet_type(), PacketType::Auth);
            } else {
                assert_decode_error(
                    &bytes,
                    V5,
                    DecodeError::InvalidReasonCode {
                        packet: PacketType::Auth,
                        code,
                    },
                    ReasonCode::MalformedPacket,
                );
            }
        }
        // §3.15.2.2.2: "It is a Protocol Error ... to include it [the Authentication
        // Method] more than once".
        static TWO_METHODS: [u8; 12] = [
            0xF0, // AUTH
            0x0A, // remaining length 10
            0x18, // reason code: Continue authentication
            0x08, // property length 8
            0x15, 0x00, 0x01, b'A', // authentication method "A"
            0x15, 0x00, 0x01, b'B', // authentication method "B"
        ];
        assert_decode_error(
            &TWO_METHODS,
            V5,
            DecodeError::DuplicateProperty(0x15),
            ReasonCode::ProtocolError,
        );
        // §3.15.2.2: Session Expiry Interval is not an AUTH property.
        assert_decode_error(
            &[0xF0, 0x07, 0x18, 0x05, 0x11, 0x00, 0x00, 0x00, 0x0A],
            V5,
            DecodeError::PropertyNotAllowed {
                property: 0x11,
                packet: PacketType::Auth,
            },
            ReasonCode::MalformedPacket,
        );
        // The authentication method must be well-formed UTF-8 ([MQTT-1.5.4-1]).
        assert_decode_error(
            &patched(&AUTH_V5, 7, &[0xED, 0xA0, 0x80]),
            V5,
            DecodeError::InvalidUtf8,
            ReasonCode::MalformedPacket,
        );
    }
}
