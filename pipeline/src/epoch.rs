//! Epoch arithmetic: epoch N covers `[genesis + N·length, genesis + (N+1)·length)` in UTC.

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::error::Result;

/// The epoch containing instant `t` (negative before genesis).
pub fn epoch_of(config: &Config, t: DateTime<Utc>) -> Result<i64> {
    let genesis = config.epoch_genesis()?;
    let secs = (t - genesis).num_seconds();
    Ok(secs.div_euclid(config.epoch.length_secs as i64))
}

/// The current epoch.
pub fn current_epoch(config: &Config) -> Result<i64> {
    epoch_of(config, Utc::now())
}

/// The `[start, end)` window of `epoch`.
pub fn window(config: &Config, epoch: i64) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let genesis = config.epoch_genesis()?;
    let len = chrono::Duration::seconds(config.epoch.length_secs as i64);
    let start = genesis + len * (epoch as i32);
    Ok((start, start + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_since_genesis() {
        let c = Config::default();
        let t = DateTime::parse_from_rfc3339("2026-01-03T12:00:00Z").expect("valid").with_timezone(&Utc);
        assert_eq!(epoch_of(&c, t).expect("ok"), 2);
        let (s, e) = window(&c, 2).expect("ok");
        assert!(s <= t && t < e);
        let before = DateTime::parse_from_rfc3339("2025-12-31T23:00:00Z").expect("valid").with_timezone(&Utc);
        assert_eq!(epoch_of(&c, before).expect("ok"), -1);
    }
}
