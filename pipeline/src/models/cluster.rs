//! Scale-out: the models' queries on a [Ballista](https://datafusion.apache.org/ballista/) cluster.
//!
//! A run plans every model where it always does (the client: one session, every table pinned at
//! a Delta version) and, with [`Engine::Cluster`], submits the *physical* plan to a Ballista
//! scheduler, which cuts it into stages at its exchanges and hands the tasks to executors; the
//! client collects the result and audits and publishes it as usual. Submitting the physical plan
//! (rather than the logical one) means the scheduler and executors never open a Delta log: each
//! table is registered as a [`SnapshotTable`], the exact Parquet files (with their partition
//! values) of the pinned Delta version, scanned by DataFusion's standard Parquet source, which
//! Ballista serializes natively. delta-rs' own scan node has no codec in delta-rs 1.1, so it
//! cannot cross the wire.
//!
//! Cluster members — [`serve_scheduler`], [`serve_executor`] — build their sessions with
//! Tributary's functions ([`super::udf`]: `minhash`, `lsh_clusters`, the quality features), so
//! plans that call them run remotely; executors reach the warehouse through the same object store
//! configuration as the client (`file://` on a shared filesystem, or `s3://`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::execution_plans::execute_physical_plan;
use ballista_core::extension::SessionConfigExt;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::serde::BallistaPhysicalExtensionCodec;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::TableParquetOptions;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::SessionState;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion_proto::protobuf::PhysicalPlanNode;
use deltalake::DeltaTable;
use object_store::path::Path;

use crate::error::{Error, Result};
use crate::storage::Warehouse;
use crate::tables::{TableId, Tables, register_provider};

/// Where a run's queries execute.
#[derive(Debug, Clone, Default)]
pub enum Engine {
    /// In this process, on DataFusion over the Delta tables (the default).
    #[default]
    Local,
    /// On the Ballista cluster whose scheduler listens at this URL (`http://host:port`).
    Cluster(String),
}

impl Engine {
    /// A cluster engine for `scheduler` (`host:port` or `http://host:port`).
    pub fn cluster(scheduler: &str) -> Engine {
        let s = scheduler.trim().trim_end_matches('/');
        Engine::Cluster(if s.contains("://") { s.to_string() } else { format!("http://{s}") })
    }

    /// Whether tables must be registered as plain Parquet snapshots ([`SnapshotTable`]).
    pub fn needs_snapshots(&self) -> bool {
        matches!(self, Engine::Cluster(_))
    }

    /// Execute `df` and collect its batches.
    pub async fn collect(&self, df: DataFrame) -> std::result::Result<Vec<RecordBatch>, DataFusionError> {
        let Engine::Cluster(url) = self else {
            return df.collect().await;
        };
        let (state, plan) = df.into_parts();
        let physical = state.create_physical_plan(&plan).await?;
        let config = state.config().clone();
        let ballista = config.ballista_config();
        let stream = execute_physical_plan::<PhysicalPlanNode>(
            url.clone(),
            &ballista,
            physical,
            &BallistaPhysicalExtensionCodec::default(),
            state.session_id().to_string(),
            config,
        )
        .await
        .map_err(|e| DataFusionError::External(format!("Ballista scheduler at {url}: {e}").into()))?;
        datafusion::physical_plan::common::collect(stream).await
    }
}

/// Settings for plans that run on a cluster. Dynamic filters (a join's build side narrowing its
/// probe-side scan while both run) are shared in-process state that cannot cross to another
/// executor, and the scheduler's join reordering refuses plans that already hold them.
pub fn configure(config: &mut SessionConfig) {
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.enable_dynamic_filter_pushdown = false;
    optimizer.enable_join_dynamic_filter_pushdown = false;
    optimizer.enable_topk_dynamic_filter_pushdown = false;
    optimizer.enable_aggregate_dynamic_filter_pushdown = false;
}

/// A Delta table at one version, as the Parquet files that make it up: what a cluster scans.
///
/// Scans are DataFusion's `DataSourceExec` over a `ParquetSource`, with each file's partition
/// values attached, so the plan serializes with Ballista's standard codec. Columns keep the Delta
/// table's order (partition columns where the table declares them).
#[derive(Debug)]
pub struct SnapshotTable {
    schema: SchemaRef,
    file_schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
    /// For each column of `schema`, its index in `file_schema ++ partition_fields`.
    scan_index: Vec<usize>,
    store_url: ObjectStoreUrl,
    files: Vec<PartitionedFile>,
}

impl SnapshotTable {
    /// The files of `table` (opened at the version to scan), which lives at `id` in `warehouse`.
    pub async fn try_new(warehouse: &Warehouse, id: &TableId, table: &DeltaTable) -> Result<SnapshotTable> {
        let name = id.to_string();
        let snapshot = table.snapshot().map_err(|e| Error::delta(&name, e))?;
        let config = snapshot.metadata().configuration();
        if config.get("delta.columnMapping.mode").is_some_and(|m| m != "none") {
            return Err(unsupported(&name, "uses Delta column mapping, which a cluster scan of its Parquet files cannot resolve"));
        }
        // The logical schema exactly as the local engine sees it.
        let schema = table.table_provider().await?.schema();
        let partition_columns = snapshot.metadata().partition_columns().to_vec();
        let (mut file_fields, mut partition_fields): (Vec<FieldRef>, Vec<FieldRef>) = (vec![], vec![]);
        for f in schema.fields() {
            if partition_columns.contains(f.name()) { partition_fields.push(f.clone()) } else { file_fields.push(f.clone()) }
        }
        let file_schema = Arc::new(Schema::new(file_fields));
        let scan_index = schema
            .fields()
            .iter()
            .map(|f| match partition_fields.iter().position(|p| p.name() == f.name()) {
                Some(p) => file_schema.fields().len() + p,
                // Every non-partition field of `schema` was put in `file_schema` just above.
                None => file_schema.index_of(f.name()).unwrap_or_default(),
            })
            .collect();

        let url = warehouse.url();
        let store_url = warehouse_store_url(warehouse)?;
        let table_prefix = format!("{}/{}", url.path().trim_matches('/'), id.key());
        let table_prefix = table_prefix.trim_start_matches('/');
        let mut files = Vec::new();
        for view in snapshot.log_data().iter() {
            if view.deletion_vector_descriptor().is_some() {
                return Err(unsupported(&name, "has deletion vectors, which a cluster scan of its Parquet files would ignore"));
            }
            let values = view.partition_values_map();
            let partition_values = partition_fields
                .iter()
                .map(|f| match values.get(f.name()).cloned().flatten() {
                    Some(v) => ScalarValue::try_from_string(v, f.data_type()),
                    None => ScalarValue::try_from(f.data_type()),
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let size = u64::try_from(view.size()).unwrap_or_default();
            let path = Path::from(format!("{table_prefix}/{}", view.path()));
            files.push(PartitionedFile::new(path.to_string(), size).with_partition_values(partition_values));
        }
        Ok(SnapshotTable { schema, file_schema, partition_fields, scan_index, store_url, files })
    }
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let table_schema = datafusion::datasource::table_schema::TableSchema::builder(self.file_schema.clone())
            .with_table_partition_cols(self.partition_fields.clone())
            .build();
        let options = TableParquetOptions { global: state.config().options().execution.parquet.clone(), ..Default::default() };
        let source = ParquetSource::new(table_schema).with_table_parquet_options(options);
        // Spread the files over the session's partitions: largest first, each to the lightest group.
        let parts = state.config().target_partitions().max(1).min(self.files.len().max(1));
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); parts];
        let mut sizes = vec![0u64; parts];
        let mut by_size: Vec<&PartitionedFile> = self.files.iter().collect();
        by_size.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
        for f in by_size {
            let i = (0..parts).min_by_key(|&i| sizes[i]).unwrap_or_default();
            sizes[i] += f.object_meta.size;
            groups[i].push(f.clone());
        }
        let indices: Vec<usize> = match projection {
            Some(p) => p.iter().map(|&i| self.scan_index[i]).collect(),
            None => self.scan_index.clone(),
        };
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_groups(groups.into_iter().filter(|g| !g.is_empty()).map(FileGroup::new).collect())
            .with_projection_indices(Some(indices))?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// The URL under which `warehouse`'s root store is registered with DataFusion
/// (`file://`, `s3://bucket`, `memory://name`).
pub fn warehouse_store_url(warehouse: &Warehouse) -> Result<ObjectStoreUrl> {
    let url = warehouse.url();
    Ok(ObjectStoreUrl::parse(format!("{}://{}", url.scheme(), url.host_str().unwrap_or("")))?)
}

/// Make `warehouse`'s store reachable from `ctx`'s scans.
pub fn register_warehouse_store(ctx: &SessionContext, warehouse: &Warehouse) -> Result<()> {
    let url = warehouse_store_url(warehouse)?;
    ctx.runtime_env().register_object_store(url.as_ref(), warehouse.root_store().clone());
    Ok(())
}

/// Register every table of `versions` in `ctx` at its version, as [`SnapshotTable`]s over
/// `tables`' warehouse (whose store is registered once for all of them).
pub async fn register_snapshots(ctx: &SessionContext, tables: &Tables, versions: &BTreeMap<TableId, i64>) -> Result<()> {
    let warehouse = tables.warehouse();
    register_warehouse_store(ctx, warehouse)?;
    for (id, version) in versions {
        if let Some(table) = tables.open_version(id, Some(*version)).await? {
            register_provider(ctx, id, Arc::new(SnapshotTable::try_new(warehouse, id, &table).await?))?;
        }
    }
    Ok(())
}

/// The session of a cluster member for a job with `config`: Ballista's settings and Tributary's
/// functions. (Executors read the warehouse through their runtime environment, not this state.)
fn member_state(config: SessionConfig) -> SessionState {
    let mut config = config.upgrade_for_ballista();
    configure(&mut config);
    let ctx = SessionContext::new_with_config(config);
    super::udf::register(&ctx);
    ctx.state()
}

/// Run a Ballista scheduler on `bind` until the process ends. Executors register with it; clients
/// submit to `http://<bind>`.
pub async fn serve_scheduler(bind: SocketAddr) -> Result<()> {
    let config = SchedulerConfig {
        bind_host: bind.ip().to_string(),
        bind_port: bind.port(),
        external_host: bind.ip().to_string(),
        scheduling_policy: TaskSchedulingPolicy::PullStaged,
        override_session_builder: Some(Arc::new(|c: SessionConfig| Ok::<_, DataFusionError>(member_state(c)))),
        override_config_producer: Some(Arc::new(SessionConfig::new_with_ballista)),
        ..SchedulerConfig::default()
    };
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(cluster_err)?;
    start_server(cluster, bind, Arc::new(config)).await.map_err(cluster_err)
}

/// How an executor joins a cluster.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler's address.
    pub scheduler: SocketAddr,
    /// Address to bind (its port serves shuffle data over Arrow Flight).
    pub bind: SocketAddr,
    /// Port of the executor's gRPC service.
    pub grpc_port: u16,
    /// Concurrent tasks (0 = the machine's cores).
    pub vcores: usize,
    /// Directory for shuffle files (a fresh temporary directory when `None`).
    pub work_dir: Option<std::path::PathBuf>,
}

/// Run a Ballista executor that pulls tasks from `opts.scheduler` until the process ends, reading
/// the warehouse's files through `warehouse`'s store.
pub async fn serve_executor(warehouse: Warehouse, opts: ExecutorOptions) -> Result<()> {
    let functions = BallistaFunctionRegistry::from(&member_state(SessionConfig::new_with_ballista()));
    let work_dir = match &opts.work_dir {
        Some(d) => d.clone(),
        None => tempfile_dir()?,
    };
    std::fs::create_dir_all(&work_dir)?;
    let runtime_dir = work_dir.clone();
    let store = warehouse.clone();
    let config = ExecutorProcessConfig {
        bind_host: opts.bind.ip().to_string(),
        external_host: Some(opts.bind.ip().to_string()),
        port: opts.bind.port(),
        grpc_port: opts.grpc_port,
        scheduler_host: opts.scheduler.ip().to_string(),
        scheduler_port: opts.scheduler.port(),
        scheduler_connect_timeout_seconds: 30,
        vcores: opts.vcores,
        task_scheduling_policy: TaskSchedulingPolicy::PullStaged,
        work_dir: Some(work_dir.to_string_lossy().into_owned()),
        print_thread_info: false,
        override_function_registry: Some(Arc::new(functions)),
        override_config_producer: Some(Arc::new(SessionConfig::new_with_ballista)),
        override_runtime_producer: Some(Arc::new(move |_: &SessionConfig| {
            let env = RuntimeEnvBuilder::new().with_temp_file_path(runtime_dir.clone()).build()?;
            let url = warehouse_store_url(&store).map_err(|e| DataFusionError::External(Box::new(e)))?;
            env.register_object_store(url.as_ref(), store.root_store().clone());
            Ok(Arc::new(env))
        })),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config)).await.map_err(cluster_err)
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("tributary-executor-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A table feature the cluster path cannot honour (the table itself is fine for the local engine).
fn unsupported(table: &str, why: &str) -> Error {
    Error::delta(table, deltalake::DeltaTableError::Generic(format!("not supported on a cluster: the table {why}")))
}

fn cluster_err(e: ballista_core::error::BallistaError) -> Error {
    Error::Internal(format!("Ballista: {e}"))
}

/// A free TCP port on 127.0.0.1 (for members started on loopback).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Wait until something accepts connections on `addr` (a member that was just spawned).
pub async fn wait_listening(addr: SocketAddr, timeout: std::time::Duration) -> Result<()> {
    let start = std::time::Instant::now();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(Error::Internal(format!("nothing listens on {addr} after {timeout:?}")));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
