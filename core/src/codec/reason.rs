//! MQTT 5.0 reason codes (§2.4) and the MQTT 3.x CONNACK return codes they map to.
//!
//! One enum serves every packet; which codes a packet may carry is checked by
//! [`ReasonCode::is_valid_for`], from the per-packet tables of MQTT 5.0 chapter 3.

use core::fmt;

use super::PacketType;

macro_rules! reason_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $text:literal;)*) => {
        /// An MQTT 5.0 reason code (§2.4).
        ///
        /// Several codes share a value (0x00 is Success, Normal disconnection and Granted
        /// QoS 0); this enum names the value once and the packet gives it its meaning.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum ReasonCode {
            $($(#[$doc])* $name = $value,)*
        }

        impl ReasonCode {
            /// The code for a byte, if the specification defines it.
            pub const fn from_u8(value: u8) -> Option<Self> {
                match value {
                    $($value => Some(Self::$name),)*
                    _ => None,
                }
            }

            /// The specification's name for the code.
            pub const fn description(self) -> &'static str {
                match self {
                    $(Self::$name => $text,)*
                }
            }
        }
    };
}

reason_codes! {
    /// 0x00: Success, Normal disconnection, or Granted QoS 0.
    Success = 0x00, "Success";
    /// 0x01: Granted QoS 1 (SUBACK).
    GrantedQoS1 = 0x01, "Granted QoS 1";
    /// 0x02: Granted QoS 2 (SUBACK).
    GrantedQoS2 = 0x02, "Granted QoS 2";
    /// 0x04: Disconnect with Will Message (DISCONNECT from a client).
    DisconnectWithWill = 0x04, "Disconnect with Will Message";
    /// 0x10: No matching subscribers (PUBACK, PUBREC).
    NoMatchingSubscribers = 0x10, "No matching subscribers";
    /// 0x11: No subscription existed (UNSUBACK).
    NoSubscriptionExisted = 0x11, "No subscription existed";
    /// 0x18: Continue authentication (AUTH).
    ContinueAuthentication = 0x18, "Continue authentication";
    /// 0x19: Re-authenticate (AUTH).
    ReAuthenticate = 0x19, "Re-authenticate";
    /// 0x80: Unspecified error; also the MQTT 3.1.1 SUBACK failure code.
    UnspecifiedError = 0x80, "Unspecified error";
    /// 0x81: Malformed Packet.
    MalformedPacket = 0x81, "Malformed Packet";
    /// 0x82: Protocol Error.
    ProtocolError = 0x82, "Protocol Error";
    /// 0x83: Implementation specific error.
    ImplementationSpecificError = 0x83, "Implementation specific error";
    /// 0x84: Unsupported Protocol Version.
    UnsupportedProtocolVersion = 0x84, "Unsupported Protocol Version";
    /// 0x85: Client Identifier not valid.
    ClientIdentifierNotValid = 0x85, "Client Identifier not valid";
    /// 0x86: Bad User Name or Password.
    BadUserNameOrPassword = 0x86, "Bad User Name or Password";
    /// 0x87: Not authorized.
    NotAuthorized = 0x87, "Not authorized";
    /// 0x88: Server unavailable.
    ServerUnavailable = 0x88, "Server unavailable";
    /// 0x89: Server busy.
    ServerBusy = 0x89, "Server busy";
    /// 0x8A: Banned.
    Banned = 0x8A, "Banned";
    /// 0x8B: Server shutting down.
    ServerShuttingDown = 0x8B, "Server shutting down";
    /// 0x8C: Bad authentication method.
    BadAuthenticationMethod = 0x8C, "Bad authentication method";
    /// 0x8D: Keep Alive timeout.
    KeepAliveTimeout = 0x8D, "Keep Alive timeout";
    /// 0x8E: Session taken over.
    SessionTakenOver = 0x8E, "Session taken over";
    /// 0x8F: Topic Filter invalid.
    TopicFilterInvalid = 0x8F, "Topic Filter invalid";
    /// 0x90: Topic Name invalid.
    TopicNameInvalid = 0x90, "Topic Name invalid";
    /// 0x91: Packet Identifier in use.
    PacketIdentifierInUse = 0x91, "Packet Identifier in use";
    /// 0x92: Packet Identifier not found.
    PacketIdentifierNotFound = 0x92, "Packet Identifier not found";
    /// 0x93: Receive Maximum exceeded.
    ReceiveMaximumExceeded = 0x93, "Receive Maximum exceeded";
    /// 0x94: Topic Alias invalid.
    TopicAliasInvalid = 0x94, "Topic Alias invalid";
    /// 0x95: Packet too large.
    PacketTooLarge = 0x95, "Packet too large";
    /// 0x96: Message rate too high.
    MessageRateTooHigh = 0x96, "Message rate too high";
    /// 0x97: Quota exceeded.
    QuotaExceeded = 0x97, "Quota exceeded";
    /// 0x98: Administrative action.
    AdministrativeAction = 0x98, "Administrative action";
    /// 0x99: Payload format invalid.
    PayloadFormatInvalid = 0x99, "Payload format invalid";
    /// 0x9A: Retain not supported.
    RetainNotSupported = 0x9A, "Retain not supported";
    /// 0x9B: QoS not supported.
    QoSNotSupported = 0x9B, "QoS not supported";
    /// 0x9C: Use another server.
    UseAnotherServer = 0x9C, "Use another server";
    /// 0x9D: Server moved.
    ServerMoved = 0x9D, "Server moved";
    /// 0x9E: Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9E, "Shared Subscriptions not supported";
    /// 0x9F: Connection rate exceeded.
    ConnectionRateExceeded = 0x9F, "Connection rate exceeded";
    /// 0xA0: Maximum connect time.
    MaximumConnectTime = 0xA0, "Maximum connect time";
    /// 0xA1: Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xA1, "Subscription Identifiers not supported";
    /// 0xA2: Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported = 0xA2, "Wildcard Subscriptions not supported";
}

impl ReasonCode {
    /// The byte on the wire.
    #[inline]
    pub const fn value(self) -> u8 {
        self as u8
    }

    /// Codes of 0x80 and above report a failure (§2.4).
    #[inline]
    pub const fn is_error(self) -> bool {
        self as u8 >= 0x80
    }

    /// Whether MQTT 5.0 allows this code in a packet of type `packet`, per the reason code
    /// tables of §3.2.2.2 (CONNACK), §3.4.2.1 (PUBACK), §3.5.2.1 (PUBREC), §3.6.2.1
    /// (PUBREL), §3.7.2.1 (PUBCOMP), §3.9.3 (SUBACK), §3.11.3 (UNSUBACK), §3.14.2.1
    /// (DISCONNECT) and §3.15.2.1 (AUTH).
    pub const fn is_valid_for(self, packet: PacketType) -> bool {
        use ReasonCode::*;
        match packet {
            PacketType::ConnAck => matches!(
                self,
                Success
                    | UnspecifiedError
                    | MalformedPacket
                    | ProtocolError
                    | ImplementationSpecificError
                    | UnsupportedProtocolVersion
                    | ClientIdentifierNotValid
                    | BadUserNameOrPassword
                    | NotAuthorized
                    | ServerUnavailable
                    | ServerBusy
                    | Banned
                    | BadAuthenticationMethod
                    | TopicNameInvalid
                    | PacketTooLarge
                    | QuotaExceeded
                    | PayloadFormatInvalid
                    | RetainNotSupported
                    | QoSNotSupported
                    | UseAnotherServer
                    | ServerMoved
                    | ConnectionRateExceeded
            ),
            PacketType::PubAck | PacketType::PubRec => matches!(
                self,
                Success
                    | NoMatchingSubscribers
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicNameInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | PayloadFormatInvalid
            ),
            PacketType::PubRel | PacketType::PubComp => {
                matches!(self, Success | PacketIdentifierNotFound)
            }
            PacketType::SubAck => matches!(
                self,
                Success
                    | GrantedQoS1
                    | GrantedQoS2
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | SharedSubscriptionsNotSupported
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            PacketType::UnsubAck => matches!(
                self,
                Success
                    | NoSubscriptionExisted
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
            ),
            PacketType::Disconnect => matches!(
                self,
                Success
                    | DisconnectWithWill
                    | UnspecifiedError
                    | MalformedPacket
                    | ProtocolError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | ServerBusy
                    | ServerShuttingDown
                    | KeepAliveTimeout
                    | SessionTakenOver
                    | TopicFilterInvalid
                    | TopicNameInvalid
                    | ReceiveMaximumExceeded
                    | TopicAliasInvalid
                    | PacketTooLarge
                    | MessageRateTooHigh
                    | QuotaExceeded
                    | AdministrativeAction
                    | PayloadFormatInvalid
                    | RetainNotSupported
                    | QoSNotSupported
                    | UseAnotherServer
                    | ServerMoved
                    | SharedSubscriptionsNotSupported
                    | ConnectionRateExceeded
                    | MaximumConnectTime
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            PacketType::Auth => matches!(self, Success | ContinueAuthentication | ReAuthenticate),
            _ => false,
        }
    }

    /// The MQTT 3.1/3.1.1 CONNACK return code (§3.2.2.3 of 3.1.1) that carries this
    /// code's meaning to an old client. Codes 3.x has no word for become "Server
    /// unavailable" (3), the one return code that tells the client to retry later.
    pub const fn to_connect_return_code(self) -> ConnectReturnCode {
        use ReasonCode::*;
        match self {
            Success => ConnectReturnCode::Accepted,
            UnsupportedProtocolVersion => ConnectReturnCode::UnacceptableProtocolVersion,
            ClientIdentifierNotValid => ConnectReturnCode::IdentifierRejected,
            BadUserNameOrPassword | BadAuthenticationMethod => {
                ConnectReturnCode::BadUserNameOrPassword
            }
            NotAuthorized | Banned => ConnectReturnCode::NotAuthorized,
            _ => ConnectReturnCode::ServerUnavailable,
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02X})", self.description(), *self as u8)
    }
}

/// The CONNACK return code of MQTT 3.1 and 3.1.1 (§3.2.2.3 of 3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum ConnectReturnCode {
    /// 0: Connection accepted.
    Accepted = 0,
    /// 1: The server does not support the requested protocol level.
    UnacceptableProtocolVersion = 1,
    /// 2: The client identifier is correct UTF-8 but not allowed by the server.
    IdentifierRejected = 2,
    /// 3: The network connection was made but the MQTT service is unavailable.
    ServerUnavailable = 3,
    /// 4: The user name or password is malformed or wrong.
    BadUserNameOrPassword = 4,
    /// 5: The client is not authorized to connect.
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    /// The return code for a byte; 6..=255 are reserved.
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Accepted,
            1 => Self::UnacceptableProtocolVersion,
            2 => Self::IdentifierRejected,
            3 => Self::ServerUnavailable,
            4 => Self::BadUserNameOrPassword,
            5 => Self::NotAuthorized,
            _ => return None,
        })
    }

    /// The MQTT 5.0 reason code with the same meaning.
    pub const fn to_reason_code(self) -> ReasonCode {
        match self {
            Self::Accepted => ReasonCode::Success,
            Self::UnacceptableProtocolVersion => ReasonCode::UnsupportedProtocolVersion,
            Self::IdentifierRejected => ReasonCode::ClientIdentifierNotValid,
            Self::ServerUnavailable => ReasonCode::ServerUnavailable,
            Self::BadUserNameOrPassword => ReasonCode::BadUserNameOrPassword,
            Self::NotAuthorized => ReasonCode::NotAuthorized,
        }
    }
}
