//! The self-checking container of every file in the hub: change batches
//! (`.chg`) and snapshots (`.snap`). DESIGN §3.
//!
//! Layout (a contract with other versions of syncd):
//!
//! ```text
//! zstd skippable frame: u32 LE 0x184D2A5B, u32 LE content length, content =
//!     "SYNCDHUB" (8 bytes), u16 LE format version, header as UTF-8 JSON
//! one ordinary zstd frame: the body
//! ```
//!
//! zstd skips skippable frames, so `zstd -d x.snap -o x.db` yields the plain
//! body. The header names the database, the peer, the sequence number, and
//! carries the body's length and SHA-256. A reader verifies all of it before
//! it returns a single byte of the body; it never returns a partly verified
//! body.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

const SKIPPABLE_MAGIC: u32 = 0x184D_2A5B;
const MAGIC: &[u8; 8] = b"SYNCDHUB";
/// The container format this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bodies decoded in memory (change batches) are refused above this size.
const MAX_MEMORY_BODY: u64 = 1 << 31;
/// Headers are small; a larger one is damage, not data.
const MAX_HEADER: u32 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Batch,
    Snapshot,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub kind: FileKind,
    pub database: String,
    /// 32 lowercase hex characters.
    pub peer_id: String,
    pub peer_name: String,
    /// Batch sequence number; 0 for snapshots.
    pub seq: u64,
    /// UTC Unix milliseconds.
    pub created_ms: i64,
    /// Length of the uncompressed body (filled by the encoder).
    pub body_len: u64,
    /// Hex SHA-256 of the uncompressed body (filled by the encoder).
    pub body_sha256: String,
    /// Extra data, such as the cursors a snapshot includes.
    pub meta: serde_json::Value,
}

/// What a reader expects, from the file's place in the hub.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub kind: FileKind,
    pub database: &'a str,
    pub peer_id: Option<&'a str>,
    pub seq: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("file is truncated (partly synced?); it will be retried")]
    Truncated,
    #[error("not a syncd file (no syncd header)")]
    NotASyncdFile,
    #[error("written by a newer syncd (format {found}, this one reads {supported}): upgrade syncd")]
    FutureVersion { found: u16, supported: u16 },
    #[error("damaged header: {0}")]
    BadHeader(String),
    #[error("belongs elsewhere: {field} is {found:?}, expected {expected:?}")]
    Foreign { field: &'static str, expected: String, found: String },
    #[error("checksum mismatch: the file is damaged")]
    Checksum,
    #[error("body is {found} bytes, the header says {expected}: the file is damaged")]
    Length { expected: u64, found: u64 },
    #[error("body of {0} bytes is too large to read in memory")]
    TooLarge(u64),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn header_frame(header: &Header) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("a header always serializes");
    let content_len = (MAGIC.len() + 2 + json.len()) as u32;
    let mut out = Vec::with_capacity(8 + content_len as usize);
    out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&content_len.to_le_bytes());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// Encodes a body in memory (change batches).
pub fn encode(header: &Header, body: &[u8], level: i32) -> Vec<u8> {
    let mut h = header.clone();
    h.body_len = body.len() as u64;
    h.body_sha256 = hex(&Sha256::digest(body));
    let mut out = header_frame(&h);
    let compressed = zstd::bulk::compress(body, level).expect("compressing to memory cannot fail");
    out.extend_from_slice(&compressed);
    out
}

/// Parses the header frame; returns the header and where the body starts.
fn parse_header(bytes: &[u8]) -> Result<(Header, usize), ContainerError> {
    if bytes.len() < 8 {
        return Err(if bytes.len() >= 4 && bytes[..4] != SKIPPABLE_MAGIC.to_le_bytes() {
            ContainerError::NotASyncdFile
        } else {
            ContainerError::Truncated
        });
    }
    if bytes[..4] != SKIPPABLE_MAGIC.to_le_bytes() {
        return Err(ContainerError::NotASyncdFile);
    }
    let len = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if len > MAX_HEADER || len < 10 {
        return Err(ContainerError::BadHeader(format!("header length {len}")));
    }
    let end = 8 + len as usize;
    if bytes.len() < end {
        return Err(ContainerError::Truncated);
    }
    let content = &bytes[8..end];
    if &content[..8] != MAGIC {
        return Err(ContainerError::NotASyncdFile);
    }
    let version = u16::from_le_bytes([content[8], content[9]]);
    if version > FORMAT_VERSION {
        return Err(ContainerError::FutureVersion { found: version, supported: FORMAT_VERSION });
    }
    if version == 0 {
        return Err(ContainerError::BadHeader("format version 0".into()));
    }
    let header: Header = serde_json::from_slice(&content[10..]).map_err(|e| ContainerError::BadHeader(e.to_string()))?;
    Ok((header, end))
}

/// Reads just the header from the first bytes of a file.
pub fn read_header(prefix: &[u8]) -> Result<Header, ContainerError> {
    parse_header(prefix).map(|(h, _)| h)
}

fn check_expected(h: &Header, e: &Expect<'_>) -> Result<(), ContainerError> {
    let foreign = |field, expected: String, found: String| Err(ContainerError::Foreign { field, expected, found });
    if h.kind != e.kind {
        return foreign("kind", format!("{:?}", e.kind), format!("{:?}", h.kind));
    }
    if h.database != e.database {
        return foreign("database", e.database.into(), h.database.clone());
    }
    if let Some(p) = e.peer_id {
        if h.peer_id != p {
            return foreign("peer id", p.into(), h.peer_id.clone());
        }
    }
    if let Some(s) = e.seq {
        if h.seq != s {
            return foreign("sequence", s.to_string(), h.seq.to_string());
        }
    }
    Ok(())
}

/// Decodes and verifies a whole file in memory.
pub fn decode(bytes: &[u8], expect: &Expect<'_>) -> Result<(Header, Vec<u8>), ContainerError> {
    let (header, start) = parse_header(bytes)?;
    check_expected(&header, expect)?;
    if header.body_len > MAX_MEMORY_BODY {
        return Err(ContainerError::TooLarge(header.body_len));
    }
    let mut body = Vec::with_capacity(header.body_len.min(64 << 20) as usize);
    let decoder = zstd::stream::read::Decoder::new(&bytes[start..]).map_err(ContainerError::Io)?;
    // One byte past the declared length tells an overlong body apart.
    let read = decoder.take(header.body_len + 1).read_to_end(&mut body);
    match read {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ContainerError::Truncated),
        Err(_) => return Err(ContainerError::Checksum),
    }
    if body.len() as u64 != header.body_len {
        return Err(ContainerError::Length { expected: header.body_len, found: body.len() as u64 });
    }
    if hex(&Sha256::digest(&body)) != header.body_sha256 {
        return Err(ContainerError::Checksum);
    }
    Ok((header, body))
}

/// Compresses a file into a container file. Two passes over the source: the
/// first hashes it (the header, which comes first, carries the hash), the
/// second compresses it with zstd's worker threads.
pub fn encode_file(header: &Header, src: &Path, dst: &Path, level: i32, progress: &mut dyn FnMut(u64)) -> Result<Header, ContainerError> {
    let mut h = header.clone();
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    {
        let mut f = BufReader::with_capacity(1 << 20, std::fs::File::open(src)?);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
    }
    h.body_len = len;
    h.body_sha256 = hex(&hasher.finalize());
    let out = std::fs::File::create(dst)?;
    let mut w = BufWriter::with_capacity(1 << 20, out);
    w.write_all(&header_frame(&h))?;
    let mut enc = zstd::stream::write::Encoder::new(w, level)?;
    let _ = enc.multithread(2);
    enc.include_contentsize(true)?;
    enc.set_pledged_src_size(Some(len))?;
    let mut f = BufReader::with_capacity(1 << 20, std::fs::File::open(src)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        enc.write_all(&buf[..n])?;
        done += n as u64;
        progress(done);
    }
    let w = enc.finish()?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(h)
}

/// Decompresses and verifies a container file into `dst`, atomically: on
/// any error `dst` is left as it was.
pub fn decode_file(src: &Path, dst: &Path, expect: &Expect<'_>) -> Result<Header, ContainerError> {
    let mut f = std::fs::File::open(src)?;
    let mut prefix = vec![0u8; 8];
    f.read_exact(&mut prefix).map_err(|_| ContainerError::Truncated)?;
    let len = u32::from_le_bytes(prefix[4..8].try_into().expect("4 bytes"));
    if prefix[..4] != SKIPPABLE_MAGIC.to_le_bytes() {
        return Err(ContainerError::NotASyncdFile);
    }
    if len > MAX_HEADER {
        return Err(ContainerError::BadHeader(format!("header length {len}")));
    }
    prefix.resize(8 + len as usize, 0);
    f.read_exact(&mut prefix[8..]).map_err(|_| ContainerError::Truncated)?;
    let (header, start) = parse_header(&prefix)?;
    check_expected(&header, expect)?;
    f.seek(SeekFrom::Start(start as u64))?;
    let tmp = dst.with_extension("tmp");
    let result = (|| -> Result<(), ContainerError> {
        let mut dec = zstd::stream::read::Decoder::new(BufReader::with_capacity(1 << 20, f))?;
        let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = match dec.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ContainerError::Truncated),
                Err(_) => return Err(ContainerError::Checksum),
            };
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > header.body_len {
                return Err(ContainerError::Length { expected: header.body_len, found: total });
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
        }
        if total != header.body_len {
            return Err(ContainerError::Length { expected: header.body_len, found: total });
        }
        if hex(&hasher.finalize()) != header.body_sha256 {
            return Err(ContainerError::Checksum);
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            std::fs::rename(&tmp, dst)?;
            Ok(header)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            kind: FileKind::Batch,
            database: "main".into(),
            peer_id: "0123456789abcdef0123456789abcdef".into(),
            peer_name: "a".into(),
            seq: 7,
            created_ms: 1,
            body_len: 0,
            body_sha256: String::new(),
            meta: serde_json::Value::Null,
        }
    }

    fn expect() -> Expect<'static> {
        Expect { kind: FileKind::Batch, database: "main", peer_id: Some("0123456789abcdef0123456789abcdef"), seq: Some(7) }
    }

    #[test]
    fn round_trip_and_plain_zstd_gives_the_body() {
        let body = b"hello hello hello".repeat(100);
        let file = encode(&header(), &body, 3);
        let (h, b) = decode(&file, &expect()).unwrap();
        assert_eq!(b, body);
        assert_eq!(h.body_len, body.len() as u64);
        assert_eq!(zstd::stream::decode_all(&file[..]).unwrap(), body);
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_an_error() {
        let body: Vec<u8> = (0..600u32).map(|i| (i * 7 % 251) as u8).collect();
        let file = encode(&header(), &body, 3);
        for n in 0..file.len() {
            assert!(decode(&file[..n], &expect()).is_err(), "truncated at {n}");
        }
        for i in 0..file.len() {
            for bit in 0..8 {
                let mut f = file.clone();
                f[i] ^= 1 << bit;
                if let Ok((_, b)) = decode(&f, &expect()) {
                    assert_eq!(b, body, "a flip at {i}/{bit} gave other data");
                }
            }
        }
    }

    #[test]
    fn foreign_and_future_files_are_refused() {
        let file = encode(&header(), b"x", 3);
        let wrong_db = Expect { database: "other", ..expect() };
        assert!(matches!(decode(&file, &wrong_db), Err(ContainerError::Foreign { .. })));
        let wrong_seq = Expect { seq: Some(8), ..expect() };
        assert!(matches!(decode(&file, &wrong_seq), Err(ContainerError::Foreign { .. })));
        let mut future = file.clone();
        future[16] = 9;
        let err = decode(&future, &expect()).unwrap_err();
        assert!(matches!(err, ContainerError::FutureVersion { found: 9, .. }));
        assert!(err.to_string().contains("upgrade syncd"));
    }

    #[test]
    fn files_round_trip_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 13) as u8).collect();
        std::fs::write(&src, &body).unwrap();
        let mut calls = 0;
        let mut h = header();
        h.kind = FileKind::Snapshot;
        encode_file(&h, &src, &dir.path().join("x.snap"), 3, &mut |_| calls += 1).unwrap();
        assert!(calls > 0);
        let e = Expect { kind: FileKind::Snapshot, seq: None, ..expect() };
        decode_file(&dir.path().join("x.snap"), &dir.path().join("out"), &e).unwrap();
        assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), body);
        // A damaged file leaves the destination untouched.
        let mut bad = std::fs::read(dir.path().join("x.snap")).unwrap();
        let n = bad.len();
        bad.truncate(n - 100);
        std::fs::write(dir.path().join("bad.snap"), &bad).unwrap();
        assert!(decode_file(&dir.path().join("bad.snap"), &dir.path().join("out2"), &e).is_err());
        assert!(!dir.path().join("out2").exists());
    }
}
