//! Shared support for the codec's integration tests: owned models of every control packet and
//! proptest strategies that generate only packets that are valid in a given protocol version.
//!
//! [`Packet<'a>`] borrows its strings and lists, so a strategy cannot yield one directly. The
//! strategies here yield a [`PacketModel`] that owns everything; [`PacketModel::parts`] lends
//! out the item slices the lists need, and [`Parts::packet`] assembles the borrowed packet:
//!
//! ```ignore
//! let parts = model.parts();
//! let packet: Packet<'_> = parts.packet();
//! ```
//!
//! The validity rules are written out here from the specifications, independently of the
//! codec's own tables: where each property may appear (MQTT 5.0 §2.2.2.2, table 2-4), the
//! reason codes of each packet (the tables of MQTT 5.0 chapter 3), the 3.x CONNACK return
//! codes and SUBACK codes. A mistake in the codec's tables therefore fails a round trip
//! instead of agreeing with itself.
//!
//! Used by `roundtrip.rs`, `decode_arbitrary.rs` and `mqttrs_differential.rs`; fuzz targets
//! and benches can include it with `#[path = "../tests/common/mod.rs"] mod common;`.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::num::NonZeroU16;

use fulmar_core::codec::{
    Ack, Auth, ConnAck, Connect, Disconnect, List, MAX_VAR_INT, Packet, PacketId, PacketType,
    Properties, Property, ProtocolVersion, Publish, QoS, QoSPid, ReasonCode, RetainHandling,
    SubAck, Subscribe, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::Union;
use proptest::test_runner::Config as ProptestConfig;

/// Every protocol version the codec speaks.
pub(crate) const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// A proptest configuration running `cases` cases, unless `PROPTEST_CASES` asks for another
/// number (so CI or a developer can run a longer soak without editing the tests).
pub(crate) fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

// ---------------------------------------------------------------------------------------------
// Owned models
// ---------------------------------------------------------------------------------------------

/// An owned MQTT 5.0 property; [`OwnedProperty::as_property`] borrows it as the codec's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnedProperty {
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
    MaximumQoS(QoS),
    RetainAvailable(bool),
    UserProperty(String, String),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(bool),
    SubscriptionIdentifierAvailable(bool),
    SharedSubscriptionAvailable(bool),
}

impl OwnedProperty {
    /// The property as the codec sees it.
    pub(crate) fn as_property(&self) -> Property<'_> {
        use OwnedProperty as O;
        match self {
            O::PayloadFormatIndicator(v) => Property::PayloadFormatIndicator(*v),
            O::MessageExpiryInterval(v) => Property::MessageExpiryInterval(*v),
            O::ContentType(v) => Property::ContentType(v),
            O::ResponseTopic(v) => Property::ResponseTopic(v),
            O::CorrelationData(v) => Property::CorrelationData(v),
            O::SubscriptionIdentifier(v) => Property::SubscriptionIdentifier(*v),
            O::SessionExpiryInterval(v) => Property::SessionExpiryInterval(*v),
            O::AssignedClientIdentifier(v) => Property::AssignedClientIdentifier(v),
            O::ServerKeepAlive(v) => Property::ServerKeepAlive(*v),
            O::AuthenticationMethod(v) => Property::AuthenticationMethod(v),
            O::AuthenticationData(v) => Property::AuthenticationData(v),
            O::RequestProblemInformation(v) => Property::RequestProblemInformation(*v),
            O::WillDelayInterval(v) => Property::WillDelayInterval(*v),
            O::RequestResponseInformation(v) => Property::RequestResponseInformation(*v),
            O::ResponseInformation(v) => Property::ResponseInformation(v),
            O::ServerReference(v) => Property::ServerReference(v),
            O::ReasonString(v) => Property::ReasonString(v),
            O::ReceiveMaximum(v) => Property::ReceiveMaximum(*v),
            O::TopicAliasMaximum(v) => Property::TopicAliasMaximum(*v),
            O::TopicAlias(v) => Property::TopicAlias(*v),
            O::MaximumQoS(v) => Property::MaximumQoS(*v),
            O::RetainAvailable(v) => Property::RetainAvailable(*v),
            O::UserProperty(k, v) => Property::UserProperty(k, v),
            O::MaximumPacketSize(v) => Property::MaximumPacketSize(*v),
            O::WildcardSubscriptionAvailable(v) => Property::WildcardSubscriptionAvailable(*v),
            O::SubscriptionIdentifierAvailable(v) => Property::SubscriptionIdentifierAvailable(*v),
            O::SharedSubscriptionAvailable(v) => Property::SharedSubscriptionAvailable(*v),
        }
    }

    /// The property identifier byte.
    pub(crate) fn id(&self) -> u8 {
        self.as_property().id()
    }
}

/// CONNECT (§3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectModel {
    pub(crate) protocol: ProtocolVersion,
    pub(crate) clean_start: bool,
    pub(crate) keep_alive: u16,
    pub(crate) properties: Vec<OwnedProperty>,
    pub(crate) client_id: String,
    pub(crate) will: Option<WillModel>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Vec<u8>>,
}

/// The will message inside CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WillModel {
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) properties: Vec<OwnedProperty>,
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
}

/// CONNACK (§3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnAckModel {
    pub(crate) session_present: bool,
    pub(crate) reason_code: ReasonCode,
    pub(crate) properties: Vec<OwnedProperty>,
}

/// PUBLISH (§3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublishModel {
    pub(crate) dup: bool,
    pub(crate) qos_pid: QoSPid,
    pub(crate) retain: bool,
    pub(crate) topic: String,
    pub(crate) properties: Vec<OwnedProperty>,
    pub(crate) payload: Vec<u8>,
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4 to §3.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AckModel {
    pub(crate) packet_id: PacketId,
    pub(crate) reason_code: ReasonCode,
    pub(crate) properties: Vec<OwnedProperty>,
}

/// SUBSCRIBE (§3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubscribeModel {
    pub(crate) packet_id: PacketId,
    pub(crate) properties: Vec<OwnedProperty>,
    pub(crate) subscriptions: Vec<(String, SubscriptionOptions)>,
}

/// SUBACK (§3.9) and UNSUBACK (§3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubAckModel {
    pub(crate) packet_id: PacketId,
    pub(crate) properties: Vec<OwnedProperty>,
    pub(crate) reason_codes: Vec<ReasonCode>,
}

/// UNSUBSCRIBE (§3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnsubscribeModel {
    pub(crate) packet_id: PacketId,
    pub(crate) properties: Vec<OwnedProperty>,
    pub(crate) filters: Vec<String>,
}

/// DISCONNECT (§3.14) and AUTH (§3.15): a reason code and properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TailModel {
    pub(crate) reason_code: ReasonCode,
    pub(crate) properties: Vec<OwnedProperty>,
}

/// An owned control packet, one variant per [`Packet`] variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PacketModel {
    Connect(ConnectModel),
    ConnAck(ConnAckModel),
    Publish(PublishModel),
    PubAck(AckModel),
    PubRec(AckModel),
    PubRel(AckModel),
    PubComp(AckModel),
    Subscribe(SubscribeModel),
    SubAck(SubAckModel),
    Unsubscribe(UnsubscribeModel),
    UnsubAck(SubAckModel),
    PingReq,
    PingResp,
    Disconnect(TailModel),
    Auth(TailModel),
}

/// The borrowed item slices a [`Packet`] built from a [`PacketModel`] points into.
#[derive(Debug)]
pub(crate) struct Parts<'m> {
    model: &'m PacketModel,
    properties: Vec<Property<'m>>,
    will_properties: Vec<Property<'m>>,
    subscriptions: Vec<Subscription<'m>>,
    filters: Vec<&'m str>,
}

fn borrow_all(properties: &[OwnedProperty]) -> Vec<Property<'_>> {
    properties.iter().map(OwnedProperty::as_property).collect()
}

impl PacketModel {
    /// The packet's type.
    pub(crate) fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }

    /// The packet's own property list (not the will's).
    pub(crate) fn properties(&self) -> &[OwnedProperty] {
        match self {
            Self::Connect(p) => &p.properties,
            Self::ConnAck(p) => &p.properties,
            Self::Publish(p) => &p.properties,
            Self::PubAck(p) | Self::PubRec(p) | Self::PubRel(p) | Self::PubComp(p) => &p.properties,
            Self::Subscribe(p) => &p.properties,
            Self::SubAck(p) | Self::UnsubAck(p) => &p.properties,
            Self::Unsubscribe(p) => &p.properties,
            Self::PingReq | Self::PingResp => &[],
            Self::Disconnect(p) | Self::Auth(p) => &p.properties,
        }
    }

    /// Borrows the slices the packet's lists are made of.
    pub(crate) fn parts(&self) -> Parts<'_> {
        let mut parts = Parts {
            model: self,
            properties: borrow_all(self.properties()),
            will_properties: Vec::new(),
            subscriptions: Vec::new(),
            filters: Vec::new(),
        };
        match self {
            Self::Connect(ConnectModel {
                will: Some(will), ..
            }) => parts.will_properties = borrow_all(&will.properties),
            Self::Subscribe(s) => {
                parts.subscriptions = s
                    .subscriptions
                    .iter()
                    .map(|(filter, options)| Subscription::new(filter, *options))
                    .collect();
            }
            Self::Unsubscribe(u) => {
                parts.filters = u.filters.iter().map(String::as_str).collect();
            }
            _ => {}
        }
        parts
    }

    /// Encodes the packet for `version`, checking that exactly `encoded_len` bytes are written.
    pub(crate) fn encode(&self, version: ProtocolVersion) -> Vec<u8> {
        encode(&self.parts().packet(), version)
    }
}

/// Encodes `packet` for `version` into a fresh buffer of exactly `encoded_len` bytes.
pub(crate) fn encode(packet: &Packet<'_>, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = vec![0; packet.encoded_len(version)];
    let written = packet
        .encode(version, &mut buf)
        .expect("a generated packet encodes");
    assert_eq!(written, buf.len(), "encode disagrees with encoded_len");
    buf
}

impl Parts<'_> {
    /// The codec's view of the model.
    pub(crate) fn packet(&self) -> Packet<'_> {
        let properties: Properties<'_> = List::new(self.properties.as_slice());
        match self.model {
            // A `Packet` holds a CONNECT by reference; the generated one is leaked so it
            // lives as long as the parts it borrows from (a few hundred bytes per case).
            PacketModel::Connect(c) => Packet::from(&*Box::leak(Box::new(Connect {
                protocol: c.protocol,
                clean_start: c.clean_start,
                keep_alive: c.keep_alive,
                properties,
                client_id: &c.client_id,
                will: c.will.as_ref().map(|w| Will {
                    qos: w.qos,
                    retain: w.retain,
                    properties: List::new(self.will_properties.as_slice()),
                    topic: &w.topic,
                    payload: &w.payload,
                }),
                username: c.username.as_deref(),
                password: c.password.as_deref(),
            }))),
            PacketModel::ConnAck(c) => Packet::ConnAck(ConnAck {
                session_present: c.session_present,
                reason_code: c.reason_code,
                properties,
            }),
            PacketModel::Publish(p) => Packet::Publish(Publish {
                dup: p.dup,
                qos_pid: p.qos_pid,
                retain: p.retain,
                topic: &p.topic,
                properties,
                payload: &p.payload,
            }),
            PacketModel::PubAck(a) => Packet::PubAck(ack(a, properties)),
            PacketModel::PubRec(a) => Packet::PubRec(ack(a, properties)),
            PacketModel::PubRel(a) => Packet::PubRel(ack(a, properties)),
            PacketModel::PubComp(a) => Packet::PubComp(ack(a, properties)),
            PacketModel::Subscribe(s) => Packet::Subscribe(Subscribe {
                packet_id: s.packet_id,
                properties,
                subscriptions: List::new(self.subscriptions.as_slice()),
            }),
            PacketModel::SubAck(s) => Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                properties,
                reason_codes: List::new(&s.reason_codes),
            }),
            PacketModel::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
                packet_id: u.packet_id,
                properties,
                filters: List::new(self.filters.as_slice()),
            }),
            PacketModel::UnsubAck(u) => Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                properties,
                reason_codes: List::new(&u.reason_codes),
            }),
            PacketModel::PingReq => Packet::PingReq,
            PacketModel::PingResp => Packet::PingResp,
            PacketModel::Disconnect(d) => Packet::Disconnect(Disconnect {
                reason_code: d.reason_code,
                properties,
            }),
            PacketModel::Auth(a) => Packet::Auth(Auth {
                reason_code: a.reason_code,
                properties,
            }),
        }
    }
}

fn ack<'a>(model: &AckModel, properties: Properties<'a>) -> Ack<'a> {
    Ack {
        packet_id: model.packet_id,
        reason_code: model.reason_code,
        properties,
    }
}

// ---------------------------------------------------------------------------------------------
// The specifications' tables
// ---------------------------------------------------------------------------------------------

/// Where a property block sits: MQTT 5.0 §2.2.2.2 lists the will properties apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Connect,
    ConnAck,
    Publish,
    Will,
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

/// The property identifiers MQTT 5.0 §2.2.2.2 (table 2-4) allows in `scope`.
pub(crate) const fn spec_properties(scope: Scope) -> &'static [u8] {
    match scope {
        Scope::Connect => &[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27],
        Scope::ConnAck => &[
            0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27,
            0x28, 0x29, 0x2A,
        ],
        Scope::Publish => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26],
        Scope::Will => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26],
        Scope::PubAck
        | Scope::PubRec
        | Scope::PubRel
        | Scope::PubComp
        | Scope::SubAck
        | Scope::UnsubAck => &[0x1F, 0x26],
        Scope::Subscribe => &[0x0B, 0x26],
        Scope::Unsubscribe => &[0x26],
        Scope::Disconnect => &[0x11, 0x1C, 0x1F, 0x26],
        Scope::Auth => &[0x15, 0x16, 0x1F, 0x26],
    }
}

/// Whether property `id` may appear more than once in `scope`: User Property anywhere
/// (§3.1.2.11.8 and its siblings), Subscription Identifier in PUBLISH ([MQTT-3.3.4-3]).
pub(crate) fn may_repeat(scope: Scope, id: u8) -> bool {
    id == 0x26 || (id == 0x0B && scope == Scope::Publish)
}

/// The reason codes MQTT 5.0 allows in `packet`: the tables of §3.2.2.2 (CONNACK),
/// §3.4.2.1 (PUBACK), §3.5.2.1 (PUBREC), §3.6.2.1 (PUBREL), §3.7.2.1 (PUBCOMP), §3.9.3
/// (SUBACK), §3.11.3 (UNSUBACK), §3.14.2.1 (DISCONNECT) and §3.15.2.1 (AUTH).
pub(crate) const fn spec_reason_codes(packet: PacketType) -> &'static [u8] {
    match packet {
        PacketType::ConnAck => &[
            0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90,
            0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
        ],
        PacketType::PubAck | PacketType::PubRec => {
            &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]
        }
        PacketType::PubRel | PacketType::PubComp => &[0x00, 0x92],
        PacketType::SubAck => &[
            0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
        ],
        PacketType::UnsubAck => &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91],
        PacketType::Disconnect => &[
            0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93,
            0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1,
            0xA2,
        ],
        PacketType::Auth => &[0x00, 0x18, 0x19],
        _ => &[],
    }
}

/// The CONNACK return codes of MQTT 3.1 and 3.1.1 (0 to 5, §3.2.2.3 of 3.1.1) as the reason
/// codes the codec models them with.
pub(crate) const V3_CONNACK_CODES: [ReasonCode; 6] = [
    ReasonCode::Success,
    ReasonCode::UnsupportedProtocolVersion,
    ReasonCode::ClientIdentifierNotValid,
    ReasonCode::ServerUnavailable,
    ReasonCode::BadUserNameOrPassword,
    ReasonCode::NotAuthorized,
];

/// The SUBACK return codes of MQTT 3.x: granted QoS 0, 1, 2 and failure 0x80 (§3.9.3 of 3.1.1).
pub(crate) const V3_SUBACK_CODES: [ReasonCode; 4] = [
    ReasonCode::Success,
    ReasonCode::GrantedQoS1,
    ReasonCode::GrantedQoS2,
    ReasonCode::UnspecifiedError,
];

// ---------------------------------------------------------------------------------------------
// Strategies: values
// ---------------------------------------------------------------------------------------------

/// Any Unicode scalar value but U+0000, which no MQTT string may hold ([MQTT-1.5.4-2]).
fn arb_char() -> impl Strategy<Value = char> + Clone {
    any::<char>().prop_map(|c| if c == '\0' { '?' } else { c })
}

/// A UTF-8 string of up to `max_chars` characters without U+0000.
pub(crate) fn arb_string(max_chars: usize) -> impl Strategy<Value = String> + Clone {
    vec(arb_char(), 0..=max_chars).prop_map(String::from_iter)
}

/// Arbitrary binary data of up to `max_len` bytes.
pub(crate) fn arb_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> + Clone {
    vec(any::<u8>(), 0..=max_len)
}

/// A topic level: no separators, wildcards or U+0000.
fn arb_level() -> impl Strategy<Value = String> + Clone {
    vec(
        arb_char().prop_map(|c| if matches!(c, '+' | '#' | '/') { '_' } else { c }),
        0..=8,
    )
    .prop_map(String::from_iter)
}

/// A topic name: at least one character ([MQTT-4.7.3-1]), no wildcards ([MQTT-3.3.2-2]).
pub(crate) fn arb_topic_name() -> impl Strategy<Value = String> + Clone {
    vec(arb_level(), 1..=4).prop_map(|levels| {
        let topic = levels.join("/");
        if topic.is_empty() { "t".into() } else { topic }
    })
}

/// A topic filter ([MQTT-4.7.1-1] to [MQTT-4.7.1-3]): `+` fills whole levels, `#` only the
/// last one, sometimes behind a `$share/{group}/` prefix whose group has no wildcards or
/// separators ([MQTT-4.8.2-1]). Stays well under 256 bytes.
pub(crate) fn arb_topic_filter() -> impl Strategy<Value = String> + Clone {
    let level = prop_oneof![4 => arb_level(), 1 => Just("+".to_string())];
    (
        vec(level, 1..=4),
        any::<bool>(),
        option::weighted(0.15, arb_level()),
    )
        .prop_map(|(levels, multi_level, share)| {
            let mut filter = levels.join("/");
            if multi_level {
                filter.push_str(if filter.is_empty() { "#" } else { "/#" });
            } else if filter.is_empty() {
                filter.push('+');
            }
            match share {
                Some(group) if !group.is_empty() => format!("$share/{group}/{filter}"),
                _ => filter,
            }
        })
}

/// A non-zero packet identifier, often at the ends of its range.
pub(crate) fn arb_packet_id() -> impl Strategy<Value = PacketId> + Clone {
    prop_oneof![
        6 => 1..=u16::MAX,
        1 => Just(1),
        1 => Just(u16::MAX),
    ]
    .prop_map(|id| NonZeroU16::new(id).expect("non-zero by construction"))
}

pub(crate) fn arb_qos() -> impl Strategy<Value = QoS> + Clone {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

/// An application payload: mostly small, sometimes long enough for a two-byte remaining
/// length, rarely long enough for a three-byte one. The long ones are filled from a seed:
/// a proptest vector of 16 KiB costs a value tree per byte.
pub(crate) fn arb_payload() -> impl Strategy<Value = Vec<u8>> + Clone {
    prop_oneof![
        8 => vec(any::<u8>(), 0..48),
        3 => vec(any::<u8>(), 48..400),
        1 => (16_370..16_400usize, any::<u8>()).prop_map(|(len, seed)| {
            (0..len).map(|i| seed.wrapping_add((i * 31) as u8)).collect()
        }),
    ]
}

/// A Subscription Identifier (1 to 268 435 455, §3.8.2.1.2), spread over all var int lengths.
fn arb_subscription_identifier() -> impl Strategy<Value = u32> + Clone {
    prop_oneof![
        1..=127u32,
        128..=16_383u32,
        16_384..=2_097_151u32,
        2_097_152..=MAX_VAR_INT,
        Just(MAX_VAR_INT),
    ]
}

/// A valid value for property `id`: every range rule of MQTT 5.0 §3 is respected (Receive
/// Maximum, Topic Alias, Maximum Packet Size and Subscription Identifier are never 0;
/// Maximum QoS is 0 or 1; a Response Topic is a topic name).
fn arb_property(id: u8) -> BoxedStrategy<OwnedProperty> {
    use OwnedProperty as O;
    match id {
        0x01 => any::<bool>().prop_map(O::PayloadFormatIndicator).boxed(),
        0x02 => any::<u32>().prop_map(O::MessageExpiryInterval).boxed(),
        0x03 => arb_string(12).prop_map(O::ContentType).boxed(),
        0x08 => arb_topic_name().prop_map(O::ResponseTopic).boxed(),
        0x09 => arb_bytes(16).prop_map(O::CorrelationData).boxed(),
        0x0B => arb_subscription_identifier()
            .prop_map(O::SubscriptionIdentifier)
            .boxed(),
        0x11 => any::<u32>().prop_map(O::SessionExpiryInterval).boxed(),
        0x12 => arb_string(23).prop_map(O::AssignedClientIdentifier).boxed(),
        0x13 => any::<u16>().prop_map(O::ServerKeepAlive).boxed(),
        0x15 => arb_string(12).prop_map(O::AuthenticationMethod).boxed(),
        0x16 => arb_bytes(16).prop_map(O::AuthenticationData).boxed(),
        0x17 => any::<bool>().prop_map(O::RequestProblemInformation).boxed(),
        0x18 => any::<u32>().prop_map(O::WillDelayInterval).boxed(),
        0x19 => any::<bool>()
            .prop_map(O::RequestResponseInformation)
            .boxed(),
        0x1A => arb_string(12).prop_map(O::ResponseInformation).boxed(),
        0x1C => arb_string(12).prop_map(O::ServerReference).boxed(),
        0x1F => arb_string(16).prop_map(O::ReasonString).boxed(),
        0x21 => (1..=u16::MAX).prop_map(O::ReceiveMaximum).boxed(),
        0x22 => any::<u16>().prop_map(O::TopicAliasMaximum).boxed(),
        0x23 => (1..=u16::MAX).prop_map(O::TopicAlias).boxed(),
        0x24 => select(vec![QoS::AtMostOnce, QoS::AtLeastOnce])
            .prop_map(O::MaximumQoS)
            .boxed(),
        0x25 => any::<bool>().prop_map(O::RetainAvailable).boxed(),
        0x26 => (arb_string(8), arb_string(8))
            .prop_map(|(k, v)| O::UserProperty(k, v))
            .boxed(),
        0x27 => (1..=u32::MAX).prop_map(O::MaximumPacketSize).boxed(),
        0x28 => any::<bool>()
            .prop_map(O::WildcardSubscriptionAvailable)
            .boxed(),
        0x29 => any::<bool>()
            .prop_map(O::SubscriptionIdentifierAvailable)
            .boxed(),
        0x2A => any::<bool>()
            .prop_map(O::SharedSubscriptionAvailable)
            .boxed(),
        _ => unreachable!("property {id:#04x} is not in the specification's table"),
    }
}

/// A property block for `scope`: empty before 5.0; in 5.0 any subset of the allowed
/// properties, each once unless it may repeat, in random order. Authentication Data only comes
/// with an Authentication Method (§3.1.2.11.10, §3.15.2.2.3).
pub(crate) fn arb_properties(
    scope: Scope,
    version: ProtocolVersion,
) -> BoxedStrategy<Vec<OwnedProperty>> {
    if !version.is_v5() {
        return Just(Vec::new()).boxed();
    }
    let ids = spec_properties(scope);
    let singles: Vec<_> = ids
        .iter()
        .filter(|&&id| !may_repeat(scope, id))
        .map(|&id| option::weighted(0.3, arb_property(id)))
        .collect();
    let repeated: Vec<_> = ids
        .iter()
        .filter(|&&id| may_repeat(scope, id))
        .map(|&id| vec(arb_property(id), 0..=2))
        .collect();
    (singles, repeated)
        .prop_flat_map(|(singles, repeated)| {
            let mut all: Vec<OwnedProperty> = singles
                .into_iter()
                .flatten()
                .chain(repeated.into_iter().flatten())
                .collect();
            if !all
                .iter()
                .any(|p| matches!(p, OwnedProperty::AuthenticationMethod(_)))
            {
                all.retain(|p| !matches!(p, OwnedProperty::AuthenticationData(_)));
            }
            Just(all).prop_shuffle()
        })
        .boxed()
}

/// A reason code MQTT 5.0 allows in `packet`.
pub(crate) fn arb_v5_reason_code(packet: PacketType) -> impl Strategy<Value = ReasonCode> + Clone {
    let codes: Vec<ReasonCode> = spec_reason_codes(packet)
        .iter()
        .map(|&code| ReasonCode::from_u8(code).expect("the specification defines it"))
        .collect();
    select(codes)
}

/// A payload that is UTF-8 when the Payload Format Indicator says so (§3.3.2.3.2).
fn honour_payload_format(properties: &[OwnedProperty], payload: Vec<u8>) -> Vec<u8> {
    if properties.contains(&OwnedProperty::PayloadFormatIndicator(true)) {
        String::from_utf8_lossy(&payload).into_owned().into_bytes()
    } else {
        payload
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies: packets
// ---------------------------------------------------------------------------------------------

/// A will message valid in `version`.
pub(crate) fn arb_will(version: ProtocolVersion) -> impl Strategy<Value = WillModel> {
    (
        arb_qos(),
        any::<bool>(),
        arb_properties(Scope::Will, version),
        arb_topic_name(),
        arb_bytes(32),
    )
        .prop_map(|(qos, retain, properties, topic, payload)| WillModel {
            qos,
            retain,
            payload: honour_payload_format(&properties, payload),
            properties,
            topic,
        })
}

/// A CONNECT announcing `version`, following its rules on the client identifier and on the
/// user name and password flags.
pub(crate) fn arb_connect(version: ProtocolVersion) -> impl Strategy<Value = ConnectModel> {
    let client_id = match version {
        // 3.1 §3.1: the client identifier is 1 to 23 characters.
        ProtocolVersion::V3_1 => "[0-9A-Za-z]{1,23}".boxed(),
        _ => arb_string(23).boxed(),
    };
    let password = match version {
        // 3.1 §3.1: the password is a UTF-8 string; binary data since 3.1.1.
        ProtocolVersion::V3_1 => arb_string(12).prop_map(String::into_bytes).boxed(),
        _ => arb_bytes(16).boxed(),
    };
    (
        (any::<bool>(), any::<u16>()),
        arb_properties(Scope::Connect, version),
        client_id,
        option::weighted(0.4, arb_will(version)),
        option::of(arb_string(12)),
        option::of(password),
    )
        .prop_map(
            move |((clean_start, keep_alive), properties, client_id, will, username, password)| {
                ConnectModel {
                    protocol: version,
                    // [MQTT-3.1.3-7] (3.1.1): an empty client identifier needs a clean session.
                    clean_start: clean_start || (client_id.is_empty() && !version.is_v5()),
                    keep_alive,
                    properties,
                    client_id,
                    will,
                    // [MQTT-3.1.2-22] (3.1.1): no password without a user name before 5.0.
                    password: if version.is_v5() || username.is_some() {
                        password
                    } else {
                        None
                    },
                    username,
                }
            },
        )
}

/// A CONNACK valid in `version`.
pub(crate) fn arb_connack(version: ProtocolVersion) -> impl Strategy<Value = ConnAckModel> {
    let code = if version.is_v5() {
        arb_v5_reason_code(PacketType::ConnAck).boxed()
    } else {
        select(V3_CONNACK_CODES.to_vec()).boxed()
    };
    (any::<bool>(), code, arb_properties(Scope::ConnAck, version)).prop_map(
        move |(session_present, reason_code, properties)| ConnAckModel {
            // 3.1 has no Session Present flag; [MQTT-3.2.2-4] (3.1.1) and [MQTT-3.2.2-6]
            // (5.0): never with a refusal.
            session_present: session_present
                && version != ProtocolVersion::V3_1
                && !reason_code.is_error(),
            reason_code,
            properties,
        },
    )
}

/// A PUBLISH valid in `version`. In 5.0 the topic is sometimes empty and stood for by a
/// Topic Alias ([MQTT-3.3.2-8]).
pub(crate) fn arb_publish(version: ProtocolVersion) -> impl Strategy<Value = PublishModel> {
    (
        (any::<bool>(), arb_qos(), arb_packet_id(), any::<bool>()),
        arb_topic_name(),
        arb_properties(Scope::Publish, version),
        arb_payload(),
        option::weighted(0.1, 1..=u16::MAX),
    )
        .prop_map(
            move |((dup, qos, id, retain), topic, mut properties, payload, alias)| {
                let topic = match alias {
                    Some(alias) if version.is_v5() => {
                        if !properties
                            .iter()
                            .any(|p| matches!(p, OwnedProperty::TopicAlias(_)))
                        {
                            properties.push(OwnedProperty::TopicAlias(alias));
                        }
                        String::new()
                    }
                    _ => topic,
                };
                let qos_pid = match qos {
                    QoS::AtMostOnce => QoSPid::AtMostOnce,
                    QoS::AtLeastOnce => QoSPid::AtLeastOnce(id),
                    QoS::ExactlyOnce => QoSPid::ExactlyOnce(id),
                };
                PublishModel {
                    // [MQTT-3.3.1-2]: DUP is 0 for QoS 0.
                    dup: dup && qos != QoS::AtMostOnce,
                    qos_pid,
                    retain,
                    topic,
                    payload: honour_payload_format(&properties, payload),
                    properties,
                }
            },
        )
}

/// A PUBACK, PUBREC, PUBREL or PUBCOMP (`packet`) valid in `version`.
pub(crate) fn arb_ack(
    version: ProtocolVersion,
    packet: PacketType,
    scope: Scope,
) -> impl Strategy<Value = AckModel> {
    let code = if version.is_v5() {
        arb_v5_reason_code(packet).boxed()
    } else {
        Just(ReasonCode::Success).boxed()
    };
    (arb_packet_id(), code, arb_properties(scope, version)).prop_map(
        |(packet_id, reason_code, properties)| AckModel {
            packet_id,
            reason_code,
            properties,
        },
    )
}

/// Subscription options valid in `version`: only the QoS before 5.0; in 5.0 every field, but
/// no No Local on a shared subscription ([MQTT-3.8.3-4]) and never retain handling 3.
fn arb_subscription(
    version: ProtocolVersion,
) -> impl Strategy<Value = (String, SubscriptionOptions)> {
    (
        arb_topic_filter(),
        arb_qos(),
        any::<bool>(),
        any::<bool>(),
        select(vec![
            RetainHandling::SendOnSubscribe,
            RetainHandling::SendIfNew,
            RetainHandling::DoNotSend,
        ]),
    )
        .prop_map(
            move |(filter, qos, no_local, retain_as_published, retain_handling)| {
                let options = if version.is_v5() {
                    SubscriptionOptions {
                        qos,
                        no_local: no_local && !filter.starts_with("$share/"),
                        retain_as_published,
                        retain_handling,
                    }
                } else {
                    SubscriptionOptions::qos(qos)
                };
                (filter, options)
            },
        )
}

/// A SUBSCRIBE with one to eight filters ([MQTT-3.8.3-3]: at least one).
pub(crate) fn arb_subscribe(version: ProtocolVersion) -> impl Strategy<Value = SubscribeModel> {
    (
        arb_packet_id(),
        arb_properties(Scope::Subscribe, version),
        vec(arb_subscription(version), 1..=8),
    )
        .prop_map(|(packet_id, properties, subscriptions)| SubscribeModel {
            packet_id,
            properties,
            subscriptions,
        })
}

/// A SUBACK with one to eight codes: granted QoS or failure before 5.0, the §3.9.3 table in 5.0.
pub(crate) fn arb_suback(version: ProtocolVersion) -> impl Strategy<Value = SubAckModel> {
    let code = if version.is_v5() {
        arb_v5_reason_code(PacketType::SubAck).boxed()
    } else {
        select(V3_SUBACK_CODES.to_vec()).boxed()
    };
    (
        arb_packet_id(),
        arb_properties(Scope::SubAck, version),
        vec(code, 1..=8),
    )
        .prop_map(|(packet_id, properties, reason_codes)| SubAckModel {
            packet_id,
            properties,
            reason_codes,
        })
}

/// An UNSUBSCRIBE with one to eight filters ([MQTT-3.10.3-2]: at least one).
pub(crate) fn arb_unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = UnsubscribeModel> {
    (
        arb_packet_id(),
        arb_properties(Scope::Unsubscribe, version),
        vec(arb_topic_filter(), 1..=8),
    )
        .prop_map(|(packet_id, properties, filters)| UnsubscribeModel {
            packet_id,
            properties,
            filters,
        })
}

/// An UNSUBACK: the packet identifier alone before 5.0, codes and properties in 5.0.
pub(crate) fn arb_unsuback(version: ProtocolVersion) -> impl Strategy<Value = SubAckModel> {
    let codes = if version.is_v5() {
        vec(arb_v5_reason_code(PacketType::UnsubAck), 1..=8).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (
        arb_packet_id(),
        arb_properties(Scope::UnsubAck, version),
        codes,
    )
        .prop_map(|(packet_id, properties, reason_codes)| SubAckModel {
            packet_id,
            properties,
            reason_codes,
        })
}

/// A DISCONNECT: no body before 5.0.
pub(crate) fn arb_disconnect(version: ProtocolVersion) -> impl Strategy<Value = TailModel> {
    let code = if version.is_v5() {
        arb_v5_reason_code(PacketType::Disconnect).boxed()
    } else {
        Just(ReasonCode::Success).boxed()
    };
    (code, arb_properties(Scope::Disconnect, version)).prop_map(|(reason_code, properties)| {
        TailModel {
            reason_code,
            properties,
        }
    })
}

/// An AUTH (5.0 only). It always names its method: §3.15.2.2.2 makes leaving it out a
/// Protocol Error.
pub(crate) fn arb_auth() -> impl Strategy<Value = TailModel> {
    (
        arb_v5_reason_code(PacketType::Auth),
        arb_properties(Scope::Auth, ProtocolVersion::V5),
        arb_string(12),
    )
        .prop_map(|(reason_code, mut properties, method)| {
            if !properties
                .iter()
                .any(|p| matches!(p, OwnedProperty::AuthenticationMethod(_)))
            {
                properties.insert(0, OwnedProperty::AuthenticationMethod(method));
            }
            TailModel {
                reason_code,
                properties,
            }
        })
}

/// Any packet valid in `version`: every type of that version, about equally often.
pub(crate) fn arb_packet(version: ProtocolVersion) -> BoxedStrategy<PacketModel> {
    use PacketModel as M;
    let mut arms: Vec<(u32, BoxedStrategy<PacketModel>)> = vec![
        (2, arb_connect(version).prop_map(M::Connect).boxed()),
        (1, arb_connack(version).prop_map(M::ConnAck).boxed()),
        (3, arb_publish(version).prop_map(M::Publish).boxed()),
        (
            1,
            arb_ack(version, PacketType::PubAck, Scope::PubAck)
                .prop_map(M::PubAck)
                .boxed(),
        ),
        (
            1,
            arb_ack(version, PacketType::PubRec, Scope::PubRec)
                .prop_map(M::PubRec)
                .boxed(),
        ),
        (
            1,
            arb_ack(version, PacketType::PubRel, Scope::PubRel)
                .prop_map(M::PubRel)
                .boxed(),
        ),
        (
            1,
            arb_ack(version, PacketType::PubComp, Scope::PubComp)
                .prop_map(M::PubComp)
                .boxed(),
        ),
        (2, arb_subscribe(version).prop_map(M::Subscribe).boxed()),
        (1, arb_suback(version).prop_map(M::SubAck).boxed()),
        (1, arb_unsubscribe(version).prop_map(M::Unsubscribe).boxed()),
        (1, arb_unsuback(version).prop_map(M::UnsubAck).boxed()),
        (1, Just(M::PingReq).boxed()),
        (1, Just(M::PingResp).boxed()),
        (1, arb_disconnect(version).prop_map(M::Disconnect).boxed()),
    ];
    if version.is_v5() {
        arms.push((1, arb_auth().prop_map(M::Auth).boxed()));
    }
    Union::new_weighted(arms).boxed()
}

/// Appends `value` as a variable byte integer (§1.5.5), in the fewest bytes.
pub(crate) fn push_var_int(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            break;
        }
    }
}

/// A frame: first byte, remaining length, body.
pub(crate) fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    push_var_int(&mut out, body.len());
    out.extend_from_slice(body);
    out
}
