//! MQTT 5.0 features of the real `fulmar` binary, seen from rumqttc: shared subscriptions,
//! publish properties carried end to end, subscription identifiers, subscription options
//! (No Local, Retain Handling), message expiry while a session is offline, and assigned
//! client identifiers. Each test runs its own broker on a free loopback port.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use fulmar_tests::Fulmar;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    Filter, Packet, PublishProperties, RetainForwardRule, SubscribeProperties, SubscribeReasonCode,
};
use support::mqtt5::{Client, Options, options};

/// How long a test waits to be sure something does NOT arrive.
const QUIET: Duration = Duration::from_millis(500);

fn payload_text(payload: &Bytes) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

/// Collects PUBLISH payloads from `client` until it stays quiet for [`QUIET`].
async fn drain_payloads(client: &mut Client) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(packet) = client.try_next(QUIET).await {
        if let Packet::Publish(p) = packet {
            got.push(payload_text(&p.payload));
        }
    }
    got
}

#[tokio::test]
async fn shared_subscription_delivers_each_message_to_one_member() {
    let broker = Fulmar::start();
    let (mut a, _) = Client::connect(&broker, "worker-a", Options::default()).await;
    let (mut b, _) = Client::connect(&broker, "worker-b", Options::default()).await;
    let (mut all, _) = Client::connect(&broker, "auditor", Options::default()).await;
    a.subscribe("$share/workers/jobs/#", QoS::AtLeastOnce).await;
    b.subscribe("$share/workers/jobs/#", QoS::AtLeastOnce).await;
    all.subscribe("jobs/#", QoS::AtLeastOnce).await;

    let (mut publisher, _) = Client::connect(&broker, "dispatcher", Options::default()).await;
    let sent: BTreeSet<String> = (0..20).map(|n| format!("job {n}")).collect();
    for job in &sent {
        publisher
            .publish("jobs/build", job, QoS::AtLeastOnce, false)
            .await;
    }

    // 5.0 §4.8.2: a shared subscription's message goes to one member only.
    let to_a = drain_payloads(&mut a).await;
    let to_b = drain_payloads(&mut b).await;
    let mut shared: Vec<String> = to_a.iter().chain(&to_b).cloned().collect();
    shared.sort();
    let expected: Vec<String> = sent.iter().cloned().collect();
    assert_eq!(shared, expected, "each job exactly once across the group");
    assert!(
        !to_a.is_empty() && !to_b.is_empty(),
        "both members share the load: a {to_a:?}, b {to_b:?}"
    );
    // A non-shared subscription on the same topics still gets everything.
    let mut audited = drain_payloads(&mut all).await;
    audited.sort();
    assert_eq!(audited, expected);

    // A member that leaves no longer gets a share.
    a.disconnect().await;
    publisher
        .publish("jobs/build", "after", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(drain_payloads(&mut b).await, vec!["after".to_owned()]);
}

#[tokio::test]
async fn publish_properties_reach_the_subscriber() {
    let broker = Fulmar::start();
    let (mut sub, _) = Client::connect(&broker, "responder", Options::default()).await;
    let codes = sub
        .subscribe_filters(
            vec![Filter::new("rpc/request", QoS::AtLeastOnce)],
            SubscribeProperties {
                id: Some(7),
                user_properties: Vec::new(),
            },
        )
        .await;
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);

    let (mut requester, _) = Client::connect(&broker, "requester", Options::default()).await;
    let properties = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(120),
        response_topic: Some("rpc/reply/requester".to_owned()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
        user_properties: vec![
            ("trace".to_owned(), "abc".to_owned()),
            ("trace".to_owned(), "second value, same key".to_owned()),
        ],
        content_type: Some("application/json".to_owned()),
        ..PublishProperties::default()
    };
    requester
        .publish_properties("rpc/request", r#"{"op":"ping"}"#, false, properties)
        .await;

    let got = sub.publish_packet().await;
    assert_eq!(payload_text(&got.payload), r#"{"op":"ping"}"#);
    let props = got.properties.expect("the PUBLISH carries properties");
    // [MQTT-3.3.2-4]: Payload Format Indicator unaltered.
    assert_eq!(props.payload_format_indicator, Some(1));
    // [MQTT-3.3.2-11]: Response Topic, [MQTT-3.3.2-16]: Correlation Data, unaltered.
    assert_eq!(props.response_topic.as_deref(), Some("rpc/reply/requester"));
    assert_eq!(
        props.correlation_data.as_deref(),
        Some(&b"\x00\x01corr"[..])
    );
    // [MQTT-3.3.2-17]: User Properties in order, [MQTT-3.3.2-20]: Content Type unaltered.
    assert_eq!(
        props.user_properties,
        vec![
            ("trace".to_owned(), "abc".to_owned()),
            ("trace".to_owned(), "second value, same key".to_owned()),
        ]
    );
    assert_eq!(props.content_type.as_deref(), Some("application/json"));
    // [MQTT-3.3.2-6]: the expiry sent on is what is left of it, never more.
    let left = props
        .message_expiry_interval
        .expect("Message Expiry Interval forwarded");
    assert!((1..=120).contains(&left), "expiry {left}");
    // [MQTT-3.3.4-3]: the subscription identifier of the matching subscription.
    assert_eq!(props.subscription_identifiers, vec![7]);
}

#[tokio::test]
async fn no_local_and_retain_handling_options() {
    let broker = Fulmar::start();
    let (mut chat, _) = Client::connect(&broker, "chatty", Options::default()).await;
    let (mut publisher, _) = Client::connect(&broker, "state", Options::default()).await;
    publisher
        .publish("room/topic", "retained state", QoS::AtLeastOnce, true)
        .await;

    let mut no_local = Filter::new("room/#", QoS::AtLeastOnce);
    no_local.nolocal = true;
    // Retain Handling 2: no retained messages on subscribe ([MQTT-3.3.1-11]).
    no_local.retain_forward_rule = RetainForwardRule::Never;
    chat.subscribe_filters(
        vec![no_local],
        SubscribeProperties {
            id: None,
            user_properties: Vec::new(),
        },
    )
    .await;
    let (mut other, _) = Client::connect(&broker, "listener", Options::default()).await;
    other.subscribe("room/#", QoS::AtLeastOnce).await;
    // The default Retain Handling (0) sends the retained message to `other`.
    let (topic, payload, _, retain) = other.message().await;
    assert_eq!(
        (topic.as_str(), payload.as_str(), retain),
        ("room/topic", "retained state", true)
    );

    chat.publish("room/chat", "hello", QoS::AtLeastOnce, false)
        .await;
    let (_, heard, _, _) = other.message().await;
    assert_eq!(heard, "hello");
    // [MQTT-3.8.3-3]: No Local: not sent back to the client that published it; and no
    // retained message for a Retain Handling 2 subscription.
    assert_eq!(drain_payloads(&mut chat).await, Vec::<String>::new());
}

#[tokio::test]
async fn expired_message_is_not_delivered_to_a_returning_session() {
    let broker = Fulmar::start();
    let persistent = || Options {
        persistent: true,
        ..Options::default()
    };
    let (mut device, _) = Client::connect(&broker, "sleepy", persistent()).await;
    device.subscribe("cmd/sleepy", QoS::AtLeastOnce).await;
    device.disconnect().await;

    let (mut publisher, _) = Client::connect(&broker, "ops", Options::default()).await;
    let expiring = |seconds| PublishProperties {
        message_expiry_interval: Some(seconds),
        ..PublishProperties::default()
    };
    publisher
        .publish_properties("cmd/sleepy", "short-lived", false, expiring(1))
        .await;
    publisher
        .publish_properties("cmd/sleepy", "long-lived", false, expiring(600))
        .await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;

    let (mut device, ack) = Client::connect(&broker, "sleepy", persistent()).await;
    assert!(ack.session_present);
    // §3.3.2.3.3: a message whose expiry passed is not sent.
    let got = device.publish_packet().await;
    assert_eq!(payload_text(&got.payload), "long-lived");
    let left = got
        .properties
        .and_then(|p| p.message_expiry_interval)
        .expect("the expiry that is left");
    assert!(left <= 598, "2 s offline count against the expiry: {left}");
    assert_eq!(drain_payloads(&mut device).await, Vec::<String>::new());
}

#[tokio::test]
async fn empty_client_id_gets_an_assigned_identifier() {
    let broker = Fulmar::start();
    let mut anonymous = options(&broker, "");
    anonymous.set_clean_start(true);
    let (mut client, ack) = Client::connect_options(anonymous).await;
    // [MQTT-3.2.2-16]: an empty Client Identifier gets an Assigned Client Identifier.
    let assigned = ack
        .properties
        .and_then(|p| p.assigned_client_identifier)
        .expect("Assigned Client Identifier in CONNACK");
    assert!(!assigned.is_empty());
    client.subscribe("hello", QoS::AtMostOnce).await;
    client
        .publish("hello", "works", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(client.message().await.1, "works");
}
