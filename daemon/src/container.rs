//! The self-checking container of every file in the hub: change batches
//! (`.chg`) and snapshots (`.snap`). DESIGN §3.
//!
//! Its job: wrap a body so that a reader can tell a good file from a short,
//! partly synced, damaged, misplaced or newer one, and never hand out a body
//! it has not verified in full. It never returns part of a body, never
//! accepts a file whose header disagrees with where the file was found, and
//! never writes a destination file until the body has been verified.
//!
//! # Layout (format version 1; a contract with other versions of syncd)
//!
//! ```text
//! offset  size  content
//! 0       4     u32 LE 0x184D2A5B     zstd skippable-frame magic
//! 4       4     u32 LE n              length of the frame content that follows
//! 8       8     "SYNCDHUB"            ASCII magic
//! 16      2     u16 LE version        1 (a reader refuses anything newer)
//! 18      n-10  header, UTF-8 JSON    see below
//! 8+n     ...   one ordinary zstd frame holding the body, nothing after it
//! ```
//!
//! The header is a JSON object with the fields of [`Header`] (`kind` is
//! `"batch"` or `"snapshot"`, `body_len` the length of the *uncompressed*
//! body, `body_sha256` its lowercase hex SHA-256, `meta` free-form or `null`),
//! then two members that are not part of [`Header`]:
//!
//! - `"frame_xxh3"`: 16 lowercase hex digits, the XXH3-64 of the body's
//!   zstd frame as stored, from its magic to its last byte. zstd ignores
//!   some bits of its own format (padding in its table descriptions), so
//!   without this a flipped bit there would go unnoticed; with it, any
//!   change to any byte of the file is an error.
//! - `"header_sha256"`, always the **last** member: the lowercase hex
//!   SHA-256 of every byte of the frame content before the `,` that
//!   introduces it (the magic, the version, and the JSON text up to there).
//!   It makes a damaged header an error instead of a different header.
//!
//! The JSON may be followed by ASCII spaces, which pad the header of a
//! streamed file to the size reserved for it. Readers ignore unknown JSON
//! members (the checksum still covers them).
//!
//! The body frame carries no dictionary id, and always its content size
//! (equal to `body_len`) and a zstd content checksum.
//! zstd skips skippable frames, so `zstd -d x.snap -o x.db` gives the plain
//! body (a SQLite file for a snapshot) to a person who has only zstd.

use aws_lc_rs::digest::{self, SHA256};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

const SKIPPABLE_MAGIC: [u8; 4] = 0x184D_2A5B_u32.to_le_bytes();
const ZSTD_FRAME_MAGIC: [u8; 4] = 0xFD2F_B528_u32.to_le_bytes();
/// The longest zstd frame header: magic, descriptor, window, dictionary
/// id, content size.
const MAX_FRAME_HEADER: usize = 4 + 1 + 1 + 4 + 8;
const MAGIC: &[u8; 8] = b"SYNCDHUB";
/// Bytes of the skippable-frame prefix: magic and content length.
const FRAME_PREFIX: usize = 8;
/// Bytes of the content before the JSON: magic and version.
const CONTENT_PREFIX: usize = MAGIC.len() + 2;
const CHECKSUM_HEAD: &[u8] = b",\"header_sha256\":\"";
const CHECKSUM_TAIL: &[u8] = b"\"}";
const FRAME_HASH_HEAD: &[u8] = b",\"frame_xxh3\":\"";
/// `,"header_sha256":"<64 hex>"}`
const CHECKSUM_MEMBER: usize = CHECKSUM_HEAD.len() + 64 + CHECKSUM_TAIL.len();

/// The container format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;
/// The compression level callers use unless configured otherwise.
pub const DEFAULT_LEVEL: i32 = 3;
/// Bodies decoded in memory (change batches) are refused above this size;
/// snapshots go through [`decode_file`], which has no such limit.
pub const MAX_IN_MEMORY_BODY: u64 = 4 << 30;
/// Headers are small (cursors of a few peers); a larger one is damage.
pub const MAX_HEADER: u32 = 16 << 20;
/// zstd worker threads for [`encode_file`]: two keep a snapshot quick
/// without taking every core from the application that owns the database.
const WORKERS: u32 = 2;
/// Unit of streaming work: large enough that one extra thread per chunk
/// costs nothing, small enough to keep memory flat.
const CHUNK: usize = 4 << 20;

/// What a file in the hub holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Batch,
    Snapshot,
}

impl FileKind {
    fn as_str(self) -> &'static str {
        match self {
            FileKind::Batch => "batch",
            FileKind::Snapshot => "snapshot",
        }
    }
}

/// The header of a container file: who wrote it, for which database, and
/// how to verify the body.
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
    /// Free-form extra data, such as the cursors a snapshot includes;
    /// `Null` if none.
    pub meta: serde_json::Value,
}

/// What a reader expects to find, from the file's place and name in the
/// hub. A header that says otherwise belongs elsewhere.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub kind: FileKind,
    pub database: &'a str,
    pub peer_id: Option<&'a str>,
    pub seq: Option<u64>,
}

/// Why a container file was refused. A caller skips the file and says so;
/// only `Truncated` is worth retrying soon (a file still being synced).
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("the file is incomplete (still being synced or cut short); it will be retried later")]
    Truncated,
    #[error("not a syncd hub file (no SYNCDHUB header); move it out of the hub")]
    NotASyncdFile,
    #[error("written by a newer syncd (container format {found}, this one reads up to {supported}); upgrade syncd")]
    FutureVersion { found: u16, supported: u16 },
    #[error("the header is damaged ({0}); the file cannot be used")]
    BadHeader(String),
    #[error(
        "the file belongs elsewhere: its {field} is {found:?} but its place in the hub says {expected:?}; it was copied or moved by hand"
    )]
    Foreign { field: &'static str, expected: String, found: String },
    #[error("the content does not match its checksum; the file is damaged and cannot be used")]
    Checksum,
    #[error("the body is {found} bytes but the header says {expected}; the file is damaged and cannot be used")]
    Length { expected: u64, found: u64 },
    #[error(
        "the header announces a body of {found} bytes, above the {limit}-byte limit for reading in memory; the file is damaged"
    )]
    TooLarge { found: u64, limit: u64 },
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

// ---------------------------------------------------------------- writing

/// The skippable frame's content: magic, version, JSON ending with the body
/// frame's hash and the header's own checksum, then `pad_to - len` spaces.
fn header_content(header: &Header, frame_xxh3: u64, pad_to: usize) -> Vec<u8> {
    let json =
        serde_json::to_vec(header).expect("a Header serializes: every field is a string, a number or a JSON value");
    // serde_json writes a struct as one object; the extra members go where
    // its closing brace was.
    let open = json.strip_suffix(b"}").expect("serde_json closes a struct's object with `}`");
    let mut content = Vec::with_capacity(CONTENT_PREFIX + json.len() + CHECKSUM_MEMBER);
    content.extend_from_slice(MAGIC);
    content.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    content.extend_from_slice(open);
    content.extend_from_slice(FRAME_HASH_HEAD);
    content.extend_from_slice(format!("{frame_xxh3:016x}\"").as_bytes());
    let digest = sha256_hex(&content);
    content.extend_from_slice(CHECKSUM_HEAD);
    content.extend_from_slice(digest.as_bytes());
    content.extend_from_slice(CHECKSUM_TAIL);
    if content.len() < pad_to {
        content.resize(pad_to, b' ');
    }
    assert!(
        content.len() <= MAX_HEADER as usize,
        "a header of {} bytes is over the {MAX_HEADER}-byte limit: its meta is far too large",
        content.len()
    );
    content
}

fn header_frame(content: &[u8]) -> Vec<u8> {
    let len = u32::try_from(content.len()).expect("header_content keeps headers under MAX_HEADER");
    let mut frame = Vec::with_capacity(FRAME_PREFIX + content.len());
    frame.extend_from_slice(&SKIPPABLE_MAGIC);
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(content);
    frame
}

/// Encodes `body` in memory (change batches). `body_len` and `body_sha256`
/// of `header` are ignored and filled from `body`.
pub fn encode(header: &Header, body: &[u8], level: i32) -> Vec<u8> {
    let mut header = header.clone();
    header.body_len = body.len() as u64;
    header.body_sha256 = sha256_hex(body);
    let mut compressor = zstd::bulk::Compressor::new(level).expect("zstd accepts any level (it clamps it)");
    compressor.include_checksum(true).expect("the checksum flag is a valid zstd parameter");
    let compressed = compressor.compress(body).expect("compressing into a buffer sized by zstd's bound does not fail");
    let mut out = header_frame(&header_content(&header, xxh3_64(&compressed), 0));
    out.extend_from_slice(&compressed);
    out
}

/// Compresses the file `src` into the container file `dst`, streaming, and
/// returns the header as written.
///
/// The header, which carries the body's length and SHA-256, precedes the
/// body. Rather than read the source twice (once to hash it, once to
/// compress it), this reads it once: it reserves the header's largest
/// possible size (every field is fixed but `body_len`, whose widest value
/// is `u64::MAX`), writes zeros there, compresses while hashing, then
/// seeks back and writes the real header, padded with spaces to the
/// reserved size. The zeros make a half-written file unreadable as a
/// container, and the file is written under `dst` + `.tmp` and renamed
/// into place only once complete and flushed, so `dst` is either absent,
/// left as it was, or whole.
///
/// `progress` is called after each chunk with the number of source bytes
/// done so far.
pub fn encode_file(
    header: &Header,
    src: &Path,
    dst: &Path,
    level: i32,
    progress: &mut dyn FnMut(u64),
) -> Result<Header, ContainerError> {
    let tmp = temp_path(dst);
    let written = encode_file_to(header, src, &tmp, level, progress)
        .and_then(|header| Ok(finish_temp(&tmp, dst).map(|()| header)?));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn encode_file_to(
    header: &Header,
    src: &Path,
    tmp: &Path,
    level: i32,
    progress: &mut dyn FnMut(u64),
) -> Result<Header, ContainerError> {
    let mut source = File::open(src)?;
    let source_len = source.metadata()?.len();
    let mut header = header.clone();
    header.body_len = u64::MAX;
    header.body_sha256 = "0".repeat(64);
    let reserved = header_content(&header, 0, 0).len();

    let mut out = BufWriter::with_capacity(1 << 20, File::create(tmp)?);
    out.write_all(&vec![0u8; FRAME_PREFIX + reserved])?;
    let out = FrameHashingWriter { inner: out, hash: Xxh3::new() };
    let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
    encoder.include_checksum(true)?;
    // Single-threaded compression is still correct, only slower, so a zstd
    // built without thread support is no reason to fail.
    let _ = encoder.multithread(WORKERS);
    encoder.include_contentsize(true)?;
    // If the source changes size while it is read, zstd fails the frame
    // instead of recording a length that the file no longer has.
    encoder.set_pledged_src_size(Some(source_len))?;

    let mut done = 0u64;
    let (len, sha256) = stream_hashing(&mut |buf| Ok(read_full(&mut source, buf)?), &mut |data| {
        encoder.write_all(data)?;
        done += data.len() as u64;
        progress(done);
        Ok(())
    })?;
    let out = encoder.finish()?;
    let frame_xxh3 = out.hash.digest();
    let mut file = out.inner.into_inner().map_err(|e| e.into_error())?;

    header.body_len = len;
    header.body_sha256 = sha256;
    let content = header_content(&header, frame_xxh3, reserved);
    assert_eq!(content.len(), reserved, "a header never outgrows its widest form");
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header_frame(&content))?;
    file.sync_all()?;
    Ok(header)
}

// ---------------------------------------------------------------- reading

/// Reads the header from the first bytes of a file (a few KiB are plenty),
/// for listing files without downloading them. Verifies the header's own
/// checksum but nothing of the body, and nothing about where the file is.
pub fn read_header(prefix: &[u8]) -> Result<Header, ContainerError> {
    parse_header(prefix).map(|parsed| parsed.header)
}

/// How many bytes at the start of a file hold the header, from its first
/// 8 bytes: what to fetch for [`read_header`] when reading a range.
pub fn header_frame_len(prefix: &[u8]) -> Result<usize, ContainerError> {
    check_magic(prefix)?;
    let Some(len) = prefix.get(4..8) else {
        return Err(ContainerError::Truncated);
    };
    let len = u32::from_le_bytes(len.try_into().expect("a 4-byte slice"));
    if len > MAX_HEADER {
        return Err(ContainerError::BadHeader(format!("it claims {len} bytes, more than the {MAX_HEADER}-byte limit")));
    }
    Ok(FRAME_PREFIX + len as usize)
}

fn check_magic(prefix: &[u8]) -> Result<(), ContainerError> {
    let n = prefix.len().min(4);
    if prefix[..n] != SKIPPABLE_MAGIC[..n] {
        return Err(ContainerError::NotASyncdFile);
    }
    // Our own magic follows the length; a foreign skippable frame is
    // refused as soon as its first bytes are in.
    let ours = prefix.get(FRAME_PREFIX..).unwrap_or_default();
    let n = ours.len().min(MAGIC.len());
    if ours[..n] != MAGIC[..n] {
        return Err(ContainerError::NotASyncdFile);
    }
    Ok(())
}

/// What the header frame says beyond [`Header`].
struct Parsed {
    header: Header,
    /// XXH3-64 of the body frame.
    frame_xxh3: u64,
    /// Offset of the body frame.
    body_start: usize,
}

/// The members of the header JSON that are not part of [`Header`] and that
/// a reader needs.
#[derive(Deserialize)]
struct Extra {
    frame_xxh3: String,
}

/// Parses and verifies the header frame.
fn parse_header(bytes: &[u8]) -> Result<Parsed, ContainerError> {
    let end = header_frame_len(bytes)?;
    let content = bytes.get(FRAME_PREFIX..).unwrap_or_default();
    // The version decides the layout of everything after it, so a newer
    // file is reported as such even when the rest would not parse.
    if let Some(version) = content.get(MAGIC.len()..CONTENT_PREFIX) {
        let version = u16::from_le_bytes(version.try_into().expect("a 2-byte slice"));
        if version > FORMAT_VERSION {
            return Err(ContainerError::FutureVersion { found: version, supported: FORMAT_VERSION });
        }
        if version == 0 {
            return Err(ContainerError::BadHeader("format version 0".into()));
        }
    }
    let Some(content) = bytes.get(FRAME_PREFIX..end) else {
        return Err(ContainerError::Truncated);
    };
    if content.len() < CONTENT_PREFIX {
        return Err(ContainerError::BadHeader(format!("its frame holds only {} bytes", content.len())));
    }
    let (header, frame_xxh3) = verify_header_content(content)?;
    Ok(Parsed { header, frame_xxh3, body_start: end })
}

fn verify_header_content(content: &[u8]) -> Result<(Header, u64), ContainerError> {
    let unpadded = content.len() - content.iter().rev().take_while(|&&b| b == b' ').count();
    let signed_len = unpadded
        .checked_sub(CHECKSUM_MEMBER)
        .filter(|&n| n > CONTENT_PREFIX)
        .ok_or_else(|| ContainerError::BadHeader("it has no header checksum".into()))?;
    let member = &content[signed_len..unpadded];
    let digest = &member[CHECKSUM_HEAD.len()..CHECKSUM_HEAD.len() + 64];
    if !member.starts_with(CHECKSUM_HEAD) || !member.ends_with(CHECKSUM_TAIL) || !is_lower_hex(digest, 64) {
        return Err(ContainerError::BadHeader("it does not end with its checksum".into()));
    }
    if sha256_hex(&content[..signed_len]).as_bytes() != digest {
        return Err(ContainerError::Checksum);
    }
    let json = &content[CONTENT_PREFIX..];
    let bad_json = |e: serde_json::Error| ContainerError::BadHeader(format!("invalid JSON: {e}"));
    let header: Header = serde_json::from_slice(json).map_err(bad_json)?;
    let extra: Extra = serde_json::from_slice(json).map_err(bad_json)?;
    // The checksum proves these bytes are what a writer wrote; these
    // checks catch a writer that broke the contract.
    if !is_lower_hex(header.peer_id.as_bytes(), 32) {
        return Err(ContainerError::BadHeader(format!("peer id {:?} is not 32 lowercase hex digits", header.peer_id)));
    }
    if !is_lower_hex(header.body_sha256.as_bytes(), 64) {
        return Err(ContainerError::BadHeader("body checksum is not 64 lowercase hex digits".into()));
    }
    let frame_xxh3 = Some(extra.frame_xxh3.as_bytes())
        .filter(|h| is_lower_hex(h, 16))
        .and_then(|_| u64::from_str_radix(&extra.frame_xxh3, 16).ok())
        .ok_or_else(|| ContainerError::BadHeader("frame hash is not 16 lowercase hex digits".into()))?;
    Ok((header, frame_xxh3))
}

fn check_expected(header: &Header, expect: &Expect<'_>) -> Result<(), ContainerError> {
    let foreign = |field, expected: &str, found: &str| {
        Err(ContainerError::Foreign { field, expected: expected.to_string(), found: found.to_string() })
    };
    if header.kind != expect.kind {
        return foreign("kind", expect.kind.as_str(), header.kind.as_str());
    }
    if header.database != expect.database {
        return foreign("database", expect.database, &header.database);
    }
    if let Some(peer_id) = expect.peer_id
        && header.peer_id != peer_id
    {
        return foreign("peer id", peer_id, &header.peer_id);
    }
    if let Some(seq) = expect.seq
        && header.seq != seq
    {
        return foreign("sequence number", &seq.to_string(), &header.seq.to_string());
    }
    Ok(())
}

/// How many times its compressed size [`decode`] first expects a body to
/// be.
const PLAUSIBLE_EXPANSION: usize = 16;

/// Decodes a whole file in memory (change batches) and verifies everything:
/// the header and its checksum, that it matches `expect`, the hash of the
/// compressed frame, and the body's length and SHA-256. Returns the body
/// only once all of it is verified.
pub fn decode(bytes: &[u8], expect: &Expect<'_>) -> Result<(Header, Vec<u8>), ContainerError> {
    let (header, body) = decode_unhashed(bytes, expect)?;
    if sha256_hex(&body) != header.body_sha256 {
        return Err(ContainerError::Checksum);
    }
    Ok((header, body))
}

/// [`decode`] and `parse` of the body, which runs while the body's SHA-256
/// is worked out on a second thread (the two take about as long): what it
/// makes of the body is handed out only once the body is verified, and a
/// parser must take any bytes, as the codec does.
pub fn decode_with<T>(
    bytes: &[u8],
    expect: &Expect<'_>,
    parse: impl FnOnce(&[u8]) -> T,
) -> Result<(Header, T), ContainerError> {
    let (header, body) = decode_unhashed(bytes, expect)?;
    let (sha256, parsed) = std::thread::scope(|scope| {
        let hashing = std::thread::Builder::new().name("syncd-sha256".into()).spawn_scoped(scope, || sha256_hex(&body));
        let parsed = parse(&body);
        // A thread that cannot start leaves the hash to this one.
        let sha256 = match hashing {
            Ok(hashing) => hashing.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => sha256_hex(&body),
        };
        (sha256, parsed)
    });
    if sha256 != header.body_sha256 {
        return Err(ContainerError::Checksum);
    }
    Ok((header, parsed))
}

/// [`decode`] but for the body's SHA-256, which the caller checks.
fn decode_unhashed(bytes: &[u8], expect: &Expect<'_>) -> Result<(Header, Vec<u8>), ContainerError> {
    let Parsed { header, frame_xxh3, body_start } = parse_header(bytes)?;
    check_expected(&header, expect)?;
    let too_large = ContainerError::TooLarge { found: header.body_len, limit: MAX_IN_MEMORY_BODY };
    if header.body_len > MAX_IN_MEMORY_BODY {
        return Err(too_large);
    }
    let target = usize::try_from(header.body_len).map_err(|_| too_large)?;
    let frame = &bytes[body_start..];
    let mut decoder = body_decoder(frame, header.body_len, frame)?;

    // A forged or damaged length must not make us allocate more than it
    // says, nor a small file expand into an arbitrary amount of memory:
    // the buffer starts at what the frame plausibly expands to (a change
    // batch, to a tenth or so) and grows geometrically, never past
    // `body_len`, and reading stops there.
    let mut body = Vec::new();
    let mut filled = 0;
    while filled < target {
        if filled == body.len() {
            let first = frame.len().saturating_mul(PLAUSIBLE_EXPANSION).max(64 << 10);
            let grown = target.min((body.len() * 2).max(first));
            body.reserve_exact(grown - body.len());
            body.resize(grown, 0);
        }
        let n = read_body(&mut decoder, &mut body[filled..], |_| None)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    body.truncate(filled);
    // The frame must end exactly here: this read also makes zstd check
    // its own content checksum at the end of the frame.
    let mut probe = [0u8; 1];
    let extra = read_body(&mut decoder, &mut probe, |_| None)?;
    check_len(header.body_len, filled as u64 + extra as u64)?;
    check_nothing_after(decoder.finish())?;
    if xxh3_64(frame) != frame_xxh3 {
        return Err(ContainerError::Checksum);
    }
    Ok((header, body))
}

/// Decompresses and verifies the container file `src` into the plain file
/// `dst`, streaming, with the same checks as [`decode`]. The body is written
/// to `dst` + `.tmp` and renamed into place only once everything is
/// verified and the file is flushed; on any error the temporary file is
/// removed and `dst` is left as it was.
pub fn decode_file(src: &Path, dst: &Path, expect: &Expect<'_>) -> Result<Header, ContainerError> {
    let mut source = File::open(src)?;
    let mut head = vec![0u8; FRAME_PREFIX];
    read_exact_or_truncated(&mut source, &mut head)?;
    let len = header_frame_len(&head)?;
    head.resize(len, 0);
    read_exact_or_truncated(&mut source, &mut head[FRAME_PREFIX..])?;
    let Parsed { header, frame_xxh3, .. } = parse_header(&head)?;
    check_expected(&header, expect)?;

    let tmp = temp_path(dst);
    let decoded = decode_body_to(&header, frame_xxh3, source, &tmp).and_then(|()| Ok(finish_temp(&tmp, dst)?));
    if decoded.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    decoded.map(|()| header)
}

fn decode_body_to(header: &Header, frame_xxh3: u64, mut source: File, tmp: &Path) -> Result<(), ContainerError> {
    let mut first = [0u8; MAX_FRAME_HEADER];
    let peeked = read_full(&mut source, &mut first)?;
    source.seek(SeekFrom::Current(-(peeked as i64)))?;
    let source = BufReader::with_capacity(1 << 20, FrameReader { inner: source, error: None, hash: Xxh3::new() });
    let mut decoder = body_decoder(&first[..peeked], header.body_len, source)?;
    let mut out = BufWriter::with_capacity(1 << 20, File::create(tmp)?);
    let mut produced = 0u64;
    let take_io_error = |d: &mut BodyDecoder<BufReader<FrameReader<File>>>| d.get_mut().get_mut().error.take();
    let (len, sha256) = stream_hashing(
        &mut |buf| {
            let n = read_full_body(&mut decoder, buf, take_io_error)?;
            produced += n as u64;
            // Stop a damaged or hostile file from filling the disk: the
            // body may be at most one chunk past its declared length
            // before this refuses it.
            if produced > header.body_len {
                return Err(ContainerError::Length { expected: header.body_len, found: produced });
            }
            Ok(n)
        },
        &mut |data| Ok(out.write_all(data)?),
    )?;
    check_len(header.body_len, len)?;
    let mut rest = decoder.finish();
    check_nothing_after(&mut rest)?;
    // Everything after the header went through the FrameReader, and
    // nothing follows the frame: its hash is the frame's.
    if rest.get_ref().hash.digest() != frame_xxh3 || sha256 != header.body_sha256 {
        return Err(ContainerError::Checksum);
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

type BodyDecoder<R> = zstd::stream::read::Decoder<'static, R>;

/// A decoder for exactly one ordinary zstd frame at the start of `source`,
/// whose first bytes are `first` (peeked by the caller). The frame header
/// must be one that syncd writes.
fn body_decoder<R: BufRead>(first: &[u8], body_len: u64, source: R) -> Result<BodyDecoder<R>, ContainerError> {
    check_frame_header(first, body_len)?;
    Ok(zstd::stream::read::Decoder::with_buffer(source)?.single_frame())
}

/// Checks the zstd frame header of the body (RFC 8878 §3.1.1.1) beyond
/// what zstd checks: zstd ignores the unused bit and trusts the content
/// size, so a flip there would otherwise go unnoticed. syncd's frames
/// carry no dictionary id, always a content checksum, and always a content
/// size, which must be the header's `body_len`.
fn check_frame_header(first: &[u8], body_len: u64) -> Result<(), ContainerError> {
    let Some(magic) = first.get(..4) else {
        return Err(ContainerError::Truncated);
    };
    // A skippable or any other kind of frame in place of the body is damage.
    if magic != ZSTD_FRAME_MAGIC {
        return Err(ContainerError::Checksum);
    }
    let Some(&descriptor) = first.get(4) else {
        return Err(ContainerError::Truncated);
    };
    const UNUSED_RESERVED_DICTIONARY: u8 = 0b0001_1011;
    const CHECKSUM: u8 = 0b0000_0100;
    if descriptor & UNUSED_RESERVED_DICTIONARY != 0 || descriptor & CHECKSUM == 0 {
        return Err(ContainerError::Checksum);
    }
    let single_segment = descriptor & 0b0010_0000 != 0;
    let size_bytes = match descriptor >> 6 {
        0 if single_segment => 1,
        0 => return Err(ContainerError::Checksum),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let at = 5 + usize::from(!single_segment);
    let Some(size) = first.get(at..at + size_bytes) else {
        return Err(ContainerError::Truncated);
    };
    let mut le = [0u8; 8];
    le[..size_bytes].copy_from_slice(size);
    // The 2-byte form stores the size minus 256.
    let size = u64::from_le_bytes(le) + if size_bytes == 2 { 256 } else { 0 };
    if size != body_len {
        return Err(ContainerError::Length { expected: body_len, found: size });
    }
    Ok(())
}

/// Reads decompressed bytes, telling a file that ends early (`Truncated`)
/// from one whose compressed data is damaged (`Checksum`) and from an I/O
/// error of the underlying file (`Io`, recovered by `take_io_error`, since
/// zstd reports all three through one `io::Error`).
fn read_body<R: BufRead>(
    decoder: &mut BodyDecoder<R>,
    buf: &mut [u8],
    mut take_io_error: impl FnMut(&mut BodyDecoder<R>) -> Option<io::Error>,
) -> Result<usize, ContainerError> {
    loop {
        match decoder.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if let Some(io) = take_io_error(decoder) {
                    return Err(ContainerError::Io(io));
                }
                return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                    ContainerError::Truncated
                } else {
                    ContainerError::Checksum
                });
            }
        }
    }
}

fn read_full_body<R: BufRead>(
    decoder: &mut BodyDecoder<R>,
    buf: &mut [u8],
    mut take_io_error: impl FnMut(&mut BodyDecoder<R>) -> Option<io::Error>,
) -> Result<usize, ContainerError> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = read_body(decoder, &mut buf[filled..], &mut take_io_error)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

fn check_len(expected: u64, found: u64) -> Result<(), ContainerError> {
    if found == expected {
        Ok(())
    } else {
        // When the body runs long, `found` is where reading stopped, a
        // lower bound of its real length.
        Err(ContainerError::Length { expected, found })
    }
}

/// The body frame is the last thing in a file; bytes after it are damage
/// (or a concatenation that is not ours).
fn check_nothing_after(mut rest: impl BufRead) -> Result<(), ContainerError> {
    if rest.fill_buf()?.is_empty() { Ok(()) } else { Err(ContainerError::Checksum) }
}

/// The file under the decoder: hashes every byte read from it, and
/// remembers its I/O error so that a disk error is reported as one and not
/// as a damaged file.
struct FrameReader<R> {
    inner: R,
    error: Option<io::Error>,
    hash: Xxh3,
}

impl<R: Read> Read for FrameReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hash.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.error = Some(io::Error::new(e.kind(), e.to_string()));
                }
                Err(e)
            }
        }
    }
}

/// The file under the encoder: hashes the body frame as it is written.
struct FrameHashingWriter<W> {
    inner: W,
    hash: Xxh3,
}

impl<W: Write> Write for FrameHashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// ------------------------------------------------------------- streaming

/// Moves data from `fill` to `sink` chunk by chunk and returns its length
/// and hex SHA-256. Each chunk is hashed on a second thread while `sink`
/// consumes it and `fill` reads the next one, so that hashing overlaps the
/// I/O and compression instead of adding to them: on a CPU without SHA
/// instructions it is the slowest step (one stream of SHA-256 cannot be
/// split across cores), and the time of the whole is about its time.
/// `fill` fills its buffer unless the data ends, and returns 0 at the end.
fn stream_hashing(
    fill: &mut dyn FnMut(&mut [u8]) -> Result<usize, ContainerError>,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), ContainerError>,
) -> Result<(u64, String), ContainerError> {
    let mut current = vec![0u8; CHUNK];
    let mut next = vec![0u8; CHUNK];
    let mut hasher = digest::Context::new(&SHA256);
    let mut total = 0u64;
    let mut n = fill(&mut current)?;
    while n > 0 {
        let data = &current[..n];
        let (hashed, step) = std::thread::scope(|s| {
            let hashing = s.spawn(move || {
                hasher.update(data);
                hasher
            });
            let step = sink(data).and_then(|()| fill(&mut next));
            (hashing.join(), step)
        });
        hasher = hashed.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        total += n as u64;
        n = step?;
        std::mem::swap(&mut current, &mut next);
    }
    Ok((total, hex(hasher.finish().as_ref())))
}

fn read_full(source: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn read_exact_or_truncated(source: &mut impl Read, buf: &mut [u8]) -> Result<(), ContainerError> {
    source.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ContainerError::Truncated,
        _ => ContainerError::Io(e),
    })
}

fn temp_path(dst: &Path) -> PathBuf {
    let mut name = dst.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Renames a complete, flushed temporary file into place, and makes the
/// rename itself durable where the platform allows it.
fn finish_temp(tmp: &Path, dst: &Path) -> io::Result<()> {
    std::fs::rename(tmp, dst)?;
    // Best effort: `dst` is already replaced by a verified file, so failing
    // now would report an error about a destination that has changed.
    #[cfg(unix)]
    {
        let dir = match dst.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

fn is_lower_hex(s: &[u8], len: usize) -> bool {
    s.len() == len && s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// SHA-256 comes from aws-lc, which rustls links already: its hand-written
/// AVX2 code hashes about 1.6 times as fast as the `sha2` crate's portable
/// one on a CPU without SHA instructions, where hashing is what bounds the
/// speed of a snapshot and of a restore (both use SHA-NI where present).
fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&SHA256, data).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
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

    /// The file of `body` with the header of `claimed`: every check but the
    /// body's SHA-256 passes.
    fn with_the_hash_of(claimed: &[u8], body: &[u8]) -> Vec<u8> {
        let mut header = header();
        header.body_len = body.len() as u64;
        header.body_sha256 = sha256_hex(claimed);
        let mut compressor = zstd::bulk::Compressor::new(3).unwrap();
        compressor.include_checksum(true).unwrap();
        let compressed = compressor.compress(body).unwrap();
        let mut out = header_frame(&header_content(&header, xxh3_64(&compressed), 0));
        out.extend_from_slice(&compressed);
        out
    }

    #[test]
    fn what_is_parsed_of_a_body_is_handed_out_only_with_its_hash_right() {
        let expect = Expect { kind: FileKind::Batch, database: "main", peer_id: None, seq: None };
        let parse = |body: &[u8]| body.len();
        let good = encode(&header(), b"the body", 3);
        assert_eq!(decode_with(&good, &expect, parse).unwrap().1, 8);

        let forged = with_the_hash_of(b"the body", b"another!");
        let mut parsed = false;
        let result = decode_with(&forged, &expect, |_| parsed = true);
        assert!(matches!(result, Err(ContainerError::Checksum)), "{:?}", result.map(|_| ()));
        assert!(parsed, "parsed while the hash was worked out, then dropped");
        assert!(matches!(decode(&forged, &expect), Err(ContainerError::Checksum)));
        assert_eq!(decode(&with_the_hash_of(b"same", b"same"), &expect).unwrap().1, b"same");
    }

    #[test]
    fn the_header_json_ends_with_its_own_checksum() {
        let file = encode(&header(), b"x", 3);
        let len = header_frame_len(&file).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&file[18..len]).unwrap();
        assert_eq!(json["database"], "main");
        assert_eq!(json["kind"], "batch");
        let sha = json["header_sha256"].as_str().unwrap();
        let at = file[..len].windows(5).rposition(|w| w == b",\"hea").unwrap();
        // `sha2`, an implementation independent of the one under test.
        assert_eq!(hex(&<sha2::Sha256 as sha2::Digest>::digest(&file[8..at])), sha);
    }

    #[test]
    fn a_short_prefix_is_truncated_and_a_foreign_one_is_not_ours() {
        assert!(matches!(read_header(b""), Err(ContainerError::Truncated)));
        assert!(matches!(read_header(&SKIPPABLE_MAGIC[..2]), Err(ContainerError::Truncated)));
        assert!(matches!(read_header(b"SQLite format 3\0"), Err(ContainerError::NotASyncdFile)));
        let mut other = SKIPPABLE_MAGIC.to_vec();
        other.extend_from_slice(&[10, 0, 0, 0]);
        other.extend_from_slice(b"OTHERTOOL!");
        assert!(matches!(read_header(&other), Err(ContainerError::NotASyncdFile)));
    }

    #[test]
    fn sha256_is_the_standard_one() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn hex_is_lowercase_and_complete() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
