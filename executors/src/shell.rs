//! `shell` stages: `/bin/sh -c <command>` in the DAG file's folder, output captured as the log.
//!
//! The command runs in its own process group so that a timeout or cancellation kills
//! everything it started, not only the shell. Environment: `AMDAHL_DAG_ID`, `AMDAHL_RUN_ID`,
//! `AMDAHL_TASK_ID`, `AMDAHL_ATTEMPT`, `AMDAHL_INPUT_<NAME>` with the path of each input,
//! and, for a task with `produces_data: true`, `AMDAHL_OUTPUT_DIR`: an empty folder where the
//! command writes its Parquet or CSV files (see `SqlExecutor::adopt_output`).

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use crate::stage::{Executor, LogSink, LogStream, Stage, StageError, StageOutcome, Work};

/// Runs `shell` stages.
#[derive(Clone, Default)]
pub struct ShellExecutor;

/// Kills a process group when dropped, unless disarmed after the process exited.
struct KillGroup {
    pgid: Option<i32>,
}

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) with a negative pid signals the process group; no memory is involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Executor for ShellExecutor {
    async fn execute(&self, stage: &Stage, log: &LogSink) -> Result<StageOutcome, StageError> {
        let Work::Shell { command } = &stage.work else {
            return Err(StageError::Internal(format!(
                "ShellExecutor got {} work",
                stage.work.kind()
            )));
        };
        let started = std::time::Instant::now();
        // `/bin/sh`, as `system(3)` runs it: no search of `PATH` for each task.
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(&stage.work_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .env("AMDAHL_DAG_ID", &stage.dag_id)
            .env("AMDAHL_RUN_ID", stage.run_id.to_string())
            .env("AMDAHL_TASK_ID", &stage.task_id)
            .env("AMDAHL_ATTEMPT", stage.attempt.to_string());
        for (variable, value) in &stage.secrets {
            cmd.env(variable, value);
        }
        // `produces_data: true`: the command writes its dataset here (an empty folder).
        if let Some(dir) = &stage.output_dir {
            crate::storage::reset_dir(dir)?;
            cmd.env("AMDAHL_OUTPUT_DIR", dir);
        }
        for input in &stage.inputs {
            cmd.env(
                format!("AMDAHL_INPUT_{}", input.name.to_uppercase()),
                input.location.to_string(),
            );
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| StageError::Failed(format!("cannot start `/bin/sh`: {e}")))?;
        let mut group = KillGroup {
            pgid: child.id().map(|id| id as i32),
        };
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let (status, (), ()) = tokio::join!(
            child.wait(),
            forward(stdout, log, LogStream::Stdout),
            forward(stderr, log, LogStream::Stderr),
        );
        let status =
            status.map_err(|e| StageError::Internal(format!("waiting for the command: {e}")))?;
        // The shell is gone; still kill the group in case it left background children behind.
        drop(group.pgid.take().map(|pgid| KillGroup { pgid: Some(pgid) }));
        if status.success() {
            // What a command does is its own business: all of it counts as compute.
            Ok(StageOutcome::on_cpu(None, None).timed(crate::StageTimings {
                compute_ms: started.elapsed().as_secs_f64() * 1e3,
                ..Default::default()
            }))
        } else {
            Err(StageError::Failed(match status.code() {
                Some(code) => format!("command exited with status {code}"),
                None => "command was killed by a signal".to_string(),
            }))
        }
    }
}

async fn forward(pipe: Option<impl AsyncRead + Unpin>, log: &LogSink, stream: LogStream) {
    let Some(pipe) = pipe else { return };
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                log.line(stream, text.trim_end_matches(['\n', '\r']));
            }
            Err(e) => {
                log.system(format!("reading {}: {e}", stream.name()));
                break;
            }
        }
    }
}
