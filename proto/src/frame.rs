//! Length-prefixed frames: a big-endian `u32` length, then that many bytes.
//!
//! A length above [`MAX_FRAME_LEN`] is refused before anything is
//! allocated, and the body buffer grows with the bytes that actually
//! arrive, so a length prefix that lies costs nothing. A connection that
//! ends between two frames is [`ProtoError::Closed`]; one that ends inside a
//! frame is [`ProtoError::Truncated`], so a server can tell a client that
//! hung up from one that sent half a message.
//!
//! These functions never decode: a frame is opaque bytes here.

use crate::{MAX_FRAME_LEN, ProtoError};
use std::io::{Read, Write};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The body buffer starts at most this big and grows as bytes arrive.
const INITIAL_BODY_CAPACITY: u32 = 64 * 1024;

/// The length prefix for `payload`, or `TooLarge` if it may not be sent.
fn length_prefix(payload: &[u8]) -> Result<[u8; 4], ProtoError> {
    u32::try_from(payload.len())
        .ok()
        .filter(|len| *len <= MAX_FRAME_LEN)
        .map(u32::to_be_bytes)
        .ok_or(ProtoError::TooLarge { len: payload.len() as u64 })
}

/// The body length announced by a complete prefix, refused if oversized.
fn announced_len(prefix: [u8; 4]) -> Result<u32, ProtoError> {
    let len = u32::from_be_bytes(prefix);
    if len > MAX_FRAME_LEN {
        return Err(ProtoError::TooLarge { len: u64::from(len) });
    }
    Ok(len)
}

/// What a short read of the prefix means: nothing at all is a clean close.
fn short_prefix(got: usize) -> ProtoError {
    if got == 0 { ProtoError::Closed } else { ProtoError::Truncated { expected: 4, got: got as u64 } }
}

/// Checks that the whole body arrived.
fn complete_body(body: Vec<u8>, len: u32) -> Result<Vec<u8>, ProtoError> {
    if body.len() < len as usize {
        return Err(ProtoError::Truncated { expected: u64::from(len), got: body.len() as u64 });
    }
    Ok(body)
}

/// Writes one frame and flushes. A payload above [`MAX_FRAME_LEN`] is
/// refused and nothing is written.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> Result<(), ProtoError> {
    let prefix = length_prefix(payload)?;
    w.write_all(&prefix)?;
    w.write_all(payload)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame.
pub fn read_frame(r: &mut impl Read) -> Result<Vec<u8>, ProtoError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        match r.read(&mut prefix[got..]) {
            Ok(0) => return Err(short_prefix(got)),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let len = announced_len(prefix)?;
    let mut body = Vec::with_capacity(len.min(INITIAL_BODY_CAPACITY) as usize);
    r.take(u64::from(len)).read_to_end(&mut body)?;
    complete_body(body, len)
}

/// [`write_frame`] for tokio streams.
pub async fn write_frame_async(w: &mut (impl AsyncWrite + Unpin), payload: &[u8]) -> Result<(), ProtoError> {
    let prefix = length_prefix(payload)?;
    w.write_all(&prefix).await?;
    w.write_all(payload).await?;
    w.flush().await?;
    Ok(())
}

/// [`read_frame`] for tokio streams. Not cancel-safe: dropping the future
/// in the middle of a frame loses the bytes read so far, so cancel it only
/// to close the connection.
pub async fn read_frame_async(r: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, ProtoError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        match r.read(&mut prefix[got..]).await {
            Ok(0) => return Err(short_prefix(got)),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let len = announced_len(prefix)?;
    let mut body = Vec::with_capacity(len.min(INITIAL_BODY_CAPACITY) as usize);
    r.take(u64::from(len)).read_to_end(&mut body).await?;
    complete_body(body, len)
}
