//! `output:`: a succeeded attempt's result written out for readers outside Amdahl, to a local
//! folder or an object storage prefix, whole or not at all.
//!
//! The files are named for the run and attempt (`run-12-attempt-1-part-0.parquet`), so an
//! append never clobbers another run's, and a `_SUCCESS` manifest naming every file of the
//! output (name, tab, bytes) is written last. Locally, an overwrite is staged in a hidden
//! folder beside the target and renamed into place (the old folder moved aside first, then
//! removed); an append copies each file under a hidden name and renames it. In object storage,
//! which has no rename, the new files are uploaded first, then the manifest, then (overwrite)
//! the objects the manifest no longer names are deleted: a reader that follows the manifest
//! never sees half an output. Whatever a failed export wrote is removed (best effort) and the
//! attempt fails.

use std::path::{Path, PathBuf};

use amdahl_dags::{DatasetFormat, Location, ObjectLocation, OutputMode};

use crate::objects;

/// Where and how a task's result is written out (the task's `output:`, rendered for a run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    pub location: Location,
    pub mode: OutputMode,
    pub format: DatasetFormat,
}

/// The manifest's name, as for published outputs.
pub const MANIFEST: &str = objects::MANIFEST;

/// Writes the Parquet parts in `written` (an attempt's output folder) to `export`. Returns a
/// line for the attempt's log.
pub async fn export(
    written: &Path,
    export: &Export,
    run_id: i64,
    attempt: u32,
) -> Result<String, String> {
    let prefix = format!("run-{run_id}-attempt-{attempt}-");
    // The files to write, under their target names, in a hidden folder beside `written`.
    let staged = sibling(written, "export");
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir_all(&staged).map_err(|e| format!("{}: {e}", staged.display()))?;
    let result = async {
        let files = stage_files(written, &staged, &prefix, export.format)?;
        match &export.location {
            Location::Local(target) => to_folder(&staged, &files, target, export.mode, &prefix),
            Location::Object(target) => to_objects(&staged, &files, target, export.mode).await,
        }
    }
    .await;
    let _ = std::fs::remove_dir_all(&staged);
    result
}

/// A hidden folder beside `dir`, named after it.
fn sibling(dir: &Path, what: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!(".{}.{what}", name.trim_start_matches('.')))
}

/// Copies (Parquet) or converts (CSV) the parts into `staged` under their target names;
/// returns (name, bytes) per file, sorted by name.
fn stage_files(
    written: &Path,
    staged: &Path,
    prefix: &str,
    format: DatasetFormat,
) -> Result<Vec<(String, u64)>, String> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(written)
        .map_err(|e| format!("{}: {e}", written.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "parquet")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    parts.sort();
    let mut files = Vec::with_capacity(parts.len());
    for part in parts {
        let stem = part
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = format!("{prefix}{stem}{}", format.extension());
        let to = staged.join(&name);
        match format {
            DatasetFormat::Parquet => {
                std::fs::copy(&part, &to).map_err(|e| format!("{}: {e}", to.display()))?;
            }
            DatasetFormat::Csv => to_csv(&part, &to)?,
        }
        let bytes = std::fs::metadata(&to).map_or(0, |m| m.len());
        files.push((name, bytes));
    }
    Ok(files)
}

/// One Parquet file as a CSV file with a header.
fn to_csv(parquet: &Path, csv: &Path) -> Result<(), String> {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let failed =
        |e: &dyn std::fmt::Display| format!("cannot write {} as CSV: {e}", parquet.display());
    let file = std::fs::File::open(parquet).map_err(|e| failed(&e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| failed(&e))?;
    let out = std::fs::File::create(csv).map_err(|e| failed(&e))?;
    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(std::io::BufWriter::new(out));
    for batch in reader {
        let batch = batch.map_err(|e| failed(&e))?;
        writer.write(&batch).map_err(|e| failed(&e))?;
    }
    Ok(())
}

fn manifest_text(files: &[(String, u64)]) -> String {
    files
        .iter()
        .map(|(name, bytes)| format!("{name}\t{bytes}\n"))
        .collect()
}

/// The files a manifest names.
fn manifest_files(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let (name, bytes) = line.split_once('\t')?;
            Some((name.to_string(), bytes.trim().parse().ok()?))
        })
        .collect()
}

/// Whether a folder holds anything but hidden entries.
fn holds_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
    })
}

fn to_folder(
    staged: &Path,
    files: &[(String, u64)],
    target: &Path,
    mode: OutputMode,
    prefix: &str,
) -> Result<String, String> {
    let io = |path: &Path, e: std::io::Error| format!("output {}: {e}", path.display());
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    match mode {
        OutputMode::ErrorIfExists if holds_files(target) => Err(format!(
            "output {} already holds files, and its mode is error_if_exists",
            target.display()
        )),
        OutputMode::Overwrite | OutputMode::ErrorIfExists => {
            std::fs::write(staged.join(MANIFEST), manifest_text(files))
                .map_err(|e| io(staged, e))?;
            let ready = sibling(target, &format!("{}new", prefix));
            let aside = sibling(target, &format!("{}old", prefix));
            let _ = std::fs::remove_dir_all(&ready);
            // `staged` may be on another file system than the target: copied beside it first.
            copy_dir(staged, &ready).map_err(|e| io(&ready, e))?;
            if target.exists() {
                std::fs::rename(target, &aside).map_err(|e| io(target, e))?;
            }
            if let Err(e) = std::fs::rename(&ready, target) {
                let _ = std::fs::rename(&aside, target);
                let _ = std::fs::remove_dir_all(&ready);
                return Err(io(target, e));
            }
            let _ = std::fs::remove_dir_all(&aside);
            Ok(format!(
                "wrote the output to {} ({} file(s), replacing what was there)",
                target.display(),
                files.len()
            ))
        }
        OutputMode::Append => {
            std::fs::create_dir_all(target).map_err(|e| io(target, e))?;
            for (name, _) in files {
                let hidden = target.join(format!(".{name}.tmp"));
                std::fs::copy(staged.join(name), &hidden).map_err(|e| io(&hidden, e))?;
                std::fs::rename(&hidden, target.join(name)).map_err(|e| io(target, e))?;
            }
            let before = std::fs::read_to_string(target.join(MANIFEST)).unwrap_or_default();
            let mut all = manifest_files(&before);
            all.retain(|(name, _)| !files.iter().any(|(n, _)| n == name));
            all.extend(files.iter().cloned());
            all.sort();
            let hidden = target.join(format!(".{MANIFEST}.tmp"));
            std::fs::write(&hidden, manifest_text(&all)).map_err(|e| io(&hidden, e))?;
            std::fs::rename(&hidden, target.join(MANIFEST)).map_err(|e| io(target, e))?;
            Ok(format!(
                "appended {} file(s) to the output {}",
                files.len(),
                target.display()
            ))
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

async fn to_objects(
    staged: &Path,
    files: &[(String, u64)],
    target: &ObjectLocation,
    mode: OutputMode,
) -> Result<String, String> {
    let before = objects::list_names(target).await?;
    if mode == OutputMode::ErrorIfExists && !before.is_empty() {
        return Err(format!(
            "output {} already holds objects, and its mode is error_if_exists",
            target.url
        ));
    }
    let mut all = files.to_vec();
    if mode == OutputMode::Append {
        let old = objects::read_text(&objects::child(target, MANIFEST))
            .await?
            .unwrap_or_default();
        all.extend(manifest_files(&old));
        all.sort();
        all.dedup_by(|a, b| a.0 == b.0);
    }
    if let Err(e) = objects::upload_files(staged, target, &manifest_text(&all)).await {
        // Nothing names what got there: removed, as far as possible.
        for (name, _) in files {
            let _ = objects::delete(&objects::child(target, name)).await;
        }
        return Err(e);
    }
    if mode == OutputMode::Overwrite {
        // What the new manifest does not name is the old output's.
        for name in before {
            if name != MANIFEST && !files.iter().any(|(n, _)| *n == name) {
                objects::delete(&objects::child(target, &name)).await?;
            }
        }
    }
    Ok(format!(
        "wrote {} file(s) to the output {}{}",
        files.len(),
        target.url,
        if mode == OutputMode::Append {
            " (appended)"
        } else {
            ""
        }
    ))
}
