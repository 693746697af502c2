//! How a row's column states are kept in `rows.cols` (state format 3).
//!
//! Every row of a table names the same columns, so the names (their hashes)
//! are kept once, as a *layout* in the `layouts` table, and a row carries
//! the layout's id and, per column in the layout's order, the value's hash
//! and version. A row written whole by one change (every row an applied
//! insert makes) has one version for all its columns, kept once. For a row
//! of five columns that is 54 bytes where format 2, which repeated every
//! name hash in every row, took 93: recording an applied row and copying
//! the state's WAL back both cost less.
//!
//! The encoding: nothing at all for no columns; else a form byte
//! ([`ONE_VERSION`] or [`PER_COLUMN`]), the layout id (LEB128), then for
//! one version its clock (8 bytes) and peer (4), and each column's value
//! hash (8); or for a version per column, each column's value hash, clock
//! and peer (20 bytes). Integers are little-endian.

use super::{ColState, Result, Version};
use rusqlite::{Connection, OptionalExtension};
use std::collections::HashMap;
use std::sync::Arc;

const ONE_VERSION: u8 = 2;
const PER_COLUMN: u8 = 3;

/// The column-name hashes of a layout, in the order its rows list them.
type Names = Arc<[u64]>;

/// The layouts one connection has used, by id and by names. Ids made in a
/// transaction that rolls back are gone: [`Layouts::forget`] then.
#[derive(Default)]
pub(super) struct Layouts {
    by_id: HashMap<i64, Names>,
    by_names: HashMap<Names, i64>,
    /// The layout used last: consecutive rows nearly always share it.
    last: Option<(i64, Names)>,
}

impl Layouts {
    pub(super) fn forget(&mut self) {
        *self = Layouts::default();
    }

    /// The id of the layout naming `names` in order, made when new.
    fn id_of(&mut self, conn: &Connection, names: impl ExactSizeIterator<Item = u64> + Clone) -> Result<i64> {
        if let Some((id, last)) = &self.last
            && last.len() == names.len()
            && last.iter().copied().eq(names.clone())
        {
            return Ok(*id);
        }
        let names: Names = names.collect();
        let id = match self.by_names.get(&names) {
            Some(&id) => id,
            None => {
                let blob: Vec<u8> = names.iter().flat_map(|n| n.to_le_bytes()).collect();
                // Another connection to the state may make the same layout
                // meanwhile: the first one made is the one used.
                conn.prepare_cached("INSERT OR IGNORE INTO layouts(names) VALUES (?1)")?.execute([&blob])?;
                let id =
                    conn.prepare_cached("SELECT id FROM layouts WHERE names = ?1")?.query_row([&blob], |r| r.get(0))?;
                self.remember(id, names.clone());
                id
            }
        };
        self.last = Some((id, names));
        Ok(id)
    }

    fn names(&mut self, conn: &Connection, id: i64) -> Result<Names> {
        if let Some((last, names)) = &self.last
            && *last == id
        {
            return Ok(names.clone());
        }
        if let Some(names) = self.by_id.get(&id) {
            return Ok(names.clone());
        }
        let blob: Option<Vec<u8>> =
            conn.prepare_cached("SELECT names FROM layouts WHERE id = ?1")?.query_row([id], |r| r.get(0)).optional()?;
        let Some(blob) = blob.filter(|b| b.len() % 8 == 0) else {
            return Err(damaged(format!("a row names column layout {id}, which the state does not have")));
        };
        let names: Names = blob.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
        self.remember(id, names.clone());
        Ok(names)
    }

    fn remember(&mut self, id: i64, names: Names) {
        self.by_id.insert(id, names.clone());
        self.by_names.insert(names, id);
    }

    /// Appends the encoding of `cols` to `out`.
    pub(super) fn encode_into(&mut self, conn: &Connection, cols: &[ColState], out: &mut Vec<u8>) -> Result<()> {
        let Some(first) = cols.first() else {
            return Ok(());
        };
        let layout = self.id_of(conn, cols.iter().map(|c| c.name_hash))?;
        if cols.iter().all(|c| c.version == first.version) {
            put_one_version(out, layout, first.version, cols.iter().map(|c| c.value_hash));
        } else {
            out.reserve(1 + 10 + cols.len() * 20);
            out.push(PER_COLUMN);
            put_leb128(out, layout as u64);
            for c in cols {
                out.extend_from_slice(&c.value_hash.to_le_bytes());
                put_version(out, c.version);
            }
        }
        Ok(())
    }

    /// Appends the encoding of the column states named `names`, all at
    /// `version`, with `value_hashes` in the same order: what
    /// [`Self::encode_into`] makes of those states.
    pub(super) fn encode_whole_into(
        &mut self,
        conn: &Connection,
        names: &[u64],
        version: Version,
        value_hashes: &[u64],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        debug_assert_eq!(names.len(), value_hashes.len());
        if names.is_empty() {
            return Ok(());
        }
        let layout = self.id_of(conn, names.iter().copied())?;
        put_one_version(out, layout, version, value_hashes.iter().copied());
        Ok(())
    }

    /// The column states encoded as `bytes`.
    pub(super) fn decode(&mut self, conn: &Connection, bytes: &[u8]) -> Result<Vec<ColState>> {
        let Some((&form, rest)) = bytes.split_first() else {
            return Ok(Vec::new());
        };
        let (layout, mut rest) = take_leb128(rest).ok_or_else(|| damaged("a row's column layout id is cut short"))?;
        let names = self.names(conn, layout as i64)?;
        let expected = match form {
            ONE_VERSION => 12 + names.len() * 8,
            PER_COLUMN => names.len() * 20,
            _ => return Err(damaged(format!("unknown column encoding {form}"))),
        };
        if rest.len() != expected {
            return Err(damaged(format!("a row's column states take {} bytes, not {expected}", rest.len())));
        }
        let shared = if form == ONE_VERSION { Some(take_version(&mut rest)) } else { None };
        Ok(names
            .iter()
            .map(|&name_hash| {
                let value_hash = take_u64(&mut rest);
                let version = shared.unwrap_or_else(|| take_version(&mut rest));
                ColState { name_hash, value_hash, version }
            })
            .collect())
    }
}

/// Column states as state format 2 kept them, read once to move a state
/// to format 3: each column's name hash, value hash, clock and peer, or one
/// version for all of them after the marker byte 1 (an odd length, which
/// the per-column form's multiples of 28 never have).
pub(super) fn decode_format_2(bytes: &[u8]) -> Vec<ColState> {
    const COL_BYTES: usize = 28;
    let mut rest = bytes;
    if !bytes.len().is_multiple_of(COL_BYTES) && bytes.len() >= 13 && bytes[0] == 1 {
        rest = &bytes[1..];
        let version = take_version(&mut rest);
        return rest
            .chunks_exact(16)
            .map(|mut c| ColState { name_hash: take_u64(&mut c), value_hash: take_u64(&mut c), version })
            .collect();
    }
    rest.chunks_exact(COL_BYTES)
        .map(|mut c| ColState {
            name_hash: take_u64(&mut c),
            value_hash: take_u64(&mut c),
            version: take_version(&mut c),
        })
        .collect()
}

fn damaged(what: impl Into<String>) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Blob,
        format!("the state is damaged: {}", what.into()).into(),
    )
}

fn put_one_version(out: &mut Vec<u8>, layout: i64, version: Version, value_hashes: impl ExactSizeIterator<Item = u64>) {
    out.reserve(1 + 10 + 12 + value_hashes.len() * 8);
    out.push(ONE_VERSION);
    put_leb128(out, layout as u64);
    put_version(out, version);
    for h in value_hashes {
        out.extend_from_slice(&h.to_le_bytes());
    }
}

fn put_version(out: &mut Vec<u8>, v: Version) {
    out.extend_from_slice(&v.clock.to_le_bytes());
    out.extend_from_slice(&v.peer.to_le_bytes());
}

/// Reads a version; the caller has checked the length.
fn take_version(bytes: &mut &[u8]) -> Version {
    let clock = take_u64(bytes);
    let (peer, rest) = bytes.split_at(4);
    *bytes = rest;
    Version { clock, peer: u32::from_le_bytes(peer.try_into().expect("4 bytes")) }
}

fn take_u64(bytes: &mut &[u8]) -> u64 {
    let (n, rest) = bytes.split_at(8);
    *bytes = rest;
    u64::from_le_bytes(n.try_into().expect("8 bytes"))
}

fn put_leb128(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn take_leb128(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut n = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, &bytes[i + 1..]));
        }
    }
    None
}
