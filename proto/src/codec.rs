//! The one codec of the workspace: bincode 2 in serde mode with the
//! standard configuration. Nothing else calls bincode, so the wire format of
//! the control socket and of the daemon's files can only change here.
//!
//! Decoding must never panic or exhaust memory on hostile bytes (a frame
//! from the socket, a file from the hub). bincode allocates a string's
//! claimed length before it checks that the input holds that many bytes, so
//! every decode runs with a limit; see [`decode`] for how it is chosen.

use crate::PROTOCOL_VERSION;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why bytes could not be read as a frame or turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The length prefix announces more than [`crate::MAX_FRAME_LEN`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit", max = crate::MAX_FRAME_LEN)]
    TooLarge { len: u64 },
    /// The connection ended inside a frame.
    #[error("truncated frame: expected {expected} bytes, got {got}")]
    Truncated { expected: u64, got: u64 },
    /// The other side closed the connection between two frames.
    #[error("connection closed")]
    Closed,
    /// The bytes are not an encoding of the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A valid message followed by bytes that belong to nothing.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// Reading or writing the connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes a value with the workspace's one codec.
///
/// # Panics
///
/// Only if `T`'s `Serialize` implementation produces a sequence of unknown
/// length, which derived implementations of ordinary types never do: that
/// is a bug in the type, not a property of the value.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("serde-derived types always have sequences of known length")
}

/// Decodes a value made by [`encode`]. Bytes left over after the value are
/// an error: a message is exactly one value.
///
/// The allocation limit grows with the input. bincode counts the in-memory
/// size of what it decodes, which is at most 16 times the encoded size (a
/// one-byte varint can become a 16-byte `u128`), so a valid encoding never
/// trips the limit, while a corrupt length prefix can never make bincode
/// allocate more than 16 times the input it was given.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtoError> {
    const MIB: usize = 1024 * 1024;
    let (value, used) = match bytes.len() {
        n if n <= 8 * MIB => decode_within::<T, { 128 * MIB }>(bytes),
        n if n <= 64 * MIB => decode_within::<T, { 1024 * MIB }>(bytes),
        _ => decode_within::<T, HUGE_LIMIT>(bytes),
    }?;
    if used != bytes.len() {
        return Err(ProtoError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// The limit for inputs above 64 MiB (only the daemon's own files get that
/// big): 64 GiB covers inputs up to 4 GiB; a 32-bit target cannot address
/// more than its pointer width anyway.
#[cfg(target_pointer_width = "64")]
const HUGE_LIMIT: usize = 1 << 36;
#[cfg(not(target_pointer_width = "64"))]
const HUGE_LIMIT: usize = usize::MAX;

fn decode_within<T: DeserializeOwned, const LIMIT: usize>(bytes: &[u8]) -> Result<(T, usize), ProtoError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard().with_limit::<LIMIT>())
        .map_err(|e| ProtoError::Malformed(e.to_string()))
}

/// The two leading fields of every [`crate::ClientMessage`] and
/// [`crate::ServerMessage`], in every protocol version: who sent it and
/// which protocol it speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageHeader {
    /// The sender's [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The sender's program version.
    pub version: String,
}

impl MessageHeader {
    /// Whether the sender speaks this build's protocol.
    pub fn is_compatible(&self) -> bool {
        self.protocol == PROTOCOL_VERSION
    }
}

/// Decodes a value from the start of `bytes`, ignoring what follows: how a
/// reader looks at the leading version field of a newer format it cannot
/// decode whole. Small values only (the limit is 1 MiB).
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    decode_within::<T, { 1024 * 1024 }>(bytes).ok().map(|(value, _)| value)
}

/// Reads only the header of an encoded message, ignoring the rest. This is
/// how one side recognises a message of another protocol version whose
/// body it cannot decode. `None`: not even a header (garbage).
pub fn peek_header(bytes: &[u8]) -> Option<MessageHeader> {
    // Trailing bytes are expected here: they are the body.
    decode_prefix(bytes)
}
