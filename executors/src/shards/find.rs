//! Where a plan splits: the input to cut (the largest one read by a single scan), the lowest
//! node above its scan that needs all of its rows at once, and whether the nodes between
//! work row by row, so that the parts' outputs together give that node what the whole input
//! would.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::common::{JoinSide, JoinType};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
#[allow(deprecated)] // Still in plans DataFusion 55 makes.
use datafusion::physical_plan::coalesce_batches::CoalesceBatchesExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec,
};
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;

use amdahl_dags::DatasetFormat;

use super::{Plan, Split};
use crate::stage::TableInput;

/// Finds where `plan` splits, trying the inputs from the largest down; the error says why
/// none can be split.
pub fn find(plan: &Plan, inputs: &[TableInput]) -> Result<Split, String> {
    let mut scans = Vec::new();
    scan_paths(plan, &mut vec![plan.clone()], &mut scans);
    let mut candidates: Vec<(&TableInput, u64, PathBuf)> = inputs
        .iter()
        .filter_map(|input| {
            // Parts are cut from local files (object storage inputs are read whole).
            let path = input.path()?;
            let root = std::fs::canonicalize(path).ok()?;
            Some((input, crate::storage::path_bytes(path), root))
        })
        .collect();
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.name.cmp(&b.0.name)));
    let mut reasons = Vec::new();
    for (input, _, root) in candidates {
        let reading: Vec<&Vec<Plan>> = scans
            .iter()
            .filter(|path| scan_reads(path.last().expect("a path ends at a scan"), &root))
            .collect();
        let path = match reading.as_slice() {
            [] => continue,
            [path] => *path,
            _ => {
                reasons.push(format!("`{}` is read more than once", input.name));
                continue;
            }
        };
        match split_at(path, &input.name) {
            Ok((part, combines, sorted_streams)) => {
                let scan = path.last().expect("a path ends at a scan").clone();
                let (files, groups) = files_of(&scan, input.format)?;
                return Ok(Split {
                    table: input.name.clone(),
                    part,
                    scan,
                    combines,
                    sorted_streams,
                    files,
                    groups,
                });
            }
            Err(why) => reasons.push(why),
        }
    }
    if reasons.is_empty() {
        reasons.push("the plan reads no input file (it may be answered from statistics)".into());
    }
    Err(reasons.join("; "))
}

/// Every path from the root to a file scan.
fn scan_paths(node: &Plan, path: &mut Vec<Plan>, out: &mut Vec<Vec<Plan>>) {
    if file_scan(node).is_some() {
        out.push(path.clone());
    }
    for child in node.children() {
        path.push(child.clone());
        scan_paths(child, path, out);
        path.pop();
    }
}

pub(super) fn file_scan(node: &Plan) -> Option<&FileScanConfig> {
    node.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

fn file_path(file: &PartitionedFile) -> PathBuf {
    PathBuf::from(format!("/{}", file.object_meta.location))
}

/// Whether a scan reads files under `root` (a file or a folder, canonical).
fn scan_reads(scan: &Plan, root: &Path) -> bool {
    let Some(config) = file_scan(scan) else {
        return false;
    };
    config
        .file_groups
        .iter()
        .flat_map(|g| g.iter())
        .next()
        .is_some_and(|file| {
            let path = file_path(file);
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            path.starts_with(root)
        })
}

pub(super) fn same(a: &Plan, b: &Plan) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// What a node on the way up from the split input's scan does with the input's rows.
enum Role {
    /// Works row by row (or per partition): parts can run it on their own.
    Local,
    /// Needs all the rows: the parts stop below it.
    Merge,
    Refuse(String),
}

fn role(node: &Plan, from_child: usize, table: &str) -> Role {
    let any: &dyn ExecutionPlan = node.as_ref();
    #[allow(deprecated)]
    let batching = any.is::<CoalesceBatchesExec>();
    if batching
        || any.is::<FilterExec>()
        || any.is::<ProjectionExec>()
        || any.is::<RepartitionExec>()
        || any.is::<LocalLimitExec>()
        || any.is::<CooperativeExec>()
    {
        return Role::Local;
    }
    if any.is::<CoalescePartitionsExec>()
        || any.is::<SortPreservingMergeExec>()
        || any.is::<GlobalLimitExec>()
    {
        return Role::Merge;
    }
    if let Some(sort) = any.downcast_ref::<SortExec>() {
        return if sort.preserve_partitioning() {
            Role::Local
        } else {
            Role::Merge
        };
    }
    if let Some(aggregate) = any.downcast_ref::<AggregateExec>() {
        return match aggregate.mode() {
            AggregateMode::Partial => Role::Local,
            AggregateMode::Final | AggregateMode::FinalPartitioned => Role::Merge,
            other => Role::Refuse(format!(
                "a {other:?} aggregate needs all of `{table}`'s rows at once"
            )),
        };
    }
    let join_type = if let Some(join) = any.downcast_ref::<HashJoinExec>() {
        Some(*join.join_type())
    } else if let Some(join) = any.downcast_ref::<NestedLoopJoinExec>() {
        Some(*join.join_type())
    } else if let Some(join) = any.downcast_ref::<SortMergeJoinExec>() {
        Some(join.join_type())
    } else if any.is::<CrossJoinExec>() {
        Some(JoinType::Inner)
    } else {
        None
    };
    if let Some(join_type) = join_type {
        let side = if from_child == 0 {
            JoinSide::Left
        } else {
            JoinSide::Right
        };
        use JoinType::*;
        let keeps_parts = match side {
            JoinSide::Left => matches!(join_type, Inner | Left | LeftSemi | LeftAnti | LeftMark),
            _ => matches!(join_type, Inner | Right | RightSemi | RightAnti | RightMark),
        };
        return if keeps_parts {
            Role::Local
        } else {
            Role::Refuse(format!(
                "a {join_type:?} join keeps rows of its other side, which every part would \
                 repeat (split the {} side instead)",
                if side == JoinSide::Left {
                    "right"
                } else {
                    "left"
                }
            ))
        };
    }
    Role::Refuse(format!(
        "{} needs all of `{table}`'s rows at once",
        node.name()
    ))
}

/// The part's root on `path` (root … scan), whether nodes above it combine the parts, and
/// whether the combining node merges sorted streams.
fn split_at(path: &[Plan], table: &str) -> Result<(Plan, bool, bool), String> {
    for i in (0..path.len() - 1).rev() {
        let node = &path[i];
        let child = &path[i + 1];
        let from_child = node
            .children()
            .iter()
            .position(|c| same(c, child))
            .unwrap_or(0);
        match role(node, from_child, table) {
            Role::Local => {}
            Role::Refuse(why) => return Err(why),
            Role::Merge => {
                // Repartitioning right below the merge stays in the combining plan: it spreads
                // the parts' outputs as the merge expects (by hash for a final aggregate).
                let mut at = i + 1;
                while at < path.len() - 1 {
                    let any: &dyn ExecutionPlan = path[at].as_ref();
                    #[allow(deprecated)]
                    let batching = any.is::<CoalesceBatchesExec>();
                    if batching || any.is::<RepartitionExec>() {
                        at += 1;
                    } else {
                        break;
                    }
                }
                let sorted = node.as_ref().is::<SortPreservingMergeExec>();
                return Ok((path[at].clone(), true, sorted));
            }
        }
    }
    Ok((path[0].clone(), false, false))
}

/// The scan's files, each once and whole, with their row counts (Parquet), and how many
/// partitions the scan had.
#[allow(clippy::type_complexity)]
fn files_of(
    scan: &Plan,
    format: DatasetFormat,
) -> Result<(Vec<(PartitionedFile, Option<u64>)>, usize), String> {
    let config = file_scan(scan).ok_or("not a file scan")?;
    let mut files: Vec<(PartitionedFile, Option<u64>)> = Vec::new();
    for file in config.file_groups.iter().flat_map(|g| g.iter()) {
        if files
            .iter()
            .any(|(f, _)| f.object_meta.location == file.object_meta.location)
        {
            continue;
        }
        let mut whole = file.clone();
        whole.range = None;
        let rows = match format {
            DatasetFormat::Parquet => Some(parquet_rows(&file_path(file))?),
            DatasetFormat::Csv => None,
        };
        files.push((whole, rows));
    }
    Ok((files, config.file_groups.len().max(1)))
}

fn parquet_rows(path: &Path) -> Result<u64, String> {
    let failed = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(|e| failed(&e))?;
    let metadata =
        ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|e| failed(&e))?;
    Ok(metadata.metadata().file_metadata().num_rows().max(0) as u64)
}
