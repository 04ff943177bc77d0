//! The QEMU firmware's bridge uplink (`fulmar_firmware::uplink`) against a real upstream
//! broker: the repository's `fulmar` on a loopback port, which QEMU relays the board's
//! connections to 10.0.2.100:1883 to. Readings published to the board reach upstream in
//! order, commands published upstream come down, and readings taken while upstream is
//! down — even across a power cut of the board — arrive once it is back, in order, up to
//! the bridge's bound, counted on the bridge's `$SYS` topic. A 5.0 uplink forwards the 5.0
//! properties a board client published with. An upstream host name that does not resolve is retried while the
//! board serves its own clients. A message too large for upstream is dropped and counted
//! rather than blocking the backlog: against a 5.0 `fulmar` that announces its limit, and
//! against a 3.1.1 Mosquitto that closes the connection instead.
//!
//! Each test boots its own board and upstream; every wait is bounded.

use std::process::Command;
use std::time::{Duration, Instant};

use fulmar_tests::firmware::Board;
use fulmar_tests::{DataDir, Fulmar, Lines, free_port, fulmar_bin};

/// How long any single expected thing may take: the board is emulated, on a shared CI
/// machine, and the uplink retries with a backoff of up to 8 s.
const WAIT: Duration = Duration::from_secs(20);

/// Messages the bridge keeps while upstream is away: the firmware's per-session queue
/// limit (`fulmar_firmware::capacity::config`, `max_queued_messages`); newer ones are
/// dropped. (While upstream is there, a full queue holds publishers back instead.)
const BOUND: usize = 8;

/// The board's uplink configuration (`fulmar-uplink.conf`).
const UPLINK: &str = "upstream 10.0.2.100:1883\n\
                      client-id fw-bridge-test\n\
                      keep-alive 5\n\
                      up sensors/# 1\n\
                      down commands/# 1\n";

/// The upstream broker: `fulmar` on `port`, keeping its state in `data` (so a restart
/// finds the subscriber's persistent session again).
fn upstream(port: u16, data: &DataDir) -> Fulmar {
    upstream_with(port, data, &[])
}

/// [`upstream`] with more arguments.
fn upstream_with(port: u16, data: &DataDir, more: &[&str]) -> Fulmar {
    let mut command = Command::new(fulmar_bin());
    command.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        data.arg(),
        "--log",
        "info",
    ]);
    command.args(more);
    Fulmar::start_command(command)
}

/// Each of `messages` as one QoS 1 PUBLISH on `topic`, in order, over one connection.
fn publish(port: u16, topic: &str, messages: &[String]) {
    fulmar_tests::mosquitto_pub_lines(port, &["-q", "1", "-t", topic], messages);
}

/// A QoS 1 subscriber to `filter` on `port` with the persistent session `id` (so what
/// arrives while it is away waits for it), printing `topic payload` lines.
fn subscriber(port: u16, id: &str, filter: &str) -> Lines {
    let mut command = Command::new("stdbuf");
    command
        .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-c", "-i", id, "-q", "1", "-v"])
        .args(["-t", filter, "-t", "ready"]);
    Lines::spawn(command)
}

/// Waits until `sub` is subscribed: a message to `ready` on `port` comes back.
fn wait_subscribed(sub: &Lines, port: u16) {
    let deadline = Instant::now() + WAIT;
    loop {
        publish(port, "ready", &["1".to_owned()]);
        if sub
            .next_line(Duration::from_millis(300))
            .is_some_and(|line| line == "ready 1")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "subscriber on {port} never ready"
        );
    }
}

/// Whether a subscriber's line is a message under test, not a subscription check or the
/// probe that showed the uplink forwarding. (Upstream may deliver the probe to its
/// subscriber again after upstream itself was killed: the subscriber's acknowledgement may
/// not have been stored yet, which QoS 1 allows.)
fn under_test(line: &str) -> bool {
    !line.starts_with("ready ") && !line.starts_with("sensors/probe ")
}

/// The next `count` messages under test `sub` prints (fewer if they do not come).
fn collect(sub: &Lines, count: usize) -> Vec<String> {
    fulmar_tests::take_lines(sub, count, WAIT, under_test)
}

/// A message under test `sub` prints within 2 s, if any.
fn more(sub: &Lines) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.next_line(left) {
            Some(line) if under_test(&line) => return Some(line),
            Some(_) => {}
            None => return None,
        }
    }
}

/// `count` readings named `{tag}-{i}`.
fn readings(tag: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{tag}-{i:02}")).collect()
}

/// What a subscriber to `sensors/t` prints for `readings`.
fn lines_of(readings: &[String]) -> Vec<String> {
    readings.iter().map(|r| format!("sensors/t {r}")).collect()
}

/// An upstream broker, a subscriber to `sensors/#` there, and a board bridged to it whose
/// uplink is known to forward (a probe published on the board has reached the subscriber).
struct Bridged {
    board: Board,
    sub: Lines,
    /// The subscriber's persistent session (it comes back to it after an outage).
    sub_id: &'static str,
    upstream: Fulmar,
    up_port: u16,
    data: DataDir,
}

impl Bridged {
    fn start(sub_id: &'static str) -> Self {
        Self::start_with(sub_id, UPLINK)
    }

    /// [`Bridged::start`] with the uplink configuration `config`.
    fn start_with(sub_id: &'static str, config: &str) -> Self {
        let up_port = free_port();
        let data = DataDir::new("upstream");
        let upstream = upstream(up_port, &data);
        let sub = subscriber(up_port, sub_id, "sensors/#");
        wait_subscribed(&sub, up_port);
        let board = Board::boot_with_uplink(up_port, config);
        publish(board.port(), "sensors/probe", &["up".to_owned()]);
        sub.expect_line(WAIT, |line| line == "sensors/probe up");
        Self {
            board,
            sub,
            sub_id,
            upstream,
            up_port,
            data,
        }
    }

    /// Kills upstream's subscriber, stops upstream, and waits until the board has noticed.
    /// Upstream stops cleanly (SIGTERM): it sends the acknowledgements it holds until
    /// they are on its disk, so the probe is acknowledged to the board and the count of
    /// what the board keeps is exact. (After a SIGKILL the board would send the probe
    /// again, as QoS 1 allows, and it would take a place in the backlog.)
    fn outage(&mut self) {
        self.sub.kill();
        assert!(self.upstream.terminate().is_some(), "upstream did not stop");
        wait_uplink_lost(&self.board);
    }

    /// Starts upstream again on the same port and state, and its subscriber on its
    /// persistent session.
    fn upstream_back(&mut self) {
        self.upstream = upstream(self.up_port, &self.data);
        self.sub = subscriber(self.up_port, self.sub_id, "sensors/#");
    }
}

#[test]
fn readings_go_up_in_order_and_commands_come_down() {
    let bridged = Bridged::start("up-sub-1");
    let board = &bridged.board;

    // A burst of more than the bridge's bound, as fast as one connection sends: with the
    // uplink up, a full bridge queue holds the publisher back (TCP) rather than dropping.
    let sent = readings("live", 3 * BOUND);
    publish(board.port(), "sensors/t", &sent);
    assert_eq!(collect(&bridged.sub, sent.len()), lines_of(&sent));

    // Downlink: a command published upstream reaches a subscriber on the board.
    let local = subscriber(board.port(), "board-sub", "commands/#");
    wait_subscribed(&local, board.port());
    // The second one is larger than the uplink's own small receive buffer.
    let large = "x".repeat(1500);
    publish(
        bridged.up_port,
        "commands/valve",
        &["open".to_owned(), large.clone()],
    );
    assert_eq!(
        collect(&local, 2),
        [
            "commands/valve open".to_owned(),
            format!("commands/valve {large}")
        ]
    );
}

#[test]
fn readings_taken_while_upstream_is_down_arrive_in_order_up_to_the_bound() {
    let mut bridged = Bridged::start("up-sub-2");
    bridged.outage();
    // Two more than the bridge keeps: the newest two are dropped.
    let sent = readings("outage", BOUND + 2);
    publish(bridged.board.port(), "sensors/t", &sent);
    // ... and counted for this bridge: on its retained $SYS topic, and in the log.
    let topic = "$SYS/broker/bridge/fw-bridge-test/dropped";
    let drops = subscriber(bridged.board.port(), "drops-sub", topic);
    drops.expect_line(WAIT, |line| line == format!("{topic} 2"));
    wait_log(
        &bridged.board,
        "uplink: 2 messages dropped since boot (backlog full while upstream was away",
    );

    bridged.upstream_back();
    assert_eq!(collect(&bridged.sub, BOUND), lines_of(&sent[..BOUND]));
    // Nothing more: neither the dropped readings nor duplicates.
    assert_eq!(more(&bridged.sub), None);
}

#[test]
fn readings_kept_in_flash_arrive_after_the_board_loses_power_during_the_outage() {
    let mut bridged = Bridged::start("up-sub-3");
    bridged.outage();
    let sent = readings("flash", 5);
    publish(bridged.board.port(), "sensors/t", &sent);
    wait_in_flash(&bridged.board, sent.last().expect("readings"));
    bridged.board.power_off();
    let _board = Board::boot_in_with_uplink(bridged.board.state_dir(), bridged.up_port);

    bridged.upstream_back();
    assert_eq!(collect(&bridged.sub, sent.len()), lines_of(&sent));
    assert_eq!(more(&bridged.sub), None);
}

#[test]
fn readings_in_flight_when_upstream_crashes_arrive_at_least_once_in_order() {
    let mut bridged = Bridged::start("up-sub-5");
    // A burst the uplink is still forwarding (publisher held back by the full bridge
    // queue, some readings in flight) when upstream dies without a word.
    let sent = readings("crash", 3 * BOUND);
    publish(bridged.board.port(), "sensors/t", &sent);
    bridged.upstream.kill();
    bridged.sub.kill();

    // Every reading arrives; some may arrive twice (upstream had one but its PUBACK was
    // lost with it, or its subscriber's acknowledgement was), as QoS 1 allows. Each
    // first arrival is in publish order.
    let wanted = lines_of(&sent);
    let mut first = Vec::new();
    let arrived = |first: &mut Vec<String>, line: String| {
        if under_test(&line) && !first.contains(&line) {
            first.push(line);
        }
    };
    // What the subscriber printed before the crash.
    while let Some(line) = bridged.sub.next_line(Duration::from_millis(100)) {
        arrived(&mut first, line);
    }
    bridged.upstream_back();
    let deadline = Instant::now() + WAIT;
    while first.len() < wanted.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(line) = bridged.sub.next_line(left) else {
            panic!("missing readings: got {first:?}");
        };
        arrived(&mut first, line);
    }
    assert_eq!(first, wanted, "first arrivals in publish order");
}

#[test]
fn the_uplink_logs_in_upstream_and_a_wrong_password_is_refused() {
    let data = DataDir::new("upstream");
    let passwords = data.path().join("passwords");
    let passwords = passwords.to_str().expect("UTF-8 temporary path");
    let status = Command::new("mosquitto_passwd")
        .args(["-c", "-b", passwords, "edge", "edge-pw"])
        .status()
        .expect("run mosquitto_passwd");
    assert!(status.success(), "mosquitto_passwd: {status}");
    let up_port = free_port();
    let password_file = format!("auth.password_file={passwords}");
    // Anonymous clients too: the test's own subscriber and publishers.
    let more = [
        "--set",
        &password_file,
        "--set",
        "auth.allow_anonymous=true",
    ];
    let _upstream = upstream_with(up_port, &data, &more);
    let sub = subscriber(up_port, "up-sub-6", "sensors/#");
    wait_subscribed(&sub, up_port);

    let wrong = UPLINK.replace("fw-bridge-test", "fw-wrong") + "username edge\npassword nope\n";
    let refused = Board::boot_with_uplink(up_port, &wrong);
    // 3.1.1 return code 4 (bad user name or password) as the core reads it.
    wait_log(
        &refused,
        "uplink: connection failed: Refused(BadUserNameOrPassword)",
    );

    let right = UPLINK.to_owned() + "username edge\npassword edge-pw\n";
    let board = Board::boot_with_uplink(up_port, &right);
    publish(board.port(), "sensors/t", &["logged-in".to_owned()]);
    assert_eq!(collect(&sub, 1), ["sensors/t logged-in"]);
}

#[test]
fn an_idle_uplink_keeps_its_connection_with_pings() {
    // Keep alive 2 s: upstream closes a client silent for 3 s [MQTT-3.1.2-24]. Idle for
    // longer than that, the uplink stays connected only if it pings.
    let config = UPLINK.replace("keep-alive 5", "keep-alive 2");
    let bridged = Bridged::start_with("up-sub-4", &config);
    std::thread::sleep(Duration::from_secs(4));
    publish(
        bridged.board.port(),
        "sensors/t",
        &["after-idle".to_owned()],
    );
    assert_eq!(collect(&bridged.sub, 1), ["sensors/t after-idle"]);
    let log = bridged.board.decoded_log();
    assert!(
        !log.contains("uplink: connection lost"),
        "the idle uplink was dropped:\n{log}"
    );
}

#[test]
fn a_5_0_uplink_carries_the_properties_of_5_0_clients_both_ways_and_qos_2_up() {
    const SCRIPT: &str = r#"
import sys
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

board, upstream = int(sys.argv[1]), int(sys.argv[2])
sub = client("v5-up-sub", mqtt.MQTTv5, upstream)
sub.subscribe("sensors/v5", qos=2)
expect(sub, "suback")
pub = client("v5-board-pub", mqtt.MQTTv5, board)
props = Properties(PacketTypes.PUBLISH)
props.UserProperty = ("origin", "board")
props.ContentType = "text/plain"
props.ResponseTopic = "replies/1"
props.CorrelationData = b"c-1"
props.PayloadFormatIndicator = 1
props.MessageExpiryInterval = 300
pub.publish("sensors/v5", "21.5", qos=2, properties=props).wait_for_publish(WAIT)
m = expect(sub, "message")
p = m.properties
expiry = getattr(p, "MessageExpiryInterval", None)
print(m.topic, m.payload.decode(), f"qos={m.qos}", getattr(p, "UserProperty", None),
      getattr(p, "ContentType", None), getattr(p, "ResponseTopic", None),
      getattr(p, "CorrelationData", None), getattr(p, "PayloadFormatIndicator", None),
      f"expiry_ok={expiry is not None and 0 < expiry <= 300}", flush=True)
# More than the uplink's window of 4: they go up only if each earlier exchange completed
# (PUBREL answered by PUBCOMP).
for i in range(6):
    pub.publish("sensors/v5", f"n{i}", qos=2).wait_for_publish(WAIT)
print(*(f"{m.payload.decode()}/{m.qos}" for m in (expect(sub, "message") for _ in range(6))))
# Down: a command published upstream with properties reaches a 5.0 client on the board
# with them.
board_sub = client("v5-board-sub", mqtt.MQTTv5, board)
board_sub.subscribe("commands/#", qos=1)
expect(board_sub, "suback")
cmd = Properties(PacketTypes.PUBLISH)
cmd.UserProperty = ("origin", "cloud")
cmd.ResponseTopic = "acks/1"
cmd.MessageExpiryInterval = 300
sub.publish("commands/valve", "open", qos=1, properties=cmd).wait_for_publish(WAIT)
m = expect(board_sub, "message")
p = m.properties
expiry = getattr(p, "MessageExpiryInterval", None)
print(m.topic, m.payload.decode(), getattr(p, "UserProperty", None),
      getattr(p, "ResponseTopic", None), f"expiry_ok={expiry is not None and 0 < expiry <= 300}",
      flush=True)
for c in (sub, pub, board_sub):
    c.disconnect()
    c.loop_stop()
"#;
    // QoS 2 up: PUBREC, PUBREL, PUBCOMP with upstream. `sensors/#` down as well: with
    // No Local upstream, nothing forwarded comes back (the board's subscriber below sees
    // each reading once).
    let config =
        UPLINK.replace("up sensors/# 1", "up sensors/# 2") + "protocol 5\ndown sensors/# 1\n";
    let bridged = Bridged::start_with("up-sub-v5", &config);
    let local = subscriber(bridged.board.port(), "v5-local-sub", "sensors/#");
    wait_subscribed(&local, bridged.board.port());
    let ports = [
        bridged.board.port().to_string(),
        bridged.up_port.to_string(),
    ];
    let script = format!("{}{SCRIPT}", fulmar_tests::paho::HELPERS);
    let output = fulmar_tests::paho::run(&script, &[&ports[0], &ports[1]], 2 * WAIT);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "sensors/v5 21.5 qos=2 [('origin', 'board')] text/plain replies/1 b'c-1' 1 \
         expiry_ok=True\n\
         n0/2 n1/2 n2/2 n3/2 n4/2 n5/2\n\
         commands/valve open [('origin', 'cloud')] acks/1 expiry_ok=True\n",
        "paho's stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "paho: {}", output.status);
    let mut once = vec!["sensors/v5 21.5".to_owned()];
    once.extend((0..6).map(|i| format!("sensors/v5 n{i}")));
    assert_eq!(collect(&local, once.len()), once);
    assert_eq!(more(&local), None, "a forwarded reading came back down");
}

#[test]
fn an_upstream_name_that_does_not_resolve_is_retried_while_local_clients_are_served() {
    // QEMU's user-mode network with restrict=on (the tests' own) drops the board's DNS
    // queries to 10.0.2.3, so no name resolves there: the board must keep asking (a DNS
    // outage ends, a name may appear) and go on serving its own clients meanwhile.
    // (`.invalid` never resolves anywhere [RFC 6761 §6.4].)
    let config = UPLINK.replace("10.0.2.100:1883", "upstream.invalid:1883");
    let board = Board::boot_with_uplink(free_port(), &config);
    let local = subscriber(board.port(), "local-sub", "sensors/#");
    wait_subscribed(&local, board.port());
    publish(board.port(), "sensors/t", &["local".to_owned()]);
    assert_eq!(collect(&local, 1), ["sensors/t local"]);

    // Asked at least twice: after a failure, the uplink backs off and looks the name up
    // again (each attempt gives up after 5 s without an answer).
    let failure = "uplink: cannot resolve upstream.invalid";
    let deadline = Instant::now() + 2 * WAIT;
    while board.decoded_log().matches(failure).count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the board did not retry resolving:\n{}",
            board.decoded_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    publish(board.port(), "sensors/t", &["still-serving".to_owned()]);
    assert_eq!(collect(&local, 1), ["sensors/t still-serving"]);
}

/// [MQTT-3.1.2-24]: a message larger than a 5.0 upstream's Maximum Packet Size is never
/// sent; it is dropped (and logged) rather than sent again after every reconnection, so
/// the readings after it still go up.
#[test]
fn a_message_larger_than_upstream_takes_is_dropped_and_the_uplink_goes_on() {
    let up_port = free_port();
    let data = DataDir::new("upstream-small-packets");
    let _upstream = upstream_with(up_port, &data, &["--set", "limits.max_packet_size=512"]);
    let sub = subscriber(up_port, "small-packets-sub", "sensors/#");
    wait_subscribed(&sub, up_port);
    let board = Board::boot_with_uplink(up_port, &format!("{UPLINK}protocol 5\n"));
    publish(board.port(), "sensors/big", &["x".repeat(1000)]);
    publish(board.port(), "sensors/small", &["after".to_owned()]);
    sub.expect_line(WAIT, |line| line == "sensors/small after");
    wait_log(&board, "larger than upstream's maximum packet size");
    assert!(
        !board.decoded_log().contains("uplink: connection lost"),
        "the uplink was closed:\n{}",
        board.decoded_log()
    );
}

/// A 3.1.1 upstream announces no packet size limit, and Mosquitto with `max_packet_size`
/// closes the connection on a larger PUBLISH: the uplink would send that message again
/// first after every reconnection, forever, and nothing after it would go. After upstream
/// closed the connection three times with the same message unacknowledged
/// (`uplink::CLOSES_BEFORE_DROP`), it is dropped and counted on the bridge's `$SYS` topic,
/// and the readings after it go up in order. With `max-packet` set, such a message is
/// dropped at once, without a reconnection.
#[test]
fn a_message_a_3_1_1_upstream_closes_the_connection_on_is_dropped_and_counted() {
    let up_port = free_port();
    let data = DataDir::new("mosquitto-small-packets");
    let conf = data.write(
        "mosquitto.conf",
        &format!("listener {up_port} 127.0.0.1\nallow_anonymous true\nmax_packet_size 512\n"),
    );
    let mut command = Command::new("mosquitto");
    command.args(["-c", conf.to_str().expect("UTF-8 temporary path")]);
    let _mosquitto = Lines::spawn(command);
    fulmar_tests::wait_until(WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", up_port)).is_ok()
    });
    let sub = subscriber(up_port, "mosquitto-sub", "sensors/#");
    wait_subscribed(&sub, up_port);
    let big = "x".repeat(1000);

    let board = Board::boot_with_uplink(up_port, UPLINK);
    let mut sent = vec![big.clone()];
    sent.extend(readings("after-close", 3));
    publish(board.port(), "sensors/t", &sent);
    assert_eq!(collect(&sub, 3), lines_of(&sent[1..]));
    let log = board.decoded_log();
    assert_eq!(log.matches("uplink: connection lost").count(), 3, "{log}");
    assert!(log.contains("dropped as too large for upstream"), "{log}");
    let dropped = fulmar_tests::mosquitto_sub_lines(
        board.port(),
        &["-v", "-t", "$SYS/broker/bridge/fw-bridge-test/dropped"],
    );
    dropped.expect_line(WAIT, |line| line.ends_with("/dropped 1"));
    drop(board);

    let configured = UPLINK.replace("fw-bridge-test", "fw-max-packet") + "max-packet 512\n";
    let board = Board::boot_with_uplink(up_port, &configured);
    let mut sent = vec![big];
    sent.extend(readings("after-limit", 2));
    publish(board.port(), "sensors/t", &sent);
    assert_eq!(collect(&sub, 2), lines_of(&sent[1..]));
    let log = board.decoded_log();
    assert!(
        log.contains("larger than upstream's maximum packet size"),
        "{log}"
    );
    assert!(!log.contains("uplink: connection lost"), "{log}");
}

/// Waits until the board has noticed that upstream is gone (its log says so), so what is
/// published next is kept for later rather than handed to the dying connection.
fn wait_uplink_lost(board: &Board) {
    wait_log(board, "uplink: connection lost");
}

/// Waits until the board's log contains `wanted`.
fn wait_log(board: &Board, wanted: &str) {
    let deadline = Instant::now() + WAIT;
    while !board.decoded_log().contains(wanted) {
        assert!(
            Instant::now() < deadline,
            "the board never logged {wanted:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the board's flash file holds `payload` (the persistence task writes a
/// moment after the broker acknowledges).
fn wait_in_flash(board: &Board, payload: &str) {
    let deadline = Instant::now() + WAIT;
    while !board
        .flash()
        .windows(payload.len())
        .any(|w| w == payload.as_bytes())
    {
        assert!(Instant::now() < deadline, "{payload} never reached flash");
        std::thread::sleep(Duration::from_millis(50));
    }
}
