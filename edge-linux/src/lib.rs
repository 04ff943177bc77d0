//! `fulmar-edge`: Fulmar's MQTT broker for Linux gateways, the runtime behind the `fulmar`
//! binary. It drives the sans-IO [`fulmar_core::broker::Broker`] with tokio, the way
//! `quinn` drives `quinn-proto`, and is a library so `fulmar-bridge` can reuse it.
//!
//! ## Layout
//! - [`auth`]: password file, ACL file and `fulmar passwd` (Mosquitto's formats), and the
//!   core hooks that apply them, with password hashes checked off the broker task.
//! - [`config`]: the schema of `fulmar.toml` ([`Config`]), where values come from (file,
//!   `FULMAR_…` variables, flags), and its mapping onto the core's configuration.
//! - [`server`]: binds the listeners, accepts with a connection limit and TCP_NODELAY, and
//!   shuts down gracefully.
//! - [`transport`]: what each listener speaks (MQTT over TCP, TLS, WebSocket, secure
//!   WebSocket) and the handshakes that turn a TCP connection into an MQTT byte stream.
//! - `connection`: one task per connection moving bytes between its transport and the
//!   broker, generic over the transport.
//! - `broker_task`: one task that owns the broker state machine (an actor), feeds it what
//!   the connections read, and hands each connection what the broker transmits.
//! - `bridge`: bridges to upstream brokers (`[[bridges]]`): each one's connection upstream,
//!   driving the core's sans-IO MQTT client (`fulmar_core::uplink`) that lives in the
//!   actor of the bridge's shard, with the core bridge's store and forward.
//! - `park`: the parking lot, where idle plain-TCP connections wait as a socket in an
//!   epoll set, without a task.
//! - `rate_limit`: the per-address connection rate limit of the accept loop.
//! - [`shutdown`]: SIGINT / SIGTERM.
//! - [`metrics`]: the counters, `$SYS/broker/...` topics and the Prometheus endpoint.
//! - [`logging`]: `tracing` output, for people or as JSON lines.
//! - [`bench`](mod@bench): `fulmar bench`, the load generator (any MQTT broker).
//! - [`store`]: persistence in redb under the data directory, restored at start, with the
//!   group commit that holds acknowledgements until what they acknowledge is durable.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let shutdown = fulmar_edge::shutdown::signal()?;
//! let server = fulmar_edge::Server::bind(fulmar_edge::Config::default()).await?;
//! server.run(shutdown).await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## State of this crate
//! MQTT 3.1, 3.1.1 and 5.0 over TCP, TLS and WebSocket, with everything the core does
//! (QoS 0/1/2, retained messages, wills, persistent sessions, shared subscriptions, topic
//! aliases, backpressure), persistence with durable acknowledgements, password and ACL
//! files, `$SYS` and Prometheus, bridges upstream with store and forward (TCP or TLS).
//! Deliberately not yet done:
//! - **Protocol work runs on one task** (`broker_task`); socket, TLS and WebSocket work
//!   runs on every core in the connection tasks. Measured, the serialized part is about a
//!   fifth of the broker's CPU under fan-in, but it dominates fan-out (encoding and queue
//!   walks in the core): sharding sessions over several core brokers, with cross-shard
//!   forwarding the core does not offer yet, is the next step.

pub mod auth;
pub mod bench;
pub mod config;
pub mod fd_limit;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod transport;

mod bridge;
mod broker_task;
mod connection;
mod park;
mod rate_limit;
mod shards;

pub use config::{Config, RunArgs};
pub use server::Server;
