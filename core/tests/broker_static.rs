//! A fixed-capacity broker built at compile time in a `static`, the way a firmware holds
//! it: `Broker::unconfigured` accepts nobody until `Broker::configure` gives it a
//! configuration and a seed, and a broker in use refuses to be reconfigured.

use std::sync::Mutex;

use fulmar_core::broker::{AllowAll, Broker, Config, ConnectError, Event};
use fulmar_core::codec::{Packet, ProtocolVersion, ReasonCode, decode};
use fulmar_core::time::Instant;

fulmar_core::fixed_broker_storage! {
    /// Two clients.
    struct Small {
        connections: 2, sessions: 2, subscriptions: 4, topic_nodes: 8,
        share_groups: 1, text: 16, messages: 4, queue: 4, controls: 4,
        inbound: 2, aliases: 2, retained: 2, blob_bytes: 512, slots: 16,
        pending: 4, auth_scratch: 64,
    }
}

/// Built by the compiler: no stack copy, no run-time constructor.
static BROKER: Mutex<Broker<Small>> = Mutex::new(Broker::unconfigured(AllowAll));

/// CONNECT, MQTT 3.1.1, clean session, keep alive 60 s, client id "a".
const CONNECT: [u8; 15] = [
    0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'a',
];

fn config() -> Config {
    Config {
        max_connections: 2,
        max_clients: 2,
        max_sessions: 2,
        max_packet_size: 256,
        ..Config::default()
    }
}

#[test]
fn static_broker_serves_once_configured_and_refuses_reconfiguration_in_use() {
    let mut broker = BROKER.lock().unwrap();
    let now = Instant::ZERO;
    assert_eq!(
        broker.handle_connect(now),
        Err(ConnectError::TooManyConnections),
        "an unconfigured broker accepts no connection"
    );
    assert!(broker.configure(config(), 0x5EED));
    assert_eq!(broker.config().max_connections, 2);

    let conn = broker.handle_connect(now).unwrap();
    assert_eq!(broker.handle_bytes(conn, &CONNECT, now), CONNECT.len());
    assert_eq!(broker.poll_event(), Some(Event::Connected(conn)));
    assert_eq!(broker.poll_event(), Some(Event::Transmit(conn)));
    let mut out = [0u8; 64];
    let n = broker.poll_transmit(conn, &mut out, now).unwrap();
    let (packet, _) = decode(&out[..n], ProtocolVersion::V3_1_1, 64).unwrap();
    let Packet::ConnAck(ack) = packet else {
        panic!("expected CONNACK, got {packet:?}")
    };
    assert_eq!(ack.reason_code, ReasonCode::Success);

    // A connection and a session exist: the seed keys them, so it cannot change now.
    assert!(!broker.configure(Config::default(), 1));
    assert_eq!(broker.config().max_connections, 2);
}
