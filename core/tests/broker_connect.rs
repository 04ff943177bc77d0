//! CONNECT and CONNACK (MQTT 3.1.1 §3.1–3.2, MQTT 5.0 §3.1–3.2), client identifier
//! takeover, authentication, connection limits, the CONNECT timeout and keep alive
//! (§3.1.2.10 / §3.1.2.10 of 5.0), driven through the simulation and checked as a client
//! sees them. Every test runs on both storage back-ends.
#![cfg(feature = "alloc")]

#[macro_use]
mod common_broker;

use common_broker::*;
use fulmar_core::broker::{BrokerStorage, Config, ConnectError};
use fulmar_core::codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use fulmar_core::sim::{Received, connect_packet};

storage_tests!(
    connack_accepts_both_versions,
    v3_empty_client_id_needs_clean_session,
    v5_empty_client_id_is_assigned,
    unsupported_protocol_level_is_refused_then_closed,
    v3_1_refused_when_disabled,
    first_packet_must_be_connect,
    second_connect_is_a_protocol_violation,
    client_id_takeover,
    client_id_takeover_keeps_persistent_session,
    session_present_v3,
    session_present_v5,
    auth_hook_refuses_bad_password,
    auth_hook_refuses_unauthorized_client,
    session_username_comes_from_the_hook,
    max_clients_refuses_with_quota_then_recovers,
    takeover_allowed_at_max_clients,
    max_connections_refuses_transport,
    connect_timeout_closes_silent_connection,
    keep_alive_closes_after_one_and_a_half_times,
    ping_keeps_connection_alive,
    server_keep_alive_announced_in_v5_connack,
    keep_alive_zero_never_times_out,
    will_refused_when_not_allowed_or_unsupported,
);

/// [MQTT-3.2.0-1]: the first packet from the server is CONNACK; 0x00 accepts. A 5.0
/// CONNACK carries the server's Receive Maximum and Topic Alias Maximum (§3.2.2.3).
fn connack_accepts_both_versions<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let v3 = sim.connect_with(&connect_packet(V3, "c3", true, 30));
    assert_eq!(
        sim.received(v3),
        [Received::ConnAck {
            session_present: false,
            code: ReasonCode::Success,
            assigned_client_id: None,
            server_keep_alive: None,
            receive_maximum: None,
            topic_alias_maximum: None,
        }]
    );
    let v5 = sim.connect_with(&connect_packet(V5, "c5", true, 30));
    assert_eq!(
        sim.received(v5),
        [Received::ConnAck {
            session_present: false,
            code: ReasonCode::Success,
            assigned_client_id: None,
            server_keep_alive: None,
            receive_maximum: Some(64),
            topic_alias_maximum: Some(16),
        }]
    );
    assert!(sim.is_connected(v3) && sim.is_connected(v5));
    assert_eq!(sim.broker.stats().clients_connected, 2);
}

/// 3.1.1 [MQTT-3.1.3-8]: an empty client identifier with CleanSession 0 gets return code
/// 0x02 (Identifier rejected) and the connection is closed; [MQTT-3.1.3-6],
/// [MQTT-3.1.3-7]: with CleanSession 1 the server assigns one and accepts.
fn v3_empty_client_id_needs_clean_session<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let refused = sim.connect_with(&connect_packet(V3, "", false, 30));
    let got = sim.received(refused);
    assert!(
        matches!(
            &got[..],
            [Received::ConnAck {
                session_present: false,
                code: ReasonCode::ClientIdentifierNotValid,
                ..
            }]
        ),
        "{got:?}"
    );
    assert!(!sim.is_connected(refused));
    assert_eq!(sim.broker.stats().sessions, 0);

    let (accepted, present) = connect_ok(&mut sim, &connect_packet(V3, "", true, 30));
    assert!(!present);
    // The assigned identifier works like any other: subscribe and receive.
    assert_eq!(sim.subscribe(accepted, "t", QOS0), ReasonCode::Success);
    let publisher = sim.connect(V3, "p", true, 30);
    sim.publish(publisher, "t", b"x", QOS0, false);
    assert_eq!(payloads(&sim.received(accepted)), ["x"]);
}

/// 5.0 [MQTT-3.1.3-6], [MQTT-3.2.2-16]: an empty client identifier is accepted (also with
/// Clean Start 0) and the CONNACK carries the Assigned Client Identifier, unique per client.
fn v5_empty_client_id_is_assigned<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let a = sim.connect_with(&connect_packet(V5, "", true, 30));
    let b = sim.connect_with(&connect_packet(V5, "", false, 30));
    let assigned = |got: Vec<Received>| match &got[..] {
        [
            Received::ConnAck {
                code: ReasonCode::Success,
                assigned_client_id: Some(id),
                ..
            },
        ] => id.clone(),
        _ => panic!("expected CONNACK with an assigned identifier, got {got:?}"),
    };
    let id_a = assigned(sim.received(a));
    let id_b = assigned(sim.received(b));
    assert!(!id_a.is_empty() && !id_b.is_empty());
    assert_ne!(id_a, id_b);
    assert!(sim.broker.session(&id_a).is_some());
    // A client given an identifier is not told one when it sends its own.
    let c = sim.connect_with(&connect_packet(V5, "own", true, 30));
    assert!(matches!(
        &sim.received(c)[..],
        [Received::ConnAck {
            assigned_client_id: None,
            ..
        }]
    ));
}

/// 3.1.1 [MQTT-3.1.2-2]: an unsupported protocol level gets CONNACK return code 0x01 and
/// the connection is closed; 5.0 [MQTT-3.1.2-2]: CONNACK 0x84, then close.
fn unsupported_protocol_level_is_refused_then_closed<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    // "MQTT" with level 3 (3.1 used "MQIsdp"): answered in the 3.1.1 format.
    let old = sim.open(V3).unwrap();
    sim.send_bytes(old, &raw_connect(b"MQTT", 3, "x"));
    let got = sim.received(old);
    assert!(
        matches!(
            &got[..],
            [Received::ConnAck {
                session_present: false,
                code: ReasonCode::UnsupportedProtocolVersion,
                ..
            }]
        ),
        "{got:?}"
    );
    assert!(!sim.is_connected(old));
    // Level 6, newer than 5.0: answered in the 5.0 format with 0x84.
    let new = sim.open(V5).unwrap();
    sim.send_bytes(new, &raw_connect(b"MQTT", 6, "y"));
    let got = sim.received(new);
    assert!(
        matches!(
            &got[..],
            [Received::ConnAck {
                code: ReasonCode::UnsupportedProtocolVersion,
                ..
            }]
        ),
        "{got:?}"
    );
    assert!(!sim.is_connected(new));
    assert_eq!(sim.broker.stats().sessions, 0);
}

/// A broker configured without MQTT 3.1 answers an `MQIsdp` CONNECT with return code 1.
fn v3_1_refused_when_disabled<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        allow_v3_1: false,
        ..Config::default()
    });
    let c = sim.connect_with(&connect_packet(ProtocolVersion::V3_1, "old", true, 30));
    assert!(matches!(
        &sim.received(c)[..],
        [Received::ConnAck {
            code: ReasonCode::UnsupportedProtocolVersion,
            ..
        }]
    ));
    assert!(!sim.is_connected(c));
    // And accepts it by default.
    let mut default = common_broker::sim::<S>(Config::default());
    default.connect(ProtocolVersion::V3_1, "old", true, 30);
}

/// [MQTT-3.1.0-1]: the first packet must be CONNECT; the server closes a connection that
/// starts otherwise, without answering (5.0 §4.13: no CONNACK/DISCONNECT before CONNECT).
fn first_packet_must_be_connect<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let c = sim.open(version).unwrap();
        sim.send(c, &Packet::PingReq);
        assert_eq!(sim.received(c), []);
        assert!(!sim.is_connected(c));

        let c = sim.open(version).unwrap();
        sim.publish(c, "t", b"x", QOS1, false);
        assert_eq!(sim.received(c), []);
        assert!(!sim.is_connected(c));
        assert_eq!(sim.broker.stats().sessions, 0);
    }
}

/// [MQTT-3.1.0-2]: a second CONNECT is a protocol violation and the connection is closed;
/// a 5.0 client is told with DISCONNECT 0x82 (§4.13.1).
fn second_connect_is_a_protocol_violation<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let c = sim.connect(version, "twice", true, 30);
        sim.send(
            c,
            &Packet::from(&connect_packet(version, "twice", true, 30)),
        );
        assert_closed_with(&mut sim, c, version, ReasonCode::ProtocolError);
        assert_eq!(sim.broker.stats().clients_connected, 0);
    }
}

/// [MQTT-3.1.4-2] (3.1.1), [MQTT-3.1.4-3] (5.0): a second connection with a client
/// identifier already connected takes over: the old one is closed (5.0: after DISCONNECT
/// 0x8E Session taken over) and the new one is served.
fn client_id_takeover<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let old = sim.connect(version, "dev", true, 30);
        let new = sim.connect(version, "dev", true, 30);
        assert_closed_with(&mut sim, old, version, ReasonCode::SessionTakenOver);
        assert!(sim.is_connected(new));
        assert_eq!(sim.subscribe(new, "t", QOS1), ReasonCode::GrantedQoS1);
        let publisher = sim.connect(version, "pub", true, 30);
        sim.publish(publisher, "t", b"hello", QOS1, false);
        assert_eq!(payloads(&sim.received(new)), ["hello"]);
        assert_eq!(sim.received(old), []);
        assert_eq!(sim.broker.stats().clients_connected, 2);
    }
}

/// [MQTT-3.1.4-3], [MQTT-3.2.2-3]: a takeover by a client resuming its session keeps the
/// session: subscriptions survive and Session Present is 1.
fn client_id_takeover_keeps_persistent_session<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let (old, _, _) = connect_persistent(&mut sim, version, "dev", false);
        sim.subscribe(old, "t", QOS1);
        let (new, present, _) = connect_persistent(&mut sim, version, "dev", true);
        assert!(present, "{version}: session present after takeover");
        assert!(!sim.is_connected(old));
        let publisher = sim.connect(version, "pub", true, 30);
        sim.publish(publisher, "t", b"still", QOS1, false);
        assert_eq!(payloads(&sim.received(new)), ["still"]);
    }
}

/// 3.1.1 [MQTT-3.2.2-1]: CleanSession 1 → Session Present 0; [MQTT-3.2.2-2]: CleanSession 0
/// and a stored session → 1; [MQTT-3.2.2-3]: none stored → 0. [MQTT-3.1.2-6]: a clean
/// session discards the previous one.
fn session_present_v3<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let (c, present) = connect_ok(&mut sim, &connect_packet(V3, "s", false, 0));
    assert!(!present);
    sim.subscribe(c, "t", QOS1);
    sim.disconnect(c, ReasonCode::Success);
    let (c, present) = connect_ok(&mut sim, &connect_packet(V3, "s", false, 0));
    assert!(present);
    sim.disconnect(c, ReasonCode::Success);
    let (c, present) = connect_ok(&mut sim, &connect_packet(V3, "s", true, 0));
    assert!(!present);
    // The subscription went with the discarded session.
    let publisher = sim.connect(V3, "p", true, 0);
    sim.publish(publisher, "t", b"x", QOS1, false);
    assert_eq!(sim.received(c), []);
    sim.disconnect(c, ReasonCode::Success);
    // A clean session is not kept after it ends either.
    let (_, present) = connect_ok(&mut sim, &connect_packet(V3, "s", false, 0));
    assert!(!present);
}

/// 5.0 [MQTT-3.2.2-2]: Clean Start 1 → Session Present 0; [MQTT-3.2.2-3]: Clean Start 0 and
/// a session → 1. [MQTT-3.1.2-23]: a Session Expiry Interval of 0 (absent) ends the session
/// with the connection.
fn session_present_v5<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let (c, present, _) = connect_v5_persistent(&mut sim, "s", true, 60);
    assert!(!present);
    sim.disconnect(c, ReasonCode::Success);
    let (c, present, _) = connect_v5_persistent(&mut sim, "s", false, 60);
    assert!(present);
    sim.disconnect(c, ReasonCode::Success);
    let (c, present, _) = connect_v5_persistent(&mut sim, "s", true, 60);
    assert!(!present, "Clean Start 1 discards the session");
    sim.disconnect(c, ReasonCode::Success);
    // No Session Expiry Interval: the session ends with the connection.
    let (c, present) = connect_ok(&mut sim, &connect_packet(V5, "e", false, 0));
    assert!(!present);
    sim.disconnect(c, ReasonCode::Success);
    let (_, present) = connect_ok(&mut sim, &connect_packet(V5, "e", false, 0));
    assert!(!present);
}

/// §3.1.4 (both versions): the server may refuse a client after authentication; a bad
/// password gets CONNACK 0x86 (5.0 §3.2.2.2) / return code 4 (3.1.1 §3.2.2.3) and the
/// connection is closed (3.1.1 [MQTT-3.2.2-5], 5.0 [MQTT-3.2.2-7]), leaving no session.
fn auth_hook_refuses_bad_password<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim_with_hooks::<S, _>(Config::default(), Guard);
        let mut bad = connect_packet(version, "u", true, 30);
        bad.username = Some("user");
        bad.password = Some(b"guess");
        let c = sim.connect_with(&bad);
        let got = sim.received(c);
        assert!(
            matches!(
                &got[..],
                [Received::ConnAck {
                    session_present: false,
                    code: ReasonCode::BadUserNameOrPassword,
                    ..
                }]
            ),
            "{version}: {got:?}"
        );
        assert!(!sim.is_connected(c));
        assert_eq!(sim.broker.stats().sessions, 0);

        let mut good = bad;
        good.password = Some(b"secret");
        connect_ok(&mut sim, &good);
    }
}

/// A hook refusing with 0x87 Not authorized: return code 5 in 3.1.1.
fn auth_hook_refuses_unauthorized_client<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim_with_hooks::<S, _>(Config::default(), Guard);
        let c = sim.connect_with(&connect_packet(version, "banned-1", true, 30));
        assert!(matches!(
            &sim.received(c)[..],
            [Received::ConnAck {
                code: ReasonCode::NotAuthorized,
                ..
            }]
        ));
        assert!(!sim.is_connected(c));
    }
}

/// Hooks that run every session under the user name `device-7` (as a TLS host does with
/// a client certificate's identity) and let only `device-7` subscribe; a CONNECT user name
/// of `long` becomes one longer than any fixed storage holds.
#[derive(Debug, Default)]
struct Renamer;

impl fulmar_core::broker::Hooks for Renamer {
    fn session_username<'r>(
        &'r mut self,
        request: &fulmar_core::broker::ConnectRequest<'r>,
    ) -> Option<&'r str> {
        match request.username {
            Some("long") => Some(LONG_NAME),
            _ => Some("device-7"),
        }
    }

    fn authorize_subscribe(
        &mut self,
        client: &fulmar_core::broker::ClientInfo<'_>,
        _filter: &str,
        _qos: QoS,
    ) -> bool {
        client.username == Some("device-7")
    }
}

/// Longer than the `text` capacity of the fixed test storage.
const LONG_NAME: &str = "a-user-name-longer-than-the-sixty-four-bytes-of-text-storage-here-ok";

/// [`Hooks::session_username`]: authorization sees the name the hook gave, not the one in
/// CONNECT (or none); a name the storage cannot hold is refused with 0x86, never dropped
/// (which would make the client anonymous).
fn session_username_comes_from_the_hook<S: BrokerStorage>() {
    let mut sim = sim_with_hooks::<S, _>(Config::default(), Renamer);
    for (version, id, username) in [(V3, "a", None), (V5, "b", Some("someone-else"))] {
        let mut packet = connect_packet(version, id, true, 30);
        packet.username = username;
        let c = sim.connect_with(&packet);
        assert!(sim.is_connected(c), "{version}");
        assert_eq!(
            sim.subscribe(c, "t", QOS0),
            ReasonCode::Success,
            "{version}"
        );
    }
    let mut long = connect_packet(V5, "c", true, 30);
    long.username = Some("long");
    let c = sim.connect_with(&long);
    if sim.is_connected(c) {
        // Growable storage holds any name.
        assert_eq!(sim.subscribe(c, "t", QOS0), ReasonCode::NotAuthorized);
    } else {
        assert!(matches!(
            &sim.received(c)[..],
            [Received::ConnAck {
                code: ReasonCode::BadUserNameOrPassword,
                ..
            }]
        ));
    }
}

/// `Config::max_clients`: one client more gets CONNACK 0x97 Quota exceeded (5.0) / return
/// code 3 Server unavailable (3.1.1) and is closed; the connected ones keep working, and a
/// place freed is usable again.
fn max_clients_refuses_with_quota_then_recovers<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        max_clients: 2,
        ..Config::default()
    });
    let a = sim.connect(V5, "a", true, 30);
    let b = sim.connect(V3, "b", true, 30);
    for (version, id, code) in [
        (V5, "c5", ReasonCode::QuotaExceeded),
        (V3, "c3", ReasonCode::ServerUnavailable),
    ] {
        let c = sim.connect_with(&connect_packet(version, id, true, 30));
        let got = sim.received(c);
        assert!(
            matches!(&got[..], [Received::ConnAck { code: got_code, session_present: false, .. }] if *got_code == code),
            "{version}: {got:?}"
        );
        assert!(!sim.is_connected(c));
    }
    sim.subscribe(b, "t", QOS1);
    sim.publish(a, "t", b"fine", QOS1, false);
    assert_eq!(payloads(&sim.received(b)), ["fine"]);
    sim.disconnect(a, ReasonCode::Success);
    sim.connect(V5, "c", true, 30);
}

/// A client reconnecting with its own identifier while the broker is at `max_clients`
/// takes over its old connection (which frees its place) instead of being refused.
fn takeover_allowed_at_max_clients<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        max_clients: 1,
        ..Config::default()
    });
    let old = sim.connect(V5, "only", true, 30);
    let new = sim.connect(V5, "only", true, 30);
    assert!(!sim.is_connected(old));
    assert!(sim.is_connected(new));
}

/// `Config::max_connections`: `handle_connect` refuses a transport connection beyond the
/// limit before any byte is read; others are unaffected and a freed one is reusable.
fn max_connections_refuses_transport<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        max_connections: 2,
        ..Config::default()
    });
    let a = sim.connect(V5, "a", true, 30);
    let pending = sim.open(V5).unwrap();
    assert_eq!(
        sim.broker.handle_connect(sim.now()),
        Err(ConnectError::TooManyConnections)
    );
    assert!(sim.open(V3).is_none());
    assert_eq!(sim.subscribe(a, "t", QOS0), ReasonCode::Success);
    sim.drop_connection(pending);
    let b = sim.connect(V3, "b", true, 30);
    sim.publish(b, "t", b"ok", QOS0, false);
    assert_eq!(payloads(&sim.received(a)), ["ok"]);
}

/// `Config::connect_timeout`: a connection that sends no CONNECT is closed without an
/// answer (5.0 §4.13: no CONNACK before CONNECT); connected clients are untouched.
fn connect_timeout_closes_silent_connection<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        connect_timeout: secs(5),
        ..Config::default()
    });
    let ok = sim.connect(V5, "ok", true, 0);
    let silent = sim.open(V5).unwrap();
    sim.advance(secs(4));
    assert!(sim.is_connected(silent));
    sim.advance(secs(1));
    assert!(!sim.is_connected(silent));
    assert_eq!(sim.received(silent), []);
    assert!(sim.is_connected(ok));
    // A CONNECT that arrives in time disarms the timeout.
    let late = sim.open(V3).unwrap();
    sim.advance(secs(4));
    sim.send(late, &Packet::from(&connect_packet(V3, "late", true, 0)));
    sim.advance(secs(60));
    assert!(sim.is_connected(late));
}

/// [MQTT-3.1.2-24] (3.1.1) / [MQTT-3.1.2-22] (5.0): without a packet for one and a half
/// times the Keep Alive, the server closes the connection; 5.0 clients get DISCONNECT 0x8D
/// Keep Alive timeout (§4.13.1).
fn keep_alive_closes_after_one_and_a_half_times<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let c = sim.connect(version, "ka", true, 10);
        sim.advance(secs(14));
        assert!(
            sim.is_connected(c),
            "{version}: closed before 1.5 x keep alive"
        );
        sim.advance(secs(1));
        assert_closed_with(&mut sim, c, version, ReasonCode::KeepAliveTimeout);
    }
}

/// §3.1.2.10: any control packet (PINGREQ here, answered by PINGRESP, [MQTT-3.12.4-1])
/// restarts the keep-alive timer.
fn ping_keeps_connection_alive<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let c = sim.connect(version, "ka", true, 10);
        for _ in 0..10 {
            sim.advance(secs(10));
            sim.send(c, &Packet::PingReq);
            assert_eq!(sim.received(c), [Received::PingResp]);
        }
        assert!(sim.is_connected(c));
        sim.advance(secs(15));
        assert!(!sim.is_connected(c));
    }
}

/// 5.0 [MQTT-3.2.2-21], [MQTT-3.1.2-21]: a Server Keep Alive in CONNACK replaces the
/// client's value and is then enforced. `Config::max_keep_alive` caps a larger or zero
/// keep alive. A 3.1.1 client cannot be told and keeps its own.
fn server_keep_alive_announced_in_v5_connack<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        max_keep_alive: 20,
        ..Config::default()
    });
    for asked in [0u16, 100] {
        let c = sim.connect_with(&connect_packet(V5, "big", true, asked));
        let got = sim.received(c);
        assert!(
            matches!(
                &got[..],
                [Received::ConnAck {
                    code: ReasonCode::Success,
                    server_keep_alive: Some(20),
                    ..
                }]
            ),
            "asked {asked}: {got:?}"
        );
        sim.advance(secs(29));
        assert!(sim.is_connected(c));
        sim.advance(secs(1));
        assert_closed_with(&mut sim, c, V5, ReasonCode::KeepAliveTimeout);
    }
    // Within the maximum: no Server Keep Alive.
    let c = sim.connect_with(&connect_packet(V5, "small", true, 10));
    assert!(matches!(
        &sim.received(c)[..],
        [Received::ConnAck {
            server_keep_alive: None,
            ..
        }]
    ));
}

/// §3.1.2.10 (3.1.1 and 5.0): Keep Alive 0 turns the mechanism off.
fn keep_alive_zero_never_times_out<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let c = sim.connect(V3, "idle", true, 0);
    let d = sim.connect_with(&connect_packet(V5, "idle5", true, 0));
    sim.advance(secs(24 * 3600));
    assert!(sim.is_connected(c) && sim.is_connected(d));
}

/// A will the broker cannot honour refuses the connection, leaving nothing behind:
/// 5.0 [MQTT-3.2.2-12] Will QoS above Maximum QoS → CONNACK 0x9B; [MQTT-3.2.2-13] Will
/// Retain without Retain Available → 0x9A; a will topic the client may not publish to →
/// 0x87 (3.1.1: return code 5 Not authorized).
fn will_refused_when_not_allowed_or_unsupported<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        max_qos: QOS1,
        retain_available: false,
        ..Config::default()
    });
    for (will, code) in [
        (
            fulmar_core::sim::will("w", b"x", QOS2, false),
            ReasonCode::QoSNotSupported,
        ),
        (
            fulmar_core::sim::will("w", b"x", QOS0, true),
            ReasonCode::RetainNotSupported,
        ),
    ] {
        let c = sim.connect_with(&connect(V5, "c", true, 0, &[], Some(will)));
        let got = sim.received(c);
        assert!(
            matches!(&got[..], [Received::ConnAck { code: got_code, .. }] if *got_code == code),
            "{got:?}"
        );
        assert!(!sim.is_connected(c));
    }
    assert_eq!(sim.broker.stats().sessions, 0);

    for version in [V3, V5] {
        let mut sim = sim_with_hooks::<S, _>(Config::default(), Guard);
        let will = fulmar_core::sim::will("private/w", b"x", QOS0, false);
        let c = sim.connect_with(&connect(version, "c", true, 0, &[], Some(will)));
        assert!(matches!(
            &sim.received(c)[..],
            [Received::ConnAck {
                code: ReasonCode::NotAuthorized,
                ..
            }]
        ));
        assert!(!sim.is_connected(c));
    }
}
