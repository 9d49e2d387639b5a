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
    for file in &files {
        match check_file(file).await {
            Ok(dag) => println!(
                "ok    {} (dag `{}`, {} tasks)",
                file.display(),
                dag.id,
                dag.tasks.len()
            ),
            Err(e) => {
                bad_files += 1;
                problems += e.diagnostics.len();
                eprint!("{}", e.render());
            }
        }
    }
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

fn display_list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
