//! Running models: plan, build, audit, publish — one model at a time, in DAG order.
//!
//! [`RunBuilder`] follows delta-rs' operation builders: `with_*` setters, a [`RunBuilder::plan`]
//! step that only reads, and [`RunBuilder::execute`] returning a [`RunReport`] with metrics. Each
//! model gets a fresh session in which every table is pinned at its current version (so upstream
//! models built earlier in the run are seen), is planned against the recorded state, built into
//! memory (one query per epoch for incremental models), audited, and published in one Delta commit.
//! A model that fails (SQL error, blocking audit) is not committed; models downstream of it are
//! skipped, independent ones still run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::tables::{TableId, Tables};

use super::audit::{self, AuditOutcome};
use super::cluster::Engine;
use super::commit::{self, Replace};
use super::compile;
use super::dag::Dag;
use super::plan::{EpochSelection, ModelPlan, Planner};
use super::project::{Model, Project};
use super::session;
use super::state::{self, InputRead, State};

/// The name the staged result is registered under while it is audited.
pub const STAGED: &str = "__tributary_staged";

/// What happened to one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    /// Built and committed.
    Built,
    /// Nothing to do.
    UpToDate,
    /// Failed; nothing was committed.
    Failed,
    /// Not run because a model it depends on failed.
    Skipped,
}

impl ModelStatus {
    /// `built`, `up_to_date`, `failed`, `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Built => "built",
            ModelStatus::UpToDate => "up_to_date",
            ModelStatus::Failed => "failed",
            ModelStatus::Skipped => "skipped",
        }
    }
}

/// One model's part of a run.
#[derive(Debug, Serialize)]
pub struct ModelReport {
    /// The model.
    pub model: String,
    /// Outcome.
    pub status: ModelStatus,
    /// Why it was (or was not) built.
    pub why: String,
    /// Epochs built (incremental models).
    pub epochs: Vec<i64>,
    /// Rows written.
    pub rows: i64,
    /// Delta versions of its inputs as read.
    pub versions_read: BTreeMap<String, i64>,
    /// Delta version written.
    pub version_written: Option<i64>,
    /// Audit results.
    pub audits: Vec<AuditOutcome>,
    /// Wall time.
    pub seconds: f64,
    /// The error, if it failed.
    pub error: Option<String>,
    /// The error itself (not serialized).
    #[serde(skip)]
    pub failure: Option<Error>,
}

/// What a run did.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// The `runs` row of the ops catalog.
    pub run_id: i64,
    /// Per model, in build order.
    pub models: Vec<ModelReport>,
}

impl RunReport {
    /// Whether any model failed.
    pub fn failed(&self) -> bool {
        self.models.iter().any(|m| m.status == ModelStatus::Failed)
    }

    /// The report of `model`.
    pub fn model(&self, model: &str) -> Option<&ModelReport> {
        self.models.iter().find(|m| m.model == model)
    }
}

/// Progress events for a progress display.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// A model starts building.
    Started {
        /// The model.
        model: String,
        /// Why, from its plan.
        why: String,
        /// Epochs to build (empty for tables).
        epochs: Vec<i64>,
    },
    /// One epoch of an incremental model was computed.
    EpochBuilt {
        /// The model.
        model: String,
        /// The epoch.
        epoch: i64,
        /// Rows it produced.
        rows: usize,
    },
    /// A model finished (any status).
    Finished {
        /// The model.
        model: String,
        /// Its status.
        status: ModelStatus,
        /// Wall time.
        seconds: f64,
    },
}

/// Callback receiving [`RunEvent`]s.
pub type RunProgressFn = Arc<dyn Fn(RunEvent) + Send + Sync>;

/// Builds and runs `tributary sql run`.
pub struct RunBuilder {
    project: Arc<Project>,
    config: Arc<Config>,
    tables: Tables,
    catalog: Arc<Catalog>,
    select: Vec<String>,
    epochs: EpochSelection,
    full_refresh: bool,
    progress: Option<RunProgressFn>,
    engine: Engine,
}

impl RunBuilder {
    /// A run of every model of `project`.
    pub fn new(project: Arc<Project>, config: Arc<Config>, tables: Tables, catalog: Arc<Catalog>) -> Self {
        RunBuilder {
            project,
            config,
            tables,
            catalog,
            select: vec![],
            epochs: EpochSelection::Pending,
            full_refresh: false,
            progress: None,
            engine: Engine::Local,
        }
    }

    /// Only these models (`layer.name` or `name`; a trailing `+` adds everything downstream).
    pub fn with_models(mut self, models: Vec<String>) -> Self {
        self.select = models;
        self
    }

    /// Which epochs of incremental models to build.
    pub fn with_epochs(mut self, epochs: EpochSelection) -> Self {
        self.epochs = epochs;
        self
    }

    /// Rebuild everything selected from scratch.
    pub fn with_full_refresh(mut self, full_refresh: bool) -> Self {
        self.full_refresh = full_refresh;
        self
    }

    /// Where the models' queries run (default: in this process).
    pub fn with_engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// Receive progress events.
    pub fn with_progress(mut self, progress: RunProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }

    fn emit(&self, e: RunEvent) {
        if let Some(p) = &self.progress {
            p(e);
        }
    }

    /// The selected models, in build order.
    pub fn selected(&self) -> Result<Vec<TableId>> {
        let dag = Dag::build(&self.project)?;
        if self.select.is_empty() {
            return Ok(dag.order);
        }
        let (mut plain, mut plus) = (BTreeSet::new(), BTreeSet::new());
        for s in &self.select {
            let (name, down) = match s.strip_suffix('+') {
                Some(n) => (n, true),
                None => (s.as_str(), false),
            };
            let id = self.project.model(name)?.id.clone();
            if down { plus.insert(id) } else { plain.insert(id) };
        }
        let mut keep: BTreeSet<TableId> = dag.with_downstream(&plus).into_iter().collect();
        keep.extend(plain);
        Ok(dag.order.into_iter().filter(|id| keep.contains(id)).collect())
    }

    /// What a run would do, without building anything.
    pub async fn plan(&self) -> Result<Vec<ModelPlan>> {
        let state = State::open(self.catalog.clone())?;
        let (ctx, snapshot) = session::open(&self.tables, &self.config, &BTreeMap::new()).await?;
        let mut planner = Planner::new(&self.project, &state, &ctx, &snapshot);
        let mut plans = BTreeMap::new();
        let mut out = Vec::new();
        for id in self.selected()? {
            let model = self.model(&id)?;
            let p = planner.plan(model, &plans, &self.epochs, self.full_refresh).await?;
            plans.insert(id, p.clone());
            out.push(p);
        }
        Ok(out)
    }

    fn model(&self, id: &TableId) -> Result<&Model> {
        self.project.models.get(id).ok_or_else(|| Error::Internal(format!("model {id} vanished from the project")))
    }

    /// Run the selected models.
    pub async fn execute(self) -> Result<RunReport> {
        let order = self.selected()?;
        let state = State::open(self.catalog.clone())?;
        let args = serde_json::json!({
            "models": self.select, "epochs": self.epochs, "full_refresh": self.full_refresh,
        });
        let run_id = self.catalog.start_run("sql", &args)?;
        let mut reports = Vec::new();
        let mut plans: BTreeMap<TableId, ModelPlan> = BTreeMap::new();
        let mut broken: BTreeSet<TableId> = BTreeSet::new();
        let outcome = async {
            for id in &order {
                let model = self.model(id)?;
                let started = Instant::now();
                let mut report = ModelReport {
                    model: id.to_string(),
                    status: ModelStatus::UpToDate,
                    why: String::new(),
                    epochs: vec![],
                    rows: 0,
                    versions_read: BTreeMap::new(),
                    version_written: None,
                    audits: vec![],
                    seconds: 0.0,
                    error: None,
                    failure: None,
                };
                if let Some(dep) = model.deps().find(|d| broken.contains(*d)) {
                    report.status = ModelStatus::Skipped;
                    report.why = format!("upstream {dep} failed");
                    broken.insert(id.clone());
                } else {
                    match self.build_one(model, &state, &plans, run_id, &mut report).await {
                        Ok(plan) => {
                            plans.insert(id.clone(), plan);
                        }
                        Err(e) => {
                            report.status = ModelStatus::Failed;
                            report.error = Some(e.to_string());
                            report.failure = Some(e);
                            broken.insert(id.clone());
                        }
                    }
                }
                report.seconds = started.elapsed().as_secs_f64();
                self.emit(RunEvent::Finished { model: report.model.clone(), status: report.status, seconds: report.seconds });
                reports.push(report);
            }
            Ok::<(), Error>(())
        }
        .await;
        let summary = serde_json::json!({
            "models": reports.iter().map(|r| serde_json::json!({
                "model": r.model, "status": r.status, "epochs": r.epochs, "rows": r.rows,
                "version_written": r.version_written, "versions_read": r.versions_read,
            })).collect::<Vec<_>>(),
        });
        let failed: Vec<&str> = reports.iter().filter(|r| r.status == ModelStatus::Failed).map(|r| r.model.as_str()).collect();
        match (&outcome, failed.is_empty()) {
            (Ok(()), true) => self.catalog.finish_run(run_id, Ok(&summary))?,
            (Ok(()), false) => self.catalog.finish_run(run_id, Err(&format!("failed: {}", failed.join(", "))))?,
            (Err(e), _) => self.catalog.finish_run(run_id, Err(&e.to_string()))?,
        }
        outcome?;
        Ok(RunReport { run_id, models: reports })
    }

    /// Plan, build, audit and publish one model. Returns its plan (for downstream planning).
    async fn build_one(
        &self,
        model: &Model,
        state: &State,
        upstream: &BTreeMap<TableId, ModelPlan>,
        run_id: i64,
        report: &mut ModelReport,
    ) -> Result<ModelPlan> {
        let (ctx, snapshot) = session::open_for(&self.engine, &self.tables, &self.config, &BTreeMap::new()).await?;
        let mut planner = Planner::new(&self.project, state, &ctx, &snapshot);
        let plan = planner.plan(model, upstream, &self.epochs, self.full_refresh).await?;
        report.why = plan.why();
        for i in &model.inputs {
            if let Some(v) = snapshot.versions.get(&i.table) {
                report.versions_read.insert(i.table.to_string(), *v);
            }
        }
        if !plan.build {
            return Ok(plan);
        }
        self.emit(RunEvent::Started { model: model.id.to_string(), why: plan.why(), epochs: plan.epochs.clone() });

        // Build into memory.
        let mut staged: Vec<RecordBatch> = Vec::new();
        let mut schema: Option<SchemaRef> = None;
        let mut epoch_rows: BTreeMap<i64, i64> = BTreeMap::new();
        let mut epoch_inputs: BTreeMap<i64, Vec<InputRead>> = BTreeMap::new();
        let targets: Vec<Option<i64>> =
            if model.is_incremental() { plan.epochs.iter().map(|e| Some(*e)).collect() } else { vec![None] };
        for epoch in targets {
            let sql = compile::model_sql(&self.project, model, epoch)?;
            let (s, batches) = query_on(&self.engine, &ctx, &model.file, &sql).await?;
            let s = commit::storage_schema(&s);
            let mut rows = 0usize;
            for b in &batches {
                if let Some(e) = epoch {
                    check_epoch(model, b, e)?;
                }
                rows += b.num_rows();
                staged.push(commit::to_storage(b, &s)?);
            }
            if let Some(prev) = &schema
                && prev != &s
            {
                return Err(Error::Model {
                    file: model.file.clone(),
                    line: None,
                    message: format!("the result schema differs between epochs:\n{prev:?}\n{s:?}"),
                });
            }
            schema = Some(s);
            if let Some(e) = epoch {
                epoch_rows.insert(e, rows as i64);
                epoch_inputs.insert(e, planner.inputs_now(model, Some(e)).await?);
                self.emit(RunEvent::EpochBuilt { model: model.id.to_string(), epoch: e, rows });
            }
        }
        let schema = match schema {
            Some(s) => s,
            // An incremental model with no epoch to build from (inputs empty): plan it once to
            // learn its schema, so the table can still be created.
            None => {
                let sql = compile::model_sql(&self.project, model, Some(0))?;
                let df = ctx.sql(&sql).await.map_err(|e| compile::locate(&model.file, &sql, e))?;
                commit::storage_schema(df.schema().as_arrow())
            }
        };
        let total: i64 = staged.iter().map(|b| b.num_rows() as i64).sum();
        report.rows = total;
        report.epochs = plan.epochs.clone();

        // Audit the staged rows (write–audit–publish).
        let mem = MemTable::try_new(schema.clone(), vec![staged.clone()])?;
        ctx.register_table(STAGED, Arc::new(mem))?;
        report.audits = audit::run(&ctx, &self.project, model, STAGED).await?;
        ctx.deregister_table(STAGED)?;
        if let Some(f) = report.audits.iter().find(|a| a.blocking && !a.passed()) {
            return Err(Error::AuditFailed {
                model: model.id.to_string(),
                audit: f.audit.clone(),
                failing_rows: f.failing_rows,
                sample: f.sample.clone(),
            });
        }

        // Publish.
        let replace = if plan.full || !model.is_incremental() { Replace::All } else { Replace::Epochs(plan.epochs.clone()) };
        let table_inputs = if model.is_incremental() { vec![] } else { planner.inputs_now(model, None).await? };
        let record = serde_json::json!({
            "model": model.id.to_string(),
            "file": model.file,
            "sql_hash": model.sql_hash,
            "run_id": run_id,
            "epochs": plan.epochs,
            "full": plan.full,
            "rows": total,
            "inputs": if model.is_incremental() {
                serde_json::to_value(&epoch_inputs).unwrap_or_default()
            } else {
                serde_json::to_value(&table_inputs).unwrap_or_default()
            },
        });
        let version = commit::publish(&self.tables, model, schema, staged, &replace, record).await?;
        report.version_written = Some(version);
        report.status = ModelStatus::Built;
        let name = model.id.to_string();
        if model.is_incremental() {
            let builds = epoch_rows
                .iter()
                .map(|(e, rows)| {
                    let inputs = epoch_inputs.remove(e).unwrap_or_default();
                    (*e, state::build(&model.sql_hash, version, *rows, inputs, Some(run_id)))
                })
                .collect();
            state.record_epochs(&name, &builds, plan.full)?;
        } else {
            state.record_table(&name, &state::build(&model.sql_hash, version, total, table_inputs, Some(run_id)))?;
        }
        Ok(plan)
    }
}

/// Plan and run `sql`, mapping errors to `file`'s lines.
pub async fn query(ctx: &SessionContext, file: &str, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    query_on(&Engine::Local, ctx, file, sql).await
}

/// [`query`] executed by `engine`.
pub async fn query_on(engine: &Engine, ctx: &SessionContext, file: &str, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let df = ctx.sql(sql).await.map_err(|e| compile::locate(file, sql, e))?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = engine.collect(df).await.map_err(|e| compile::locate(file, sql, e))?;
    Ok((schema, batches))
}

fn check_epoch(model: &Model, b: &RecordBatch, epoch: i64) -> Result<()> {
    let Some(col) = b.column_by_name("epoch") else {
        return Err(Error::Model {
            file: model.file.clone(),
            line: None,
            message: "an incremental model must output an `epoch` column".into(),
        });
    };
    let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Int64)?;
    let col = col.as_primitive::<Int64Type>();
    if let Some(bad) = (0..col.len()).find(|&i| col.is_null(i) || col.value(i) != epoch) {
        let got = if col.is_null(bad) { "NULL".to_string() } else { col.value(bad).to_string() };
        return Err(Error::Model {
            file: model.file.clone(),
            line: None,
            message: format!(
                "building epoch {epoch}, the model returned a row of epoch {got}: restrict the output with `WHERE epoch = @epoch`"
            ),
        });
    }
    Ok(())
}
