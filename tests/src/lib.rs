//! End-to-end tests that drive Fulmar's real binaries with real third-party clients.
//!
//! The suites live in `tests/`; this library holds what they share: building and finding
//! the `fulmar` binary, starting it on a free loopback port, waiting until it serves, and
//! stopping it. Everything here is std only and bounded in time.
//!
//! ## Finding the binary
//! `CARGO_BIN_EXE_<name>` exists only for the tests of the package that owns the binary,
//! and this crate is not `fulmar-edge`. So the first broker a test process starts runs
//! `cargo build -p fulmar-edge --bin fulmar --message-format=json` with the `cargo` that runs
//! the tests (same toolchain, same `CARGO_TARGET_DIR`, `--release` when the tests are built
//! without debug assertions) and takes the path from the compiler-artifact message. That
//! build is a no-op when the binary is up to date, and it can never run a stale binary.
//! Set `FULMAR_BIN` to test a binary built elsewhere (a cross build, a release artifact).
//!
//! ## Data directories
//! Each broker keeps its state in a fresh directory of its own ([`DataDir`], given through
//! `FULMAR_DATA_DIR`), removed when the broker is dropped, never in the working directory.
//! A test that passes `--data-dir` itself (to restart a broker on the same state) wins,
//! since a flag beats a variable.
//!
//! ## Free ports
//! The broker is started with `--listen 127.0.0.1:0`: the kernel picks a free port when the
//! broker binds, and the broker reports it in its startup log line, which [`Fulmar::start`]
//! waits for. Unlike "bind port 0, drop it, pass the number on", no other process can take
//! the port in between. [`free_port`] remains for tests that need a number up front (a
//! restart on the same port, QEMU's port forwarding, a Mosquitto config file): it picks one
//! below the kernel's ephemeral range, which the source ports of outgoing connections
//! (every client of every test running meanwhile) are taken from.

pub mod firmware;
pub mod paho;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a broker gets to start (including the first `cargo build` of it, which may
/// compile the binary).
pub const START_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a broker gets to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The `fulmar` binary: `$FULMAR_BIN`, else built (once per test process) with cargo.
pub fn fulmar_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("FULMAR_BIN") {
        Some(path) => PathBuf::from(path),
        None => cargo_build_bin("fulmar-edge", "fulmar"),
    })
}

/// Builds `bin` of `package` with the cargo running the tests and returns its path.
///
/// # Panics
/// If cargo fails or reports no such executable (a test set-up error).
pub fn cargo_build_bin(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fulmar-tests sits in the workspace root");
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--package", package, "--bin", bin])
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    // Cargo gives this test process the variables it sets for a crate (CARGO_MANIFEST_DIR,
    // CARGO_PKG_NAME, ...). Some build scripts (ring's) ask to be re-run when those change,
    // so passing them on would rebuild such crates on every test run and again on every
    // plain `cargo build`.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PKG_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            )
        {
            command.env_remove(key);
        }
    }
    let output = command.output().expect("run cargo build");
    assert!(
        output.status.success(),
        "cargo build -p {package} --bin {bin} failed"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter(|line| line.contains(r#""reason":"compiler-artifact""#))
        .filter(|line| line.contains(&format!(r#""name":"{bin}""#)))
        .find_map(|line| json_string_field(line, "executable"))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("cargo build reported no executable for {bin}:\n{stdout}"))
}

/// The string value of `"field":"..."` in one line of JSON (cargo's messages), unescaped.
fn json_string_field(line: &str, field: &str) -> Option<String> {
    let start = line.find(&format!(r#""{field}":""#))? + field.len() + 4;
    let mut value = String::new();
    let mut chars = line.get(start..)?.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// A loopback port that was free a moment ago. Prefer starting the broker on port 0 (see
/// the crate docs): another process may take this one before it is used. It is taken
/// from below the ephemeral range (`net.ipv4.ip_local_port_range`), at random, so an
/// outgoing connection's source port never takes it, and two tests rarely try the same.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let random = RandomState::new();
    for attempt in 0u32..200 {
        let port = low + (random.hash_one(attempt) % u64::from(high - low)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// A running `fulmar` process, killed when dropped. When a test panics, the broker's log is
/// printed, so a failure shows both sides.
#[derive(Debug)]
pub struct Fulmar {
    child: Child,
    addr: SocketAddr,
    /// Every listener's address and protocol (`mqtt`, `mqtts`, `ws`, `wss`).
    listeners: Vec<(SocketAddr, String)>,
    log: Arc<Mutex<String>>,
    /// The data directory made for this broker (unused when the test names its own);
    /// dropped after the process is killed (field order).
    data: DataDir,
}

/// A fresh, empty directory under the system's temporary directory, removed (with what it
/// holds) when dropped.
#[derive(Debug)]
pub struct DataDir(PathBuf);

impl DataDir {
    /// Creates a directory whose name contains `name`, this process's id and a counter.
    ///
    /// # Panics
    /// If it cannot be created.
    pub fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("fulmar-test-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a data directory");
        Self(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to the file `name` in the directory and returns its path.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// The directory as a command-line argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("temporary paths are UTF-8 here")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Fulmar {
    /// Starts `fulmar --listen 127.0.0.1:0 --log debug` and waits until it serves.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`Fulmar::start`], with more arguments.
    ///
    /// # Panics
    /// If the broker does not report a listening address within [`START_TIMEOUT`].
    pub fn start_with(args: &[&str]) -> Self {
        let mut command = Command::new(fulmar_bin());
        command
            .args(["--listen", "127.0.0.1:0", "--log", "debug"])
            .args(args);
        Self::start_command(command)
    }

    /// Starts `command` (a `fulmar` command line with whatever arguments, variables and
    /// working directory the test gives it) and waits until it reports its listening
    /// address. Its data directory is a fresh [`DataDir`] unless the command sets or
    /// removes `FULMAR_DATA_DIR` itself (or passes `--data-dir`, which wins).
    ///
    /// # Panics
    /// If the broker does not report a listening address within [`START_TIMEOUT`].
    pub fn start_command(mut command: Command) -> Self {
        let data = DataDir::new("broker");
        if !command
            .get_envs()
            .any(|(name, _)| name == "FULMAR_DATA_DIR")
        {
            command.env("FULMAR_DATA_DIR", data.path());
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fulmar");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (ready, listening) = mpsc::channel();
        let sink = log.clone();
        // Keep reading for the broker's whole life: a full pipe would block its logging.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let listeners = listening_addrs(&line);
                {
                    let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
                if !listeners.is_empty() {
                    let _ = ready.send(listeners);
                }
            }
        });
        let mut broker = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: Vec::new(),
            log,
            data,
        };
        // The listeners are bound before this line is logged: from here on connections are
        // queued by the kernel, so there is nothing more to wait for (and no probe
        // connection that would count against --max-connections).
        match listening.recv_timeout(START_TIMEOUT) {
            Ok(listeners) => {
                broker.addr = listeners[0].0;
                broker.listeners = listeners;
            }
            Err(_) => panic!(
                "fulmar did not report a listening address within {START_TIMEOUT:?}; log:\n{}",
                broker.log()
            ),
        }
        broker
    }

    /// The address the broker listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the first listener speaking `protocol` (`mqtt`, `mqtts`, `ws`, `wss`).
    ///
    /// # Panics
    /// If there is none (the test did not ask for one).
    pub fn listener(&self, protocol: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(_, p)| p == protocol)
            .map(|(addr, _)| *addr)
            .unwrap_or_else(|| panic!("no {protocol} listener in {:?}", self.listeners))
    }

    /// The addresses of every listener speaking `protocol`, in the broker's order.
    pub fn listeners_of(&self, protocol: &str) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter(|(_, p)| p == protocol)
            .map(|(addr, _)| *addr)
            .collect()
    }

    /// The port the broker listens on (its host is 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The data directory the harness gave the broker (unused when the test named its own).
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// Everything the broker logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Kills the process with SIGKILL (`kill -9`): no shutdown, no last commit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the process to exit, at most [`STOP_TIMEOUT`]; `None` if
    /// it did not exit in time.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Fulmar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- fulmar log ----\n{}---- end of fulmar log ----",
                self.log()
            );
        }
    }
}

/// The listeners in the broker's startup line
/// (`fulmar 0.1.0 listening on 127.0.0.1:41234 (mqtt), 127.0.0.1:8080 (ws /mqtt)`): each
/// address with the first word of its protocol.
fn listening_addrs(line: &str) -> Vec<(SocketAddr, String)> {
    let Some(rest) = line.split(" listening on ").nth(1) else {
        return Vec::new();
    };
    rest.split(", ")
        .filter_map(|entry| {
            let (addr, protocol) = entry.split_once(" (")?;
            let protocol = protocol.split([' ', ')']).next()?;
            Some((addr.parse().ok()?, protocol.to_owned()))
        })
        .collect()
}

/// Polls `condition` every few milliseconds until it holds.
///
/// # Panics
/// If it still does not hold after `timeout`.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The address of `broker`'s metrics endpoint (started with `--metrics-listen`), from
/// its log.
///
/// # Panics
/// If the log does not name it within [`START_TIMEOUT`].
pub fn metrics_addr(broker: &Fulmar) -> SocketAddr {
    let mut addr = None;
    wait_until(START_TIMEOUT, || {
        addr = broker.log().lines().find_map(|line| {
            let rest = line.split("Prometheus metrics at http://").nth(1)?;
            rest.split('/').next()?.parse().ok()
        });
        addr.is_some()
    });
    addr.expect("the endpoint's address")
}

/// A scrape of the broker's HTTP endpoint (`/metrics`): the status line, the headers, and the samples by name (with labels).
#[derive(Debug)]
pub struct Scrape {
    /// The status line and the headers.
    pub head: String,
    /// The body.
    pub text: String,
    /// Each sample's value by name, labels included (`name{label="value"}`).
    pub samples: std::collections::HashMap<String, f64>,
}

/// `GET path` from the HTTP endpoint at `addr` (the metrics listener, [`metrics_addr`]).
///
/// # Panics
/// If the endpoint does not answer within 10 s with a head and a body.
pub fn scrape(addr: SocketAddr, path: &str) -> Scrape {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: fulmar\r\n\r\n").expect("send request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read response");
    let (head, text) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let samples = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect();
    Scrape {
        head: head.to_owned(),
        text: text.to_owned(),
        samples,
    }
}

impl Scrape {
    /// The value of sample `name` (with its labels, if any).
    ///
    /// # Panics
    /// If there is no such sample.
    pub fn get(&self, name: &str) -> f64 {
        *self
            .samples
            .get(name)
            .unwrap_or_else(|| panic!("no sample {name} in:\n{}", self.text))
    }
}

/// A child process whose stdout is read line by line on a thread, killed when dropped
/// (`mosquitto_sub`, say).
#[derive(Debug)]
pub struct Lines {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Lines {
    /// Spawns `command` with stdout piped (stderr inherited, so it lands in the test's
    /// output).
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next line, or `None` if none comes within `timeout` (or the output ended).
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Reads lines until one satisfies `wanted` and returns it.
    ///
    /// # Panics
    /// If none does within `timeout`; the message lists the lines seen.
    pub fn expect_line(&self, timeout: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no expected line within {timeout:?}; got: {seen:#?}"),
            }
        }
    }

    /// Kills the process with SIGKILL, as a crash or `kill -9` would: its sockets are
    /// closed by the kernel, without any goodbye at the protocol level.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, at most `timeout`; `None` if it did not.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `mosquitto_sub -d ARGS` against 127.0.0.1:`port` and returns once the broker has
/// acknowledged its subscription; read messages with [`next_message`] (give `-F` to choose
/// their format).
pub fn mosquitto_sub(port: u16, args: &[&str]) -> Lines {
    let sub = mosquitto_sub_lines(port, &[&["-d"], args].concat());
    sub.expect_line(SUB_WAIT, |l| l.contains("received SUBACK"));
    sub
}

/// Starts `mosquitto_sub ARGS` against 127.0.0.1:`port` and returns at once: every line it
/// prints, from the first (a resumed session's queued messages arrive before the SUBACK
/// [`mosquitto_sub`] waits for).
pub fn mosquitto_sub_lines(port: u16, args: &[&str]) -> Lines {
    // mosquitto_sub block-buffers a piped stdout; stdbuf (coreutils) makes it line-buffered
    // so each line arrives when it is printed.
    let mut command = Command::new("stdbuf");
    command
        .args([
            "-oL",
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(args);
    Lines::spawn(command)
}

/// The next message line of a [`mosquitto_sub`] (its debug lines skipped).
///
/// # Panics
/// If none comes within a few seconds.
pub fn next_message(sub: &Lines) -> String {
    sub.expect_line(SUB_WAIT, |l| {
        !l.starts_with("Client ") && !l.starts_with("Subscribed ")
    })
}

/// The next `count` lines `sub` prints that `keep` accepts (others skipped), within
/// `wait` in all; fewer if they do not come.
pub fn take_lines(
    sub: &Lines,
    count: usize,
    wait: Duration,
    keep: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.next_line(left) {
            Some(line) if keep(&line) => got.push(line),
            Some(_) => {}
            None => break,
        }
    }
    got
}

/// How long [`mosquitto_sub`] and [`next_message`] wait.
const SUB_WAIT: Duration = Duration::from_secs(10);

/// `mosquitto_pub -l` on `port` with `args` (client id, QoS, topic): each of `lines` is one
/// PUBLISH, in order, over one connection. Panics if mosquitto_pub fails.
pub fn mosquitto_pub_lines(port: u16, args: &[&str], lines: &[String]) {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-l"])
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("run mosquitto_pub");
    let mut stdin = child.stdin.take().expect("piped stdin");
    for line in lines {
        writeln!(stdin, "{line}").expect("write to mosquitto_pub");
    }
    drop(stdin);
    let status = child.wait().expect("wait for mosquitto_pub");
    assert!(status.success(), "mosquitto_pub on {port}: {status}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listening_line() {
        let line = "2026-01-01T00:00:00Z  INFO fulmar_edge::server: fulmar 0.1.0 listening on \
                    127.0.0.1:41234 (mqtt), [::1]:1883 (mqtt), 127.0.0.1:8080 (ws /mqtt)";
        assert_eq!(
            listening_addrs(line),
            [
                ("127.0.0.1:41234".parse().unwrap(), "mqtt".to_owned()),
                ("[::1]:1883".parse().unwrap(), "mqtt".to_owned()),
                ("127.0.0.1:8080".parse().unwrap(), "ws".to_owned())
            ]
        );
        assert_eq!(listening_addrs("nothing here"), []);
    }

    #[test]
    fn reads_a_json_string_field() {
        let line = r#"{"reason":"compiler-artifact","executable":"/t/a\"b\\c","fresh":true}"#;
        assert_eq!(
            json_string_field(line, "executable").as_deref(),
            Some(r#"/t/a"b\c"#)
        );
        assert_eq!(json_string_field(line, "missing"), None);
    }
}
