//! Schedules: standard 5-field cron expressions (UTC) stored in the ops catalog.
//!
//! A schedule says when a job is due (`"0 1 * * *" epoch` = settle the epoch that just ended, every
//! day at 01:00 UTC). [`CronExpr`] parses the standard syntax — `*`, lists, ranges, steps, month and
//! weekday names, `@hourly`/`@daily`/`@weekly`/`@monthly` — and computes the next fire time. The
//! scheduler daemon (in the binary) polls [`due`] and records each firing, so catch-up is a choice:
//! off by default (a missed firing runs once, late), on request every missed firing runs.

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use rusqlite::params;

use crate::catalog::Catalog;
use crate::error::{Error, Result};

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    source: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    dom_star: bool,
    dow_star: bool,
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn parse_field(field: &str, min: u32, max: u32, names: &[&str], what: &str) -> Result<(u64, bool)> {
    let bad = |m: String| Error::Config(format!("cron {what} field `{field}`: {m}"));
    let value = |s: &str| -> Result<u32> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + if names.len() == 12 { 1 } else { 0 });
        }
        s.parse::<u32>().map_err(|_| bad(format!("`{s}` is not a number")))
    };
    let mut bits = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| bad(format!("bad step `{s}`")))?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(bad("step must be > 0".into()));
        }
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if part.contains('/') { max } else { v })
        };
        // Weekday 7 is Sunday too.
        let (lo, hi) = if what == "weekday" && lo == 7 && hi == 7 { (0, 0) } else { (lo, hi) };
        if lo < min || hi > max || lo > hi {
            return Err(bad(format!("{lo}-{hi} is outside {min}-{max}")));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << (if what == "weekday" && v == 7 { 0 } else { v });
            v += step;
        }
    }
    Ok((bits, field == "*"))
}

impl CronExpr {
    /// Parse a standard 5-field expression (minute hour day-of-month month day-of-week) or a macro.
    pub fn parse(expr: &str) -> Result<CronExpr> {
        let source = expr.trim().to_string();
        let expanded = match source.as_str() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [m, h, dom, mon, dow] = fields.as_slice() else {
            return Err(Error::Config(format!(
                "cron `{source}`: expected 5 fields (minute hour day-of-month month day-of-week), got {}",
                fields.len()
            )));
        };
        let (minutes, _) = parse_field(m, 0, 59, &[], "minute")?;
        let (hours, _) = parse_field(h, 0, 23, &[], "hour")?;
        let (days, dom_star) = parse_field(dom, 1, 31, &[], "day-of-month")?;
        let (months, _) = parse_field(mon, 1, 12, &MONTHS, "month")?;
        let (weekdays, dow_star) = parse_field(dow, 0, 7, &WEEKDAYS, "weekday")?;
        Ok(CronExpr {
            source,
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            dom_star,
            dow_star,
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn day_matches(&self, t: &DateTime<Utc>) -> bool {
        let dom = self.days & (1 << t.day()) != 0;
        let dow = self.weekdays & (1 << t.weekday().num_days_from_sunday()) != 0;
        // Vixie cron: if both fields are restricted, either may match.
        match (self.dom_star, self.dow_star) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// Whether the expression fires at minute `t` (seconds ignored).
    pub fn matches(&self, t: &DateTime<Utc>) -> bool {
        self.minutes & (1 << t.minute()) != 0
            && self.hours & (1 << t.hour()) != 0
            && self.months & (1 << t.month()) != 0
            && self.day_matches(t)
    }

    /// The first firing strictly after `after`, or `None` if none within 5 years (e.g. `0 0 31 2 *`).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = after.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let mut day = Utc.with_ymd_and_hms(start.year(), start.month(), start.day(), 0, 0, 0).single()?;
        let limit = start + Duration::days(366 * 5);
        while day < limit {
            if self.months & (1 << day.month()) != 0 && self.day_matches(&day) {
                for h in 0..24u32 {
                    if self.hours & (1 << h) == 0 {
                        continue;
                    }
                    for m in 0..60u32 {
                        if self.minutes & (1 << m) == 0 {
                            continue;
                        }
                        let t = day.with_hour(h)?.with_minute(m)?;
                        if t >= start {
                            return Some(t);
                        }
                    }
                }
            }
            day += Duration::days(1);
        }
        None
    }
}

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE IF NOT EXISTS schedules (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    cron        TEXT NOT NULL,
    job         TEXT NOT NULL,
    catch_up    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    last_fired  TEXT,
    enabled     INTEGER NOT NULL DEFAULT 1
);
"#];

/// A stored schedule.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Schedule {
    /// Id.
    pub id: i64,
    /// Cron expression.
    pub cron: String,
    /// Job name (`epoch`).
    pub job: String,
    /// Whether every missed firing runs (true) or only the latest (false).
    pub catch_up: bool,
    /// When it was added (RFC 3339).
    pub created_at: String,
    /// Last firing time that was handed to a job (RFC 3339).
    pub last_fired: Option<String>,
}

/// Jobs a schedule may name.
pub const JOBS: &[&str] = &["epoch"];

/// Create the schedule tables.
pub fn migrate(catalog: &Catalog) -> Result<()> {
    catalog.migrate("schedule", MIGRATIONS)
}

/// Add a schedule; validates the expression and job.
pub fn add(catalog: &Catalog, cron: &str, job: &str, catch_up: bool) -> Result<Schedule> {
    migrate(catalog)?;
    let expr = CronExpr::parse(cron)?;
    if !JOBS.contains(&job) {
        return Err(Error::Config(format!("unknown job `{job}` (known: {})", JOBS.join(", "))));
    }
    let now = crate::catalog::now();
    catalog.with_conn(|c| {
        c.execute(
            "INSERT INTO schedules(cron, job, catch_up, created_at, last_fired) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![expr.source(), job, catch_up, now],
        )?;
        Ok(())
    })?;
    list(catalog)?.pop().ok_or_else(|| Error::Internal("inserted schedule not found".into()))
}

/// Every enabled schedule.
pub fn list(catalog: &Catalog) -> Result<Vec<Schedule>> {
    migrate(catalog)?;
    catalog.with_conn(|c| {
        let mut stmt = c.prepare(
            "SELECT id, cron, job, catch_up, created_at, last_fired FROM schedules WHERE enabled = 1 ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Schedule {
                    id: r.get(0)?,
                    cron: r.get(1)?,
                    job: r.get(2)?,
                    catch_up: r.get(3)?,
                    created_at: r.get(4)?,
                    last_fired: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    })
}

/// Remove a schedule.
pub fn remove(catalog: &Catalog, id: i64) -> Result<bool> {
    migrate(catalog)?;
    catalog.with_conn(|c| Ok(c.execute("UPDATE schedules SET enabled = 0 WHERE id = ?1", [id])? > 0))
}

/// The firings of `schedule` that are due at `now`: with catch-up, every firing since the last one;
/// without, only the latest (a daemon that was down for a week runs once, not seven times).
pub fn due(schedule: &Schedule, now: DateTime<Utc>) -> Result<Vec<DateTime<Utc>>> {
    let expr = CronExpr::parse(&schedule.cron)?;
    let since = schedule.last_fired.as_deref().unwrap_or(&schedule.created_at);
    let mut t = DateTime::parse_from_rfc3339(since)
        .map_err(|e| Error::Internal(format!("schedule {} time `{since}`: {e}", schedule.id)))?
        .with_timezone(&Utc);
    let mut out = Vec::new();
    while let Some(next) = expr.next_after(t) {
        if next > now {
            break;
        }
        out.push(next);
        t = next;
        if out.len() > 10_000 {
            break;
        }
    }
    if !schedule.catch_up && out.len() > 1 {
        out.drain(..out.len() - 1);
    }
    Ok(out)
}

/// Record that `schedule` fired at `at` (only moves forward, so two daemons cannot rewind it).
/// Returns false if another scheduler already recorded this firing.
pub fn mark_fired(catalog: &Catalog, id: i64, at: DateTime<Utc>) -> Result<bool> {
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    catalog.with_conn(|c| {
        let changed = c.execute(
            "UPDATE schedules SET last_fired = ?2 WHERE id = ?1 AND (last_fired IS NULL OR last_fired < ?2)",
            params![id, at],
        )?;
        Ok(changed > 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("valid").with_timezone(&Utc)
    }

    #[test]
    fn next_fire_times() {
        let daily = CronExpr::parse("0 1 * * *").expect("parses");
        assert_eq!(daily.next_after(t("2026-03-01T00:30:00Z")), Some(t("2026-03-01T01:00:00Z")));
        assert_eq!(daily.next_after(t("2026-03-01T01:00:00Z")), Some(t("2026-03-02T01:00:00Z")));
        let every15 = CronExpr::parse("*/15 * * * *").expect("parses");
        assert_eq!(every15.next_after(t("2026-03-01T00:07:10Z")), Some(t("2026-03-01T00:15:00Z")));
        let weekdays = CronExpr::parse("30 9 * * mon-fri").expect("parses");
        // 2026-03-07 is a Saturday.
        assert_eq!(weekdays.next_after(t("2026-03-06T10:00:00Z")), Some(t("2026-03-09T09:30:00Z")));
        let feb29 = CronExpr::parse("0 0 29 feb *").expect("parses");
        assert_eq!(feb29.next_after(t("2026-03-01T00:00:00Z")), Some(t("2028-02-29T00:00:00Z")));
        assert_eq!(CronExpr::parse("0 0 31 2 *").expect("parses").next_after(t("2026-01-01T00:00:00Z")), None);
        assert_eq!(CronExpr::parse("@daily").expect("macro"), CronExpr { source: "@daily".into(), ..CronExpr::parse("0 0 * * *").expect("parses") });
        let sunday7 = CronExpr::parse("0 0 * * 7").expect("parses");
        assert_eq!(sunday7.next_after(t("2026-03-06T00:00:00Z")), Some(t("2026-03-08T00:00:00Z")));
    }

    #[test]
    fn bad_expressions_are_clear() {
        for (e, needle) in [("61 * * * *", "minute"), ("* * *", "5 fields"), ("* * * * mon-xyz", "weekday"), ("*/0 * * * *", "step")] {
            let err = CronExpr::parse(e).expect_err(e).to_string();
            assert!(err.contains(needle), "{e}: {err}");
        }
    }

    #[test]
    fn catch_up_or_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = Catalog::open(&dir.path().join("c.sqlite")).expect("catalog");
        let mut s = add(&cat, "0 * * * *", "epoch", false).expect("add");
        s.last_fired = Some("2026-03-01T00:00:00Z".into());
        let now = t("2026-03-01T05:30:00Z");
        assert_eq!(due(&s, now).expect("due"), vec![t("2026-03-01T05:00:00Z")]);
        s.catch_up = true;
        assert_eq!(due(&s, now).expect("due").len(), 5);
        let later = Utc::now() + Duration::hours(1);
        assert!(mark_fired(&cat, s.id, later).expect("mark"));
        assert!(!mark_fired(&cat, s.id, later).expect("mark again"), "a firing is recorded once");
        assert!(!mark_fired(&cat, s.id, later - Duration::minutes(5)).expect("rewind"), "last_fired never moves back");
        assert!(add(&cat, "0 * * * *", "nope", false).is_err());
    }
}
