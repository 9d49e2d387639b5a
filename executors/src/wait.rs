//! One poke of a sensor (`wait:`): whether what the task waits for is there now. A poke that
//! finds nothing succeeds with [`StageOutcome::waiting`]; the runner then gives the worker
//! slot back and queues the next poke (or ends the wait at its timeout).

use amdahl_dags::Location;

use crate::{LogSink, SqlExecutor, StageError, StageOutcome, TableInput};

/// What a poke checks, rendered for the run.
#[derive(Clone, Debug)]
pub enum Probe {
    /// A file or folder, or an object (a URL ending in `/`: any object under that prefix).
    Location(Location),
    /// A query over the stage's inputs answering one boolean.
    Sql(String),
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Location(location) => write!(f, "{location}"),
            Probe::Sql(query) => write!(f, "`{}`", query.trim()),
        }
    }
}

/// Pokes once. Errors reaching the location (no such bucket, refused credentials) fail the
/// attempt, which retries as any attempt does; "not there" is a wait, not an error.
pub async fn poke(
    probe: &Probe,
    sql: &SqlExecutor,
    inputs: &[TableInput],
    log: &LogSink,
) -> Result<StageOutcome, StageError> {
    let there = match probe {
        Probe::Location(Location::Local(path)) => path.exists(),
        Probe::Location(Location::Object(object)) => amdahl_planner::objects::exists(object)
            .await
            .map_err(StageError::Failed)?,
        Probe::Sql(query) => sql.condition(query, inputs, log, "wait.sql").await?,
    };
    let mut outcome = StageOutcome::on_cpu(None, None);
    if there {
        log.system(format!("the wait is over: {probe} is there"));
    } else {
        let what = match probe {
            Probe::Sql(_) => format!("{probe} was not true yet"),
            Probe::Location(_) => format!("{probe} is not there yet"),
        };
        log.system(&what);
        outcome.note = Some(what);
        outcome.waiting = true;
    }
    Ok(outcome)
}
