//! Estimates of what each task of a DAG will read, do and write, for placement — before it
//! runs: datasets from their files (Parquet metadata for rows), generated tables from their
//! scale factor, SQL from its DataFusion plan (which operators, and whether the GPU can run
//! it), dense stages from their shapes. Upstream outputs are estimated in topological order.
//! The numbers are estimates: row counts of filters and group-bys are guesses until the task
//! has run (then the stored sizes can replace them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use amdahl_dags::{
    Dag, DevicePreference, Generate, Location, RunContext, TaskKind, TpchTable, template,
};
use amdahl_placement::{Graph, OpKind, Pin, Place, StageWork};

use crate::schemas;
use crate::session::TableInput;
use crate::session::{query_only, register_input, session_config};

/// Rows a group-by is guessed to produce until the task has run.
const GROUPS_GUESS: f64 = 1000.0;
/// Share of rows a filter is guessed to keep.
const FILTER_GUESS: f64 = 0.5;

/// What a table is expected to hold.
#[derive(Clone, Debug)]
struct Table {
    rows: f64,
    bytes: f64,
    schema: SchemaRef,
}

/// A task of the run that has already written its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Produced {
    /// Its output folder (Parquet files).
    pub dir: PathBuf,
    /// Where it ran, if known.
    pub place: Option<Place>,
}

/// The placement graph of `dag` with its params: one stage per task, in the DAG's order.
pub async fn estimate(dag: &Dag, context: &RunContext) -> Result<Graph, String> {
    estimate_run(dag, context, &HashMap::new()).await
}

/// Like [`estimate`], during a run: the tasks in `produced` have run, so their outputs' real
/// row counts replace the guesses (and every estimate downstream uses them), and each is
/// fixed where it ran at no further cost.
pub async fn estimate_run(
    dag: &Dag,
    context: &RunContext,
    produced: &HashMap<String, Produced>,
) -> Result<Graph, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch folder: {e}"))?;
    let mut tables: HashMap<String, Table> = HashMap::new();
    // The datasets where this run reads them. A templated one whose data is not there (a
    // sample date's partition, when explaining) is unknown: the queries over it are planned
    // when they run.
    let mut inputs: HashMap<String, TableInput> = HashMap::new();
    let mut unread: HashSet<String> = HashSet::new();
    for dataset in dag.datasets.values() {
        let input = TableInput::for_run(dataset, context, &dag.source.base_dir);
        match input {
            Ok(input) => match dataset_table(&input).await {
                Ok(table) => {
                    tables.insert(dataset.name.clone(), table);
                    inputs.insert(dataset.name.clone(), input);
                }
                Err(_) if dataset.templated => {
                    unread.insert(dataset.name.clone());
                }
                Err(e) => return Err(e),
            },
            Err(_) if dataset.templated => {
                unread.insert(dataset.name.clone());
            }
            Err(e) => return Err(e),
        }
    }
    let index: HashMap<&str, usize> = dag
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut stages = Vec::with_capacity(dag.tasks.len());
    let mut edges = Vec::new();
    // Outputs whose columns only a run tells (a command's `produces_data` that has not run
    // yet), and the tasks over them: priced as work-free CPU stages until they can be planned.
    let mut at_run_time: HashSet<&str> = HashSet::new();
    for task in &dag.tasks {
        let pin = match task.device {
            // A query on Ballista runs on the cluster (priced as this CPU when the profile
            // has no cluster).
            _ if task.engine == amdahl_dags::Engine::Ballista => Pin::Cluster,
            DevicePreference::Cpu => Pin::Cpu,
            DevicePreference::Gpu => Pin::Gpu,
            DevicePreference::Auto => Pin::Free,
        };
        // Bytes read from storage: datasets (upstream outputs are priced on the edges).
        let visible: Vec<&str> = dag
            .datasets
            .keys()
            .map(String::as_str)
            .chain(task.needs.iter().map(String::as_str))
            .collect();
        // Bytes the task reads of each upstream output (SQL: the columns its scans keep).
        let mut reads: HashMap<String, f64> = task
            .needs
            .iter()
            .filter_map(|n| tables.get(n).map(|t| (n.clone(), t.bytes)))
            .collect();
        let unknown_input = task.needs.iter().any(|n| at_run_time.contains(n.as_str()));
        let (stage, output) = match &task.kind {
            _ if unknown_input && !produced.contains_key(&task.id) => {
                at_run_time.insert(&task.id);
                (
                    cpu_only(&task.id, task.kind.name(), pin, BTreeMap::new(), 0.0),
                    None,
                )
            }
            TaskKind::Shell(_) if task.shell_output => {
                let output = match produced.get(&task.id) {
                    Some(done) => Some(output_table(&done.dir).await?),
                    None => {
                        at_run_time.insert(&task.id);
                        None
                    }
                };
                (
                    cpu_only(&task.id, task.kind.name(), pin, BTreeMap::new(), 0.0),
                    output,
                )
            }
            TaskKind::Shell(_) | TaskKind::Empty | TaskKind::Wait(_) => (
                cpu_only(&task.id, task.kind.name(), pin, BTreeMap::new(), 0.0),
                None,
            ),
            TaskKind::Generate(Generate::Tpch {
                table,
                scale_factor,
            }) => {
                let sf = template::render(scale_factor, context)
                    .ok()
                    .and_then(|t| amdahl_dags::load::parse_scale_factor(&t).ok())
                    .unwrap_or(1.0);
                generated(&task.id, pin, tpch_rows(*table, sf), schemas::tpch(*table))
            }
            TaskKind::Generate(Generate::Vectors { rows, dim, .. }) => generated(
                &task.id,
                pin,
                *rows as f64,
                schemas::generated_schema(*dim as usize),
            ),
            TaskKind::Sql(located) => {
                let query = template::render(located, context).map_err(|e| e.message)?;
                match sql_stage(
                    task,
                    &query,
                    &visible,
                    &tables,
                    &inputs,
                    scratch.path(),
                    pin,
                )
                .await
                {
                    Ok((stage, output, read)) => {
                        reads = read;
                        (stage, output)
                    }
                    Err(e) if reads_unread(&e, &unread) => {
                        at_run_time.insert(&task.id);
                        (
                            cpu_only(&task.id, task.kind.name(), pin, BTreeMap::new(), 0.0),
                            None,
                        )
                    }
                    Err(e) => return Err(e),
                }
            }
            TaskKind::Knn(k) => {
                let (base, queries) = (
                    table(&tables, &k.base.name)?,
                    table(&tables, &k.queries.name)?,
                );
                let dim = vector_dim(&base.schema, &k.column) as f64;
                let rows = queries.rows * f64::from(k.k).min(base.rows);
                let schema = schemas::knn_schema();
                let bytes = rows * row_width(&schema);
                let mut stage = dense_stage(
                    &task.id,
                    pin,
                    storage_bytes(dag, &[&k.base.name, &k.queries.name], &tables),
                    base.bytes + queries.bytes,
                    2.0 * queries.rows * base.rows * dim,
                    bytes,
                );
                if k.k as usize > crate::kernel::MAX_GPU_K {
                    stage.gpu_support = Err(format!(
                        "k = {} (the GPU keeps at most {})",
                        k.k,
                        crate::kernel::MAX_GPU_K
                    ));
                }
                (
                    stage,
                    Some(Table {
                        rows,
                        bytes,
                        schema,
                    }),
                )
            }
            TaskKind::Matmul(m) => {
                let (left, right) = (
                    table(&tables, &m.left.name)?,
                    table(&tables, &m.right.name)?,
                );
                let dim = vector_dim(&left.schema, &m.column) as f64;
                let width = right.rows.max(1.0) as usize;
                let schema = schemas::vectors_schema("vector", width);
                let bytes = left.rows * row_width(&schema);
                (
                    dense_stage(
                        &task.id,
                        pin,
                        storage_bytes(dag, &[&m.left.name, &m.right.name], &tables),
                        left.bytes + right.bytes,
                        2.0 * left.rows * right.rows * dim,
                        bytes,
                    ),
                    Some(Table {
                        rows: left.rows,
                        bytes,
                        schema,
                    }),
                )
            }
            TaskKind::Score(s) => {
                let input = table(&tables, &s.input.name)?;
                let mlp =
                    crate::model::Mlp::load(&dag.source.base_dir.join(&s.model), s.activation)?;
                let per_row: f64 = mlp
                    .layers
                    .iter()
                    .map(|l| 2.0 * (l.inputs * l.outputs) as f64)
                    .sum();
                let schema = schemas::vectors_schema("score", mlp.outputs());
                let bytes = input.rows * row_width(&schema);
                (
                    dense_stage(
                        &task.id,
                        pin,
                        storage_bytes(dag, &[&s.input.name], &tables),
                        input.bytes,
                        input.rows * per_row,
                        bytes,
                    ),
                    Some(Table {
                        rows: input.rows,
                        bytes,
                        schema,
                    }),
                )
            }
        };
        let (stage, output) = match produced.get(&task.id) {
            Some(done) => done_stage(&task.id, done, stage, output),
            None => (stage, output),
        };
        for need in &task.needs {
            if dag.task(need).is_some_and(|t| t.produces_data())
                && let Some(bytes) = reads.get(need)
            {
                edges.push((index[need.as_str()], index[task.id.as_str()], *bytes as u64));
            }
        }
        if let Some(output) = output {
            tables.insert(task.id.clone(), output);
        }
        stages.push(stage);
    }
    Ok(Graph { stages, edges })
}

/// A task that has run: free where it ran, its output as big as it is.
fn done_stage(
    id: &str,
    done: &Produced,
    stage: StageWork,
    output: Option<Table>,
) -> (StageWork, Option<Table>) {
    let output = output.map(|mut table| {
        if let Some(rows) = parquet_rows(&done.dir) {
            table.rows = rows;
            table.bytes = rows * row_width(&table.schema);
        }
        table
    });
    let pin = match done.place {
        Some(Place::Cpu) => Pin::Cpu,
        Some(Place::Gpu) => Pin::Gpu,
        Some(Place::Cluster) => Pin::Cluster,
        None => stage.pin,
    };
    let stage = StageWork {
        id: id.to_string(),
        storage_bytes: 0,
        output_bytes: 0,
        touched_bytes: 0,
        work: BTreeMap::new(),
        gpu_support: Ok(()),
        cluster_support: Ok(()),
        device_bytes: 0,
        pin,
    };
    (stage, output)
}

/// A generator: CPU only, writing `rows` rows of `schema`.
fn generated(id: &str, pin: Pin, rows: f64, schema: SchemaRef) -> (StageWork, Option<Table>) {
    let bytes = rows * row_width(&schema);
    (
        cpu_only(
            id,
            "generate",
            pin,
            BTreeMap::from([(OpKind::Scan, rows)]),
            bytes,
        ),
        Some(Table {
            rows,
            bytes,
            schema,
        }),
    )
}

fn table<'a>(tables: &'a HashMap<String, Table>, name: &str) -> Result<&'a Table, String> {
    tables
        .get(name)
        .ok_or_else(|| format!("no estimate for table `{name}`"))
}

/// Bytes read from storage: the named tables that are datasets.
fn storage_bytes(dag: &Dag, names: &[&str], tables: &HashMap<String, Table>) -> f64 {
    names
        .iter()
        .filter(|n| dag.datasets.contains_key(**n))
        .filter_map(|n| tables.get(*n))
        .map(|t| t.bytes)
        .sum()
}

fn cpu_only(id: &str, kind: &str, pin: Pin, work: BTreeMap<OpKind, f64>, output: f64) -> StageWork {
    StageWork {
        id: id.to_string(),
        storage_bytes: 0,
        output_bytes: output as u64,
        touched_bytes: output as u64,
        work,
        gpu_support: Err(format!("{kind} stages run only on the CPU")),
        cluster_support: Err(format!("{kind} stages run only on a worker")),
        device_bytes: 0,
        pin,
    }
}

fn dense_stage(
    id: &str,
    pin: Pin,
    storage: f64,
    touched: f64,
    flops: f64,
    output: f64,
) -> StageWork {
    StageWork {
        id: id.to_string(),
        storage_bytes: storage as u64,
        output_bytes: output as u64,
        touched_bytes: (touched + output) as u64,
        work: BTreeMap::from([(OpKind::Gemm, flops)]),
        gpu_support: Ok(()),
        cluster_support: Err("dense stages run only on a worker".into()),
        device_bytes: (touched + output) as u64,
        pin,
    }
}

/// Whether a planning error is a query naming a dataset whose data is not there yet.
fn reads_unread(error: &str, unread: &HashSet<String>) -> bool {
    error.contains("not found")
        && unread.iter().any(|name| {
            error.contains(&format!("'{name}'")) || error.contains(&format!(".{name}'"))
        })
}

async fn sql_stage(
    task: &amdahl_dags::Task,
    query: &str,
    visible: &[&str],
    tables: &HashMap<String, Table>,
    inputs: &HashMap<String, TableInput>,
    scratch: &Path,
    pin: Pin,
) -> Result<(StageWork, Option<Table>, HashMap<String, f64>), String> {
    // Plan over stand-in Parquet files with the inputs' schemas, so the plan has the scans the
    // real run will have and the GPU translation sees them.
    let ctx = SessionContext::new_with_config(session_config(1));
    // Where each table's files are, to know which table a scan reads.
    let mut locations: Vec<(String, &str)> = Vec::new();
    for name in visible {
        let Some(t) = tables.get(*name) else {
            continue;
        };
        if let Some(input) = inputs.get(*name) {
            register_input(&ctx, input)
                .await
                .map_err(|e| format!("dataset `{name}`: {e}"))?;
            let location = match &input.location {
                Location::Local(path) => path.display().to_string(),
                // Scans name an object by its key, from the bucket's root.
                Location::Object(object) => crate::objects::store(object)
                    .map(|(_, _, key)| format!("/{key}"))
                    .map_err(|e| format!("dataset `{name}`: {e}"))?,
            };
            locations.push((location, name));
        } else {
            let file = scratch.join(format!("{name}.parquet"));
            let writer = std::fs::File::create(&file).map_err(|e| e.to_string())?;
            ArrowWriter::try_new(writer, t.schema.clone(), None)
                .and_then(|w| w.close().map(|_| ()))
                .map_err(|e| e.to_string())?;
            ctx.register_parquet(
                *name,
                &file.display().to_string(),
                ParquetReadOptions::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
            locations.push((file.display().to_string(), name));
        }
    }
    let frame = ctx
        .sql_with_options(query, query_only())
        .await
        .map_err(|e| format!("task `{}`: {}", task.id, e.find_root()))?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let plan = frame
        .create_physical_plan()
        .await
        .map_err(|e| format!("task `{}`: {}", task.id, e.find_root()))?;
    let mut names = Vec::new();
    collect_names(&plan, &mut names);
    // What the scans read: each table's rows, at the width of the columns the scan keeps.
    let (mut used_rows, mut used_bytes, mut storage) = (0.0, 0.0, 0.0);
    let mut read: HashMap<String, f64> = HashMap::new();
    let mut scans = Vec::new();
    collect_scans(&plan, &mut scans);
    for (file, width) in scans {
        let Some((_, name)) = locations
            .iter()
            .find(|(path, _)| file.starts_with(path.as_str()))
        else {
            continue;
        };
        let Some(t) = tables.get(*name) else {
            continue;
        };
        used_rows += t.rows;
        used_bytes += t.rows * width;
        *read.entry(name.to_string()).or_default() += t.rows * width;
        if inputs.contains_key(*name) {
            storage += t.rows * width;
        }
    }
    let has = |part: &str| names.iter().any(|n| n.contains(part));
    let mut work = BTreeMap::from([(OpKind::Scan, used_rows)]);
    if has("Join") {
        work.insert(OpKind::Join, used_rows);
    }
    if has("Aggregate") {
        work.insert(OpKind::Aggregate, used_rows);
    }
    let rows_out = if has("Aggregate") {
        GROUPS_GUESS.min(used_rows)
    } else {
        used_rows * FILTER_GUESS
    };
    if has("Sort") {
        work.insert(OpKind::Sort, rows_out);
    }
    let bytes_out = rows_out * row_width(&schema);
    let stage = StageWork {
        id: task.id.clone(),
        storage_bytes: storage as u64,
        output_bytes: bytes_out as u64,
        touched_bytes: used_bytes as u64,
        work,
        gpu_support: crate::kernel::translate(&plan)
            .map(|_| ())
            .map_err(|u| u.to_string()),
        // A split query runs its parts on this worker's devices.
        cluster_support: if task.shards > 1 {
            Err("a split task (shards:) runs its parts on the worker".into())
        } else {
            Ok(())
        },
        device_bytes: used_bytes as u64,
        pin,
    };
    Ok((
        stage,
        Some(Table {
            rows: rows_out,
            bytes: bytes_out,
            schema,
        }),
        read,
    ))
}

fn collect_names(plan: &Arc<dyn ExecutionPlan>, names: &mut Vec<String>) {
    names.push(plan.name().to_string());
    for child in plan.children() {
        collect_names(child, names);
    }
}

/// Every file scan of a plan: the first file it reads (absolute) and the width of a row of
/// the columns it keeps.
fn collect_scans(plan: &Arc<dyn ExecutionPlan>, scans: &mut Vec<(String, f64)>) {
    if let Some(source) = plan.downcast_ref::<DataSourceExec>()
        && let Some(config) = source.data_source().downcast_ref::<FileScanConfig>()
        && let Some(file) = config.file_groups.iter().flat_map(|g| g.iter()).next()
    {
        scans.push((
            format!("/{}", file.object_meta.location),
            row_width(&plan.schema()),
        ));
    }
    for child in plan.children() {
        collect_scans(child, scans);
    }
}

async fn dataset_table(dataset: &TableInput) -> Result<Table, String> {
    let bytes = match &dataset.location {
        Location::Local(path) => file_bytes(path),
        Location::Object(object) => crate::objects::size(object)
            .await
            .map_err(|e| format!("dataset `{}`: {e}", dataset.name))?,
    } as f64;
    let ctx = SessionContext::new_with_config(session_config(1));
    register_input(&ctx, dataset)
        .await
        .map_err(|e| format!("dataset `{}`: {e}", dataset.name))?;
    let schema: SchemaRef = Arc::new(
        ctx.table(dataset.name.as_str())
            .await
            .map_err(|e| e.to_string())?
            .schema()
            .as_arrow()
            .clone(),
    );
    let rows = dataset
        .location
        .local()
        .and_then(parquet_rows)
        .unwrap_or_else(|| bytes / row_width(&schema).max(1.0));
    Ok(Table {
        rows,
        bytes: rows * row_width(&schema),
        schema,
    })
}

/// A published task output (a folder of Parquet files) as it is.
async fn output_table(dir: &Path) -> Result<Table, String> {
    let ctx = SessionContext::new_with_config(session_config(1));
    register_input(
        &ctx,
        &TableInput::local("output", dir, amdahl_dags::DatasetFormat::Parquet),
    )
    .await
    .map_err(|e| format!("output {}: {e}", dir.display()))?;
    let schema: SchemaRef = Arc::new(
        ctx.table("output")
            .await
            .map_err(|e| e.to_string())?
            .schema()
            .as_arrow()
            .clone(),
    );
    let rows = parquet_rows(dir).unwrap_or(0.0);
    Ok(Table {
        rows,
        bytes: rows * row_width(&schema),
        schema,
    })
}

fn file_bytes(path: &Path) -> u64 {
    if path.is_dir() {
        dir_bytes(path)
    } else {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }
}

/// Rows of a Parquet file or folder (with its partition folders), from the files' metadata.
fn parquet_rows(path: &Path) -> Option<f64> {
    let files: Vec<std::path::PathBuf> = if path.is_dir() {
        data_files(path)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect()
    } else if path.extension().is_some_and(|x| x == "parquet") {
        vec![path.to_path_buf()]
    } else {
        return None;
    };
    let mut rows = 0i64;
    for file in files {
        let reader = SerializedFileReader::new(std::fs::File::open(file).ok()?).ok()?;
        rows += reader.metadata().file_metadata().num_rows();
    }
    Some(rows as f64)
}

/// Rows TPC-H's generator makes at `sf`.
fn tpch_rows(table: TpchTable, sf: f64) -> f64 {
    match table {
        TpchTable::Region => 5.0,
        TpchTable::Nation => 25.0,
        TpchTable::Supplier => 10_000.0 * sf,
        TpchTable::Customer => 150_000.0 * sf,
        TpchTable::Part => 200_000.0 * sf,
        TpchTable::PartSupp => 800_000.0 * sf,
        TpchTable::Orders => 1_500_000.0 * sf,
        TpchTable::LineItem => 6_001_215.0 * sf,
    }
}

/// Bytes a row takes in memory, by its columns' types (strings counted at 24).
fn row_width(schema: &Schema) -> f64 {
    schema
        .fields()
        .iter()
        .map(|f| type_width(f.data_type()))
        .sum::<f64>()
        .max(1.0)
}

fn type_width(data_type: &DataType) -> f64 {
    match data_type {
        DataType::Boolean | DataType::Int8 | DataType::UInt8 => 1.0,
        DataType::Int16 | DataType::UInt16 => 2.0,
        DataType::Int32 | DataType::UInt32 | DataType::Float32 | DataType::Date32 => 4.0,
        DataType::Decimal128(..) => 16.0,
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => 24.0,
        DataType::FixedSizeList(item, n) => type_width(item.data_type()) * f64::from(*n),
        _ => 8.0,
    }
}

/// The length of a vector column (from a fixed-size list type; 1 when unknown).
fn vector_dim(schema: &Schema, column: &str) -> usize {
    match schema
        .field_with_name(column)
        .map(|f| f.data_type().clone())
    {
        Ok(DataType::FixedSizeList(_, n)) => n.max(1) as usize,
        _ => 1,
    }
}

/// Bytes of a local file, or of the files in a folder (see [`dir_bytes`]).
pub fn path_bytes(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        _ => dir_bytes(path),
    }
}

/// Bytes of the files in a folder and in its partition folders (`key=value/`, at any depth:
/// a mapped task's instances write to `map=0/`, `map=1/`, …), which a query over the folder
/// reads too. Other subfolders are not counted.
pub fn dir_bytes(dir: &Path) -> u64 {
    data_files(dir)
        .iter()
        .filter_map(|file| std::fs::metadata(file).ok())
        .map(|m| m.len())
        .sum()
}

/// The files of a folder and of its partition folders, as [`dir_bytes`] counts them.
fn data_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_file() {
                files.push(entry.path());
            } else if kind.is_dir() && entry.file_name().to_string_lossy().contains('=') {
                folders.push(entry.path());
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folders_bytes_count_its_partition_folders_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, len: usize| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, vec![0u8; len]).unwrap();
        };
        write("part-0.parquet", 10);
        write("map=0/part-0.parquet", 100);
        write("map=1/region=eu/part-0.parquet", 1_000);
        write("scratch/part-0.parquet", 10_000);
        assert_eq!(dir_bytes(dir.path()), 1_110);
        assert_eq!(path_bytes(&dir.path().join("map=0")), 100);
        assert_eq!(dir_bytes(&dir.path().join("missing")), 0);
    }
}
