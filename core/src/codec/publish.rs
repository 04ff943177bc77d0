//! PUBLISH (§3.3) and its acknowledgments PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4-§3.7).

use super::error::DecodeError;
use super::error::EncodeError;
use super::properties::{Properties, Scope, read_properties, write_properties};
use super::reason::ReasonCode;
use super::tail::{code_and_properties_size, read_code_and_properties, write_code_and_properties};
use super::types::{PacketId, ProtocolVersion, QoS};
use super::wire::{HAS_WILDCARD, MAX_VAR_INT, Reader, Writer, check_str_scan, scan, var_int_len};
use super::{PacketType, Size, read_packet_id};

/// The QoS of a PUBLISH together with its packet identifier, which exists exactly when
/// the QoS is above 0 ([MQTT-2.2.1-2], [MQTT-2.2.1-3]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum QoSPid {
    /// QoS 0: no packet identifier.
    AtMostOnce,
    /// QoS 1 with its packet identifier.
    AtLeastOnce(PacketId),
    /// QoS 2 with its packet identifier.
    ExactlyOnce(PacketId),
}

impl QoSPid {
    /// The QoS level.
    #[inline]
    pub const fn qos(self) -> QoS {
        match self {
            Self::AtMostOnce => QoS::AtMostOnce,
            Self::AtLeastOnce(_) => QoS::AtLeastOnce,
            Self::ExactlyOnce(_) => QoS::ExactlyOnce,
        }
    }

    /// The packet identifier, for QoS 1 and 2.
    #[inline]
    pub const fn packet_id(self) -> Option<PacketId> {
        match self {
            Self::AtMostOnce => None,
            Self::AtLeastOnce(id) | Self::ExactlyOnce(id) => Some(id),
        }
    }
}

/// A PUBLISH packet (§3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Publish<'a> {
    /// DUP: this may be a re-delivery ([MQTT-3.3.1-1]); never set for QoS 0.
    pub dup: bool,
    /// QoS and, above 0, the packet identifier.
    pub qos_pid: QoSPid,
    /// RETAIN: store as the topic's retained message / sent from the retained store.
    pub retain: bool,
    /// The topic name; empty only in 5.0 when a Topic Alias stands for it.
    pub topic: &'a str,
    /// PUBLISH properties (5.0 only).
    pub properties: Properties<'a>,
    /// The application message.
    pub payload: &'a [u8],
}

/// Checks a topic name: no wildcards ([MQTT-3.3.2-2], [MQTT-4.7.1-1]) and no U+0000; the
/// caller has UTF-8 checked it or does so next.
#[inline]
pub(crate) fn check_topic_name(topic: &str) -> Result<(), DecodeError> {
    check_scanned_topic_name(topic, scan(topic.as_bytes()))
}

/// [`check_topic_name`] for a name whose bytes [`scan`] has already looked at.
#[inline]
fn check_scanned_topic_name(topic: &str, found: u8) -> Result<(), DecodeError> {
    if found & HAS_WILDCARD != 0 {
        return Err(DecodeError::WildcardInTopicName);
    }
    if topic.is_empty() {
        // [MQTT-4.7.3-1]: topic names are at least one character long; 5.0's exception for
        // topic aliases is handled by the PUBLISH reader.
        return Err(DecodeError::EmptyTopicName);
    }
    Ok(())
}

impl<'a> Publish<'a> {
    /// The QoS level.
    #[inline]
    pub const fn qos(&self) -> QoS {
        self.qos_pid.qos()
    }

    /// The packet identifier, for QoS 1 and 2.
    #[inline]
    pub const fn packet_id(&self) -> Option<PacketId> {
        self.qos_pid.packet_id()
    }

    // Inlined into `decode`, so the packet is built where the caller receives it.
    #[inline]
    pub(crate) fn read(
        r: &mut Reader<'a>,
        flags: u8,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        // One pass over the topic serves both the string checks and the topic checks.
        let (topic, found) = check_str_scan(r.binary()?)?;
        let qos_pid = match (flags >> 1) & 0b11 {
            0 => QoSPid::AtMostOnce,
            1 => QoSPid::AtLeastOnce(read_packet_id(r)?),
            2 => QoSPid::ExactlyOnce(read_packet_id(r)?),
            _ => return Err(DecodeError::InvalidQoS),
        };
        let properties = if version.is_v5() {
            read_properties(r, Scope::PUBLISH)?
        } else {
            Properties::empty()
        };
        match check_scanned_topic_name(topic, found) {
            // [MQTT-3.3.2-8]: 5.0 lets a Topic Alias stand for an empty topic name.
            Err(DecodeError::EmptyTopicName)
                if version.is_v5() && properties.topic_alias().is_some() => {}
            other => other?,
        }
        Ok(Self {
            dup: flags & 0b1000 != 0,
            qos_pid,
            retain: flags & 1 != 0,
            topic,
            properties,
            payload: r.rest(),
        })
    }

    /// The fixed header flags: DUP, QoS, RETAIN.
    pub(crate) fn flags(&self) -> u8 {
        (self.dup as u8) << 3 | self.qos().level() << 1 | self.retain as u8
    }

    pub(crate) fn size(&self, version: ProtocolVersion) -> Size {
        let mut size = Size::default();
        size.field(self.topic.len());
        if self.packet_id().is_some() {
            size.add(2);
        }
        if version.is_v5() {
            size.properties(&self.properties);
        }
        size.add(self.payload.len());
        size
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, version: ProtocolVersion) {
        self.write_head(w, version);
        w.bytes(self.payload);
    }

    /// Topic, packet identifier and properties: everything after the fixed header but
    /// the payload.
    fn write_head(&self, w: &mut Writer<'_>, version: ProtocolVersion) {
        w.str(self.topic);
        if let Some(id) = self.packet_id() {
            w.u16(id.get());
        }
        if version.is_v5() {
            write_properties(w, &self.properties);
        }
    }

    /// Encodes the PUBLISH without its payload: the fixed header, topic, packet
    /// identifier and properties. The packet on the wire is these bytes followed by
    /// [`Publish::payload`], so a host can send the payload from where it already is (a
    /// vectored write) instead of copying it. Returns the header's length; on error
    /// nothing is written.
    pub fn encode_header(
        &self,
        version: ProtocolVersion,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let size = self.size(version);
        if size.too_large || size.len > MAX_VAR_INT as usize {
            return Err(EncodeError::TooLarge);
        }
        let required = 1 + var_int_len(size.len as u32) + size.len - self.payload.len();
        let Some(out) = buf.get_mut(..required) else {
            return Err(EncodeError::InsufficientSize { required });
        };
        let mut w = Writer::new(out);
        w.u8((PacketType::Publish as u8) << 4 | self.flags());
        w.var_int(size.len as u32);
        self.write_head(&mut w, version);
        Ok(required)
    }

    /// The bytes of the packet that are not the topic name, the properties in wire form
    /// or the payload, for a sender that takes those from where they are stored and sends
    /// the packet in pieces: written into `out` as three runs, and their lengths returned.
    /// On the wire the packet is: run 1 (fixed header, topic length), the topic name, run
    /// 2 (packet identifier, 5.0 property length), the wire properties (5.0), run 3 (the
    /// property items, 5.0), the payload. `None` if the runs do not fit in `out` or the
    /// packet cannot be encoded.
    pub(crate) fn encode_framing(
        &self,
        version: ProtocolVersion,
        out: &mut [u8],
    ) -> Option<[usize; 3]> {
        let size = self.size(version);
        let (wire, items) = self.properties.parts();
        let items_len: usize = items.iter().map(super::Property::encoded_len).sum();
        let mut runs = [
            1 + var_int_len(size.len as u32) + 2,
            self.packet_id().map_or(0, |_| 2),
            0,
        ];
        if version.is_v5() {
            runs[1] += var_int_len((wire.len() + items_len) as u32);
            runs[2] = items_len;
        }
        if size.too_large
            || size.len > MAX_VAR_INT as usize
            || runs.iter().sum::<usize>() > out.len()
        {
            return None;
        }
        let mut w = Writer::new(out);
        w.u8((PacketType::Publish as u8) << 4 | self.flags());
        w.var_int(size.len as u32);
        w.u16(self.topic.len() as u16);
        if let Some(id) = self.packet_id() {
            w.u16(id.get());
        }
        if version.is_v5() {
            w.var_int((wire.len() + items_len) as u32);
            for p in items {
                p.write(&mut w);
            }
        }
        Some(runs)
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP: the same layout, told apart by [`super::Packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Ack<'a> {
    /// The identifier of the PUBLISH (or PUBREL) being answered.
    pub packet_id: PacketId,
    /// The outcome (5.0); always [`ReasonCode::Success`] before 5.0.
    pub reason_code: ReasonCode,
    /// Properties (5.0 only): a reason string and user properties.
    pub properties: Properties<'a>,
}

impl<'a> Ack<'a> {
    /// A successful acknowledgment with no properties.
    pub const fn new(packet_id: PacketId) -> Self {
        Self {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: Properties::empty(),
        }
    }

    pub(crate) fn read(
        r: &mut Reader<'a>,
        packet: PacketType,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        if !version.is_v5() {
            return Ok(Self::new(packet_id));
        }
        let scope = match packet {
            PacketType::PubAck => Scope::PUBACK,
            PacketType::PubRec => Scope::PUBREC,
            PacketType::PubRel => Scope::PUBREL,
            _ => Scope::PUBCOMP,
        };
        // [MQTT-3.4.2-1] and §3.4.2.1: a remaining length of 2 means Success with no
        // properties; with 3 the property length is left out too.
        let (reason_code, properties) = read_code_and_properties(r, packet, scope)?;
        Ok(Self {
            packet_id,
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
            let tail = code_and_properties_size(self.reason_code, &self.properties);
            size.add(tail.len);
            size.too_large |= tail.too_large;
        }
        size
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, version: ProtocolVersion) {
        w.u16(self.packet_id.get());
        if version.is_v5() {
            write_code_and_properties(w, self.reason_code, &self.properties);
        }
    }
}

#[cfg(test)]
mod tests {
    //! PUBLISH (§3.3) and PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4-§3.7) as bytes, from the
    //! layouts of MQTT 3.1.1 and 5.0 (3.1 shares the 3.1.1 layout).

    use super::*;
    use crate::codec::tests::{
        V3_1, V3_1_1, V5, assert_decode_error, assert_encodes, assert_incomplete_prefixes,
        decode_whole, patched, pid,
    };
    use crate::codec::{Packet, Property};

    static PUBLISH_QOS0: [u8; 9] = [
        0x30, // PUBLISH, DUP 0, QoS 0, RETAIN 0
        0x07, // remaining length 7
        0x00, 0x03, b'a', b'/', b'b', // topic name "a/b"
        b'h', b'i', // payload "hi"
    ];

    static PUBLISH_QOS1: [u8; 11] = [
        0x32, // PUBLISH, DUP 0, QoS 1, RETAIN 0
        0x09, // remaining length 9
        // Variable header: the non-normative example of 3.1.1 §3.3.2
        0x00, 0x03, b'a', b'/', b'b', // topic name "a/b" (offset 2)
        0x00, 0x0A, // packet identifier 10 (offset 7)
        b'h', b'i', // payload "hi"
    ];

    static PUBLISH_QOS2_DUP_RETAIN: [u8; 11] = [
        0x3D, // PUBLISH, DUP 1, QoS 2, RETAIN 1
        0x09, // remaining length 9
        0x00, 0x03, b'a', b'/', b'b', // topic name "a/b"
        0x00, 0x0A, // packet identifier 10
        b'h', b'i', // payload "hi"
    ];

    static PUBLISH_RETAINED_EMPTY: [u8; 7] = [
        0x31, // PUBLISH, QoS 0, RETAIN 1
        0x05, // remaining length 5
        0x00, 0x03, b'a', b'/',
        b'b', // topic name "a/b"
              // no payload: clears the retained message ([MQTT-3.3.1-10] of 3.1.1)
    ];

    fn publish(flags: (bool, QoSPid, bool), payload: &'static [u8]) -> Publish<'static> {
        Publish {
            dup: flags.0,
            qos_pid: flags.1,
            retain: flags.2,
            topic: "a/b",
            properties: Properties::empty(),
            payload,
        }
    }

    fn v3_cases() -> [(&'static [u8], Publish<'static>); 4] {
        [
            (
                &PUBLISH_QOS0,
                publish((false, QoSPid::AtMostOnce, false), b"hi"),
            ),
            (
                &PUBLISH_QOS1,
                publish((false, QoSPid::AtLeastOnce(pid(10)), false), b"hi"),
            ),
            (
                &PUBLISH_QOS2_DUP_RETAIN,
                publish((true, QoSPid::ExactlyOnce(pid(10)), true), b"hi"),
            ),
            (
                &PUBLISH_RETAINED_EMPTY,
                publish((false, QoSPid::AtMostOnce, true), b""),
            ),
        ]
    }

    #[test]
    fn publish_v3_decode() {
        for version in [V3_1, V3_1_1] {
            for (bytes, expected) in v3_cases() {
                assert_eq!(decode_whole(bytes, version), Packet::Publish(expected));
                assert_incomplete_prefixes(bytes, version);
            }
        }
        let decoded = publish((false, QoSPid::AtLeastOnce(pid(10)), false), b"hi");
        assert_eq!(decoded.qos(), QoS::AtLeastOnce);
        assert_eq!(decoded.packet_id(), Some(pid(10)));
    }

    #[test]
    fn publish_v3_encode() {
        for version in [V3_1, V3_1_1] {
            for (bytes, packet) in v3_cases() {
                assert_encodes(&Packet::Publish(packet), version, bytes);
            }
        }
    }

    static PUBLISH_V5_QOS1: [u8; 12] = [
        0x32, // PUBLISH, DUP 0, QoS 1, RETAIN 0
        0x0A, // remaining length 10
        // Variable header: the non-normative example of 5.0 §3.3.2
        0x00, 0x03, b'a', b'/', b'b', // topic name "a/b"
        0x00, 0x0A, // packet identifier 10 (offset 7)
        0x00, // property length 0 (offset 9)
        b'h', b'i', // payload "hi"
    ];

    static PUBLISH_V5_QOS0: [u8; 10] = [
        0x30, // PUBLISH, DUP 0, QoS 0, RETAIN 0
        0x08, // remaining length 8
        0x00, 0x03, b'a', b'/', b'b', // topic name "a/b"
        0x00, // property length 0
        b'h', b'i', // payload "hi"
    ];

    static PUBLISH_V5_PROPERTIES: [u8; 52] = [
        0x32, // PUBLISH, DUP 0, QoS 1, RETAIN 0
        0x32, // remaining length 50
        0x00, 0x03, b'a', b'/', b'b', // topic name "a/b"
        0x00, 0x0A, // packet identifier 10
        0x28, // property length 40
        0x01, 0x01, // payload format indicator: UTF-8 (offset 10)
        0x02, 0x00, 0x00, 0x00, 0x3C, // message expiry interval 60 s (offset 12)
        0x23, 0x00, 0x05, // topic alias 5 (offset 17)
        0x08, 0x00, 0x03, b'r', b'/', b'1', // response topic "r/1" (offset 20)
        0x09, 0x00, 0x02, 0xC0, 0xFF, // correlation data C0 FF
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property k = v
        0x0B, 0x01, // subscription identifier 1
        0x0B, 0x80, 0x01, // subscription identifier 128 ([MQTT-3.3.4-4]: one per match)
        0x03, 0x00, 0x04, b'j', b's', b'o', b'n', // content type "json" (offset 43)
        b'h', b'i', // payload "hi"
    ];

    const V5_PROPERTIES: [Property<'static>; 9] = [
        Property::PayloadFormatIndicator(true),
        Property::MessageExpiryInterval(60),
        Property::TopicAlias(5),
        Property::ResponseTopic("r/1"),
        Property::CorrelationData(&[0xC0, 0xFF]),
        Property::UserProperty("k", "v"),
        Property::SubscriptionIdentifier(1),
        Property::SubscriptionIdentifier(128),
        Property::ContentType("json"),
    ];

    static PUBLISH_V5_ALIAS_ONLY: [u8; 10] = [
        0x30, // PUBLISH, QoS 0
        0x08, // remaining length 8
        0x00, 0x00, // topic name: empty, the alias stands for it (§3.3.2.3.4)
        0x03, // property length 3
        0x23, 0x00, 0x01, // topic alias 1
        b'h', b'i', // payload "hi"
    ];

    fn v5_cases() -> [(&'static [u8], Publish<'static>); 4] {
        [
            (
                &PUBLISH_V5_QOS0,
                publish((false, QoSPid::AtMostOnce, false), b"hi"),
            ),
            (
                &PUBLISH_V5_QOS1,
                publish((false, QoSPid::AtLeastOnce(pid(10)), false), b"hi"),
            ),
            (
                &PUBLISH_V5_PROPERTIES,
                Publish {
                    properties: Properties::new(&V5_PROPERTIES),
                    ..publish((false, QoSPid::AtLeastOnce(pid(10)), false), b"hi")
                },
            ),
            (
                &PUBLISH_V5_ALIAS_ONLY,
                Publish {
                    topic: "",
                    properties: Properties::new(&[Property::TopicAlias(1)]),
                    ..publish((false, QoSPid::AtMostOnce, false), b"hi")
                },
            ),
        ]
    }

    #[test]
    fn publish_v5_decode() {
        for (bytes, expected) in v5_cases() {
            assert_eq!(decode_whole(bytes, V5), Packet::Publish(expected));
            assert_incomplete_prefixes(bytes, V5);
        }
    }

    #[test]
    fn publish_v5_encode() {
        for (bytes, packet) in v5_cases() {
            assert_encodes(&Packet::Publish(packet), V5, bytes);
            // A decoded PUBLISH is forwarded with its properties as they came.
            assert_encodes(&decode_whole(bytes, V5), V5, bytes);
        }
    }

    #[test]
    fn publish_v5_for_v3_drops_the_properties() {
        // A 5.0 message forwarded to a 3.1.1 subscriber: same topic, identifier and payload,
        // no property length, no properties.
        let (_, packet) = v5_cases()[2];
        assert_encodes(&Packet::Publish(packet), V3_1_1, &PUBLISH_QOS1);
        assert_encodes(
            &decode_whole(&PUBLISH_V5_PROPERTIES, V5),
            V3_1_1,
            &PUBLISH_QOS1,
        );
        assert_encodes(&decode_whole(&PUBLISH_V5_QOS1, V5), V3_1, &PUBLISH_QOS1);
    }

    #[test]
    fn publish_empty_topic_name() {
        // [MQTT-4.7.3-1]: topic names are at least one character long.
        static EMPTY_TOPIC: [u8; 6] = [
            0x30, // PUBLISH, QoS 0
            0x04, // remaining length 4
            0x00, 0x00, // topic name: empty
            b'h', b'i', // payload
        ];
        for version in [V3_1, V3_1_1] {
            assert_decode_error(
                &EMPTY_TOPIC,
                version,
                DecodeError::EmptyTopicName,
                ReasonCode::ProtocolError,
            );
        }
        // 5.0 §3.3.2.1: "It is a Protocol Error if the Topic Name is zero length and there
        // is no Topic Alias", with no properties or with others only.
        static EMPTY_TOPIC_V5: [u8; 7] = [
            0x30, // PUBLISH, QoS 0
            0x05, // remaining length 5
            0x00, 0x00, // topic name: empty
            0x00, // property length 0
            b'h', b'i', // payload
        ];
        static EMPTY_TOPIC_V5_NO_ALIAS: [u8; 9] = [
            0x30, // PUBLISH, QoS 0
            0x07, // remaining length 7
            0x00, 0x00, // topic name: empty
            0x02, // property length 2
            0x01, 0x01, // payload format indicator: UTF-8
            b'h', b'i', // payload
        ];
        for bytes in [&EMPTY_TOPIC_V5[..], &EMPTY_TOPIC_V5_NO_ALIAS] {
            assert_decode_error(
                bytes,
                V5,
                DecodeError::EmptyTopicName,
                ReasonCode::ProtocolError,
            );
        }
        // With a Topic Alias the empty name is fine, but only in 5.0: 3.1.1 reads the same
        // bytes as topic "" followed by payload.
        assert_decode_error(
            &PUBLISH_V5_ALIAS_ONLY,
            V3_1_1,
            DecodeError::EmptyTopicName,
            ReasonCode::ProtocolError,
        );
    }

    #[test]
    fn publish_wildcards_in_topic_name() {
        // [MQTT-3.3.2-2]: "The Topic Name in the PUBLISH packet MUST NOT contain wildcard
        // characters."
        for (at, wildcard) in [(6, b'#'), (6, b'+'), (4, b'+'), (4, b'#'), (5, b'+')] {
            for version in [V3_1, V3_1_1] {
                assert_decode_error(
                    &patched(&PUBLISH_QOS1, at, &[wildcard]),
                    version,
                    DecodeError::WildcardInTopicName,
                    ReasonCode::TopicNameInvalid,
                );
            }
            assert_decode_error(
                &patched(&PUBLISH_V5_QOS1, at, &[wildcard]),
                V5,
                DecodeError::WildcardInTopicName,
                ReasonCode::TopicNameInvalid,
            );
        }
    }

    #[test]
    fn publish_qos_3() {
        // [MQTT-3.3.1-4]: "A PUBLISH Packet MUST NOT have both QoS bits set to 1"; 5.0: "it
        // is a Malformed Packet".
        for first in [0x36, 0x37, 0x3E, 0x3F] {
            for version in [V3_1, V3_1_1] {
                assert_decode_error(
                    &patched(&PUBLISH_QOS1, 0, &[first]),
                    version,
                    DecodeError::InvalidQoS,
                    ReasonCode::MalformedPacket,
                );
            }
            assert_decode_error(
                &patched(&PUBLISH_V5_QOS1, 0, &[first]),
                V5,
                DecodeError::InvalidQoS,
                ReasonCode::MalformedPacket,
            );
        }
    }

    #[test]
    fn publish_dup_with_qos_0() {
        // [MQTT-3.3.1-2]: "The DUP flag MUST be set to 0 for all QoS 0 messages."
        for first in [0x38, 0x39] {
            for version in [V3_1, V3_1_1] {
                assert_decode_error(
                    &patched(&PUBLISH_QOS0, 0, &[first]),
                    version,
                    DecodeError::DupWithQoS0,
                    ReasonCode::MalformedPacket,
                );
            }
            assert_decode_error(
                &patched(&PUBLISH_V5_QOS0, 0, &[first]),
                V5,
                DecodeError::DupWithQoS0,
                ReasonCode::MalformedPacket,
            );
        }
    }

    #[test]
    fn publish_packet_identifier_0() {
        // [MQTT-2.3.1-1] (3.1.1), [MQTT-2.2.1-3] (5.0): QoS 1 and 2 PUBLISH packets carry a
        // non-zero packet identifier.
        for base in [&PUBLISH_QOS1, &PUBLISH_QOS2_DUP_RETAIN] {
            for version in [V3_1, V3_1_1] {
                assert_decode_error(
                    &patched(base, 7, &[0x00, 0x00]),
                    version,
                    DecodeError::ZeroPacketId,
                    ReasonCode::ProtocolError,
                );
            }
        }
        assert_decode_error(
            &patched(&PUBLISH_V5_QOS1, 7, &[0x00, 0x00]),
            V5,
            DecodeError::ZeroPacketId,
            ReasonCode::ProtocolError,
        );
    }

    #[test]
    fn publish_topic_name_must_be_well_formed_utf8() {
        // [MQTT-3.3.2-1]: the topic name is a UTF-8 string; [MQTT-1.5.3-1] /
        // [MQTT-1.5.4-1]: no ill-formed UTF-8 and no surrogates (U+D800 is ED A0 80);
        // [MQTT-1.5.3-2] / [MQTT-1.5.4-2]: no U+0000.
        for bad in [[0xED, 0xA0, 0x80], [0xC0, 0x80, b'x'], [b'a', 0xFF, b'b']] {
            assert_decode_error(
                &patched(&PUBLISH_QOS1, 4, &bad),
                V3_1_1,
                DecodeError::InvalidUtf8,
                ReasonCode::MalformedPacket,
            );
            assert_decode_error(
                &patched(&PUBLISH_V5_QOS1, 4, &bad),
                V5,
                DecodeError::InvalidUtf8,
                ReasonCode::MalformedPacket,
            );
        }
        assert_decode_error(
            &patched(&PUBLISH_QOS1, 5, &[0x00]),
            V3_1_1,
            DecodeError::NullCharacter,
            ReasonCode::MalformedPacket,
        );
        assert_decode_error(
            &patched(&PUBLISH_V5_QOS1, 5, &[0x00]),
            V5,
            DecodeError::NullCharacter,
            ReasonCode::MalformedPacket,
        );
        // [MQTT-1.5.4-3]: a BOM (EF BB BF) is U+FEFF and is kept, not stripped.
        static BOM_TOPIC: [u8; 8] = [
            0x30, // PUBLISH, QoS 0
            0x06, // remaining length 6
            0x00, 0x04, 0xEF, 0xBB, 0xBF, b'a', // topic name "\u{FEFF}a"
        ];
        let packet = decode_whole(&BOM_TOPIC, V3_1_1);
        let Packet::Publish(p) = packet else {
            panic!("{packet:?}")
        };
        assert_eq!(p.topic, "\u{FEFF}a");
    }

    #[test]
    fn publish_fields_must_fit_the_packet() {
        // A topic name claiming 32 bytes.
        assert_decode_error(
            &patched(&PUBLISH_QOS1, 2, &[0x00, 0x20]),
            V3_1_1,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
        // QoS 1 with one byte left for the two-byte packet identifier.
        assert_decode_error(
            &[0x32, 0x06, 0x00, 0x03, b'a', b'/', b'b', 0x00],
            V3_1_1,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
        // 5.0: a property length of 5 with 2 bytes left.
        assert_decode_error(
            &patched(&PUBLISH_V5_QOS1, 9, &[0x05]),
            V5,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
        // 5.0: no property length at all.
        assert_decode_error(
            &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'b'],
            V5,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
    }

    #[test]
    fn publish_v5_properties_are_checked() {
        // [MQTT-3.3.2-8]: Topic Alias 0.
        assert_decode_error(
            &patched(&PUBLISH_V5_PROPERTIES, 18, &[0x00, 0x00]),
            V5,
            DecodeError::InvalidPropertyValue(0x23),
            ReasonCode::ProtocolError,
        );
        // §3.3.2.3.2: Payload Format Indicator 2.
        assert_decode_error(
            &patched(&PUBLISH_V5_PROPERTIES, 11, &[0x02]),
            V5,
            DecodeError::InvalidPropertyValue(0x01),
            ReasonCode::ProtocolError,
        );
        // §3.3.2.3: Session Expiry Interval is not a PUBLISH property.
        assert_decode_error(
            &patched(&PUBLISH_V5_PROPERTIES, 12, &[0x11]),
            V5,
            DecodeError::PropertyNotAllowed {
                property: 0x11,
                packet: PacketType::Publish,
            },
            ReasonCode::MalformedPacket,
        );
        // §3.3.2.3.5: "It is a Protocol Error to include the Response Topic more than once"
        // (the content type becomes a second response topic).
        assert_decode_error(
            &patched(&PUBLISH_V5_PROPERTIES, 43, &[0x08]),
            V5,
            DecodeError::DuplicateProperty(0x08),
            ReasonCode::ProtocolError,
        );
    }

    // PUBACK (§3.4), PUBREC (§3.5), PUBREL (§3.6), PUBCOMP (§3.7): a packet identifier, and
    // in 5.0 an optional reason code and properties.
    static PUBACK_BYTES: [u8; 4] = [
        0x40, // PUBACK
        0x02, // remaining length 2
        0x00, 0x0A, // packet identifier 10
    ];
    static PUBREC_BYTES: [u8; 4] = [
        0x50, // PUBREC
        0x02, // remaining length 2
        0x00, 0x0A, // packet identifier 10
    ];
    static PUBREL_BYTES: [u8; 4] = [
        0x62, // PUBREL, flags 0010 ([MQTT-3.6.1-1])
        0x02, // remaining length 2
        0x00, 0x0A, // packet identifier 10
    ];
    static PUBCOMP_BYTES: [u8; 4] = [
        0x70, // PUBCOMP
        0x02, // remaining length 2
        0x00, 0x0A, // packet identifier 10
    ];

    fn ack(packet: PacketType, ack: Ack<'static>) -> Packet<'static> {
        match packet {
            PacketType::PubAck => Packet::PubAck(ack),
            PacketType::PubRec => Packet::PubRec(ack),
            PacketType::PubRel => Packet::PubRel(ack),
            _ => Packet::PubComp(ack),
        }
    }

    fn acks() -> [(&'static [u8; 4], PacketType); 4] {
        [
            (&PUBACK_BYTES, PacketType::PubAck),
            (&PUBREC_BYTES, PacketType::PubRec),
            (&PUBREL_BYTES, PacketType::PubRel),
            (&PUBCOMP_BYTES, PacketType::PubComp),
        ]
    }

    #[test]
    fn acks_v3_decode() {
        for version in [V3_1, V3_1_1] {
            for (bytes, packet) in acks() {
                assert_eq!(decode_whole(bytes, version), ack(packet, Ack::new(pid(10))));
                assert_incomplete_prefixes(bytes, version);
            }
        }
    }

    #[test]
    fn acks_v3_encode() {
        for version in [V3_1, V3_1_1] {
            for (bytes, packet) in acks() {
                assert_encodes(&ack(packet, Ack::new(pid(10))), version, bytes);
                // A 5.0 reason code has no place in 3.x.
                let failed = Ack {
                    reason_code: ReasonCode::UnspecifiedError,
                    properties: Properties::new(&[Property::ReasonString("no")]),
                    ..Ack::new(pid(10))
                };
                assert_encodes(&ack(packet, failed), version, bytes);
            }
        }
    }

    #[test]
    fn acks_v5_short_forms() {
        // §3.4.2.1: "The Reason Code and Property Length can be omitted if the Reason Code
        // is 0x00 (Success) and there are no Properties. In this case the PUBACK has a
        // Remaining Length of 2." §3.4.2.2.1: "If the Remaining Length is less than 4
        // there is no Property Length and the value of 0 is used." Likewise §3.5.2.1,
        // §3.6.2.1, §3.7.2.1.
        for (bytes, packet) in acks() {
            // Remaining length 2: Success, no properties; and it is how Success is written.
            assert_eq!(decode_whole(bytes, V5), ack(packet, Ack::new(pid(10))));
            assert_encodes(&ack(packet, Ack::new(pid(10))), V5, bytes);
            // Remaining length 3: a reason code, no property length.
            let code = match packet {
                PacketType::PubAck | PacketType::PubRec => ReasonCode::NoMatchingSubscribers,
                _ => ReasonCode::PacketIdentifierNotFound,
            };
            let short = [bytes[0], 0x03, 0x00, 0x0A, code.value()];
            let expected = ack(
                packet,
                Ack {
                    reason_code: code,
                    ..Ack::new(pid(10))
                },
            );
            assert_eq!(decode_whole(&short, V5), expected);
            assert_encodes(&expected, V5, &short);
            assert_incomplete_prefixes(&short, V5);
            // Remaining length 4: reason code and an empty property block, also valid.
            let full = [bytes[0], 0x04, 0x00, 0x0A, 0x00, 0x00];
            assert_eq!(decode_whole(&full, V5), ack(packet, Ack::new(pid(10))));
        }
    }

    static PUBREC_V5: [u8; 13] = [
        0x50, // PUBREC
        0x0B, // remaining length 11
        0x00, 0x0A, // packet identifier 10
        0x97, // reason code: Quota exceeded
        0x07, // property length 7
        0x1F, 0x00, 0x04, b'f', b'u', b'l', b'l', // reason string "full"
    ];

    static PUBACK_V5_SUCCESS_WITH_PROPERTIES: [u8; 11] = [
        0x40, // PUBACK
        0x09, // remaining length 9
        0x00, 0x0A, // packet identifier 10
        0x00, // reason code: Success, written because properties follow
        0x05, // property length 5
        0x1F, 0x00, 0x02, b'o', b'k', // reason string "ok"
    ];

    #[test]
    fn acks_v5_with_properties() {
        let pubrec = Packet::PubRec(Ack {
            packet_id: pid(10),
            reason_code: ReasonCode::QuotaExceeded,
            properties: Properties::new(&[Property::ReasonString("full")]),
        });
        assert_eq!(decode_whole(&PUBREC_V5, V5), pubrec);
        assert_encodes(&pubrec, V5, &PUBREC_V5);
        assert_incomplete_prefixes(&PUBREC_V5, V5);
        let puback = Packet::PubAck(Ack {
            packet_id: pid(10),
            reason_code: ReasonCode::Success,
            properties: Properties::new(&[Property::ReasonString("ok")]),
        });
        assert_eq!(decode_whole(&PUBACK_V5_SUCCESS_WITH_PROPERTIES, V5), puback);
        assert_encodes(&puback, V5, &PUBACK_V5_SUCCESS_WITH_PROPERTIES);
        // Sent to a 3.1.1 client: the packet identifier alone.
        assert_encodes(&pubrec, V3_1_1, &PUBREC_BYTES);
    }

    #[test]
    fn acks_v5_reason_codes() {
        // [MQTT-3.4.2-1], [MQTT-3.5.2-1], [MQTT-3.6.2-1], [MQTT-3.7.2-1]: only the codes of
        // the packet's own table (§3.4.2.1, §3.5.2.1, §3.6.2.1, §3.7.2.1) are allowed, so
        // e.g. 0x04 or 0x92 in a PUBACK is malformed.
        let puback_pubrec: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
        let pubrel_pubcomp: &[u8] = &[0x00, 0x92];
        for (bytes, packet) in acks() {
            let allowed = match packet {
                PacketType::PubAck | PacketType::PubRec => puback_pubrec,
                _ => pubrel_pubcomp,
            };
            for code in 0..=255u8 {
                let with_code = [bytes[0], 0x03, 0x00, 0x0A, code];
                if allowed.contains(&code) {
                    let expected = Ack {
                        reason_code: ReasonCode::from_u8(code).unwrap(),
                        ..Ack::new(pid(10))
                    };
                    assert_eq!(decode_whole(&with_code, V5), ack(packet, expected));
                } else {
                    assert_decode_error(
                        &with_code,
                        V5,
                        DecodeError::InvalidReasonCode { packet, code },
                        ReasonCode::MalformedPacket,
                    );
                }
            }
        }
    }

    #[test]
    fn acks_packet_identifier_0() {
        // [MQTT-2.3.1-6] (3.1.1), [MQTT-2.2.1-5] (5.0): an acknowledgment carries the
        // identifier of its PUBLISH, which is never 0.
        for (bytes, _) in acks() {
            for version in [V3_1, V3_1_1, V5] {
                assert_decode_error(
                    &patched(bytes, 2, &[0x00, 0x00]),
                    version,
                    DecodeError::ZeroPacketId,
                    ReasonCode::ProtocolError,
                );
            }
        }
    }

    #[test]
    fn acks_lengths() {
        for (bytes, packet) in acks() {
            // 3.1.1 §3.4-§3.7: remaining length 2, nothing more.
            for version in [V3_1, V3_1_1] {
                assert_decode_error(
                    &[bytes[0], 0x03, 0x00, 0x0A, 0x00],
                    version,
                    DecodeError::MalformedLength,
                    ReasonCode::MalformedPacket,
                );
            }
            // Remaining length 1: half a packet identifier.
            for version in [V3_1_1, V5] {
                assert_decode_error(
                    &[bytes[0], 0x01, 0x00],
                    version,
                    DecodeError::MalformedLength,
                    ReasonCode::MalformedPacket,
                );
            }
            // 5.0: a property length of 1 with nothing after it.
            assert_decode_error(
                &[bytes[0], 0x04, 0x00, 0x0A, 0x00, 0x01],
                V5,
                DecodeError::MalformedLength,
                ReasonCode::MalformedPacket,
            );
            // 5.0: Topic Alias is not an acknowledgment property (§3.4.2.2, §3.5.2.2,
            // §3.6.2.2, §3.7.2.2).
            assert_decode_error(
                &[bytes[0], 0x07, 0x00, 0x0A, 0x00, 0x03, 0x23, 0x00, 0x01],
                V5,
                DecodeError::PropertyNotAllowed {
                    property: 0x23,
                    packet,
                },
                ReasonCode::MalformedPacket,
            );
            // §3.4.2.2.2: "It is a Protocol Error to include the Reason String more than
            // once."
            assert_decode_error(
                &[
                    bytes[0], 0x0A, 0x00, 0x0A, 0x00, 0x06, // header to property length 6
                    0x1F, 0x00, 0x00, // reason string ""
                    0x1F, 0x00, 0x00, // reason string "" again
                ],
                V5,
                DecodeError::DuplicateProperty(0x1F),
                ReasonCode::ProtocolError,
            );
        }
    }
}

#[cfg(test)]
mod header_tests {
    use super::*;
    use crate::codec::{Packet, Property};

    #[test]
    fn header_then_payload_is_the_whole_packet() {
        let props = [
            Property::MessageExpiryInterval(9),
            Property::UserProperty("k", "v"),
        ];
        let payload = [0xAB; 300];
        for (version, properties) in [
            (ProtocolVersion::V3_1_1, Properties::empty()),
            (ProtocolVersion::V5, Properties::new(&props)),
        ] {
            let publish = Publish {
                dup: true,
                qos_pid: QoSPid::ExactlyOnce(PacketId::MIN),
                retain: true,
                topic: "a/b",
                properties,
                payload: &payload,
            };
            let mut whole = [0u8; 512];
            let n = Packet::Publish(publish)
                .encode(version, &mut whole)
                .unwrap();
            let mut head = [0u8; 64];
            let h = publish.encode_header(version, &mut head).unwrap();
            assert_eq!(h + payload.len(), n);
            assert_eq!(&head[..h], &whole[..h]);
            assert_eq!(&whole[h..n], &payload[..]);
            let mut tiny = [0xAAu8; 4];
            assert_eq!(
                publish.encode_header(version, &mut tiny),
                Err(EncodeError::InsufficientSize { required: h })
            );
            assert_eq!(tiny, [0xAA; 4]);
        }
    }
}
