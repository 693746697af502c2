//! Which tables the application's triggers write. A trigger fires when
//! syncd writes too, through syncd's own connection, and capture does not
//! look at a database that only syncd's connection wrote (`PRAGMA
//! data_version`): apply has capture run again when the tables it wrote
//! have triggers writing synced tables, so those rows go out in the same
//! cycle instead of after the application's next commit.
//!
//! The targets are read from the trigger's text: the table after `INSERT
//! INTO`, `REPLACE INTO`, `UPDATE` and `DELETE FROM` in its body.

use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};

/// Per table (lowercase), the tables (lowercase) its triggers write.
pub fn read(conn: &Connection) -> rusqlite::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stmt = conn.prepare("SELECT tbl_name, sql FROM sqlite_schema WHERE type = 'trigger'")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))?;
    for row in rows {
        let (table, sql) = row?;
        out.entry(table.to_lowercase()).or_default().extend(targets(sql.as_deref().unwrap_or("")));
    }
    Ok(out)
}

/// The tables a trigger's body writes, lowercase, without their schema.
pub fn targets(sql: &str) -> BTreeSet<String> {
    let tokens = tokens(sql);
    let word = |i: usize, w: &str| matches!(tokens.get(i), Some(Token::Word(t)) if t.eq_ignore_ascii_case(w));
    let mut out = BTreeSet::new();
    // The header names the trigger's own event (`AFTER INSERT ON t`).
    let Some(body) = (0..tokens.len()).find(|&i| word(i, "BEGIN")) else { return out };
    let mut i = body + 1;
    while i < tokens.len() {
        let after_or = |at: usize| if word(at, "OR") { at + 2 } else { at };
        let target = if word(i, "INSERT") && word(after_or(i + 1), "INTO") {
            Some(after_or(i + 1) + 1)
        } else if word(i, "REPLACE") && word(i + 1, "INTO") {
            Some(i + 2)
        } else if word(i, "UPDATE") && !word(i + 1, "SET") {
            // `DO UPDATE SET` of an upsert names no table.
            Some(after_or(i + 1))
        } else if word(i, "DELETE") && word(i + 1, "FROM") {
            Some(i + 2)
        } else {
            None
        };
        if let Some(at) = target {
            // `schema.table`: the table is the name after the dot.
            let at = if matches!(tokens.get(at + 1), Some(Token::Dot)) { at + 2 } else { at };
            if let Some(Token::Word(name) | Token::Quoted(name)) = tokens.get(at) {
                out.insert(name.to_lowercase());
            }
        }
        i += 1;
    }
    out
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Dot,
    Other,
}

/// SQL split into words, quoted names and dots; string literals and
/// comments are skipped.
fn tokens(sql: &str) -> Vec<Token> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let until = |from: usize, end: char| -> (String, usize) {
        let mut text = String::new();
        let mut j = from;
        while j < chars.len() {
            if chars[j] == end {
                // A doubled closing quote is the quote itself.
                if end != ']' && chars.get(j + 1) == Some(&end) {
                    text.push(end);
                    j += 2;
                    continue;
                }
                return (text, j + 1);
            }
            text.push(chars[j]);
            j += 1;
        }
        (text, j)
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if c == '\'' {
            i = until(i + 1, '\'').1;
            out.push(Token::Other);
        } else if let Some(end) = match c {
            '"' => Some('"'),
            '`' => Some('`'),
            '[' => Some(']'),
            _ => None,
        } {
            let (name, next) = until(i + 1, end);
            out.push(Token::Quoted(name));
            i = next;
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$') {
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect()));
        } else {
            out.push(if c == '.' { Token::Dot } else { Token::Other });
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_tables_a_trigger_body_writes_are_found_and_its_own_event_is_not() {
        let sql = "CREATE TRIGGER t AFTER INSERT ON items BEGIN
            INSERT INTO log(what) VALUES ('INSERT INTO decoy ' || new.name); -- DELETE FROM commented
            UPDATE OR IGNORE main.\"Counts\" SET n = n + 1;
            /* UPDATE hidden SET x = 1; */
            DELETE FROM [old things] WHERE id = new.id;
            REPLACE INTO `mirror` VALUES (new.id);
            INSERT OR REPLACE INTO cache SELECT 1 ON CONFLICT DO UPDATE SET n = 2;
        END";
        assert_eq!(targets(sql), set(&["cache", "counts", "log", "mirror", "old things"]));
    }

    #[test]
    fn a_trigger_that_writes_nothing_has_no_targets() {
        let sql = "CREATE TRIGGER no_empty BEFORE UPDATE OF name ON items WHEN new.name = '' \
                   BEGIN SELECT RAISE(ABORT, 'UPDATE items SET name'); END";
        assert!(targets(sql).is_empty());
    }

    #[test]
    fn triggers_are_read_per_table_from_the_schema() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE Items(id INTEGER PRIMARY KEY, name TEXT); CREATE TABLE log(what TEXT);
             CREATE TRIGGER a AFTER INSERT ON Items BEGIN INSERT INTO log VALUES (new.name); END;
             CREATE TRIGGER b AFTER DELETE ON Items BEGIN DELETE FROM log WHERE what = old.name; END;",
        )
        .unwrap();
        let read = read(&conn).unwrap();
        assert_eq!(read.get("items"), Some(&set(&["log"])));
        assert_eq!(read.len(), 1);
    }
}
