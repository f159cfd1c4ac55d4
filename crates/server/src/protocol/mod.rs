//! Wire protocols. Each one is a pure parser plus a reply encoder; the
//! connection loop in [`crate::server`] does the I/O.
//!
//! The first byte a client sends chooses the protocol for the whole
//! connection (see [`detect`]). Only the text protocol exists so far; the
//! RESP parser will live next to [`text`].

pub mod text;

/// The protocol spoken on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The `\r`-terminated text protocol of `PROTOCOL.md`.
    Text,
}

/// Chooses the protocol from the first byte received on a connection.
pub fn detect(_first_byte: u8) -> Protocol {
    // A RESP client starts with `*` (an array); that branch comes with the
    // RESP parser. Everything else is the text protocol.
    Protocol::Text
}
