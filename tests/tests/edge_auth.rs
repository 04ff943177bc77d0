//! Authentication and authorization of the `fulmar` binary, seen from real clients:
//! password files made by `mosquitto_passwd` and by `fulmar passwd` (and read back by the
//! real Mosquitto broker), CONNACK refusals as `mosquitto_pub`, `rumqttc` (3.1.1 and 5.0)
//! and `paho-mqtt` report them, ACL refusals in SUBACK and PUBACK, `%c` / `%u` patterns,
//! `$SYS`, and a slow password hash that does not hold up other clients.
//!
//! Each test starts its own broker on a free loopback port; every wait is bounded.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fulmar_tests::{Fulmar, Lines, free_port, fulmar_bin, next_message, paho};

/// How long any single expected thing (a message, an acknowledgment, an exit) may take.
const WAIT: Duration = Duration::from_secs(20);

/// PBKDF2 rounds for the files of tests that are not about the hash's cost: quick even in
/// debug builds.
const QUICK: &str = "1000";

/// The ACL most tests run with.
const ACL: &str = "\
# No rule before the first user: anonymous clients get nothing.
user alice
topic readwrite sensors/#
topic deny sensors/secret
topic read $SYS/#

user bob
topic read sensors/#

pattern readwrite clients/%c/#
pattern read inbox/%u/#
";

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("fulmar-auth-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write a scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn s(path: &Path) -> &str {
    path.to_str().expect("scratch paths are UTF-8")
}

/// Runs a command to completion (at most [`WAIT`]) with `stdin` as its input.
fn run(mut command: Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().expect("collect output")
}

/// `fulmar passwd ARGS`, which must succeed.
fn fulmar_passwd(args: &[&str], stdin: &str) {
    let mut command = Command::new(fulmar_bin());
    command.arg("passwd").args(args);
    let output = run(command, stdin);
    assert!(
        output.status.success(),
        "fulmar passwd {args:?}: {output:?}"
    );
}

/// `mosquitto_passwd ARGS`, which must succeed.
fn mosquitto_passwd(args: &[&str]) {
    let mut command = Command::new("mosquitto_passwd");
    command.args(args);
    let output = run(command, "");
    assert!(
        output.status.success(),
        "mosquitto_passwd {args:?}: {output:?}"
    );
}

/// Starts fulmar with this password file, ACL file and more arguments.
fn start(passwords: &Path, acl: Option<&Path>, more: &[&str]) -> Fulmar {
    let mut args = vec![
        "--set".to_owned(),
        format!("auth.password_file={}", s(passwords)),
    ];
    if let Some(acl) = acl {
        args.extend(["--set".to_owned(), format!("auth.acl_file={}", s(acl))]);
    }
    args.extend(more.iter().map(|a| a.to_string()));
    Fulmar::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A password file with alice (`alice-pw`) and bob (`bob-pw`), quick to check.
fn quick_passwords(scratch: &Scratch) -> PathBuf {
    let file = scratch.path("passwords");
    for (user, password) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
        fulmar_passwd(&["--iterations", QUICK, "-b", s(&file), user, password], "");
    }
    file
}

/// `mosquitto_pub` publishing one message at `port`; returns its exit code, which is the
/// CONNACK's return code (3.1.1) or reason code (5.0) when refused.
fn mosquitto_pub(port: u16, args: &[&str]) -> i32 {
    let mut command = Command::new("mosquitto_pub");
    command.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if !args.contains(&"-t") {
        command.args(["-t", "t", "-m", "x"]);
    }
    command.args(args);
    let output = run(command, "");
    output.status.code().expect("mosquitto_pub exited normally")
}

/// `mosquitto_sub` printing `TOPIC PAYLOAD` lines, once its subscription is acknowledged.
fn mosquitto_sub(port: u16, args: &[&str]) -> Lines {
    fulmar_tests::mosquitto_sub(port, &[&["-F", "%t %p"][..], args].concat())
}

// --- password files ---------------------------------------------------------------------

/// A file written by Mosquitto's own tool ($7$ PBKDF2 and the older $6$ SHA-512): right
/// passwords get in, wrong ones get 4 / 0x86, no user name 5 / 0x87.
#[test]
fn mosquitto_passwd_file_is_accepted_and_enforced() {
    let scratch = Scratch::new("mosquitto-file");
    let file = scratch.path("passwords");
    mosquitto_passwd(&["-c", "-b", s(&file), "alice", "alice-pw"]);
    mosquitto_passwd(&["-H", "sha512", "-b", s(&file), "carol", "carol-pw"]);
    let broker = start(&file, None, &[]);
    let port = broker.port();

    let sub = mosquitto_sub(port, &["-u", "alice", "-P", "alice-pw", "-t", "m/#"]);
    assert_eq!(
        mosquitto_pub(
            port,
            &["-u", "carol", "-P", "carol-pw", "-t", "m/1", "-m", "hi"]
        ),
        0
    );
    assert_eq!(next_message(&sub), "m/1 hi");

    for (version, bad, anonymous) in [("mqttv311", 4, 5), ("mqttv5", 0x86, 0x87)] {
        let v = ["-V", version];
        assert_eq!(
            mosquitto_pub(port, &[&v[..], &["-u", "alice", "-P", "nope"]].concat()),
            bad
        );
        assert_eq!(
            mosquitto_pub(port, &[&v[..], &["-u", "dave", "-P", "alice-pw"]].concat()),
            bad
        );
        assert_eq!(
            mosquitto_pub(port, &[&v[..], &["-u", "alice"]].concat()),
            bad
        );
        assert_eq!(mosquitto_pub(port, &v), anonymous);
    }
    let log = broker.log();
    assert!(!log.contains("anonymous access is allowed"), "{log}");
    assert!(
        log.contains("Bad User Name or Password"),
        "refusals are logged:\n{log}"
    );
}

/// `auth.allow_anonymous = true` next to a password file lets clients without a user name in,
/// still checks those with one, and warns at startup.
#[test]
fn anonymous_access_alongside_a_password_file() {
    let scratch = Scratch::new("anonymous");
    let file = quick_passwords(&scratch);
    let broker = start(&file, None, &["--set", "auth.allow_anonymous=true"]);
    assert_eq!(mosquitto_pub(broker.port(), &[]), 0);
    assert_eq!(
        mosquitto_pub(broker.port(), &["-u", "alice", "-P", "alice-pw"]),
        0
    );
    assert_eq!(
        mosquitto_pub(broker.port(), &["-u", "alice", "-P", "bad"]),
        4
    );
    fulmar_tests::wait_until(WAIT, || {
        broker
            .log()
            .contains("anonymous access is allowed alongside the password file")
    });
}

/// `fulmar passwd` in its three ways of taking a password (-b, stdin, --password), with
/// the default iteration count for one user, `-D`; `mosquitto_passwd` adds a user to the
/// same file; fulmar and the real Mosquitto broker both accept the result.
#[test]
fn fulmar_passwd_round_trip_also_in_mosquitto() {
    let scratch = Scratch::new("passwd");
    let file = scratch.path("passwords");
    let f = s(&file);
    fulmar_passwd(&["-c", "-b", f, "alice", "alice-pw"], "");
    fulmar_passwd(&["--iterations", QUICK, f, "bob"], "bob-pw\n");
    fulmar_passwd(
        &["--iterations", QUICK, "--password", "carol-pw", f, "carol"],
        "",
    );
    mosquitto_passwd(&["-b", f, "dave", "dave-pw"]);
    fulmar_passwd(&["-D", f, "carol"], "");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("alice:$7$210000$"), "{text}");
    assert!(text.contains("\nbob:$7$1000$"), "{text}");
    assert!(!text.contains("carol"), "{text}");

    let broker = start(&file, None, &[]);
    let port = broker.port();
    for (user, password, code) in [
        ("alice", "alice-pw", 0),
        ("bob", "bob-pw", 0),
        ("dave", "dave-pw", 0),
        ("carol", "carol-pw", 4),
        ("bob", "alice-pw", 4),
    ] {
        assert_eq!(
            mosquitto_pub(port, &["-u", user, "-P", password]),
            code,
            "{user}"
        );
    }
    drop(broker);

    // The real Mosquitto with the same file.
    let mosquitto_port = free_port();
    let config = scratch.write(
        "mosquitto.conf",
        // `user root`: as root, Mosquitto would otherwise drop to user mosquitto, who
        // cannot read the (0600) file.
        &format!(
            "user root\nlistener {mosquitto_port} 127.0.0.1\npassword_file {f}\n\
             allow_anonymous false\n"
        ),
    );
    let mut command = Command::new("mosquitto");
    command.args(["-c", s(&config)]);
    let _mosquitto = Lines::spawn(command);
    fulmar_tests::wait_until(WAIT, || {
        TcpStream::connect(("127.0.0.1", mosquitto_port)).is_ok()
    });
    assert_eq!(
        mosquitto_pub(mosquitto_port, &["-u", "alice", "-P", "alice-pw"]),
        0
    );
    assert_eq!(
        mosquitto_pub(mosquitto_port, &["-u", "bob", "-P", "bob-pw"]),
        0
    );
    // Mosquitto answers every refusal with 5.
    assert_eq!(
        mosquitto_pub(mosquitto_port, &["-u", "bob", "-P", "nope"]),
        5
    );
}

/// SIGHUP reloads both files, as in Mosquitto: a user added with `fulmar passwd` gets in,
/// a changed password is checked anew (the old one was remembered, and is forgotten), new
/// ACL rules apply; a broken file on reload is reported and the old rules stay.
#[tokio::test]
async fn sighup_reloads_the_password_and_acl_files() {
    use rumqttc::v5::mqttbytes::v5::PubAckReason::{
        NoMatchingSubscribers as Accepted, NotAuthorized,
    };
    let scratch = Scratch::new("sighup");
    let file = quick_passwords(&scratch);
    let acl = scratch.write("acl", "user alice\ntopic a/#\n");
    let broker = start(&file, Some(&acl), &[]);
    let port = broker.port();
    let hangup = |reloads: usize| {
        let pid = broker.pid().to_string();
        let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(sent.success());
        fulmar_tests::wait_until(WAIT, || broker.log().matches("SIGHUP:").count() >= reloads);
    };
    let old = Some(("alice", "alice-pw"));
    let new = Some(("alice", "new-pw"));
    assert_eq!(
        v5::publish(port, "a", old, &["a/1", "b/1"]).await,
        [Accepted, NotAuthorized]
    );
    assert_eq!(mosquitto_pub(port, &["-u", "carol", "-P", "carol-pw"]), 4);

    let f = s(&file);
    fulmar_passwd(&["--iterations", QUICK, "-b", f, "carol", "carol-pw"], "");
    fulmar_passwd(&["--iterations", QUICK, "-b", f, "alice", "new-pw"], "");
    std::fs::write(&acl, "user alice\ntopic b/#\n").unwrap();
    hangup(1);
    assert!(
        broker
            .log()
            .contains("SIGHUP: password and ACL files reloaded")
    );
    assert_eq!(mosquitto_pub(port, &["-u", "carol", "-P", "carol-pw"]), 0);
    assert_eq!(mosquitto_pub(port, &["-u", "alice", "-P", "alice-pw"]), 4);
    assert_eq!(
        v5::publish(port, "a", new, &["a/1", "b/1"]).await,
        [NotAuthorized, Accepted]
    );

    std::fs::write(&acl, "user alice\ntopic a/#/b\n").unwrap();
    hangup(2);
    assert!(
        broker.log().contains("SIGHUP: reload failed"),
        "{}",
        broker.log()
    );
    assert_eq!(v5::publish(port, "a", new, &["b/1"]).await, [Accepted]);
}

/// rumqttc sees 3.1.1 return codes 4 and 5, and 5.0 reason codes 0x86 and 0x87.
#[tokio::test]
async fn rumqttc_v311_and_v5_refusals() {
    let scratch = Scratch::new("rumqttc-refusals");
    let file = quick_passwords(&scratch);
    let broker = start(&file, None, &[]);
    let port = broker.port();
    use rumqttc::ConnectReturnCode as V4;
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as V5;
    for (credentials, v4, v5) in [
        (Some(("alice", "alice-pw")), V4::Success, V5::Success),
        (
            Some(("alice", "wrong")),
            V4::BadUserNamePassword,
            V5::BadUserNamePassword,
        ),
        (None, V4::NotAuthorized, V5::NotAuthorized),
    ] {
        assert_eq!(
            v311::connack(port, "r4", credentials).await,
            v4,
            "{credentials:?}"
        );
        assert_eq!(
            v5::connack(port, "r5", credentials).await,
            v5,
            "{credentials:?}"
        );
    }
}

/// paho-mqtt (Python) is let in with its password and refused without, in 3.1.1 and 5.0,
/// and sees a refused subscription in its SUBACK.
#[test]
fn paho_authenticates_and_sees_acl_refusals() {
    let scratch = Scratch::new("paho");
    let file = quick_passwords(&scratch);
    let acl = scratch.write("acl", ACL);
    let broker = start(&file, Some(&acl), &[]);
    const SCRIPT: &str = r#"
import sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, version, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
protocol = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho-" + version, protocol=protocol)
if user:
    client.username_pw_set(user, password)
done = threading.Event()
def on_connect(c, userdata, flags, reason, properties):
    print("connack", reason.value, flush=True)
    if reason.is_failure:
        done.set()
    else:
        c.subscribe([("sensors/t", 1), ("bob/#", 1)])
def on_subscribe(c, userdata, mid, reasons, properties):
    print("suback", " ".join(str(r.value) for r in reasons), flush=True)
    done.set()
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.connect("127.0.0.1", port)
client.loop_start()
done.wait(15)
client.disconnect()
client.loop_stop()
"#;
    let port = broker.port().to_string();
    // paho reports 3.1.1 return codes as the matching 5.0 reason codes.
    for (version, user, password, expected) in [
        ("311", "alice", "alice-pw", "connack 0\nsuback 1 128\n"),
        ("5", "alice", "alice-pw", "connack 0\nsuback 1 135\n"),
        ("311", "alice", "wrong", "connack 134\n"),
        ("5", "alice", "wrong", "connack 134\n"),
        ("311", "", "", "connack 135\n"),
        ("5", "", "", "connack 135\n"),
    ] {
        let output = paho::run(SCRIPT, &[&port, version, user, password], WAIT);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            stdout,
            expected,
            "paho {version} {user}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A startup with a bad file fails at once, naming the file and the line; so does
/// `fulmar check-config`.
#[test]
fn bad_files_stop_the_broker_with_the_line() {
    let scratch = Scratch::new("bad-files");
    let acl = scratch.write("acl", "user a\n\ntopic read a/#/b\n");
    let passwords = scratch.write("passwords", "# users\nalice:alice-pw\n");
    let missing = scratch.path("missing");
    for (key, file, message) in [
        ("acl_file", &acl, format!("{}:3: ", s(&acl))),
        (
            "password_file",
            &passwords,
            format!("{}:2: not a hashed password", s(&passwords)),
        ),
        (
            "password_file",
            &missing,
            format!("{} is not a readable file", s(&missing)),
        ),
    ] {
        let setting = format!("auth.{key}={}", s(file));
        let mut command = Command::new(fulmar_bin());
        command.args(["--listen", "127.0.0.1:0", "--set", &setting]);
        let output = run(command, "");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{setting}: {stderr}");
        assert!(
            stderr.contains(&message),
            "{setting}: {message:?} not in {stderr}"
        );
    }
    // `fulmar check-config` reads the files a configuration names too.
    let config = scratch.write(
        "fulmar.toml",
        &format!("[auth]\nacl_file = {:?}\n", s(&acl)),
    );
    let mut command = Command::new(fulmar_bin());
    command.args(["check-config", s(&config)]);
    let output = run(command, "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{}:3: ", s(&acl))), "{stderr}");
}

/// A CONNECT whose password hash takes seconds (5 million rounds) does not hold up the
/// broker: another client's round trip completes while it is still being checked.
#[test]
fn a_slow_hash_does_not_stall_other_clients() {
    let scratch = Scratch::new("slow-hash");
    let file = quick_passwords(&scratch);
    let zeros = "A".repeat(86);
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&format!(
        "slow:$7$5000000$AAAAAAAAAAAAAAAAAAAAAA==${zeros}==\n"
    ));
    std::fs::write(&file, text).unwrap();
    let broker = start(&file, None, &[]);
    let port = broker.port();
    // alice's password is checked (and remembered) before the slow one starts.
    let sub = mosquitto_sub(port, &["-u", "alice", "-P", "alice-pw", "-t", "fast/#"]);

    let mut command = Command::new("mosquitto_pub");
    command.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    command.args(["-u", "slow", "-P", "guess", "-t", "t", "-m", "x"]);
    let mut slow = Lines::spawn(command);
    // Its CONNECT is in: the broker logged the connection.
    fulmar_tests::wait_until(WAIT, || {
        broker.log().matches("connection opened").count() >= 2
    });
    // Its first bytes are read and handed to the hash within moments.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(
        mosquitto_pub(
            port,
            &[
                "-u", "alice", "-P", "alice-pw", "-t", "fast/1", "-m", "quick"
            ]
        ),
        0
    );
    assert_eq!(next_message(&sub), "fast/1 quick");
    let round_trip = started.elapsed();
    assert!(
        slow.wait(Duration::ZERO).is_none(),
        "the slow CONNECT was answered within {round_trip:?}: the test proves nothing"
    );
    slow.kill();
}

// --- the ACL --------------------------------------------------------------------------------

/// SUBSCRIBE to what the ACL does not let the client read: 0x80 in 3.1.1, 0x87 in 5.0;
/// `$SYS` only for the user with a `$SYS` rule; patterns with `%c` and `%u`.
#[tokio::test]
async fn acl_refuses_subscriptions() {
    let scratch = Scratch::new("acl-subscribe");
    let file = quick_passwords(&scratch);
    let acl = scratch.write("acl", ACL);
    let broker = start(&file, Some(&acl), &[]);
    let port = broker.port();
    let alice = Some(("alice", "alice-pw"));
    let bob = Some(("bob", "bob-pw"));

    use rumqttc::SubscribeReasonCode::{Failure, Success as Granted};
    let granted = v311::suback(
        port,
        "dev1",
        alice,
        &[
            "sensors/+/t",
            "sensors/#",
            "other/#",
            "$SYS/#",
            "clients/dev1/#",
            "clients/+/x",
        ],
    )
    .await;
    let qos1 = Granted(rumqttc::QoS::AtLeastOnce);
    assert_eq!(granted, [qos1, Failure, Failure, qos1, qos1, Failure]);

    use rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
    use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::{NotAuthorized, Success};
    let codes = v5::suback(
        port,
        "dev2",
        bob,
        &[
            "sensors/#",
            "$SYS/#",
            "inbox/bob/#",
            "inbox/alice/#",
            "#",
            "$share/g/sensors/+",
        ],
    )
    .await;
    assert_eq!(
        codes,
        [
            Success(AtLeastOnce),
            NotAuthorized,
            Success(AtLeastOnce),
            NotAuthorized,
            NotAuthorized,
            Success(AtLeastOnce)
        ]
    );
}

/// PUBLISH to what the ACL does not let the client write: QoS 1 gets PUBACK 0x87 in 5.0,
/// and the message reaches nobody; `$SYS` is never writable; allowed ones arrive.
#[tokio::test]
async fn acl_refuses_publishes() {
    let scratch = Scratch::new("acl-publish");
    let file = quick_passwords(&scratch);
    let acl = scratch.write("acl", ACL);
    let broker = start(&file, Some(&acl), &[]);
    let port = broker.port();
    let sub = mosquitto_sub(
        port,
        &["-u", "bob", "-P", "bob-pw", "-t", "sensors/#", "-q", "1"],
    );

    use rumqttc::v5::mqttbytes::v5::PubAckReason::{NoMatchingSubscribers, NotAuthorized, Success};
    let alice = Some(("alice", "alice-pw"));
    let reasons = v5::publish(
        port,
        "dev1",
        alice,
        &[
            "sensors/secret",
            "inbox/alice/x",
            "$SYS/broker/uptime",
            "clients/dev1/x",
            "sensors/ok",
        ],
    )
    .await;
    // 0x10: accepted, and nobody subscribes there.
    assert_eq!(
        reasons,
        [
            NotAuthorized,
            NotAuthorized,
            NotAuthorized,
            NoMatchingSubscribers,
            Success
        ]
    );
    let reasons = v5::publish(port, "dev2", Some(("bob", "bob-pw")), &["sensors/bob"]).await;
    assert_eq!(reasons, [NotAuthorized]);
    // The refused ones reached nobody: the first message bob gets is the allowed one.
    assert_eq!(next_message(&sub), "sensors/ok sensors/ok");
    assert_eq!(sub.next_line(Duration::from_millis(300)), None);
}

/// `$SYS` reaches only clients whose rules name it: alice (`topic read $SYS/#`) gets the
/// broker's `$SYS/broker/uptime`; bob, who may read `sensors/#`, is refused and gets nothing.
#[test]
fn sys_is_readable_only_where_the_acl_grants_it() {
    let scratch = Scratch::new("acl-sys");
    let file = quick_passwords(&scratch);
    let acl = scratch.write("acl", ACL);
    let broker = start(&file, Some(&acl), &["--sys-interval", "1"]);
    let port = broker.port();
    let bob = mosquitto_sub(port, &["-u", "bob", "-P", "bob-pw", "-t", "$SYS/#"]);
    // 3.1.1 SUBACK return code 0x80.
    bob.expect_line(WAIT, |l| l == "Subscribed (mid: 1): 128");
    let alice = mosquitto_sub(port, &["-u", "alice", "-P", "alice-pw", "-t", "$SYS/#"]);
    let line = next_message(&alice);
    assert!(line.starts_with("$SYS/broker/"), "{line}");
    // alice has had a whole round of $SYS by now (published every second); bob none.
    let _ = alice.expect_line(WAIT, |l| l.starts_with("$SYS/broker/uptime "));
    // (mosquitto_sub then gives up; whatever else it printed, no message.)
    while let Some(line) = bob.next_line(Duration::from_millis(1500)) {
        assert!(!line.starts_with("$SYS"), "bob got {line}");
    }
}

/// What the tests ask of a rumqttc client, written once for its two APIs (3.1.1 at the
/// crate root, 5.0 in `rumqttc::v5`), whose names match: each module brings its own into
/// scope and expands this.
macro_rules! rumqttc_checks {
    () => {
        fn connect(
            port: u16,
            id: &str,
            credentials: Option<(&str, &str)>,
        ) -> (AsyncClient, EventLoop) {
            let mut options = MqttOptions::new(id, "127.0.0.1", port);
            if let Some((user, password)) = credentials {
                options.set_credentials(user, password);
            }
            AsyncClient::new(options, 16)
        }

        /// The next incoming packet `pick` keeps.
        async fn next<T>(events: &mut EventLoop, pick: impl Fn(Packet) -> Option<T>) -> T {
            loop {
                match timeout(WAIT, events.poll())
                    .await
                    .expect("a packet in time")
                {
                    Ok(Event::Incoming(packet)) => {
                        if let Some(found) = pick(packet) {
                            return found;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(error) => panic!("connection failed: {error}"),
                }
            }
        }

        /// The CONNACK code the broker answers.
        pub(super) async fn connack(
            port: u16,
            id: &str,
            credentials: Option<(&str, &str)>,
        ) -> ConnectReturnCode {
            let (_client, mut events) = connect(port, id, credentials);
            match timeout(WAIT, events.poll()).await.expect("CONNACK in time") {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => ack.code,
                Err(ConnectionError::ConnectionRefused(code)) => code,
                other => panic!("expected a CONNACK, got {other:?}"),
            }
        }

        /// The SUBACK codes for `filters` (at QoS 1), in one SUBSCRIBE.
        pub(super) async fn suback(
            port: u16,
            id: &str,
            credentials: Option<(&str, &str)>,
            filters: &[&str],
        ) -> Vec<SubscribeReasonCode> {
            let (client, mut events) = connect(port, id, credentials);
            let filters = filters
                .iter()
                .map(|f| Filter::new(f.to_string(), QoS::AtLeastOnce));
            client.subscribe_many(filters).await.unwrap();
            next(&mut events, |p| match p {
                Packet::SubAck(ack) => Some(ack.return_codes),
                _ => None,
            })
            .await
        }
    };
}

/// rumqttc speaking MQTT 3.1.1.
mod v311 {
    use rumqttc::SubscribeFilter as Filter;
    use rumqttc::{
        AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet,
        QoS, SubscribeReasonCode,
    };
    use tokio::time::timeout;

    use super::WAIT;

    rumqttc_checks!();
}

/// rumqttc speaking MQTT 5.0.
mod v5 {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{
        ConnectReturnCode, Filter, Packet, PubAckReason, SubscribeReasonCode,
    };
    use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
    use tokio::time::timeout;

    use super::WAIT;

    rumqttc_checks!();

    /// Publishes at QoS 1 to each topic (the topic is also the payload), one after the
    /// other, and returns the PUBACK reason codes.
    pub(super) async fn publish(
        port: u16,
        id: &str,
        credentials: Option<(&str, &str)>,
        topics: &[&str],
    ) -> Vec<PubAckReason> {
        let (client, mut events) = connect(port, id, credentials);
        let mut reasons = Vec::new();
        for topic in topics {
            client
                .publish(*topic, QoS::AtLeastOnce, false, topic.as_bytes().to_vec())
                .await
                .unwrap();
            let reason = next(&mut events, |p| match p {
                Packet::PubAck(ack) => Some(ack.reason),
                _ => None,
            })
            .await;
            reasons.push(reason);
        }
        reasons
    }
}
