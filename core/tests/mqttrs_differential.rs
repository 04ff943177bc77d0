//! Differential test against `mqttrs` 0.4, an independent MQTT 3.1.1 codec.
//!
//! For generated valid 3.1.1 packets of every type mqttrs models (all of 3.1.1), both codecs
//! must write identical bytes, and each must read the other's bytes back to the same packet.
//! `to_mqttrs` and `from_mqttrs` translate between the two packet models.
//!
//! Where the two disagree the specification decides. The fixed cases at the end pin down
//! what mqttrs gets wrong: input 3.1.1 forbids that mqttrs accepts (and we reject), valid
//! input mqttrs rejects or panics on, and output mqttrs writes that is not MQTT.
//!
//! The workspace builds mqttrs without its `std` feature, where it keeps SUBSCRIBE, SUBACK and
//! UNSUBSCRIBE lists in `heapless::Vec<_, 5>` and topic filters in `heapless::String<256>`.
//! Packets beyond those capacities are valid MQTT that mqttrs cannot hold (see
//! `mqttrs_cannot_hold_valid_subscribe_packets`), so the generated packets are cut down to fit.

mod common;

use std::num::NonZeroU16;
use std::panic::catch_unwind;

use common::{
    AckModel, ConnectModel, PacketModel, PublishModel, SubAckModel, SubscribeModel, TailModel,
    UnsubscribeModel, WillModel, arb_packet, config, frame,
};
use fulmar_core::codec::{
    Connect, DecodeError, EncodeError, MAX_PACKET_SIZE, Packet, PacketId, ProtocolVersion, Publish,
    QoS, QoSPid, ReasonCode, SubscriptionOptions, decode,
};
use mqttrs as rs;
use proptest::prelude::*;

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

/// mqttrs's list capacity without its `std` feature.
const MQTTRS_LIST_CAPACITY: usize = 5;

// ---------------------------------------------------------------------------------------------
// Mapping between the two packet models
// ---------------------------------------------------------------------------------------------

fn pid(id: PacketId) -> rs::Pid {
    rs::Pid::try_from(id.get()).expect("non-zero")
}

fn packet_id(pid: rs::Pid) -> PacketId {
    NonZeroU16::new(pid.get()).expect("mqttrs never holds pid 0")
}

fn qos_to_rs(qos: QoS) -> rs::QoS {
    match qos {
        QoS::AtMostOnce => rs::QoS::AtMostOnce,
        QoS::AtLeastOnce => rs::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rs::QoS::ExactlyOnce,
    }
}

fn qos_from_rs(qos: rs::QoS) -> QoS {
    match qos {
        rs::QoS::AtMostOnce => QoS::AtMostOnce,
        rs::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rs::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// The codec keeps a 3.x CONNACK return code as the 5.0 reason code with its meaning.
fn connack_code_to_rs(code: ReasonCode) -> rs::ConnectReturnCode {
    match code {
        ReasonCode::Success => rs::ConnectReturnCode::Accepted,
        ReasonCode::UnsupportedProtocolVersion => rs::ConnectReturnCode::RefusedProtocolVersion,
        ReasonCode::ClientIdentifierNotValid => rs::ConnectReturnCode::RefusedIdentifierRejected,
        ReasonCode::ServerUnavailable => rs::ConnectReturnCode::ServerUnavailable,
        ReasonCode::BadUserNameOrPassword => rs::ConnectReturnCode::BadUsernamePassword,
        ReasonCode::NotAuthorized => rs::ConnectReturnCode::NotAuthorized,
        other => panic!("{other} is not a 3.1.1 CONNACK return code"),
    }
}

fn connack_code_from_rs(code: rs::ConnectReturnCode) -> ReasonCode {
    match code {
        rs::ConnectReturnCode::Accepted => ReasonCode::Success,
        rs::ConnectReturnCode::RefusedProtocolVersion => ReasonCode::UnsupportedProtocolVersion,
        rs::ConnectReturnCode::RefusedIdentifierRejected => ReasonCode::ClientIdentifierNotValid,
        rs::ConnectReturnCode::ServerUnavailable => ReasonCode::ServerUnavailable,
        rs::ConnectReturnCode::BadUsernamePassword => ReasonCode::BadUserNameOrPassword,
        rs::ConnectReturnCode::NotAuthorized => ReasonCode::NotAuthorized,
    }
}

/// 3.1.1 SUBACK codes: granted QoS 0/1/2 are reason codes 0x00-0x02, failure is 0x80.
fn suback_code_to_rs(code: ReasonCode) -> rs::SubscribeReturnCodes {
    match code {
        ReasonCode::Success => rs::SubscribeReturnCodes::Success(rs::QoS::AtMostOnce),
        ReasonCode::GrantedQoS1 => rs::SubscribeReturnCodes::Success(rs::QoS::AtLeastOnce),
        ReasonCode::GrantedQoS2 => rs::SubscribeReturnCodes::Success(rs::QoS::ExactlyOnce),
        ReasonCode::UnspecifiedError => rs::SubscribeReturnCodes::Failure,
        other => panic!("{other} is not a 3.1.1 SUBACK return code"),
    }
}

fn suback_code_from_rs(code: &rs::SubscribeReturnCodes) -> ReasonCode {
    match code {
        rs::SubscribeReturnCodes::Success(rs::QoS::AtMostOnce) => ReasonCode::Success,
        rs::SubscribeReturnCodes::Success(rs::QoS::AtLeastOnce) => ReasonCode::GrantedQoS1,
        rs::SubscribeReturnCodes::Success(rs::QoS::ExactlyOnce) => ReasonCode::GrantedQoS2,
        rs::SubscribeReturnCodes::Failure => ReasonCode::UnspecifiedError,
    }
}

/// Our model of a 3.1.1 packet as an mqttrs packet.
fn to_mqttrs(model: &PacketModel) -> rs::Packet<'_> {
    match model {
        PacketModel::Connect(c) => {
            assert_eq!(c.protocol, V311);
            rs::Packet::Connect(rs::Connect {
                protocol: rs::Protocol::MQTT311,
                keep_alive: c.keep_alive,
                client_id: &c.client_id,
                clean_session: c.clean_start,
                last_will: c.will.as_ref().map(|w| rs::LastWill {
                    topic: &w.topic,
                    message: &w.payload,
                    qos: qos_to_rs(w.qos),
                    retain: w.retain,
                }),
                username: c.username.as_deref(),
                password: c.password.as_deref(),
            })
        }
        PacketModel::ConnAck(c) => rs::Packet::Connack(rs::Connack {
            session_present: c.session_present,
            code: connack_code_to_rs(c.reason_code),
        }),
        PacketModel::Publish(p) => rs::Packet::Publish(rs::Publish {
            dup: p.dup,
            qospid: match p.qos_pid {
                QoSPid::AtMostOnce => rs::QosPid::AtMostOnce,
                QoSPid::AtLeastOnce(id) => rs::QosPid::AtLeastOnce(pid(id)),
                QoSPid::ExactlyOnce(id) => rs::QosPid::ExactlyOnce(pid(id)),
            },
            retain: p.retain,
            topic_name: &p.topic,
            payload: &p.payload,
        }),
        PacketModel::PubAck(a) => rs::Packet::Puback(pid(a.packet_id)),
        PacketModel::PubRec(a) => rs::Packet::Pubrec(pid(a.packet_id)),
        PacketModel::PubRel(a) => rs::Packet::Pubrel(pid(a.packet_id)),
        PacketModel::PubComp(a) => rs::Packet::Pubcomp(pid(a.packet_id)),
        PacketModel::Subscribe(s) => {
            let mut subscribe = rs::Subscribe {
                pid: pid(s.packet_id),
                topics: Default::default(),
            };
            for (filter, options) in &s.subscriptions {
                let topic = rs::SubscribeTopic {
                    topic_path: filter.parse().expect("mqttrs holds 256-byte filters"),
                    qos: qos_to_rs(options.qos),
                };
                subscribe
                    .topics
                    .push(topic)
                    .expect("mqttrs holds 5 filters");
            }
            rs::Packet::Subscribe(subscribe)
        }
        PacketModel::SubAck(s) => {
            let mut suback = rs::Suback {
                pid: pid(s.packet_id),
                return_codes: Default::default(),
            };
            for &code in &s.reason_codes {
                suback
                    .return_codes
                    .push(suback_code_to_rs(code))
                    .expect("mqttrs holds 5 codes");
            }
            rs::Packet::Suback(suback)
        }
        PacketModel::Unsubscribe(u) => {
            let mut unsubscribe = rs::Unsubscribe {
                pid: pid(u.packet_id),
                topics: Default::default(),
            };
            for filter in &u.filters {
                unsubscribe
                    .topics
                    .push(filter.parse().expect("mqttrs holds 256-byte filters"))
                    .expect("mqttrs holds 5 filters");
            }
            rs::Packet::Unsubscribe(unsubscribe)
        }
        PacketModel::UnsubAck(u) => rs::Packet::Unsuback(pid(u.packet_id)),
        PacketModel::PingReq => rs::Packet::Pingreq,
        PacketModel::PingResp => rs::Packet::Pingresp,
        PacketModel::Disconnect(_) => rs::Packet::Disconnect,
        PacketModel::Auth(_) => panic!("AUTH does not exist in 3.1.1"),
    }
}

fn ack_model(pid: &rs::Pid) -> AckModel {
    AckModel {
        packet_id: packet_id(*pid),
        reason_code: ReasonCode::Success,
        properties: Vec::new(),
    }
}

/// An mqttrs packet as our model of a 3.1.1 packet (3.1 for an `MQIsdp` CONNECT).
fn from_mqttrs(packet: &rs::Packet<'_>) -> PacketModel {
    match packet {
        rs::Packet::Connect(c) => PacketModel::Connect(ConnectModel {
            protocol: match c.protocol {
                rs::Protocol::MQTT311 => V311,
                rs::Protocol::MQIsdp => ProtocolVersion::V3_1,
            },
            clean_start: c.clean_session,
            keep_alive: c.keep_alive,
            properties: Vec::new(),
            client_id: c.client_id.to_owned(),
            will: c.last_will.as_ref().map(|w| WillModel {
                qos: qos_from_rs(w.qos),
                retain: w.retain,
                properties: Vec::new(),
                topic: w.topic.to_owned(),
                payload: w.message.to_vec(),
            }),
            username: c.username.map(str::to_owned),
            password: c.password.map(<[u8]>::to_vec),
        }),
        rs::Packet::Connack(c) => PacketModel::ConnAck(common::ConnAckModel {
            session_present: c.session_present,
            reason_code: connack_code_from_rs(c.code),
            properties: Vec::new(),
        }),
        rs::Packet::Publish(p) => PacketModel::Publish(PublishModel {
            dup: p.dup,
            qos_pid: match p.qospid {
                rs::QosPid::AtMostOnce => QoSPid::AtMostOnce,
                rs::QosPid::AtLeastOnce(pid) => QoSPid::AtLeastOnce(packet_id(pid)),
                rs::QosPid::ExactlyOnce(pid) => QoSPid::ExactlyOnce(packet_id(pid)),
            },
            retain: p.retain,
            topic: p.topic_name.to_owned(),
            properties: Vec::new(),
            payload: p.payload.to_vec(),
        }),
        rs::Packet::Puback(pid) => PacketModel::PubAck(ack_model(pid)),
        rs::Packet::Pubrec(pid) => PacketModel::PubRec(ack_model(pid)),
        rs::Packet::Pubrel(pid) => PacketModel::PubRel(ack_model(pid)),
        rs::Packet::Pubcomp(pid) => PacketModel::PubComp(ack_model(pid)),
        rs::Packet::Subscribe(s) => PacketModel::Subscribe(SubscribeModel {
            packet_id: packet_id(s.pid),
            properties: Vec::new(),
            subscriptions: s
                .topics
                .iter()
                .map(|t| {
                    let options = SubscriptionOptions::qos(qos_from_rs(t.qos));
                    (t.topic_path.as_str().to_owned(), options)
                })
                .collect(),
        }),
        rs::Packet::Suback(s) => PacketModel::SubAck(SubAckModel {
            packet_id: packet_id(s.pid),
            properties: Vec::new(),
            reason_codes: s.return_codes.iter().map(suback_code_from_rs).collect(),
        }),
        rs::Packet::Unsubscribe(u) => PacketModel::Unsubscribe(UnsubscribeModel {
            packet_id: packet_id(u.pid),
            properties: Vec::new(),
            filters: u.topics.iter().map(|t| t.as_str().to_owned()).collect(),
        }),
        rs::Packet::Unsuback(pid) => PacketModel::UnsubAck(SubAckModel {
            packet_id: packet_id(*pid),
            properties: Vec::new(),
            reason_codes: Vec::new(),
        }),
        rs::Packet::Pingreq => PacketModel::PingReq,
        rs::Packet::Pingresp => PacketModel::PingResp,
        rs::Packet::Disconnect => PacketModel::Disconnect(TailModel {
            reason_code: ReasonCode::Success,
            properties: Vec::new(),
        }),
    }
}

/// Cuts a generated packet's lists to what mqttrs can hold without `std` (module docs).
fn fit_mqttrs(mut model: PacketModel) -> PacketModel {
    match &mut model {
        PacketModel::Subscribe(s) => s.subscriptions.truncate(MQTTRS_LIST_CAPACITY),
        PacketModel::SubAck(s) => s.reason_codes.truncate(MQTTRS_LIST_CAPACITY),
        PacketModel::Unsubscribe(u) => u.filters.truncate(MQTTRS_LIST_CAPACITY),
        _ => {}
    }
    model
}

// ---------------------------------------------------------------------------------------------
// The differential property
// ---------------------------------------------------------------------------------------------

fn check_against_mqttrs(model: &PacketModel) -> Result<(), TestCaseError> {
    let ours = model.encode(V311);

    // mqttrs writes the same packet into the same bytes.
    let theirs_packet = to_mqttrs(model);
    let mut theirs = vec![0; ours.len() + 16];
    let written = rs::encode_slice(&theirs_packet, &mut theirs);
    prop_assert_eq!(written, Ok(ours.len()));
    theirs.truncate(ours.len());
    prop_assert_eq!(&theirs, &ours, "mqttrs wrote different bytes");

    // mqttrs reads our bytes as the same packet.
    let read_by_mqttrs = rs::decode_slice(&ours);
    prop_assert!(
        matches!(&read_by_mqttrs, Ok(Some(_))),
        "mqttrs could not read ours: {:?}",
        read_by_mqttrs
    );
    if let Ok(Some(packet)) = &read_by_mqttrs {
        prop_assert_eq!(&from_mqttrs(packet), model);
    }

    // We read mqttrs's bytes as the same packet.
    let parts = model.parts();
    prop_assert_eq!(
        decode(&theirs, V311, MAX_PACKET_SIZE),
        Ok((parts.packet(), theirs.len()))
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(768))]

    #[test]
    fn same_bytes_and_meaning_as_mqttrs(model in arb_packet(V311).prop_map(fit_mqttrs)) {
        check_against_mqttrs(&model)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed cases: where mqttrs is wrong
// ---------------------------------------------------------------------------------------------

/// A length-prefixed field.
fn field(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A 3.1.1 CONNECT with the given connect flags, keep alive 60, then `fields` in order.
fn connect_bytes(flags: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut body = field(b"MQTT");
    body.extend_from_slice(&[4, flags, 0, 60]);
    for f in fields {
        body.extend_from_slice(&field(f));
    }
    frame(0x10, &body)
}

/// mqttrs 0.4 decodes `bytes` as a packet although 3.1.1 forbids it; we refuse it.
#[track_caller]
fn mqttrs_accepts_we_reject(bytes: &[u8], expected: DecodeError) {
    let theirs = rs::decode_slice(bytes);
    assert!(
        matches!(theirs, Ok(Some(_))),
        "mqttrs no longer accepts {bytes:02x?}: {theirs:?}"
    );
    assert_eq!(
        decode(bytes, V311, MAX_PACKET_SIZE).map(|(_, used)| used),
        Err(expected)
    );
}

#[test]
fn mqttrs_accepts_forbidden_publish() {
    // [MQTT-3.3.1-2]: DUP must be 0 on a QoS 0 PUBLISH.
    mqttrs_accepts_we_reject(&[0x38, 0x03, 0x00, 0x01, b'a'], DecodeError::DupWithQoS0);
    // [MQTT-3.3.2-2], [MQTT-4.7.1-1]: a topic name holds no wildcards.
    mqttrs_accepts_we_reject(
        &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+'],
        DecodeError::WildcardInTopicName,
    );
    mqttrs_accepts_we_reject(
        &[0x30, 0x03, 0x00, 0x01, b'#'],
        DecodeError::WildcardInTopicName,
    );
    // [MQTT-4.7.3-1]: a topic name is at least one character long.
    mqttrs_accepts_we_reject(&[0x30, 0x02, 0x00, 0x00], DecodeError::EmptyTopicName);
    // [MQTT-1.5.3-2] (3.1.1): no string holds U+0000.
    mqttrs_accepts_we_reject(
        &[0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b'],
        DecodeError::NullCharacter,
    );
}

#[test]
fn mqttrs_accepts_forbidden_connect_flags() {
    // [MQTT-3.1.2-3]: the reserved connect flag must be 0.
    mqttrs_accepts_we_reject(
        &connect_bytes(0b0000_0011, &[b"c"]),
        DecodeError::ReservedConnectFlag,
    );
    // [MQTT-3.1.2-13]: no Will QoS without the Will Flag.
    mqttrs_accepts_we_reject(
        &connect_bytes(0b0000_1010, &[b"c"]),
        DecodeError::InvalidWillFlags,
    );
    // [MQTT-3.1.2-15]: no Will Retain without the Will Flag.
    mqttrs_accepts_we_reject(
        &connect_bytes(0b0010_0010, &[b"c"]),
        DecodeError::InvalidWillFlags,
    );
    // [MQTT-3.1.2-22]: no password without a user name.
    mqttrs_accepts_we_reject(
        &connect_bytes(0b0100_0010, &[b"c", b"secret"]),
        DecodeError::PasswordWithoutUsername,
    );
    // [MQTT-3.1.3-11] with [MQTT-4.7.1-1]: the will topic is a topic name, so no wildcards.
    mqttrs_accepts_we_reject(
        &connect_bytes(0b0000_0110, &[b"c", b"a/#", b"bye"]),
        DecodeError::WildcardInTopicName,
    );
}

#[test]
fn mqttrs_accepts_forbidden_connack() {
    // §3.2.2.1 (3.1.1): bits 7-1 of the acknowledge flags are reserved and must be 0.
    mqttrs_accepts_we_reject(&[0x20, 0x02, 0x02, 0x00], DecodeError::InvalidConnAckFlags);
    // [MQTT-3.2.2-4]: Session Present is 0 with a non-zero return code.
    mqttrs_accepts_we_reject(&[0x20, 0x02, 0x01, 0x05], DecodeError::InvalidConnAckFlags);
}

#[test]
fn mqttrs_accepts_forbidden_subscriptions() {
    // [MQTT-3.8.3-3]: a SUBSCRIBE has at least one topic filter.
    mqttrs_accepts_we_reject(&[0x82, 0x02, 0x00, 0x01], DecodeError::NoTopicFilters);
    // [MQTT-3.10.3-2]: an UNSUBSCRIBE has at least one topic filter.
    mqttrs_accepts_we_reject(&[0xA2, 0x02, 0x00, 0x01], DecodeError::NoTopicFilters);
    // [MQTT-1.5.3-2]: a topic filter holds no U+0000.
    mqttrs_accepts_we_reject(
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00],
        DecodeError::NullCharacter,
    );
}

#[test]
fn mqttrs_ignores_the_frame_length() {
    // §3.12.1, §3.14.1: PINGREQ and DISCONNECT have a remaining length of 0; mqttrs skips
    // whatever body they claim.
    mqttrs_accepts_we_reject(&[0xC0, 0x01, 0x00], DecodeError::MalformedLength);
    mqttrs_accepts_we_reject(&[0xE0, 0x01, 0x00], DecodeError::MalformedLength);
    // §3.4.1: a 3.1.1 PUBACK's remaining length is 2; mqttrs ignores a third byte.
    mqttrs_accepts_we_reject(
        &[0x40, 0x03, 0x00, 0x05, 0x00],
        DecodeError::MalformedLength,
    );
    // §2.2.3: the remaining length bounds the packet. This PUBACK claims one byte, and
    // mqttrs reads its packet identifier out of the next packet in the buffer.
    let stream = [0x40, 0x01, 0x00, 0x05];
    assert_eq!(
        rs::decode_slice(&stream),
        Ok(Some(rs::Packet::Puback(rs::Pid::try_from(5).unwrap())))
    );
    assert_eq!(
        decode(&stream, V311, MAX_PACKET_SIZE),
        Err(DecodeError::MalformedLength)
    );
}

#[test]
fn mqttrs_panics_on_malformed_input() {
    // A CONNECT whose frame ends after an empty protocol name: mqttrs indexes past the end
    // of the buffer for the protocol level. We report the short frame.
    let bytes = [0x10, 0x02, 0x00, 0x00];
    assert!(catch_unwind(|| rs::decode_slice(&bytes)).is_err());
    assert_eq!(
        decode(&bytes, V311, MAX_PACKET_SIZE),
        Err(DecodeError::MalformedLength)
    );
    // A PUBLISH whose topic length runs past the frame: mqttrs reads the topic out of the
    // following bytes, then slices its payload backwards.
    let bytes = [0x30, 0x02, 0x00, 0x03, b'a', b'b', b'c'];
    assert!(catch_unwind(|| rs::decode_slice(&bytes)).is_err());
    assert_eq!(
        decode(&bytes, V311, MAX_PACKET_SIZE),
        Err(DecodeError::MalformedLength)
    );
}

#[test]
fn mqttrs_cannot_hold_valid_subscribe_packets() {
    // Valid 3.1.1: six topic filters. mqttrs without `std` keeps five and refuses the packet.
    let mut body = vec![0x00, 0x01];
    for filter in [b"a", b"b", b"c", b"d", b"e", b"f"] {
        body.extend_from_slice(&field(filter));
        body.push(0x00);
    }
    let bytes = frame(0x82, &body);
    assert_eq!(rs::decode_slice(&bytes), Err(rs::Error::InvalidLength));
    assert!(matches!(
        decode(&bytes, V311, MAX_PACKET_SIZE),
        Ok((Packet::Subscribe(s), _)) if s.subscriptions.len() == 6
    ));

    // Valid 3.1.1: a 300-byte topic filter. mqttrs without `std` panics copying it into a
    // 256-byte string.
    let filter = "f".repeat(300);
    let mut body = vec![0x00, 0x01];
    body.extend_from_slice(&field(filter.as_bytes()));
    body.push(0x01);
    let bytes = frame(0x82, &body);
    assert!(catch_unwind(|| rs::decode_slice(&bytes)).is_err());
    assert!(matches!(
        decode(&bytes, V311, MAX_PACKET_SIZE),
        Ok((Packet::Subscribe(s), _)) if s.subscriptions.iter().next().unwrap().filter == filter
    ));
}

#[test]
fn mqttrs_writes_a_broken_mqtt_3_1_connect() {
    // 3.1 §3.1: protocol name "MQIsdp" (6 bytes), level 3. mqttrs writes the length prefix 4,
    // the name "MQisdp" and level 4, and sizes the frame for a 4-byte name.
    let theirs = rs::Packet::Connect(rs::Connect {
        protocol: rs::Protocol::MQIsdp,
        keep_alive: 60,
        client_id: "c",
        clean_session: true,
        last_will: None,
        username: None,
        password: None,
    });
    let mut buf = [0; 64];
    let len = rs::encode_slice(&theirs, &mut buf).expect("mqttrs encodes");
    assert_eq!(&buf[2..11], b"\x00\x04MQisdp\x04");
    assert!(decode(&buf[..len], ProtocolVersion::V3_1, MAX_PACKET_SIZE).is_err());

    // The same CONNECT from us is a well-formed 3.1 CONNECT, which mqttrs itself reads back.
    let connect = Connect {
        protocol: ProtocolVersion::V3_1,
        clean_start: true,
        keep_alive: 60,
        properties: Default::default(),
        client_id: "c",
        will: None,
        username: None,
        password: None,
    };
    let ours = Packet::from(&connect);
    let bytes = common::encode(&ours, ProtocolVersion::V3_1);
    assert_eq!(&bytes[2..11], b"\x00\x06MQIsdp\x03");
    let read = rs::decode_slice(&bytes)
        .expect("mqttrs reads it")
        .expect("complete");
    let PacketModel::Connect(model) = from_mqttrs(&read) else {
        panic!("not a CONNECT: {read:?}");
    };
    assert_eq!(model.protocol, ProtocolVersion::V3_1);
    assert_eq!(model.client_id, "c");
}

#[test]
fn mqttrs_truncates_oversized_strings() {
    // §1.5.3: a string is at most 65 535 bytes. mqttrs writes a 65 536-byte topic with the
    // length prefix 0 (the length cut to 16 bits), so the frame says something else; we
    // refuse to encode it.
    let topic = "t".repeat(65_536);
    let theirs = rs::Packet::Publish(rs::Publish {
        dup: false,
        qospid: rs::QosPid::AtMostOnce,
        retain: false,
        topic_name: &topic,
        payload: b"",
    });
    let mut buf = vec![0; 70_000];
    let len = rs::encode_slice(&theirs, &mut buf).expect("mqttrs encodes");
    assert_eq!(&buf[4..6], &[0x00, 0x00], "length prefix");
    assert_eq!(
        decode(&buf[..len], V311, MAX_PACKET_SIZE),
        Err(DecodeError::EmptyTopicName)
    );

    let ours = Packet::Publish(Publish {
        dup: false,
        qos_pid: QoSPid::AtMostOnce,
        retain: false,
        topic: &topic,
        properties: Default::default(),
        payload: b"",
    });
    assert_eq!(ours.encode(V311, &mut buf), Err(EncodeError::TooLarge));
}
