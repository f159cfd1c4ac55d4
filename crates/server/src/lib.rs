//! The Escabelo server as a library: the protocol parsers and encoders,
//! the command layer and the connection loop behind the `escabelo`
//! binary (`main.rs`). It is a library so that benchmarks
//! (`benches/protocol.rs`) can drive the parsers directly; the binary is
//! the supported interface.

pub mod command;
pub mod config;
pub mod error;
pub mod metrics;
pub mod protocol;
pub mod reply;
pub mod server;
pub mod txn;
