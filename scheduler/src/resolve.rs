//! Finding a DAG by id, the same way for the CLI (`amdahl run ID`, `trigger`, `backfill`) and
//! the API (`POST /api/v1/dags/{id}/runs`): the first file in the DAGs folder that defines it,
//! or else the latest version the store recorded; either way loaded and its SQL checked.

use std::path::Path;

use amdahl_dags::Dag;

use crate::store::{Store, StoreError};

/// The DAG `id` (a valid id: callers word their own error for one that is not): `None` when
/// neither the folder nor the store has it; `Some(Err(rendered))` when it was found but does
/// not load or its SQL does not plan.
pub async fn resolve_dag_id(
    store: &Store,
    id: &str,
    dags_folder: &Path,
) -> Result<Option<Result<Dag, String>>, StoreError> {
    if dags_folder.is_dir() {
        for file in
            amdahl_dags::discover::dag_files(std::slice::from_ref(&dags_folder.to_path_buf()))
        {
            if let Ok(dag) = amdahl_dags::load_file(&file)
                && dag.id == id
            {
                return Ok(Some(checked(dag).await));
            }
        }
    }
    let Some(version) = store.latest_dag_version(id).await? else {
        return Ok(None);
    };
    match amdahl_dags::load_bytes(
        &version.source_path,
        Path::new(&version.base_dir),
        version.yaml.as_bytes(),
    ) {
        Ok(dag) => Ok(Some(checked(dag).await)),
        Err(e) => Ok(Some(Err(e.render()))),
    }
}

/// The DAG if its SQL plans against the schemas its inputs will have; the located problems
/// otherwise.
pub async fn checked(dag: Dag) -> Result<Dag, String> {
    let diagnostics = amdahl_planner::check::check_sql(&dag).await;
    if diagnostics.is_empty() {
        Ok(dag)
    } else {
        Err(diagnostics.render(&dag.source.text))
    }
}
