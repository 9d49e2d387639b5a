//! `amdahl dags validate PATH…`: every problem in every file, located, then a summary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use amdahl_dags::{Dag, LoadError, load_file};

/// Loads and fully checks one DAG file (structure, templates, SQL).
pub async fn check_file(path: &Path) -> Result<Dag, LoadError> {
    let dag = load_file(path)?;
    let diagnostics = amdahl_planner::check::check_sql(&dag).await;
    if diagnostics.is_empty() {
        Ok(dag)
    } else {
        Err(LoadError {
            display_path: dag.source.display_path.clone(),
            source_text: dag.source.text.clone(),
            diagnostics,
        })
    }
}

pub use amdahl_dags::discover::dag_files;

pub async fn validate(paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let files = dag_files(paths);
    if files.is_empty() {
        anyhow::bail!(
            "no DAG files (*.yaml, *.yml) found in {}",
            display_list(paths)
        );
    }
    let mut problems = 0usize;
    let mut bad_files = 0usize;
    let mut valid = Vec::new();
    for file in &files {
        match check_file(file).await {
            Ok(dag) => {
                println!(
                    "ok    {} (dag `{}`, {} tasks)",
                    file.display(),
                    dag.id,
                    dag.tasks.len()
                );
                valid.push(dag);
            }
            Err(e) => {
                bad_files += 1;
                problems += e.diagnostics.len();
                eprint!("{}", e.render());
            }
        }
    }
    let (folder_errors, refused) = check_together(&valid, &files);
    problems += folder_errors;
    bad_files += refused;
    if problems == 0 {
        println!("{} file(s) valid", files.len());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{problems} problem(s) in {bad_files} of {} file(s)",
            files.len()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// The checks across DAGs (data schedules: `after:` names, cycles, assets nobody produces)
/// over the valid DAGs given, with the other DAG files of their folders as context (a DAG
/// validated alone still sees the DAG it runs after). Prints what concerns the DAGs given;
/// returns the number of errors and of DAGs they refuse.
fn check_together(valid: &[Dag], given: &[PathBuf]) -> (usize, usize) {
    if valid.iter().all(|d| d.data_schedule.is_none()) {
        return (0, 0);
    }
    let folders: Vec<PathBuf> = given
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let context: Vec<Dag> = dag_files(&folders)
        .into_iter()
        .filter(|f| !given.contains(f))
        .filter_map(|f| load_file(&f).ok())
        .filter(|d| valid.iter().all(|v| v.id != d.id))
        .collect();
    let all: Vec<&Dag> = valid.iter().chain(&context).collect();
    let mut check = amdahl_dags::folder::check_folder(&all);
    check.errors.retain(|p| p.dag < valid.len());
    check.warnings.retain(|p| p.dag < valid.len());
    eprint!("{}", check.render(&all));
    let refused = (0..valid.len()).filter(|&i| check.refuses(i)).count();
    (check.errors.len(), refused)
}

fn display_list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
