//! A prepared statement that SQLite runs on its parameters where they are.
//!
//! rusqlite binds every text and blob as `SQLITE_TRANSIENT`: SQLite copies
//! it at the bind and frees the copy when the statement is reset. For the
//! rows of a catch-up, inserted tens of thousands at a time, that copy and
//! free were a tenth of the writing thread's time. This statement binds
//! them as `SQLITE_STATIC` instead, which is sound only while the values
//! outlive the step: [`BorrowingStatement::execute`] binds, steps, resets
//! and clears the bindings within one borrow of the values, so SQLite never
//! holds a pointer to them after it returns.

use rusqlite::Connection;
use rusqlite::ffi;
use rusqlite::types::ValueRef;
use std::ffi::{CStr, c_int};
use std::ptr::NonNull;

pub struct BorrowingStatement<'c> {
    stmt: NonNull<ffi::sqlite3_stmt>,
    /// The statement is finalized before the connection can close.
    conn: &'c Connection,
}

impl<'c> BorrowingStatement<'c> {
    pub fn prepare(conn: &'c Connection, sql: &str) -> rusqlite::Result<BorrowingStatement<'c>> {
        let db = Self::db(conn);
        let mut stmt = std::ptr::null_mut();
        let len = c_int::try_from(sql.len()).map_err(|_| {
            rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_TOOBIG), Some("statement too long".into()))
        })?;
        // SAFETY: `db` is the open connection `conn` borrows; `sql` is
        // valid for `len` bytes.
        let rc = unsafe { ffi::sqlite3_prepare_v3(db, sql.as_ptr().cast(), len, 0, &mut stmt, std::ptr::null_mut()) };
        if rc != ffi::SQLITE_OK {
            return Err(error(db, rc));
        }
        match NonNull::new(stmt) {
            Some(stmt) => Ok(BorrowingStatement { stmt, conn }),
            None => Err(rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_MISUSE),
                Some("no statement in the SQL given".into()),
            )),
        }
    }

    /// Runs the statement once with `params` bound in order from the
    /// first parameter; parameters beyond them are NULL.
    pub fn execute<'v>(&mut self, params: impl IntoIterator<Item = ValueRef<'v>>) -> rusqlite::Result<()> {
        let stmt = self.stmt.as_ptr();
        let bound = params.into_iter().enumerate().try_for_each(|(at, value)| {
            // SAFETY: `stmt` is a live statement; text and blob pointers
            // stay valid until the bindings are cleared below, before
            // `params`' borrow ends.
            let rc = unsafe { bind(stmt, at as c_int + 1, value) };
            if rc == ffi::SQLITE_OK { Ok(()) } else { Err(rc) }
        });
        // SAFETY: `stmt` is a live statement of this connection.
        let rc = match bound {
            Ok(()) => unsafe { ffi::sqlite3_step(stmt) },
            Err(rc) => rc,
        };
        let result = match rc {
            ffi::SQLITE_DONE | ffi::SQLITE_ROW => Ok(()),
            rc => Err(error(Self::db(self.conn), rc)),
        };
        // SAFETY: as above. After these SQLite holds no parameter pointer.
        unsafe {
            ffi::sqlite3_reset(stmt);
            ffi::sqlite3_clear_bindings(stmt);
        }
        result
    }

    fn db(conn: &Connection) -> *mut ffi::sqlite3 {
        // SAFETY: the handle is only used while `conn` is borrowed, and
        // never closed here.
        unsafe { conn.handle() }
    }
}

impl Drop for BorrowingStatement<'_> {
    fn drop(&mut self) {
        // SAFETY: the statement is live and finalized once.
        unsafe { ffi::sqlite3_finalize(self.stmt.as_ptr()) };
    }
}

/// Binds `value` to parameter `at` of `stmt`, text and blobs in place.
///
/// # Safety
/// `stmt` must be a live statement, and a text or blob must stay valid
/// until the statement's bindings are cleared or replaced.
unsafe fn bind(stmt: *mut ffi::sqlite3_stmt, at: c_int, value: ValueRef<'_>) -> c_int {
    // SAFETY: as the caller promises.
    unsafe {
        match value {
            ValueRef::Null => ffi::sqlite3_bind_null(stmt, at),
            ValueRef::Integer(i) => ffi::sqlite3_bind_int64(stmt, at, i),
            ValueRef::Real(f) => ffi::sqlite3_bind_double(stmt, at, f),
            ValueRef::Text(t) => ffi::sqlite3_bind_text64(
                stmt,
                at,
                t.as_ptr().cast(),
                t.len() as ffi::sqlite3_uint64,
                ffi::SQLITE_STATIC(),
                ffi::SQLITE_UTF8 as u8,
            ),
            ValueRef::Blob(b) => ffi::sqlite3_bind_blob64(
                stmt,
                at,
                b.as_ptr().cast(),
                b.len() as ffi::sqlite3_uint64,
                ffi::SQLITE_STATIC(),
            ),
        }
    }
}

/// The error SQLite reports for `rc` on `db`, as rusqlite reports it.
fn error(db: *mut ffi::sqlite3, rc: c_int) -> rusqlite::Error {
    // SAFETY: `db` is an open connection; the message is copied at once.
    let message = unsafe {
        let m = ffi::sqlite3_errmsg(db);
        (!m.is_null()).then(|| CStr::from_ptr(m).to_string_lossy().into_owned())
    };
    // The extended code: the statement's own result code is the primary one.
    let extended = unsafe { ffi::sqlite3_extended_errcode(db) };
    let code = if extended & 0xff == rc & 0xff { extended } else { rc };
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ErrorCode;

    #[test]
    fn values_are_written_as_bound_and_a_refused_row_is_a_constraint_error() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, a, b, c, d)").unwrap();
        let mut insert =
            BorrowingStatement::prepare(&conn, "INSERT INTO t VALUES (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)").unwrap();
        for round in 0..3i64 {
            let text = format!("text {round}");
            let blob = vec![round as u8; 3];
            let row = |id: i64| {
                [
                    ValueRef::Integer(id),
                    ValueRef::Text(text.as_bytes()),
                    ValueRef::Blob(&blob),
                    ValueRef::Real(0.5),
                    ValueRef::Null,
                ]
            };
            insert.execute(row(round * 2).into_iter().chain(row(round * 2 + 1))).unwrap();
        }
        type Row = (i64, String, Vec<u8>, f64, Option<i64>);
        let rows: Vec<Row> = conn
            .prepare("SELECT * FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 6);
        assert_eq!(rows[5], (5, "text 2".into(), vec![2, 2, 2], 0.5, None));

        // A taken key: nothing of the statement is written.
        let values = [1i64, 100]
            .map(|id| [ValueRef::Integer(id), ValueRef::Null, ValueRef::Null, ValueRef::Null, ValueRef::Null]);
        let err = insert.execute(values.into_iter().flatten()).unwrap_err();
        assert_eq!(err.sqlite_error_code(), Some(ErrorCode::ConstraintViolation), "{err}");
        assert!(err.to_string().contains("UNIQUE"), "{err}");
        let count: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(count, 6);
    }
}
