//! Shutdown on SIGINT (Ctrl-C) or SIGTERM (systemd, `docker stop`, `kill`).

use std::future::Future;

use tracing::info;

/// Starts listening for SIGINT and SIGTERM and returns a future that completes when either
/// arrives.
///
/// The handlers are installed by this call, not when the future is first polled: a signal
/// sent right after startup (a supervisor stopping a broker that just started) stops the
/// broker gracefully instead of killing it with the default action. Call it inside the
/// tokio runtime, before binding the listeners.
#[cfg(unix)]
pub fn signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM received"),
            _ = interrupt.recv() => info!("SIGINT received"),
        }
    })
}

/// Completes on Ctrl-C (on systems without Unix signals).
#[cfg(not(unix))]
pub fn signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            info!("Ctrl-C received");
        } else {
            std::future::pending::<()>().await;
        }
    })
}
