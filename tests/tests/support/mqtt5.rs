//! A rumqttc MQTT 5.0 client for the end-to-end tests (`mod support;` in a test file):
//! connects to a [`Fulmar`], forwards incoming packets to the test, and waits for the
//! packet a test expects, always bounded by [`WAIT`].

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::time::Duration;

use fulmar_tests::Fulmar;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, Filter, LastWill, Packet, Publish, PublishProperties,
    SubscribeProperties,
};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How long any single expected packet may take.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Options to connect to `broker` as `id`: keep alive 30 s, and a 1 MiB Maximum Packet
/// Size (rumqttc's own default limit on incoming packets is small).
pub(crate) fn options(broker: &Fulmar, id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", broker.port());
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(Some(1 << 20));
    options
}

/// A rumqttc MQTT 5.0 client whose event loop runs on a task that forwards every incoming
/// packet, so a test can wait for exactly the packet it expects.
pub(crate) struct Client {
    /// The rumqttc handle, for requests the helpers below do not wrap.
    pub(crate) client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Packet>,
    task: tokio::task::JoinHandle<()>,
}

/// How a test client connects.
#[derive(Default)]
pub(crate) struct Options {
    /// Keep the session (clean start off, session expiry 5 minutes).
    pub(crate) persistent: bool,
    /// The will to register.
    pub(crate) will: Option<LastWill>,
}

impl Client {
    /// Connects as `id` and asserts the CONNACK accepts it.
    pub(crate) async fn connect(broker: &Fulmar, id: &str, how: Options) -> (Self, ConnAck) {
        let mut options = options(broker, id);
        if how.persistent {
            options
                .set_clean_start(false)
                .set_session_expiry_interval(Some(300));
        }
        if let Some(will) = how.will {
            options.set_last_will(will);
        }
        let (this, connack) = Self::connect_options(options).await;
        assert_eq!(
            connack.code,
            ConnectReturnCode::Success,
            "{id}: {connack:?}"
        );
        (this, connack)
    }

    /// The next packet.
    pub(crate) async fn next(&mut self) -> Packet {
        timeout(WAIT, self.incoming.recv())
            .await
            .expect("a packet in time")
            .expect("the connection is open")
    }

    pub(crate) async fn until(&mut self, wanted: impl Fn(&Packet) -> bool) -> Packet {
        loop {
            let packet = self.next().await;
            if wanted(&packet) {
                return packet;
            }
        }
    }

    pub(crate) async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.unwrap();
        self.until(|p| matches!(p, Packet::SubAck(_))).await;
    }

    pub(crate) async fn publish(&mut self, topic: &str, payload: &str, qos: QoS, retain: bool) {
        self.client
            .publish(topic, qos, retain, payload.as_bytes().to_vec())
            .await
            .unwrap();
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.until(|p| matches!(p, Packet::PubAck(_))).await;
            }
            QoS::ExactlyOnce => {
                self.until(|p| matches!(p, Packet::PubComp(_))).await;
            }
        }
    }

    pub(crate) async fn message(&mut self) -> (String, String, QoS, bool) {
        match self.until(|p| matches!(p, Packet::Publish(_))).await {
            Packet::Publish(p) => (
                String::from_utf8_lossy(&p.topic).into_owned(),
                String::from_utf8_lossy(&p.payload).into_owned(),
                p.qos,
                p.retain,
            ),
            _ => unreachable!(),
        }
    }

    pub(crate) async fn disconnect(self) {
        self.client.disconnect().await.unwrap();
        timeout(WAIT, self.task).await.unwrap().unwrap();
    }

    pub(crate) async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

impl Client {
    /// Connects with a rumqttc `MqttOptions` the caller prepared (client identifier, clean
    /// start, ...) and returns the CONNACK whatever its code.
    pub(crate) async fn connect_options(options: MqttOptions) -> (Self, ConnAck) {
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (forward, incoming) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(packet)) => {
                        let _ = forward.send(packet);
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(Event::Outgoing(_)) => {}
                }
            }
        });
        let mut this = Self {
            client,
            incoming,
            task,
        };
        let connack = match this.next().await {
            Packet::ConnAck(ack) => ack,
            other => panic!("expected CONNACK, got {other:?}"),
        };
        (this, connack)
    }

    /// Subscribes to several filters with options and properties; returns the SUBACK's
    /// reason codes in order.
    pub(crate) async fn subscribe_filters(
        &mut self,
        filters: Vec<Filter>,
        properties: SubscribeProperties,
    ) -> Vec<rumqttc::v5::mqttbytes::v5::SubscribeReasonCode> {
        self.client
            .subscribe_many_with_properties(filters, properties)
            .await
            .expect("queue SUBSCRIBE");
        match self.until(|p| matches!(p, Packet::SubAck(_))).await {
            Packet::SubAck(ack) => ack.return_codes,
            _ => unreachable!(),
        }
    }

    /// Publishes with 5.0 properties at QoS 1 and waits for the PUBACK.
    pub(crate) async fn publish_properties(
        &mut self,
        topic: &str,
        payload: &str,
        retain: bool,
        properties: PublishProperties,
    ) {
        self.client
            .publish_with_properties(
                topic,
                QoS::AtLeastOnce,
                retain,
                payload.as_bytes().to_vec(),
                properties,
            )
            .await
            .expect("queue PUBLISH");
        self.until(|p| matches!(p, Packet::PubAck(_))).await;
    }

    /// The next PUBLISH, whole (topic, payload, flags and properties).
    pub(crate) async fn publish_packet(&mut self) -> Publish {
        match self.until(|p| matches!(p, Packet::Publish(_))).await {
            Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    }

    /// The next packet if one arrives within `wait`.
    pub(crate) async fn try_next(&mut self, wait: Duration) -> Option<Packet> {
        timeout(wait, self.incoming.recv()).await.ok().flatten()
    }
}
