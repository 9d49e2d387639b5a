//! What a deployment lets tasks do, checked by the worker before a stage runs: whether `shell`
//! tasks may run at all (`--no-shell`), and which local folders tasks may read
//! (`--file-root`; the data root is always one). A DAG file is code that anyone allowed to
//! trigger a run can ship; these limits hold whatever it says.
//!
//! A local path is confined after resolving it as the operating system would: `..` and
//! symbolic links are followed (`std::fs::canonicalize`) before it is compared with the roots,
//! which are resolved the same way when the policy is made, so neither `../` in a dataset's
//! path nor a link inside a root that points outside escapes.

use std::path::{Component, Path, PathBuf};

use amdahl_dags::Location;

use crate::stage::{Stage, StageError, Work};

/// The limits. The default allows everything (a developer's machine).
#[derive(Clone, Debug)]
pub struct Policy {
    shell: bool,
    /// Resolved folders; `None`: local files anywhere.
    roots: Option<Vec<PathBuf>>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            shell: true,
            roots: None,
        }
    }
}

impl Policy {
    /// `shell` says whether `shell` tasks may run; `roots`, when not empty, are the only
    /// folders local inputs may be read from, beside `data_root` (outputs of earlier tasks).
    /// A root that does not exist is an error, said with its path.
    pub fn new(shell: bool, roots: &[PathBuf], data_root: &Path) -> Result<Policy, String> {
        let roots = if roots.is_empty() {
            None
        } else {
            let mut resolved = Vec::with_capacity(roots.len() + 1);
            for root in roots {
                resolved.push(
                    std::fs::canonicalize(root)
                        .map_err(|e| format!("--file-root {}: {e}", root.display()))?,
                );
            }
            std::fs::create_dir_all(data_root)
                .map_err(|e| format!("data root {}: {e}", data_root.display()))?;
            resolved.push(
                std::fs::canonicalize(data_root)
                    .map_err(|e| format!("data root {}: {e}", data_root.display()))?,
            );
            Some(resolved)
        };
        Ok(Policy { shell, roots })
    }

    /// Whether `stage` may run here; `Err` says what it asked for that is not allowed.
    pub fn check(&self, stage: &Stage) -> Result<(), StageError> {
        if !self.shell && matches!(stage.work, Work::Shell { .. }) {
            return Err(StageError::Failed(
                "shell tasks are disabled on this deployment (the worker runs with --no-shell \
                 or AMDAHL_NO_SHELL); nothing was run"
                    .into(),
            ));
        }
        let Some(roots) = &self.roots else {
            return Ok(());
        };
        // What the stage reads (tables, a model) and writes (`output:`), each as the start
        // of the refusal that names it.
        let mut paths: Vec<(String, &Path)> = stage
            .inputs
            .iter()
            .filter_map(|input| match &input.location {
                Location::Local(path) => {
                    Some((format!("table `{}` reads", input.name), path.as_path()))
                }
                Location::Object(_) => None,
            })
            .collect();
        let model;
        if let Work::Score { model: path, .. } = &stage.work {
            model = stage.work_dir.join(path);
            paths.push(("the model reads".to_string(), &model));
        }
        if let Work::Wait {
            probe: crate::wait::Probe::Location(Location::Local(path)),
            ..
        } = &stage.work
        {
            paths.push(("the wait looks at".to_string(), path));
        }
        if let Some(crate::export::Export {
            location: Location::Local(path),
            ..
        }) = &stage.export
        {
            paths.push(("the task's output goes to".to_string(), path));
        }
        for (what, path) in paths {
            let path = stage.work_dir.join(path);
            let resolved = resolve(&path);
            if !roots.iter().any(|root| resolved.starts_with(root)) {
                return Err(StageError::Failed(format!(
                    "{what} {} ({}), outside the folders this deployment allows tasks to \
                     use: {} (--file-root); nothing was run",
                    path.display(),
                    resolved.display(),
                    roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// `path` as the operating system would open it: links and `..` resolved. A path that does not
/// exist (yet) is resolved as far as it exists, the rest (which holds no links) taken lexically.
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut tail: Vec<std::ffi::OsString> = Vec::new();
    loop {
        if let Ok(mut real) = std::fs::canonicalize(&existing) {
            for part in tail.iter().rev() {
                if part == ".." {
                    real.pop();
                } else if part != "." {
                    real.push(part);
                }
            }
            return real;
        }
        match existing.components().next_back() {
            Some(last @ (Component::Normal(_) | Component::ParentDir | Component::CurDir)) => {
                tail.push(last.as_os_str().to_os_string());
            }
            _ => return lexical(path),
        }
        if !existing.pop() {
            return lexical(path);
        }
    }
}

/// `..` and `.` removed without touching the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths that do not exist yet are resolved as far as they exist: a `..` after a missing
    /// folder still climbs, so it cannot hide an escape.
    #[test]
    fn missing_paths_resolve_through_their_dotdots() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("in")).unwrap();
        assert_eq!(resolve(&root.join("in/new/file")), root.join("in/new/file"));
        assert_eq!(
            resolve(&root.join("in/new/../../out/file")),
            root.join("out/file")
        );
        assert_eq!(resolve(&root.join("in/./x")), root.join("in/x"));
        assert_eq!(lexical(Path::new("/a/b/../c/./d")), PathBuf::from("/a/c/d"));
    }
}
