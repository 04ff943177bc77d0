//! `fulmar-edge`: the Fulmar broker for Linux gateways (tokio).
//!
//! Empty until the edge broker issue lands: listeners, the connection driver, storage and
//! configuration will live here, with a thin `main.rs` for the `fulmar` binary.
