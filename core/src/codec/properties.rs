//! MQTT 5.0 properties (§2.2.2): the identifiers, their value types, where each may appear,
//! and the checks made on every property block a peer sends.

use super::PacketType;
use super::error::DecodeError;
use super::list::{List, list_item};
use super::types::QoS;
use super::wire::{MAX_FIELD, Reader, Writer, var_int_len};

/// One MQTT 5.0 property with its value (§2.2.2.2).
///
/// Byte properties that may only be 0 or 1 are `bool`s; Maximum QoS is a [`QoS`] that is
/// never [`QoS::ExactlyOnce`] on the wire ([MQTT-3.2.2-9]: the server sends 0 or 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Property<'a> {
    /// 0x01: the payload is UTF-8 text (`true`) or unspecified bytes.
    PayloadFormatIndicator(bool),
    /// 0x02: lifetime of the message in seconds.
    MessageExpiryInterval(u32),
    /// 0x03: MIME type of the payload.
    ContentType(&'a str),
    /// 0x08: topic for a response (request/response pattern).
    ResponseTopic(&'a str),
    /// 0x09: correlates a response with its request.
    CorrelationData(&'a [u8]),
    /// 0x0B: identifier of a subscription (1 to 268 435 455).
    SubscriptionIdentifier(u32),
    /// 0x11: seconds the session outlives the network connection.
    SessionExpiryInterval(u32),
    /// 0x12: client identifier the server assigned.
    AssignedClientIdentifier(&'a str),
    /// 0x13: keep alive the server requires, overriding the client's.
    ServerKeepAlive(u16),
    /// 0x15: name of the extended authentication method.
    AuthenticationMethod(&'a str),
    /// 0x16: data of the extended authentication exchange.
    AuthenticationData(&'a [u8]),
    /// 0x17: whether the server may send reason strings and user properties on failures.
    RequestProblemInformation(bool),
    /// 0x18: seconds to wait before publishing the will message.
    WillDelayInterval(u32),
    /// 0x19: whether the client asks for Response Information in CONNACK.
    RequestResponseInformation(bool),
    /// 0x1A: basis for response topics.
    ResponseInformation(&'a str),
    /// 0x1C: another server the client can use.
    ServerReference(&'a str),
    /// 0x1F: human-readable diagnostic text.
    ReasonString(&'a str),
    /// 0x21: how many QoS 1 and 2 publications may be in flight (not 0).
    ReceiveMaximum(u16),
    /// 0x22: highest topic alias accepted.
    TopicAliasMaximum(u16),
    /// 0x23: a topic alias for this PUBLISH (not 0).
    TopicAlias(u16),
    /// 0x24: highest QoS the server supports (0 or 1; absent means 2).
    MaximumQoS(QoS),
    /// 0x25: whether the server supports retained messages.
    RetainAvailable(bool),
    /// 0x26: an application-defined name/value pair; may repeat.
    UserProperty(&'a str, &'a str),
    /// 0x27: largest packet the sender accepts (not 0).
    MaximumPacketSize(u32),
    /// 0x28: whether the server supports wildcard subscriptions.
    WildcardSubscriptionAvailable(bool),
    /// 0x29: whether the server supports subscription identifiers.
    SubscriptionIdentifierAvailable(bool),
    /// 0x2A: whether the server supports shared subscriptions.
    SharedSubscriptionAvailable(bool),
}

/// The properties of a packet, in the order they were sent or given.
pub type Properties<'a> = List<'a, Property<'a>>;

list_item!(Property<'a>, read_property);

/// Where a property block sits: a packet, or the will properties inside CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scope {
    bit: u16,
    /// The packet reported in errors (CONNECT for the will properties).
    packet: PacketType,
}

impl Scope {
    pub(crate) const CONNECT: Self = Self::new(0, PacketType::Connect);
    pub(crate) const CONNACK: Self = Self::new(1, PacketType::ConnAck);
    pub(crate) const PUBLISH: Self = Self::new(2, PacketType::Publish);
    pub(crate) const WILL: Self = Self::new(3, PacketType::Connect);
    pub(crate) const PUBACK: Self = Self::new(4, PacketType::PubAck);
    pub(crate) const PUBREC: Self = Self::new(5, PacketType::PubRec);
    pub(crate) const PUBREL: Self = Self::new(6, PacketType::PubRel);
    pub(crate) const PUBCOMP: Self = Self::new(7, PacketType::PubComp);
    pub(crate) const SUBSCRIBE: Self = Self::new(8, PacketType::Subscribe);
    pub(crate) const SUBACK: Self = Self::new(9, PacketType::SubAck);
    pub(crate) const UNSUBSCRIBE: Self = Self::new(10, PacketType::Unsubscribe);
    pub(crate) const UNSUBACK: Self = Self::new(11, PacketType::UnsubAck);
    pub(crate) const DISCONNECT: Self = Self::new(12, PacketType::Disconnect);
    pub(crate) const AUTH: Self = Self::new(13, PacketType::Auth);

    const fn new(index: u16, packet: PacketType) -> Self {
        Self {
            bit: 1 << index,
            packet,
        }
    }
}

const fn scopes(list: &[Scope]) -> u16 {
    let mut mask = 0;
    let mut i = 0;
    while i < list.len() {
        mask |= list[i].bit;
        i += 1;
    }
    mask
}

const PUBLISH_AND_WILL: u16 = scopes(&[Scope::PUBLISH, Scope::WILL]);
const REASON_STRING: u16 = scopes(&[
    Scope::CONNACK,
    Scope::PUBACK,
    Scope::PUBREC,
    Scope::PUBREL,
    Scope::PUBCOMP,
    Scope::SUBACK,
    Scope::UNSUBACK,
    Scope::DISCONNECT,
    Scope::AUTH,
]);
const EVERYWHERE: u16 = REASON_STRING
    | scopes(&[
        Scope::CONNECT,
        Scope::PUBLISH,
        Scope::WILL,
        Scope::SUBSCRIBE,
        Scope::UNSUBSCRIBE,
    ]);

/// Where each property identifier may appear: the table of MQTT 5.0 §2.2.2.2.
const fn allowed_scopes(id: u8) -> Option<u16> {
    Some(match id {
        0x01 | 0x02 | 0x03 | 0x08 | 0x09 => PUBLISH_AND_WILL,
        0x0B => scopes(&[Scope::PUBLISH, Scope::SUBSCRIBE]),
        0x11 => scopes(&[Scope::CONNECT, Scope::CONNACK, Scope::DISCONNECT]),
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => scopes(&[Scope::CONNACK]),
        0x15 | 0x16 => scopes(&[Scope::CONNECT, Scope::CONNACK, Scope::AUTH]),
        0x17 | 0x19 => scopes(&[Scope::CONNECT]),
        0x18 => scopes(&[Scope::WILL]),
        0x1C => scopes(&[Scope::CONNACK, Scope::DISCONNECT]),
        0x1F => REASON_STRING,
        0x21 | 0x22 | 0x27 => scopes(&[Scope::CONNECT, Scope::CONNACK]),
        0x23 => scopes(&[Scope::PUBLISH]),
        0x26 => EVERYWHERE,
        _ => return None,
    })
}

impl Property<'_> {
    /// The property identifier byte.
    pub const fn id(&self) -> u8 {
        match self {
            Self::PayloadFormatIndicator(_) => 0x01,
            Self::MessageExpiryInterval(_) => 0x02,
            Self::ContentType(_) => 0x03,
            Self::ResponseTopic(_) => 0x08,
            Self::CorrelationData(_) => 0x09,
            Self::SubscriptionIdentifier(_) => 0x0B,
            Self::SessionExpiryInterval(_) => 0x11,
            Self::AssignedClientIdentifier(_) => 0x12,
            Self::ServerKeepAlive(_) => 0x13,
            Self::AuthenticationMethod(_) => 0x15,
            Self::AuthenticationData(_) => 0x16,
            Self::RequestProblemInformation(_) => 0x17,
            Self::WillDelayInterval(_) => 0x18,
            Self::RequestResponseInformation(_) => 0x19,
            Self::ResponseInformation(_) => 0x1A,
            Self::ServerReference(_) => 0x1C,
            Self::ReasonString(_) => 0x1F,
            Self::ReceiveMaximum(_) => 0x21,
            Self::TopicAliasMaximum(_) => 0x22,
            Self::TopicAlias(_) => 0x23,
            Self::MaximumQoS(_) => 0x24,
            Self::RetainAvailable(_) => 0x25,
            Self::UserProperty(..) => 0x26,
            Self::MaximumPacketSize(_) => 0x27,
            Self::WildcardSubscriptionAvailable(_) => 0x28,
            Self::SubscriptionIdentifierAvailable(_) => 0x29,
            Self::SharedSubscriptionAvailable(_) => 0x2A,
        }
    }

    /// Bytes this property takes on the wire: identifier and value.
    pub(crate) fn encoded_len(&self) -> usize {
        1 + match *self {
            Self::PayloadFormatIndicator(_)
            | Self::RequestProblemInformation(_)
            | Self::RequestResponseInformation(_)
            | Self::MaximumQoS(_)
            | Self::RetainAvailable(_)
            | Self::WildcardSubscriptionAvailable(_)
            | Self::SubscriptionIdentifierAvailable(_)
            | Self::SharedSubscriptionAvailable(_) => 1,
            Self::ServerKeepAlive(_)
            | Self::ReceiveMaximum(_)
            | Self::TopicAliasMaximum(_)
            | Self::TopicAlias(_) => 2,
            Self::MessageExpiryInterval(_)
            | Self::SessionExpiryInterval(_)
            | Self::WillDelayInterval(_)
            | Self::MaximumPacketSize(_) => 4,
            Self::SubscriptionIdentifier(v) => var_int_len(v),
            Self::ContentType(s)
            | Self::ResponseTopic(s)
            | Self::AssignedClientIdentifier(s)
            | Self::AuthenticationMethod(s)
            | Self::ResponseInformation(s)
            | Self::ServerReference(s)
            | Self::ReasonString(s) => 2 + s.len(),
            Self::CorrelationData(b) | Self::AuthenticationData(b) => 2 + b.len(),
            Self::UserProperty(k, v) => 4 + k.len() + v.len(),
        }
    }

    /// Whether a string or binary value is longer than a two-byte length can say.
    fn too_large(&self) -> bool {
        match *self {
            Self::ContentType(s)
            | Self::ResponseTopic(s)
            | Self::AssignedClientIdentifier(s)
            | Self::AuthenticationMethod(s)
            | Self::ResponseInformation(s)
            | Self::ServerReference(s)
            | Self::ReasonString(s) => s.len() > MAX_FIELD,
            Self::CorrelationData(b) | Self::AuthenticationData(b) => b.len() > MAX_FIELD,
            Self::UserProperty(k, v) => k.len() > MAX_FIELD || v.len() > MAX_FIELD,
            Self::SubscriptionIdentifier(v) => v > super::wire::MAX_VAR_INT,
            _ => false,
        }
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u8(self.id());
        match *self {
            Self::PayloadFormatIndicator(b)
            | Self::RequestProblemInformation(b)
            | Self::RequestResponseInformation(b)
            | Self::RetainAvailable(b)
            | Self::WildcardSubscriptionAvailable(b)
            | Self::SubscriptionIdentifierAvailable(b)
            | Self::SharedSubscriptionAvailable(b) => w.u8(b as u8),
            Self::MaximumQoS(q) => w.u8(q.level()),
            Self::ServerKeepAlive(v)
            | Self::ReceiveMaximum(v)
            | Self::TopicAliasMaximum(v)
            | Self::TopicAlias(v) => w.u16(v),
            Self::MessageExpiryInterval(v)
            | Self::SessionExpiryInterval(v)
            | Self::WillDelayInterval(v)
            | Self::MaximumPacketSize(v) => w.u32(v),
            Self::SubscriptionIdentifier(v) => w.var_int(v),
            Self::ContentType(s)
            | Self::ResponseTopic(s)
            | Self::AssignedClientIdentifier(s)
            | Self::AuthenticationMethod(s)
            | Self::ResponseInformation(s)
            | Self::ServerReference(s)
            | Self::ReasonString(s) => w.str(s),
            Self::CorrelationData(b) | Self::AuthenticationData(b) => w.binary(b),
            Self::UserProperty(k, v) => {
                w.str(k);
                w.str(v);
            }
        }
    }
}

/// A byte property that may only be 0 or 1.
fn flag(r: &mut Reader<'_>, id: u8) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidPropertyValue(id)),
    }
}

/// A two-byte property for which 0 is a Protocol Error.
fn non_zero_u16(r: &mut Reader<'_>, id: u8) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::InvalidPropertyValue(id)),
        v => Ok(v),
    }
}

/// Reads one property (identifier and value) and checks its value range.
fn read_property<'a>(r: &mut Reader<'a>) -> Result<Property<'a>, DecodeError> {
    // Identifiers are variable byte integers (§2.2.2.2), but all defined ones fit in one
    // byte, so a multi-byte identifier is simply unknown.
    let id = r.var_int()?;
    let Ok(id) = u8::try_from(id) else {
        return Err(DecodeError::UnknownProperty(0xFF));
    };
    Ok(match id {
        0x01 => Property::PayloadFormatIndicator(flag(r, id)?),
        0x02 => Property::MessageExpiryInterval(r.u32()?),
        0x03 => Property::ContentType(r.str()?),
        0x08 => Property::ResponseTopic(r.str()?),
        0x09 => Property::CorrelationData(r.binary()?),
        0x0B => match r.var_int()? {
            // §3.3.2.3.8: a Subscription Identifier of 0 is a Protocol Error.
            0 => return Err(DecodeError::InvalidPropertyValue(id)),
            v => Property::SubscriptionIdentifier(v),
        },
        0x11 => Property::SessionExpiryInterval(r.u32()?),
        0x12 => Property::AssignedClientIdentifier(r.str()?),
        0x13 => Property::ServerKeepAlive(r.u16()?),
        0x15 => Property::AuthenticationMethod(r.str()?),
        0x16 => Property::AuthenticationData(r.binary()?),
        0x17 => Property::RequestProblemInformation(flag(r, id)?),
        0x18 => Property::WillDelayInterval(r.u32()?),
        0x19 => Property::RequestResponseInformation(flag(r, id)?),
        0x1A => Property::ResponseInformation(r.str()?),
        0x1C => Property::ServerReference(r.str()?),
        0x1F => Property::ReasonString(r.str()?),
        // §3.1.2.11.3: a Receive Maximum of 0 is a Protocol Error.
        0x21 => Property::ReceiveMaximum(non_zero_u16(r, id)?),
        0x22 => Property::TopicAliasMaximum(r.u16()?),
        // [MQTT-3.3.2-8]: a Topic Alias of 0 is a Protocol Error.
        0x23 => Property::TopicAlias(non_zero_u16(r, id)?),
        // §3.2.2.3.4: Maximum QoS other than 0 or 1 is a Protocol Error.
        0x24 => Property::MaximumQoS(if flag(r, id)? {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        }),
        0x25 => Property::RetainAvailable(flag(r, id)?),
        0x26 => {
            let key = r.str()?;
            Property::UserProperty(key, r.str()?)
        }
        0x27 => match r.u32()? {
            // §3.1.2.11.4: a Maximum Packet Size of 0 is a Protocol Error.
            0 => return Err(DecodeError::InvalidPropertyValue(id)),
            v => Property::MaximumPacketSize(v),
        },
        0x28 => Property::WildcardSubscriptionAvailable(flag(r, id)?),
        0x29 => Property::SubscriptionIdentifierAvailable(flag(r, id)?),
        0x2A => Property::SharedSubscriptionAvailable(flag(r, id)?),
        _ => return Err(DecodeError::UnknownProperty(id)),
    })
}

/// Reads a property block (length, then properties) and checks every rule of §2.2.2:
/// known identifiers, allowed in this packet, values in range, and no repeats except User
/// Property and, in PUBLISH, Subscription Identifier ([MQTT-3.3.4-3]).
pub(crate) fn read_properties<'a>(
    r: &mut Reader<'a>,
    scope: Scope,
) -> Result<Properties<'a>, DecodeError> {
    let len = r.var_int()? as usize;
    let bytes = r.bytes(len)?;
    let mut block = Reader::new(bytes);
    // One bit per identifier seen; identifiers are all below 64.
    let mut seen: u64 = 0;
    while !block.is_empty() {
        let property = read_property(&mut block)?;
        let id = property.id();
        let allowed = allowed_scopes(id).unwrap_or(0);
        if allowed & scope.bit == 0 {
            return Err(DecodeError::PropertyNotAllowed {
                property: id,
                packet: scope.packet,
            });
        }
        let may_repeat = id == 0x26 || (id == 0x0B && scope == Scope::PUBLISH);
        let bit = 1u64 << id;
        if seen & bit != 0 && !may_repeat {
            return Err(DecodeError::DuplicateProperty(id));
        }
        seen |= bit;
    }
    Ok(List::from_wire(bytes))
}

/// The property block's content length, and whether a value is too large to encode.
pub(crate) fn properties_len(properties: &Properties<'_>) -> (usize, bool) {
    if let Some(bytes) = properties.wire_bytes() {
        return (bytes.len(), false);
    }
    let mut len = 0;
    let mut too_large = false;
    for p in properties {
        len += p.encoded_len();
        too_large |= p.too_large();
    }
    (len, too_large)
}

/// Writes a property block: its length, then the properties.
pub(crate) fn write_properties(w: &mut Writer<'_>, properties: &Properties<'_>) {
    if let Some(bytes) = properties.wire_bytes() {
        w.var_int(bytes.len() as u32);
        w.bytes(bytes);
    } else {
        w.var_int(properties_len(properties).0 as u32);
        for p in properties {
            p.write(w);
        }
    }
}

/// Accessors for the properties a broker looks at most.
impl<'a> Properties<'a> {
    /// The first property with identifier `id`.
    pub fn find(&self, id: u8) -> Option<Property<'a>> {
        self.iter().find(|p| p.id() == id)
    }

    /// Message Expiry Interval in seconds.
    pub fn message_expiry_interval(&self) -> Option<u32> {
        match self.find(0x02)? {
            Property::MessageExpiryInterval(v) => Some(v),
            _ => None,
        }
    }

    /// Topic Alias of a PUBLISH.
    pub fn topic_alias(&self) -> Option<u16> {
        match self.find(0x23)? {
            Property::TopicAlias(v) => Some(v),
            _ => None,
        }
    }

    /// Session Expiry Interval in seconds.
    pub fn session_expiry_interval(&self) -> Option<u32> {
        match self.find(0x11)? {
            Property::SessionExpiryInterval(v) => Some(v),
            _ => None,
        }
    }

    /// Receive Maximum.
    pub fn receive_maximum(&self) -> Option<u16> {
        match self.find(0x21)? {
            Property::ReceiveMaximum(v) => Some(v),
            _ => None,
        }
    }

    /// Maximum Packet Size.
    pub fn maximum_packet_size(&self) -> Option<u32> {
        match self.find(0x27)? {
            Property::MaximumPacketSize(v) => Some(v),
            _ => None,
        }
    }

    /// The user properties, in order.
    pub fn user_properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        self.iter().filter_map(|p| match p {
            Property::UserProperty(k, v) => Some((k, v)),
            _ => None,
        })
    }

    /// The subscription identifiers (several in a PUBLISH to a subscriber).
    pub fn subscription_identifiers(&self) -> impl Iterator<Item = u32> + use<'a> {
        self.iter().filter_map(|p| match p {
            Property::SubscriptionIdentifier(v) => Some(v),
            _ => None,
        })
    }
}
