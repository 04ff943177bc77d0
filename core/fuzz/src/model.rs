//! An owned model of every MQTT control packet, for the `roundtrip` target.
//!
//! The model derives [`Arbitrary`], so libFuzzer can build any packet shape; it owns its
//! strings, so it can be built from a decoded packet too ([`PacketModel::from_packet`]).
//! Three operations give it meaning, each restated from the specifications rather than
//! taken from the codec:
//!
//! - [`PacketModel::normalize`] turns any model into the nearest packet that is valid for
//!   a protocol version: the wire rules of MQTT 3.1, 3.1.1 (§2-§3) and 5.0 (§1.5, §2.2.2
//!   properties, §3 reason code tables). It is idempotent, and a packet the decoder
//!   accepted must already be normalized.
//! - [`PacketModel::downgrade`] is what the codec documents for sending a packet to a
//!   client of another version: properties are dropped before 5.0, reason codes are mapped
//!   (CONNACK to the 3.x return code, SUBACK failures to 0x80, the rest to success or
//!   nothing), subscription options shrink to the QoS, and 3.1 has no Session Present.
//! - [`PacketModel::lists`] and [`PacketModel::build`] lend the model out as a [`Built`]
//!   packet made of caller-owned items, the form a broker builds to send;
//!   [`Built::packet`] gives the [`Packet`].

use std::num::NonZeroU16;

use arbitrary::Arbitrary;
use fulmar_core::codec::{
    Ack, Auth, ConnAck, Connect, Disconnect, List, MAX_VAR_INT, Packet, Property, ProtocolVersion,
    Publish, QoS, QoSPid, ReasonCode, RetainHandling, SubAck, Subscribe, Subscription,
    SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};

use crate::check::{Built, Lists};

/// The longest string or binary field: a two-byte length prefix (§1.5.4, §1.5.6).
const MAX_FIELD: usize = u16::MAX as usize;

/// Any MQTT control packet, with owned contents.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
#[allow(missing_docs)]
pub enum PacketModel {
    Connect(ConnectModel),
    ConnAck(ConnAckModel),
    Publish(PublishModel),
    PubAck(AckModel),
    PubRec(AckModel),
    PubRel(AckModel),
    PubComp(AckModel),
    Subscribe(SubscribeModel),
    SubAck(CodesModel),
    Unsubscribe(UnsubscribeModel),
    UnsubAck(CodesModel),
    PingReq,
    PingResp,
    Disconnect(TailModel),
    Auth(TailModel),
}

/// CONNECT (§3.1).
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
#[allow(missing_docs)]
pub struct ConnectModel {
    /// Set by [`PacketModel::normalize`]: a CONNECT announces its own version.
    #[arbitrary(value = ProtocolVersion::V5)]
    pub protocol: ProtocolVersion,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub properties: Vec<PropertyModel>,
    pub client_id: String,
    pub will: Option<WillModel>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
}

/// The will message of a CONNECT (§3.1.3.2-§3.1.3.4).
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
#[allow(missing_docs)]
pub struct WillModel {
    pub qos: u8,
    pub retain: bool,
    pub properties: Vec<PropertyModel>,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// CONNACK (§3.2).
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
#[allow(missing_docs)]
pub struct ConnAckModel {
    pub session_present: bool,
    pub reason_code: u8,
    pub properties: Vec<PropertyModel>,
}

/// PUBLISH (§3.3).
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
#[allow(missing_docs)]
pub struct PublishModel {
    pub dup: bool,
    pub qos: u8,
    /// Only used above QoS 0; normalized to 1 at QoS 0.
    pub packet_id: NonZeroU16,
    pub retain: bool,
    pub topic: String,
    pub properties: Vec<PropertyModel>,
    pub payload: Vec<u8>,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP (§3.4-§3.7).
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
#[allow(missing_docs)]
pub struct AckModel {
    pub packet_id: NonZeroU16,
    pub reason_code: u8,
    pub properties: Vec<PropertyModel>,
}

/// SUBSCRIBE (§3.8).
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
#[allow(missing_docs)]
pub struct SubscribeModel {
    pub packet_id: NonZeroU16,
    pub properties: Vec<PropertyModel>,
    pub subscriptions: Vec<SubscriptionModel>,
}

/// One topic filter of a SUBSCRIBE and its options byte (§3.8.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
#[allow(missing_docs)]
pub struct SubscriptionModel {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
}

/// SUBACK (§3.9) or UNSUBACK (§3.11): a packet identifier and one code per filter.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
#[allow(missing_docs)]
pub struct CodesModel {
    pub packet_id: NonZeroU16,
    pub properties: Vec<PropertyModel>,
    pub reason_codes: Vec<u8>,
}

/// UNSUBSCRIBE (§3.10).
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
#[allow(missing_docs)]
pub struct UnsubscribeModel {
    pub packet_id: NonZeroU16,
    pub properties: Vec<PropertyModel>,
    pub filters: Vec<String>,
}

/// DISCONNECT (§3.14) or AUTH (§3.15): a reason code and properties.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
#[allow(missing_docs)]
pub struct TailModel {
    pub reason_code: u8,
    pub properties: Vec<PropertyModel>,
}

/// One MQTT 5.0 property (§2.2.2.2) with an owned value.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
#[allow(missing_docs)]
pub enum PropertyModel {
    PayloadFormatIndicator(bool),
    MessageExpiryInterval(u32),
    ContentType(String),
    ResponseTopic(String),
    CorrelationData(Vec<u8>),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(String),
    ServerKeepAlive(u16),
    AuthenticationMethod(String),
    AuthenticationData(Vec<u8>),
    RequestProblemInformation(bool),
    WillDelayInterval(u32),
    RequestResponseInformation(bool),
    ResponseInformation(String),
    ServerReference(String),
    ReasonString(String),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    /// Maximum QoS: 1 when `true`, 0 when `false`; 2 is never sent (§3.2.2.3.4).
    MaximumQoS1(bool),
    RetainAvailable(bool),
    UserProperty(String, String),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(bool),
    SubscriptionIdentifierAvailable(bool),
    SharedSubscriptionAvailable(bool),
}

/// Where a property block sits (the columns of the table in MQTT 5.0 §2.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Scope {
    Connect,
    Will,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropertyModel {
    /// The property identifier (§2.2.2.2).
    pub fn id(&self) -> u8 {
        use PropertyModel::*;
        match self {
            PayloadFormatIndicator(_) => 0x01,
            MessageExpiryInterval(_) => 0x02,
            ContentType(_) => 0x03,
            ResponseTopic(_) => 0x08,
            CorrelationData(_) => 0x09,
            SubscriptionIdentifier(_) => 0x0B,
            SessionExpiryInterval(_) => 0x11,
            AssignedClientIdentifier(_) => 0x12,
            ServerKeepAlive(_) => 0x13,
            AuthenticationMethod(_) => 0x15,
            AuthenticationData(_) => 0x16,
            RequestProblemInformation(_) => 0x17,
            WillDelayInterval(_) => 0x18,
            RequestResponseInformation(_) => 0x19,
            ResponseInformation(_) => 0x1A,
            ServerReference(_) => 0x1C,
            ReasonString(_) => 0x1F,
            ReceiveMaximum(_) => 0x21,
            TopicAliasMaximum(_) => 0x22,
            TopicAlias(_) => 0x23,
            MaximumQoS1(_) => 0x24,
            RetainAvailable(_) => 0x25,
            UserProperty(..) => 0x26,
            MaximumPacketSize(_) => 0x27,
            WildcardSubscriptionAvailable(_) => 0x28,
            SubscriptionIdentifierAvailable(_) => 0x29,
            SharedSubscriptionAvailable(_) => 0x2A,
        }
    }

    /// Whether the property may appear in `scope`: the table of MQTT 5.0 §2.2.2.2.
    pub fn allowed_in(&self, scope: Scope) -> bool {
        use PropertyModel::*;
        use Scope as S;
        match self {
            PayloadFormatIndicator(_)
            | MessageExpiryInterval(_)
            | ContentType(_)
            | ResponseTopic(_)
            | CorrelationData(_) => matches!(scope, S::Publish | S::Will),
            SubscriptionIdentifier(_) => matches!(scope, S::Publish | S::Subscribe),
            SessionExpiryInterval(_) => matches!(scope, S::Connect | S::ConnAck | S::Disconnect),
            AssignedClientIdentifier(_)
            | ServerKeepAlive(_)
            | ResponseInformation(_)
            | MaximumQoS1(_)
            | RetainAvailable(_)
            | WildcardSubscriptionAvailable(_)
            | SubscriptionIdentifierAvailable(_)
            | SharedSubscriptionAvailable(_) => scope == S::ConnAck,
            AuthenticationMethod(_) | AuthenticationData(_) => {
                matches!(scope, S::Connect | S::ConnAck | S::Auth)
            }
            RequestProblemInformation(_) | RequestResponseInformation(_) => scope == S::Connect,
            WillDelayInterval(_) => scope == S::Will,
            ServerReference(_) => matches!(scope, S::ConnAck | S::Disconnect),
            ReasonString(_) => matches!(
                scope,
                S::ConnAck
                    | S::PubAck
                    | S::PubRec
                    | S::PubRel
                    | S::PubComp
                    | S::SubAck
                    | S::UnsubAck
                    | S::Disconnect
                    | S::Auth
            ),
            ReceiveMaximum(_) | TopicAliasMaximum(_) | MaximumPacketSize(_) => {
                matches!(scope, S::Connect | S::ConnAck)
            }
            TopicAlias(_) => scope == S::Publish,
            UserProperty(..) => true,
        }
    }

    /// Whether the property may appear more than once in `scope`: User Property anywhere,
    /// Subscription Identifier in PUBLISH ([MQTT-3.3.4-3]); nothing else (§2.2.2.2).
    pub fn may_repeat(&self, scope: Scope) -> bool {
        match self {
            Self::UserProperty(..) => true,
            Self::SubscriptionIdentifier(_) => scope == Scope::Publish,
            _ => false,
        }
    }

    /// Brings the value into its allowed range, keeping values that already are.
    fn normalize(&mut self) {
        use PropertyModel::*;
        match self {
            ContentType(s)
            | ResponseTopic(s)
            | AssignedClientIdentifier(s)
            | AuthenticationMethod(s)
            | ResponseInformation(s)
            | ServerReference(s)
            | ReasonString(s) => clean(s),
            CorrelationData(b) | AuthenticationData(b) => clip(b),
            UserProperty(k, v) => {
                clean(k);
                clean(v);
            }
            // §3.3.2.3.8: 1 to 268 435 455.
            SubscriptionIdentifier(v) if *v == 0 || *v > MAX_VAR_INT => *v = *v % MAX_VAR_INT + 1,
            // §3.1.2.11.3, [MQTT-3.3.2-8]: Receive Maximum and Topic Alias are never 0.
            ReceiveMaximum(v) | TopicAlias(v) if *v == 0 => *v = 1,
            // §3.1.2.11.4: Maximum Packet Size is never 0.
            MaximumPacketSize(v) if *v == 0 => *v = 1,
            _ => {}
        }
    }

    /// The codec's property, borrowing from the model.
    pub fn property(&self) -> Property<'_> {
        use PropertyModel as M;
        match self {
            M::PayloadFormatIndicator(v) => Property::PayloadFormatIndicator(*v),
            M::MessageExpiryInterval(v) => Property::MessageExpiryInterval(*v),
            M::ContentType(v) => Property::ContentType(v),
            M::ResponseTopic(v) => Property::ResponseTopic(v),
            M::CorrelationData(v) => Property::CorrelationData(v),
            M::SubscriptionIdentifier(v) => Property::SubscriptionIdentifier(*v),
            M::SessionExpiryInterval(v) => Property::SessionExpiryInterval(*v),
            M::AssignedClientIdentifier(v) => Property::AssignedClientIdentifier(v),
            M::ServerKeepAlive(v) => Property::ServerKeepAlive(*v),
            M::AuthenticationMethod(v) => Property::AuthenticationMethod(v),
            M::AuthenticationData(v) => Property::AuthenticationData(v),
            M::RequestProblemInformation(v) => Property::RequestProblemInformation(*v),
            M::WillDelayInterval(v) => Property::WillDelayInterval(*v),
            M::RequestResponseInformation(v) => Property::RequestResponseInformation(*v),
            M::ResponseInformation(v) => Property::ResponseInformation(v),
            M::ServerReference(v) => Property::ServerReference(v),
            M::ReasonString(v) => Property::ReasonString(v),
            M::ReceiveMaximum(v) => Property::ReceiveMaximum(*v),
            M::TopicAliasMaximum(v) => Property::TopicAliasMaximum(*v),
            M::TopicAlias(v) => Property::TopicAlias(*v),
            M::MaximumQoS1(v) => Property::MaximumQoS(if *v {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            }),
            M::RetainAvailable(v) => Property::RetainAvailable(*v),
            M::UserProperty(k, v) => Property::UserProperty(k, v),
            M::MaximumPacketSize(v) => Property::MaximumPacketSize(*v),
            M::WildcardSubscriptionAvailable(v) => Property::WildcardSubscriptionAvailable(*v),
            M::SubscriptionIdentifierAvailable(v) => Property::SubscriptionIdentifierAvailable(*v),
            M::SharedSubscriptionAvailable(v) => Property::SharedSubscriptionAvailable(*v),
        }
    }

    /// The model of a decoded property.
    pub fn from_property(property: Property<'_>) -> Self {
        use PropertyModel as M;
        match property {
            Property::PayloadFormatIndicator(v) => M::PayloadFormatIndicator(v),
            Property::MessageExpiryInterval(v) => M::MessageExpiryInterval(v),
            Property::ContentType(v) => M::ContentType(v.into()),
            Property::ResponseTopic(v) => M::ResponseTopic(v.into()),
            Property::CorrelationData(v) => M::CorrelationData(v.into()),
            Property::SubscriptionIdentifier(v) => M::SubscriptionIdentifier(v),
            Property::SessionExpiryInterval(v) => M::SessionExpiryInterval(v),
            Property::AssignedClientIdentifier(v) => M::AssignedClientIdentifier(v.into()),
            Property::ServerKeepAlive(v) => M::ServerKeepAlive(v),
            Property::AuthenticationMethod(v) => M::AuthenticationMethod(v.into()),
            Property::AuthenticationData(v) => M::AuthenticationData(v.into()),
            Property::RequestProblemInformation(v) => M::RequestProblemInformation(v),
            Property::WillDelayInterval(v) => M::WillDelayInterval(v),
            Property::RequestResponseInformation(v) => M::RequestResponseInformation(v),
            Property::ResponseInformation(v) => M::ResponseInformation(v.into()),
            Property::ServerReference(v) => M::ServerReference(v.into()),
            Property::ReasonString(v) => M::ReasonString(v.into()),
            Property::ReceiveMaximum(v) => M::ReceiveMaximum(v),
            Property::TopicAliasMaximum(v) => M::TopicAliasMaximum(v),
            Property::TopicAlias(v) => M::TopicAlias(v),
            Property::MaximumQoS(QoS::AtMostOnce) => M::MaximumQoS1(false),
            Property::MaximumQoS(QoS::AtLeastOnce) => M::MaximumQoS1(true),
            Property::MaximumQoS(QoS::ExactlyOnce) => {
                panic!("decoded Maximum QoS 2, which §3.2.2.3.4 forbids")
            }
            Property::RetainAvailable(v) => M::RetainAvailable(v),
            Property::UserProperty(k, v) => M::UserProperty(k.into(), v.into()),
            Property::MaximumPacketSize(v) => M::MaximumPacketSize(v),
            Property::WildcardSubscriptionAvailable(v) => M::WildcardSubscriptionAvailable(v),
            Property::SubscriptionIdentifierAvailable(v) => M::SubscriptionIdentifierAvailable(v),
            Property::SharedSubscriptionAvailable(v) => M::SharedSubscriptionAvailable(v),
            other => panic!("property {other:?} is missing from the fuzz model"),
        }
    }
}

/// Removes U+0000 ([MQTT-1.5.4-2]) and cuts the string to a field's length (§1.5.4).
fn clean(s: &mut String) {
    s.retain(|c| c != '\0');
    while s.len() > MAX_FIELD {
        s.pop();
    }
}

/// Cuts binary data to a field's length (§1.5.6).
fn clip(b: &mut Vec<u8>) {
    b.truncate(MAX_FIELD);
}

/// A topic name: a clean string without wildcards ([MQTT-3.3.2-2], [MQTT-4.7.1-1]).
fn clean_topic(s: &mut String) {
    clean(s);
    s.retain(|c| c != '+' && c != '#');
}

/// Keeps a QoS field in 0..=2 ([MQTT-3.3.1-4], [MQTT-3.1.2-14]).
fn clamp_qos(qos: &mut u8) {
    if *qos > 2 {
        *qos %= 3;
    }
}

/// Makes a property block valid for `scope` in `version`: none before 5.0; in 5.0 only
/// properties the scope allows, values in range, and no repeats of those that may not.
fn normalize_properties(
    properties: &mut Vec<PropertyModel>,
    scope: Scope,
    version: ProtocolVersion,
) {
    if !version.is_v5() {
        properties.clear();
        return;
    }
    let mut seen = Vec::new();
    properties.retain_mut(|p| {
        p.normalize();
        if !p.allowed_in(scope) {
            return false;
        }
        if p.may_repeat(scope) {
            return true;
        }
        let id = p.id();
        if seen.contains(&id) {
            return false;
        }
        seen.push(id);
        true
    });
}

/// Replaces `code` with one of `valid` unless it already is one.
fn pick(code: &mut u8, valid: &[u8]) {
    if !valid.contains(code) {
        *code = valid[usize::from(*code) % valid.len()];
    }
}

/// The MQTT 5.0 reason code tables of chapter 3, restated.
mod codes {
    /// §3.2.2.2.
    pub(super) const CONNACK: &[u8] = &[
        0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
        0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
    ];
    /// §3.4.2.1 and §3.5.2.1 (PUBACK and PUBREC share one table).
    pub(super) const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
    /// §3.6.2.1 and §3.7.2.1 (PUBREL and PUBCOMP share one table).
    pub(super) const PUBREL: &[u8] = &[0x00, 0x92];
    /// §3.9.3.
    pub(super) const SUBACK: &[u8] = &[
        0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
    ];
    /// §3.11.3.
    pub(super) const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
    /// §3.14.2.1.
    pub(super) const DISCONNECT: &[u8] = &[
        0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
        0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
    ];
    /// §3.15.2.1.
    pub(super) const AUTH: &[u8] = &[0x00, 0x18, 0x19];
    /// The MQTT 3.x CONNACK return codes 0-5 (§3.2.2.3 of 3.1.1) as the codec reports them:
    /// the 5.0 codes of the same meaning.
    pub(super) const CONNACK_3: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
    /// Granted QoS 0, 1, 2 and Failure (§3.9.3 of 3.1.1).
    pub(super) const SUBACK_3: &[u8] = &[0x00, 0x01, 0x02, 0x80];
}

/// A reason code the model holds as a byte; normalized models only hold defined ones.
fn reason(code: u8) -> ReasonCode {
    ReasonCode::from_u8(code).unwrap_or_else(|| panic!("undefined reason code {code:#04x}"))
}

impl AckModel {
    fn normalize(&mut self, table: &[u8], scope: Scope, version: ProtocolVersion) {
        if version.is_v5() {
            pick(&mut self.reason_code, table);
        } else {
            self.reason_code = 0;
        }
        normalize_properties(&mut self.properties, scope, version);
    }

    fn from_ack(ack: &Ack<'_>) -> Self {
        Self {
            packet_id: ack.packet_id,
            reason_code: ack.reason_code.value(),
            properties: properties(&ack.properties),
        }
    }

    fn ack(&self) -> Ack<'_> {
        Ack {
            packet_id: self.packet_id,
            reason_code: reason(self.reason_code),
            properties: List::empty(),
        }
    }
}

fn properties(list: &List<'_, Property<'_>>) -> Vec<PropertyModel> {
    list.iter().map(PropertyModel::from_property).collect()
}

fn property_items(models: &[PropertyModel]) -> Vec<Property<'_>> {
    models.iter().map(PropertyModel::property).collect()
}

impl PacketModel {
    /// Whether the packet type exists in `version` (AUTH is 5.0 only).
    pub fn exists_in(&self, version: ProtocolVersion) -> bool {
        version.is_v5() || !matches!(self, Self::Auth(_))
    }

    /// A PUBLISH whose empty topic stands on a Topic Alias: it cannot be sent before 5.0.
    pub fn needs_topic_alias(&self) -> bool {
        matches!(self, Self::Publish(p) if p.topic.is_empty())
    }

    /// Turns the model into the nearest packet valid for `version` (which must be one the
    /// packet type exists in); a model that already is one is left as it is.
    pub fn normalize(&mut self, version: ProtocolVersion) {
        let v5 = version.is_v5();
        match self {
            Self::Connect(p) => {
                p.protocol = version;
                normalize_properties(&mut p.properties, Scope::Connect, version);
                clean(&mut p.client_id);
                if let Some(will) = &mut p.will {
                    clamp_qos(&mut will.qos);
                    normalize_properties(&mut will.properties, Scope::Will, version);
                    clean_topic(&mut will.topic);
                    // [MQTT-4.7.3-1]: topic names are never empty; a will has no alias.
                    if will.topic.is_empty() {
                        will.topic.push('w');
                    }
                    clip(&mut will.payload);
                }
                if let Some(username) = &mut p.username {
                    clean(username);
                }
                if let Some(password) = &mut p.password {
                    clip(password);
                }
                // [MQTT-3.1.2-22] of 3.1.1: a password needs a user name before 5.0.
                if !v5 && p.password.is_some() && p.username.is_none() {
                    p.username = Some(String::new());
                }
            }
            Self::ConnAck(p) => {
                pick(
                    &mut p.reason_code,
                    if v5 { codes::CONNACK } else { codes::CONNACK_3 },
                );
                // 3.1 has no Session Present flag; never with a refusal ([MQTT-3.2.2-4]).
                if version == ProtocolVersion::V3_1 || p.reason_code >= 0x80 {
                    p.session_present = false;
                }
                normalize_properties(&mut p.properties, Scope::ConnAck, version);
            }
            Self::Publish(p) => {
                clamp_qos(&mut p.qos);
                if p.qos == 0 {
                    // [MQTT-3.3.1-2]: no DUP at QoS 0, and no packet identifier to keep.
                    p.dup = false;
                    p.packet_id = NonZeroU16::MIN;
                }
                normalize_properties(&mut p.properties, Scope::Publish, version);
                clean_topic(&mut p.topic);
                // [MQTT-3.3.2-8]: only a Topic Alias lets the topic name be empty.
                let alias = p
                    .properties
                    .iter()
                    .any(|p| matches!(p, PropertyModel::TopicAlias(_)));
                if p.topic.is_empty() && !alias {
                    p.topic.push('t');
                }
            }
            Self::PubAck(p) => p.normalize(codes::PUBACK, Scope::PubAck, version),
            Self::PubRec(p) => p.normalize(codes::PUBACK, Scope::PubRec, version),
            Self::PubRel(p) => p.normalize(codes::PUBREL, Scope::PubRel, version),
            Self::PubComp(p) => p.normalize(codes::PUBREL, Scope::PubComp, version),
            Self::Subscribe(p) => {
                normalize_properties(&mut p.properties, Scope::Subscribe, version);
                // [MQTT-3.8.3-3]: at least one filter.
                if p.subscriptions.is_empty() {
                    p.subscriptions.push(SubscriptionModel {
                        filter: "#".into(),
                        qos: 0,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: 0,
                    });
                }
                for sub in &mut p.subscriptions {
                    // Filters are only strings to the codec: wildcard placement is judged
                    // per filter by the broker.
                    clean(&mut sub.filter);
                    clamp_qos(&mut sub.qos);
                    if v5 {
                        // §3.8.3.1: Retain Handling 3 is a Protocol Error.
                        clamp_qos(&mut sub.retain_handling);
                    } else {
                        sub.no_local = false;
                        sub.retain_as_published = false;
                        sub.retain_handling = 0;
                    }
                }
            }
            Self::SubAck(p) => {
                normalize_properties(&mut p.properties, Scope::SubAck, version);
                let table = if v5 { codes::SUBACK } else { codes::SUBACK_3 };
                for code in &mut p.reason_codes {
                    pick(code, table);
                }
            }
            Self::Unsubscribe(p) => {
                normalize_properties(&mut p.properties, Scope::Unsubscribe, version);
                // [MQTT-3.10.3-2]: at least one filter.
                if p.filters.is_empty() {
                    p.filters.push("#".into());
                }
                p.filters.iter_mut().for_each(clean);
            }
            Self::UnsubAck(p) => {
                normalize_properties(&mut p.properties, Scope::UnsubAck, version);
                if v5 {
                    for code in &mut p.reason_codes {
                        pick(code, codes::UNSUBACK);
                    }
                } else {
                    p.reason_codes.clear();
                }
            }
            Self::PingReq | Self::PingResp => {}
            Self::Disconnect(p) => {
                if v5 {
                    pick(&mut p.reason_code, codes::DISCONNECT);
                } else {
                    p.reason_code = 0;
                }
                normalize_properties(&mut p.properties, Scope::Disconnect, version);
            }
            Self::Auth(p) => {
                pick(&mut p.reason_code, codes::AUTH);
                normalize_properties(&mut p.properties, Scope::Auth, version);
            }
        }
    }

    /// The packet a client of `to` receives when this packet, valid for its own version,
    /// is encoded for `to`, as the codec documents it. (A CONNECT is always encoded for
    /// its own protocol; AUTH does not exist before 5.0 and is left as it is.)
    pub fn downgrade(&self, to: ProtocolVersion) -> Self {
        let mut packet = self.clone();
        if to.is_v5() {
            return packet;
        }
        match &mut packet {
            Self::Connect(_) | Self::PingReq | Self::PingResp | Self::Auth(_) => {}
            Self::ConnAck(p) => {
                p.properties.clear();
                p.reason_code = reason(p.reason_code)
                    .to_connect_return_code()
                    .to_reason_code()
                    .value();
                p.session_present &= to != ProtocolVersion::V3_1;
            }
            Self::Publish(p) => p.properties.clear(),
            Self::PubAck(p) | Self::PubRec(p) | Self::PubRel(p) | Self::PubComp(p) => {
                p.properties.clear();
                p.reason_code = 0;
            }
            Self::Subscribe(p) => {
                p.properties.clear();
                for sub in &mut p.subscriptions {
                    sub.no_local = false;
                    sub.retain_as_published = false;
                    sub.retain_handling = 0;
                }
            }
            Self::SubAck(p) => {
                p.properties.clear();
                for code in &mut p.reason_codes {
                    if *code >= 0x80 {
                        *code = 0x80;
                    }
                }
            }
            Self::Unsubscribe(p) => p.properties.clear(),
            Self::UnsubAck(p) => {
                p.properties.clear();
                p.reason_codes.clear();
            }
            Self::Disconnect(p) => {
                p.properties.clear();
                p.reason_code = 0;
            }
        }
        packet
    }

    /// The model of a decoded packet.
    pub fn from_packet(packet: &Packet<'_>) -> Self {
        match packet {
            Packet::Connect(p) => {
                let p = p.get();
                Self::Connect(ConnectModel {
                    protocol: p.protocol,
                    clean_start: p.clean_start,
                    keep_alive: p.keep_alive,
                    properties: properties(&p.properties),
                    client_id: p.client_id.into(),
                    will: p.will.map(|will| WillModel {
                        qos: will.qos.level(),
                        retain: will.retain,
                        properties: properties(&will.properties),
                        topic: will.topic.into(),
                        payload: will.payload.into(),
                    }),
                    username: p.username.map(Into::into),
                    password: p.password.map(Into::into),
                })
            }
            Packet::ConnAck(p) => Self::ConnAck(ConnAckModel {
                session_present: p.session_present,
                reason_code: p.reason_code.value(),
                properties: properties(&p.properties),
            }),
            Packet::Publish(p) => Self::Publish(PublishModel {
                dup: p.dup,
                qos: p.qos().level(),
                packet_id: p.packet_id().unwrap_or(NonZeroU16::MIN),
                retain: p.retain,
                topic: p.topic.into(),
                properties: properties(&p.properties),
                payload: p.payload.into(),
            }),
            Packet::PubAck(p) => Self::PubAck(AckModel::from_ack(p)),
            Packet::PubRec(p) => Self::PubRec(AckModel::from_ack(p)),
            Packet::PubRel(p) => Self::PubRel(AckModel::from_ack(p)),
            Packet::PubComp(p) => Self::PubComp(AckModel::from_ack(p)),
            Packet::Subscribe(p) => Self::Subscribe(SubscribeModel {
                packet_id: p.packet_id,
                properties: properties(&p.properties),
                subscriptions: p
                    .subscriptions
                    .iter()
                    .map(|s| SubscriptionModel {
                        filter: s.filter.into(),
                        qos: s.options.qos.level(),
                        no_local: s.options.no_local,
                        retain_as_published: s.options.retain_as_published,
                        retain_handling: s.options.retain_handling as u8,
                    })
                    .collect(),
            }),
            Packet::SubAck(p) => Self::SubAck(CodesModel {
                packet_id: p.packet_id,
                properties: properties(&p.properties),
                reason_codes: p.reason_codes.iter().map(ReasonCode::value).collect(),
            }),
            Packet::Unsubscribe(p) => Self::Unsubscribe(UnsubscribeModel {
                packet_id: p.packet_id,
                properties: properties(&p.properties),
                filters: p.filters.iter().map(Into::into).collect(),
            }),
            Packet::UnsubAck(p) => Self::UnsubAck(CodesModel {
                packet_id: p.packet_id,
                properties: properties(&p.properties),
                reason_codes: p.reason_codes.iter().map(ReasonCode::value).collect(),
            }),
            Packet::PingReq => Self::PingReq,
            Packet::PingResp => Self::PingResp,
            Packet::Disconnect(p) => Self::Disconnect(TailModel {
                reason_code: p.reason_code.value(),
                properties: properties(&p.properties),
            }),
            Packet::Auth(p) => Self::Auth(TailModel {
                reason_code: p.reason_code.value(),
                properties: properties(&p.properties),
            }),
        }
    }

    /// The model's lists as codec items, for [`PacketModel::build`].
    pub fn lists(&self) -> Lists<'_> {
        let mut lists = Lists::default();
        match self {
            Self::Connect(p) => {
                lists.properties = property_items(&p.properties);
                if let Some(will) = &p.will {
                    lists.will_properties = property_items(&will.properties);
                }
            }
            Self::ConnAck(ConnAckModel { properties, .. })
            | Self::Publish(PublishModel { properties, .. })
            | Self::PubAck(AckModel { properties, .. })
            | Self::PubRec(AckModel { properties, .. })
            | Self::PubRel(AckModel { properties, .. })
            | Self::PubComp(AckModel { properties, .. })
            | Self::Disconnect(TailModel { properties, .. })
            | Self::Auth(TailModel { properties, .. }) => {
                lists.properties = property_items(properties);
            }
            Self::Subscribe(p) => {
                lists.properties = property_items(&p.properties);
                lists.subscriptions = p
                    .subscriptions
                    .iter()
                    .map(|s| {
                        let retain_handling = match s.retain_handling {
                            0 => RetainHandling::SendOnSubscribe,
                            1 => RetainHandling::SendIfNew,
                            _ => RetainHandling::DoNotSend,
                        };
                        let options = SubscriptionOptions {
                            qos: qos(s.qos),
                            no_local: s.no_local,
                            retain_as_published: s.retain_as_published,
                            retain_handling,
                        };
                        Subscription::new(&s.filter, options)
                    })
                    .collect();
            }
            Self::SubAck(p) | Self::UnsubAck(p) => {
                lists.properties = property_items(&p.properties);
                lists.reason_codes = p.reason_codes.iter().copied().map(reason).collect();
            }
            Self::Unsubscribe(p) => {
                lists.properties = property_items(&p.properties);
                lists.filters = p.filters.iter().map(String::as_str).collect();
            }
            Self::PingReq | Self::PingResp => {}
        }
        lists
    }

    /// The model as a codec packet whose lists are `lists` (from [`PacketModel::lists`]).
    /// The model must be normalized.
    pub fn build<'s>(&'s self, lists: &'s Lists<'s>) -> Built<'s> {
        lists.apply(self.skeleton())
    }

    /// The packet with empty lists.
    fn skeleton(&self) -> Built<'_> {
        let packet = match self {
            Self::Connect(p) => {
                return Built::from(Connect {
                    protocol: p.protocol,
                    clean_start: p.clean_start,
                    keep_alive: p.keep_alive,
                    properties: List::empty(),
                    client_id: &p.client_id,
                    will: p.will.as_ref().map(|will| Will {
                        qos: qos(will.qos),
                        retain: will.retain,
                        properties: List::empty(),
                        topic: &will.topic,
                        payload: &will.payload,
                    }),
                    username: p.username.as_deref(),
                    password: p.password.as_deref(),
                });
            }
            Self::ConnAck(p) => Packet::ConnAck(ConnAck {
                session_present: p.session_present,
                reason_code: reason(p.reason_code),
                properties: List::empty(),
            }),
            Self::Publish(p) => Packet::Publish(Publish {
                dup: p.dup,
                qos_pid: match p.qos {
                    0 => QoSPid::AtMostOnce,
                    1 => QoSPid::AtLeastOnce(p.packet_id),
                    _ => QoSPid::ExactlyOnce(p.packet_id),
                },
                retain: p.retain,
                topic: &p.topic,
                properties: List::empty(),
                payload: &p.payload,
            }),
            Self::PubAck(p) => Packet::PubAck(p.ack()),
            Self::PubRec(p) => Packet::PubRec(p.ack()),
            Self::PubRel(p) => Packet::PubRel(p.ack()),
            Self::PubComp(p) => Packet::PubComp(p.ack()),
            Self::Subscribe(p) => Packet::Subscribe(Subscribe {
                packet_id: p.packet_id,
                properties: List::empty(),
                subscriptions: List::empty(),
            }),
            Self::SubAck(p) => Packet::SubAck(SubAck {
                packet_id: p.packet_id,
                properties: List::empty(),
                reason_codes: List::empty(),
            }),
            Self::Unsubscribe(p) => Packet::Unsubscribe(Unsubscribe {
                packet_id: p.packet_id,
                properties: List::empty(),
                filters: List::empty(),
            }),
            Self::UnsubAck(p) => Packet::UnsubAck(UnsubAck {
                packet_id: p.packet_id,
                properties: List::empty(),
                reason_codes: List::empty(),
            }),
            Self::PingReq => Packet::PingReq,
            Self::PingResp => Packet::PingResp,
            Self::Disconnect(p) => Packet::Disconnect(Disconnect {
                reason_code: reason(p.reason_code),
                properties: List::empty(),
            }),
            Self::Auth(p) => Packet::Auth(Auth {
                reason_code: reason(p.reason_code),
                properties: List::empty(),
            }),
        };
        packet.into()
    }
}

/// A normalized QoS byte.
fn qos(level: u8) -> QoS {
    QoS::from_bits(level).unwrap_or_else(|_| panic!("QoS {level} in a normalized model"))
}

#[cfg(test)]
mod tests {
    use fulmar_core::codec::ConnectReturnCode;

    use super::*;

    #[test]
    fn connack_3_table_is_the_return_codes() {
        let mapped: Vec<u8> = (0..6)
            .map(|c| {
                ConnectReturnCode::from_u8(c)
                    .unwrap()
                    .to_reason_code()
                    .value()
            })
            .collect();
        assert_eq!(mapped, codes::CONNACK_3);
    }
}
