//! `syncctl restore SNAPSHOT [--at TIME] [--yes]`: replace the local
//! database with a snapshot, or with its state at a point in time. The
//! daemon keeps a copy of the database as it was before; it asks for
//! confirmation while other peers are active.

use super::{Context, Failure, print_done, send};
use syncd_proto::Request;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(clap::Args)]
pub struct Args {
    /// The snapshot id, from `syncctl list`
    snapshot: String,
    /// Restore the state at this time (RFC 3339, e.g. 2026-05-01T10:00:00Z):
    /// the snapshot before it plus the changes up to it
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    at: Option<String>,
    /// Go ahead without asking, even when other peers are active
    #[arg(long)]
    yes: bool,
}

/// Checks an RFC 3339 time and normalises it to UTC, as the protocol
/// carries times; a bad one is a usage error (exit code 2).
fn parse_time(text: &str) -> Result<String, String> {
    let time = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| format!("{text:?} is not an RFC 3339 time such as 2026-05-01T10:00:00Z"))?;
    time.to_offset(time::UtcOffset::UTC).format(&Rfc3339).map_err(|e| e.to_string())
}

pub fn run(ctx: &Context, args: Args) -> Result<(), Failure> {
    let response =
        send(ctx, args.yes, |yes| Request::Restore { snapshot: args.snapshot.clone(), at: args.at.clone(), yes })?;
    print_done(ctx, response)
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_are_checked_and_sent_in_utc() {
        assert_eq!(parse_time("2026-05-01T12:00:00+02:00").unwrap(), "2026-05-01T10:00:00Z");
        assert!(parse_time("yesterday").is_err());
    }
}
