//! The control protocol between `syncd` and `syncctl`: versioned requests
//! and responses in length-prefixed frames.
//!
//! A frame is a big-endian `u32` length followed by that many bytes of one
//! encoded [`ClientMessage`] or [`ServerMessage`]. Lengths above
//! [`MAX_FRAME_LEN`] are refused before anything is allocated. Every message
//! carries [`PROTOCOL_VERSION`]; a daemon answers a different version with
//! [`ErrorKind::VersionMismatch`] rather than guessing.
//!
//! [`encode`] and [`decode`] are the one place the workspace touches
//! bincode, so the codec can be swapped without touching anything else.

mod types;
pub use types::*;

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{Read, Write};

/// Bumped with any incompatible change of the message types.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame either side accepts.
pub const MAX_FRAME_LEN: u32 = 8 * 1024 * 1024;

/// Why bytes could not be turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(u64),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 64 * 1024 * 1024 }>()
}

/// Encodes a value with the workspace's one codec.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).expect("serializing to memory cannot fail for our types")
}

/// Decodes a value made by [`encode`]; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtoError> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(ProtoError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> Result<(), ProtoError> {
    let len = u32::try_from(payload.len()).ok().filter(|l| *l <= MAX_FRAME_LEN);
    let len = len.ok_or(ProtoError::TooLarge(payload.len() as u64))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(payload)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame, refusing an oversized length before allocating.
pub fn read_frame(r: &mut impl Read) -> Result<Vec<u8>, ProtoError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME_LEN {
        return Err(ProtoError::TooLarge(len as u64));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// Async versions of the frame functions, for the daemon.
pub mod frame_async {
    use super::{MAX_FRAME_LEN, ProtoError};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    pub async fn write_frame(w: &mut (impl AsyncWrite + Unpin), payload: &[u8]) -> Result<(), ProtoError> {
        let len = u32::try_from(payload.len()).ok().filter(|l| *l <= MAX_FRAME_LEN);
        let len = len.ok_or(ProtoError::TooLarge(payload.len() as u64))?;
        w.write_all(&len.to_be_bytes()).await?;
        w.write_all(payload).await?;
        w.flush().await?;
        Ok(())
    }

    pub async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, ProtoError> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len);
        if len > MAX_FRAME_LEN {
            return Err(ProtoError::TooLarge(len as u64));
        }
        let mut buf = vec![0u8; len as usize];
        r.read_exact(&mut buf).await?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_request_round_trips() {
        let requests = vec![
            Request::Status,
            Request::Sync { database: Some("main".into()), yes: true, prefer_local: false },
            Request::Peers,
            Request::Conflicts { database: None },
            Request::ConflictRestore { database: None, id: 3 },
            Request::Enable { database: None },
            Request::Disable { database: Some("x".into()) },
            Request::Backup { database: None },
            Request::List { database: None },
            Request::Restore { snapshot: "a/b.snap".into(), at: Some("2026-01-01T00:00:00Z".into()), yes: false },
            Request::Pull { database: None, force: true, yes: true },
            Request::Push { database: None, force: true, yes: false },
            Request::Cleanup { database: None, dry_run: true },
        ];
        for request in requests {
            let m = ClientMessage { protocol: PROTOCOL_VERSION, client_version: "t".into(), request };
            assert_eq!(decode::<ClientMessage>(&encode(&m)).unwrap(), m);
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&Request::Status);
        bytes.push(0);
        assert!(matches!(decode::<Request>(&bytes), Err(ProtoError::Trailing(1))));
    }

    #[test]
    fn an_oversized_length_is_refused_before_reading_the_body() {
        let mut input: &[u8] = &[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3];
        assert!(matches!(read_frame(&mut input), Err(ProtoError::TooLarge(_))));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<ClientMessage>(&bytes);
            let _ = decode::<ServerMessage>(&bytes);
            let _ = read_frame(&mut &bytes[..]);
        }
    }
}
