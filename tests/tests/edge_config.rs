//! Configuring the real `fulmar` binary: `--help`, `fulmar check-config`, the precedence
//! of file, `FULMAR_…` variables and flags (observed through what the broker grants a
//! client), listeners from a file, the zero-configuration start, the per-address
//! connection rate limit and the CONNECT timeout.
//!
//! Clients here speak raw MQTT 3.1.1 bytes over `std::net::TcpStream`: what is observed is
//! exactly what the broker sends. Every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fulmar_tests::{DataDir, Fulmar, fulmar_bin};

/// How long any single expected thing may take.
const WAIT: Duration = Duration::from_secs(10);

/// The shipped configuration file.
fn dist_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../edge-linux/dist/fulmar.toml")
}

fn fulmar(args: &[&str]) -> Output {
    Command::new(fulmar_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run fulmar")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// --- the command line and check-config --------------------------------------------------

#[test]
fn help_lists_the_configuration_flags_and_commands() {
    let output = fulmar(&["--help"]);
    assert!(output.status.success(), "{output:?}");
    let help = text(&output.stdout);
    for word in [
        "--config",
        "--listen",
        "--ws-listen",
        "--data-dir",
        "--log",
        "--set",
        "check-config",
        "FULMAR_",
        "./fulmar-data",
    ] {
        assert!(
            help.contains(word),
            "--help does not mention {word}:\n{help}"
        );
    }
    let output = fulmar(&["check-config", "--help"]);
    assert!(output.status.success(), "{output:?}");
    assert!(text(&output.stdout).contains("FILE"));
}

#[test]
fn check_config_accepts_the_shipped_file_and_summarizes_it() {
    let file = dist_file();
    let output = fulmar(&["check-config", file.to_str().unwrap()]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains(": OK"), "{stdout}");
    assert!(stdout.contains("listeners: tcp 0.0.0.0:1883"), "{stdout}");
    assert!(stdout.contains("data_dir: ./fulmar-data"), "{stdout}");
}

#[test]
fn check_config_points_at_an_unknown_key() {
    let dir = DataDir::new("unknown-key");
    let file = dir.write(
        "fulmar.toml",
        "data_dir = \"/tmp/x\"\n\n[limits]\nmax_connections = 10\nmax_conections = 3\n",
    );
    let output = fulmar(&["check-config", file.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let at = format!("{}:5:1: unknown field `max_conections`", file.display());
    assert!(stderr.contains(&at), "no `{at}` in:\n{stderr}");
    // The line itself is shown, with a caret under the key.
    assert!(stderr.contains("5 | max_conections = 3"), "{stderr}");
    assert!(stderr.contains("^^^^^^^^^^^^^^"), "{stderr}");
    assert!(output.stdout.is_empty(), "{output:?}");
}

#[test]
fn check_config_points_at_a_bad_value() {
    let dir = DataDir::new("bad-value");
    let cases = [
        (
            "[limits]\n# comment\noverflow = \"drop\"\n",
            "3:12",
            "unknown variant `drop`",
        ),
        (
            "[[listeners.tcp]]\naddr = \"localhost\"\n",
            "2:8",
            "address",
        ),
        ("[limits]\nmax_packet_size = 3\n", "2:19", "out of range"),
    ];
    for (contents, at, words) in cases {
        let file = dir.write("fulmar.toml", contents);
        let output = fulmar(&["check-config", file.to_str().unwrap()]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{contents}: {output:?}");
        let at = format!("{}:{at}: ", file.display());
        assert!(stderr.contains(&at), "{contents}: no `{at}` in:\n{stderr}");
        assert!(
            stderr.contains(words),
            "{contents}: no `{words}` in:\n{stderr}"
        );
    }
}

#[test]
fn a_bad_file_stops_the_broker_from_starting() {
    let dir = DataDir::new("bad-start");
    let file = dir.write("fulmar.toml", "[mqtt]\nmax_qos = 3\n");
    let output = Command::new(fulmar_bin())
        .args([
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("FULMAR_DATA_DIR", dir.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .expect("run fulmar");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(text(&output.stderr).contains(":2:11: "), "{output:?}");
}

// --- raw MQTT 3.1.1 -------------------------------------------------------------------------

/// CONNECT, clean session, keep alive 60 s, client id `c`.
const CONNECT: [u8; 15] = [
    0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c',
];
/// CONNACK, session not present, accepted.
const CONNACK: [u8; 4] = [0x20, 2, 0, 0];
/// SUBSCRIBE packet id 1 to `t` at QoS 2.
const SUBSCRIBE_QOS2: [u8; 8] = [0x82, 6, 0, 1, 0, 1, b't', 2];

fn connect(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(&CONNECT).unwrap();
    let mut connack = [0; 4];
    stream.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, CONNACK);
    stream
}

/// The QoS the broker grants a QoS 2 subscription.
fn granted_qos(broker: &Fulmar) -> u8 {
    let mut stream = connect(broker.addr());
    stream.write_all(&SUBSCRIBE_QOS2).unwrap();
    let mut suback = [0; 5];
    stream.read_exact(&mut suback).expect("SUBACK");
    assert_eq!(suback[..4], [0x90, 3, 0, 1], "{suback:?}");
    suback[4]
}

// --- where values come from ---------------------------------------------------------------

/// `mqtt.max_qos` from the file, beaten by a variable, beaten by `--set`.
#[test]
fn variables_beat_the_file_and_flags_beat_variables() {
    let dir = DataDir::new("precedence");
    let file = dir.write("fulmar.toml", "[mqtt]\nmax_qos = 0\n");
    let file = file.to_str().unwrap();
    let start = |var: Option<&str>, args: &[&str]| {
        let mut command = Command::new(fulmar_bin());
        command
            .args(["--listen", "127.0.0.1:0", "--config", file])
            .args(args);
        if let Some(value) = var {
            command.env("FULMAR_MQTT__MAX_QOS", value);
        }
        Fulmar::start_command(command)
    };
    assert_eq!(granted_qos(&start(None, &[])), 0, "from the file");
    assert_eq!(granted_qos(&start(Some("1"), &[])), 1, "from the variable");
    assert_eq!(
        granted_qos(&start(Some("1"), &["--set", "mqtt.max_qos=2"])),
        2,
        "from --set"
    );
}

#[test]
fn the_file_listener_is_used() {
    let dir = DataDir::new("file-listener");
    // Two listeners from the file, no --listen: the broker serves on both.
    let file = dir.write(
        "fulmar.toml",
        "[[listeners.tcp]]\naddr = \"127.0.0.1:0\"\n\n[[listeners.tcp]]\naddr = \"127.0.0.2:0\"\n",
    );
    let mut command = Command::new(fulmar_bin());
    command.args(["--config", file.to_str().unwrap()]);
    let broker = Fulmar::start_command(command);
    drop(connect(broker.addr()));
    let log = broker.log();
    let line = log
        .lines()
        .find(|l| l.contains(" listening on "))
        .expect("listening line");
    let second: SocketAddr = line
        .split(", ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no second address in {line:?}"));
    assert_eq!(second.ip().to_string(), "127.0.0.2", "{line}");
    drop(connect(second));
}

#[test]
fn zero_config_keeps_data_in_fulmar_data_and_warns_about_anonymous_access() {
    let cwd = DataDir::new("zero-config");
    let mut command = Command::new(fulmar_bin());
    // No arguments. The port comes from the environment only because 1883 may be taken
    // on a test machine; the data directory is left to the default.
    command
        .current_dir(cwd.path())
        .env("FULMAR_LISTEN", "127.0.0.1:0")
        .env_remove("FULMAR_DATA_DIR");
    let broker = Fulmar::start_command(command);
    drop(connect(broker.addr()));
    assert!(cwd.path().join("fulmar-data").is_dir(), "{}", broker.log());
    // The warning may follow the line `start` waits for.
    let warned = |l: &str| l.contains("WARN") && l.contains("anonymous access is allowed");
    fulmar_tests::wait_until(WAIT, || broker.log().lines().any(warned));
    let log = broker.log();
    let warning = log
        .lines()
        .find(|l| warned(l))
        .unwrap_or_else(|| panic!("no anonymous-access warning in:\n{log}"));
    assert!(warning.contains("auth.password_file"), "{warning}");
}

// --- limits at the door ---------------------------------------------------------------------

/// A new connection if the broker serves it (CONNACK), `None` if it closes it without one.
fn served(addr: SocketAddr) -> Option<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    // The write may fail when the broker has already closed the socket.
    let _ = stream.write_all(&CONNECT);
    let mut connack = [0; 4];
    match stream.read_exact(&mut connack) {
        Ok(()) => {
            assert_eq!(connack, CONNACK);
            Some(stream)
        }
        Err(e) => {
            assert!(
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut,
                "neither served nor closed within {WAIT:?}"
            );
            None
        }
    }
}

#[test]
fn a_burst_of_connections_from_one_address_is_cut_at_the_burst_size() {
    let broker = Fulmar::start_with(&[
        "--set",
        "limits.rate_limit_loopback=true",
        "--set",
        "limits.connection_burst=3",
        "--set",
        "limits.connection_rate=1",
    ]);
    let started = Instant::now();
    let mut open = Vec::new();
    let mut outcomes = Vec::new();
    for _ in 0..8 {
        let stream = served(broker.addr());
        outcomes.push(stream.is_some());
        // Keep them open: the limit is on new connections, not on open ones.
        open.extend(stream);
    }
    let elapsed = started.elapsed();
    let allowed = outcomes.iter().filter(|&&ok| ok).count();
    // 3 at once, plus at most one per second of the test.
    let most = 3 + usize::try_from(elapsed.as_secs()).unwrap() + 1;
    assert!(
        allowed >= 3 && allowed <= most,
        "{allowed} of 8 served in {elapsed:?}: {outcomes:?}"
    );
    assert!(outcomes[..3].iter().all(|&ok| ok), "{outcomes:?}");
    assert!(
        broker.log().contains("connection rate limit reached"),
        "{}",
        broker.log()
    );
    // The bucket refills: a second later the address is served again.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(served(broker.addr()).is_some());
}

#[test]
fn a_socket_that_never_sends_connect_is_closed_after_the_timeout() {
    let broker = Fulmar::start_with(&["--set", "limits.connect_timeout_secs=1"]);
    let mut silent = TcpStream::connect_timeout(&broker.addr(), WAIT).expect("connect");
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let opened = Instant::now();
    let mut buffer = [0; 16];
    let read = silent.read(&mut buffer);
    let elapsed = opened.elapsed();
    // Closed by the broker (end of stream or reset), not by our read timeout.
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?} after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "closed after {elapsed:?}"
    );
    // A client that does send CONNECT in time is served as usual.
    drop(connect(broker.addr()));
}

// --- the systemd unit -----------------------------------------------------------------------

/// `systemd-analyze verify` accepts `dist/fulmar.service` (with the binary's path in place
/// of /usr/local/bin/fulmar): no unknown option, no warning.
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../edge-linux/dist/fulmar.service"),
    )
    .expect("read fulmar.service");
    assert!(unit.contains("Restart=on-failure") && unit.contains("StateDirectory=fulmar"));
    let dir = DataDir::new("unit");
    let unit = unit.replace("/usr/local/bin/fulmar", fulmar_bin().to_str().unwrap());
    let file = dir.write("fulmar.service", &unit);
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .expect("run systemd-analyze (installed by `cargo xtask test setup`)");
    assert!(output.status.success(), "{output:?}");
    let stderr = text(&output.stderr);
    // Only this unit's findings count, not those of the machine's own units.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("fulmar.service"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze: {ours:#?}");
}

/// WebSocket listeners come from the file (with its path) and `--ws-listen` replaces them.
#[test]
fn websocket_listeners_from_the_file_and_the_flag() {
    let dir = DataDir::new("ws-listeners");
    let file = dir.write(
        "fulmar.toml",
        "[[listeners.ws]]\naddr = \"127.0.0.1:0\"\npath = \"/custom\"\n",
    );
    let file = file.to_str().unwrap();
    let from_file = Fulmar::start_with(&["--config", file]);
    let line = |broker: &Fulmar| {
        let log = broker.log();
        log.lines()
            .find(|l| l.contains(" listening on "))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no listening line in:\n{log}"))
    };
    assert!(
        line(&from_file).contains("(ws /custom)"),
        "{}",
        line(&from_file)
    );
    drop(TcpStream::connect_timeout(&from_file.listener("ws"), WAIT).expect("ws listener"));

    let from_flag = Fulmar::start_with(&["--config", file, "--ws-listen", "127.0.0.1:0"]);
    let listening = line(&from_flag);
    assert!(listening.contains("(ws /mqtt)"), "{listening}");
    assert!(!listening.contains("/custom"), "{listening}");
}
