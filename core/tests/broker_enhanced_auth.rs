//! MQTT 5.0 enhanced authentication (§4.12) through the `Hooks` trait: a challenge and
//! response before CONNACK, refusals, and re-authentication of a connected client.
#![cfg(feature = "alloc")]

use fulmar_core::broker::{AuthOutcome, AuthStep, Broker, Config, Growable, Hooks};
use fulmar_core::codec::{Auth, List, Packet, Property, ProtocolVersion, QoS, ReasonCode};
use fulmar_core::sim::{Received, Sim, connect_packet};

/// "CHALLENGE": the client sends its name, the broker answers a nonce, the client must
/// send the nonce back reversed.
struct Challenge;

impl Hooks for Challenge {
    fn authenticate_enhanced(&mut self, step: &AuthStep<'_>, response: &mut [u8]) -> AuthOutcome {
        if step.method != "CHALLENGE" {
            return AuthOutcome::Fail(ReasonCode::BadAuthenticationMethod);
        }
        match step.data {
            Some(b"nonce-4711") => AuthOutcome::Fail(ReasonCode::NotAuthorized),
            Some(b"1174-ecnon") => {
                response[..2].copy_from_slice(b"ok");
                AuthOutcome::Success { data_len: 2 }
            }
            _ => {
                response[..10].copy_from_slice(b"nonce-4711");
                AuthOutcome::Continue { data_len: 10 }
            }
        }
    }
}

fn sim() -> Sim<Growable, Challenge> {
    Sim::with_broker(Broker::with_hooks(Config::default(), 1, Challenge))
}

fn auth_packet<'a>(code: ReasonCode, props: &'a [Property<'a>]) -> Packet<'a> {
    Packet::Auth(Auth {
        reason_code: code,
        properties: List::new(props),
    })
}

#[test]
fn challenge_response_then_connack_with_method_and_data() {
    let mut sim = sim();
    let props = [
        Property::AuthenticationMethod("CHALLENGE"),
        Property::AuthenticationData(b"alice"),
    ];
    let mut connect = connect_packet(ProtocolVersion::V5, "alice", true, 0);
    connect.properties = List::new(&props);
    let c = sim.connect_with(&connect);
    // §4.12: the server answers AUTH 0x18 (Continue authentication), not CONNACK yet.
    assert_eq!(
        sim.received(c),
        [Received::Auth(
            ReasonCode::ContinueAuthentication,
            Some(b"nonce-4711".to_vec())
        )]
    );
    // Nothing else is allowed before the exchange ends: a PUBLISH would close; AUTH continues.
    let reply = [
        Property::AuthenticationMethod("CHALLENGE"),
        Property::AuthenticationData(b"1174-ecnon"),
    ];
    sim.send(c, &auth_packet(ReasonCode::ContinueAuthentication, &reply));
    let got = sim.received(c);
    assert!(
        matches!(
            &got[..],
            [Received::ConnAck {
                code: ReasonCode::Success,
                ..
            }]
        ),
        "{got:?}"
    );
    assert!(sim.is_connected(c));
    // The session works like any other.
    assert_eq!(
        sim.subscribe(c, "t", QoS::AtLeastOnce),
        ReasonCode::GrantedQoS1
    );
}

#[test]
fn wrong_response_and_unknown_method_are_refused_in_connack() {
    let mut sim = sim();
    let props = [Property::AuthenticationMethod("CHALLENGE")];
    let mut connect = connect_packet(ProtocolVersion::V5, "mallory", true, 0);
    connect.properties = List::new(&props);
    let c = sim.connect_with(&connect);
    sim.received(c);
    let reply = [
        Property::AuthenticationMethod("CHALLENGE"),
        Property::AuthenticationData(b"nonce-4711"),
    ];
    sim.send(c, &auth_packet(ReasonCode::ContinueAuthentication, &reply));
    let got = sim.received(c);
    assert!(
        matches!(
            &got[..],
            [Received::ConnAck {
                code: ReasonCode::NotAuthorized,
                ..
            }]
        ),
        "{got:?}"
    );
    assert!(!sim.is_connected(c));

    let props = [Property::AuthenticationMethod("SCRAM-SHA-1")];
    let mut connect = connect_packet(ProtocolVersion::V5, "bob", true, 0);
    connect.properties = List::new(&props);
    let c = sim.connect_with(&connect);
    let got = sim.received(c);
    assert!(
        matches!(
            &got[..],
            [Received::ConnAck {
                code: ReasonCode::BadAuthenticationMethod,
                ..
            }]
        ),
        "{got:?}"
    );
}

#[test]
fn other_packets_during_the_exchange_close_the_connection() {
    let mut sim = sim();
    let props = [Property::AuthenticationMethod("CHALLENGE")];
    let mut connect = connect_packet(ProtocolVersion::V5, "eve", true, 0);
    connect.properties = List::new(&props);
    let c = sim.connect_with(&connect);
    sim.received(c);
    sim.publish(c, "t", b"x", QoS::AtMostOnce, false);
    assert!(!sim.is_connected(c));
    assert_eq!(sim.closed_reason(c), Some(ReasonCode::ProtocolError));
}

#[test]
fn reauthentication_of_a_connected_client() {
    let mut sim = sim();
    let props = [
        Property::AuthenticationMethod("CHALLENGE"),
        Property::AuthenticationData(b"1174-ecnon"),
    ];
    let mut connect = connect_packet(ProtocolVersion::V5, "carol", true, 0);
    connect.properties = List::new(&props);
    let c = sim.connect_with(&connect);
    assert!(matches!(
        &sim.received(c)[..],
        [Received::ConnAck {
            code: ReasonCode::Success,
            ..
        }]
    ));
    // §4.12.1: AUTH 0x19 starts re-authentication with the same method.
    let start = [Property::AuthenticationMethod("CHALLENGE")];
    sim.send(c, &auth_packet(ReasonCode::ReAuthenticate, &start));
    assert_eq!(
        sim.received(c),
        [Received::Auth(
            ReasonCode::ContinueAuthentication,
            Some(b"nonce-4711".to_vec())
        )]
    );
    let reply = [
        Property::AuthenticationMethod("CHALLENGE"),
        Property::AuthenticationData(b"1174-ecnon"),
    ];
    sim.send(c, &auth_packet(ReasonCode::ContinueAuthentication, &reply));
    assert_eq!(
        sim.received(c),
        [Received::Auth(ReasonCode::Success, Some(b"ok".to_vec()))]
    );
    assert!(sim.is_connected(c));
    // A different method is a protocol error ([MQTT-4.12.1-1]).
    let other = [Property::AuthenticationMethod("OTHER")];
    sim.send(c, &auth_packet(ReasonCode::ReAuthenticate, &other));
    assert!(!sim.is_connected(c));
    assert_eq!(sim.closed_reason(c), Some(ReasonCode::ProtocolError));
}

#[test]
fn auth_without_a_method_in_connect_is_a_protocol_error() {
    let mut sim = Sim::<Growable>::new(Config::default());
    let c = sim.connect(ProtocolVersion::V5, "plain", true, 0);
    sim.send(c, &auth_packet(ReasonCode::ReAuthenticate, &[]));
    assert_eq!(sim.closed_reason(c), Some(ReasonCode::ProtocolError));
    let _ = Received::PingResp;
}
