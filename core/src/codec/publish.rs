//! PUBLISH (§3.3) and its acknowledgments PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4-§3.7).

use super::error::DecodeError;
use super::properties::{Properties, Scope, read_properties, write_properties};
use super::reason::ReasonCode;
use super::tail::{code_and_properties_size, read_code_and_properties, write_code_and_properties};
use super::types::{PacketId, ProtocolVersion, QoS};
use super::wire::{Reader, Writer, check_str};
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
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
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

    pub(crate) fn read(
        r: &mut Reader<'a>,
        flags: u8,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let topic = check_str(r.binary()?)?;
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
        match check_topic_name(topic) {
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
        w.str(self.topic);
        if let Some(id) = self.packet_id() {
            w.u16(id.get());
        }
        if version.is_v5() {
            write_properties(w, &self.properties);
        }
        w.bytes(self.payload);
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
