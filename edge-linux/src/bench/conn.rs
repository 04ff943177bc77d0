//! `fulmar bench conn`: opens many connections, holds them idle with keep-alive pings,
//! and reports how many opened and how fast.
//!
//! Once every connection has been tried it prints a `connected:` line and flushes stdout,
//! so a script (`cargo xtask bench`) can measure the broker's memory while the
//! connections are held; then it holds them for `--duration` and closes them cleanly.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use fulmar_core::codec::Packet;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use super::client::{Client, unexpected};
use super::stats::{Latency, human_micros, run_id};
use super::{BenchError, ConnArgs, seconds};

/// Connections in their handshake at once when no rate is given.
const CONNECTING: usize = 100;

/// Holds one open connection until `stop`, pinging every `ping_every`.
async fn hold(
    client: &mut Client,
    ping_every: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BenchError> {
    let mut next_ping = Instant::now() + ping_every;
    while !*stop.borrow_and_update() {
        tokio::select! {
            read = client.read() => {
                read?;
                client.drain(|packet, _| match packet {
                    Packet::PingResp => Ok(()),
                    other => Err(unexpected("PINGRESP", &other)),
                })?;
            }
            () = sleep_until(next_ping) => {
                client.push(&Packet::PingReq)?;
                client.flush().await?;
                next_ping = Instant::now() + ping_every;
            }
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// `fulmar bench conn`.
pub(super) async fn run(args: &ConnArgs) -> Result<(), BenchError> {
    let dialer = Arc::new(args.target.dialer()?);
    let run = run_id();
    let hold_for = seconds(args.duration, "--duration")?;
    let spacing = if args.connect_rate > 0.0 {
        Some(seconds(1.0 / args.connect_rate, "1 / --connect-rate")?)
    } else {
        None
    };
    let ping_every = args.target.ping_every();
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let (stop, stopping) = watch::channel(false);
    // Each task reports its connect time (or error) once, then holds its connection.
    let (opened, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    let mut next = start;
    for index in 0..args.count {
        if let Some(spacing) = spacing {
            sleep_until(next).await;
            next += spacing;
        }
        let permit = gate.clone().acquire_owned().await;
        let dialer = dialer.clone();
        let opened = opened.clone();
        let stopping = stopping.clone();
        tasks.spawn(async move {
            let began = Instant::now();
            let connected = dialer.connect(&format!("fb{run:08x}-c{index}")).await;
            drop(permit);
            match connected {
                Ok(mut client) => {
                    let _ = opened.send(Ok(began.elapsed()));
                    let held = hold(&mut client, ping_every, stopping).await;
                    client.disconnect().await;
                    held
                }
                Err(e) => {
                    let _ = opened.send(Err(e.to_string()));
                    Ok(())
                }
            }
        });
    }
    drop(opened);

    let mut latencies = Vec::with_capacity(args.count);
    let mut failed = 0usize;
    let mut first_error = None;
    while latencies.len() + failed < args.count {
        match outcomes.recv().await {
            Some(Ok(took)) => {
                latencies.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
            }
            Some(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            None => break,
        }
    }
    let elapsed = start.elapsed();
    let ok = latencies.len();
    println!(
        "connected:   {ok} of {} in {:.2}s ({:.0} conn/s), failed {failed}",
        args.count,
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    let latency = Latency::of(&mut latencies);
    if let Some(l) = latency {
        println!(
            "connect:     p50 {}  p99 {}  max {}",
            human_micros(l.p50),
            human_micros(l.p99),
            human_micros(l.max)
        );
    }
    if let Some(e) = &first_error {
        println!("errors:      first: {e}");
    }
    // Whoever reads our output may act on the line above while we hold the connections.
    let _ = std::io::stdout().flush();

    if hold_for.is_zero() {
        let _ = tokio::signal::ctrl_c().await;
    } else {
        tokio::time::sleep(hold_for).await;
    }
    let _ = stop.send(true);
    let mut dropped = 0usize;
    while let Some(joined) = tasks.join_next().await {
        if !matches!(joined, Ok(Ok(()))) {
            dropped += 1;
        }
    }
    if dropped > 0 {
        println!("dropped:     {dropped} connections closed while held");
    }
    let (p50, p99, max) = latency.map_or((0, 0, 0), |l| (l.p50, l.p99, l.max));
    println!(
        "result: mode=conn connections={ok} failed={failed} dropped={dropped} seconds={:.3} \
         p50_us={p50} p99_us={p99} max_us={max}",
        elapsed.as_secs_f64()
    );
    Ok(())
}
