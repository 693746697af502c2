//! Printing answers: short aligned tables for people, JSON for scripts.
//! The JSON is the `syncd_proto` types as serde writes them, so its shape
//! is the documented contract of those types and nothing is reshaped here.

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Prints rows as columns aligned under an upper-case header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let print = |cells: &mut dyn Iterator<Item = String>| {
        let line: Vec<String> = cells.zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", line.join("  ").trim_end());
    };
    print(&mut header.iter().map(|h| h.to_uppercase()));
    for row in rows {
        print(&mut row.iter().cloned());
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) {
    // Our own types and `serde_json::Value`s always serialize.
    println!("{}", serde_json::to_string_pretty(value).expect("protocol types serialize to JSON"));
}

/// The text, or "-" for none.
pub fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

/// An RFC 3339 time as "12 s ago" (or "in 3 s" for a clock ahead of
/// ours); anything unparsable is shown as it came.
pub fn ago(time: Option<&str>) -> String {
    let Some(text) = time else { return "-".into() };
    let Ok(then) = OffsetDateTime::parse(text, &Rfc3339) else { return text.to_string() };
    relative(OffsetDateTime::now_utc() - then)
}

fn relative(elapsed: time::Duration) -> String {
    let seconds = elapsed.whole_seconds();
    let span = match seconds.unsigned_abs() {
        0 => return "just now".into(),
        s @ 1..60 => format!("{s} s"),
        s @ 60..3_600 => format!("{} min", s / 60),
        s @ 3_600..86_400 => format!("{} h", s / 3_600),
        s => format!("{} d", s / 86_400),
    };
    if seconds > 0 { format!("{span} ago") } else { format!("in {span}") }
}

/// A byte count in the unit a person reads best.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// At most `max` characters, with "…" when cut; newlines flattened so a
/// value keeps to its table row.
pub fn clip(text: &str, max: usize) -> String {
    let flat = text.replace(['\n', '\r', '\t'], " ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// "yes" or "no".
pub fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_like_a_person_says_them() {
        assert_eq!(relative(time::Duration::ZERO), "just now");
        assert_eq!(relative(time::Duration::seconds(12)), "12 s ago");
        assert_eq!(relative(time::Duration::seconds(150)), "2 min ago");
        assert_eq!(relative(time::Duration::hours(5)), "5 h ago");
        assert_eq!(relative(time::Duration::days(3)), "3 d ago");
        assert_eq!(relative(time::Duration::seconds(-4)), "in 4 s");
        assert_eq!(ago(Some("not a time")), "not a time");
        assert_eq!(ago(None), "-");
    }

    #[test]
    fn sizes_and_clipping() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1_500), "1.5 kB");
        assert_eq!(size(12_345_678), "12.3 MB");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("a\nb", 10), "a b");
    }
}
