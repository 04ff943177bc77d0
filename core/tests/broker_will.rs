//! Will messages (MQTT 3.1.1 §3.1.2.5, MQTT 5.0 §3.1.2.5 and §3.1.3.2): published when a
//! connection ends without a normal DISCONNECT (network loss, keep-alive timeout, protocol
//! error, takeover, 5.0 DISCONNECT 0x04), not after a normal one; the 5.0 Will Delay
//! Interval; Will Retain and Will QoS. Every test runs on both storage back-ends.
#![cfg(feature = "alloc")]

#[macro_use]
mod common_broker;

use common_broker::*;
use fulmar_core::broker::{BrokerStorage, Config};
use fulmar_core::codec::{Packet, Property, ProtocolVersion, ReasonCode, Will};
use fulmar_core::sim::{ClientHandle, Received, Sim, will};

storage_tests!(
    will_on_abrupt_close,
    will_on_keep_alive_timeout,
    will_on_protocol_error,
    no_will_on_normal_disconnect,
    will_on_v5_disconnect_with_will_message,
    will_on_takeover,
    will_delay_cancelled_by_reconnect,
    will_delay_cancelled_by_clean_start_reconnect,
    will_published_after_delay,
    will_delay_bounded_by_session_expiry,
    will_retain,
    will_qos_and_subscription_maximum,
    will_properties_forwarded_without_delay,
);

// 5.0 §3.1.3.2.4: the will's lifetime is "sent as the Publication Expiry Interval when
// the Server publishes the Will Message", so it counts from publication, not from CONNECT.
mod will_expiry {
    #[test]
    fn will_message_expiry_counts_from_publication_growable() {
        super::will_message_expiry_counts_from_publication::<super::Growable>();
    }

    #[test]
    fn will_message_expiry_counts_from_publication_fixed() {
        super::will_message_expiry_counts_from_publication::<super::Fixed>();
    }
}

fn will_message_expiry_counts_from_publication<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let w = watcher(&mut sim);
    let props = [Property::MessageExpiryInterval(60)];
    let c = connect_with_will(
        &mut sim,
        V5,
        "c",
        0,
        &[],
        will_with("will/c", b"bye", QOS1, false, &props),
    );
    // Connected for two hours, then lost.
    sim.advance(secs(7200));
    sim.drop_connection(c);
    let got = sim.received(w);
    assert!(
        matches!(
            &got[..],
            [Received::Publish {
                message_expiry: Some(60),
                ..
            }]
        ),
        "{got:?}"
    );
}

/// A watcher subscribed to `will/#` at QoS 2.
fn watcher<S: BrokerStorage>(sim: &mut Sim<S>) -> ClientHandle {
    let w = sim.connect(V5, "watcher", true, 0);
    sim.subscribe(w, "will/#", QOS2);
    w
}

/// Connects `id` with `will` and, for 5.0, connect `props`.
fn connect_with_will<S: BrokerStorage>(
    sim: &mut Sim<S>,
    version: ProtocolVersion,
    id: &str,
    keep_alive: u16,
    props: &[Property<'_>],
    will: Will<'_>,
) -> ClientHandle {
    connect_ok(
        sim,
        &connect(version, id, true, keep_alive, props, Some(will)),
    )
    .0
}

/// 3.1.1 [MQTT-3.1.2-8] / 5.0 [MQTT-3.1.2-8]: a connection closed without DISCONNECT (I/O
/// error, network failure) publishes the will.
fn will_on_abrupt_close<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let w = watcher(&mut sim);
        let c = connect_with_will(
            &mut sim,
            version,
            "c",
            0,
            &[],
            will("will/c", b"gone", QOS1, false),
        );
        sim.drop_connection(c);
        let got = messages(&sim.received(w));
        assert_eq!(got.len(), 1, "{version}");
        assert_eq!(
            (got[0].topic.as_str(), got[0].payload.as_slice()),
            ("will/c", &b"gone"[..])
        );
        assert_eq!(got[0].qos, QOS1);
    }
}

/// 3.1.1 §3.1.2.5 / 5.0 §3.1.2.5: "The Client fails to communicate within the Keep Alive
/// time" publishes the will (after 1.5 × Keep Alive, [MQTT-3.1.2-24] / [MQTT-3.1.2-22]).
fn will_on_keep_alive_timeout<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let w = watcher(&mut sim);
        connect_with_will(
            &mut sim,
            version,
            "c",
            10,
            &[],
            will("will/c", b"silent", QOS0, false),
        );
        sim.advance(secs(14));
        assert_eq!(sim.received(w), []);
        sim.advance(secs(1));
        assert_eq!(payloads(&sim.received(w)), ["silent"], "{version}");
    }
}

/// 3.1.1 §3.1.2.5: "The Server closes the Network Connection because of a protocol error"
/// publishes the will; 5.0 §3.1.2.5: so does any close without DISCONNECT 0x00.
fn will_on_protocol_error<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let w = watcher(&mut sim);
        let c = connect_with_will(
            &mut sim,
            version,
            "c",
            0,
            &[],
            will("will/c", b"bad", QOS0, false),
        );
        sim.send(c, &Packet::PingResp);
        assert!(!sim.is_connected(c));
        assert_eq!(payloads(&sim.received(w)), ["bad"], "{version}");
    }
}

/// 3.1.1 [MQTT-3.1.2-10] / 5.0 [MQTT-3.14.4-3]: on a normal DISCONNECT the will is
/// discarded and never published.
fn no_will_on_normal_disconnect<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let w = watcher(&mut sim);
        let props = [Property::SessionExpiryInterval(60)];
        let props: &[Property<'_>] = if version.is_v5() { &props } else { &[] };
        let c = connect_with_will(
            &mut sim,
            version,
            "c",
            10,
            props,
            will("will/c", b"no", QOS1, true),
        );
        sim.disconnect(c, ReasonCode::Success);
        assert!(!sim.is_connected(c));
        sim.advance(secs(3600));
        assert_eq!(sim.received(w), [], "{version}");
        assert_eq!(sim.broker.retained_count(), 0);
    }
}

/// 5.0 §3.14.2.1: DISCONNECT with 0x04 Disconnect with Will Message closes normally but
/// publishes the will ([MQTT-3.14.4-3] only discards it for 0x00).
fn will_on_v5_disconnect_with_will_message<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let w = watcher(&mut sim);
    let c = connect_with_will(
        &mut sim,
        V5,
        "c",
        0,
        &[],
        will("will/c", b"asked", QOS0, false),
    );
    sim.disconnect(c, ReasonCode::DisconnectWithWill);
    assert!(!sim.is_connected(c));
    assert_eq!(sim.received(c), [], "the server sends nothing back");
    assert_eq!(payloads(&sim.received(w)), ["asked"]);
}

/// 5.0 §3.1.4: "If the existing Client has a Will Message, that Will Message is published"
/// when a new connection takes the client identifier over ([MQTT-3.1.4-3]); 3.1.1 closes
/// the old connection without DISCONNECT, so the will goes out too.
fn will_on_takeover<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let w = watcher(&mut sim);
        connect_with_will(
            &mut sim,
            version,
            "c",
            0,
            &[],
            will("will/c", b"taken", QOS0, false),
        );
        sim.connect(version, "c", true, 0);
        assert_eq!(payloads(&sim.received(w)), ["taken"], "{version}");
    }
}

/// A 5.0 will with a Will Delay Interval of `delay` and a session kept `expiry` seconds.
fn delayed_will<S: BrokerStorage>(sim: &mut Sim<S>, delay: u32, expiry: u32) -> ClientHandle {
    let delay = [Property::WillDelayInterval(delay)];
    let props = [Property::SessionExpiryInterval(expiry)];
    let will = will_with("will/c", b"late", QOS1, false, &delay);
    connect_ok(sim, &connect(V5, "c", true, 0, &props, Some(will))).0
}

/// 5.0 [MQTT-3.1.3-9]: if the client reconnects to its session before the Will Delay
/// Interval has passed, the will is not sent.
fn will_delay_cancelled_by_reconnect<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let w = watcher(&mut sim);
    let c = delayed_will(&mut sim, 10, 3600);
    sim.drop_connection(c);
    sim.advance(secs(9));
    let (_, present, _) = connect_v5_persistent(&mut sim, "c", false, 3600);
    assert!(present);
    sim.advance(secs(3600));
    assert_eq!(sim.received(w), []);
}

/// 5.0 [MQTT-3.1.2-8]: the will is published after the delay "unless ... a new Network
/// Connection for the ClientID is opened before the Will Delay Interval has expired" —
/// also when that connection starts a new session with Clean Start 1.
fn will_delay_cancelled_by_clean_start_reconnect<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let w = watcher(&mut sim);
    let c = delayed_will(&mut sim, 10, 3600);
    sim.drop_connection(c);
    sim.advance(secs(5));
    let (_, present, _) = connect_v5_persistent(&mut sim, "c", true, 3600);
    assert!(!present);
    sim.advance(secs(3600));
    assert_eq!(sim.received(w), []);
}

/// 5.0 §3.1.3.2.2: the will is published when the Will Delay Interval has passed.
fn will_published_after_delay<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let w = watcher(&mut sim);
    let c = delayed_will(&mut sim, 10, 3600);
    sim.drop_connection(c);
    sim.advance(secs(9));
    assert_eq!(sim.received(w), []);
    sim.advance(secs(1));
    assert_eq!(payloads(&sim.received(w)), ["late"]);
    // Published once: a later reconnection does not bring it back.
    connect_v5_persistent(&mut sim, "c", false, 3600);
    sim.advance(secs(3600));
    assert_eq!(sim.received(w), []);
}

/// 5.0 §3.1.3.2.2: "The Server delays publishing the Client's Will Message until the Will
/// Delay Interval has passed or the Session ends, whichever happens first."
fn will_delay_bounded_by_session_expiry<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let w = watcher(&mut sim);
    let c = delayed_will(&mut sim, 100, 10);
    sim.drop_connection(c);
    sim.advance(secs(9));
    assert_eq!(sim.received(w), []);
    sim.advance(secs(1));
    assert_eq!(payloads(&sim.received(w)), ["late"]);
    assert!(sim.broker.session("c").is_none());
    // Session Expiry 0: the session ends at once, and so does the delay.
    let c = delayed_will(&mut sim, 100, 0);
    sim.drop_connection(c);
    assert_eq!(payloads(&sim.received(w)), ["late"]);
}

/// 3.1.1 [MQTT-3.1.2-17] / 5.0 [MQTT-3.1.2-15]: a will with Will Retain 1 is published as
/// a retained message: current subscribers get it with RETAIN 0 (3.1.1 [MQTT-3.3.1-9]),
/// later ones with RETAIN 1.
fn will_retain<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let w = watcher(&mut sim);
        let c = connect_with_will(
            &mut sim,
            version,
            "c",
            0,
            &[],
            will("will/c", b"kept", QOS1, true),
        );
        sim.drop_connection(c);
        let got = messages(&sim.received(w));
        assert_eq!(got.len(), 1);
        assert!(!got[0].retain);
        assert_eq!(sim.broker.retained_count(), 1);
        let late = sim.connect(version, "late", true, 0);
        sim.subscribe(late, "will/+", QOS0);
        let got = messages(&sim.received(late));
        assert_eq!(got.len(), 1, "{version}");
        assert!(got[0].retain && got[0].payload == b"kept");
    }
}

/// 3.1.1 §3.1.2.6 / 5.0 §3.1.2.6: the will goes out with its Will QoS, lowered to each
/// subscription's maximum like any message.
fn will_qos_and_subscription_maximum<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let w = watcher(&mut sim);
    let low = sim.connect(V3, "low", true, 0);
    sim.subscribe(low, "will/#", QOS0);
    let c = connect_with_will(
        &mut sim,
        V3,
        "c",
        0,
        &[],
        will("will/c", b"q2", QOS2, false),
    );
    sim.drop_connection(c);
    assert_eq!(messages(&sim.received(w))[0].qos, QOS2);
    assert_eq!(messages(&sim.received(low))[0].qos, QOS0);
}

/// 5.0 §3.1.3.2.1 (Will Properties): the will's properties other than the Will Delay
/// Interval go out with it as PUBLISH properties; the Will Delay Interval does not (a
/// PUBLISH carrying 0x18 is malformed, §2.2.2.2 table 2-4).
fn will_properties_forwarded_without_delay<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let w = watcher(&mut sim);
    let props = [
        Property::WillDelayInterval(1),
        Property::UserProperty("site", "north"),
        Property::ContentType("text/plain"),
    ];
    let expiry = [Property::SessionExpiryInterval(60)];
    let will = will_with("will/c", b"bye", QOS0, false, &props);
    let (c, _) = connect_ok(&mut sim, &connect(V5, "c", true, 0, &expiry, Some(will)));
    sim.drop_connection(c);
    sim.advance(secs(1));
    let got = sim.received(w);
    assert!(
        matches!(&got[..], [Received::Publish { user_properties, payload, .. }]
            if payload == b"bye" && user_properties == &[("site".to_string(), "north".to_string())]),
        "{got:?}"
    );
}
