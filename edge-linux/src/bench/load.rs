//! `fulmar bench pub`, `sub` and `pubsub`: the publisher and subscriber loops, and the
//! drivers that connect the clients, run the loops and report.
//!
//! Each client is one task with one socket and no locks. A publisher encodes as many
//! messages as its rate and in-flight window allow into one buffer and writes them with
//! one call, then reads whatever acknowledgments have arrived (waiting only when it may
//! not send). A subscriber reads, tallies every message, and answers QoS 1/2 with one
//! write per read. So the tool spends its CPU in the kernel's TCP path, like the broker.

use std::sync::Arc;
use std::time::Duration;

use fulmar_core::codec::{Ack, Packet, Properties, Publish, QoS, QoSPid};
use fulmar_core::topic;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use super::client::{Client, Dialer, unexpected};
use super::stats::{Latency, Stamp, Tally, human_micros, run_id, wall_nanos};
use super::{BenchError, PubArgs, PubSubArgs, PublishOptions, SubArgs, expand, seconds};

/// Connections being set up at once: enough to hide the round trips, few enough not to
/// overflow a broker's accept backlog.
const CONNECTING: usize = 64;
/// Bytes a publisher encodes before it writes them out.
const BATCH_BYTES: usize = 64 * 1024;
/// How long publishers wait for their last acknowledgments after the run.
const ACK_GRACE: Duration = Duration::from_secs(10);
/// The longest a `pubsub` run waits for deliveries after publishing, however busy.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// What each publisher sends.
#[derive(Debug, Clone)]
struct Plan {
    qos: QoS,
    size: usize,
    /// Time between two messages; `None` sends as fast as possible.
    interval: Option<Duration>,
    window: usize,
    ping_every: Duration,
    run: u32,
}

impl Plan {
    fn new(options: &PublishOptions, ping_every: Duration, run: u32) -> Result<Self, BenchError> {
        let interval = if options.rate > 0.0 {
            Some(seconds(1.0 / options.rate, "1 / --rate")?)
        } else if options.rate == 0.0 {
            None
        } else {
            return Err(BenchError::Usage("--rate must not be negative".to_owned()));
        };
        Ok(Self {
            qos: options.qos,
            size: options.size as usize,
            interval,
            window: if options.qos == QoS::AtMostOnce {
                usize::MAX
            } else {
                usize::from(options.inflight)
            },
            ping_every,
            run,
        })
    }
}

/// How one publisher did.
#[derive(Debug, Default)]
struct Published {
    sent: u64,
    acked: u64,
    /// Acknowledgments with an error reason code (MQTT 5).
    refused: u64,
    error: Option<BenchError>,
}

impl Published {
    /// The counts of all `results` together; their errors go to `errors`.
    fn sum(results: &[Published], errors: &mut Errors) -> Published {
        let mut total = Published::default();
        for result in results {
            total.sent += result.sent;
            total.acked += result.acked;
            total.refused += result.refused;
            errors.note(result.error.as_ref());
        }
        total
    }
}

/// Packet identifiers in use by one publisher.
#[derive(Debug)]
struct PacketIds {
    used: Box<[u64; 1024]>,
    next: u16,
}

impl PacketIds {
    fn new() -> Self {
        Self {
            used: Box::new([0; 1024]),
            next: 1,
        }
    }

    /// A free identifier, marked used. The caller keeps fewer than 65535 in flight.
    fn take(&mut self) -> fulmar_core::codec::PacketId {
        loop {
            let id = self.next;
            self.next = self.next.checked_add(1).unwrap_or(1);
            let (word, bit) = (usize::from(id / 64), id % 64);
            if let Some(id) = fulmar_core::codec::PacketId::new(id)
                && self.used[word] & (1 << bit) == 0
            {
                self.used[word] |= 1 << bit;
                return id;
            }
        }
    }

    /// Frees `id`; false if it was not in use (a stray acknowledgment).
    fn free(&mut self, id: fulmar_core::codec::PacketId) -> bool {
        let (word, bit) = (usize::from(id.get() / 64), id.get() % 64);
        let was_used = self.used[word] & (1 << bit) != 0;
        self.used[word] &= !(1 << bit);
        was_used
    }
}

/// Publishes on `topic` until `deadline`, then waits up to [`ACK_GRACE`] for the
/// outstanding acknowledgments.
async fn publish_loop(
    client: &mut Client,
    topic: &str,
    index: u32,
    plan: &Plan,
    deadline: Instant,
    result: &mut Published,
) -> Result<(), BenchError> {
    let mut payload = vec![0; plan.size];
    let window = plan
        .window
        .min(client.receive_maximum.map_or(usize::MAX, usize::from));
    let mut ids = PacketIds::new();
    let mut inflight = 0usize;
    let mut next_send = Instant::now();
    let mut next_ping = Instant::now() + plan.ping_every;
    let give_up = deadline + ACK_GRACE;
    loop {
        let now = Instant::now();
        let sending = now < deadline;
        if (!sending && inflight == 0) || now >= give_up {
            return Ok(());
        }
        let due = |next_send: Instant| plan.interval.is_none() || next_send <= Instant::now();
        // Messages encoded into this batch; they count as sent once written.
        let mut batch = 0;
        while sending && inflight < window && due(next_send) && client.out.len() < BATCH_BYTES {
            let qos_pid = match plan.qos {
                QoS::AtMostOnce => QoSPid::AtMostOnce,
                QoS::AtLeastOnce => QoSPid::AtLeastOnce(ids.take()),
                QoS::ExactlyOnce => QoSPid::ExactlyOnce(ids.take()),
            };
            Stamp {
                sent_nanos: wall_nanos(),
                run: plan.run,
                publisher: index,
                seq: result.sent + batch,
            }
            .write(&mut payload);
            client.push(&Packet::Publish(Publish {
                dup: false,
                qos_pid,
                retain: false,
                topic,
                properties: Properties::empty(),
                payload: &payload,
            }))?;
            batch += 1;
            if plan.qos != QoS::AtMostOnce {
                inflight += 1;
            }
            if let Some(interval) = plan.interval {
                next_send += interval;
            }
        }
        if now >= next_ping {
            client.push(&Packet::PingReq)?;
            next_ping = now + plan.ping_every;
        }
        client.flush().await?;
        result.sent += batch;

        let may_send = sending && inflight < window;
        let got = if may_send && due(next_send) {
            client.try_read()?
        } else {
            let mut wake = next_ping.min(if sending { deadline } else { give_up });
            if may_send {
                wake = wake.min(next_send);
            }
            tokio::select! {
                read = client.read() => { read?; true }
                () = sleep_until(wake) => false,
            }
        };
        if got {
            client.drain(|packet, out| {
                let done = match packet {
                    Packet::PubAck(ack) if plan.qos == QoS::AtLeastOnce => Some(ack),
                    Packet::PubRec(ack) if plan.qos == QoS::ExactlyOnce => {
                        if ack.reason_code.is_error() {
                            Some(ack)
                        } else {
                            out.push(&Packet::PubRel(Ack::new(ack.packet_id)))?;
                            None
                        }
                    }
                    Packet::PubComp(ack) if plan.qos == QoS::ExactlyOnce => Some(ack),
                    Packet::PingResp => None,
                    other => return Err(unexpected("an acknowledgment", &other)),
                };
                if let Some(ack) = done
                    && ids.free(ack.packet_id)
                {
                    inflight -= 1;
                    if ack.reason_code.is_error() {
                        result.refused += 1;
                    } else {
                        result.acked += 1;
                    }
                }
                Ok(())
            })?;
        }
    }
}

/// Where a subscriber is in the run.
#[derive(Debug, Clone)]
enum Phase {
    /// Publishers are sending.
    Receiving,
    /// Publishers are done; they sent this many messages each (by publisher index).
    Draining(Arc<Vec<u64>>),
    /// Stop now.
    Stop,
}

/// How one subscriber did.
#[derive(Debug)]
struct Received {
    tally: Tally,
    /// Messages it should have had, once known.
    expected: u64,
    last_delivery: Option<Instant>,
    error: Option<BenchError>,
}

/// Receives until told to stop or, when draining, until every expected message came or
/// none came for `idle`.
async fn subscribe_loop(
    client: &mut Client,
    sources: &[usize],
    idle: Duration,
    ping_every: Duration,
    mut phase: watch::Receiver<Phase>,
    received: &mut Received,
) -> Result<(), BenchError> {
    let mut next_ping = Instant::now() + ping_every;
    let mut draining_since = None;
    loop {
        let current = phase.borrow_and_update().clone();
        match current {
            Phase::Receiving => {}
            Phase::Stop => return Ok(()),
            Phase::Draining(sent) => {
                received.expected = sources.iter().filter_map(|&i| sent.get(i)).sum();
                let since = *draining_since.get_or_insert_with(Instant::now);
                let quiet_since = received.last_delivery.map_or(since, |last| last.max(since));
                if received.tally.unique >= received.expected
                    || Instant::now() >= quiet_since + idle
                {
                    return Ok(());
                }
            }
        }
        let mut wake = next_ping;
        if let Some(since) = draining_since {
            let quiet_since = received.last_delivery.map_or(since, |last| last.max(since));
            wake = wake.min(quiet_since + idle);
        }
        tokio::select! {
            read = client.read() => {
                read?;
                let now = wall_nanos();
                let before = received.tally.received + received.tally.foreign;
                let tally = &mut received.tally;
                client.drain(|packet, out| {
                    match packet {
                        Packet::Publish(publish) => {
                            tally.record(publish.payload, now);
                            match publish.qos_pid {
                                QoSPid::AtMostOnce => {}
                                QoSPid::AtLeastOnce(id) => out.push(&Packet::PubAck(Ack::new(id)))?,
                                QoSPid::ExactlyOnce(id) => out.push(&Packet::PubRec(Ack::new(id)))?,
                            }
                        }
                        Packet::PubRel(rel) => out.push(&Packet::PubComp(Ack::new(rel.packet_id)))?,
                        Packet::PingResp => {}
                        other => return Err(unexpected("PUBLISH", &other)),
                    }
                    Ok(())
                })?;
                if received.tally.received + received.tally.foreign > before {
                    received.last_delivery = Some(Instant::now());
                }
                client.flush().await?;
            }
            () = sleep_until(wake) => {
                if Instant::now() >= next_ping {
                    client.push(&Packet::PingReq)?;
                    client.flush().await?;
                    next_ping = Instant::now() + ping_every;
                }
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// Connects one client per id, [`CONNECTING`] at a time, subscribing each to its filter
/// when one is given. Returns them in the order of `ids`.
async fn connect_all(
    dialer: &Dialer,
    ids: Vec<String>,
    filters: Option<(Vec<String>, QoS)>,
) -> Result<Vec<Client>, BenchError> {
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let mut tasks = JoinSet::new();
    for (index, id) in ids.into_iter().enumerate() {
        let dialer = dialer.clone();
        let gate = gate.clone();
        let filter = filters
            .as_ref()
            .map(|(filters, qos)| (filters[index].clone(), *qos));
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let mut client = dialer.connect(&id).await?;
            if let Some((filter, qos)) = filter {
                client.subscribe(&filter, qos).await?;
            }
            Ok::<_, BenchError>((index, client))
        });
    }
    let mut clients: Vec<Option<Client>> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (index, client) = joined
            .map_err(|e| BenchError::Protocol(format!("a connecting task failed: {e}")))??;
        if clients.len() <= index {
            clients.resize_with(index + 1, || None);
        }
        clients[index] = Some(client);
    }
    Ok(clients.into_iter().flatten().collect())
}

/// Client ids `fb<run>-<role><index>`: unique per run, so runs against one broker do not
/// take over each other's sessions.
fn client_ids(run: u32, role: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("fb{run:08x}-{role}{i}"))
        .collect()
}

/// Starts one publisher task per client.
fn spawn_publishers(
    clients: Vec<Client>,
    topics: &[String],
    plan: &Plan,
    deadline: Instant,
) -> JoinSet<(usize, Published)> {
    let mut tasks = JoinSet::new();
    for (index, mut client) in clients.into_iter().enumerate() {
        let topic = topics[index].clone();
        let plan = plan.clone();
        tasks.spawn(async move {
            let mut result = Published::default();
            let publisher = u32::try_from(index).unwrap_or(u32::MAX);
            // A broker that stops reading (backpressure) must not hold the run forever;
            // whatever was not written by then was never sent.
            let publishing =
                publish_loop(&mut client, &topic, publisher, &plan, deadline, &mut result);
            if let Ok(Err(e)) = tokio::time::timeout_at(deadline + ACK_GRACE, publishing).await {
                result.error = Some(e);
            }
            client.disconnect().await;
            (index, result)
        });
    }
    tasks
}

/// Starts one subscriber task per client; `sources[i]` lists the publishers whose
/// messages subscriber `i` should get.
fn spawn_subscribers(
    clients: Vec<Client>,
    sources: Vec<Vec<usize>>,
    run: Option<u32>,
    idle: Duration,
    ping_every: Duration,
    phase: &watch::Receiver<Phase>,
) -> JoinSet<Received> {
    let mut tasks = JoinSet::new();
    for (mut client, sources) in clients.into_iter().zip(sources) {
        let phase = phase.clone();
        tasks.spawn(async move {
            let mut received = Received {
                tally: Tally::new(run),
                expected: 0,
                last_delivery: None,
                error: None,
            };
            if let Err(e) = subscribe_loop(
                &mut client,
                &sources,
                idle,
                ping_every,
                phase,
                &mut received,
            )
            .await
            {
                received.error = Some(e);
            }
            client.disconnect().await;
            received
        });
    }
    tasks
}

/// The publishers' results, by index.
async fn join_publishers(mut tasks: JoinSet<(usize, Published)>, count: usize) -> Vec<Published> {
    let mut results: Vec<Published> = (0..count).map(|_| Published::default()).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, result)) => results[index] = result,
            Err(e) => results.push(Published {
                error: Some(BenchError::Protocol(format!(
                    "a publisher task failed: {e}"
                ))),
                ..Published::default()
            }),
        }
    }
    results
}

async fn join_subscribers(mut tasks: JoinSet<Received>) -> Vec<Received> {
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        results.push(joined.unwrap_or_else(|e| Received {
            tally: Tally::default(),
            expected: 0,
            last_delivery: None,
            error: Some(BenchError::Protocol(format!(
                "a subscriber task failed: {e}"
            ))),
        }));
    }
    results
}

/// Errors of a run: how many clients failed, and the first reason.
#[derive(Debug, Default)]
struct Errors {
    count: usize,
    first: Option<String>,
}

impl Errors {
    fn note(&mut self, error: Option<&BenchError>) {
        if let Some(error) = error {
            self.count += 1;
            self.first.get_or_insert_with(|| error.to_string());
        }
    }

    fn print(&self) {
        if let Some(first) = &self.first {
            println!("errors:      {} clients failed; first: {first}", self.count);
        }
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// The latency line of a report and the `key=value` fields of the result line.
fn latency_report(samples: &mut [u32]) -> String {
    match Latency::of(samples) {
        Some(l) => {
            println!(
                "latency:     p50 {}  p99 {}  max {}",
                human_micros(l.p50),
                human_micros(l.p99),
                human_micros(l.max)
            );
            format!("p50_us={} p99_us={} max_us={}", l.p50, l.p99, l.max)
        }
        None => "p50_us=- p99_us=- max_us=-".to_owned(),
    }
}

/// `fulmar bench pub`.
pub(super) async fn publish(args: &PubArgs) -> Result<(), BenchError> {
    let dialer = args.target.dialer()?;
    let run = run_id();
    let plan = Plan::new(&args.publish, args.target.ping_every(), run)?;
    let duration = seconds(args.duration, "--duration")?;
    let clients = connect_all(&dialer, client_ids(run, "p", args.count), None).await?;
    let topics: Vec<String> = (0..args.count).map(|i| expand(&args.topic, i)).collect();
    println!(
        "publishing:  {} clients to {} at QoS {}, {} B, for {duration:?}",
        args.count,
        args.topic,
        plan.qos.level(),
        plan.size
    );
    let start = Instant::now();
    let tasks = spawn_publishers(clients, &topics, &plan, start + duration);
    let results = join_publishers(tasks, args.count).await;
    let mut errors = Errors::default();
    let Published {
        sent,
        acked,
        refused,
        ..
    } = Published::sum(&results, &mut errors);
    println!(
        "sent:        {sent} ({:.0} msg/s)",
        per_second(sent, duration)
    );
    if plan.qos != QoS::AtMostOnce {
        println!("acked:       {acked}, refused: {refused}");
    }
    errors.print();
    println!(
        "result: mode=pub clients={} qos={} size={} sent={sent} acked={acked} refused={refused} \
         seconds={:.3} rate={:.0} errors={}",
        args.count,
        plan.qos.level(),
        plan.size,
        duration.as_secs_f64(),
        per_second(sent, duration),
        errors.count
    );
    Ok(())
}

/// `fulmar bench sub`.
pub(super) async fn subscribe(args: &SubArgs) -> Result<(), BenchError> {
    let dialer = args.target.dialer()?;
    let run = run_id();
    let filters: Vec<String> = (0..args.count).map(|i| expand(&args.topic, i)).collect();
    let clients = connect_all(
        &dialer,
        client_ids(run, "s", args.count),
        Some((filters, args.qos)),
    )
    .await?;
    println!(
        "subscribed:  {} clients to {} at QoS {}",
        args.count,
        args.topic,
        args.qos.level()
    );
    let (phase, watching) = watch::channel(Phase::Receiving);
    let start = Instant::now();
    let tasks = spawn_subscribers(
        clients,
        vec![Vec::new(); args.count],
        None,
        Duration::ZERO,
        args.target.ping_every(),
        &watching,
    );
    if args.duration == 0.0 {
        // No deadline: until the user has seen enough.
        let _ = tokio::signal::ctrl_c().await;
    } else {
        tokio::time::sleep(seconds(args.duration, "--duration")?).await;
    }
    let elapsed = start.elapsed();
    let _ = phase.send(Phase::Stop);
    let results = join_subscribers(tasks).await;
    let mut total = Tally::default();
    let mut holes = 0;
    let mut errors = Errors::default();
    for result in results {
        holes += result.tally.holes();
        errors.note(result.error.as_ref());
        total.absorb(result.tally);
    }
    println!(
        "received:    {} ({:.0} msg/s), duplicates {}, missing in sequence {holes}, foreign {}",
        total.received,
        per_second(total.received, elapsed),
        total.duplicates,
        total.foreign
    );
    let latency = latency_report(&mut total.latencies_us);
    errors.print();
    println!(
        "result: mode=sub clients={} qos={} received={} unique={} duplicates={} holes={holes} \
         seconds={:.3} rate={:.0} {latency} errors={}",
        args.count,
        args.qos.level(),
        total.received,
        total.unique,
        total.duplicates,
        elapsed.as_secs_f64(),
        per_second(total.unique, elapsed),
        errors.count
    );
    Ok(())
}

/// `fulmar bench pubsub`.
pub(super) async fn pubsub(args: &PubSubArgs) -> Result<(), BenchError> {
    let dialer = args.target.dialer()?;
    let run = run_id();
    let plan = Plan::new(&args.publish, args.target.ping_every(), run)?;
    let duration = seconds(args.duration, "--duration")?;
    let idle = seconds(args.drain_idle, "--drain-idle")?;
    let topics: Vec<String> = (0..args.publishers)
        .map(|i| expand(&args.pub_topic, i))
        .collect();
    let filters: Vec<String> = (0..args.subscribers)
        .map(|i| expand(&args.sub_topic, i))
        .collect();
    let sources: Vec<Vec<usize>> = filters
        .iter()
        .map(|filter| {
            (0..topics.len())
                .filter(|&p| topic::matches(filter, &topics[p]))
                .collect()
        })
        .collect();
    let subscribers = connect_all(
        &dialer,
        client_ids(run, "s", args.subscribers),
        Some((filters, plan.qos)),
    )
    .await?;
    let publishers = connect_all(&dialer, client_ids(run, "p", args.publishers), None).await?;
    println!(
        "running:     {} publishers ({}) -> {} subscribers ({}), QoS {}, {} B, for {duration:?}",
        args.publishers,
        args.pub_topic,
        args.subscribers,
        args.sub_topic,
        plan.qos.level(),
        plan.size
    );

    let (phase, watching) = watch::channel(Phase::Receiving);
    let receiving = spawn_subscribers(
        subscribers,
        sources,
        Some(run),
        idle,
        args.target.ping_every(),
        &watching,
    );
    let start = Instant::now();
    let publishing = spawn_publishers(publishers, &topics, &plan, start + duration);
    let published = join_publishers(publishing, args.publishers).await;
    let sent: Vec<u64> = published.iter().map(|p| p.sent).collect();
    let _ = phase.send(Phase::Draining(Arc::new(sent)));
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(DRAIN_LIMIT).await;
        let _ = phase.send(Phase::Stop);
    });
    let received = join_subscribers(receiving).await;
    stopper.abort();

    let mut errors = Errors::default();
    let Published {
        sent,
        acked,
        refused,
        ..
    } = Published::sum(&published, &mut errors);
    let mut total = Tally::default();
    let mut expected = 0;
    let mut last = None;
    for result in received {
        expected += result.expected;
        last = last.max(result.last_delivery);
        errors.note(result.error.as_ref());
        total.absorb(result.tally);
    }
    let lost = expected.saturating_sub(total.unique);
    // Delivered per second over the time it took to deliver them: from the first publish
    // to the last delivery, so a broker that acknowledges fast and delivers late is not
    // credited with its acknowledgment rate.
    let elapsed = last.map_or(duration, |last| last.duration_since(start));
    let rate = per_second(total.unique, elapsed);
    println!(
        "published:   {sent} ({:.0} msg/s offered){}",
        per_second(sent, duration),
        if plan.qos == QoS::AtMostOnce {
            String::new()
        } else {
            format!(", acked {acked}, refused {refused}")
        }
    );
    println!(
        "delivered:   {} of {expected} in {:.2}s ({rate:.0} msg/s); lost {lost} ({:.2}%), \
         duplicates {}",
        total.unique,
        elapsed.as_secs_f64(),
        if expected == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / expected as f64
        },
        total.duplicates
    );
    let latency = latency_report(&mut total.latencies_us);
    errors.print();
    println!(
        "result: mode=pubsub publishers={} subscribers={} qos={} size={} sent={sent} \
         acked={acked} expected={expected} delivered={} lost={lost} duplicates={} \
         seconds={:.3} rate={rate:.0} {latency} errors={}",
        args.publishers,
        args.subscribers,
        plan.qos.level(),
        plan.size,
        total.unique,
        total.duplicates,
        elapsed.as_secs_f64(),
        errors.count
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_skip_those_in_flight_and_zero() {
        let mut ids = PacketIds::new();
        let first = ids.take();
        assert_eq!(first.get(), 1);
        ids.next = u16::MAX;
        assert_eq!(ids.take().get(), u16::MAX);
        // Wraps past 0 and past 1, which is still in flight.
        assert_eq!(ids.take().get(), 2);
        assert!(ids.free(first));
        assert!(!ids.free(first), "a second acknowledgment frees nothing");
    }
}
