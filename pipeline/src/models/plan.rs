//! Deciding what to build and why: the plan step of a run, and all of `tributary sql plan`.
//!
//! A `table` model is rebuilt when it was never built, its table is gone, its SQL hash changed,
//! an input's Delta version (or the config tables' hash) changed, or an upstream model is rebuilt
//! in the same run. An incremental model is considered epoch by epoch: an epoch is built when it is
//! new (present in an input but never built), or when what it was built from changed — its SQL
//! hash, the number of rows of that epoch in a source, the version an upstream model wrote for that
//! epoch, the version of an input without epochs, or the config. Sources are append-only
//! (`bronze.contributions` is), so a changed row count is how late rows of an already built epoch
//! are noticed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::error::Result;
use crate::tables::TableId;

use super::parse::Materialized;
use super::project::{Model, Project};
use super::session::{CONFIG_SCHEMA, Snapshot};
use super::state::{Build, InputRead, State};

/// Which epochs of incremental models to consider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochSelection {
    /// Every epoch that is new or stale (the default).
    #[default]
    Pending,
    /// Rebuild exactly these epochs (`--epoch N`, repeatable).
    Only(Vec<i64>),
    /// Rebuild every epoch in `[from, to]` that has input rows (`backfill --from --to`).
    Range(i64, i64),
}

/// Why a model, or one epoch of it, is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// No build was ever recorded.
    NeverBuilt,
    /// A build was recorded but the table is gone.
    TableMissing,
    /// The model's SQL (or materialization) changed since the build.
    SqlChanged {
        /// Hash of the SQL the data was built from.
        was: String,
    },
    /// The epoch has input rows and was never built.
    NewEpoch,
    /// An input changed since the build.
    InputChanged {
        /// The input table.
        table: String,
        /// What changed.
        detail: String,
    },
    /// The config tables (thresholds) changed.
    ConfigChanged,
    /// An upstream model is rebuilt in this run.
    UpstreamRebuilt {
        /// The upstream model.
        model: String,
    },
    /// `--full-refresh`.
    FullRefresh,
    /// `--epoch` or `backfill`.
    Requested,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NeverBuilt => write!(f, "never built"),
            Reason::TableMissing => write!(f, "table missing"),
            Reason::SqlChanged { was } => write!(f, "SQL changed (was {})", &was[..was.len().min(12)]),
            Reason::NewEpoch => write!(f, "new epoch"),
            Reason::InputChanged { table, detail } => write!(f, "{table} changed ({detail})"),
            Reason::ConfigChanged => write!(f, "config changed"),
            Reason::UpstreamRebuilt { model } => write!(f, "upstream {model} rebuilt"),
            Reason::FullRefresh => write!(f, "full refresh"),
            Reason::Requested => write!(f, "requested"),
        }
    }
}

/// What a run will do with one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelPlan {
    /// The model.
    pub model: String,
    /// Its file.
    pub file: String,
    /// `table` or `incremental`.
    pub materialized: Materialized,
    /// Whether anything is built.
    pub build: bool,
    /// Whether the whole table is replaced (tables, first and full builds of incremental models).
    pub full: bool,
    /// Epochs to build (incremental models).
    pub epochs: Vec<i64>,
    /// Why, per epoch (`None` for the whole model).
    pub reasons: Vec<(Option<i64>, Reason)>,
    /// The model's current SQL hash.
    pub sql_hash: String,
}

impl ModelPlan {
    /// One line of reasons, e.g. `epoch 3: new epoch; epoch 4: new epoch`.
    pub fn why(&self) -> String {
        if !self.build {
            return "up to date".into();
        }
        let mut grouped: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut whole = Vec::new();
        for (e, r) in &self.reasons {
            match e {
                Some(e) => grouped.entry(r.to_string()).or_default().push(*e),
                None => whole.push(r.to_string()),
            }
        }
        for (r, es) in grouped {
            whole.push(format!("{r}: epoch{} {}", if es.len() > 1 { "s" } else { "" }, ranges(&es)));
        }
        whole.join("; ")
    }
}

/// `1, 2, 3, 5` → `1–3, 5`.
pub fn ranges(es: &[i64]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < es.len() {
        let mut j = i;
        while j + 1 < es.len() && es[j + 1] == es[j] + 1 {
            j += 1;
        }
        out.push(if j > i + 1 {
            format!("{}–{}", es[i], es[j])
        } else if j == i + 1 {
            format!("{}, {}", es[i], es[j])
        } else {
            es[i].to_string()
        });
        i = j + 1;
    }
    out.join(", ")
}

/// Plans models against one session's snapshot.
pub struct Planner<'a> {
    project: &'a Project,
    state: &'a State,
    ctx: &'a SessionContext,
    snapshot: &'a Snapshot,
    counts: HashMap<TableId, Option<BTreeMap<i64, i64>>>,
}

impl<'a> Planner<'a> {
    /// A planner over `ctx`, whose tables are at `snapshot`.
    pub fn new(project: &'a Project, state: &'a State, ctx: &'a SessionContext, snapshot: &'a Snapshot) -> Self {
        Planner { project, state, ctx, snapshot, counts: HashMap::new() }
    }

    /// Rows per epoch of `table`, or `None` if it has no `epoch` column or does not exist.
    pub async fn epoch_counts(&mut self, table: &TableId) -> Result<Option<BTreeMap<i64, i64>>> {
        if let Some(c) = self.counts.get(table) {
            return Ok(c.clone());
        }
        let counts = if self.snapshot.versions.contains_key(table) {
            let provider = self.ctx.table_provider(datafusion::common::TableReference::partial(table.layer.as_str(), table.name.as_str())).await?;
            let has_epoch = provider.schema().field_with_name("epoch").is_ok_and(|f| f.data_type().is_integer());
            if has_epoch {
                let sql = format!("SELECT CAST(epoch AS BIGINT), count(*) FROM {table} WHERE epoch IS NOT NULL GROUP BY 1");
                let mut m = BTreeMap::new();
                for b in self.ctx.sql(&sql).await?.collect().await? {
                    let (e, n) = (b.column(0).as_primitive::<Int64Type>(), b.column(1).as_primitive::<Int64Type>());
                    for i in 0..b.num_rows() {
                        m.insert(e.value(i), n.value(i));
                    }
                }
                Some(m)
            } else {
                None
            }
        } else {
            None
        };
        self.counts.insert(table.clone(), counts.clone());
        Ok(counts)
    }

    /// What the inputs of `model` look like now, for `epoch` (incremental) or the whole table.
    pub async fn inputs_now(&mut self, model: &Model, epoch: Option<i64>) -> Result<Vec<InputRead>> {
        let mut out = Vec::new();
        for i in &model.inputs {
            let version = self.snapshot.versions.get(&i.table).copied();
            let epoch_rows = match epoch {
                Some(e) => self.epoch_counts(&i.table).await?.map(|c| c.get(&e).copied().unwrap_or(0)),
                None => None,
            };
            out.push(InputRead { table: i.table.to_string(), version, epoch_rows, hash: None });
        }
        out.push(InputRead {
            table: format!("{CONFIG_SCHEMA}.datanets"),
            version: None,
            epoch_rows: None,
            hash: Some(self.snapshot.config_hash.clone()),
        });
        Ok(out)
    }

    /// Plan `model`, given the plans of models earlier in the run.
    pub async fn plan(
        &mut self,
        model: &Model,
        upstream: &BTreeMap<TableId, ModelPlan>,
        selection: &EpochSelection,
        full_refresh: bool,
    ) -> Result<ModelPlan> {
        let mut plan = ModelPlan {
            model: model.id.to_string(),
            file: model.file.clone(),
            materialized: model.header.materialized,
            build: false,
            full: false,
            epochs: vec![],
            reasons: vec![],
            sql_hash: model.sql_hash.clone(),
        };
        let exists = self.snapshot.versions.contains_key(&model.id);
        if !model.is_incremental() {
            let prev = self.state.table_build(&model.id.to_string())?;
            let mut why = Vec::new();
            if full_refresh {
                why.push(Reason::FullRefresh);
            }
            match &prev {
                None => why.push(Reason::NeverBuilt),
                Some(_) if !exists => why.push(Reason::TableMissing),
                Some(p) => {
                    if p.sql_hash != model.sql_hash {
                        why.push(Reason::SqlChanged { was: p.sql_hash.clone() });
                    }
                    let now = self.inputs_now(model, None).await?;
                    why.extend(self.changed_inputs(model, p, &now, None, upstream));
                }
            }
            plan.build = !why.is_empty();
            plan.full = plan.build;
            plan.reasons = why.into_iter().map(|r| (None, r)).collect();
            return Ok(plan);
        }

        // Incremental: which epochs exist upstream?
        let mut available: BTreeSet<i64> = BTreeSet::new();
        for i in &model.inputs {
            if let Some(c) = self.epoch_counts(&i.table).await? {
                available.extend(c.keys());
            }
            if let Some(p) = upstream.get(&i.table) {
                available.extend(&p.epochs);
            }
        }
        let builds = self.state.epoch_builds(&model.id.to_string())?;
        let sql_changed = builds.values().find(|b| b.sql_hash != model.sql_hash).map(|b| b.sql_hash.clone());
        let whole = match (full_refresh, exists, builds.is_empty(), &sql_changed) {
            (true, ..) => Some(Reason::FullRefresh),
            (false, false, true, _) => Some(Reason::NeverBuilt),
            (false, false, false, _) => Some(Reason::TableMissing),
            (false, true, _, Some(was)) if *selection == EpochSelection::Pending => Some(Reason::SqlChanged { was: was.clone() }),
            _ => None,
        };
        if let Some(r) = whole {
            // A whole-table build covers every epoch, whatever the selection asked for: the table
            // is replaced, so an epoch left out would be lost.
            plan.build = true;
            plan.full = true;
            plan.epochs = available.iter().copied().collect();
            plan.reasons.push((None, r));
            return Ok(plan);
        }
        let candidates: Vec<i64> = match *selection {
            EpochSelection::Pending => available.iter().copied().collect(),
            EpochSelection::Only(ref es) => es.iter().copied().collect::<BTreeSet<i64>>().into_iter().collect(),
            EpochSelection::Range(a, b) => available.range(a..=b).copied().collect(),
        };
        for e in candidates {
            if *selection != EpochSelection::Pending {
                plan.epochs.push(e);
                plan.reasons.push((Some(e), Reason::Requested));
                continue;
            }
            let Some(prev) = builds.get(&e) else {
                plan.epochs.push(e);
                plan.reasons.push((Some(e), Reason::NewEpoch));
                continue;
            };
            if prev.sql_hash != model.sql_hash {
                plan.epochs.push(e);
                plan.reasons.push((Some(e), Reason::SqlChanged { was: prev.sql_hash.clone() }));
                continue;
            }
            let now = self.inputs_now(model, Some(e)).await?;
            if let Some(r) = self.changed_inputs(model, prev, &now, Some(e), upstream).into_iter().next() {
                plan.epochs.push(e);
                plan.reasons.push((Some(e), r));
            }
        }
        plan.build = !plan.epochs.is_empty();
        Ok(plan)
    }

    /// Reasons why inputs differ from what `prev` read.
    fn changed_inputs(
        &self,
        model: &Model,
        prev: &Build,
        now: &[InputRead],
        epoch: Option<i64>,
        upstream: &BTreeMap<TableId, ModelPlan>,
    ) -> Vec<Reason> {
        let mut why = Vec::new();
        for cur in now {
            let id = TableId::parse(&cur.table);
            let up = id.as_ref().and_then(|id| upstream.get(id)).filter(|p| p.build);
            if let Some(up) = up {
                let hits_epoch = match epoch {
                    None => true,
                    Some(e) => up.full || up.epochs.contains(&e) || up.materialized == Materialized::Table,
                };
                if hits_epoch {
                    why.push(Reason::UpstreamRebuilt { model: up.model.clone() });
                    continue;
                }
            }
            let Some(old) = prev.inputs.iter().find(|i| i.table == cur.table) else {
                why.push(Reason::InputChanged { table: cur.table.clone(), detail: "new input".into() });
                continue;
            };
            if cur.hash.is_some() {
                if cur.hash != old.hash {
                    why.push(Reason::ConfigChanged);
                }
                continue;
            }
            let is_model = model.inputs.iter().any(|i| i.is_model && i.table.to_string() == cur.table);
            match (epoch, cur.epoch_rows) {
                (Some(e), Some(rows)) => {
                    if old.epoch_rows != Some(rows) {
                        why.push(Reason::InputChanged {
                            table: cur.table.clone(),
                            detail: format!("{} → {rows} rows in epoch {e}", old.epoch_rows.unwrap_or(0)),
                        });
                    } else if is_model {
                        // Same row count, but the upstream epoch may have been rewritten.
                        let rebuilt = id
                            .as_ref()
                            .and_then(|id| self.state.epoch_builds(&id.to_string()).ok())
                            .and_then(|b| b.get(&e).map(|b| b.version))
                            .is_some_and(|v| Some(v) > old.version);
                        if rebuilt {
                            why.push(Reason::InputChanged {
                                table: cur.table.clone(),
                                detail: format!("epoch {e} rebuilt after this build"),
                            });
                        }
                    }
                }
                _ => {
                    if cur.version != old.version {
                        why.push(Reason::InputChanged {
                            table: cur.table.clone(),
                            detail: format!(
                                "version {} → {}",
                                old.version.map(|v| v.to_string()).unwrap_or("none".into()),
                                cur.version.map(|v| v.to_string()).unwrap_or("none".into())
                            ),
                        });
                    }
                }
            }
        }
        why
    }

    /// The project being planned.
    pub fn project(&self) -> &Project {
        self.project
    }
}
