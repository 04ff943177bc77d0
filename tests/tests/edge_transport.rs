//! The `fulmar` binary's TLS, WebSocket and secure WebSocket listeners with real clients:
//! `rumqttc` (rustls, WebSocket), `mosquitto_pub` / `mosquitto_sub` with `--cafile`, and a
//! bare WebSocket client (tungstenite) for what the others cannot show: packets split
//! across frames, several packets in one frame, the upgrade refusals and the close
//! handshake on shutdown.
//!
//! Each test generates its certificates with rcgen (a CA, a server certificate for
//! 127.0.0.1 and localhost, a client certificate with CN `alice`, and a second CA with a
//! client certificate of its own that the broker does not trust) and starts its own broker
//! on free loopback ports; every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fulmar_tests::{DataDir, Fulmar, Lines, paho, wait_until};

mod support;

/// How long any single expected thing (a message, a handshake, an exit) may take.
const WAIT: Duration = Duration::from_secs(10);

// --- certificates -----------------------------------------------------------------------

/// PEM files of a test PKI, in a directory of their own (removed when dropped).
#[derive(Debug)]
struct Pki {
    dir: DataDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    /// Signed by `ca`, CN `alice`.
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A CA that signed neither the server's certificate nor `stranger_cert`'s issuer.
    other_ca: PathBuf,
    /// Signed by `other_ca`, CN `mallory`.
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
}

impl Pki {
    /// Generates a fresh PKI (ECDSA P-256 keys: a few milliseconds).
    fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose, SanType,
        };
        let dir = DataDir::new("pki");
        let write = |name: &str, pem: String| dir.write(name, &pem);
        let ca = |cn: &str| {
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
        };
        let leaf = |issuer: &CertifiedIssuer<'_, KeyPair>,
                    cn: &str,
                    sans: Vec<SanType>,
                    usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.subject_alt_names = sans;
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let root = ca("Fulmar test CA");
        let other = ca("Someone else's CA");
        let (server_cert, server_key) = leaf(
            &root,
            "fulmar test broker",
            vec![
                SanType::IpAddress([127, 0, 0, 1].into()),
                SanType::DnsName("localhost".try_into().unwrap()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(&root, "alice", vec![], ExtendedKeyUsagePurpose::ClientAuth);
        let stranger = leaf(
            &other,
            "mallory",
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            ca: write("ca.pem", root.pem()),
            server_cert: write("server.pem", server_cert),
            server_key: write("server.key", server_key),
            client_cert: write("client.pem", client.0),
            client_key: write("client.key", client.1),
            other_ca: write("other-ca.pem", other.pem()),
            stranger_cert: write("stranger.pem", stranger.0),
            stranger_key: write("stranger.key", stranger.1),
            dir,
        }
    }
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A running broker with the PKI its certificates come from (dropped after the broker).
#[derive(Debug)]
struct Broker {
    fulmar: Fulmar,
    pki: Pki,
}

impl std::ops::Deref for Broker {
    type Target = Fulmar;

    fn deref(&self) -> &Fulmar {
        &self.fulmar
    }
}

impl std::ops::DerefMut for Broker {
    fn deref_mut(&mut self) -> &mut Fulmar {
        &mut self.fulmar
    }
}

/// A broker with one listener of each kind, configured in a `fulmar.toml` as a user would
/// (plain TCP comes from [`Fulmar::start_with`]'s `--listen`), with a fresh PKI. `tls`
/// adds keys to the TLS and secure WebSocket listeners (`{ca}` stands for the CA file);
/// `ws_path` is the WebSocket listeners' path; `args` go on the command line.
fn broker_with(tls: &str, ws_path: &str, args: &[&str]) -> Broker {
    let pki = Pki::new();
    let (cert, key) = (path(&pki.server_cert), path(&pki.server_key));
    let tls = tls.replace("{ca}", path(&pki.ca));
    let secure = format!("addr = \"127.0.0.1:0\"\ncert = \"{cert}\"\nkey = \"{key}\"\n{tls}\n");
    let toml = format!(
        "[[listeners.tls]]\n{secure}\n\
         [[listeners.ws]]\naddr = \"127.0.0.1:0\"\npath = \"{ws_path}\"\n\n\
         [[listeners.wss]]\n{secure}path = \"{ws_path}\"\n"
    );
    let file = pki.dir.write("fulmar.toml", &toml);
    let mut all = vec!["--config", path(&file)];
    all.extend_from_slice(args);
    let fulmar = Fulmar::start_with(&all);
    Broker { fulmar, pki }
}

/// [`broker_with`] without client certificates, WebSocket on `/mqtt`.
fn broker() -> Broker {
    broker_with("", "/mqtt", &[])
}

/// [`broker_with`] requiring client certificates signed by the test CA, their CN the
/// username.
fn broker_requiring_client_certs() -> Broker {
    broker_with(
        "client_ca = \"{ca}\"\nrequire_client_cert = true\nidentity_from_cert = \"cn\"",
        "/mqtt",
        &[],
    )
}

#[test]
fn check_config_loads_the_certificates() {
    let pki = Pki::new();
    let check = |cert: &Path, key: &Path| {
        let toml = format!(
            "[[listeners.tls]]\naddr = \"127.0.0.1:8883\"\ncert = \"{}\"\nkey = \"{}\"\n",
            path(cert),
            path(key)
        );
        let file = pki.dir.write("check.toml", &toml);
        Command::new(fulmar_tests::fulmar_bin())
            .args(["check-config", path(&file)])
            .output()
            .unwrap()
    };
    let good = check(&pki.server_cert, &pki.server_key);
    assert!(good.status.success(), "{good:?}");
    // A key that is not the certificate's, and a "certificate" that is a key: refused, with
    // the listener's address (and the file, when the file is the problem).
    let mismatched = check(&pki.server_cert, &pki.client_key);
    assert!(!mismatched.status.success(), "{mismatched:?}");
    assert!(String::from_utf8_lossy(&mismatched.stderr).contains("127.0.0.1:8883"));
    let not_a_cert = check(&pki.server_key, &pki.server_key);
    let stderr = String::from_utf8_lossy(&not_a_cert.stderr);
    assert!(
        !not_a_cert.status.success() && stderr.contains(path(&pki.server_key)),
        "{stderr}"
    );
}

// --- mosquitto_pub / mosquitto_sub over TLS ---------------------------------------------

/// `-h 127.0.0.1 -p PORT` for the broker's TLS listener: the server certificate names
/// 127.0.0.1, so mosquitto verifies the host name too.
fn tls_target(broker: &Fulmar) -> Vec<String> {
    let port = broker.listener("mqtts").port().to_string();
    ["-h", "127.0.0.1", "-p", &port].map(str::to_owned).to_vec()
}

/// Starts `mosquitto_sub` over TLS and returns once its subscription is acknowledged.
fn mosquitto_sub(broker: &Fulmar, args: &[&str]) -> Lines {
    // stdbuf: line-buffered stdout, so each message arrives when it is printed.
    let mut command = Command::new("stdbuf");
    command
        .args(["-oL", "mosquitto_sub"])
        .args(tls_target(broker))
        .args(["-d", "-F", "%t %p"])
        .args(args);
    let sub = Lines::spawn(command);
    sub.expect_line(WAIT, |l| l.contains("received SUBACK"));
    sub
}

/// Runs `mosquitto_pub` over TLS to completion and returns whether it succeeded.
fn mosquitto_pub(broker: &Fulmar, args: &[&str]) -> bool {
    let mut command = Command::new("mosquitto_pub");
    command.args(tls_target(broker)).args(args);
    let mut publisher = Lines::spawn(command);
    publisher
        .wait(WAIT)
        .unwrap_or_else(|| panic!("mosquitto_pub {args:?} did not finish"))
        .success()
}

/// The next message line of a [`mosquitto_sub`] (its debug lines skipped).
fn next_message(sub: &Lines) -> String {
    sub.expect_line(WAIT, |l| {
        !l.starts_with("Client ") && !l.starts_with("Subscribed ")
    })
}

#[test]
fn mosquitto_clients_over_tls() {
    let broker = broker();
    let ca = path(&broker.pki.ca);
    let sub = mosquitto_sub(&broker, &["--cafile", ca, "-t", "tls/#", "-q", "1"]);
    for qos in ["0", "1", "2"] {
        let payload = format!("over tls at qos {qos}");
        assert!(mosquitto_pub(
            &broker,
            &["--cafile", ca, "-t", "tls/m", "-q", qos, "-m", &payload]
        ));
        assert_eq!(next_message(&sub), format!("tls/m {payload}"));
    }
}

#[test]
fn a_required_client_certificate_is_checked_and_names_the_client() {
    let broker = broker_requiring_client_certs();
    let pki = &broker.pki;
    let (ca, cert, key) = (path(&pki.ca), path(&pki.client_cert), path(&pki.client_key));
    let sub = mosquitto_sub(
        &broker,
        &["--cafile", ca, "--cert", cert, "--key", key, "-t", "c/#"],
    );
    // No certificate, or one from a CA the broker does not trust: the handshake fails.
    assert!(!mosquitto_pub(
        &broker,
        &["--cafile", ca, "-t", "c/x", "-m", "anonymous"]
    ));
    let (stranger, stranger_key) = (path(&pki.stranger_cert), path(&pki.stranger_key));
    assert!(!mosquitto_pub(
        &broker,
        &[
            "--cafile",
            ca,
            "--cert",
            stranger,
            "--key",
            stranger_key,
            "-t",
            "c/x",
            "-m",
            "x"
        ]
    ));
    // With alice's certificate it goes through, and only that message arrives.
    assert!(mosquitto_pub(
        &broker,
        &[
            "--cafile", ca, "--cert", cert, "--key", key, "-t", "c/x", "-m", "alice"
        ]
    ));
    assert_eq!(next_message(&sub), "c/x alice");
    // The broker knows who that was: the certificate's CN.
    wait_until(WAIT, || {
        broker
            .log()
            .lines()
            .any(|l| l.contains("client connected") && l.contains("alice"))
    });
}

#[test]
fn an_optional_client_certificate_is_verified_when_presented() {
    // client_ca without require_client_cert: certificates are asked for, not required.
    let broker = broker_with(
        "client_ca = \"{ca}\"\nidentity_from_cert = \"cn\"",
        "/mqtt",
        &[],
    );
    let pki = &broker.pki;
    let ca = path(&pki.ca);
    let sub = mosquitto_sub(&broker, &["--cafile", ca, "-t", "o/#"]);
    // None: fine. A valid one: fine, and it names the client. A foreign one: refused.
    assert!(mosquitto_pub(
        &broker,
        &["--cafile", ca, "-t", "o/x", "-m", "none"]
    ));
    assert_eq!(next_message(&sub), "o/x none");
    let (cert, key) = (path(&pki.client_cert), path(&pki.client_key));
    let with_cert = ["--cafile", ca, "--cert", cert, "--key", key];
    assert!(mosquitto_pub(
        &broker,
        &[&with_cert[..], &["-t", "o/x", "-m", "alice"]].concat()
    ));
    assert_eq!(next_message(&sub), "o/x alice");
    let (stranger, stranger_key) = (path(&pki.stranger_cert), path(&pki.stranger_key));
    let foreign = ["--cafile", ca, "--cert", stranger, "--key", stranger_key];
    assert!(!mosquitto_pub(
        &broker,
        &[&foreign[..], &["-t", "o/x", "-m", "x"]].concat()
    ));
    assert!(
        broker
            .log()
            .lines()
            .any(|l| l.contains("client connected") && l.contains("\"alice\"")),
        "{}",
        broker.log()
    );
}

/// The certificate's CN is the user name the password file and the ACL see: alice, who is
/// not in the password file, gets in on her certificate alone, and the ACL's rules for
/// user alice are what she may do (write `c/#`, not `d/#`).
#[test]
fn a_certificate_identity_is_the_user_name_for_auth_and_acl() {
    let files = DataDir::new("cert-acl");
    let passwords = files.write(
        "passwords",
        // bob / bob-pw, in Mosquitto's format (101 rounds): alice is not in it.
        "bob:$7$101$Ama90RreflJ4oF08$X/q4w611owuhELZoAA8zyHmfVk3x2IR3m6Uo1t/DHuxG8omyjF58Eo9NZTBMvXiuPzk9aovyqbbUxunEaNBOlg==\n",
    );
    let acl = files.write("acl", "user alice\ntopic readwrite c/#\n");
    let settings = [
        format!("auth.password_file={}", path(&passwords)),
        format!("auth.acl_file={}", path(&acl)),
    ];
    let broker = broker_with(
        "client_ca = \"{ca}\"\nrequire_client_cert = true\nidentity_from_cert = \"cn\"",
        "/mqtt",
        &["--set", &settings[0], "--set", &settings[1]],
    );
    let pki = &broker.pki;
    let (ca, cert, key) = (path(&pki.ca), path(&pki.client_cert), path(&pki.client_key));
    let with_cert = ["--cafile", ca, "--cert", cert, "--key", key];
    let sub = mosquitto_sub(&broker, &[&with_cert[..], &["-t", "c/#"]].concat());
    for topic in ["d/x", "c/x"] {
        let args = [&with_cert[..], &["-t", topic, "-m", topic]].concat();
        assert!(mosquitto_pub(&broker, &args));
    }
    // d/x was not hers to write: the first message is c/x.
    assert_eq!(next_message(&sub), "c/x c/x");
}

#[test]
fn bad_tls_clients_cost_only_their_own_connection() {
    let broker = broker();
    let pki = &broker.pki;
    let ca = path(&pki.ca);
    let sub = mosquitto_sub(&broker, &["--cafile", ca, "-t", "ok/#"]);
    // A client that trusts another CA refuses the server's certificate.
    assert!(!mosquitto_pub(
        &broker,
        &[
            "--cafile",
            path(&pki.other_ca),
            "-t",
            "ok/x",
            "-m",
            "wrong ca"
        ]
    ));
    // Plain MQTT to the TLS port: not a TLS ClientHello, so the broker closes it.
    let mut plain = TcpStream::connect(broker.listener("mqtts")).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain.write_all(&connect(4, "plain")).unwrap();
    let mut answer = Vec::new();
    // Whatever comes back (a TLS alert at most) is not a CONNACK, and then EOF.
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(&[0x20]), "got {answer:02x?}");
    // A silent socket holds its handshake slot only; the others are served meanwhile.
    let _silent = TcpStream::connect(broker.listener("mqtts")).unwrap();
    assert!(mosquitto_pub(
        &broker,
        &["--cafile", ca, "-t", "ok/x", "-m", "still fine"]
    ));
    assert_eq!(next_message(&sub), "ok/x still fine");
}

#[test]
fn sockets_stuck_before_connect_are_closed_after_the_connect_timeout() {
    let broker = broker_with("", "/mqtt", &["--set", "limits.connect_timeout_secs=1"]);
    let opened = Instant::now();
    // Silent from the start, so stuck in the TLS handshake or the HTTP upgrade.
    let silent: Vec<TcpStream> = ["mqtts", "ws", "wss"]
        .into_iter()
        .map(|protocol| TcpStream::connect(broker.listener(protocol)).unwrap())
        .collect();
    for mut socket in silent {
        socket.set_read_timeout(Some(WAIT)).unwrap();
        let mut rest = Vec::new();
        // EOF (or a reset) when the broker closes it; a timeout error otherwise.
        let _ = socket.read_to_end(&mut rest);
        let waited = opened.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < WAIT,
            "closed after {waited:?}"
        );
    }
}

// --- rumqttc over TLS, WebSocket and secure WebSocket -----------------------------------

mod rumqttc_clients {
    use std::sync::Arc;

    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::sync::mpsc;
    use tokio::time::timeout;

    use super::*;

    /// A rustls client configuration (ring provider) trusting the test CA, with alice's
    /// certificate when `with_cert`.
    fn tls_config(pki: &Pki, with_cert: bool) -> TlsConfiguration {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&pki.ca).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = if with_cert {
            let chain = vec![CertificateDer::from_pem_file(&pki.client_cert).unwrap()];
            let key = PrivateKeyDer::from_pem_file(&pki.client_key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        TlsConfiguration::Rustls(Arc::new(config))
    }

    /// Options for one of the broker's listeners.
    fn options(broker: &Broker, id: &str, protocol: &str, with_cert: bool) -> MqttOptions {
        let (host, port, transport) = target(broker, protocol, with_cert);
        let mut options = MqttOptions::new(id, host, port);
        options.set_transport(transport);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(1 << 20, 1 << 20);
        options
    }

    /// rumqttc's host, port and transport for one of the broker's listeners.
    fn target(broker: &Broker, protocol: &str, with_cert: bool) -> (String, u16, Transport) {
        let addr = broker.listener(protocol);
        let (host, transport) = match protocol {
            "mqtt" => ("127.0.0.1".to_owned(), Transport::Tcp),
            "mqtts" => (
                "127.0.0.1".to_owned(),
                Transport::tls_with_config(tls_config(&broker.pki, with_cert)),
            ),
            "ws" => (format!("ws://{addr}/mqtt"), Transport::Ws),
            "wss" => (
                format!("wss://{addr}/mqtt"),
                Transport::wss_with_config(tls_config(&broker.pki, with_cert)),
            ),
            other => panic!("no such protocol {other}"),
        };
        (host, addr.port(), transport)
    }

    /// A connected client whose received messages arrive on a channel.
    struct Client {
        client: AsyncClient,
        messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Client {
        /// Connects and waits for the CONNACK.
        async fn connect(options: MqttOptions) -> Self {
            let (client, mut eventloop) = AsyncClient::new(options, 16);
            let (connected, connack) = tokio::sync::oneshot::channel();
            let (sender, messages) = mpsc::unbounded_channel();
            let task = tokio::spawn(async move {
                let mut connected = Some(connected);
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            if let Some(connected) = connected.take() {
                                let _ = connected.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let _ = sender.send((p.topic, p.payload.to_vec()));
                        }
                        Ok(_) => {}
                        Err(error) => {
                            eprintln!("event loop ended: {error}");
                            return;
                        }
                    }
                }
            });
            timeout(WAIT, connack)
                .await
                .expect("CONNACK in time")
                .expect("connected");
            Self {
                client,
                messages,
                task,
            }
        }

        async fn subscribe(&mut self, filter: &str) {
            self.client
                .subscribe(filter, QoS::ExactlyOnce)
                .await
                .unwrap();
            // A message of its own, published after the SUBSCRIBE, proves the subscription
            // is active.
            let marker = format!("{filter}/ready")
                .replace("#/", "")
                .replace("+/", "");
            self.client
                .publish(&marker, QoS::AtLeastOnce, false, "ready")
                .await
                .unwrap();
            let (topic, _) = self.message().await;
            assert_eq!(topic, marker);
        }

        async fn message(&mut self) -> (String, Vec<u8>) {
            timeout(WAIT, self.messages.recv())
                .await
                .expect("a message in time")
                .expect("the event loop runs")
        }
    }

    impl Drop for Client {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    #[tokio::test]
    async fn every_transport_reaches_every_other() {
        let broker = broker();
        let protocols = ["mqtt", "mqtts", "ws", "wss"];
        let mut clients = Vec::new();
        for protocol in protocols {
            let mut client =
                Client::connect(options(&broker, &format!("{protocol}-c"), protocol, false)).await;
            client.subscribe(&format!("to/{protocol}/#")).await;
            clients.push(client);
        }
        // Each publishes to each (itself included), at QoS 0, 1 and 2 in turn; payloads
        // big enough to span several TLS records and WebSocket reads.
        for (i, from) in protocols.iter().enumerate() {
            for (j, to) in protocols.iter().enumerate() {
                let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][(i + j) % 3];
                let payload = vec![b'a' + i as u8; 40_000 + j];
                clients[i]
                    .client
                    .publish(format!("to/{to}/from/{from}"), qos, false, payload.clone())
                    .await
                    .unwrap();
                let (topic, got) = clients[j].message().await;
                assert_eq!(topic, format!("to/{to}/from/{from}"));
                assert_eq!(got, payload, "{from} -> {to}");
            }
        }
    }

    #[tokio::test]
    async fn client_certificates_over_tls_and_wss() {
        let broker = broker_requiring_client_certs();
        let mut watcher = Client::connect(options(&broker, "watcher", "mqtts", true)).await;
        watcher.subscribe("cert/#").await;
        let wss = Client::connect(options(&broker, "browser", "wss", true)).await;
        wss.client
            .publish("cert/wss", QoS::AtLeastOnce, false, "with a certificate")
            .await
            .unwrap();
        assert_eq!(watcher.message().await.0, "cert/wss");
        // Without a certificate neither TLS listener lets the client in.
        for protocol in ["mqtts", "wss"] {
            let (_client, mut eventloop) = AsyncClient::new(
                options(&broker, &format!("{protocol}-anon"), protocol, false),
                4,
            );
            let first = timeout(WAIT, eventloop.poll()).await.expect("an answer");
            assert!(
                first.is_err(),
                "{protocol} without a certificate: {first:?}"
            );
        }
    }

    #[tokio::test]
    async fn mqtt_5_over_wss_to_tls() {
        use rumqttc::v5::MqttOptions as Options5;
        use rumqttc::v5::mqttbytes::QoS as QoS5;
        use support::mqtt5::Client as Client5;

        let broker = broker();
        let connect = |id: &str, protocol: &str| {
            let (host, port, transport) = target(&broker, protocol, false);
            let mut options = Options5::new(id, host, port);
            options.set_transport(transport);
            Client5::connect_options(options)
        };
        let (mut sub, _) = connect("v5-sub", "mqtts").await;
        let (mut publisher, _) = connect("v5-pub", "wss").await;
        sub.subscribe("v5/#", QoS5::ExactlyOnce).await;
        publisher
            .publish("v5/wss", "five", QoS5::ExactlyOnce, false)
            .await;
        assert_eq!(
            sub.message().await,
            (
                "v5/wss".to_owned(),
                "five".to_owned(),
                QoS5::ExactlyOnce,
                false
            )
        );
        publisher.disconnect().await;
        sub.disconnect().await;
    }
}

// --- paho-mqtt (Python) over WebSocket and secure WebSocket ------------------------------

#[test]
fn paho_over_websocket_and_secure_websocket_and_shutdown() {
    // paho's WebSocket transport offers the subprotocol `mqtt` and takes the path, as
    // MQTT.js does in a browser.
    const SCRIPT: &str = r#"
import os, signal, ssl, sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
ws_port, wss_port, ca, broker = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
got, subscribed, told = threading.Event(), threading.Event(), threading.Event()
def client(name, port, protocol, tls):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=protocol,
                    transport="websockets")
    c.ws_set_options(path="/mqtt")
    if tls:
        c.tls_set(ca_certs=ca)
    return c
sub = client("paho-wss", wss_port, mqtt.MQTTv5, True)
sub.on_connect = lambda c, u, f, reason, p: c.subscribe("paho/#", qos=1)
sub.on_subscribe = lambda c, u, mid, reasons, p: subscribed.set()
def on_message(c, u, message):
    print(message.topic, message.payload.decode(), message.qos, flush=True)
    got.set()
sub.on_message = on_message
sub.connect("127.0.0.1", wss_port)
sub.loop_start()
assert subscribed.wait(10), "no SUBACK over wss"
pub = client("paho-ws", ws_port, mqtt.MQTTv311, False)
pub.connect("127.0.0.1", ws_port)
pub.loop_start()
pub.publish("paho/ws", "from paho", qos=1).wait_for_publish(10)
assert got.wait(10), "no message over wss"
# The broker shuts down: the MQTT 5 client over wss is told why (0x8B = 139), through the
# WebSocket and TLS layers.
def on_disconnect(c, u, flags, reason, p):
    print("wss disconnect", reason.value, flush=True)
    told.set()
sub.on_disconnect = on_disconnect
os.kill(broker, signal.SIGTERM)
assert told.wait(10), "no disconnect over wss"
for c in (pub, sub):
    c.loop_stop()
"#;
    let mut broker = broker();
    let ws = broker.listener("ws").port().to_string();
    let wss = broker.listener("wss").port().to_string();
    let pid = broker.pid().to_string();
    let output = paho::run(SCRIPT, &[&ws, &wss, path(&broker.pki.ca), &pid], WAIT);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "paho/ws from paho 1\nwss disconnect 139\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(broker.terminate().and_then(|s| s.code()), Some(0));
}

#[test]
fn wss_shutdown_ends_with_the_close_handshake_and_close_notify() {
    // A bare client on Python's ssl module, which tells a TLS session that ends with
    // close_notify (recv returns b"") from one that is cut (SSLEOFError).
    const SCRIPT: &str = r#"
import base64, os, signal, socket, ssl, sys
port, ca, broker = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
tls = ssl.create_default_context(cafile=ca)
s = tls.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1",
                    suppress_ragged_eofs=False)
s.settimeout(10)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Protocol: mqtt\r\n\r\n" % key).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    buf += s.recv(1024)
buf = buf.split(b"\r\n\r\n", 1)[1]
def send(opcode, payload):
    mask = os.urandom(4)
    s.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask
              + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
def frame():
    global buf
    while True:
        if len(buf) >= 2 and len(buf) >= 2 + (buf[1] & 0x7f):
            n = buf[1] & 0x7f
            opcode, payload, buf = buf[0] & 0x0f, buf[2:2 + n], buf[2 + n:]
            return opcode, payload
        more = s.recv(1024)
        if not more:
            raise EOFError
        buf += more
send(2, bytes([0x10, 16, 0, 4]) + b"MQTT" + bytes([5, 2, 0, 60, 0, 0, 3]) + b"raw")
print("connack", frame()[1][:1].hex(), flush=True)
os.kill(broker, signal.SIGTERM)
print("disconnect", frame()[1].hex(), flush=True)
opcode, reason = frame()
print("close frame", opcode == 8, flush=True)
send(8, reason)
try:
    print("end", "clean" if s.recv(1024) == b"" else "data", flush=True)
except ssl.SSLEOFError:
    print("end", "cut without close_notify", flush=True)
"#;
    let mut broker = broker();
    let port = broker.listener("wss").port().to_string();
    let pid = broker.pid().to_string();
    let output = paho::run(SCRIPT, &[&port, path(&broker.pki.ca), &pid], WAIT);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "connack 20\ndisconnect e0018b\nclose frame True\nend clean\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(broker.terminate().and_then(|s| s.code()), Some(0));
}

// --- a bare WebSocket client ------------------------------------------------------------

mod websocket {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::http::StatusCode;
    use tungstenite::{Message, WebSocket};

    use super::*;

    /// An open WebSocket and the subprotocol the broker chose, or the HTTP status of the
    /// broker's refusal.
    type Upgrade = Result<(WebSocket<TcpStream>, Option<String>), StatusCode>;

    /// Opens a WebSocket to `path` on the broker's `ws` listener, offering `protocols`.
    fn open(broker: &Fulmar, path: &str, protocols: Option<&str>) -> Upgrade {
        open_at(broker.listener("ws"), path, protocols)
    }

    /// Opens a WebSocket to `path` on the listener at `addr`, offering `protocols`.
    fn open_at(addr: SocketAddr, path: &str, protocols: Option<&str>) -> Upgrade {
        let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
        if let Some(protocols) = protocols {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
        }
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        match tungstenite::client(request, stream) {
            Ok((socket, response)) => {
                let chosen = response
                    .headers()
                    .get("Sec-WebSocket-Protocol")
                    .map(|v| v.to_str().unwrap().to_owned());
                Ok((socket, chosen))
            }
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                Err(response.status())
            }
            Err(error) => panic!("upgrade failed without an HTTP answer: {error}"),
        }
    }

    fn refused_with(upgrade: Upgrade) -> StatusCode {
        match upgrade {
            Err(status) => status,
            Ok(_) => panic!("upgrade accepted"),
        }
    }

    #[test]
    fn the_upgrade_needs_the_path_and_the_mqtt_subprotocol() {
        let broker = broker();
        assert_eq!(
            refused_with(open(&broker, "/", Some("mqtt"))),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            refused_with(open(&broker, "/mqtt", None)),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            refused_with(open(&broker, "/mqtt", Some("chat, wamp"))),
            StatusCode::BAD_REQUEST
        );
        let (_, chosen) = open(&broker, "/mqtt", Some("chat, mqtt")).unwrap();
        assert_eq!(chosen.as_deref(), Some("mqtt"));
        let (_, chosen) = open(&broker, "/mqtt", Some("mqttv3.1")).unwrap();
        assert_eq!(chosen.as_deref(), Some("mqttv3.1"));
        // Another path configured: that one only.
        let custom = broker_with("", "/ws/mqtt", &[]);
        assert_eq!(
            refused_with(open(&custom, "/mqtt", Some("mqtt"))),
            StatusCode::NOT_FOUND
        );
        open(&custom, "/ws/mqtt", Some("mqtt")).unwrap();
    }

    /// Reads frames until `count` whole MQTT packets have arrived; returns each packet's
    /// bytes. Fails on a Close frame or a timeout.
    fn packets(
        socket: &mut WebSocket<TcpStream>,
        count: usize,
        stream: &mut Vec<u8>,
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            while let Some(len) = packet_len(stream) {
                out.push(stream.drain(..len).collect());
                if out.len() == count {
                    return out;
                }
            }
            match socket.read().expect("a frame") {
                Message::Binary(bytes) => stream.extend_from_slice(&bytes),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// The length of the whole packet at the start of `bytes`, if it is all there.
    fn packet_len(bytes: &[u8]) -> Option<usize> {
        let mut remaining = 0usize;
        for (i, byte) in bytes.iter().skip(1).take(4).enumerate() {
            remaining |= usize::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                let total = 1 + i + 1 + remaining;
                return (bytes.len() >= total).then_some(total);
            }
        }
        None
    }

    #[test]
    fn packets_and_frames_are_independent_and_shutdown_closes_cleanly() {
        let mut broker = broker();
        let (mut socket, _) = open(&broker, "/mqtt", Some("mqtt")).unwrap();
        // An MQTT 5 CONNECT cut in two frames.
        let hello = connect(5, "bare-ws");
        let (head, tail) = hello.split_at(5);
        socket.send(Message::binary(head.to_vec())).unwrap();
        socket.send(Message::binary(tail.to_vec())).unwrap();
        // SUBSCRIBE and PINGREQ in one frame.
        let mut both = vec![0x82, 9, 0, 1, 0, 0, 3, b'a', b'/', b'b', 0];
        both.extend_from_slice(&[0xc0, 0]);
        socket.send(Message::binary(both)).unwrap();
        let mut stream = Vec::new();
        let answers = packets(&mut socket, 3, &mut stream);
        let types: Vec<u8> = answers.iter().map(|p| p[0]).collect();
        assert_eq!(
            types,
            [0x20, 0x90, 0xd0],
            "CONNACK, SUBACK, PINGRESP: {answers:02x?}"
        );
        assert_eq!(answers[0][3], 0, "CONNACK reason: {answers:02x?}");
        // A WebSocket ping is answered (proxies and some clients keep connections alive so).
        socket
            .send(Message::Ping(b"alive?".to_vec().into()))
            .unwrap();
        match socket.read().expect("a frame") {
            Message::Pong(payload) => assert_eq!(&payload[..], b"alive?"),
            other => panic!("expected a Pong, got {other:?}"),
        }
        // Shutdown: DISCONNECT "server shutting down", then the WebSocket close handshake.
        let signalled = Command::new("kill")
            .args(["-TERM", &broker.pid().to_string()])
            .status()
            .unwrap();
        assert!(signalled.success());
        let disconnect = packets(&mut socket, 1, &mut stream).remove(0);
        assert_eq!(disconnect[..1], [0xe0]);
        assert_eq!(disconnect[2], 0x8b, "{disconnect:02x?}");
        loop {
            match socket.read() {
                Ok(Message::Close(_)) => break,
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                other => panic!("expected a Close frame, got {other:?}"),
            }
        }
        // Our side of the close handshake; then the broker ends the TCP connection.
        let _ = socket.flush();
        assert!(matches!(
            socket.read(),
            Err(tungstenite::Error::ConnectionClosed)
        ));
        assert_eq!(broker.terminate().and_then(|s| s.code()), Some(0));
    }

    #[test]
    fn a_text_frame_closes_the_connection() {
        // Two WebSocket listeners from the command line this time; both serve.
        let broker = Fulmar::start_with(&["--ws-listen", "127.0.0.1:0,127.0.0.1:0"]);
        let listeners = broker.listeners_of("ws");
        assert_eq!(listeners.len(), 2, "{listeners:?}");
        open_at(listeners[0], "/mqtt", Some("mqtt")).unwrap();
        let (mut socket, _) = open_at(listeners[1], "/mqtt", Some("mqtt")).unwrap();
        socket.send(Message::binary(connect(4, "texter"))).unwrap();
        let mut stream = Vec::new();
        assert_eq!(packets(&mut socket, 1, &mut stream)[0][0], 0x20);
        socket.send(Message::text("PINGREQ")).unwrap();
        // [MQTT-6.0.0-1]: the broker closes the connection; nothing else comes back.
        loop {
            match socket.read() {
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(other) => panic!("answered a text frame with {other:?}"),
            }
        }
    }
}

/// A CONNECT with a clean session / clean start and keep-alive 60 s, for MQTT 3.1.1
/// (`level` 4) or 5 (`level` 5, no properties).
fn connect(level: u8, client_id: &str) -> Vec<u8> {
    let id = client_id.as_bytes();
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 60];
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}
