//! `cargo xtask bench`: Fulmar side by side with Mosquitto and rumqttd, on loopback.
//!
//! Every scenario runs `fulmar bench pubsub` (or `conn`) from the release build against a
//! fresh broker of each kind, one broker after the other, and the results land in one
//! Markdown table with the ratios fulmar/Mosquitto and fulmar/rumqttd:
//! - throughput: QoS 0 and QoS 1 fan-in (100 publishers -> 1 subscriber), fan-out
//!   (1 -> 500) and point-to-point (500 pairs), with 64 B and 1 KiB payloads. Throughput
//!   is messages *delivered to subscribers* per second; a cell with losses says so, since
//!   for QoS 1 only a lossless rate counts;
//! - p99 end-to-end latency at a fixed offered load every broker sustains;
//! - QoS 1 fan-in over TLS (a certificate made for the run with `openssl`) and over
//!   WebSocket, for the brokers with such listeners here: fulmar, and Mosquitto for TLS;
//! - memory per idle connection: VmRSS of the broker process with as many idle
//!   connections as the open-file limit allows (the hard limit, less [`OWN_FILES`]: 19 936
//!   where it is 20 000), minus its VmRSS before they opened, per connection, read
//!   [`IDLE_SETTLE`] after the last one opened (for every broker alike: fulmar parks a
//!   connection that has been idle for `runtime.park_after_ms`).
//!
//! fulmar runs twice, with its default shards (one per core): with persistence off
//! (`fulmar`, like the peers) and with durable persistence on (`fulmar+disk`: `--sync
//! batch`, a fresh data directory per run); on request a third time with a single broker
//! shard (`--brokers ...,fulmar+1shard`), to show what the shards cost or gain here.
//!
//! A second table gives each broker's CPU time (user + system, /proc/PID/stat) per million
//! delivered messages in the throughput rows: what a message costs the broker, whatever
//! share of the cores the load tool left it.
//!
//! The peers: Mosquitto from the Debian package (`mosquitto`), with its defaults except
//! persistence off, its own port and config file; rumqttd 0.20 from crates.io, installed
//! with `cargo install` into `~/.cache/fulmar/tools`, with the config file written here.
//! Brokers and the load tool run with the open-file limit raised to its hard limit.
//!
//! Not part of `cargo xtask test`: the numbers depend on the machine and take minutes.
//! `tests/tests/bench_tool.rs` is the lean CI check of the load tool itself.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::USAGE_ERROR;
use crate::exec::{Ctx, quote};
use crate::setup;

/// rumqttd release the peers are measured with.
const RUMQTTD_VERSION: &str = "0.20.0";
/// Seconds each throughput scenario publishes for, unless `--seconds` says otherwise.
const DEFAULT_SECONDS: f64 = 3.0;
/// File descriptors a broker or the load tool keeps for itself (standard streams,
/// listeners, epoll, its files): the idle row opens the hard open-file limit minus these.
const OWN_FILES: usize = 64;
/// Idle connections for the memory row when the hard open-file limit cannot be read.
const FALLBACK_IDLE: usize = 10_000;
/// Runs of a lossy QoS 1 throughput scenario at a lower offered rate.
const RATE_RETRIES: usize = 2;
/// How long a broker gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The brokers, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broker {
    /// Persistence off, like the peers.
    Fulmar,
    /// Persistence on with the default group commit (`--sync batch`), in a fresh data
    /// directory per run.
    FulmarDurable,
    Mosquitto,
    Rumqttd,
    /// Persistence off, one broker shard (`runtime.shards = 1`): what the default's
    /// shards (one per core) cost and gain here. Only when asked for (`--brokers`).
    FulmarOneShard,
}

const BROKERS: [Broker; 4] = [
    Broker::Fulmar,
    Broker::FulmarDurable,
    Broker::Mosquitto,
    Broker::Rumqttd,
];

/// Every broker `--brokers` may name.
const KNOWN: [Broker; 5] = [
    Broker::Fulmar,
    Broker::FulmarDurable,
    Broker::Mosquitto,
    Broker::Rumqttd,
    Broker::FulmarOneShard,
];

/// The ratio columns: (ours, theirs).
const COMPARISONS: [(Broker, Broker); 4] = [
    (Broker::Fulmar, Broker::Mosquitto),
    (Broker::Fulmar, Broker::Rumqttd),
    (Broker::FulmarDurable, Broker::Mosquitto),
    (Broker::Fulmar, Broker::FulmarOneShard),
];

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Broker::Fulmar => "fulmar",
            Broker::FulmarDurable => "fulmar+disk",
            Broker::Mosquitto => "mosquitto",
            Broker::Rumqttd => "rumqttd",
            Broker::FulmarOneShard => "fulmar+1shard",
        }
    }
}

/// What a scenario measures, which decides how its cells read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    /// Delivered messages per second (higher is better).
    Throughput,
    /// p99 end-to-end latency (lower is better).
    Latency,
    /// Broker memory per idle connection (lower is better).
    IdleMemory,
}

/// One row of the table.
#[derive(Debug, Clone)]
struct Scenario {
    name: String,
    measure: Measure,
    /// Arguments of `fulmar bench` (without the port).
    args: Vec<String>,
    /// What the clients connect over.
    over: Over,
}

/// What a scenario's clients connect over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Tcp,
    /// TLS: the broker listens with the run's certificate, the tool trusts its CA.
    Tls,
    /// WebSocket on `/mqtt`, subprotocol `mqtt`.
    Ws,
}

/// The listener a broker is started with.
#[derive(Debug, Clone, Copy)]
enum Listen<'a> {
    Tcp,
    Tls(&'a TlsFiles),
    Ws,
}

/// The options of `cargo xtask bench`.
#[derive(Debug)]
struct Options {
    seconds: f64,
    idle: usize,
    /// Only scenarios whose name contains one of these.
    only: Vec<String>,
    brokers: Vec<Broker>,
}

/// `cargo xtask bench`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{}", help());
        return ExitCode::SUCCESS;
    }
    let options = match parse(args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}\n");
            eprint!("{}", help());
            return ExitCode::from(USAGE_ERROR);
        }
    };
    crate::exec::with_ctx(|ctx| run(ctx, &options))
}

/// The text of `cargo xtask help bench`.
pub(crate) fn help() -> String {
    format!(
        "usage: cargo xtask bench [--seconds S] [--idle N] [--only NAME,...] [--brokers B,...]\n\n\
         Runs the same load scenarios (`fulmar bench`, release build) against fulmar, Mosquitto\n\
         (Debian package, persistence off) and rumqttd {RUMQTTD_VERSION} (cargo install into\n\
         ~/.cache/fulmar/tools) on loopback, a fresh broker per scenario, and prints one\n\
         Markdown table with ratios (also written to <target>/bench/results.md).\n\n\
         options:\n  \
         --seconds S      seconds each throughput scenario publishes (default {DEFAULT_SECONDS})\n  \
         --idle N         idle connections for the memory row (default: the hard open-file\n                   \
         limit less {OWN_FILES}, here {})\n  \
         --only NAMES     run only scenarios whose name contains one of NAMES (e.g. fan-in,idle)\n  \
         --brokers NAMES  brokers to run, from fulmar,fulmar+disk,mosquitto,rumqttd (the\n                   default) and fulmar+1shard (runtime.shards = 1)\n",
        default_idle()
    )
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        seconds: DEFAULT_SECONDS,
        idle: default_idle(),
        only: Vec::new(),
        brokers: BROKERS.to_vec(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("`{arg}` needs a value"));
        match arg.as_str() {
            "--seconds" => {
                options.seconds = value()?
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0)
                    .ok_or("--seconds needs a positive number")?;
            }
            "--idle" => {
                options.idle = value()?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--idle needs a positive whole number")?;
            }
            "--only" => options.only = value()?.split(',').map(str::to_owned).collect(),
            "--brokers" => {
                options.brokers = value()?
                    .split(',')
                    .map(|name| {
                        KNOWN
                            .into_iter()
                            .find(|b| b.name() == name)
                            .ok_or_else(|| format!("unknown broker `{name}`"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(options)
}

/// The scenarios, in table order.
fn scenarios(options: &Options) -> Vec<Scenario> {
    let seconds = options.seconds.to_string();
    let mut all = Vec::new();
    // (name, publishers, subscribers, publish topic, subscription filter)
    let shapes = [
        ("fan-in 100→1", 100, 1, "bench/in/%i", "bench/in/#"),
        ("fan-out 1→500", 1, 500, "bench/out", "bench/out"),
        ("p2p 500 pairs", 500, 500, "bench/p2p/%i", "bench/p2p/%i"),
    ];
    for size in [64, 1024] {
        for qos in [0, 1] {
            for (shape, publishers, subscribers, topic, filter) in shapes {
                let label = if size == 64 { "64 B" } else { "1 KiB" };
                all.push(Scenario {
                    name: format!("QoS {qos} {shape}, {label}"),
                    measure: Measure::Throughput,
                    args: pubsub_args(publishers, subscribers, topic, filter, qos, size, &seconds),
                    over: Over::Tcp,
                });
            }
        }
    }
    // 10 pairs at 1000 msg/s each: 10k msg/s, far below what any of the three sustains.
    let mut latency = pubsub_args(10, 10, "bench/lat/%i", "bench/lat/%i", 1, 64, &seconds);
    latency.extend(["--rate", "1000"].map(str::to_owned));
    for (over, name) in [(Over::Tls, "TLS"), (Over::Ws, "WebSocket")] {
        all.push(Scenario {
            name: format!("QoS 1 fan-in 100→1, 64 B, over {name}"),
            measure: Measure::Throughput,
            args: pubsub_args(100, 1, "bench/in/%i", "bench/in/#", 1, 64, &seconds),
            over,
        });
    }
    all.push(Scenario {
        name: "p99 latency, QoS 1 10 pairs × 1000 msg/s, 64 B".to_owned(),
        measure: Measure::Latency,
        args: latency,
        over: Over::Tcp,
    });
    all.push(Scenario {
        name: format!("RSS per idle connection ({} connections)", options.idle),
        measure: Measure::IdleMemory,
        args: [
            "conn",
            "--count",
            &options.idle.to_string(),
            "--duration",
            "5",
        ]
        .map(str::to_owned)
        .to_vec(),
        over: Over::Tcp,
    });
    all.retain(|s| options.only.is_empty() || options.only.iter().any(|o| s.name.contains(o)));
    all
}

fn pubsub_args(
    publishers: usize,
    subscribers: usize,
    topic: &str,
    filter: &str,
    qos: u8,
    size: usize,
    seconds: &str,
) -> Vec<String> {
    [
        "pubsub",
        "--publishers",
        &publishers.to_string(),
        "--subscribers",
        &subscribers.to_string(),
        "--pub-topic",
        topic,
        "--sub-topic",
        filter,
        "--qos",
        &qos.to_string(),
        "--size",
        &size.to_string(),
        "--duration",
        seconds,
        "--drain-idle",
        "2",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// What one scenario gave on one broker.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// The `result:` fields of `fulmar bench`, with the memory measurement for `conn`.
    Measured(Vec<(String, String)>),
    /// The run failed; why.
    Failed(String),
}

impl Outcome {
    fn field(&self, key: &str) -> Option<f64> {
        match self {
            Outcome::Measured(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.parse().ok()),
            Outcome::Failed(_) => None,
        }
    }

    /// The number the ratio columns compare.
    fn value(&self, measure: Measure) -> Option<f64> {
        match measure {
            Measure::Throughput => self.field("rate"),
            Measure::Latency => self.field("p99_us"),
            Measure::IdleMemory => self.field("rss_per_conn"),
        }
    }

    /// The table cell.
    fn cell(&self, measure: Measure) -> String {
        let Outcome::Measured(_) = self else {
            return "failed".to_owned();
        };
        let Some(value) = self.value(measure) else {
            return "-".to_owned();
        };
        let mut cell = match measure {
            Measure::Throughput => format!("{}/s", si(value)),
            Measure::Latency => format!("{:.2} ms", value / 1000.0),
            Measure::IdleMemory => format!(
                "{:.2} KB ({:.1} MB)",
                value / 1000.0,
                self.field("rss_growth").unwrap_or(0.0) / 1e6
            ),
        };
        if let Some(offered) = self.field("offered") {
            let _ = write!(cell, " (at {}/s offered)", si(offered));
        }
        let lost = self.field("lost").unwrap_or(0.0);
        let expected = self.field("expected").unwrap_or(0.0);
        if lost > 0.0 && expected > 0.0 {
            let share = lost * 100.0 / expected;
            let _ = if share < 0.1 {
                write!(cell, " ({lost} lost)")
            } else {
                write!(cell, " ({share:.0}% lost)")
            };
        }
        for key in ["failed", "dropped", "errors"] {
            let n = self.field(key).unwrap_or(0.0);
            if n > 0.0 {
                let _ = write!(cell, " ({n} {key})");
            }
        }
        cell
    }
}

/// `1234567.0` as `1.23M`.
fn si(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// `ours / theirs` as a ratio where above 1 means fulmar is better.
fn ratio(measure: Measure, ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(ours), Some(theirs)) if ours > 0.0 && theirs > 0.0 => {
            let better = match measure {
                Measure::Throughput => ours / theirs,
                Measure::Latency | Measure::IdleMemory => theirs / ours,
            };
            format!("{better:.2}×")
        }
        _ => "-".to_owned(),
    }
}

fn run(ctx: &Ctx, options: &Options) -> Result<(), String> {
    let dir = ctx.target_dir.join("bench");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut installed = Vec::new();
    if options.brokers.contains(&Broker::Mosquitto) {
        installed.extend(setup::ensure_debian_packages(ctx, &["mosquitto"])?);
    }
    let rumqttd = if options.brokers.contains(&Broker::Rumqttd) {
        Some(ensure_rumqttd(ctx)?)
    } else {
        None
    };
    ctx.run(&mut ctx.cargo(["build", "--release", "-p", "fulmar-edge", "--bin", "fulmar"]))?;
    let fulmar = ctx.target_dir.join("release").join("fulmar");
    let scenarios = scenarios(options);
    let tls = if scenarios.iter().any(|s| s.over == Over::Tls) {
        installed.extend(setup::ensure_debian_packages(ctx, &["openssl"])?);
        Some(make_certificates(ctx, &dir.join("tls"))?)
    } else {
        None
    };
    let bins = Bins {
        fulmar,
        rumqttd,
        dir,
        tls,
    };

    let mut rows: Vec<(Scenario, Vec<Outcome>)> = Vec::new();
    let started = Instant::now();
    for scenario in scenarios {
        println!("\n==> {}", scenario.name);
        let mut outcomes = Vec::new();
        for &broker in &options.brokers {
            let outcome = measure(&bins, broker, &scenario).unwrap_or_else(Outcome::Failed);
            if let Outcome::Failed(why) = &outcome {
                eprintln!("bench: {} on {}: {why}", scenario.name, broker.name());
            }
            println!(
                "    {:<10} {}",
                broker.name(),
                outcome.cell(scenario.measure)
            );
            outcomes.push(outcome);
        }
        rows.push((scenario, outcomes));
    }
    let table = render(&options.brokers, &rows);
    let text = format!(
        "{}\n{table}\n(run took {:.0}s)\n",
        machine(),
        started.elapsed().as_secs_f64()
    );
    println!("\n{text}");
    let out = bins.dir.join("results.md");
    fs::write(&out, &text).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("written to {}", out.display());
    Ok(())
}

/// The binaries and the scratch directory of a run.
#[derive(Debug)]
struct Bins {
    fulmar: PathBuf,
    rumqttd: Option<PathBuf>,
    dir: PathBuf,
    /// The TLS scenarios' certificates.
    tls: Option<TlsFiles>,
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made for a run.
#[derive(Debug)]
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Makes a CA and a server certificate (P-256, for `localhost` and 127.0.0.1) in `dir`
/// with the `openssl` command.
fn make_certificates(ctx: &Ctx, dir: &Path) -> Result<TlsFiles, String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (ca, ca_key, cert, key, csr, ext) = (
        file("ca.pem"),
        file("ca.key"),
        file("server.pem"),
        file("server.key"),
        file("server.csr"),
        file("server.ext"),
    );
    write_config(
        Path::new(&ext),
        "subjectAltName=DNS:localhost,IP:127.0.0.1
basicConstraints=CA:FALSE
         extendedKeyUsage=serverAuth
",
    )?;
    let p256 = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut make_ca = ctx.command("openssl", ["req", "-x509"]);
    make_ca
        .args(p256)
        .args(["-keyout", &ca_key, "-out", &ca, "-days", "2"]);
    make_ca.args(["-subj", "/CN=fulmar bench CA"]);
    make_ca.args(["-addext", "basicConstraints=critical,CA:TRUE"]);
    make_ca.args(["-addext", "keyUsage=critical,keyCertSign"]);
    ctx.run(&mut make_ca)?;
    let mut make_csr = ctx.command("openssl", ["req"]);
    make_csr
        .args(p256)
        .args(["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
    ctx.run(&mut make_csr)?;
    let mut sign = ctx.command("openssl", ["x509", "-req", "-in", &csr, "-CA", &ca]);
    sign.args([
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
        "-days",
        "2",
    ]);
    sign.args(["-extfile", &ext]);
    ctx.run(&mut sign)?;
    // Mosquitto reads its key after dropping root for its own user: a throwaway key for
    // loopback may be readable by all.
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("cannot make {key} readable: {e}"))?;
    Ok(TlsFiles {
        ca: ca.into(),
        cert: cert.into(),
        key: key.into(),
    })
}

/// Runs `scenario` against `broker`. A QoS 1 throughput run that lost messages is run
/// again at a lower offered rate (80 % of what was delivered), up to [`RATE_RETRIES`]
/// times, so its row can show a lossless rate where there is one.
fn measure(bins: &Bins, broker: Broker, scenario: &Scenario) -> Result<Outcome, String> {
    let mut outcome = measure_once(bins, broker, scenario, &[])?;
    if scenario.measure != Measure::Throughput || outcome.field("qos") != Some(1.0) {
        return Ok(outcome);
    }
    for _ in 0..RATE_RETRIES {
        let (Some(lost), Some(rate), Some(sent), Some(expected), Some(publishers)) = (
            outcome.field("lost"),
            outcome.field("rate"),
            outcome.field("sent"),
            outcome.field("expected"),
            outcome.field("publishers"),
        ) else {
            break;
        };
        if lost == 0.0 || rate <= 0.0 || sent <= 0.0 || publishers <= 0.0 {
            break;
        }
        // Deliveries per published message (the fan-out), to turn the delivered rate
        // into a publish rate per publisher.
        let fan = expected / sent;
        let per_publisher = 0.8 * rate / fan / publishers;
        println!(
            "    {}: lost {lost}; again at {per_publisher:.1} msg/s per publisher",
            broker.name()
        );
        let retry = measure_once(
            bins,
            broker,
            scenario,
            &["--rate".to_owned(), format!("{per_publisher:.3}")],
        )?;
        let Outcome::Measured(mut fields) = retry else {
            break;
        };
        fields.push((
            "offered".to_owned(),
            format!("{:.0}", per_publisher * publishers * fan),
        ));
        outcome = Outcome::Measured(fields);
    }
    Ok(outcome)
}

/// Runs `scenario` once against a fresh `broker`, with `extra` arguments for the load
/// tool.
fn measure_once(
    bins: &Bins,
    broker: Broker,
    scenario: &Scenario,
    extra: &[String],
) -> Result<Outcome, String> {
    let port = free_port()?;
    let listen = match (scenario.over, broker) {
        (Over::Tcp, _) => Listen::Tcp,
        // rumqttd is not set up with TLS or WebSocket listeners here, and Mosquitto's
        // WebSocket listener (libwebsockets) does not start on this machine ("Unable to
        // start any listening sockets", with or without an address).
        (_, Broker::Rumqttd) | (Over::Ws, Broker::Mosquitto) => {
            return Ok(Outcome::Measured(Vec::new()));
        }
        (Over::Tls, _) => Listen::Tls(
            bins.tls
                .as_ref()
                .ok_or("no certificates for a TLS scenario")?,
        ),
        (Over::Ws, _) => Listen::Ws,
    };
    let mut running = start_broker(bins, broker, port, listen)?;
    let mut command = unlimited(&bins.fulmar);
    command
        .arg("bench")
        .args(&scenario.args)
        .args(extra)
        .args(["--port", &port.to_string()]);
    match listen {
        Listen::Tcp => {}
        Listen::Tls(files) => {
            command.arg("--tls").arg(&files.ca);
        }
        Listen::Ws => {
            command.args(["--ws", "/mqtt"]);
        }
    }
    let outcome = if scenario.measure == Measure::IdleMemory {
        measure_idle(&mut running, command)
    } else {
        let pid = running.child.id();
        let before = cpu_ticks(pid);
        let lines = run_bench(command, None)?;
        let used = cpu_ticks(pid)
            .zip(before)
            .map(|(after, before)| after - before);
        let mut outcome = result_fields(&lines);
        if let (Outcome::Measured(fields), Some(ticks)) = (&mut outcome, used) {
            fields.push(("cpu_ticks".to_owned(), ticks.to_string()));
        }
        Ok(outcome)
    };
    running.stop();
    outcome
}

/// How long after the last idle connection opened the idle row reads the broker's VmRSS:
/// fulmar parks a plain-TCP connection idle for `runtime.park_after_ms` (2 s by default)
/// within a quarter of that more, so the reading is of parked connections; every broker
/// gets the same wait. The row's `--duration` (5 s) holds the connections past it.
const IDLE_SETTLE: Duration = Duration::from_secs(3);

/// Runs the `conn` scenario: the broker's VmRSS before, and while the connections are
/// held (read [`IDLE_SETTLE`] after `fulmar bench conn` reports them all open).
fn measure_idle(running: &mut Running, command: Command) -> Result<Outcome, String> {
    std::thread::sleep(Duration::from_millis(500));
    let before = vm_rss(running.child.id())?;
    let pid = running.child.id();
    let mut during = None;
    let lines = run_bench(
        command,
        Some(&mut |line: &str| {
            if line.starts_with("connected:") {
                // Let the broker finish the last handshakes' work, and park.
                std::thread::sleep(IDLE_SETTLE);
                during = vm_rss(pid).ok();
            }
        }),
    )?;
    let Outcome::Measured(mut fields) = result_fields(&lines) else {
        return Ok(result_fields(&lines));
    };
    let during = during.ok_or("could not read the broker's VmRSS with the connections open")?;
    let connections: u64 = fields
        .iter()
        .find(|(k, _)| k == "connections")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if connections == 0 {
        return Ok(Outcome::Failed("no connection opened".to_owned()));
    }
    let growth = during.saturating_sub(before);
    fields.push(("rss_growth".to_owned(), growth.to_string()));
    fields.push((
        "rss_per_conn".to_owned(),
        (growth as f64 / connections as f64).to_string(),
    ));
    Ok(Outcome::Measured(fields))
}

/// The `result:` line's fields, or the failure if there is none.
fn result_fields(lines: &[String]) -> Outcome {
    match lines.iter().find_map(|l| l.strip_prefix("result: ")) {
        Some(result) => Outcome::Measured(
            result
                .split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        ),
        None => Outcome::Failed(format!(
            "no result line; output: {}",
            lines.last().map_or("(none)", String::as_str)
        )),
    }
}

/// Runs `fulmar bench`, echoing its output indented and handing each line to `on_line`,
/// and returns the lines. Killed after a generous bound so a hung run cannot stall the
/// whole comparison.
fn run_bench(
    mut command: Command,
    mut on_line: Option<&mut dyn FnMut(&str)>,
) -> Result<Vec<String>, String> {
    let line = describe(&command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start `{line}`: {e}"))?;
    let stdout = child.stdout.take().ok_or("stdout was not captured")?;
    let pid = child.id();
    // A watchdog: scenarios take seconds; two minutes means something hangs.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let mut lines = Vec::new();
    for text in BufReader::new(stdout).lines() {
        let Ok(text) = text else { break };
        println!("      {text}");
        if let Some(on_line) = on_line.as_mut() {
            on_line(&text);
        }
        lines.push(text);
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("could not wait for `{line}`: {e}"))?;
    let _ = done.send(());
    let _ = watchdog.join();
    if !output.status.success() {
        return Err(format!(
            "`{line}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(lines)
}

/// A broker process, killed when dropped.
#[derive(Debug)]
struct Running {
    child: Child,
}

impl Running {
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `broker` on 127.0.0.1:`port` with a `listen` listener and waits until it
/// accepts connections.
fn start_broker(
    bins: &Bins,
    broker: Broker,
    port: u16,
    listen: Listen<'_>,
) -> Result<Running, String> {
    let mut command = match broker {
        Broker::Fulmar | Broker::FulmarDurable | Broker::FulmarOneShard => {
            let mut command = unlimited(&bins.fulmar);
            match listen {
                Listen::Tcp => command.args(["--listen", &format!("127.0.0.1:{port}")]),
                Listen::Tls(_) | Listen::Ws => {
                    let config = bins.dir.join("fulmar-listener.toml");
                    write_config(&config, &fulmar_listener_config(port, listen))?;
                    command.arg("--config").arg(config)
                }
            };
            command.args(["--log", "warn", "--max-connections", "30000"]);
            if broker == Broker::FulmarOneShard {
                command.args(["--persistence", "false", "--set", "runtime.shards=1"]);
            } else if broker == Broker::Fulmar {
                command.args(["--persistence", "false"]);
            } else {
                // A fresh directory: a run must not replay the previous run's state.
                let data = bins.dir.join(format!("fulmar-data-{port}"));
                let _ = fs::remove_dir_all(&data);
                command.args(["--persistence", "true", "--sync", "batch", "--data-dir"]);
                command.arg(data);
            }
            command
        }
        Broker::Mosquitto => {
            let config = bins.dir.join("mosquitto.conf");
            let mut text = mosquitto_config(port);
            // Options of the listener above.
            let _ = match listen {
                Listen::Tcp => Ok(()),
                Listen::Tls(files) => write!(
                    text,
                    "certfile {}\nkeyfile {}\n",
                    files.cert.display(),
                    files.key.display()
                ),
                Listen::Ws => writeln!(text, "protocol websockets"),
            };
            write_config(&config, &text)?;
            let mut command = unlimited(Path::new("mosquitto"));
            command.arg("-c").arg(&config);
            command
        }
        Broker::Rumqttd => {
            let bin = bins.rumqttd.as_ref().ok_or("rumqttd is not installed")?;
            let config = bins.dir.join("rumqttd.toml");
            write_config(&config, &rumqttd_config(port))?;
            let mut command = unlimited(bin);
            command.arg("--config").arg(&config);
            command
        }
    };
    let line = describe(&command);
    let child = command
        .current_dir(&bins.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start `{line}`: {e}"))?;
    let mut running = Running { child };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(running);
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            return Err(format!("`{line}` exited at start ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!("`{line}` did not listen within {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// As many idle connections as a process can hold: the hard open-file limit (which every
/// process here raises its soft limit to), less the descriptors each keeps for itself.
fn default_idle() -> usize {
    hard_open_files().map_or(FALLBACK_IDLE, |hard| hard.saturating_sub(OWN_FILES).max(1))
}

/// The hard open-file limit of this process (`Max open files` in `/proc/self/limits`);
/// `None` when unlimited or unreadable.
fn hard_open_files() -> Option<usize> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    // "Max open files  <soft>  <hard>  files"
    line.split_whitespace().nth(4)?.parse().ok()
}

/// `program` run through `sh` with the open-file limit raised to its hard limit: thousands
/// of connections need more than the usual soft limit of 1024, on both ends (fulmar raises
/// its own; the peers need it done for them).
fn unlimited(program: &Path) -> Command {
    let mut command = Command::new("sh");
    command
        .args(["-c", r#"ulimit -n "$(ulimit -Hn)" && exec "$0" "$@""#])
        .arg(program);
    command
}

/// Mosquitto's configuration: the Debian defaults, except no persistence and our port.
fn mosquitto_config(port: u16) -> String {
    format!(
        "# Written by cargo xtask bench: Mosquitto's defaults, persistence off.\n\
         listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence false\n\
         log_dest stderr\n\
         log_type error\n"
    )
}

/// fulmar's configuration for a TLS or WebSocket scenario: that listener on our port (and
/// a plain one on any free port, instead of the default 0.0.0.0:1883).
fn fulmar_listener_config(port: u16, listen: Listen<'_>) -> String {
    let mut text = "# Written by cargo xtask bench.\n\
                    [[listeners.tcp]]\n\
                    addr = \"127.0.0.1:0\"\n"
        .to_owned();
    let _ = match listen {
        Listen::Tcp => Ok(()),
        Listen::Tls(files) => write!(
            text,
            "[[listeners.tls]]\naddr = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            files.cert.display(),
            files.key.display()
        ),
        Listen::Ws => write!(
            text,
            "[[listeners.ws]]\naddr = \"127.0.0.1:{port}\"\npath = \"/mqtt\"\n"
        ),
    };
    text
}

/// rumqttd's configuration: one MQTT 3.1.1 listener on our port; limits as in rumqttd's
/// own example file, except room for the idle-connection row and no delay between
/// accepts (the example waits 1 ms per connection).
fn rumqttd_config(port: u16) -> String {
    format!(
        "# Written by cargo xtask bench.\n\
         id = 0\n\n\
         [router]\n\
         id = 0\n\
         max_connections = 30000\n\
         max_outgoing_packet_count = 200\n\
         max_segment_size = 104857600\n\
         max_segment_count = 10\n\n\
         [v4.1]\n\
         name = \"v4-1\"\n\
         listen = \"127.0.0.1:{port}\"\n\
         next_connection_delay_ms = 0\n\
         [v4.1.connections]\n\
         connection_timeout_ms = 60000\n\
         max_payload_size = 20480\n\
         max_inflight_count = 100\n\
         dynamic_filters = true\n"
    )
}

fn write_config(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// rumqttd, installed with `cargo install` into `~/.cache/fulmar/tools` if missing.
fn ensure_rumqttd(ctx: &Ctx) -> Result<PathBuf, String> {
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let root = Path::new(&home).join(".cache/fulmar/tools");
    let bin = root.join("bin/rumqttd");
    if bin.is_file() {
        println!("bench: rumqttd: present ({})", bin.display());
        return Ok(bin);
    }
    println!(
        "bench: installing rumqttd {RUMQTTD_VERSION} into {}",
        root.display()
    );
    // Not `--locked`: the lock file shipped with 0.20.0 pins metrics 0.22.1, which no
    // longer compiles with current Rust; the newest semver-compatible dependencies do.
    let mut install = ctx.command(
        "cargo",
        ["install", "rumqttd", "--version", RUMQTTD_VERSION, "--root"],
    );
    install.arg(&root);
    // Its own target dir: the install must not invalidate the workspace's builds.
    install.env("CARGO_TARGET_DIR", ctx.target_dir.join("rumqttd-install"));
    ctx.run(&mut install)?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "cargo install reported success but {} is missing",
            bin.display()
        ))
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// CPU time process `pid` has used so far (user and system, all threads), in clock ticks
/// (fields 14 and 15 of /proc/PID/stat); `None` if it cannot be read.
fn cpu_ticks(pid: u32) -> Option<u64> {
    parse_cpu_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: count from after
    // its closing parenthesis, where field 3 starts.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 on Linux when it
/// cannot be asked).
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident memory of process `pid`, in bytes (`VmRSS` of /proc/PID/status).
fn vm_rss(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    parse_vm_rss(&status).ok_or_else(|| format!("no VmRSS line in {path}"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The command as a shell line, for messages.
fn describe(command: &Command) -> String {
    let mut line = quote(command.get_program());
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

/// What the numbers were measured on.
fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned());
    let mosquitto = Command::new("mosquitto")
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "mosquitto (version unknown)".to_owned());
    format!(
        "Machine: {cores} cores ({cpu}), Linux {kernel}; {mosquitto}; rumqttd {RUMQTTD_VERSION}; \
         brokers and load tool on the same cores, over loopback."
    )
}

/// The Markdown table.
fn render(brokers: &[Broker], rows: &[(Scenario, Vec<Outcome>)]) -> String {
    let mut header: Vec<String> = vec!["scenario".to_owned()];
    header.extend(brokers.iter().map(|b| b.name().to_owned()));
    let columns: Vec<(usize, usize)> = COMPARISONS
        .iter()
        .filter_map(|(ours, theirs)| {
            let ours = brokers.iter().position(|b| b == ours)?;
            let theirs = brokers.iter().position(|b| b == theirs)?;
            Some((ours, theirs))
        })
        .collect();
    header.extend(
        columns
            .iter()
            .map(|&(o, t)| format!("{} vs {}", brokers[o].name(), brokers[t].name())),
    );
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}",
        header
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
            .collect::<String>()
    );
    for (scenario, outcomes) in rows {
        let mut cells = vec![scenario.name.clone()];
        cells.extend(outcomes.iter().map(|o| o.cell(scenario.measure)));
        // A lossy QoS 1 rate is not a throughput; no ratio is drawn from it.
        let usable = |o: &Outcome| {
            let lossless = o.field("lost").unwrap_or(0.0) == 0.0;
            let qos0 = o.field("qos") == Some(0.0);
            o.value(scenario.measure)
                .filter(|_| scenario.measure != Measure::Throughput || lossless || qos0)
        };
        for &(o, t) in &columns {
            cells.push(ratio(
                scenario.measure,
                usable(&outcomes[o]),
                usable(&outcomes[t]),
            ));
        }
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push_str(
        "\nThroughput: messages delivered to subscribers per second (first publish to last \
         delivery); a QoS 1 run that lost messages is re-run at 80 % of the rate it delivered \
         (\"at N/s offered\"), twice at most, and a cell still lossy gets no ratio. Latency: p99 end to end; memory: VmRSS \
         growth per idle connection. Ratios above 1× favour fulmar.\n",
    );
    out.push_str(&cpu_table(brokers, &columns, rows, ticks_per_second()));
    out
}

/// The second table: CPU time each broker process used per million messages it delivered
/// in the throughput rows — what a message costs, which does not depend on how the load
/// tool shares the cores with the broker. `ticks`: /proc's clock ticks per second.
fn cpu_table(
    brokers: &[Broker],
    columns: &[(usize, usize)],
    rows: &[(Scenario, Vec<Outcome>)],
    ticks: f64,
) -> String {
    let per_million = |o: &Outcome| {
        let delivered = o.field("delivered").filter(|d| *d > 0.0)?;
        Some(o.field("cpu_ticks")? / ticks / delivered * 1e6)
    };
    let mut out =
        String::from("\nBroker CPU seconds (user + system) per million delivered messages:\n\n");
    let mut header: Vec<String> = vec!["scenario".to_owned()];
    header.extend(brokers.iter().map(|b| b.name().to_owned()));
    header.extend(
        columns
            .iter()
            .map(|&(o, t)| format!("{} vs {}", brokers[o].name(), brokers[t].name())),
    );
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(header.len() - 1));
    for (scenario, outcomes) in rows {
        if scenario.measure != Measure::Throughput {
            continue;
        }
        let mut cells = vec![scenario.name.clone()];
        cells.extend(
            outcomes
                .iter()
                .map(|o| per_million(o).map_or("-".to_owned(), |s| format!("{s:.2} s"))),
        );
        for &(o, t) in columns {
            // Less CPU is better, as with latency.
            cells.push(ratio(
                Measure::Latency,
                per_million(&outcomes[o]),
                per_million(&outcomes[t]),
            ));
        }
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(pairs: &[(&str, &str)]) -> Outcome {
        Outcome::Measured(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn reads_cpu_ticks_past_a_command_name_with_spaces() {
        let stat = "4242 (fulmar (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 3";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\tfulmar\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(5120 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn cells_show_losses_and_ratios_skip_lossy_qos1() {
        let ours = measured(&[
            ("qos", "1"),
            ("rate", "250000"),
            ("lost", "0"),
            ("expected", "9"),
        ]);
        let lossy = measured(&[
            ("qos", "1"),
            ("rate", "2000"),
            ("lost", "99"),
            ("expected", "100"),
        ]);
        assert_eq!(ours.cell(Measure::Throughput), "250.0k/s");
        assert_eq!(lossy.cell(Measure::Throughput), "2.0k/s (99% lost)");
        let rows = vec![(
            Scenario {
                name: "QoS 1 fan-in".to_owned(),
                measure: Measure::Throughput,
                args: Vec::new(),
                over: Over::Tcp,
            },
            vec![ours, lossy, Outcome::Failed("boom".to_owned())],
        )];
        let brokers = [Broker::Fulmar, Broker::Mosquitto, Broker::Rumqttd];
        let table = render(&brokers, &rows);
        assert!(
            table.contains("| QoS 1 fan-in | 250.0k/s | 2.0k/s (99% lost) | failed | - | - |"),
            "{table}"
        );
    }

    #[test]
    fn ratios_favour_fulmar_above_one() {
        assert_eq!(
            ratio(Measure::Throughput, Some(200.0), Some(100.0)),
            "2.00×"
        );
        assert_eq!(ratio(Measure::Latency, Some(500.0), Some(1000.0)), "2.00×");
        assert_eq!(
            ratio(Measure::IdleMemory, Some(2000.0), Some(1000.0)),
            "0.50×"
        );
        assert_eq!(ratio(Measure::Latency, None, Some(1.0)), "-");
    }

    #[test]
    fn options_parse_and_filter_scenarios() {
        let args: Vec<String> = [
            "--seconds",
            "1.5",
            "--only",
            "fan-in,idle",
            "--brokers",
            "fulmar",
        ]
        .map(str::to_owned)
        .to_vec();
        let options = parse(&args).unwrap();
        assert_eq!(options.brokers, [Broker::Fulmar]);
        let names: Vec<String> = scenarios(&options).into_iter().map(|s| s.name).collect();
        // Four fan-in rows over TCP, one over TLS, one over WebSocket, and the idle row.
        assert_eq!(names.len(), 7, "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.contains("fan-in") || n.contains("idle"))
        );
        assert!(parse(&["--brokers".to_owned(), "emqx".to_owned()]).is_err());
        assert!(parse(&["--seconds".to_owned(), "0".to_owned()]).is_err());
    }
}
