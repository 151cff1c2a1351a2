//! The ops catalog: operational state in SQLite (runs, stage attempts, schedules, settlements).
//!
//! Small transactions and locks belong here rather than in Delta: the catalog is a single SQLite
//! file beside the warehouse for the embedded default. Other crates add their own tables through
//! [`Catalog::migrate`], keyed by a component name, so each owns its schema.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};

/// A handle on the SQLite ops catalog.
pub struct Catalog {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("path", &self.path).finish()
    }
}

const CORE_MIGRATIONS: &[&str] = &[r#"
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    args        TEXT NOT NULL DEFAULT '{}',
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    status      TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    error       TEXT,
    summary     TEXT
);
CREATE INDEX IF NOT EXISTS runs_kind ON runs(kind, started_at);
"#];

impl Catalog {
    /// Open (creating if needed) the catalog at `path` and apply the core migrations.
    pub fn open(path: &Path) -> Result<Catalog> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS migrations (component TEXT PRIMARY KEY, version INTEGER NOT NULL);",
        )?;
        let catalog = Catalog { path: path.to_path_buf(), conn: Mutex::new(conn) };
        catalog.migrate("core", CORE_MIGRATIONS)?;
        Ok(catalog)
    }

    /// The catalog file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Apply `migrations[v..]` for `component`, where `v` is the number already applied.
    pub fn migrate(&self, component: &str, migrations: &[&str]) -> Result<()> {
        self.with_conn(|conn| {
            let tx = conn.transaction()?;
            let applied: i64 = tx
                .query_row("SELECT version FROM migrations WHERE component = ?1", [component], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            for (i, sql) in migrations.iter().enumerate().skip(applied.max(0) as usize) {
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO migrations(component, version) VALUES (?1, ?2)
                     ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                    params![component, (i + 1) as i64],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Run `f` with the connection (serialized within the process; SQLite serializes across processes).
    pub fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        // A poisoned mutex means a panic mid-call; SQLite's own transactions keep the file consistent.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    /// Record the start of a run; returns its id.
    pub fn start_run(&self, kind: &str, args: &serde_json::Value) -> Result<i64> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO runs(kind, args, started_at, status) VALUES (?1, ?2, ?3, 'running')",
                params![kind, args.to_string(), now()],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Record the end of a run.
    pub fn finish_run(&self, id: i64, outcome: std::result::Result<&serde_json::Value, &str>) -> Result<()> {
        let (status, summary, error) = match outcome {
            Ok(s) => ("succeeded", Some(s.to_string()), None),
            Err(e) => ("failed", None, Some(e.to_string())),
        };
        self.with_conn(|c| {
            c.execute(
                "UPDATE runs SET finished_at = ?2, status = ?3, summary = ?4, error = ?5 WHERE id = ?1",
                params![id, now(), status, summary, error],
            )?;
            Ok(())
        })
    }

    /// The most recent runs, newest first: (id, kind, started_at, finished_at, status, error).
    pub fn recent_runs(&self, limit: usize) -> Result<Vec<RunRow>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT id, kind, args, started_at, finished_at, status, error, summary
                 FROM runs ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt
                .query_map([limit as i64], |r| {
                    Ok(RunRow {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        args: r.get(2)?,
                        started_at: r.get(3)?,
                        finished_at: r.get(4)?,
                        status: r.get(5)?,
                        error: r.get(6)?,
                        summary: r.get(7)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Take the exclusive process lock `name` (a file lock beside the catalog, released by the OS
    /// when the process dies, so a SIGKILL never leaves it stale). Fails fast if another process holds it.
    pub fn try_lock(&self, name: &str) -> Result<ProcessLock> {
        let path = self.path.with_extension(format!("{name}.lock"));
        let file = File::options().create(true).truncate(false).read(true).write(true).open(&path)?;
        match file.try_lock() {
            Ok(()) => {
                let holder = format!("{}:{}", hostname(), std::process::id());
                // Best effort: the content is only for the error message of the next contender.
                let _ = std::fs::write(&path, format!("{holder} {}", now()));
                Ok(ProcessLock { _file: file, path })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let content = std::fs::read_to_string(&path).unwrap_or_default();
                let (holder, since) = content.split_once(' ').unwrap_or((content.as_str(), ""));
                Err(Error::Locked { name: name.into(), holder: holder.into(), since: since.into() })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }
}

/// A held process lock; dropping it releases the lock.
#[derive(Debug)]
pub struct ProcessLock {
    _file: File,
    path: PathBuf,
}

impl ProcessLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One row of the `runs` table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRow {
    /// Run id.
    pub id: i64,
    /// What ran (`ingest`, `sql`, `epoch`, …).
    pub kind: String,
    /// Its arguments as JSON.
    pub args: String,
    /// Start time, RFC 3339.
    pub started_at: String,
    /// End time, if finished.
    pub finished_at: Option<String>,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    /// The error, if failed.
    pub error: Option<String>,
    /// The summary JSON, if succeeded.
    pub summary: Option<String>,
}

/// Now, RFC 3339 UTC with microseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_locks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = Catalog::open(&dir.path().join("c.sqlite")).expect("open");
        let id = cat.start_run("ingest", &serde_json::json!({"datanet": "x"})).expect("start");
        cat.finish_run(id, Ok(&serde_json::json!({"rows": 3}))).expect("finish");
        let runs = cat.recent_runs(5).expect("runs");
        assert_eq!(runs[0].status, "succeeded");
        let lock = cat.try_lock("ingest").expect("first lock");
        let second = Catalog::open(&dir.path().join("c.sqlite")).expect("open again");
        assert!(matches!(second.try_lock("ingest"), Err(Error::Locked { .. })));
        drop(lock);
        assert!(second.try_lock("ingest").is_ok());
    }
}
