//! The QEMU firmware (MPS2 AN386, LAN9118, embassy-net) with real clients from the host:
//! `mosquitto_pub` / `mosquitto_sub`, `rumqttc` and the Python `paho-mqtt` (the venv
//! `cargo xtask test setup` makes), MQTT 3.1.1 and 5.0, plus raw sockets
//! where a test needs bytes no client library sends (abrupt closes, garbage, a packet over
//! the firmware's 2 KiB limit).
//!
//! Each test boots its own board (`fulmar_tests::firmware::Board`, about a second) on a
//! free loopback port, with its own flash file; every wait is bounded.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fulmar_tests::Lines;
use fulmar_tests::firmware::Board;

/// How long any single expected thing (a message, an acknowledgment) may take. Generous:
/// the board is emulated, on a CI machine shared with other jobs.
const WAIT: Duration = Duration::from_secs(15);

/// The firmware's client limit (`fulmar_firmware::capacity::CLIENTS`).
const CLIENTS: usize = 8;

// --- helpers ------------------------------------------------------------------------------

/// mosquitto_sub's output format for tests that check the RETAIN flag as delivered.
const WITH_RETAIN_FLAG: &str = "%r %t %p";

/// `program -h 127.0.0.1 -p PORT` followed by `args` split at spaces.
fn mosquitto(program: &str, board: &Board, args: &str) -> Command {
    let mut command = Command::new(program);
    command
        .args(["-h", "127.0.0.1", "-p", &board.port().to_string()])
        .args(args.split_whitespace());
    command
}

/// `mosquitto_pub args...`, which must succeed.
fn publish(board: &Board, args: &str) {
    let status = mosquitto("mosquitto_pub", board, args)
        .status()
        .expect("run mosquitto_pub");
    assert!(status.success(), "mosquitto_pub {args}: {status}");
}

/// Starts `mosquitto_sub args... -t ready/<tag> -v` (`-F` [`WITH_RETAIN_FLAG`] if
/// `retain_flag`) and returns once it is subscribed: it has printed a message published to
/// its `ready/<tag>` topic.
fn subscribe(board: &Board, tag: &str, args: &str, retain_flag: bool) -> Lines {
    let ready = format!("ready/{tag}");
    let mut command = mosquitto("mosquitto_sub", board, args);
    command.args(["-t", &ready, "-v"]);
    if retain_flag {
        command.args(["-F", WITH_RETAIN_FLAG]);
    }
    let sub = Lines::spawn(command);
    let deadline = Instant::now() + WAIT;
    loop {
        publish(board, &format!("-t {ready} -m 1"));
        if sub
            .next_line(Duration::from_millis(500))
            .is_some_and(|line| line.ends_with(&format!("{ready} 1")))
        {
            return sub;
        }
        assert!(
            Instant::now() < deadline,
            "mosquitto_sub {args} never got ready"
        );
    }
}

/// The first message `mosquitto_sub args... -C 1 -F` [`WITH_RETAIN_FLAG`] prints, or an
/// empty string if none comes within `-W` seconds (10 unless `args` say otherwise).
fn first_message(board: &Board, args: &str) -> String {
    let mut command = mosquitto("mosquitto_sub", board, args);
    command.args(["-C", "1", "-F", WITH_RETAIN_FLAG]);
    if !args.contains("-W") {
        command.args(["-W", "10"]);
    }
    let output = command.output().expect("run mosquitto_sub");
    String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_owned()
}

/// A client on a raw socket, for what client libraries will not send.
struct Raw {
    stream: TcpStream,
}

/// A will: topic and message.
type Will<'a> = Option<(&'a str, &'a str)>;

impl Raw {
    /// Connects and sends CONNECT (`version` 4 = 3.1.1, 5 = 5.0; keep alive 60 s);
    /// returns the CONNACK's return / reason code.
    fn connect(board: &Board, id: &str, version: u8, clean: bool, will: Will<'_>) -> (Self, u8) {
        Self::connect_with(board, &connect_packet(id, version, clean, will))
    }

    /// Connects and sends `connect`; returns the CONNACK's return / reason code.
    fn connect_with(board: &Board, connect: &[u8]) -> (Self, u8) {
        let stream = TcpStream::connect(board.addr()).expect("connect to the board");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut raw = Self { stream };
        raw.send(connect);
        let (header, body) = raw.packet().expect("a CONNACK");
        assert_eq!(header, 0x20, "expected CONNACK, got {header:#04x} {body:?}");
        (raw, body[1])
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to the board");
    }

    /// The next packet (first header byte, body), or `None` if the broker closed.
    fn packet(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut header = [0u8; 1];
        self.stream.read_exact(&mut header).ok()?;
        let mut len = 0usize;
        for shift in [0, 7, 14, 21] {
            let mut byte = [0u8; 1];
            self.stream.read_exact(&mut byte).ok()?;
            len |= usize::from(byte[0] & 0x7F) << shift;
            if byte[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).ok()?;
        Some((header[0], body))
    }

    /// Whether the broker closes the connection within [`WAIT`].
    fn closed_by_broker(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 256];
        while Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A CONNECT packet (short enough for a one-byte remaining length).
fn connect_packet(id: &str, version: u8, clean: bool, will: Will<'_>) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.push(version);
    let mut flags = if clean { 0x02 } else { 0 };
    if will.is_some() {
        flags |= 0x04;
    }
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    if version == 5 {
        body.push(0); // no CONNECT properties
    }
    string(&mut body, id);
    if let Some((topic, message)) = will {
        if version == 5 {
            body.push(0); // no will properties
        }
        string(&mut body, topic);
        string(&mut body, message);
    }
    assert!(body.len() < 128);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

// --- tests --------------------------------------------------------------------------------

#[test]
fn mosquitto_clients_v311_and_v5_qos_0_1_2_retained_and_wildcards() {
    let board = Board::boot();
    publish(&board, "-V mqttv5 -q 1 -r -t sensors/a/temp -m 21.5");
    // A new subscriber of either version gets the retained message at once, flagged.
    for version in ["mqttv311", "mqttv5"] {
        let args = format!("-V {version} -t sensors/+/temp");
        assert_eq!(first_message(&board, &args), "1 sensors/a/temp 21.5");
    }
    let v311 = subscribe(
        &board,
        "v311",
        "-V mqttv311 -q 2 -t sensors/+/temp -t alerts/#",
        true,
    );
    let v5 = subscribe(&board, "v5", "-V mqttv5 -q 2 -t sensors/#", true);
    publish(&board, "-V mqttv311 -q 0 -t sensors/b/temp -m q0");
    publish(&board, "-V mqttv5 -q 1 -t sensors/c/temp -m q1");
    publish(&board, "-V mqttv311 -q 2 -t alerts/x/y -m q2");
    publish(&board, "-V mqttv5 -q 2 -t sensors/c/hum -m h");
    // Live messages arrive with RETAIN 0, in order, and only where a filter matches (the
    // subscriber's own retained copy came before its ready line).
    for line in [
        "0 sensors/b/temp q0",
        "0 sensors/c/temp q1",
        "0 alerts/x/y q2",
    ] {
        v311.expect_line(WAIT, |l| l == line);
    }
    for line in [
        "0 sensors/b/temp q0",
        "0 sensors/c/temp q1",
        "0 sensors/c/hum h",
    ] {
        v5.expect_line(WAIT, |l| l == line);
    }
    assert_eq!(
        v311.next_line(Duration::from_millis(500)),
        None,
        "sensors/c/hum matched sensors/+/temp"
    );
    // An empty retained message clears the retained one.
    publish(&board, "-r -n -t sensors/a/temp");
    assert_eq!(first_message(&board, "-t sensors/a/temp -W 2"), "");
}

#[test]
fn rumqttc_v311_and_v5_clients_exchange_messages() {
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::{Event, Packet, QoS};

    let board = Board::boot();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut options = rumqttc::MqttOptions::new("rq-v311", "127.0.0.1", board.port());
        options.set_keep_alive(Duration::from_secs(30));
        let (v311, mut v311_loop) = rumqttc::AsyncClient::new(options, 16);
        let mut options = rumqttc::v5::MqttOptions::new("rq-v5", "127.0.0.1", board.port());
        options.set_keep_alive(Duration::from_secs(30));
        let (v5, mut v5_loop) = rumqttc::v5::AsyncClient::new(options, 16);

        v311.subscribe("rq/to311", QoS::ExactlyOnce).await.unwrap();
        v5.subscribe("rq/+", QoS5::AtLeastOnce).await.unwrap();
        // Publish only once both SUBACKs are in, then wait for both deliveries.
        let (mut acks, mut got311, mut got5) = (0, None, None);
        let deadline = tokio::time::Instant::now() + WAIT;
        while got311.is_none() || got5.is_none() {
            tokio::select! {
                event = v311_loop.poll() => match event.expect("3.1.1 client connected") {
                    Event::Incoming(Packet::SubAck(_)) => acks += 1,
                    Event::Incoming(Packet::Publish(p)) => got311 = Some((p.topic, p.payload, p.qos)),
                    _ => {}
                },
                event = v5_loop.poll() => match event.expect("5.0 client connected") {
                    rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::SubAck(_)) => acks += 1,
                    rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(p)) => {
                        got5 = Some((p.topic, p.payload, p.qos));
                    }
                    _ => {}
                },
                () = tokio::time::sleep_until(deadline) => panic!("rumqttc exchange timed out: {got311:?} {got5:?}"),
            }
            if acks == 2 {
                acks += 1;
                v311.publish("rq/to5", QoS::AtLeastOnce, false, "from 3.1.1").await.unwrap();
                v5.publish("rq/to311", QoS5::ExactlyOnce, false, "from 5.0").await.unwrap();
            }
        }
        let (topic, payload, qos) = got311.unwrap();
        assert_eq!((topic.as_str(), &payload[..], qos), ("rq/to311", &b"from 5.0"[..], QoS::ExactlyOnce));
        let (topic, payload, qos) = got5.unwrap();
        // The 5.0 client gets both publishes on rq/+; the first one it sees is either.
        assert!(topic == "rq/to5" || topic == "rq/to311", "{topic:?}");
        assert!(&payload[..] == b"from 3.1.1" || &payload[..] == b"from 5.0");
        assert_eq!(qos, QoS5::AtLeastOnce);
    });
}

#[test]
fn will_on_abrupt_close_and_persistent_session_across_reconnect() {
    let board = Board::boot();
    let wills = subscribe(&board, "wills", "-t wills/#", false);
    for version in [4, 5] {
        let id = format!("dev-v{version}");
        let topic = format!("wills/{id}");
        let (raw, code) = Raw::connect(&board, &id, version, true, Some((&topic, "gone")));
        assert_eq!(code, 0);
        // No DISCONNECT: the socket just closes [MQTT-3.1.2-8].
        drop(raw);
        wills.expect_line(WAIT, |l| l == format!("{topic} gone"));
    }

    // A 3.1.1 session kept across a reconnect: a QoS 1 message published while the client
    // is away is delivered when it comes back.
    let args = "-V mqttv311 -c -i keeper -q 1 -t queued/#";
    let mut keeper = subscribe(&board, "keeper", args, false);
    keeper.kill();
    publish(&board, "-q 1 -t queued/x -m while-away");
    let back = Lines::spawn(mosquitto("mosquitto_sub", &board, &format!("{args} -v")));
    back.expect_line(WAIT, |l| l == "queued/x while-away");
}

/// Whether `needle` is in the board's flash file.
fn in_flash(board: &Board, needle: &[u8]) -> bool {
    board
        .flash()
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Waits until `needle` is in the board's flash file (the firmware writes it through
/// semihosting, changes in order: what came before is there too), checks the log shows
/// no failed flash write (a word written twice among them), then cuts the power.
fn power_off_once_written(board: &mut Board, needle: &[u8]) {
    fulmar_tests::wait_until(WAIT, || in_flash(board, needle));
    let log = board.decoded_log();
    for failure in ["written twice", "flash write failed", "not persisted"] {
        assert!(!log.contains(failure), "{log}");
    }
    board.power_off();
}

/// The board's flash is written once per 32-byte word between erases (as the STM32H7's):
/// what comes back is each key's newest state, overwritten and deleted keys included.
#[test]
fn retained_messages_and_persistent_sessions_survive_a_restart() {
    let mut first = Board::boot();
    publish(&first, "-q 1 -r -t config/mode -m eco");
    // Overwritten, and set then cleared, before the restart.
    publish(&first, "-q 1 -r -t config/mode -m normal");
    publish(&first, "-q 1 -r -t config/old -m stale");
    publish(&first, "-q 1 -r -t config/old -n");
    // A persistent session ended by a clean-session connection: its keys are deleted.
    let gone = "-V mqttv311 -c -i gone -q 1 -t gone/#";
    subscribe(&first, "gone", gone, false).kill();
    let (raw, code) = Raw::connect(&first, "gone", 4, true, None);
    assert_eq!(code, 0);
    drop(raw);
    let args = "-V mqttv311 -c -i keeper -q 1 -t queued/#";
    let mut keeper = subscribe(&first, "keeper", args, false);
    keeper.kill();
    publish(&first, "-q 1 -t queued/x -m before-restart");
    power_off_once_written(&mut first, b"before-restart");

    let board = Board::boot_in(first.state_dir());
    assert_eq!(
        first_message(&board, "-t config/mode"),
        "1 config/mode normal"
    );
    assert_eq!(first_message(&board, "-t config/old -W 2"), "");
    let back = Lines::spawn(mosquitto("mosquitto_sub", &board, &format!("{args} -v")));
    back.expect_line(WAIT, |l| l == "queued/x before-restart");
    // Had the deleted session come back, its subscription would queue this for it.
    publish(&board, "-q 1 -t gone/x -m for-a-deleted-session");
    assert_eq!(first_message(&board, &format!("{gone} -W 2")), "");
}

/// Every cleared retained message leaves a tombstone in the board's append-only flash
/// store; when they fill it (64 KiB), the board erases it and writes the live state again
/// (logged), and a restart finds exactly that state: the kept retained message, none of
/// the cleared ones.
#[test]
fn a_flash_store_full_of_deleted_keys_is_rewritten_with_the_live_state() {
    let mut first = Board::boot();
    publish(&first, "-q 1 -r -t keep/mode -m kept");
    let (mut raw, code) = Raw::connect(&first, "churn", 4, true, None);
    assert_eq!(code, 0);
    let retained = |topic: &str, payload: &[u8]| {
        let mut body = Vec::new();
        string(&mut body, topic);
        body.extend_from_slice(payload);
        let mut packet = vec![0x31]; // PUBLISH, QoS 0, RETAIN
        var_int(body.len(), &mut packet);
        packet.extend(body);
        packet
    };
    // Topics near the store's 160-byte key limit make large tombstones: about 170 take half
    // the store, when the board rewrites it. Batches of 8 stay under the broker's 16 pending
    // changes (beyond them it asks for a reset, which would empty the store instead).
    let padding = "p".repeat(130);
    let rewritten = |board: &Board| board.decoded_log().contains("writing the live state again");
    let mut after_rewrite = None;
    for batch in 0..48 {
        let topics: Vec<String> = (0..8)
            .map(|i| format!("churn/{batch:02}/{i}/{padding}"))
            .collect();
        for topic in &topics {
            raw.send(&retained(topic, b"x"));
        }
        // Written in order: once the last is in flash, the batch's are (and the previous
        // batch's tombstones).
        let last = topics.last().map(String::as_bytes).unwrap_or_default();
        fulmar_tests::wait_until(WAIT, || in_flash(&first, last));
        for topic in &topics {
            raw.send(&retained(topic, b""));
        }
        // Two batches more once rewritten: the store goes on after it.
        match after_rewrite {
            None if batch >= 16 && rewritten(&first) => after_rewrite = Some(batch),
            Some(at) if batch >= at + 2 => break,
            _ => {}
        }
    }
    assert!(after_rewrite.is_some(), "{}", first.decoded_log());
    // The last clears reach flash before this message does.
    publish(&first, "-q 1 -r -t keep/last -m done");
    power_off_once_written(&mut first, b"keep/last");

    let board = Board::boot_in(first.state_dir());
    assert_eq!(first_message(&board, "-t keep/mode"), "1 keep/mode kept");
    assert_eq!(first_message(&board, "-t keep/last"), "1 keep/last done");
    assert_eq!(first_message(&board, "-t churn/# -W 2"), "");
}

/// Threads that keep every host CPU busy until dropped: the board's clock must follow the
/// host's, not how often QEMU gets to run it.
struct HostLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl HostLoad {
    /// Two busy threads per host CPU.
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        let threads = (0..2 * cpus)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for HostLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_silent_client_is_closed_after_one_and_a_half_keep_alives_of_wall_time_on_a_busy_host() {
    let board = Board::boot();
    let wills = subscribe(&board, "silent", "-t wills/#", false);
    let mut connect = connect_packet("silent", 4, true, Some(("wills/silent", "timed out")));
    // Keep alive 2 s (bytes 10..12: after the fixed header, "MQTT", level and flags).
    connect[10..12].copy_from_slice(&2u16.to_be_bytes());
    let load = HostLoad::start();
    let started = Instant::now();
    let (mut silent, code) = Raw::connect_with(&board, &connect);
    assert_eq!(code, 0);
    // No PINGREQ: after 3 s the broker closes [MQTT-3.1.2-24] and publishes the will. The
    // board's clock is QEMU's virtual clock, which follows the host's even while QEMU gets
    // little CPU, so the 3 s are the host's 3 s (a clock counting timer interrupts would
    // run slow here, as QEMU delivers fewer of them).
    assert!(silent.closed_by_broker());
    let waited = started.elapsed();
    drop(load);
    eprintln!("silent client closed after {waited:?} (keep alive 2 s, host busy)");
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(5),
        "closed after {waited:?}, not at 1.5 keep-alives (3 s)"
    );
    wills.expect_line(WAIT, |l| l == "wills/silent timed out");
}

#[test]
fn clients_that_send_faster_than_they_read_their_answers_are_held_back_not_closed() {
    const PUBLISHES: u16 = 200;
    const PINGS: usize = 128;
    let board = Board::boot();
    // Three clients each send 200 QoS 1 PUBLISHes in one write (many to a TCP segment)
    // and read nothing yet; a fourth pipelines 128 PINGREQs, 64 in each 128-byte inbox
    // the board feeds its core at once: more answers than the board's pool of 40 pending
    // control packets. Each may have 3 answers waiting; beyond that the board stops
    // consuming its input until they are written. (With no such limit the PINGREQs
    // overflowed the pool and their client was closed.)
    let mut greedy: Vec<Raw> = (0..3)
        .map(|i| {
            let (mut raw, code) = Raw::connect(&board, &format!("greedy{i}"), 4, true, None);
            assert_eq!(code, 0);
            let mut burst = Vec::new();
            for id in 1..=PUBLISHES {
                // PUBLISH QoS 1 to "b": topic, packet identifier, a one-byte payload.
                burst.extend_from_slice(&[0x32, 6, 0, 1, b'b']);
                burst.extend_from_slice(&id.to_be_bytes());
                burst.push(b'x');
            }
            raw.send(&burst);
            raw
        })
        .collect();
    let (mut pinger, code) = Raw::connect(&board, "pinger", 4, true, None);
    assert_eq!(code, 0);
    pinger.send(&[0xC0, 0].repeat(PINGS));
    // Another client subscribes and gets a QoS 1 message through meanwhile.
    let other = subscribe(&board, "other", "-q 1 -t t", false);
    publish(&board, "-q 1 -t t -m through");
    other.expect_line(WAIT, |l| l == "t through");
    // Every PUBLISH of the greedy clients is acknowledged, in order [MQTT-4.6.0-2], and
    // every PINGREQ answered.
    for g in &mut greedy {
        for id in 1..=PUBLISHES {
            let (header, body) = g.packet().expect("a PUBACK");
            assert_eq!((header, &body[..2]), (0x40, &id.to_be_bytes()[..]));
        }
    }
    for i in 0..PINGS {
        let answer = pinger.packet();
        assert_eq!(answer, Some((0xD0, vec![])), "PINGRESP {i} of {PINGS}");
    }
}

#[test]
fn the_client_over_the_limit_gets_a_connack_refusal_and_the_others_keep_working() {
    let board = Board::boot();
    let mut clients: Vec<Raw> = (0..CLIENTS)
        .map(|i| {
            let (raw, code) = Raw::connect(&board, &format!("c{i}"), 4, true, None);
            assert_eq!(code, 0, "client {i} refused");
            raw
        })
        .collect();
    // 3.1.1: return code 3, server unavailable; 5.0: 0x97, quota exceeded.
    let (mut extra, code) = Raw::connect(&board, "extra311", 4, true, None);
    assert_eq!(code, 3);
    assert!(extra.closed_by_broker());
    let (mut extra, code) = Raw::connect(&board, "extra5", 5, true, None);
    assert_eq!(code, 0x97);
    assert!(extra.closed_by_broker());
    // The others are still served: PINGREQ → PINGRESP.
    for client in &mut clients {
        client.send(&[0xC0, 0]);
        assert_eq!(client.packet(), Some((0xD0, Vec::new())));
    }
    // Two leave; two newcomers get in.
    for mut client in clients.drain(..2) {
        client.send(&[0xE0, 0]);
        assert!(client.closed_by_broker());
    }
    let sub = subscribe(&board, "newcomer", "-t limit/t", false);
    publish(&board, "-t limit/t -m in");
    sub.expect_line(WAIT, |l| l == "limit/t in");
}

#[test]
fn garbage_and_oversized_packets_close_only_that_client() {
    let board = Board::boot();
    let sub = subscribe(&board, "bystander", "-t calm/#", false);
    let (mut bystander, code) = Raw::connect(&board, "raw-bystander", 5, true, None);
    assert_eq!(code, 0);

    // Not MQTT at all.
    let mut garbage = TcpStream::connect(board.addr())
        .map(|stream| Raw { stream })
        .unwrap();
    garbage.stream.set_read_timeout(Some(WAIT)).unwrap();
    garbage.send(b"GET / HTTP/1.1\r\nHost: board\r\n\r\n");
    assert!(
        garbage.closed_by_broker(),
        "garbage did not close the connection"
    );

    // A PUBLISH announcing 3000 bytes, over the firmware's 2 KiB packet limit.
    let (mut big, code) = Raw::connect(&board, "oversized", 4, true, None);
    assert_eq!(code, 0);
    let mut publish_header = vec![0x30, 0xB8, 0x17];
    publish_header.extend_from_slice(&[0u8; 64]);
    big.send(&publish_header);
    assert!(
        big.closed_by_broker(),
        "an oversized packet did not close the connection"
    );

    // Everyone else is still served.
    publish(&board, "-t calm/after -m ok");
    sub.expect_line(WAIT, |l| l == "calm/after ok");
    bystander.send(&[0xC0, 0]);
    assert_eq!(bystander.packet(), Some((0xD0, Vec::new())));
}

#[test]
fn fifty_connect_disconnect_cycles_exhaust_no_socket() {
    let mut board = Board::boot();
    for i in 0..50 {
        let (mut raw, code) =
            Raw::connect(&board, &format!("cycle{i}"), 4 + (i % 2) as u8, true, None);
        assert_eq!(code, 0, "cycle {i} refused");
        raw.send(&[0xE0, 0]);
        assert!(raw.closed_by_broker(), "cycle {i} not closed");
    }
    // Every client slot is still free.
    let clients: Vec<Raw> = (0..CLIENTS)
        .map(|i| {
            let (raw, code) = Raw::connect(&board, &format!("after{i}"), 4, true, None);
            assert_eq!(code, 0, "slot {i} leaked");
            raw
        })
        .collect();
    drop(clients);
    assert!(board.is_running());
}

/// MQTT's variable byte integer (§1.5.5), for packets longer than 127 bytes.
fn var_int(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (value % 128) as u8;
        value /= 128;
        out.push(if value > 0 { byte | 0x80 } else { byte });
        if value == 0 {
            return;
        }
    }
}

#[test]
fn packets_near_2_kib_cross_the_board_both_ways_from_several_clients_at_once() {
    let board = Board::boot();
    // A 5.0 subscriber at QoS 1 on a raw socket, reading each PUBLISH whole.
    let (mut sub, code) = Raw::connect(&board, "big-sub", 5, true, None);
    assert_eq!(code, 0);
    let mut body = vec![0, 1, 0]; // packet identifier 1, no properties
    string(&mut body, "big/#");
    body.push(1);
    let mut subscribe = vec![0x82, body.len() as u8];
    subscribe.extend(body);
    sub.send(&subscribe);
    assert_eq!(sub.packet(), Some((0x90, vec![0, 1, 0, 1])));

    // Three 3.1.1 publishers, more than the board has buffers for packets larger than a
    // socket's own (capacity.rs: one), each with a QoS 1 PUBLISH of 2 012 bytes (the limit is
    // 2 048) sent in two halves: all three are incomplete at once.
    const PAYLOAD: usize = 2000;
    let mut publishers: Vec<(Raw, Vec<u8>, Vec<u8>)> = (0..3u8)
        .map(|i| {
            let (raw, code) = Raw::connect(&board, &format!("big-pub{i}"), 4, true, None);
            assert_eq!(code, 0);
            let payload: Vec<u8> = (0..PAYLOAD)
                .map(|j| (j * 7 + usize::from(i)) as u8)
                .collect();
            let mut body = Vec::new();
            string(&mut body, &format!("big/{i}"));
            body.extend_from_slice(&[0, 1]);
            body.extend_from_slice(&payload);
            let mut packet = vec![0x32];
            var_int(body.len(), &mut packet);
            packet.extend(body);
            (raw, packet, payload)
        })
        .collect();
    for (raw, packet, _) in &mut publishers {
        raw.send(&packet[..1000]);
    }
    std::thread::sleep(Duration::from_millis(300));
    for (raw, packet, _) in &mut publishers {
        raw.send(&packet[1000..]);
    }
    for (raw, _, _) in &mut publishers {
        assert_eq!(raw.packet(), Some((0x40, vec![0, 1])), "no PUBACK");
    }

    // The subscriber gets each payload whole (topic, packet identifier, no properties).
    let mut received: Vec<(String, Vec<u8>)> = (0..3)
        .map(|_| {
            let (header, body) = sub.packet().expect("a PUBLISH");
            assert_eq!(header, 0x32, "expected a QoS 1 PUBLISH");
            let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let topic = String::from_utf8(body[2..2 + topic_len].to_vec()).unwrap();
            let pid = &body[2 + topic_len..4 + topic_len];
            assert_eq!(body[4 + topic_len], 0, "unexpected properties");
            let mut puback = vec![0x40, 2];
            puback.extend_from_slice(pid);
            sub.send(&puback);
            (topic, body[5 + topic_len..].to_vec())
        })
        .collect();
    received.sort();
    for (i, (topic, payload)) in received.iter().enumerate() {
        assert_eq!(topic, &format!("big/{i}"));
        assert!(payload == &publishers[i].2, "payload of big/{i} differs");
    }
}

/// paho-mqtt (Python) clients of both versions against the board, in one script: a 5.0
/// subscriber whose subscription identifier comes back on every delivery and which sees a
/// publisher's user property, a 3.1.1 subscriber getting the same messages at its granted
/// QoS 1, QoS 2 publishes from both versions, a retained message delivered flagged to new
/// subscribers, and the will of a paho client whose process is killed.
#[test]
fn paho_v311_and_v5_clients_qos_2_retained_properties_and_will() {
    const SCRIPT: &str = r#"
import subprocess, sys
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

port, WAIT = int(sys.argv[1]), 10
V5, V311 = mqtt.MQTTv5, mqtt.MQTTv311

def show(name, c):
    m = expect(c, "message")
    props = m.properties
    ids = getattr(props, "SubscriptionIdentifier", None)
    user = getattr(props, "UserProperty", None)
    print(name, m.topic, m.payload.decode(), f"qos={m.qos} retain={int(m.retain)}",
          f"ids={ids} user={user}", flush=True)

def publish(c, topic, payload, qos, retain=False, properties=None):
    c.publish(topic, payload, qos=qos, retain=retain, properties=properties).wait_for_publish(WAIT)

pub311 = client("paho-pub311", V311, port)
publish(pub311, "paho/retained", "kept", 1, retain=True)

sub5 = client("paho-sub5", V5, port)
props = Properties(PacketTypes.SUBSCRIBE)
props.SubscriptionIdentifier = 7
sub5.subscribe([("paho/#", SubscribeOptions(qos=2))], properties=props)
print("sub5 suback", expect(sub5, "suback"), flush=True)
show("sub5", sub5)
sub311 = client("paho-sub311", V311, port)
sub311.subscribe([("paho/#", 1)])
print("sub311 suback", expect(sub311, "suback"), flush=True)
show("sub311", sub311)

pub5 = client("paho-pub5", V5, port)
props = Properties(PacketTypes.PUBLISH)
props.UserProperty = ("origin", "paho5")
publish(pub5, "paho/q2", "from 5.0", 2, properties=props)
show("sub5", sub5)
show("sub311", sub311)
publish(pub311, "paho/q2", "from 3.1.1", 2)
show("sub5", sub5)
show("sub311", sub311)

# A client with a will, in its own process, killed: its socket closes without DISCONNECT.
will = subprocess.Popen([sys.executable, "-c", """
import sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho-will", protocol=mqtt.MQTTv5)
c.will_set("paho/will", "gone", qos=1)
c.on_connect = lambda c, u, f, reason, p: print("up", reason.value, flush=True)
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_start()
time.sleep(60)
""", str(port)], stdout=subprocess.PIPE, text=True)
print("will client", will.stdout.readline().strip(), flush=True)
will.kill()
will.wait()
show("sub5", sub5)
show("sub311", sub311)
for c in (sub5, sub311, pub5, pub311):
    c.disconnect()
    c.loop_stop()
"#;
    let board = Board::boot();
    let script = format!("{}{SCRIPT}", fulmar_tests::paho::HELPERS);
    let output = fulmar_tests::paho::run(&script, &[&board.port().to_string()], 2 * WAIT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout,
        "sub5 suback [2]\n\
         sub5 paho/retained kept qos=1 retain=1 ids=[7] user=None\n\
         sub311 suback [1]\n\
         sub311 paho/retained kept qos=1 retain=1 ids=None user=None\n\
         sub5 paho/q2 from 5.0 qos=2 retain=0 ids=[7] user=[('origin', 'paho5')]\n\
         sub311 paho/q2 from 5.0 qos=1 retain=0 ids=None user=None\n\
         sub5 paho/q2 from 3.1.1 qos=2 retain=0 ids=[7] user=None\n\
         sub311 paho/q2 from 3.1.1 qos=1 retain=0 ids=None user=None\n\
         will client up 0\n\
         sub5 paho/will gone qos=1 retain=0 ids=[7] user=None\n\
         sub311 paho/will gone qos=1 retain=0 ids=None user=None\n",
        "paho's stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "paho: {}", output.status);
}
