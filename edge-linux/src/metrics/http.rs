//! The Prometheus endpoint: a minimal HTTP/1.x responder on tokio that answers
//! `GET /metrics` with [`super::prometheus::render`] and closes the connection.
//!
//! Why not an HTTP library (hyper, axum): the endpoint serves one path to one kind of
//! client (a Prometheus scraper, `curl`), once every few seconds, with `Connection: close`.
//! That needs the request line and nothing else: no keep-alive, chunking, bodies, TLS or
//! HTTP/2. hyper with its body and service crates would add a dozen crates and noticeable
//! build time and binary size to an edge binary for that; this file is about a hundred
//! lines. Should the admin HTTP API of the architecture arrive, that is the time to bring
//! in a real HTTP stack and move this endpoint onto it.
//!
//! Hostile or broken clients are bounded: at most [`MAX_CLIENTS`] requests at once (more
//! are closed), [`MAX_HEAD`] bytes of request head, and [`TIMEOUT`] for the whole exchange.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::debug;

use super::Metrics;
use super::prometheus::{CONTENT_TYPE, render};

/// Requests served at once.
pub const MAX_CLIENTS: usize = 8;
/// Longest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request and read the answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `listener` (bound to `addr`) until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    while let Some((stream, peer)) = crate::server::accept(&listener, addr, &mut stop).await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "metrics endpoint busy; closing the connection");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(TIMEOUT, answer(stream, peer, &metrics))
                .await
                .is_err()
            {
                debug!(%peer, "metrics request timed out");
            }
            drop(slot);
        });
    }
}

/// Reads one request and answers it.
async fn answer(mut stream: TcpStream, peer: SocketAddr, metrics: &Metrics) {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // Up to the blank line that ends the head; whatever follows (a body) is ignored.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
        if head.len() > MAX_HEAD {
            let _ = respond(&mut stream, "431 Request Header Fields Too Large", "", "").await;
            return;
        }
    }
    let line = head
        .split(|&b| b == b'\r')
        .next()
        .and_then(|line| std::str::from_utf8(line).ok())
        .unwrap_or_default();
    let mut words = line.split(' ');
    let (method, target) = (words.next().unwrap_or_default(), words.next());
    let path = target.map(|t| t.split('?').next().unwrap_or_default());
    let result = match (method, path) {
        (_, None) => respond(&mut stream, "400 Bad Request", "", "").await,
        ("GET", Some("/metrics")) => {
            let body = render(&metrics.snapshot());
            respond(&mut stream, "200 OK", CONTENT_TYPE, &body).await
        }
        ("GET", Some(_)) => {
            let body = "not found: the metrics are at /metrics\n";
            respond(&mut stream, "404 Not Found", "text/plain", body).await
        }
        _ => respond(&mut stream, "405 Method Not Allowed", "", "").await,
    };
    if let Err(error) = result {
        debug!(%peer, %error, "metrics response not written");
    }
}

/// Writes a whole response and closes the write side.
async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        response.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if status.starts_with("405") {
        response.push_str("Allow: GET\r\n");
    }
    response.push_str("\r\n");
    response.push_str(body);
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn request(addr: SocketAddr, text: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(text.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn answers_metrics_and_refuses_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        metrics.received(5);
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(listener, addr, metrics, stopped));

        let ok = request(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(ok.contains("\nfulmar_received_bytes_total 5\n"));
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));

        let missing = request(addr, "GET /other HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = request(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");

        stop.send(true).unwrap();
        server.await.unwrap();
    }
}
