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
    check_block(bytes, scope)
}

/// Properties a broker stored and is handed back (a restored record, a shard's forwarded
/// copy, see `broker::shard`): the content of a PUBLISH's property block, checked again.
pub(crate) fn publish_properties_from_wire(bytes: &[u8]) -> Result<Properties<'_>, DecodeError> {
    check_block(bytes, Scope::PUBLISH)
}

/// Checks a property block's content (see [`read_properties`]).
fn check_block(bytes: &[u8], scope: Scope) -> Result<Properties<'_>, DecodeError> {
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
///
/// Decoded (wire) properties were checked when they were read and are copied as they are;
/// only the caller's items are measured, straight from their slice rather than through
/// the list's iterator.
pub(crate) fn properties_len(properties: &Properties<'_>) -> (usize, bool) {
    let (wire, items) = properties.parts();
    let mut len = wire.len();
    let mut too_large = false;
    for p in items {
        len += p.encoded_len();
        too_large |= p.too_large();
    }
    (len, too_large)
}

/// Writes a property block: its length, then the properties (wire bytes first, as they
/// are, then the caller's items).
pub(crate) fn write_properties(w: &mut Writer<'_>, properties: &Properties<'_>) {
    let (wire, items) = properties.parts();
    // Sizing the packet checked every value already; only the length is needed here.
    let len = wire.len() + items.iter().map(Property::encoded_len).sum::<usize>();
    w.var_int(len as u32);
    w.bytes(wire);
    for p in items {
        p.write(w);
    }
}

/// Bytes the properties kept by `keep` take on the wire (without a length prefix).
pub(crate) fn filtered_len(
    properties: &Properties<'_>,
    keep: impl Fn(&Property<'_>) -> bool,
) -> usize {
    properties
        .iter()
        .filter(|p| keep(p))
        .map(|p| p.encoded_len())
        .sum()
}

/// Writes the properties kept by `keep` (no length prefix) into `out`, which must be
/// exactly [`filtered_len`] bytes long.
pub(crate) fn write_filtered(
    properties: &Properties<'_>,
    keep: impl Fn(&Property<'_>) -> bool,
    out: &mut [u8],
) {
    let mut w = Writer::new(out);
    for p in properties.iter().filter(|p| keep(p)) {
        p.write(&mut w);
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

#[cfg(test)]
mod tests {
    //! Every MQTT 5.0 property (§2.2.2.2) as bytes, where each may appear, which may
    //! repeat, and the checks on their values.

    use super::*;
    use crate::codec::ReasonCode;

    #[test]
    fn wire_bytes_then_items_encode_like_all_items() {
        // What a broker sends a subscriber: the stored (decoded) properties followed by
        // items it adds, such as the subscription identifier. The wire part is copied as
        // it is; the result must be the block the same properties make as items.
        static WIRE: [u8; 12] = [
            0x02, 0x00, 0x00, 0x0E, 0x10, // Message Expiry Interval 3600
            0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // User Property ("k", "v")
        ];
        let extra = [Property::SubscriptionIdentifier(200)];
        let all = [
            Property::MessageExpiryInterval(3600),
            Property::UserProperty("k", "v"),
            Property::SubscriptionIdentifier(200),
        ];
        let chained = List::from_wire_and_items(&WIRE, &extra);
        let items = Properties::new(&all);
        assert_eq!(chained, items);
        assert_eq!(properties_len(&chained), properties_len(&items));
        let encode = |properties: &Properties<'_>| {
            let mut out = [0u8; 32];
            let mut w = Writer::new(&mut out);
            write_properties(&mut w, properties);
            let n = w.position();
            (out, n)
        };
        let (out, n) = encode(&chained);
        assert_eq!((out, n), encode(&items));
        assert_eq!(out[0], 15); // property length
        assert_eq!(&out[1..13], &WIRE);
        assert_eq!(&out[13..n], &[0x0B, 0xC8, 0x01]); // Subscription Identifier 200
    }

    // §2.2.2.2: a property is an identifier (a Variable Byte Integer; every identifier 5.0
    // defines fits in one byte) followed by a value of the type its table row gives.
    static PAYLOAD_FORMAT_INDICATOR: [u8; 2] = [
        0x01, // Payload Format Indicator
        0x01, // Byte: 1 = UTF-8 character data
    ];
    static MESSAGE_EXPIRY_INTERVAL: [u8; 5] = [
        0x02, // Message Expiry Interval
        0x00, 0x00, 0x0E, 0x10, // Four Byte Integer: 3600 s
    ];
    static CONTENT_TYPE: [u8; 7] = [
        0x03, // Content Type
        0x00, 0x04, b'j', b's', b'o', b'n', // UTF-8 string "json"
    ];
    static RESPONSE_TOPIC: [u8; 6] = [
        0x08, // Response Topic
        0x00, 0x03, b'r', b'/', b'1', // UTF-8 string "r/1"
    ];
    static CORRELATION_DATA: [u8; 5] = [
        0x09, // Correlation Data
        0x00, 0x02, 0xC0, 0xFF, // Binary Data: C0 FF
    ];
    static SUBSCRIPTION_IDENTIFIER: [u8; 3] = [
        0x0B, // Subscription Identifier
        0x80, 0x01, // Variable Byte Integer: 128
    ];
    static SESSION_EXPIRY_INTERVAL: [u8; 5] = [
        0x11, // Session Expiry Interval
        0xFF, 0xFF, 0xFF, 0xFF, // Four Byte Integer: 0xFFFFFFFF, never expires
    ];
    static ASSIGNED_CLIENT_IDENTIFIER: [u8; 6] = [
        0x12, // Assigned Client Identifier
        0x00, 0x03, b'a', b'-', b'1', // UTF-8 string "a-1"
    ];
    static SERVER_KEEP_ALIVE: [u8; 3] = [
        0x13, // Server Keep Alive
        0x00, 0x3C, // Two Byte Integer: 60 s
    ];
    static AUTHENTICATION_METHOD: [u8; 8] = [
        0x15, // Authentication Method
        0x00, 0x05, b'S', b'C', b'R', b'A', b'M', // UTF-8 string "SCRAM"
    ];
    static AUTHENTICATION_DATA: [u8; 6] = [
        0x16, // Authentication Data
        0x00, 0x03, 0x01, 0x02, 0x03, // Binary Data: 01 02 03
    ];
    static REQUEST_PROBLEM_INFORMATION: [u8; 2] = [
        0x17, // Request Problem Information
        0x00, // Byte: 0
    ];
    static WILL_DELAY_INTERVAL: [u8; 5] = [
        0x18, // Will Delay Interval
        0x00, 0x00, 0x00, 0x1E, // Four Byte Integer: 30 s
    ];
    static REQUEST_RESPONSE_INFORMATION: [u8; 2] = [
        0x19, // Request Response Information
        0x01, // Byte: 1
    ];
    static RESPONSE_INFORMATION: [u8; 5] = [
        0x1A, // Response Information
        0x00, 0x02, b'r', b'/', // UTF-8 string "r/"
    ];
    static SERVER_REFERENCE: [u8; 7] = [
        0x1C, // Server Reference
        0x00, 0x04, b'h', b'o', b's', b't', // UTF-8 string "host"
    ];
    static REASON_STRING: [u8; 5] = [
        0x1F, // Reason String
        0x00, 0x02, b'o', b'k', // UTF-8 string "ok"
    ];
    static RECEIVE_MAXIMUM: [u8; 3] = [
        0x21, // Receive Maximum
        0xFF, 0xFF, // Two Byte Integer: 65 535
    ];
    static TOPIC_ALIAS_MAXIMUM: [u8; 3] = [
        0x22, // Topic Alias Maximum
        0x00, 0x00, // Two Byte Integer: 0, no aliases accepted (allowed, §3.1.2.11.5)
    ];
    static TOPIC_ALIAS: [u8; 3] = [
        0x23, // Topic Alias
        0x00, 0x01, // Two Byte Integer: 1
    ];
    static MAXIMUM_QOS: [u8; 2] = [
        0x24, // Maximum QoS
        0x01, // Byte: QoS 1
    ];
    static RETAIN_AVAILABLE: [u8; 2] = [
        0x25, // Retain Available
        0x00, // Byte: 0, not supported
    ];
    static USER_PROPERTY: [u8; 8] = [
        0x26, // User Property
        0x00, 0x01, b'k', // UTF-8 string pair: name "k"
        0x00, 0x02, b'v', b'1', // value "v1"
    ];
    static MAXIMUM_PACKET_SIZE: [u8; 5] = [
        0x27, // Maximum Packet Size
        0x00, 0x00, 0x04, 0x00, // Four Byte Integer: 1024
    ];
    static WILDCARD_SUBSCRIPTION_AVAILABLE: [u8; 2] = [
        0x28, // Wildcard Subscription Available
        0x01, // Byte: 1
    ];
    static SUBSCRIPTION_IDENTIFIER_AVAILABLE: [u8; 2] = [
        0x29, // Subscription Identifier Available
        0x00, // Byte: 0
    ];
    static SHARED_SUBSCRIPTION_AVAILABLE: [u8; 2] = [
        0x2A, // Shared Subscription Available
        0x01, // Byte: 1
    ];

    /// All 27 properties: their bytes and their decoded value.
    fn every_property() -> [(&'static [u8], Property<'static>); 27] {
        [
            (
                &PAYLOAD_FORMAT_INDICATOR,
                Property::PayloadFormatIndicator(true),
            ),
            (
                &MESSAGE_EXPIRY_INTERVAL,
                Property::MessageExpiryInterval(3600),
            ),
            (&CONTENT_TYPE, Property::ContentType("json")),
            (&RESPONSE_TOPIC, Property::ResponseTopic("r/1")),
            (&CORRELATION_DATA, Property::CorrelationData(&[0xC0, 0xFF])),
            (
                &SUBSCRIPTION_IDENTIFIER,
                Property::SubscriptionIdentifier(128),
            ),
            (
                &SESSION_EXPIRY_INTERVAL,
                Property::SessionExpiryInterval(u32::MAX),
            ),
            (
                &ASSIGNED_CLIENT_IDENTIFIER,
                Property::AssignedClientIdentifier("a-1"),
            ),
            (&SERVER_KEEP_ALIVE, Property::ServerKeepAlive(60)),
            (
                &AUTHENTICATION_METHOD,
                Property::AuthenticationMethod("SCRAM"),
            ),
            (
                &AUTHENTICATION_DATA,
                Property::AuthenticationData(&[1, 2, 3]),
            ),
            (
                &REQUEST_PROBLEM_INFORMATION,
                Property::RequestProblemInformation(false),
            ),
            (&WILL_DELAY_INTERVAL, Property::WillDelayInterval(30)),
            (
                &REQUEST_RESPONSE_INFORMATION,
                Property::RequestResponseInformation(true),
            ),
            (&RESPONSE_INFORMATION, Property::ResponseInformation("r/")),
            (&SERVER_REFERENCE, Property::ServerReference("host")),
            (&REASON_STRING, Property::ReasonString("ok")),
            (&RECEIVE_MAXIMUM, Property::ReceiveMaximum(65_535)),
            (&TOPIC_ALIAS_MAXIMUM, Property::TopicAliasMaximum(0)),
            (&TOPIC_ALIAS, Property::TopicAlias(1)),
            (&MAXIMUM_QOS, Property::MaximumQoS(QoS::AtLeastOnce)),
            (&RETAIN_AVAILABLE, Property::RetainAvailable(false)),
            (&USER_PROPERTY, Property::UserProperty("k", "v1")),
            (&MAXIMUM_PACKET_SIZE, Property::MaximumPacketSize(1024)),
            (
                &WILDCARD_SUBSCRIPTION_AVAILABLE,
                Property::WildcardSubscriptionAvailable(true),
            ),
            (
                &SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                Property::SubscriptionIdentifierAvailable(false),
            ),
            (
                &SHARED_SUBSCRIPTION_AVAILABLE,
                Property::SharedSubscriptionAvailable(true),
            ),
        ]
    }

    /// The 14 places a property block appears.
    const ALL_SCOPES: [Scope; 14] = [
        Scope::CONNECT,
        Scope::CONNACK,
        Scope::PUBLISH,
        Scope::WILL,
        Scope::PUBACK,
        Scope::PUBREC,
        Scope::PUBREL,
        Scope::PUBCOMP,
        Scope::SUBSCRIBE,
        Scope::SUBACK,
        Scope::UNSUBSCRIBE,
        Scope::UNSUBACK,
        Scope::DISCONNECT,
        Scope::AUTH,
    ];

    /// Where each property may appear, written out from the table of 5.0 §2.2.2.2.
    fn spec_scopes(id: u8) -> &'static [Scope] {
        const PUBLISH_WILL: &[Scope] = &[Scope::PUBLISH, Scope::WILL];
        const CONNECT_CONNACK: &[Scope] = &[Scope::CONNECT, Scope::CONNACK];
        const CONNACK: &[Scope] = &[Scope::CONNACK];
        match id {
            0x01 | 0x02 | 0x03 | 0x08 | 0x09 => PUBLISH_WILL,
            0x0B => &[Scope::PUBLISH, Scope::SUBSCRIBE],
            0x11 => &[Scope::CONNECT, Scope::CONNACK, Scope::DISCONNECT],
            0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => CONNACK,
            0x15 | 0x16 => &[Scope::CONNECT, Scope::CONNACK, Scope::AUTH],
            0x17 | 0x19 => &[Scope::CONNECT],
            0x18 => &[Scope::WILL],
            0x1C => &[Scope::CONNACK, Scope::DISCONNECT],
            0x1F => &[
                Scope::CONNACK,
                Scope::PUBACK,
                Scope::PUBREC,
                Scope::PUBREL,
                Scope::PUBCOMP,
                Scope::SUBACK,
                Scope::UNSUBACK,
                Scope::DISCONNECT,
                Scope::AUTH,
            ],
            0x21 | 0x22 | 0x27 => CONNECT_CONNACK,
            0x23 => &[Scope::PUBLISH],
            0x26 => &ALL_SCOPES,
            _ => &[],
        }
    }

    /// A property block: a one-byte Property Length, then `parts`.
    fn block(parts: &[&[u8]]) -> ([u8; 128], usize) {
        let mut buf = [0u8; 128];
        let mut len = 1;
        for part in parts {
            buf[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
        assert!(len <= 128);
        buf[0] = (len - 1) as u8;
        (buf, len)
    }

    /// Reads a whole property block for `scope`.
    fn read_block(bytes: &[u8], scope: Scope) -> Result<Properties<'_>, DecodeError> {
        let mut r = Reader::new(bytes);
        let properties = read_properties(&mut r, scope)?;
        assert!(r.is_empty(), "the block must be read to its end");
        Ok(properties)
    }

    #[track_caller]
    fn assert_block_error(parts: &[&[u8]], scope: Scope, error: DecodeError, reason: ReasonCode) {
        let (buf, len) = block(parts);
        assert_eq!(read_block(&buf[..len], scope), Err(error));
        assert_eq!(error.reason_code(), reason);
    }

    #[test]
    fn every_property_decode() {
        for (bytes, property) in every_property() {
            let mut r = Reader::new(bytes);
            assert_eq!(read_property(&mut r), Ok(property));
            assert!(r.is_empty());
            assert_eq!(property.id(), bytes[0]);
            // And inside a block, in the first place it is allowed.
            let (buf, len) = block(&[bytes]);
            let scope = spec_scopes(property.id())[0];
            assert_eq!(
                read_block(&buf[..len], scope),
                Ok(Properties::new(&[property]))
            );
        }
    }

    #[test]
    fn every_property_encode() {
        for (bytes, property) in every_property() {
            assert_eq!(property.encoded_len(), bytes.len());
            let mut out = [0xAA; 16];
            let mut w = Writer::new(&mut out);
            property.write(&mut w);
            let written = w.position();
            assert_eq!(&out[..written], bytes);
        }
        let mut out = [0xAA; 2];
        Property::MaximumQoS(QoS::AtMostOnce).write(&mut Writer::new(&mut out));
        assert_eq!(out, [0x24, 0x00]);
    }

    #[test]
    fn property_block_layout() {
        // §2.2.2: a Property Length (Variable Byte Integer) then the properties, in order.
        static PUBLISH_PROPERTIES: [u8; 9] = [
            0x08, // Property Length 8
            0x02, 0x00, 0x00, 0x00, 0x3C, // Message Expiry Interval 60 s
            0x23, 0x00, 0x01, // Topic Alias 1
        ];
        let expected = [Property::MessageExpiryInterval(60), Property::TopicAlias(1)];
        let decoded = read_block(&PUBLISH_PROPERTIES, Scope::PUBLISH).unwrap();
        assert_eq!(decoded, Properties::new(&expected));
        assert_eq!(decoded.len(), 2);
        for list in [decoded, Properties::new(&expected)] {
            assert_eq!(properties_len(&list), (8, false));
            let mut out = [0xAA; 9];
            write_properties(&mut Writer::new(&mut out), &list);
            assert_eq!(out, PUBLISH_PROPERTIES);
        }
        // [MQTT-2.2.2-1]: no properties is a Property Length of zero.
        let empty = read_block(&[0x00], Scope::PUBLISH).unwrap();
        assert!(empty.is_empty());
        let mut out = [0xAA; 1];
        write_properties(&mut Writer::new(&mut out), &Properties::empty());
        assert_eq!(out, [0x00]);
    }

    #[test]
    fn property_length_of_two_bytes() {
        // A block of 129 bytes: its length is the Variable Byte Integer 0x81 0x01.
        let mut bytes = [b'v'; 131];
        bytes[..8].copy_from_slice(&[
            0x81, 0x01, // Property Length 129 = 1 + 1 * 128
            0x26, // User Property
            0x00, 0x01, b'k', // name "k"
            0x00, 0x7B, // value: 123 bytes of 'v'
        ]);
        let value = core::str::from_utf8(&bytes[8..]).unwrap();
        let expected = [Property::UserProperty("k", value)];
        assert_eq!(
            read_block(&bytes, Scope::CONNECT),
            Ok(Properties::new(&expected))
        );
        let mut out = [0xAA; 131];
        write_properties(&mut Writer::new(&mut out), &Properties::new(&expected));
        assert_eq!(out, bytes);
    }

    #[test]
    fn properties_are_allowed_only_where_the_table_says() {
        // §2.2.2.2: "A Control Packet which contains an Identifier which is not valid for
        // its packet type ... is a Malformed Packet."
        for (bytes, property) in every_property() {
            let id = property.id();
            for scope in ALL_SCOPES {
                let (buf, len) = block(&[bytes]);
                let result = read_block(&buf[..len], scope);
                if spec_scopes(id).contains(&scope) {
                    assert_eq!(result, Ok(Properties::new(&[property])), "{id:#04x}");
                } else {
                    let error = DecodeError::PropertyNotAllowed {
                        property: id,
                        packet: scope.packet,
                    };
                    assert_eq!(result, Err(error), "{id:#04x}");
                    assert_eq!(error.reason_code(), ReasonCode::MalformedPacket);
                }
            }
        }
    }

    #[test]
    fn misplaced_properties_name_the_packet() {
        // Topic Alias is for PUBLISH only; Will Delay Interval for the will properties only.
        assert_block_error(
            &[&TOPIC_ALIAS],
            Scope::CONNECT,
            DecodeError::PropertyNotAllowed {
                property: 0x23,
                packet: PacketType::Connect,
            },
            ReasonCode::MalformedPacket,
        );
        assert_block_error(
            &[&WILL_DELAY_INTERVAL],
            Scope::CONNECT,
            DecodeError::PropertyNotAllowed {
                property: 0x18,
                packet: PacketType::Connect,
            },
            ReasonCode::MalformedPacket,
        );
        let (buf, len) = block(&[&WILL_DELAY_INTERVAL]);
        assert!(read_block(&buf[..len], Scope::WILL).is_ok());
        // Session Expiry Interval belongs to CONNECT, not to the will inside it.
        assert_block_error(
            &[&SESSION_EXPIRY_INTERVAL],
            Scope::WILL,
            DecodeError::PropertyNotAllowed {
                property: 0x11,
                packet: PacketType::Connect,
            },
            ReasonCode::MalformedPacket,
        );
    }

    #[test]
    fn duplicate_properties_are_protocol_errors() {
        // Every property section of 5.0 chapter 3: "It is a Protocol Error to include the
        // <property> more than once", except User Property (may appear many times) and
        // Subscription Identifier in PUBLISH (one per matching subscription, [MQTT-3.3.4-4]).
        for (bytes, property) in every_property() {
            let id = property.id();
            for &scope in spec_scopes(id) {
                let (buf, len) = block(&[bytes, bytes]);
                let result = read_block(&buf[..len], scope);
                if id == 0x26 || (id == 0x0B && scope == Scope::PUBLISH) {
                    assert_eq!(result, Ok(Properties::new(&[property, property])));
                } else {
                    assert_eq!(result, Err(DecodeError::DuplicateProperty(id)), "{id:#04x}");
                }
            }
        }
        assert_eq!(
            DecodeError::DuplicateProperty(0x21).reason_code(),
            ReasonCode::ProtocolError
        );
        // Not only when adjacent.
        assert_block_error(
            &[&REASON_STRING, &USER_PROPERTY, &REASON_STRING],
            Scope::PUBACK,
            DecodeError::DuplicateProperty(0x1F),
            ReasonCode::ProtocolError,
        );
    }

    #[test]
    fn user_property_repeats_in_order_everywhere() {
        // §3.1.2.11.8 and the like: "The User Property is allowed to appear multiple times
        // to represent multiple name, value pairs. The same name is allowed to appear more
        // than once."
        static SECOND: [u8; 8] = [
            0x26, // User Property
            0x00, 0x01, b'k', // name "k" again
            0x00, 0x02, b'v', b'2', // value "v2"
        ];
        for scope in ALL_SCOPES {
            let (buf, len) = block(&[&USER_PROPERTY, &SECOND, &USER_PROPERTY]);
            let list = read_block(&buf[..len], scope).unwrap();
            let mut pairs = list.user_properties();
            assert_eq!(pairs.next(), Some(("k", "v1")));
            assert_eq!(pairs.next(), Some(("k", "v2")));
            assert_eq!(pairs.next(), Some(("k", "v1")));
            assert_eq!(pairs.next(), None);
        }
    }

    #[test]
    fn subscription_identifier_repeats_in_publish_only() {
        static ID_1: [u8; 2] = [0x0B, 0x01]; // Subscription Identifier 1
        static ID_MAX: [u8; 5] = [0x0B, 0xFF, 0xFF, 0xFF, 0x7F]; // 268 435 455
        let (buf, len) = block(&[&ID_1, &ID_MAX, &SUBSCRIPTION_IDENTIFIER]);
        let list = read_block(&buf[..len], Scope::PUBLISH).unwrap();
        let mut ids = list.subscription_identifiers();
        assert_eq!(ids.next(), Some(1));
        assert_eq!(ids.next(), Some(268_435_455));
        assert_eq!(ids.next(), Some(128));
        assert_eq!(ids.next(), None);
        // §3.8.2.1.2: "It is a Protocol Error to include the Subscription Identifier more
        // than once" in SUBSCRIBE.
        assert_block_error(
            &[&ID_1, &ID_MAX],
            Scope::SUBSCRIBE,
            DecodeError::DuplicateProperty(0x0B),
            ReasonCode::ProtocolError,
        );
    }

    #[test]
    fn zero_values_are_protocol_errors() {
        let cases: [(&[u8], Scope); 5] = [
            // §3.1.2.11.3, §3.2.2.3.3: "It is a Protocol Error to include the Receive
            // Maximum value more than once or for it to have the value 0."
            (&[0x21, 0x00, 0x00], Scope::CONNECT),
            // [MQTT-3.3.2-8]: "A sender MUST NOT send a PUBLISH packet containing a Topic
            // Alias which has the value 0."
            (&[0x23, 0x00, 0x00], Scope::PUBLISH),
            // §3.1.2.11.4, §3.2.2.3.6: "It is a Protocol Error ... for the value to be
            // set to zero."
            (&[0x27, 0x00, 0x00, 0x00, 0x00], Scope::CONNACK),
            // §3.3.2.3.8, §3.8.2.1.2: "It is a Protocol Error if the Subscription
            // Identifier has a value of 0."
            (&[0x0B, 0x00], Scope::PUBLISH),
            (&[0x0B, 0x00], Scope::SUBSCRIBE),
        ];
        for (bytes, scope) in cases {
            assert_block_error(
                &[bytes],
                scope,
                DecodeError::InvalidPropertyValue(bytes[0]),
                ReasonCode::ProtocolError,
            );
        }
    }

    #[test]
    fn byte_flags_other_than_0_or_1_are_protocol_errors() {
        // §3.1.2.11.6/7, §3.2.2.3.4/5/11/12/13, §3.3.2.3.2: these Bytes are 0 or 1. Maximum
        // QoS 2 is not sent: absent means 2 ("It is a Protocol Error to include Maximum QoS
        // more than once, or to have a value other than 0 or 1").
        let cases = [
            (0x01, Scope::PUBLISH),
            (0x17, Scope::CONNECT),
            (0x19, Scope::CONNECT),
            (0x24, Scope::CONNACK),
            (0x25, Scope::CONNACK),
            (0x28, Scope::CONNACK),
            (0x29, Scope::CONNACK),
            (0x2A, Scope::CONNACK),
        ];
        for (id, scope) in cases {
            for value in [0x02, 0x80, 0xFF] {
                assert_block_error(
                    &[&[id, value]],
                    scope,
                    DecodeError::InvalidPropertyValue(id),
                    ReasonCode::ProtocolError,
                );
            }
        }
    }

    #[test]
    fn unknown_identifiers_are_malformed() {
        // §2.2.2.2 defines 27 identifiers; any other cannot be parsed (its value's length
        // is unknown).
        for id in 0..0x80u8 {
            if allowed_scopes(id).is_some() {
                continue;
            }
            assert_block_error(
                &[&[id, 0x00]],
                Scope::PUBLISH,
                DecodeError::UnknownProperty(id),
                ReasonCode::MalformedPacket,
            );
        }
        // Two-byte identifiers name no property of 5.0: 128, and 256, which does not fit
        // the error's byte.
        assert_block_error(
            &[&[0x80, 0x01, 0x00]],
            Scope::PUBLISH,
            DecodeError::UnknownProperty(0x80),
            ReasonCode::MalformedPacket,
        );
        assert_block_error(
            &[&[0x80, 0x02, 0x00]],
            Scope::PUBLISH,
            DecodeError::UnknownProperty(0xFF),
            ReasonCode::MalformedPacket,
        );
        assert_eq!(every_property().len(), 27);
    }

    #[test]
    fn property_strings_must_be_well_formed_utf8() {
        // §1.5.4 (UTF-8 Encoded String) applies to every string property and to both halves
        // of a User Property (§1.5.7, [MQTT-1.5.7-1]).
        let ids = [0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F];
        for id in ids {
            let scope = spec_scopes(id)[0];
            // [MQTT-1.5.4-1]: U+D800, a surrogate, written as if it were a scalar value.
            assert_block_error(
                &[&[id, 0x00, 0x03, 0xED, 0xA0, 0x80]],
                scope,
                DecodeError::InvalidUtf8,
                ReasonCode::MalformedPacket,
            );
            // [MQTT-1.5.4-1]: a lone continuation byte.
            assert_block_error(
                &[&[id, 0x00, 0x01, 0x80]],
                scope,
                DecodeError::InvalidUtf8,
                ReasonCode::MalformedPacket,
            );
            // [MQTT-1.5.4-2]: U+0000.
            assert_block_error(
                &[&[id, 0x00, 0x02, b'a', 0x00]],
                scope,
                DecodeError::NullCharacter,
                ReasonCode::MalformedPacket,
            );
        }
        // User Property: the name, then the value.
        assert_block_error(
            &[&[0x26, 0x00, 0x03, 0xED, 0xA0, 0x80, 0x00, 0x00]],
            Scope::PUBLISH,
            DecodeError::InvalidUtf8,
            ReasonCode::MalformedPacket,
        );
        assert_block_error(
            &[&[0x26, 0x00, 0x01, b'k', 0x00, 0x01, 0x00]],
            Scope::PUBLISH,
            DecodeError::NullCharacter,
            ReasonCode::MalformedPacket,
        );
    }

    #[test]
    fn binary_properties_take_any_bytes() {
        // §1.5.6: Binary Data is not text; a zero byte or a surrogate encoding is fine.
        static DATA: [u8; 7] = [
            0x09, // Correlation Data
            0x00, 0x04, 0x00, 0xED, 0xA0, 0x80, // Binary Data: 00 ED A0 80
        ];
        let (buf, len) = block(&[&DATA]);
        assert_eq!(
            read_block(&buf[..len], Scope::PUBLISH),
            Ok(Properties::new(&[Property::CorrelationData(&[
                0x00, 0xED, 0xA0, 0x80
            ])]))
        );
    }

    #[test]
    fn lengths_stay_inside_the_block() {
        // A Property Length running past the end of the packet.
        let mut r = Reader::new(&[0x05, 0x01, 0x01]);
        assert_eq!(
            read_properties(&mut r, Scope::PUBLISH),
            Err(DecodeError::MalformedLength)
        );
        // A string running past the end of its block, even though the packet goes on.
        let mut r = Reader::new(&[
            0x03, // Property Length 3
            0x03, 0x00, 0x04, // Content Type of 4 bytes...
            b'j', b's', b'o', b'n', // ...which lie outside the block
        ]);
        assert_eq!(
            read_properties(&mut r, Scope::PUBLISH),
            Err(DecodeError::MalformedLength)
        );
        // Values cut short by the block end: a Four Byte Integer of three bytes, a Two
        // Byte Integer of one, a Byte of none.
        let cut: [(&[u8], Scope); 3] = [
            (&[0x02, 0x00, 0x00, 0x00], Scope::PUBLISH),
            (&[0x13, 0x00], Scope::CONNACK),
            (&[0x01], Scope::PUBLISH),
        ];
        for (bytes, scope) in cut {
            assert_block_error(
                &[bytes],
                scope,
                DecodeError::MalformedLength,
                ReasonCode::MalformedPacket,
            );
        }
        // A Subscription Identifier cut short, and one of five bytes.
        assert_block_error(
            &[&[0x0B, 0x80]],
            Scope::PUBLISH,
            DecodeError::MalformedLength,
            ReasonCode::MalformedPacket,
        );
        assert_block_error(
            &[&[0x0B, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]],
            Scope::PUBLISH,
            DecodeError::InvalidVarInt,
            ReasonCode::MalformedPacket,
        );
        // A Property Length of five bytes.
        let mut r = Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x00]);
        assert_eq!(
            read_properties(&mut r, Scope::PUBLISH),
            Err(DecodeError::InvalidVarInt)
        );
    }

    #[test]
    fn variable_byte_integers_must_be_minimal() {
        // [MQTT-1.5.5-1]: "The encoded value MUST use the minimum number of bytes necessary
        // to represent the value", for the Property Length, a Property Identifier and a
        // Subscription Identifier alike.
        let mut r = Reader::new(&[0x82, 0x00, 0x01, 0x01]); // Property Length 2 in 2 bytes
        assert_eq!(
            read_properties(&mut r, Scope::PUBLISH),
            Err(DecodeError::InvalidVarInt)
        );
        // Payload Format Indicator with its identifier in two bytes.
        assert_block_error(
            &[&[0x81, 0x00, 0x01]],
            Scope::PUBLISH,
            DecodeError::InvalidVarInt,
            ReasonCode::MalformedPacket,
        );
        // Subscription Identifier 1 in two and in four bytes.
        for bytes in [&[0x0B, 0x81, 0x00][..], &[0x0B, 0x81, 0x80, 0x80, 0x00]] {
            assert_block_error(
                &[bytes],
                Scope::PUBLISH,
                DecodeError::InvalidVarInt,
                ReasonCode::MalformedPacket,
            );
        }
    }

    #[test]
    fn subscription_identifier_encodings() {
        // §3.3.2.3.8: a Variable Byte Integer from 1 to 268 435 455.
        let cases: [(&[u8], u32); 5] = [
            (&[0x0B, 0x01], 1),
            (&[0x0B, 0x7F], 127),
            (&[0x0B, 0x80, 0x01], 128),
            (&[0x0B, 0xFF, 0x7F], 16_383),
            (&[0x0B, 0xFF, 0xFF, 0xFF, 0x7F], 268_435_455),
        ];
        for (bytes, value) in cases {
            let property = Property::SubscriptionIdentifier(value);
            assert_eq!(read_property(&mut Reader::new(bytes)), Ok(property));
            assert_eq!(property.encoded_len(), bytes.len());
            let mut out = [0xAA; 5];
            property.write(&mut Writer::new(&mut out));
            assert_eq!(&out[..bytes.len()], bytes);
        }
        // Too large to encode.
        let list = [Property::SubscriptionIdentifier(268_435_456)];
        assert!(properties_len(&Properties::new(&list)).1);
    }

    #[test]
    fn accessors_find_the_first_of_each() {
        let (buf, len) = block(&[
            &MESSAGE_EXPIRY_INTERVAL,
            &TOPIC_ALIAS,
            &USER_PROPERTY,
            &SUBSCRIPTION_IDENTIFIER,
        ]);
        let list = read_block(&buf[..len], Scope::PUBLISH).unwrap();
        assert_eq!(list.message_expiry_interval(), Some(3600));
        assert_eq!(list.topic_alias(), Some(1));
        assert_eq!(list.find(0x26), Some(Property::UserProperty("k", "v1")));
        assert_eq!(list.session_expiry_interval(), None);
        let (buf, len) = block(&[
            &SESSION_EXPIRY_INTERVAL,
            &RECEIVE_MAXIMUM,
            &MAXIMUM_PACKET_SIZE,
        ]);
        let list = read_block(&buf[..len], Scope::CONNECT).unwrap();
        assert_eq!(list.session_expiry_interval(), Some(u32::MAX));
        assert_eq!(list.receive_maximum(), Some(65_535));
        assert_eq!(list.maximum_packet_size(), Some(1024));
        assert_eq!(list.topic_alias(), None);
    }
}
