//! Epoch stages and their attempts, recorded in the ops catalog.
//!
//! `tributary epoch run N` runs ingest → models → train → attribute → rewards → settle. Each stage's
//! every attempt is a row here (start, end, status, error, the Delta versions it read and wrote, a
//! JSON output), so a finished stage is skipped on re-run, a failed one can be retried alone, and
//! `tributary status` / `tributary runs` can show what happened.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::catalog::{Catalog, now};
use crate::error::{Error, Result};

/// The stages of an epoch, in order.
pub const STAGES: [&str; 6] = ["ingest", "models", "train", "attribute", "rewards", "settle"];

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE IF NOT EXISTS stage_attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        INTEGER,
    epoch         INTEGER NOT NULL,
    stage         TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    duration_ms   INTEGER,
    error         TEXT,
    output        TEXT
);
CREATE INDEX IF NOT EXISTS stage_attempts_epoch ON stage_attempts(epoch, stage, attempt);
"#];

/// One attempt of one stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageAttempt {
    /// Row id.
    pub id: i64,
    /// The `runs` row that made it.
    pub run_id: Option<i64>,
    /// Epoch.
    pub epoch: i64,
    /// Stage name.
    pub stage: String,
    /// 1-based attempt number.
    pub attempt: i64,
    /// `running`, `succeeded`, `failed` (a `running` row whose process died stays `running` until retried).
    pub status: String,
    /// Start, RFC 3339.
    pub started_at: String,
    /// End, RFC 3339.
    pub finished_at: Option<String>,
    /// Duration.
    pub duration_ms: Option<i64>,
    /// Error chain, if failed.
    pub error: Option<String>,
    /// Stage output JSON (Delta versions read/written, counts, roots…).
    pub output: Option<serde_json::Value>,
}

/// Create the stage tables.
pub fn migrate(catalog: &Catalog) -> Result<()> {
    catalog.migrate("stages", MIGRATIONS)
}

/// Record the start of an attempt; returns its id.
pub fn begin(catalog: &Catalog, run_id: Option<i64>, epoch: i64, stage: &str) -> Result<i64> {
    if !STAGES.contains(&stage) {
        return Err(Error::Internal(format!("unknown stage `{stage}`")));
    }
    migrate(catalog)?;
    catalog.with_conn(|c| {
        let tx = c.transaction()?;
        let attempt: i64 = tx.query_row(
            "SELECT COALESCE(MAX(attempt), 0) + 1 FROM stage_attempts WHERE epoch = ?1 AND stage = ?2",
            params![epoch, stage],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO stage_attempts(run_id, epoch, stage, attempt, status, started_at) VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
            params![run_id, epoch, stage, attempt, now()],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    })
}

/// Record the end of an attempt.
pub fn finish(catalog: &Catalog, id: i64, outcome: std::result::Result<&serde_json::Value, &str>, duration_ms: i64) -> Result<()> {
    let (status, output, error) = match outcome {
        Ok(v) => ("succeeded", Some(v.to_string()), None),
        Err(e) => ("failed", None, Some(e.to_string())),
    };
    catalog.with_conn(|c| {
        c.execute(
            "UPDATE stage_attempts SET status = ?2, finished_at = ?3, duration_ms = ?4, output = ?5, error = ?6 WHERE id = ?1",
            params![id, status, now(), duration_ms, output, error],
        )?;
        Ok(())
    })
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StageAttempt> {
    let output: Option<String> = r.get(10)?;
    Ok(StageAttempt {
        id: r.get(0)?,
        run_id: r.get(1)?,
        epoch: r.get(2)?,
        stage: r.get(3)?,
        attempt: r.get(4)?,
        status: r.get(5)?,
        started_at: r.get(6)?,
        finished_at: r.get(7)?,
        duration_ms: r.get(8)?,
        error: r.get(9)?,
        output: output.and_then(|s| serde_json::from_str(&s).ok()),
    })
}

const COLS: &str = "id, run_id, epoch, stage, attempt, status, started_at, finished_at, duration_ms, error, output";

/// The latest attempt of each stage of `epoch`, in stage order.
pub fn latest(catalog: &Catalog, epoch: i64) -> Result<Vec<StageAttempt>> {
    migrate(catalog)?;
    catalog.with_conn(|c| {
        let mut out = Vec::new();
        for stage in STAGES {
            let a = c
                .query_row(
                    &format!("SELECT {COLS} FROM stage_attempts WHERE epoch = ?1 AND stage = ?2 ORDER BY attempt DESC LIMIT 1"),
                    params![epoch, stage],
                    row,
                )
                .optional()?;
            out.extend(a);
        }
        Ok(out)
    })
}

/// The successful attempt of `stage` in `epoch`, if any.
pub fn succeeded(catalog: &Catalog, epoch: i64, stage: &str) -> Result<Option<StageAttempt>> {
    migrate(catalog)?;
    catalog.with_conn(|c| {
        Ok(c.query_row(
            &format!(
                "SELECT {COLS} FROM stage_attempts WHERE epoch = ?1 AND stage = ?2 AND status = 'succeeded' ORDER BY attempt DESC LIMIT 1"
            ),
            params![epoch, stage],
            row,
        )
        .optional()?)
    })
}

/// Every attempt, newest first.
pub fn history(catalog: &Catalog, limit: usize) -> Result<Vec<StageAttempt>> {
    migrate(catalog)?;
    catalog.with_conn(|c| {
        let mut stmt = c.prepare(&format!("SELECT {COLS} FROM stage_attempts ORDER BY id DESC LIMIT ?1"))?;
        let rows = stmt.query_map([limit as i64], row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    })
}

/// The epochs that have any stage attempt, newest first.
pub fn epochs(catalog: &Catalog) -> Result<Vec<i64>> {
    migrate(catalog)?;
    catalog.with_conn(|c| {
        let mut stmt = c.prepare("SELECT DISTINCT epoch FROM stage_attempts ORDER BY epoch DESC")?;
        let rows = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<i64>>>()?;
        Ok(rows)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_numbered_and_latest_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = Catalog::open(&dir.path().join("c.sqlite")).expect("catalog");
        let a = begin(&cat, None, 5, "train").expect("begin");
        finish(&cat, a, Err("boom"), 10).expect("finish");
        assert!(succeeded(&cat, 5, "train").expect("query").is_none());
        let b = begin(&cat, None, 5, "train").expect("begin");
        finish(&cat, b, Ok(&serde_json::json!({"adapter": "v1"})), 20).expect("finish");
        let s = succeeded(&cat, 5, "train").expect("query").expect("present");
        assert_eq!((s.attempt, s.output.expect("output")["adapter"].as_str()), (2, Some("v1")));
        assert_eq!(latest(&cat, 5).expect("latest").len(), 1);
        assert!(begin(&cat, None, 5, "nope").is_err());
    }
}
