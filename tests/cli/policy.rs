//! A deployment's limits (`--no-shell`, `--file-root`) and secrets.

use super::*;

/// A deployment's limits hold whatever a DAG says. `--no-shell`: a `shell` task fails saying
/// so, and its command never runs. `--file-root`: a dataset outside the roots is refused, by
/// `../` or by a link inside a root that points outside, as is an `output:` outside them, while
/// a root's own files and the outputs of upstream tasks (the data root) are read as usual; a
/// root that does not exist is refused before anything runs.
#[test]
fn a_deployment_refuses_shell_tasks_and_files_outside_its_roots() {
    let amdahl = Amdahl::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let (allowed, outside) = (dir.path().join("allowed"), dir.path().join("outside"));
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(allowed.join("inside.csv"), "x\n5\n").unwrap();
    std::fs::write(outside.join("secret.csv"), "x\n1\n2\n").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.csv"), allowed.join("link.csv")).unwrap();

    let marker = dir.path().join("marker");
    let shell = allowed.join("shell.yaml");
    std::fs::write(
        &shell,
        format!(
            "dag: shell_here\ntasks:\n  touch:\n    shell: \"touch {}\"\n",
            marker.display()
        ),
    )
    .unwrap();
    let shell = shell.to_str().unwrap();
    let out = amdahl.run(&["run", shell, "--no-shell"]);
    assert!(!out.status.success(), "a shell task with --no-shell");
    let logs = text(&amdahl.run(&["tasks", "logs", "1", "touch"]).stdout);
    assert!(logs.contains("shell tasks are disabled"), "{logs}");
    assert!(!marker.exists(), "the command ran");
    let out = amdahl
        .command(&["run", shell])
        .env("AMDAHL_NO_SHELL", "true")
        .output()
        .unwrap();
    assert!(!out.status.success(), "AMDAHL_NO_SHELL=true");
    assert!(!marker.exists(), "the command ran");
    assert_success(&amdahl.run(&["run", shell]), "shell allowed");
    assert!(marker.exists());

    let reading = |name: &str, uri: &str| {
        let dag = allowed.join(format!("{name}.yaml"));
        std::fs::write(
            &dag,
            format!(
                "dag: {name}\ndatasets:\n  t: {{ uri: \"{uri}\", format: csv }}\ntasks:\n  \
                 total:\n    sql: SELECT SUM(x) AS s FROM t\n  again:\n    needs: [total]\n    \
                 sql: SELECT s FROM total\n"
            ),
        )
        .unwrap();
        dag.to_str().unwrap().to_string()
    };
    let root = allowed.to_str().unwrap();
    let inside = reading("inside", "inside.csv");
    assert_success(
        &amdahl.run(&["run", &inside, "--file-root", root]),
        "a file in the root, then an upstream output",
    );
    for (name, uri) in [("dotdot", "../outside/secret.csv"), ("linked", "link.csv")] {
        let dag = reading(name, uri);
        let out = amdahl.run(&["run", &dag, "--file-root", root]);
        assert!(!out.status.success(), "{name}");
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        let run = said
            .lines()
            .find(|l| l.starts_with("run ") && l.contains(" started"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("{said}"))
            .to_string();
        let logs = text(&amdahl.run(&["tasks", "logs", &run, "total"]).stdout);
        assert!(
            logs.contains("outside the folders this deployment allows")
                && logs.contains("secret.csv")
                && !logs.contains("planned query"),
            "{name}: {logs}"
        );
        // Without the limit the same DAG reads the file.
        assert_success(&amdahl.run(&["run", &dag]), name);
    }
    // `output:` outside the roots is refused too, before the query runs; inside, it is written.
    let writing = |name: &str, uri: &str| {
        let dag = allowed.join(format!("{name}.yaml"));
        std::fs::write(
            &dag,
            format!(
                "dag: {name}\ndefaults: {{ retries: 0 }}\ntasks:\n  total:\n    \
                 sql: SELECT 1 AS s\n    output: {{ uri: \"{uri}\" }}\n"
            ),
        )
        .unwrap();
        dag.to_str().unwrap().to_string()
    };
    let out = amdahl.run(&[
        "run",
        &writing("write_out", "../outside/out/"),
        "--file-root",
        root,
    ]);
    assert!(!out.status.success(), "an output outside the roots");
    let said = text(&out.stdout);
    assert!(
        said.contains("outside the folders this deployment allows"),
        "{said}"
    );
    assert!(!outside.join("out").exists(), "nothing was written outside");
    assert_success(
        &amdahl.run(&["run", &writing("write_in", "out/"), "--file-root", root]),
        "an output inside the root",
    );
    assert!(allowed.join("out").join("_SUCCESS").exists());
    // The refused runs are the failed ones.
    let failed = text(&amdahl.run(&["runs", "list", "--state", "failed"]).stdout);
    assert!(
        failed.contains("write_out") && failed.contains("dotdot"),
        "{failed}"
    );
    assert!(
        !failed.contains("write_in") && !failed.contains("success"),
        "{failed}"
    );
    assert!(
        !amdahl
            .run(&["runs", "list", "--state", "done"])
            .status
            .success()
    );
    let out = amdahl.run(&["run", &inside, "--file-root", "/no/such/folder"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--file-root /no/such/folder"),
        "{}",
        text(&out.stderr)
    );
}

/// `secrets:` reach a `shell` task as environment variables, read on the worker (from its
/// environment or a file), and their values are stored nowhere: the task's log lines and its
/// error show `***`, and no file of the state store holds them. A secret the worker cannot
/// read fails the task by its name, before the command runs.
#[test]
fn secrets_reach_shell_tasks_and_are_masked_everywhere_they_are_stored() {
    let amdahl = Amdahl::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let (token, password) = ("tok-7c1e5a0b", "pw-9f3k-from-file");
    std::fs::write(dir.path().join("db"), format!("{password}\n")).unwrap();
    let seen = dir.path().join("seen");
    let dag = dir.path().join("secretive.yaml");
    std::fs::write(
        &dag,
        format!(
            "dag: secretive\nsecrets:\n  api_token: {{ env: TEST_API_TOKEN }}\n  \
             db_password: {{ file: db }}\ntasks:\n  call:\n    shell: 'printf \"%s|%s\" \
             \"$API_TOKEN\" \"$DB_PASSWORD\" > {}; echo \"token=$API_TOKEN\"; \
             echo \"password=$DB_PASSWORD\" >&2; echo \"failed with $API_TOKEN\" >&2; exit 3'\n",
            seen.display()
        ),
    )
    .unwrap();
    let dag = dag.to_str().unwrap();
    let out = amdahl
        .command(&["run", dag])
        .env("TEST_API_TOKEN", token)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the command exits 3");
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        format!("{token}|{password}"),
        "the command saw the values"
    );
    let logs = text(&amdahl.run(&["tasks", "logs", "1", "call"]).stdout);
    assert!(
        logs.contains("token=***") && logs.contains("password=***"),
        "{logs}"
    );
    let shown = format!(
        "{}{}{}",
        logs,
        text(&out.stdout),
        text(&amdahl.run(&["runs", "show", "1"]).stdout)
    );
    for value in [token, password] {
        assert!(!shown.contains(value), "{value} shown: {shown}");
    }
    // Nothing under the home folder (the SQLite store, its journal) holds a value.
    let mut files = vec![amdahl.home.path().to_path_buf()];
    let mut checked = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                files.push(entry.unwrap().path());
            }
        } else {
            let bytes = std::fs::read(&path).unwrap();
            for value in [token, password] {
                assert!(
                    !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                    "{value} is in {}",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 0);

    // Without the variable on the worker: the task fails naming what is missing.
    std::fs::remove_file(&seen).unwrap();
    let out = amdahl.run(&["run", dag]);
    assert!(!out.status.success());
    let logs = text(&amdahl.run(&["tasks", "logs", "2", "call"]).stdout);
    assert!(
        logs.contains("secret `api_token`: the environment variable TEST_API_TOKEN is not set"),
        "{logs}"
    );
    assert!(!seen.exists(), "the command ran without its secret");
}
