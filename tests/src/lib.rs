//! End-to-end tests that drive Fulmar's real binaries with real third-party clients.
//!
//! The suites arrive with the edge broker and firmware issues; this library will hold the
//! shared helpers (free ports, spawning binaries, waiting for readiness).
