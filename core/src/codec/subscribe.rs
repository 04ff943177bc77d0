//! SUBSCRIBE (§3.8), SUBACK (§3.9), UNSUBSCRIBE (§3.10) and UNSUBACK (§3.11).
//!
//! Topic filters are only checked as UTF-8 strings here: a filter with misplaced
//! wildcards is refused per filter in the SUBACK (0x8F), not by closing the connection,
//! so that judgement belongs to the broker's topic module.

use super::error::DecodeError;
use super::list::{List, list_item};
use super::properties::{Properties, Scope, read_properties, write_properties};
use super::reason::ReasonCode;
use super::types::{PacketId, ProtocolVersion, SubscriptionOptions};
use super::wire::{Reader, Writer};
use super::{PacketType, Size, read_packet_id, read_reason_code};

/// One topic filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Subscription<'a> {
    /// The topic filter, possibly with wildcards or a `$share/` prefix.
    pub filter: &'a str,
    /// Maximum QoS and, in 5.0, no-local, retain-as-published and retain handling.
    pub options: SubscriptionOptions,
}

impl<'a> Subscription<'a> {
    /// A subscription to `filter` with `options`.
    pub const fn new(filter: &'a str, options: SubscriptionOptions) -> Self {
        Self { filter, options }
    }

    fn read(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let filter = r.str()?;
        let options = SubscriptionOptions::from_byte(r.u8()?, version)?;
        Ok(Self { filter, options })
    }

    /// Re-reads validated bytes; 3.x options bytes are valid 5.0 ones with defaults.
    fn read_validated(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Self::read(r, ProtocolVersion::V5)
    }
}

list_item!(Subscription<'a>, Subscription::read_validated);

fn read_filter<'a>(r: &mut Reader<'a>) -> Result<&'a str, DecodeError> {
    r.str()
}

list_item!(&'a str, read_filter);

fn read_any_reason_code(r: &mut Reader<'_>) -> Result<ReasonCode, DecodeError> {
    let code = r.u8()?;
    ReasonCode::from_u8(code).ok_or(DecodeError::InvalidReasonCode {
        packet: PacketType::SubAck,
        code,
    })
}

list_item!(ReasonCode, read_any_reason_code);

/// Reads a list that fills the rest of the packet, validating every item; returns the
/// list over the validated bytes and how many items it holds.
fn read_rest<'a, T: super::ListItem<'a>>(
    r: &mut Reader<'a>,
    mut read_one: impl FnMut(&mut Reader<'a>) -> Result<T, DecodeError>,
) -> Result<(List<'a, T>, usize), DecodeError> {
    let bytes = r.rest();
    let mut items = Reader::new(bytes);
    let mut count = 0;
    while !items.is_empty() {
        read_one(&mut items)?;
        count += 1;
    }
    Ok((List::from_wire(bytes), count))
}

/// A SUBSCRIBE packet (§3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Subscribe<'a> {
    /// Packet identifier, echoed in the SUBACK.
    pub packet_id: PacketId,
    /// SUBSCRIBE properties (5.0 only): a Subscription Identifier and user properties.
    pub properties: Properties<'a>,
    /// The topic filters with their options; never empty on the wire.
    pub subscriptions: List<'a, Subscription<'a>>,
}

impl<'a> Subscribe<'a> {
    pub(crate) fn read(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = if version.is_v5() {
            read_properties(r, Scope::SUBSCRIBE)?
        } else {
            Properties::empty()
        };
        let (subscriptions, count) = read_rest(r, |r| Subscription::read(r, version))?;
        if count == 0 {
            // [MQTT-3.8.3-2] (5.0), [MQTT-3.8.3-3] (3.1.1): at least one filter.
            return Err(DecodeError::NoTopicFilters);
        }
        Ok(Self {
            packet_id,
            properties,
            subscriptions,
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
        for sub in &self.subscriptions {
            size.field(sub.filter.len());
            size.add(1);
        }
        size
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, version: ProtocolVersion) {
        w.u16(self.packet_id.get());
        if version.is_v5() {
            write_properties(w, &self.properties);
        }
        for sub in &self.subscriptions {
            w.str(sub.filter);
            w.u8(sub.options.to_byte(version));
        }
    }
}

/// A SUBACK packet (§3.9): one reason code per filter, in order.
///
/// Before 5.0 the codes are Granted QoS 0/1/2 and Failure (0x80); encoding any 5.0 error
/// code for 3.x sends 0x80.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SubAck<'a> {
    /// The SUBSCRIBE's packet identifier.
    pub packet_id: PacketId,
    /// SUBACK properties (5.0 only).
    pub properties: Properties<'a>,
    /// One code per topic filter of the SUBSCRIBE.
    pub reason_codes: List<'a, ReasonCode>,
}

impl<'a> SubAck<'a> {
    pub(crate) fn read(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = if version.is_v5() {
            read_properties(r, Scope::SUBACK)?
        } else {
            Properties::empty()
        };
        let (reason_codes, _) = read_rest(r, |r| {
            if version.is_v5() {
                read_reason_code(r, PacketType::SubAck)
            } else {
                // §3.9.3 of 3.1.1: 0x00, 0x01, 0x02 and 0x80 only.
                match r.u8()? {
                    0x00 => Ok(ReasonCode::Success),
                    0x01 => Ok(ReasonCode::GrantedQoS1),
                    0x02 => Ok(ReasonCode::GrantedQoS2),
                    0x80 => Ok(ReasonCode::UnspecifiedError),
                    code => Err(DecodeError::InvalidReasonCode {
                        packet: PacketType::SubAck,
                        code,
                    }),
                }
            }
        })?;
        Ok(Self {
            packet_id,
            properties,
            reason_codes,
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
        size.add(self.reason_codes.len());
        size
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, version: ProtocolVersion) {
        w.u16(self.packet_id.get());
        if version.is_v5() {
            write_properties(w, &self.properties);
        }
        for code in &self.reason_codes {
            let byte = if !version.is_v5() && code.is_error() {
                0x80
            } else {
                code.value()
            };
            w.u8(byte);
        }
    }
}

/// An UNSUBSCRIBE packet (§3.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Unsubscribe<'a> {
    /// Packet identifier, echoed in the UNSUBACK.
    pub packet_id: PacketId,
    /// UNSUBSCRIBE properties (5.0 only): user properties.
    pub properties: Properties<'a>,
    /// The topic filters to remove; never empty on the wire.
    pub filters: List<'a, &'a str>,
}

impl<'a> Unsubscribe<'a> {
    pub(crate) fn read(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = if version.is_v5() {
            read_properties(r, Scope::UNSUBSCRIBE)?
        } else {
            Properties::empty()
        };
        let (filters, count) = read_rest(r, read_filter)?;
        if count == 0 {
            // [MQTT-3.10.3-2]: at least one filter.
            return Err(DecodeError::NoTopicFilters);
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
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
        for filter in &self.filters {
            size.field(filter.len());
        }
        size
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, version: ProtocolVersion) {
        w.u16(self.packet_id.get());
        if version.is_v5() {
            write_properties(w, &self.properties);
        }
        for filter in &self.filters {
            w.str(filter);
        }
    }
}

/// An UNSUBACK packet (§3.11). Before 5.0 it carries only the packet identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UnsubAck<'a> {
    /// The UNSUBSCRIBE's packet identifier.
    pub packet_id: PacketId,
    /// UNSUBACK properties (5.0 only).
    pub properties: Properties<'a>,
    /// One code per topic filter (5.0 only; empty before).
    pub reason_codes: List<'a, ReasonCode>,
}

impl<'a> UnsubAck<'a> {
    pub(crate) fn read(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        if !version.is_v5() {
            return Ok(Self {
                packet_id,
                properties: Properties::empty(),
                reason_codes: List::empty(),
            });
        }
        let properties = read_properties(r, Scope::UNSUBACK)?;
        let (reason_codes, _) = read_rest(r, |r| read_reason_code(r, PacketType::UnsubAck))?;
        Ok(Self {
            packet_id,
            properties,
            reason_codes,
        })
    }

    pub(crate) fn size(&self, version: ProtocolVersion) -> Size {
        let mut size = Size {
            len: 2,
            too_large: false,
        };
        if version.is_v5() {
            size.properties(&self.properties);
            size.add(self.reason_codes.len());
        }
        size
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, version: ProtocolVersion) {
        w.u16(self.packet_id.get());
        if version.is_v5() {
            write_properties(w, &self.properties);
            for code in &self.reason_codes {
                w.u8(code.value());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK (§3.8-§3.11) as bytes, from the layouts
    //! and examples of MQTT 3.1.1 and 5.0 (3.1 shares the 3.1.1 layout).

    use super::*;
    use crate::codec::tests::{
        V3_1, V3_1_1, V5, assert_decode_error, assert_encodes, assert_incomplete_prefixes,
        decode_whole, patched, pid,
    };
    use crate::codec::{Packet, Property, QoS, RetainHandling, decode};

    static SUBSCRIBE_V3_1_1: [u8; 16] = [
        0x82, // SUBSCRIBE, flags 0010
        0x0E, // remaining length 14
        0x00, 0x0A, // packet identifier 10 (the example of 3.1.1 §3.8.2)
        // Payload: the non-normative example of 3.1.1 §3.8.3
        0x00, 0x03, b'a', b'/', b'b', // topic filter "a/b" (offset 4)
        0x01, // requested QoS 1 (offset 9)
        0x00, 0x03, b'c', b'/', b'd', // topic filter "c/d" (offset 10)
        0x02, // requested QoS 2 (offset 15)
    ];

    const QOS_1_AND_2: [Subscription<'static>; 2] = [
        Subscription::new("a/b", SubscriptionOptions::qos(QoS::AtLeastOnce)),
        Subscription::new("c/d", SubscriptionOptions::qos(QoS::ExactlyOnce)),
    ];

    fn subscribe(properties: Properties<'static>) -> Packet<'static> {
        Packet::Subscribe(Subscribe {
            packet_id: pid(10),
            properties,
            subscriptions: List::new(&QOS_1_AND_2),
        })
    }

    static SUBSCRIBE_V5: [u8; 17] = [
        0x82, // SUBSCRIBE, flags 0010
        0x0F, // remaining length 15
        0x00, 0x0A, // packet identifier 10 (the example of 5.0 §3.8.2)
        0x00, // property length 0 (offset 4)
        // Payload: the non-normative example of 5.0 §3.8.3
        0x00, 0x03, b'a', b'/', b'b', // topic filter "a/b" (offset 5)
        0x01, // subscription options: maximum QoS 1 (offset 10)
        0x00, 0x03, b'c', b'/', b'd', // topic filter "c/d" (offset 11)
        0x02, // subscription options: maximum QoS 2 (offset 16)
    ];

    static SUBSCRIBE_V5_OPTIONS: [u8; 17] = [
        0x82, // SUBSCRIBE, flags 0010
        0x0F, // remaining length 15
        0x00, 0x0B, // packet identifier 11
        0x02, // property length 2
        0x0B, 0x05, // subscription identifier 5 (offset 5)
        0x00, 0x03, b's', b'/', b'#', // topic filter "s/#"
        0x2D, // options: QoS 1, no local, retain as published, retain handling 2
        0x00, 0x01, b'x', // topic filter "x"
        0x12, // options: QoS 2, retain handling 1 (offset 16)
    ];

    const OPTIONS: [Subscription<'static>; 2] = [
        Subscription::new(
            "s/#",
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        ),
        Subscription::new(
            "x",
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: RetainHandling::SendIfNew,
            },
        ),
    ];

    fn subscribe_options() -> Packet<'static> {
        Packet::Subscribe(Subscribe {
            packet_id: pid(11),
            properties: Properties::new(&[Property::SubscriptionIdentifier(5)]),
            subscriptions: List::new(&OPTIONS),
        })
    }

    #[test]
    fn subscribe_v3_decode() {
        for version in [V3_1, V3_1_1] {
            assert_eq!(
                decode_whole(&SUBSCRIBE_V3_1_1, version),
                subscribe(Properties::empty())
            );
            assert_incomplete_prefixes(&SUBSCRIBE_V3_1_1, version);
        }
    }

    #[test]
    fn subscribe_v3_encode() {
        for version in [V3_1, V3_1_1] {
            assert_encodes(&subscribe(Properties::empty()), version, &SUBSCRIBE_V3_1_1);
        }
    }

    #[test]
    fn subscribe_v5_decode() {
        assert_eq!(
            decode_whole(&SUBSCRIBE_V5, V5),
            subscribe(Properties::empty())
        );
        assert_eq!(decode_whole(&SUBSCRIBE_V5_OPTIONS, V5), subscribe_options());
        assert_incomplete_prefixes(&SUBSCRIBE_V5_OPTIONS, V5);
    }

    #[test]
    fn subscribe_v5_encode() {
        assert_encodes(&subscribe(Properties::empty()), V5, &SUBSCRIBE_V5);
        assert_encodes(&subscribe_options(), V5, &SUBSCRIBE_V5_OPTIONS);
        assert_encodes(
            &decode_whole(&SUBSCRIBE_V5_OPTIONS, V5),
            V5,
            &SUBSCRIBE_V5_OPTIONS,
        );
    }

    #[test]
    fn subscribe_v5_for_v3_drops_properties_and_new_options() {
        // Options a 3.1.1 requested-QoS byte has no room for are left out.
        static EXPECTED: [u8; 14] = [
            0x82, // SUBSCRIBE, flags 0010
            0x0C, // remaining length 12
            0x00, 0x0B, // packet identifier 11
            0x00, 0x03, b's', b'/', b'#', // topic filter "s/#"
            0x01, // requested QoS 1
            0x00, 0x01, b'x', // topic filter "x"
            0x02, // requested QoS 2
        ];
        assert_encodes(&subscribe_options(), V3_1_1, &EXPECTED);
        assert_encodes(&decode_whole(&SUBSCRIBE_V5_OPTIONS, V5), V3_1_1, &EXPECTED);
    }

    #[test]
    fn subscribe_without_topic_filters() {
        // [MQTT-3.8.3-3] (3.1.1): at least one topic filter / QoS pair; [MQTT-3.8.3-2] (5.0):
        // "A SUBSCRIBE packet with no Payload is a Protocol Error."
        for version in [V3_1, V3_1_1] {
            assert_decode_error(
                &[0x82, 0x02, 0x00, 0x0A],
                version,
                DecodeError::NoTopicFilters,
                ReasonCode::ProtocolError,
            );
        }
        assert_decode_error(
            &[0x82, 0x03, 0x00, 0x0A, 0x00],
            V5,
            DecodeError::NoTopicFilters,
            ReasonCode::ProtocolError,
        );
        assert_decode_error(
            &[0x82, 0x05, 0x00, 0x0A, 0x02, 0x0B, 0x01],
            V5,
            DecodeError::NoTopicFilters,
            ReasonCode::ProtocolError,
        );
    }

    #[test]
    fn subscribe_packet_identifier_0() {
        // [MQTT-2.3.1-1] (3.1.1), [MQTT-2.2.1-3] (5.0).
        for version in [V3_1, V3_1_1] {
            assert_decode_error(
                &patched(&SUBSCRIBE_V3_1_1, 2, &[0x00, 0x00]),
                version,
                DecodeError::ZeroPacketId,
                ReasonCode::ProtocolError,
            );
        }
        assert_decode_error(
            &patched(&SUBSCRIBE_V5, 2, &[0x00, 0x00]),
            V5,
            DecodeError::ZeroPacketId,
            ReasonCode::ProtocolError,
        );
    }

    #[test]
    fn subscribe_v3_reserved_option_bits() {
        // [MQTT-3-8.3-4] (3.1.1): "The Server MUST treat a SUBSCRIBE packet as malformed
        // and close the Network Connection if any of Reserved bits in the payload are
        // non-zero, or QoS is not 0,1 or 2." Bits 7-2 are reserved.
        for version in [V3_1, V3_1_1] {
            for bit in 2..8 {
                assert_decode_error(
                    &patched(&SUBSCRIBE_V3_1_1, 9, &[0x01 | 1 << bit]),
                    version,
                    DecodeError::InvalidSubscriptionOptions,
                    ReasonCode::MalformedPacket,
                );
            }
            assert_decode_error(
                &patched(&SUBSCRIBE_V3_1_1, 15, &[0x03]),
                version,
                DecodeError::InvalidQoS,
                ReasonCode::MalformedPacket,
            );
        }
    }

    #[test]
    fn subscribe_v5_reserved_option_bits() {
        // [MQTT-3.8.3-5] (5.0): bits 7 and 6 are reserved; set, the packet is malformed.
        for options in [0x41, 0x81, 0xC1, 0x6D] {
            assert_decode_error(
                &patched(&SUBSCRIBE_V5, 10, &[options]),
                V5,
                DecodeError::InvalidSubscriptionOptions,
                ReasonCode::MalformedPacket,
            );
        }
        // Bits 5-2 are options in 5.0 (no local, retain as published, retain handling).
        for options in [0x04, 0x08, 0x10, 0x20, 0x2E] {
            assert!(decode(&patched(&SUBSCRIBE_V5, 10, &[options]), V5, 64).is_ok());
        }
    }

    #[test]
    fn subscribe_v5_maximum_qos_3_and_retain_handling_3() {
        // 5.0 §3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3"
        // and "It is a Protocol Error to send a Retain Handling value of 3."
        for options in [0x03, 0x30, 0x31, 0x33] {
            assert_decode_error(
                &patched(&SUBSCRIBE_V5, 16, &[options]),
                V5,
                DecodeError::InvalidSubscriptionQoSOrRetainHandling,
                ReasonCode::ProtocolError,
            );
        }
    }

    #[test]
    fn subscribe_topic_filters_must_be_well_formed_utf8() {
        // [MQTT-3.8.3-1]: topic filters are UTF-8 strings ([MQTT-1.5.3-1/2] of 3.1.1,
        // [MQTT-1.5.4-1/2] of 5.0).
        let surrogate = [0xED, 0xA0, 0x80]; // U+D800
        assert_decode_error(
            &patched(&SUBSCRIBE_V3_1_1, 6, &surrogate),
            V3_1_1,
            DecodeError::InvalidUtf8,
            ReasonCode::MalformedPacket,
        );
        assert_decode_error(
            &patched(&SUBSCRIBE_V3_1_1, 12, &[0x00]),
            V3_1_1,
            DecodeError::NullCharacter,
            ReasonCode::MalformedPacket,
        );
        assert_decode_error(
            &patched(&SUBSCRIBE_V5, 13, &surrogate),
            V5,
            DecodeError::InvalidUtf8,
            ReasonCode::MalformedPacket,
        );
        assert_decode_error(
            &patched(&SUBSCRIBE_V5, 8, &[0x00]),
            V5,
            DecodeError::NullCharacter,
            ReasonCode::MalformedPacket,
        );
    }

    #[test]
    fn subscribe_fields_must_fit_the_packet() {
        // A filter without its options byte.
        assert_decode_error(
            &[0x82, 0x07, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b'],
            V3_1_1,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
        // A second filter claiming 16 bytes.
        assert_decode_error(
            &patched(&SUBSCRIBE_V3_1_1, 10, &[0x00, 0x10]),
            V3_1_1,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
    }

    #[test]
    fn subscribe_v5_properties_are_checked() {
        // §3.8.2.1.2: "It is a Protocol Error to include the Subscription Identifier more
        // than once"; it may repeat in PUBLISH, not here.
        static TWO_IDS: [u8; 13] = [
            0x82, // SUBSCRIBE, flags 0010
            0x0B, // remaining length 11
            0x00, 0x0A, // packet identifier 10
            0x04, // property length 4
            0x0B, 0x01, // subscription identifier 1
            0x0B, 0x02, // subscription identifier 2
            0x00, 0x01, b'a', // topic filter "a"
            0x00, // options: QoS 0
        ];
        assert_decode_error(
            &TWO_IDS,
            V5,
            DecodeError::DuplicateProperty(0x0B),
            ReasonCode::ProtocolError,
        );
        // §3.8.2.1.2: "It is a Protocol Error if the Subscription Identifier has a value of 0."
        assert_decode_error(
            &patched(&SUBSCRIBE_V5_OPTIONS, 6, &[0x00]),
            V5,
            DecodeError::InvalidPropertyValue(0x0B),
            ReasonCode::ProtocolError,
        );
        // §3.8.2.1: Payload Format Indicator is not a SUBSCRIBE property.
        assert_decode_error(
            &patched(&SUBSCRIBE_V5_OPTIONS, 5, &[0x01, 0x01]),
            V5,
            DecodeError::PropertyNotAllowed {
                property: 0x01,
                packet: PacketType::Subscribe,
            },
            ReasonCode::MalformedPacket,
        );
    }

    // SUBACK (§3.9): packet identifier, (5.0) properties, one code per topic filter.
    static SUBACK_V3_1_1: [u8; 7] = [
        0x90, // SUBACK
        0x05, // remaining length 5
        0x00, 0x0A, // packet identifier 10
        // Payload: the non-normative example of 3.1.1 §3.9.3
        0x00, // success, maximum QoS 0
        0x02, // success, maximum QoS 2
        0x80, // failure
    ];

    static SUBACK_V5: [u8; 17] = [
        0x90, // SUBACK
        0x0F, // remaining length 15
        0x00, 0x0A, // packet identifier 10
        0x00, // property length 0
        // Payload: every SUBACK reason code of 5.0 §3.9.3
        0x00, 0x01, 0x02, // granted QoS 0, 1, 2
        0x80, 0x83, 0x87, // unspecified, implementation specific, not authorized
        0x8F, 0x91, 0x97, // topic filter invalid, identifier in use, quota exceeded
        0x9E, 0xA1, 0xA2, // shared, subscription identifiers, wildcards not supported
    ];

    static SUBACK_V5_REASON_STRING: [u8; 11] = [
        0x90, // SUBACK
        0x09, // remaining length 9
        0x00, 0x0A, // packet identifier 10
        0x05, // property length 5
        0x1F, 0x00, 0x02, b'n', b'o', // reason string "no"
        0x87, // not authorized
    ];

    const SUBACK_V5_CODES: [ReasonCode; 12] = [
        ReasonCode::Success,
        ReasonCode::GrantedQoS1,
        ReasonCode::GrantedQoS2,
        ReasonCode::UnspecifiedError,
        ReasonCode::ImplementationSpecificError,
        ReasonCode::NotAuthorized,
        ReasonCode::TopicFilterInvalid,
        ReasonCode::PacketIdentifierInUse,
        ReasonCode::QuotaExceeded,
        ReasonCode::SharedSubscriptionsNotSupported,
        ReasonCode::SubscriptionIdentifiersNotSupported,
        ReasonCode::WildcardSubscriptionsNotSupported,
    ];

    fn suback(properties: Properties<'static>, codes: &'static [ReasonCode]) -> Packet<'static> {
        Packet::SubAck(SubAck {
            packet_id: pid(10),
            properties,
            reason_codes: List::new(codes),
        })
    }

    const V3_CODES: [ReasonCode; 3] = [
        ReasonCode::Success,
        ReasonCode::GrantedQoS2,
        ReasonCode::UnspecifiedError,
    ];

    #[test]
    fn suback_v3_decode() {
        for version in [V3_1, V3_1_1] {
            assert_eq!(
                decode_whole(&SUBACK_V3_1_1, version),
                suback(Properties::empty(), &V3_CODES)
            );
            assert_incomplete_prefixes(&SUBACK_V3_1_1, version);
        }
    }

    #[test]
    fn suback_v3_encode() {
        for version in [V3_1, V3_1_1] {
            assert_encodes(
                &suback(Properties::empty(), &V3_CODES),
                version,
                &SUBACK_V3_1_1,
            );
        }
    }

    #[test]
    fn suback_v5_decode() {
        assert_eq!(
            decode_whole(&SUBACK_V5, V5),
            suback(Properties::empty(), &SUBACK_V5_CODES)
        );
        assert_eq!(
            decode_whole(&SUBACK_V5_REASON_STRING, V5),
            suback(
                Properties::new(&[Property::ReasonString("no")]),
                &[ReasonCode::NotAuthorized]
            )
        );
        assert_incomplete_prefixes(&SUBACK_V5_REASON_STRING, V5);
    }

    #[test]
    fn suback_v5_encode() {
        assert_encodes(
            &suback(Properties::empty(), &SUBACK_V5_CODES),
            V5,
            &SUBACK_V5,
        );
        assert_encodes(
            &suback(
                Properties::new(&[Property::ReasonString("no")]),
                &[ReasonCode::NotAuthorized],
            ),
            V5,
            &SUBACK_V5_REASON_STRING,
        );
    }

    #[test]
    fn suback_v5_failures_are_0x80_for_v3() {
        // 3.1.1 §3.9.3 has one failure code, 0x80; every 5.0 failure maps to it, and the
        // properties are left out.
        assert_encodes(
            &suback(Properties::empty(), &SUBACK_V5_CODES),
            V3_1_1,
            &[
                0x90, // SUBACK
                0x0E, // remaining length 14
                0x00, 0x0A, // packet identifier 10
                0x00, 0x01, 0x02, // granted QoS 0, 1, 2
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, // failure, nine times
            ],
        );
        assert_encodes(
            &decode_whole(&SUBACK_V5_REASON_STRING, V5),
            V3_1,
            &[0x90, 0x03, 0x00, 0x0A, 0x80],
        );
    }

    #[test]
    fn suback_reason_codes_not_for_suback() {
        // [MQTT-3.9.3-2] (3.1.1): "SUBACK return codes other than 0x00, 0x01, 0x02 and
        // 0x80 are reserved and MUST NOT be used." [MQTT-3.9.3-2] (5.0): one of the
        // Subscribe Reason Codes (e.g. not 0x11, an UNSUBACK code).
        let v5_codes: [u8; 12] = SUBACK_V5_CODES.map(ReasonCode::value);
        for code in 0..=255u8 {
            let bytes = [0x90, 0x04, 0x00, 0x0A, 0x00, code];
            let error = DecodeError::InvalidReasonCode {
                packet: PacketType::SubAck,
                code,
            };
            if !v5_codes.contains(&code) {
                assert_decode_error(&bytes, V5, error, ReasonCode::MalformedPacket);
            }
            if ![0x00, 0x01, 0x02, 0x80].contains(&code) {
                let v3 = [0x90, 0x03, 0x00, 0x0A, code];
                assert_decode_error(&v3, V3_1_1, error, ReasonCode::MalformedPacket);
            }
        }
    }

    #[test]
    fn suback_packet_identifier_0_and_lengths() {
        // [MQTT-2.3.1-7] (3.1.1), [MQTT-2.2.1-6] (5.0): the SUBSCRIBE's identifier, never 0.
        assert_decode_error(
            &patched(&SUBACK_V3_1_1, 2, &[0x00, 0x00]),
            V3_1_1,
            DecodeError::ZeroPacketId,
            ReasonCode::ProtocolError,
        );
        assert_decode_error(
            &patched(&SUBACK_V5, 2, &[0x00, 0x00]),
            V5,
            DecodeError::ZeroPacketId,
            ReasonCode::ProtocolError,
        );
        // 5.0 §3.9.2.1: the property length is not optional.
        assert_decode_error(
            &[0x90, 0x02, 0x00, 0x0A],
            V5,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
        // §3.9.2.1: Subscription Identifier is not a SUBACK property.
        assert_decode_error(
            &[0x90, 0x06, 0x00, 0x0A, 0x02, 0x0B, 0x01, 0x00],
            V5,
            DecodeError::PropertyNotAllowed {
                property: 0x0B,
                packet: PacketType::SubAck,
            },
            ReasonCode::MalformedPacket,
        );
    }

    // UNSUBSCRIBE (§3.10): packet identifier, (5.0) properties, topic filters.
    static UNSUBSCRIBE_V3_1_1: [u8; 14] = [
        0xA2, // UNSUBSCRIBE, flags 0010
        0x0C, // remaining length 12
        0x00, 0x0A, // packet identifier 10
        // Payload: the non-normative example of 3.1.1 §3.10.3
        0x00, 0x03, b'a', b'/', b'b', // topic filter "a/b" (offset 4)
        0x00, 0x03, b'c', b'/', b'd', // topic filter "c/d" (offset 9)
    ];

    static UNSUBSCRIBE_V5: [u8; 22] = [
        0xA2, // UNSUBSCRIBE, flags 0010
        0x14, // remaining length 20
        0x00, 0x0A, // packet identifier 10
        0x07, // property length 7
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property k = v (offset 5)
        0x00, 0x03, b'a', b'/', b'b', // topic filter "a/b" (offset 12)
        0x00, 0x03, b'c', b'/', b'd', // topic filter "c/d" (offset 17)
    ];

    fn unsubscribe(properties: Properties<'static>) -> Packet<'static> {
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(10),
            properties,
            filters: List::new(&["a/b", "c/d"]),
        })
    }

    const USER_PROPERTY: [Property<'static>; 1] = [Property::UserProperty("k", "v")];

    #[test]
    fn unsubscribe_decode() {
        for version in [V3_1, V3_1_1] {
            assert_eq!(
                decode_whole(&UNSUBSCRIBE_V3_1_1, version),
                unsubscribe(Properties::empty())
            );
        }
        assert_eq!(
            decode_whole(&UNSUBSCRIBE_V5, V5),
            unsubscribe(Properties::new(&USER_PROPERTY))
        );
        assert_incomplete_prefixes(&UNSUBSCRIBE_V3_1_1, V3_1_1);
        assert_incomplete_prefixes(&UNSUBSCRIBE_V5, V5);
    }

    #[test]
    fn unsubscribe_encode() {
        for version in [V3_1, V3_1_1] {
            assert_encodes(
                &unsubscribe(Properties::empty()),
                version,
                &UNSUBSCRIBE_V3_1_1,
            );
            // A 5.0 UNSUBSCRIBE loses its properties.
            assert_encodes(
                &unsubscribe(Properties::new(&USER_PROPERTY)),
                version,
                &UNSUBSCRIBE_V3_1_1,
            );
        }
        assert_encodes(
            &unsubscribe(Properties::new(&USER_PROPERTY)),
            V5,
            &UNSUBSCRIBE_V5,
        );
    }

    #[test]
    fn unsubscribe_without_topic_filters() {
        // [MQTT-3.10.3-2]: "The Payload of an UNSUBSCRIBE packet MUST contain at least one
        // Topic Filter"; 5.0: "An UNSUBSCRIBE packet with no Payload is a Protocol Error."
        for version in [V3_1, V3_1_1] {
            assert_decode_error(
                &[0xA2, 0x02, 0x00, 0x0A],
                version,
                DecodeError::NoTopicFilters,
                ReasonCode::ProtocolError,
            );
        }
        assert_decode_error(
            &[0xA2, 0x03, 0x00, 0x0A, 0x00],
            V5,
            DecodeError::NoTopicFilters,
            ReasonCode::ProtocolError,
        );
    }

    #[test]
    fn unsubscribe_invalid_fields() {
        // [MQTT-2.3.1-1] (3.1.1), [MQTT-2.2.1-3] (5.0): packet identifier 0.
        assert_decode_error(
            &patched(&UNSUBSCRIBE_V3_1_1, 2, &[0x00, 0x00]),
            V3_1_1,
            DecodeError::ZeroPacketId,
            ReasonCode::ProtocolError,
        );
        assert_decode_error(
            &patched(&UNSUBSCRIBE_V5, 2, &[0x00, 0x00]),
            V5,
            DecodeError::ZeroPacketId,
            ReasonCode::ProtocolError,
        );
        // [MQTT-3.10.3-1]: topic filters are UTF-8 strings.
        assert_decode_error(
            &patched(&UNSUBSCRIBE_V3_1_1, 11, &[0xED, 0xA0, 0x80]),
            V3_1_1,
            DecodeError::InvalidUtf8,
            ReasonCode::MalformedPacket,
        );
        assert_decode_error(
            &patched(&UNSUBSCRIBE_V5, 15, &[0x00]),
            V5,
            DecodeError::NullCharacter,
            ReasonCode::MalformedPacket,
        );
        // A second filter claiming 4 bytes where 3 remain.
        assert_decode_error(
            &patched(&UNSUBSCRIBE_V3_1_1, 9, &[0x00, 0x04]),
            V3_1_1,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
        // §3.10.2.1: user properties only; the 7 property bytes become Subscription
        // Identifier 5 and a User Property "" = "".
        assert_decode_error(
            &patched(
                &UNSUBSCRIBE_V5,
                5,
                &[0x0B, 0x05, 0x26, 0x00, 0x00, 0x00, 0x00],
            ),
            V5,
            DecodeError::PropertyNotAllowed {
                property: 0x0B,
                packet: PacketType::Unsubscribe,
            },
            ReasonCode::MalformedPacket,
        );
    }

    // UNSUBACK (§3.11): packet identifier; in 5.0 properties and one code per filter.
    static UNSUBACK_V3_1_1: [u8; 4] = [
        0xB0, // UNSUBACK
        0x02, // remaining length 2
        0x00, 0x0A, // packet identifier 10
    ];

    static UNSUBACK_V5: [u8; 7] = [
        0xB0, // UNSUBACK
        0x05, // remaining length 5
        0x00, 0x0A, // packet identifier 10
        0x00, // property length 0
        0x00, // success
        0x11, // no subscription existed
    ];

    const UNSUBACK_CODES: [ReasonCode; 2] =
        [ReasonCode::Success, ReasonCode::NoSubscriptionExisted];

    fn unsuback(codes: &'static [ReasonCode]) -> Packet<'static> {
        Packet::UnsubAck(UnsubAck {
            packet_id: pid(10),
            properties: Properties::empty(),
            reason_codes: List::new(codes),
        })
    }

    #[test]
    fn unsuback_decode() {
        for version in [V3_1, V3_1_1] {
            assert_eq!(decode_whole(&UNSUBACK_V3_1_1, version), unsuback(&[]));
        }
        assert_eq!(decode_whole(&UNSUBACK_V5, V5), unsuback(&UNSUBACK_CODES));
        assert_incomplete_prefixes(&UNSUBACK_V5, V5);
    }

    #[test]
    fn unsuback_encode() {
        for version in [V3_1, V3_1_1] {
            assert_encodes(&unsuback(&[]), version, &UNSUBACK_V3_1_1);
            // 3.x has no codes: a 5.0 UNSUBACK is the packet identifier alone.
            assert_encodes(&unsuback(&UNSUBACK_CODES), version, &UNSUBACK_V3_1_1);
        }
        assert_encodes(&unsuback(&UNSUBACK_CODES), V5, &UNSUBACK_V5);
    }

    #[test]
    fn unsuback_invalid() {
        // 3.1.1 §3.11: no payload.
        assert_decode_error(
            &[0xB0, 0x03, 0x00, 0x0A, 0x00],
            V3_1_1,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
        // 5.0 §3.11.2.1: the property length is not optional.
        assert_decode_error(
            &UNSUBACK_V3_1_1,
            V5,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
        // [MQTT-2.3.1-7] (3.1.1), [MQTT-2.2.1-6] (5.0): packet identifier 0.
        assert_decode_error(
            &patched(&UNSUBACK_V3_1_1, 2, &[0x00, 0x00]),
            V3_1_1,
            DecodeError::ZeroPacketId,
            ReasonCode::ProtocolError,
        );
        assert_decode_error(
            &patched(&UNSUBACK_V5, 2, &[0x00, 0x00]),
            V5,
            DecodeError::ZeroPacketId,
            ReasonCode::ProtocolError,
        );
        // [MQTT-3.11.3-2] (5.0): one of the Unsubscribe Reason Codes of §3.11.3.
        let allowed = [0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
        for code in 0..=255u8 {
            let bytes = patched(&UNSUBACK_V5, 6, &[code]);
            if allowed.contains(&code) {
                assert!(decode(&bytes, V5, 64).is_ok());
            } else {
                assert_decode_error(
                    &bytes,
                    V5,
                    DecodeError::InvalidReasonCode {
                        packet: PacketType::UnsubAck,
                        code,
                    },
                    ReasonCode::MalformedPacket,
                );
            }
        }
    }
}
