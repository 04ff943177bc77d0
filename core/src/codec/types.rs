//! Small value types shared by every packet: protocol versions, QoS levels, packet
//! identifiers and subscription options.

use core::fmt;
use core::num::NonZeroU16;

use super::error::DecodeError;

/// A packet identifier: never zero on the wire ([MQTT-2.2.1-3], [MQTT-2.3.1-1] in 3.1.1).
///
/// Using `NonZeroU16` makes the rule part of the type: a decoded packet cannot carry 0, and
/// a packet built by the caller cannot send it.
pub type PacketId = NonZeroU16;

/// The protocol level a connection speaks, chosen by its CONNECT packet.
///
/// The level decides how every later packet on the connection is laid out (only 5.0 has
/// properties and reason codes), so the decoder and encoder both take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V3_1,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V3_1_1,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte sent in CONNECT.
    pub const fn level(self) -> u8 {
        match self {
            Self::V3_1 => 3,
            Self::V3_1_1 => 4,
            Self::V5 => 5,
        }
    }

    /// The protocol name sent in CONNECT for this level.
    pub const fn protocol_name(self) -> &'static str {
        match self {
            Self::V3_1 => "MQIsdp",
            Self::V3_1_1 | Self::V5 => "MQTT",
        }
    }

    /// Whether packets carry properties and reason codes (MQTT 5.0 only).
    #[inline]
    pub const fn is_v5(self) -> bool {
        matches!(self, Self::V5)
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V3_1 => "3.1",
            Self::V3_1_1 => "3.1.1",
            Self::V5 => "5.0",
        })
    }
}

/// Quality of service of a message or a subscription (MQTT 5.0 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum QoS {
    /// QoS 0: fire and forget.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: acknowledged with PUBACK, may be duplicated.
    AtLeastOnce = 1,
    /// QoS 2: four-step handshake, delivered exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two QoS bits; 3 is malformed ([MQTT-3.3.1-4]).
    #[inline]
    pub const fn from_bits(bits: u8) -> Result<Self, DecodeError> {
        match bits {
            0 => Ok(Self::AtMostOnce),
            1 => Ok(Self::AtLeastOnce),
            2 => Ok(Self::ExactlyOnce),
            _ => Err(DecodeError::InvalidQoS),
        }
    }

    /// The QoS as its numeric level.
    #[inline]
    pub const fn level(self) -> u8 {
        self as u8
    }
}

/// Whether retained messages are sent when a subscription is made (MQTT 5.0 §3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe (0).
    #[default]
    SendOnSubscribe = 0,
    /// Send retained messages only if the subscription did not already exist (1).
    SendIfNew = 1,
    /// Never send retained messages on subscribe (2).
    DoNotSend = 2,
}

/// The options byte that follows each topic filter in SUBSCRIBE.
///
/// MQTT 3.1 and 3.1.1 only carry the maximum QoS; the other fields are then at their
/// defaults and are not encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SubscriptionOptions {
    /// The highest QoS the server may use for messages on this subscription.
    pub qos: QoS,
    /// Do not forward messages published by this same client (5.0 only).
    pub no_local: bool,
    /// Keep the RETAIN flag as published instead of clearing it (5.0 only).
    pub retain_as_published: bool,
    /// When to send retained messages (5.0 only).
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with the given QoS and 5.0 defaults for the rest.
    pub const fn qos(qos: QoS) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendOnSubscribe,
        }
    }

    /// Parses the options byte, checking the reserved bits for `version`.
    pub(crate) fn from_byte(byte: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let reserved = if version.is_v5() {
            0b1100_0000
        } else {
            0b1111_1100
        };
        if byte & reserved != 0 {
            // [MQTT-3.8.3-4] (3.1.1), [MQTT-3.8.3-5] (5.0): reserved bits must be zero.
            return Err(DecodeError::InvalidSubscriptionOptions);
        }
        let qos = match QoS::from_bits(byte & 0b11) {
            Ok(qos) => qos,
            // 5.0 §3.8.3.1: Maximum QoS 3 is a Protocol Error ([MQTT-3-8.3-4] of 3.1.1:
            // malformed).
            Err(_) if version.is_v5() => {
                return Err(DecodeError::InvalidSubscriptionQoSOrRetainHandling);
            }
            Err(e) => return Err(e),
        };
        let retain_handling = match (byte >> 4) & 0b11 {
            0 => RetainHandling::SendOnSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            // 5.0 §3.8.3.1: retain handling 3 is a Protocol Error.
            _ => return Err(DecodeError::InvalidSubscriptionQoSOrRetainHandling),
        };
        Ok(Self {
            qos,
            no_local: byte & 0b0100 != 0,
            retain_as_published: byte & 0b1000 != 0,
            retain_handling,
        })
    }

    /// The options byte for `version`; fields 3.1.1 does not know are left out.
    pub(crate) fn to_byte(self, version: ProtocolVersion) -> u8 {
        let mut byte = self.qos as u8;
        if version.is_v5() {
            byte |= (self.no_local as u8) << 2;
            byte |= (self.retain_as_published as u8) << 3;
            byte |= (self.retain_handling as u8) << 4;
        }
        byte
    }
}
