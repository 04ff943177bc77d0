//! Round trips of valid packets: every control packet of MQTT 3.1, 3.1.1 and 5.0, generated
//! by `common` with only what its version allows, must encode to exactly `encoded_len` bytes
//! and decode back to an equal packet that consumed every byte, whatever follows it.

mod common;

use common::{
    AckModel, ConnAckModel, ConnectModel, OwnedProperty, PacketModel, PublishModel, Scope,
    SubAckModel, SubscribeModel, TailModel, UnsubscribeModel, VERSIONS, WillModel, arb_packet,
    config, may_repeat, spec_properties, spec_reason_codes,
};
use fulmar_core::codec::{
    DecodeError, EncodeError, FixedHeader, MAX_PACKET_SIZE, Packet, PacketId, PacketType,
    ProtocolVersion, Publish, QoS, QoSPid, ReasonCode, SubscriptionOptions, decode,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

/// Every check one valid packet must pass for `version`; `trailing` is whatever the stream
/// holds after it.
fn check_roundtrip(
    model: &PacketModel,
    version: ProtocolVersion,
    trailing: &[u8],
) -> Result<(), TestCaseError> {
    let parts = model.parts();
    let packet = parts.packet();
    let len = packet.encoded_len(version);

    // A buffer one byte short: the exact size is reported and nothing is written.
    let mut short = vec![0xA5; len - 1];
    prop_assert_eq!(
        packet.encode(version, &mut short),
        Err(EncodeError::InsufficientSize { required: len })
    );
    prop_assert!(
        short.iter().all(|&b| b == 0xA5),
        "encode wrote into a short buffer"
    );

    // A longer buffer: exactly `len` bytes are written, the rest is left alone.
    let mut buf = vec![0xA5; len + 7];
    prop_assert_eq!(packet.encode(version, &mut buf), Ok(len));
    prop_assert!(
        buf[len..].iter().all(|&b| b == 0xA5),
        "encode wrote past encoded_len"
    );
    buf.truncate(len);

    prop_assert_eq!(decode(&buf, version, MAX_PACKET_SIZE), Ok((packet, len)));

    // The fixed header announces exactly the rest of the packet.
    let header = FixedHeader::parse(&buf, version, MAX_PACKET_SIZE);
    prop_assert_eq!(header.map(|h| h.packet_len()), Ok(len));

    // Whatever follows the frame is neither read nor consumed.
    let mut stream = buf.clone();
    stream.extend_from_slice(trailing);
    prop_assert_eq!(decode(&stream, version, MAX_PACKET_SIZE), Ok((packet, len)));

    // The size limit counts the whole packet, fixed header included.
    prop_assert_eq!(decode(&buf, version, len), Ok((packet, len)));
    prop_assert_eq!(
        decode(&stream, version, len - 1),
        Err(DecodeError::PacketTooLarge {
            size: len,
            max: len - 1
        })
    );

    // A CONNECT is read by the level it announces, whatever the connection's version.
    if let Packet::Connect(_) = packet {
        for other in VERSIONS {
            prop_assert_eq!(decode(&stream, other, MAX_PACKET_SIZE), Ok((packet, len)));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(768))]

    #[test]
    fn roundtrip_v3_1(model in arb_packet(ProtocolVersion::V3_1), trailing in vec(any::<u8>(), 0..8)) {
        check_roundtrip(&model, ProtocolVersion::V3_1, &trailing)?;
    }

    #[test]
    fn roundtrip_v3_1_1(model in arb_packet(ProtocolVersion::V3_1_1), trailing in vec(any::<u8>(), 0..8)) {
        check_roundtrip(&model, ProtocolVersion::V3_1_1, &trailing)?;
    }

    #[test]
    fn roundtrip_v5(model in arb_packet(ProtocolVersion::V5), trailing in vec(any::<u8>(), 0..8)) {
        check_roundtrip(&model, ProtocolVersion::V5, &trailing)?;
    }
}

/// The generators reach every packet type of every version, and every property a 5.0 packet
/// may carry; a generator that silently stopped producing something would hollow out the
/// round trips above.
#[test]
fn generators_cover_every_packet_type_and_property() {
    let mut runner = TestRunner::deterministic();
    for version in VERSIONS {
        let strategy = arb_packet(version);
        let mut types = Vec::new();
        let mut properties = Vec::new();
        for _ in 0..1500 {
            let model = strategy
                .new_tree(&mut runner)
                .expect("strategy yields")
                .current();
            let packet_type = model.packet_type();
            if !types.contains(&packet_type) {
                types.push(packet_type);
            }
            for p in model.properties() {
                if !properties.contains(&(packet_type, p.id())) {
                    properties.push((packet_type, p.id()));
                }
            }
        }
        let expected = if version.is_v5() { 15 } else { 14 };
        assert_eq!(types.len(), expected, "{version}: only {types:?}");
        if version.is_v5() {
            for (packet_type, scope) in [
                (PacketType::Connect, Scope::Connect),
                (PacketType::ConnAck, Scope::ConnAck),
                (PacketType::Publish, Scope::Publish),
                (PacketType::PubAck, Scope::PubAck),
                (PacketType::Subscribe, Scope::Subscribe),
                (PacketType::SubAck, Scope::SubAck),
                (PacketType::Unsubscribe, Scope::Unsubscribe),
                (PacketType::UnsubAck, Scope::UnsubAck),
                (PacketType::Disconnect, Scope::Disconnect),
                (PacketType::Auth, Scope::Auth),
            ] {
                for &id in spec_properties(scope) {
                    assert!(
                        properties.contains(&(packet_type, id)),
                        "{packet_type:?} never carried property {id:#04x}"
                    );
                }
            }
        } else {
            assert!(properties.is_empty(), "{version} has no properties");
        }
    }
}

/// Every property identifier the specification defines, with a valid value.
fn sample_properties() -> Vec<OwnedProperty> {
    use OwnedProperty as O;
    vec![
        O::PayloadFormatIndicator(true),
        O::MessageExpiryInterval(60),
        O::ContentType("text/plain".into()),
        O::ResponseTopic("re/ply".into()),
        O::CorrelationData(vec![1, 2]),
        O::SubscriptionIdentifier(200),
        O::SessionExpiryInterval(30),
        O::AssignedClientIdentifier("id".into()),
        O::ServerKeepAlive(20),
        O::AuthenticationMethod("SCRAM".into()),
        O::AuthenticationData(vec![3]),
        O::RequestProblemInformation(false),
        O::WillDelayInterval(5),
        O::RequestResponseInformation(true),
        O::ResponseInformation("info".into()),
        O::ServerReference("other".into()),
        O::ReasonString("why".into()),
        O::ReceiveMaximum(10),
        O::TopicAliasMaximum(4),
        O::TopicAlias(2),
        O::MaximumQoS(QoS::AtLeastOnce),
        O::RetainAvailable(false),
        O::UserProperty("k".into(), "v".into()),
        O::MaximumPacketSize(1024),
        O::WildcardSubscriptionAvailable(true),
        O::SubscriptionIdentifierAvailable(false),
        O::SharedSubscriptionAvailable(true),
    ]
}

/// A minimal 5.0 packet whose property block for `scope` is `properties`; also the packet
/// type the decoder reports errors in that block against.
fn host(scope: Scope, properties: Vec<OwnedProperty>) -> (PacketModel, PacketType) {
    let id = PacketId::new(7).expect("non-zero");
    let ack = |properties| AckModel {
        packet_id: id,
        reason_code: ReasonCode::Success,
        properties,
    };
    let codes = |properties| SubAckModel {
        packet_id: id,
        properties,
        reason_codes: vec![ReasonCode::Success],
    };
    let tail = |reason_code, properties| TailModel {
        reason_code,
        properties,
    };
    let connect = |properties, will| {
        PacketModel::Connect(ConnectModel {
            protocol: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 60,
            properties,
            client_id: "c".into(),
            will,
            username: None,
            password: None,
        })
    };
    let model = match scope {
        Scope::Connect => connect(properties, None),
        Scope::Will => connect(
            Vec::new(),
            Some(WillModel {
                qos: QoS::AtMostOnce,
                retain: false,
                properties,
                topic: "w".into(),
                payload: b"bye".to_vec(),
            }),
        ),
        Scope::ConnAck => PacketModel::ConnAck(ConnAckModel {
            session_present: false,
            reason_code: ReasonCode::Success,
            properties,
        }),
        Scope::Publish => PacketModel::Publish(PublishModel {
            dup: false,
            qos_pid: QoSPid::AtMostOnce,
            retain: false,
            topic: "a".into(),
            properties,
            payload: b"x".to_vec(),
        }),
        Scope::PubAck => PacketModel::PubAck(ack(properties)),
        Scope::PubRec => PacketModel::PubRec(ack(properties)),
        Scope::PubRel => PacketModel::PubRel(ack(properties)),
        Scope::PubComp => PacketModel::PubComp(ack(properties)),
        Scope::Subscribe => PacketModel::Subscribe(SubscribeModel {
            packet_id: id,
            properties,
            subscriptions: vec![("a/+".into(), SubscriptionOptions::qos(QoS::AtLeastOnce))],
        }),
        Scope::SubAck => PacketModel::SubAck(codes(properties)),
        Scope::Unsubscribe => PacketModel::Unsubscribe(UnsubscribeModel {
            packet_id: id,
            properties,
            filters: vec!["a/+".into()],
        }),
        Scope::UnsubAck => PacketModel::UnsubAck(codes(properties)),
        Scope::Disconnect => PacketModel::Disconnect(tail(ReasonCode::Success, properties)),
        Scope::Auth => PacketModel::Auth(tail(ReasonCode::ContinueAuthentication, properties)),
    };
    let packet_type = match scope {
        Scope::Will => PacketType::Connect,
        _ => model.packet_type(),
    };
    (model, packet_type)
}

/// The codec's property rules agree with MQTT 5.0 §2.2.2.2 in both directions: each
/// property is accepted exactly where table 2-4 allows it, refused elsewhere, and refused when
/// repeated unless it may repeat there.
#[test]
fn property_tables_match_the_specification() {
    use Scope::*;
    let v5 = ProtocolVersion::V5;
    for scope in [
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
    ] {
        for property in sample_properties() {
            let id = property.id();
            let allowed = spec_properties(scope).contains(&id);

            let (model, packet) = host(scope, vec![property.clone()]);
            let bytes = model.encode(v5);
            let expected = if allowed {
                Ok(bytes.len())
            } else {
                Err(DecodeError::PropertyNotAllowed {
                    property: id,
                    packet,
                })
            };
            let got = decode(&bytes, v5, MAX_PACKET_SIZE).map(|(_, used)| used);
            assert_eq!(got, expected, "{scope:?} with {property:?}");

            let (model, _) = host(scope, vec![property.clone(), property.clone()]);
            let bytes = model.encode(v5);
            let expected = match (allowed, may_repeat(scope, id)) {
                (true, true) => Ok(bytes.len()),
                (true, false) => Err(DecodeError::DuplicateProperty(id)),
                (false, _) => Err(DecodeError::PropertyNotAllowed {
                    property: id,
                    packet,
                }),
            };
            let got = decode(&bytes, v5, MAX_PACKET_SIZE).map(|(_, used)| used);
            assert_eq!(got, expected, "{scope:?} with {property:?} twice");
        }
    }
}

/// The codec's reason code tables agree with the specification's, byte for byte.
#[test]
fn reason_code_tables_match_the_specification() {
    for nibble in 1..=15 {
        let packet = PacketType::from_nibble(nibble, ProtocolVersion::V5).expect("5.0 type");
        for byte in 0..=u8::MAX {
            let codec = ReasonCode::from_u8(byte).is_some_and(|code| code.is_valid_for(packet));
            let spec = spec_reason_codes(packet).contains(&byte);
            assert_eq!(codec, spec, "{packet:?} with reason code {byte:#04x}");
        }
    }
}

/// PUBLISH with remaining lengths at the edges of each variable byte integer size (§1.5.5,
/// table 1-1), in every version.
#[test]
fn remaining_length_boundaries() {
    // Topic "t" and no packet identifier: the body is 3 bytes plus the payload (plus the empty
    // property block in 5.0).
    let payload = vec![0x5A; 2_097_152];
    for version in VERSIONS {
        let fixed = if version.is_v5() { 4 } else { 3 };
        for (remaining, header_len) in [
            (fixed, 2),
            (127, 2),
            (128, 3),
            (16_383, 3),
            (16_384, 4),
            (2_097_151, 4),
            (2_097_152, 5),
        ] {
            let packet = Packet::Publish(Publish {
                dup: false,
                qos_pid: QoSPid::AtMostOnce,
                retain: false,
                topic: "t",
                properties: Default::default(),
                payload: &payload[..remaining - fixed],
            });
            let bytes = common::encode(&packet, version);
            assert_eq!(bytes.len(), header_len + remaining, "{version} {remaining}");
            assert_eq!(
                decode(&bytes, version, MAX_PACKET_SIZE),
                Ok((packet, bytes.len()))
            );
        }
    }
}
