//! The edge broker's bridges (`[[bridges]]`, `fulmar_edge::bridge` around the core's
//! `fulmar_core::uplink` client) against a real upstream broker: Debian's Mosquitto,
//! started by each test with its own configuration on a free port, and `fulmar` itself.
//! Messages published on `fulmar` under an `up` filter reach a subscriber upstream in
//! order; a `down` filter brings upstream's messages in, never back up; messages
//! published while upstream is away — even across a `kill -9` of `fulmar` — arrive once
//! it is back, in order, once each (QoS 1).
//!
//! Every wait is bounded. `cargo test -p fulmar-tests --test edge_bridge`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fulmar_tests::{DataDir, Fulmar, Lines, free_port, fulmar_bin, metrics_addr, wait_until};

/// How long any single expected thing may take (the bridge retries after 1 s, then 2 s…).
const WAIT: Duration = Duration::from_secs(15);

/// A Mosquitto broker on 127.0.0.1:`port`, keeping its state in `dir` (so a restart finds
/// its subscriber's and the bridge's persistent sessions again); killed when dropped.
struct Mosquitto {
    child: Child,
    port: u16,
    conf: PathBuf,
}

impl Mosquitto {
    fn start(port: u16, dir: &DataDir) -> Self {
        Self::start_with(port, dir, "")
    }

    /// [`Mosquitto::start`] with more configuration lines (another listener, say).
    fn start_with(port: u16, dir: &DataDir, extra: &str) -> Self {
        // `user root`: started as root (CI), Mosquitto would switch to its own user, which
        // may not write its state into the test's directory (as another user it stays
        // who it is).
        let conf = dir.write(
            "mosquitto.conf",
            &format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nlog_dest file {}/mosquitto.log\n\
                 user root\n{extra}",
                dir.arg(),
                dir.arg()
            ),
        );
        Self::run(port, conf)
    }

    fn run(port: u16, conf: PathBuf) -> Self {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Its log is in its directory; only its warning about root would show here.
            .stderr(Stdio::null())
            .spawn()
            .expect("run mosquitto (Debian package mosquitto; cargo xtask test setup)");
        fulmar_tests::wait_until(WAIT, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { child, port, conf }
    }

    /// Stops it cleanly (SIGTERM: it saves its sessions) and waits until it is gone.
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let deadline = Instant::now() + WAIT;
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            assert!(Instant::now() < deadline, "mosquitto did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts it again on the same port and state.
    fn restart(&mut self) {
        *self = Self::run(self.port, self.conf.clone());
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `[[bridges]]` block named `name` to 127.0.0.1:`port` with `extra` lines (filters).
fn bridge_conf(name: &str, port: u16, extra: &str) -> String {
    format!("[[bridges]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\n{extra}")
}

/// `fulmar` with the configuration `conf` (written into `dir`, whose `data` directory it
/// keeps its state in), on two shards whatever the machine: a bridge's session is on one
/// of them, and publishers and subscribers on either.
fn fulmar(dir: &DataDir, conf: &str) -> Fulmar {
    let path = dir.write("fulmar.toml", conf);
    let data = dir.path().join("data");
    let mut command = Command::new(fulmar_bin());
    command
        .args(["--listen", "127.0.0.1:0", "--log", "info,fulmar_edge=debug"])
        .args([
            "--set",
            "runtime.shards=2",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(path)
        .arg("--data-dir")
        .arg(data);
    Fulmar::start_command(command)
}

/// Waits until `broker`'s log holds `wanted` at least `count` times.
fn wait_log(broker: &Fulmar, wanted: &str, count: usize) {
    let deadline = Instant::now() + WAIT;
    while broker.log().matches(wanted).count() < count {
        assert!(
            Instant::now() < deadline,
            "fulmar never logged {wanted:?} {count} times; log:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many times the bridge connected upstream so far.
fn connections(broker: &Fulmar) -> usize {
    broker.log().matches("bridge: connected upstream").count()
}

/// Each of `messages` as one QoS 1 PUBLISH on `topic` to `port`, in order, over one
/// connection (mosquitto_pub waits for the last PUBACK).
fn publish(port: u16, topic: &str, messages: &[String]) {
    fulmar_tests::mosquitto_pub_lines(port, &["-q", "1", "-t", topic], messages);
}

/// A QoS 1 subscriber to `filter` on `port`, printing `topic payload` lines; with `id`, on
/// that persistent session (what arrives while it is away waits for it). Returns once
/// subscribed, unless it resumes a session (queued messages come before the SUBACK).
fn subscriber(port: u16, id: Option<&str>, filter: &str) -> Lines {
    let mut args = vec!["-q", "1", "-v", "-t", filter];
    if let Some(id) = id {
        args.extend(["-c", "-i", id]);
    }
    fulmar_tests::mosquitto_sub(port, &args)
}

/// The next `count` messages `sub` prints (its debug lines skipped; fewer if they do not
/// come), then whatever more comes within half a second (a duplicate, say).
fn collect(sub: &Lines, count: usize) -> Vec<String> {
    let message = |line: &str| !line.starts_with("Client ") && !line.starts_with("Subscribed");
    let mut got = fulmar_tests::take_lines(sub, count, WAIT, message);
    while let Some(line) = sub.next_line(Duration::from_millis(500)) {
        if message(&line) {
            got.push(line);
        }
    }
    got
}

/// Publishes `probe` on `topic` to `port` until `sub` gets it (every 300 ms).
fn probe(port: u16, topic: &str, sub: &Lines) {
    let wanted = format!("{topic} probe");
    let deadline = Instant::now() + WAIT;
    loop {
        publish(port, topic, &["probe".to_owned()]);
        let round = Instant::now() + Duration::from_millis(300);
        while let Some(line) = sub.next_line(round.saturating_duration_since(Instant::now())) {
            if line == wanted {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{topic} never reached the subscriber"
        );
    }
}

/// `count` payloads `{tag}-{i}`.
fn payloads(tag: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{tag}-{i:03}")).collect()
}

/// What a `-v` subscriber prints for `payloads` on `topic`.
fn lines_of(topic: &str, payloads: &[String]) -> Vec<String> {
    payloads.iter().map(|p| format!("{topic} {p}")).collect()
}

/// (a) What is published on fulmar under an `up` filter reaches a subscriber on Mosquitto,
/// QoS 1, in order; what matches no `up` filter does not. With upstream there, a full
/// bridge queue (8 messages here) holds the publisher back rather than dropping.
#[test]
fn messages_go_up_in_order() {
    let dir = DataDir::new("bridge-up");
    let up_port = free_port();
    let _mosquitto = Mosquitto::start(up_port, &dir);
    let sub = subscriber(up_port, None, "#");
    let broker = fulmar(
        &dir,
        &("[limits]\nmax_queued_messages = 8\n".to_owned()
            + &bridge_conf("edge-up", up_port, "up = [{ filter = \"sensors/#\" }]\n")),
    );
    wait_log(&broker, "bridge: connected upstream", 1);

    // Forwarded as soon as it is routed, not at the bridge's next exchange with upstream
    // (its first PINGREQ is 7.5 s away).
    let published = Instant::now();
    publish(broker.port(), "sensors/first", &["1".to_owned()]);
    sub.expect_line(WAIT, |l| l == "sensors/first 1");
    let latency = published.elapsed();
    assert!(
        latency < Duration::from_secs(3),
        "forwarded after {latency:?}"
    );

    publish(broker.port(), "local/only", &payloads("local", 3));
    let sent = payloads("up", 200);
    publish(broker.port(), "sensors/t", &sent);
    assert_eq!(collect(&sub, sent.len()), lines_of("sensors/t", &sent));
    assert_eq!(connections(&broker), 1, "{}", broker.log());
    let log = broker.log();
    assert!(log.contains("input paused"), "never held back:\n{log}");
    assert!(!log.contains("messages dropped"), "{log}");
}

/// (b) A `down` filter brings Mosquitto's messages into fulmar, in order; with an `up`
/// filter that matches them too (and 5.0 upstream), none goes back up: upstream's
/// subscriber sees each once.
#[test]
fn messages_come_down_and_never_go_back_up() {
    let dir = DataDir::new("bridge-down");
    let up_port = free_port();
    let _mosquitto = Mosquitto::start(up_port, &dir);
    let upstream_sub = subscriber(up_port, None, "commands/#");
    let broker = fulmar(
        &dir,
        &bridge_conf(
            "edge-down",
            up_port,
            "protocol = \"5\"\nup = [{ filter = \"#\" }]\ndown = [{ filter = \"commands/#\" }]\n",
        ),
    );
    wait_log(&broker, "bridge: connected upstream", 1);
    let local_sub = subscriber(broker.port(), None, "commands/#");
    // The bridge's SUBSCRIBE goes right after the CONNACK; a probe shows it is in place.
    probe(up_port, "commands/probe", &local_sub);
    let sent = payloads("down", 100);
    publish(up_port, "commands/edge", &sent);
    let got: Vec<String> = collect(&local_sub, sent.len())
        .into_iter()
        .filter(|l| !l.starts_with("commands/probe"))
        .collect();
    assert_eq!(got, lines_of("commands/edge", &sent));
    let upstream: Vec<String> = collect(&upstream_sub, sent.len())
        .into_iter()
        .filter(|l| !l.starts_with("commands/probe"))
        .collect();
    assert_eq!(upstream, lines_of("commands/edge", &sent), "echoed back up");
}

/// A bridge whose messages went up once (the probe), then lost upstream: Mosquitto
/// stopped, and the bridge saw it go. What is published meanwhile is kept.
struct Outage {
    dir: DataDir,
    mosquitto: Mosquitto,
    broker: Fulmar,
    conf: String,
}

impl Outage {
    fn start(name: &str) -> Self {
        Self::start_with(name, "")
    }

    /// [`Outage::start`] with more configuration (`limits`, say) before the bridge.
    fn start_with(name: &str, conf: &str) -> Self {
        let dir = DataDir::new(name);
        let up_port = free_port();
        let mosquitto = Mosquitto::start(up_port, &dir);
        let conf =
            conf.to_owned() + &bridge_conf(name, up_port, "up = [{ filter = \"sensors/#\" }]\n");
        let broker = fulmar(&dir, &conf);
        wait_log(&broker, "bridge: connected upstream", 1);
        // The subscriber's persistent session upstream, which Mosquitto saves when it
        // stops: what the bridge forwards once Mosquitto is back waits there for it.
        let sub = subscriber(up_port, Some("up-sub"), "sensors/#");
        probe(broker.port(), "sensors/probe", &sub);
        drop(sub);
        let mut outage = Self {
            dir,
            mosquitto,
            broker,
            conf,
        };
        outage.mosquitto.stop();
        wait_log(&outage.broker, "bridge: connection upstream lost", 1);
        outage
    }

    /// Starts Mosquitto again, waits until the bridge is connected again (what it
    /// forwards then waits in the subscriber's saved session), and starts the subscriber
    /// on that session.
    fn upstream_back(&mut self) -> Lines {
        let before = connections(&self.broker);
        self.mosquitto.restart();
        wait_log(&self.broker, "bridge: connected upstream", before + 1);
        fulmar_tests::mosquitto_sub_lines(
            self.mosquitto.port,
            &["-q", "1", "-v", "-c", "-i", "up-sub", "-t", "sensors/#"],
        )
    }
}

/// A graceful stop (SIGTERM) says DISCONNECT upstream [MQTT-3.14.4-1] instead of just
/// closing the socket: Mosquitto logs a client that disconnected, not one that closed its
/// connection.
#[test]
fn a_graceful_stop_disconnects_the_bridge_cleanly() {
    let dir = DataDir::new("bridge-stop");
    let up_port = free_port();
    let _mosquitto = Mosquitto::start(up_port, &dir);
    let mut broker = fulmar(
        &dir,
        &bridge_conf("edge-stop", up_port, "up = [{ filter = \"sensors/#\" }]\n"),
    );
    wait_log(&broker, "bridge: connected upstream", 1);
    let status = broker.terminate().expect("fulmar exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    let log = dir.path().join("mosquitto.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + WAIT;
    while !read().contains("Client edge-stop disconnected") {
        assert!(
            Instant::now() < deadline,
            "mosquitto's log ({}):\n{}\nfulmar's:\n{}",
            log.display(),
            read(),
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !read().contains("Client edge-stop closed its connection"),
        "{}",
        read()
    );
}

/// (c) Store and forward: Mosquitto stopped, messages published to fulmar meanwhile,
/// Mosquitto restarted on the same port: they all arrive, in order, once each.
#[test]
fn messages_published_while_upstream_is_away_arrive_once_it_is_back() {
    let mut outage = Outage::start("bridge-outage");
    let sent = payloads("kept", 50);
    publish(outage.broker.port(), "sensors/t", &sent);
    let sub = outage.upstream_back();
    assert_eq!(collect(&sub, sent.len()), lines_of("sensors/t", &sent));
}

/// (d) With persistence (the default), fulmar killed -9 while Mosquitto is away, then
/// restarted: the backlog it acknowledged still arrives, in order.
#[test]
fn the_backlog_survives_a_kill_of_fulmar() {
    let mut outage = Outage::start("bridge-crash");
    let sent = payloads("crash", 50);
    publish(outage.broker.port(), "sensors/t", &sent);
    outage.broker.kill();
    outage.broker = fulmar(&outage.dir, &outage.conf);
    let sub = outage.upstream_back();
    let got = collect(&sub, sent.len());
    // QoS 1: a message the bridge had in flight when upstream went away may come twice;
    // the first time of each keeps the order, and none is missing.
    let mut firsts = got.clone();
    let mut seen = std::collections::HashSet::new();
    firsts.retain(|l| seen.insert(l.clone()));
    assert_eq!(firsts, lines_of("sensors/t", &sent), "{got:#?}");
}

/// The backlog is bounded: while upstream is away, messages beyond the bridge's queue
/// limit (`limits.max_queued_messages`) are dropped, the newest first, and counted on the
/// retained `$SYS/broker/bridge/<name>/dropped`; the others still arrive, in order.
#[test]
fn a_full_backlog_drops_the_newest_and_counts_them() {
    let mut outage = Outage::start_with("bridge-full", "[limits]\nmax_queued_messages = 5\n");
    let sent = payloads("full", 8);
    publish(outage.broker.port(), "sensors/t", &sent);
    let dropped = fulmar_tests::mosquitto_sub_lines(
        outage.broker.port(),
        &["-v", "-t", "$SYS/broker/bridge/bridge-full/dropped"],
    );
    dropped.expect_line(WAIT, |line| line.ends_with("/dropped 3"));
    // What an operator's Prometheus sees: down, five held, three dropped.
    let metrics = metrics_addr(&outage.broker);
    let bridge = |family: &str| {
        fulmar_tests::scrape(metrics, "/metrics")
            .get(&format!("{family}{{bridge=\"bridge-full\"}}"))
    };
    wait_until(WAIT, || bridge("fulmar_bridge_dropped_total") == 3.0);
    assert_eq!(bridge("fulmar_bridge_up"), 0.0);
    assert_eq!(bridge("fulmar_bridge_backlog_messages"), 5.0);
    let sub = outage.upstream_back();
    assert_eq!(collect(&sub, 5), lines_of("sensors/t", &sent[..5]));
    wait_until(WAIT, || {
        bridge("fulmar_bridge_up") == 1.0 && bridge("fulmar_bridge_backlog_messages") == 0.0
    });
    assert_eq!(bridge("fulmar_bridge_dropped_total"), 3.0);
}

/// A CA, a server certificate it signed for 127.0.0.1 and its key, another CA, and a
/// client certificate the first CA signed and its key, written into `dir`:
/// `[ca, server_cert, server_key, other_ca, client_cert, client_key]`.
fn pki(dir: &DataDir) -> [PathBuf; 6] {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType,
    };
    // Named: OpenSSL (Mosquitto) finds no issuer for a certificate whose issuer has an
    // empty name.
    let ca = |name: &str| {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let (root, other) = (ca("bridge test CA"), ca("another CA"));
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &root).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::default()
        .signed_by(&client_key, &root)
        .unwrap();
    [
        dir.write("ca.pem", &root.pem()),
        dir.write("server.pem", &cert.pem()),
        dir.write("server.key", &key.serialize_pem()),
        dir.write("other-ca.pem", &other.pem()),
        dir.write("client.pem", &client.pem()),
        dir.write("client.key", &client_key.serialize_pem()),
    ]
}

/// With `tls = true` the bridge speaks TLS to Mosquitto and verifies its certificate
/// against `ca_file`: messages go up; against another CA the handshake fails, the log
/// says why, and nothing goes up. With `cert` and `key` it passes a listener that
/// requires a client certificate.
#[test]
fn a_tls_bridge_verifies_upstreams_certificate() {
    let dir = DataDir::new("bridge-tls");
    let [ca, cert, key, other_ca, client_cert, client_key] = pki(&dir);
    let (up_port, tls_port, mtls_port) = (free_port(), free_port(), free_port());
    let (cert, key, ca_path) = (cert.display(), key.display(), ca.display());
    let _mosquitto = Mosquitto::start_with(
        up_port,
        &dir,
        &format!(
            "listener {tls_port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n\
             listener {mtls_port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n\
             cafile {ca_path}\nrequire_certificate true\n"
        ),
    );
    let sub = subscriber(up_port, None, "sensors/#");
    let tls = |name: &str, port: u16, ca: &PathBuf, more: &str| {
        let filters = format!(
            "tls = true\nca_file = \"{}\"\n{more}up = [{{ filter = \"sensors/#\" }}]\n",
            ca.display()
        );
        bridge_conf(name, port, &filters)
    };
    let broker = fulmar(
        &DataDir::new("bridge-tls-edge"),
        &tls("edge-tls", tls_port, &ca, ""),
    );
    wait_log(&broker, "bridge: connected upstream", 1);
    let sent = payloads("tls", 20);
    publish(broker.port(), "sensors/t", &sent);
    assert_eq!(collect(&sub, sent.len()), lines_of("sensors/t", &sent));

    let stranger = fulmar(
        &DataDir::new("bridge-tls-other"),
        &tls("edge-other", tls_port, &other_ca, ""),
    );
    wait_log(&stranger, "invalid peer certificate", 1);
    publish(stranger.port(), "sensors/t", &["never".to_owned()]);
    assert_eq!(collect(&sub, 0), Vec::<String>::new());
    assert_eq!(connections(&stranger), 0, "{}", stranger.log());

    let client = format!(
        "cert = \"{}\"\nkey = \"{}\"\n",
        client_cert.display(),
        client_key.display()
    );
    let authenticated = fulmar(
        &DataDir::new("bridge-mtls"),
        &tls("edge-mtls", mtls_port, &ca, &client),
    );
    wait_log(&authenticated, "bridge: connected upstream", 1);
    publish(authenticated.port(), "sensors/m", &["certified".to_owned()]);
    assert_eq!(collect(&sub, 1), ["sensors/m certified"]);

    // `fulmar check-config` loads the files as the broker would.
    let conf = dir.write("bad-ca.toml", &tls("edge-bad", tls_port, &client_key, ""));
    let checked = Command::new(fulmar_bin())
        .arg("check-config")
        .arg(conf)
        .output()
        .expect("run fulmar check-config");
    let said = String::from_utf8_lossy(&checked.stderr);
    assert!(!checked.status.success(), "{said}");
    assert!(said.contains("TLS for the bridge \"edge-bad\""), "{said}");
}

/// fulmar bridged to fulmar over MQTT 5.0: messages go up in order, and come down.
#[test]
fn fulmar_bridges_to_fulmar() {
    let up_dir = DataDir::new("bridge-upstream-fulmar");
    let upstream = fulmar(&up_dir, "");
    let up_sub = subscriber(upstream.port(), None, "sensors/#");
    let dir = DataDir::new("bridge-edge-fulmar");
    let broker = fulmar(
        &dir,
        &bridge_conf(
            "edge-f",
            upstream.port(),
            "protocol = \"5\"\nup = [{ filter = \"sensors/#\", qos = 2 }]\n\
             down = [{ filter = \"commands/#\" }]\n",
        ),
    );
    wait_log(&broker, "bridge: connected upstream", 1);
    let sent = payloads("f", 100);
    fulmar_tests::mosquitto_pub_lines(broker.port(), &["-q", "2", "-t", "sensors/t"], &sent);
    assert_eq!(collect(&up_sub, sent.len()), lines_of("sensors/t", &sent));

    let local_sub = subscriber(broker.port(), None, "commands/#");
    probe(upstream.port(), "commands/probe", &local_sub);
}
