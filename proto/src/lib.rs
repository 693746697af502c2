//! The control protocol between `syncd` and `syncctl` (DESIGN §6): versioned
//! requests and responses in length-prefixed frames, and where the control
//! socket lives.
//!
//! - [`types`]: the messages. Their JSON form (`syncctl … --json`) is a
//!   documented contract.
//! - [`codec`]: [`encode`] and [`decode`], the one place the workspace
//!   touches bincode. The daemon encodes its own files (change batches,
//!   parked changes) with the same pair.
//! - [`frame`]: a frame is a big-endian `u32` length followed by that many
//!   bytes; lengths above [`MAX_FRAME_LEN`] are refused before anything is
//!   allocated.
//! - [`socket`]: the default socket path and the mapping of a path to a
//!   Unix socket or a Windows named pipe, shared by both ends so they
//!   cannot disagree.
//! - [`client`]: a blocking client (one request, one response) for
//!   `syncctl` and tests.
//!
//! Versioning: every request travels as a [`ClientMessage`] and every answer
//! as a [`ServerMessage`], both starting with the protocol number and the
//! sender's version. Those two leading fields never change, so each side
//! can tell "another protocol" from "garbage" even when the rest of a
//! message means nothing to it ([`peek_header`]). A daemon answers any
//! other protocol with [`ErrorKind::VersionMismatch`] instead of guessing.
//!
//! This crate never does I/O on its own initiative, never panics on bytes
//! from outside, and never holds state: it only turns values into bytes and
//! back.

pub mod client;
pub mod codec;
pub mod frame;
pub mod socket;
pub mod types;

pub use codec::{MessageHeader, ProtoError, decode, decode_prefix, encode, peek_header};
pub use frame::{read_frame, read_frame_async, write_frame, write_frame_async};
pub use socket::{default_socket_path, socket_name};
pub use types::*;

/// The protocol spoken by this build. Bump it with any change of the
/// message types that an older peer would decode differently.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame payload either side sends or accepts, in bytes.
pub const MAX_FRAME_LEN: u32 = 8 * 1024 * 1024;

/// The version of this build. Every crate of the workspace shares it, so it
/// is also the version of the `syncd` or `syncctl` that links this crate.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
