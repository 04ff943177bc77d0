//! Decode and encode errors, and the reason code a broker answers each decode error with.

use core::fmt;

use super::{ConnectReturnCode, PacketType, ReasonCode};

/// Why a byte sequence is not (yet) a valid packet.
///
/// [`DecodeError::Incomplete`] is not a failure: the frame has not fully arrived. Every
/// other variant means the peer broke a rule; [`DecodeError::reason_code`] tells which MQTT
/// 5.0 reason code to close the connection with, and
/// [`DecodeError::connect_return_code`] whether an MQTT 3.x CONNACK should be sent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is not complete: at least `needed` more bytes must arrive.
    Incomplete {
        /// The minimum number of further bytes before decoding can progress.
        needed: usize,
    },
    /// The packet (fixed header included) is larger than the receiver's limit.
    PacketTooLarge {
        /// Total size announced by the fixed header.
        size: usize,
        /// The limit the caller set.
        max: usize,
    },
    /// The packet type nibble is reserved (0, or 15 before MQTT 5.0).
    InvalidPacketType(u8),
    /// The fixed header flags are not the ones the packet type requires ([MQTT-2.2.2-2]).
    InvalidHeaderFlags {
        /// The packet whose flags are wrong.
        packet: PacketType,
        /// The flags nibble received.
        flags: u8,
    },
    /// A variable byte integer longer than four bytes, or in 5.0 longer than its value
    /// needs ([MQTT-1.5.5-1]).
    InvalidVarInt,
    /// QoS bits set to 3 ([MQTT-3.3.1-4]).
    InvalidQoS,
    /// DUP set on a QoS 0 PUBLISH ([MQTT-3.3.1-2]).
    DupWithQoS0,
    /// A field or list runs past the end of the packet, or bytes are left over after it.
    MalformedLength,
    /// A string is not well-formed UTF-8 or contains a surrogate ([MQTT-1.5.4-1]).
    InvalidUtf8,
    /// A string contains U+0000 ([MQTT-1.5.4-2]).
    NullCharacter,
    /// A packet identifier of 0 where a non-zero one is required ([MQTT-2.2.1-3]).
    ZeroPacketId,
    /// A topic name contains `+` or `#` ([MQTT-3.3.2-2]).
    WildcardInTopicName,
    /// An empty topic name: never allowed before 5.0 ([MQTT-4.7.3-1]), allowed in 5.0 only
    /// with a Topic Alias ([MQTT-3.3.2-8]).
    EmptyTopicName,
    /// SUBSCRIBE or UNSUBSCRIBE without a topic filter ([MQTT-3.8.3-3], [MQTT-3.10.3-2]).
    NoTopicFilters,
    /// Reserved bits set in a SUBSCRIBE options byte ([MQTT-3-8.3-4] of 3.1.1,
    /// [MQTT-3.8.3-5] of 5.0).
    InvalidSubscriptionOptions,
    /// Maximum QoS 3 or Retain Handling 3 in a 5.0 SUBSCRIBE options byte: a Protocol
    /// Error (§3.8.3.1 of 5.0), unlike reserved bits, which are malformed.
    InvalidSubscriptionQoSOrRetainHandling,
    /// The CONNECT protocol name is neither `MQTT` nor `MQIsdp` ([MQTT-3.1.2-1]).
    InvalidProtocolName,
    /// The CONNECT protocol level is not 3, 4 or 5, or does not match the name
    /// ([MQTT-3.1.2-2]).
    UnsupportedProtocolVersion(u8),
    /// The reserved bit of the CONNECT flags is set ([MQTT-3.1.2-3]).
    ReservedConnectFlag,
    /// Will QoS or Will Retain set without the Will Flag, or Will QoS 3
    /// ([MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-14] of 3.1.1).
    InvalidWillFlags,
    /// A password without a user name before 5.0 ([MQTT-3.1.2-22] of 3.1.1).
    PasswordWithoutUsername,
    /// CONNACK acknowledge flags with reserved bits set ([MQTT-3.2.2-1] of 5.0), or
    /// Session Present with a failure code ([MQTT-3.2.2-6]).
    InvalidConnAckFlags,
    /// A reason or return code not defined for this packet type.
    InvalidReasonCode {
        /// The packet that carried it.
        packet: PacketType,
        /// The code received.
        code: u8,
    },
    /// A property identifier the specification does not define.
    UnknownProperty(u8),
    /// A property that is not allowed in this packet (§2.2.2.2).
    PropertyNotAllowed {
        /// The property identifier.
        property: u8,
        /// The packet that carried it.
        packet: PacketType,
    },
    /// A property that may appear once appears again (§2.2.2.2).
    DuplicateProperty(u8),
    /// A property value outside its allowed range (e.g. Receive Maximum 0, a Topic Alias
    /// of 0, a byte flag other than 0 or 1).
    InvalidPropertyValue(u8),
}

impl DecodeError {
    /// The MQTT 5.0 reason code to close the connection with (in a CONNACK when the
    /// failing packet is the CONNECT, in a DISCONNECT afterwards).
    pub const fn reason_code(&self) -> ReasonCode {
        match self {
            Self::Incomplete { .. } => ReasonCode::Success,
            Self::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            Self::UnsupportedProtocolVersion(_) | Self::InvalidProtocolName => {
                ReasonCode::UnsupportedProtocolVersion
            }
            Self::WildcardInTopicName => ReasonCode::TopicNameInvalid,
            // Readable packets that break a rule are protocol errors; packets that cannot be
            // parsed according to the specification are malformed (§4.13).
            Self::ZeroPacketId
            | Self::EmptyTopicName
            | Self::NoTopicFilters
            | Self::DuplicateProperty(_)
            | Self::InvalidPropertyValue(_)
            | Self::InvalidSubscriptionQoSOrRetainHandling
            | Self::PasswordWithoutUsername => ReasonCode::ProtocolError,
            Self::InvalidPacketType(_)
            | Self::InvalidHeaderFlags { .. }
            | Self::InvalidVarInt
            | Self::InvalidQoS
            | Self::DupWithQoS0
            | Self::MalformedLength
            | Self::InvalidUtf8
            | Self::NullCharacter
            | Self::InvalidSubscriptionOptions
            | Self::ReservedConnectFlag
            | Self::InvalidWillFlags
            | Self::InvalidConnAckFlags
            | Self::InvalidReasonCode { .. }
            | Self::UnknownProperty(_)
            | Self::PropertyNotAllowed { .. } => ReasonCode::MalformedPacket,
        }
    }

    /// For a CONNECT that fails to decode on an MQTT 3.1/3.1.1 connection: the CONNACK
    /// return code to send before closing, or `None` to close without a CONNACK, which is
    /// what 3.1.1 requires for every other protocol violation ([MQTT-4.8.0-1]).
    pub const fn connect_return_code(&self) -> Option<ConnectReturnCode> {
        match self {
            // [MQTT-3.1.2-2]: answer an unsupported level with return code 1, then close.
            Self::UnsupportedProtocolVersion(_) => {
                Some(ConnectReturnCode::UnacceptableProtocolVersion)
            }
            _ => None,
        }
    }

    /// Whether more input may still turn this into a packet.
    #[inline]
    pub const fn is_incomplete(&self) -> bool {
        matches!(self, Self::Incomplete { .. })
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Incomplete { needed } => {
                write!(f, "incomplete packet: {needed} more bytes needed")
            }
            Self::PacketTooLarge { size, max } => {
                write!(f, "packet of {size} bytes exceeds the maximum of {max}")
            }
            Self::InvalidPacketType(t) => write!(f, "reserved packet type {t}"),
            Self::InvalidHeaderFlags { packet, flags } => {
                write!(f, "invalid fixed header flags {flags:#06b} for {packet:?}")
            }
            Self::InvalidVarInt => f.write_str("variable byte integer too long"),
            Self::InvalidQoS => f.write_str("QoS 3 is not a valid QoS"),
            Self::DupWithQoS0 => f.write_str("DUP flag set on a QoS 0 PUBLISH"),
            Self::MalformedLength => f.write_str("field lengths disagree with the packet length"),
            Self::InvalidUtf8 => f.write_str("string is not well-formed UTF-8"),
            Self::NullCharacter => f.write_str("string contains U+0000"),
            Self::ZeroPacketId => f.write_str("packet identifier 0 where non-zero is required"),
            Self::WildcardInTopicName => f.write_str("topic name contains a wildcard"),
            Self::EmptyTopicName => f.write_str("empty topic name"),
            Self::NoTopicFilters => f.write_str("no topic filter in SUBSCRIBE or UNSUBSCRIBE"),
            Self::InvalidSubscriptionOptions => f.write_str("invalid subscription options"),
            Self::InvalidSubscriptionQoSOrRetainHandling => {
                f.write_str("subscription options with maximum QoS 3 or retain handling 3")
            }
            Self::InvalidProtocolName => f.write_str("unknown protocol name"),
            Self::UnsupportedProtocolVersion(v) => write!(f, "unsupported protocol level {v}"),
            Self::ReservedConnectFlag => f.write_str("reserved CONNECT flag is set"),
            Self::InvalidWillFlags => f.write_str("will QoS or retain inconsistent with will flag"),
            Self::PasswordWithoutUsername => f.write_str("password flag without user name flag"),
            Self::InvalidConnAckFlags => f.write_str("invalid CONNACK acknowledge flags"),
            Self::InvalidReasonCode { packet, code } => {
                write!(f, "reason code {code:#04x} is not valid in {packet:?}")
            }
            Self::UnknownProperty(id) => write!(f, "unknown property identifier {id:#04x}"),
            Self::PropertyNotAllowed { property, packet } => {
                write!(f, "property {property:#04x} is not allowed in {packet:?}")
            }
            Self::DuplicateProperty(id) => write!(f, "property {id:#04x} appears more than once"),
            Self::InvalidPropertyValue(id) => write!(f, "invalid value for property {id:#04x}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The buffer is too small; nothing was written. `required` bytes would do.
    InsufficientSize {
        /// The packet's exact encoded length.
        required: usize,
    },
    /// The packet's remaining length would exceed 268 435 455 bytes, or a string or binary
    /// field exceeds 65 535 bytes.
    TooLarge,
    /// The packet does not exist in the chosen protocol version (AUTH before 5.0).
    UnsupportedInVersion,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InsufficientSize { required } => {
                write!(f, "buffer too small: {required} bytes required")
            }
            Self::TooLarge => f.write_str("packet or field exceeds the protocol's size limits"),
            Self::UnsupportedInVersion => f.write_str("packet does not exist in this version"),
        }
    }
}

impl core::error::Error for EncodeError {}
