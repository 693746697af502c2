//! Hybrid logical clock: versions that follow wall time but never go
//! backwards and always move past every version this peer has seen.
//!
//! A value is `milliseconds since the Unix epoch << 16 | counter`. A version
//! is a clock value plus the peer id; versions order by (clock, peer id), so
//! every peer picks the same winner between two versions.

use std::time::{SystemTime, UNIX_EPOCH};

const LOGICAL_BITS: u32 = 16;

/// The clock of one database on this peer. Persisted in the state so it never
/// goes back across restarts.
#[derive(Debug, Clone)]
pub struct Hlc {
    last: u64,
}

impl Hlc {
    pub fn new(last: u64) -> Hlc {
        Hlc { last }
    }

    /// The last value handed out or observed.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// A fresh value, greater than every value seen so far.
    pub fn tick(&mut self) -> u64 {
        let physical = wall_ms() << LOGICAL_BITS;
        self.last = physical.max(self.last + 1);
        self.last
    }

    /// Moves the clock past a value made by another peer, so that anything
    /// this peer writes afterwards is newer than what it has applied.
    pub fn observe(&mut self, remote: u64) {
        self.last = self.last.max(remote);
    }
}

/// This machine's wall clock in Unix milliseconds.
///
/// `SYNCD_CLOCK_SKEW_MS` shifts it, for testing peers whose clocks disagree
/// on one machine (the reliability tests run peers an hour apart).
pub fn wall_ms() -> u64 {
    static SKEW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let skew =
        *SKEW.get_or_init(|| std::env::var("SYNCD_CLOCK_SKEW_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(0));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    (now + skew).max(0) as u64
}

/// The wall-clock milliseconds inside a clock value.
pub fn physical_ms(value: u64) -> u64 {
    value >> LOGICAL_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_strictly_increase_even_when_the_wall_clock_is_behind() {
        let mut c = Hlc::new((wall_ms() + 3_600_000) << LOGICAL_BITS);
        let a = c.tick();
        let b = c.tick();
        assert!(b > a);
    }

    #[test]
    fn observing_a_future_value_moves_past_it() {
        let mut c = Hlc::new(0);
        let remote = (wall_ms() + 60_000) << LOGICAL_BITS;
        c.observe(remote);
        assert!(c.tick() > remote);
    }
}
