//! The `fulmar` binary with real clients: `mosquitto_pub` / `mosquitto_sub` (Debian
//! package `mosquitto-clients`, installed by `cargo xtask test`'s setup suite) and
//! `rumqttc` speaking MQTT 3.1.1 and 5.0.
//!
//! Each test starts its own broker on a free loopback port; every wait is bounded.

use std::process::{Command, Stdio};
use std::time::Duration;

use fulmar_tests::{Fulmar, Lines, fulmar_bin, next_message, wait_until};

mod support;

/// How long any single expected thing (a message, an acknowledgment, an exit) may take.
const WAIT: Duration = Duration::from_secs(10);

// --- the command line -------------------------------------------------------------------

#[test]
fn help_exits_0_and_lists_the_flags() {
    let output = Command::new(fulmar_bin())
        .arg("--help")
        .output()
        .expect("run fulmar --help");
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--log",
        "--max-connections",
        "--max-packet-size",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
    assert!(
        help.contains("0.0.0.0:1883"),
        "--help hides the default address:\n{help}"
    );
}

#[test]
fn a_bad_flag_is_an_error() {
    let output = Command::new(fulmar_bin())
        .args(["--listen", "not-an-address"])
        .stdin(Stdio::null())
        .output()
        .expect("run fulmar");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn a_taken_port_is_an_error_at_startup() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(fulmar_bin())
        .args(["--listen", &addr])
        .stdin(Stdio::null())
        .output()
        .expect("run fulmar");
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&addr),
        "the error does not name {addr}: {stderr}"
    );
}

#[test]
fn startup_warns_about_anonymous_access() {
    let broker = Fulmar::start();
    // The warning follows the startup line.
    wait_until(WAIT, || {
        broker
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("anonymous access is allowed"))
    });
}

/// CONNECT, MQTT 3.1.1, clean session, keep alive 60 s, client id "a".
const CONNECT_V311: [u8; 15] = [
    0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'a',
];
/// The CONNACK that accepts it.
const CONNACK_OK: [u8; 4] = [0x20, 2, 0, 0];

/// A raw TCP client that has sent CONNECT and read the CONNACK accepting it.
fn raw_client(broker: &Fulmar) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(broker.addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(&CONNECT_V311).unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack, CONNACK_OK);
    stream
}

/// Whether the peer closed the stream (EOF or reset) within the read timeout.
fn closed_by_peer(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn sigterm_closes_connections_and_exits_0() {
    let mut broker = Fulmar::start();
    let mut client = raw_client(&broker);
    let status = broker.terminate().expect("fulmar exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", broker.log());
    assert!(closed_by_peer(&mut client), "the connection stayed open");
    assert!(broker.log().contains("stopped"), "{}", broker.log());
}

#[test]
fn sigterm_right_after_startup_exits_0() {
    let mut broker = Fulmar::start();
    let status = broker.terminate().expect("fulmar exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", broker.log());
}

#[test]
fn garbage_costs_only_its_own_connection() {
    use std::io::Write;
    let broker = Fulmar::start();
    let mut bystander = raw_client(&broker);
    let mut garbage = std::net::TcpStream::connect(broker.addr()).unwrap();
    garbage.set_read_timeout(Some(WAIT)).unwrap();
    garbage.write_all(&[0xFF; 64]).unwrap();
    assert!(closed_by_peer(&mut garbage), "garbage was not refused");
    // The other client is still served: PINGREQ gets PINGRESP.
    bystander.write_all(&[0xC0, 0]).unwrap();
    let mut pingresp = [0u8; 2];
    std::io::Read::read_exact(&mut bystander, &mut pingresp).unwrap();
    assert_eq!(pingresp, [0xD0, 0]);
}

#[test]
fn connections_beyond_the_limit_are_closed() {
    let broker = Fulmar::start_with(&["--max-connections", "1"]);
    let _first = raw_client(&broker);
    let mut second = std::net::TcpStream::connect(broker.addr()).unwrap();
    second.set_read_timeout(Some(WAIT)).unwrap();
    assert!(
        closed_by_peer(&mut second),
        "a connection beyond --max-connections was served"
    );
    wait_until(WAIT, || broker.log().contains("connection limit reached"));
}

// --- mosquitto_pub / mosquitto_sub ------------------------------------------------------

/// Starts `mosquitto_sub` printing `QOS RETAIN TOPIC PAYLOAD` per message and returns once
/// the broker has acknowledged its subscription.
fn mosquitto_sub(broker: &Fulmar, args: &[&str]) -> Lines {
    let format = ["-F", "%q %r %t %p"];
    fulmar_tests::mosquitto_sub(broker.port(), &[&format[..], args].concat())
}

/// Runs `mosquitto_pub` to completion.
fn mosquitto_pub(broker: &Fulmar, args: &[&str]) {
    let mut command = Command::new("mosquitto_pub");
    command
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(args);
    let mut publisher = Lines::spawn(command);
    let status = publisher
        .wait(WAIT)
        .unwrap_or_else(|| panic!("mosquitto_pub {args:?} did not finish"));
    assert!(status.success(), "mosquitto_pub {args:?}: {status:?}");
}

#[test]
fn mosquitto_qos_0_1_2_round_trip() {
    let broker = Fulmar::start();
    for (sub_version, pub_version) in [("mqttv311", "mqttv5"), ("mqttv5", "mqttv311")] {
        let sub = mosquitto_sub(&broker, &["-t", "m/#", "-q", "2", "-V", sub_version]);
        for qos in ["0", "1", "2"] {
            let topic = format!("m/{qos}");
            let payload = format!("hello at qos {qos}");
            mosquitto_pub(
                &broker,
                &["-t", &topic, "-m", &payload, "-q", qos, "-V", pub_version],
            );
            assert_eq!(next_message(&sub), format!("{qos} 0 {topic} {payload}"));
        }
    }
}

#[test]
fn mosquitto_retained_message_reaches_a_late_subscriber() {
    let broker = Fulmar::start();
    mosquitto_pub(&broker, &["-t", "r/state", "-m", "on", "-q", "1", "-r"]);
    let sub = mosquitto_sub(&broker, &["-t", "r/#", "-q", "1"]);
    assert_eq!(next_message(&sub), "1 1 r/state on");
    // A live message on the same topic is not flagged retained.
    mosquitto_pub(&broker, &["-t", "r/state", "-m", "off", "-q", "1"]);
    assert_eq!(next_message(&sub), "1 0 r/state off");
}

#[test]
fn mosquitto_will_is_published_when_the_client_is_killed() {
    let broker = Fulmar::start();
    let watcher = mosquitto_sub(&broker, &["-t", "wills/#", "-q", "1"]);
    let mut victim = mosquitto_sub(
        &broker,
        &[
            "-t",
            "anything",
            "-i",
            "victim",
            "--will-topic",
            "wills/victim",
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
        ],
    );
    // SIGKILL: the kernel closes the socket, no DISCONNECT is sent.
    victim.kill();
    assert_eq!(next_message(&watcher), "1 0 wills/victim gone");
}

#[test]
fn mosquitto_pub_many_lines() {
    // `mosquitto_pub -l` sends each stdin line as a message on one connection.
    let broker = Fulmar::start();
    let sub = mosquitto_sub(&broker, &["-t", "lines", "-q", "1"]);
    let mut publisher = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-t", "lines", "-q", "1", "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = publisher.stdin.take().unwrap();
        for i in 0..500 {
            writeln!(stdin, "line {i}").unwrap();
        }
    }
    for i in 0..500 {
        assert_eq!(next_message(&sub), format!("1 0 lines line {i}"));
    }
    let status = publisher.wait().unwrap();
    assert!(status.success());
}

// --- rumqttc, MQTT 3.1.1 ----------------------------------------------------------------

mod v311 {
    use super::WAIT;
    use fulmar_tests::Fulmar;
    use rumqttc::{AsyncClient, ConnAck, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
    use tokio::sync::mpsc;
    use tokio::time::timeout;

    /// A rumqttc client whose event loop runs on a task that forwards incoming packets.
    struct Client {
        client: AsyncClient,
        incoming: mpsc::UnboundedReceiver<Packet>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Client {
        async fn connect(
            broker: &Fulmar,
            id: &str,
            clean: bool,
            will: Option<LastWill>,
        ) -> (Self, ConnAck) {
            let mut options = MqttOptions::new(id, "127.0.0.1", broker.port());
            options
                .set_keep_alive(std::time::Duration::from_secs(30))
                .set_clean_session(clean);
            if let Some(will) = will {
                options.set_last_will(will);
            }
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
                other => panic!("{id}: expected CONNACK, got {other:?}"),
            };
            (this, connack)
        }

        async fn next(&mut self) -> Packet {
            timeout(WAIT, self.incoming.recv())
                .await
                .expect("a packet in time")
                .expect("the connection is open")
        }

        /// The next packet that satisfies `wanted`, skipping others.
        async fn until(&mut self, wanted: impl Fn(&Packet) -> bool) -> Packet {
            loop {
                let packet = self.next().await;
                if wanted(&packet) {
                    return packet;
                }
            }
        }

        async fn subscribe(&mut self, filter: &str, qos: QoS) {
            self.client.subscribe(filter, qos).await.unwrap();
            self.until(|p| matches!(p, Packet::SubAck(_))).await;
        }

        /// Publishes and waits for the broker's acknowledgment (PUBACK / PUBCOMP).
        async fn publish(&mut self, topic: &str, payload: &str, qos: QoS, retain: bool) {
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

        /// The next PUBLISH: topic, payload, QoS, retain.
        async fn message(&mut self) -> (String, String, QoS, bool) {
            match self.until(|p| matches!(p, Packet::Publish(_))).await {
                Packet::Publish(p) => (
                    p.topic.clone(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                    p.qos,
                    p.retain,
                ),
                _ => unreachable!(),
            }
        }

        /// Sends DISCONNECT and waits until the event loop has sent it and stopped.
        async fn disconnect(self) {
            self.client.disconnect().await.unwrap();
            timeout(WAIT, self.task).await.unwrap().unwrap();
        }

        /// Drops the socket without DISCONNECT (the event loop is dropped with its task).
        async fn kill(self) {
            self.task.abort();
            let _ = self.task.await;
        }
    }

    #[tokio::test]
    async fn qos_0_1_2_round_trip() {
        let broker = Fulmar::start();
        let (mut sub, ack) = Client::connect(&broker, "sub", true, None).await;
        assert!(!ack.session_present);
        sub.subscribe("q/#", QoS::ExactlyOnce).await;
        let (mut publisher, _) = Client::connect(&broker, "pub", true, None).await;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let topic = format!("q/{}", qos as u8);
            publisher.publish(&topic, "payload", qos, false).await;
            assert_eq!(
                sub.message().await,
                (topic, "payload".to_owned(), qos, false)
            );
        }
        // A subscription at QoS 0 gets everything at QoS 0.
        let (mut low, _) = Client::connect(&broker, "low", true, None).await;
        low.subscribe("q/#", QoS::AtMostOnce).await;
        publisher
            .publish("q/2", "down", QoS::ExactlyOnce, false)
            .await;
        assert_eq!(
            low.message().await,
            ("q/2".to_owned(), "down".to_owned(), QoS::AtMostOnce, false)
        );
        sub.disconnect().await;
        publisher.disconnect().await;
    }

    #[tokio::test]
    async fn retained_message_reaches_a_late_subscriber() {
        let broker = Fulmar::start();
        let (mut publisher, _) = Client::connect(&broker, "pub", true, None).await;
        publisher
            .publish("site/door", "open", QoS::AtLeastOnce, true)
            .await;
        let (mut sub, _) = Client::connect(&broker, "late", true, None).await;
        sub.subscribe("site/+", QoS::AtLeastOnce).await;
        assert_eq!(
            sub.message().await,
            (
                "site/door".to_owned(),
                "open".to_owned(),
                QoS::AtLeastOnce,
                true
            )
        );
    }

    #[tokio::test]
    async fn will_is_published_when_the_socket_drops() {
        let broker = Fulmar::start();
        let (mut watcher, _) = Client::connect(&broker, "watcher", true, None).await;
        watcher.subscribe("status/#", QoS::AtLeastOnce).await;
        let will = LastWill::new("status/dev1", "offline", QoS::AtLeastOnce, false);
        let (dev, _) = Client::connect(&broker, "dev1", true, Some(will)).await;
        dev.kill().await;
        assert_eq!(
            watcher.message().await,
            (
                "status/dev1".to_owned(),
                "offline".to_owned(),
                QoS::AtLeastOnce,
                false
            )
        );
    }

    #[tokio::test]
    async fn no_will_after_a_clean_disconnect() {
        let broker = Fulmar::start();
        let (mut watcher, _) = Client::connect(&broker, "watcher", true, None).await;
        watcher.subscribe("status/#", QoS::AtLeastOnce).await;
        let will = LastWill::new("status/dev2", "offline", QoS::AtLeastOnce, false);
        let (dev, _) = Client::connect(&broker, "dev2", true, Some(will)).await;
        dev.disconnect().await;
        // A message after the disconnect arrives first: no will came before it.
        let (mut publisher, _) = Client::connect(&broker, "pub", true, None).await;
        publisher
            .publish("status/marker", "m", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(watcher.message().await.0, "status/marker");
    }

    #[tokio::test]
    async fn persistent_session_gets_what_was_published_while_offline() {
        let broker = Fulmar::start();
        let (mut device, ack) = Client::connect(&broker, "device", false, None).await;
        assert!(!ack.session_present);
        device.subscribe("cmd/device", QoS::AtLeastOnce).await;
        device.disconnect().await;

        let (mut publisher, _) = Client::connect(&broker, "pub", true, None).await;
        publisher
            .publish("cmd/device", "reboot", QoS::AtLeastOnce, false)
            .await;

        let (mut device, ack) = Client::connect(&broker, "device", false, None).await;
        assert!(ack.session_present);
        assert_eq!(
            device.message().await,
            (
                "cmd/device".to_owned(),
                "reboot".to_owned(),
                QoS::AtLeastOnce,
                false
            )
        );
    }
}

// --- rumqttc, MQTT 5.0 ------------------------------------------------------------------

mod v5 {
    use crate::support::mqtt5::{Client, Options};
    use fulmar_tests::Fulmar;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::LastWill;

    #[tokio::test]
    async fn qos_0_1_2_round_trip() {
        let broker = Fulmar::start();
        let (mut sub, _) = Client::connect(&broker, "sub", Options::default()).await;
        sub.subscribe("q/#", QoS::ExactlyOnce).await;
        let (mut publisher, _) = Client::connect(&broker, "pub", Options::default()).await;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let topic = format!("q/{}", qos as u8);
            publisher.publish(&topic, "payload", qos, false).await;
            assert_eq!(
                sub.message().await,
                (topic, "payload".to_owned(), qos, false)
            );
        }
        sub.disconnect().await;
        publisher.disconnect().await;
    }

    #[tokio::test]
    async fn retained_message_reaches_a_late_subscriber() {
        let broker = Fulmar::start();
        let (mut publisher, _) = Client::connect(&broker, "pub", Options::default()).await;
        publisher
            .publish("site/window", "closed", QoS::ExactlyOnce, true)
            .await;
        let (mut sub, _) = Client::connect(&broker, "late", Options::default()).await;
        sub.subscribe("site/#", QoS::ExactlyOnce).await;
        assert_eq!(
            sub.message().await,
            (
                "site/window".to_owned(),
                "closed".to_owned(),
                QoS::ExactlyOnce,
                true
            )
        );
    }

    #[tokio::test]
    async fn will_is_published_when_the_socket_drops() {
        let broker = Fulmar::start();
        let (mut watcher, _) = Client::connect(&broker, "watcher", Options::default()).await;
        watcher.subscribe("status/#", QoS::AtLeastOnce).await;
        let will = LastWill::new("status/dev5", "offline", QoS::AtLeastOnce, false, None);
        let how = Options {
            will: Some(will),
            ..Options::default()
        };
        let (dev, _) = Client::connect(&broker, "dev5", how).await;
        dev.kill().await;
        assert_eq!(
            watcher.message().await,
            (
                "status/dev5".to_owned(),
                "offline".to_owned(),
                QoS::AtLeastOnce,
                false
            )
        );
    }

    #[tokio::test]
    async fn persistent_session_gets_what_was_published_while_offline() {
        let broker = Fulmar::start();
        let persistent = || Options {
            persistent: true,
            ..Options::default()
        };
        let (mut device, ack) = Client::connect(&broker, "device5", persistent()).await;
        assert!(!ack.session_present);
        device.subscribe("cmd/device5", QoS::AtLeastOnce).await;
        device.disconnect().await;

        let (mut publisher, _) = Client::connect(&broker, "pub", Options::default()).await;
        for n in 0..3 {
            publisher
                .publish(
                    "cmd/device5",
                    &format!("command {n}"),
                    QoS::AtLeastOnce,
                    false,
                )
                .await;
        }

        let (mut device, ack) = Client::connect(&broker, "device5", persistent()).await;
        assert!(ack.session_present);
        for n in 0..3 {
            assert_eq!(
                device.message().await,
                (
                    "cmd/device5".to_owned(),
                    format!("command {n}"),
                    QoS::AtLeastOnce,
                    false
                )
            );
        }
    }

    #[tokio::test]
    async fn large_payload_round_trip() {
        // Larger than one read and than one output chunk of a typical size.
        let broker = Fulmar::start();
        let (mut sub, _) = Client::connect(&broker, "sub", Options::default()).await;
        sub.subscribe("big", QoS::AtLeastOnce).await;
        let (mut publisher, _) = Client::connect(&broker, "pub", Options::default()).await;
        let payload: String = (0..100_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        publisher
            .publish("big", &payload, QoS::AtLeastOnce, false)
            .await;
        let (topic, got, _, _) = sub.message().await;
        assert_eq!(topic, "big");
        assert!(got == payload, "payload differs ({} bytes)", got.len());
    }
}
