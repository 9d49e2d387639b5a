//! Dense stages checked before they run, `calibrate` and `explain`.

use super::*;

/// Dense stages are checked before they run: a vector column a table does not have, or a model
/// file that cannot be read, is an error at `dags validate` with the place, exit 1.
#[test]
fn dense_stages_are_validated_before_they_run() {
    let amdahl = Amdahl::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dense.yaml");
    std::fs::write(
        &file,
        "dag: dense\ntasks:\n  docs:\n    generate: { vectors: 10, dim: 4 }\n  \
         near:\n    needs: [docs]\n    knn: { base: docs, queries: docs, column: embedding }\n  \
         scored:\n    needs: [docs]\n    score: { input: docs, model: nowhere.safetensors }\n",
    )
    .unwrap();
    let out = amdahl.run(&["dags", "validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        shown.contains("table `docs` has no column `embedding` (columns: id, vector)"),
        "{shown}"
    );
    assert!(shown.contains("dense.yaml:7:18"), "{shown}");
    assert!(
        shown.contains("nowhere.safetensors: No such file"),
        "{shown}"
    );
    let run = amdahl.run(&["run", file.to_str().unwrap()]);
    assert!(!run.status.success(), "an invalid DAG does not run");
    assert!(text(&amdahl.run(&["runs", "list"]).stdout).lines().count() <= 1);
}

/// `amdahl calibrate` measures this machine and stores its profile; a second call shows the
/// stored one; `explain` then prices against it; `--output` writes it for elsewhere.
fn calibrate_stores_the_profile_explain_uses(amdahl: &Amdahl) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("me.json");
    let out = amdahl.run(&["calibrate", "--quick", "--output", file.to_str().unwrap()]);
    assert_success(&out, "calibrate");
    let shown = text(&out.stdout);
    for expected in [
        "CPU memory bandwidth",
        "CPU scan",
        "CPU gemm",
        "GPU",
        "stored as",
    ] {
        assert!(shown.contains(expected), "`{expected}` in:\n{shown}");
    }
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(written["cpu"]["throughput"]["scan"].as_f64().unwrap() > 0.0);
    let again = amdahl.run(&["calibrate"]);
    assert_success(&again, "calibrate again");
    let shown = text(&again.stdout);
    assert!(
        shown.contains("stored for ") && shown.contains("--recalibrate"),
        "{shown}"
    );
    assert!(
        !text(&again.stderr).contains("measuring"),
        "nothing measured again"
    );
    let explain = amdahl.run(&["explain", "dags/examples/csv_sales.yaml"]);
    assert_success(&explain, "explain with a stored profile");
    let shown = text(&explain.stdout);
    assert!(
        shown.contains("measured ") && shown.contains("`amdahl calibrate`"),
        "{shown}"
    );
    assert!(!shown.contains("built-in reference"), "{shown}");
    let json = amdahl.run(&["calibrate", "--json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        parsed["source"]
            .as_str()
            .unwrap()
            .contains("amdahl calibrate (quick)")
    );
}

#[test]
fn sqlite_calibrate_stores_the_profile_explain_uses() {
    calibrate_stores_the_profile_explain_uses(&Amdahl::sqlite());
}

#[test]
fn postgres_calibrate_stores_the_profile_explain_uses() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    calibrate_stores_the_profile_explain_uses(&Amdahl::with_database(&db.url));
    rt.block_on(db.drop_database());
}

/// `amdahl explain` needs no database: it prices every task on the profile's CPU and GPU and
/// says where each goes and why; bad profiles and params are clear errors.
/// `explain`'s whole output for the examples against the profiles that ship, compared with
/// `tests/explain/*.expected` (`UPDATE_EXPECT=1` rewrites them after an intended change).
#[test]
fn explain_output_matches_the_golden_files() {
    let amdahl = Amdahl::sqlite();
    let cases: &[(&str, &[&str])] = &[
        (
            "tpch_sf10_h100_spec",
            &[
                "dags/examples/tpch.yaml",
                "--param",
                "sf=10",
                "--profile",
                "profiles/h100-spec.json",
            ],
        ),
        (
            "tpch_sf1_h200_measured",
            &[
                "dags/examples/tpch.yaml",
                "--param",
                "sf=1",
                "--profile",
                "profiles/h200-measured.json",
            ],
        ),
        (
            "sharded_sf10_h100_spec",
            &[
                "dags/examples/sharded.yaml",
                "--param",
                "sf=10",
                "--profile",
                "profiles/h100-spec.json",
            ],
        ),
        (
            "vectors_h100_spec",
            &[
                "dags/examples/vectors.yaml",
                "--profile",
                "profiles/h100-spec.json",
            ],
        ),
        ("csv_sales_reference", &["dags/examples/csv_sales.yaml"]),
    ];
    let update = std::env::var("UPDATE_EXPECT").as_deref() == Ok("1");
    let mut failures = Vec::new();
    for (name, args) in cases {
        let mut full = vec!["explain"];
        full.extend_from_slice(args);
        let out = amdahl.run(&full);
        assert_success(&out, name);
        let actual = text(&out.stdout);
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/explain")
            .join(format!("{name}.expected"));
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_EXPECT=1)", path.display()));
        if actual != expected {
            failures.push(format!(
                "amdahl {}\n--- expected ({})\n{expected}\n--- actual\n{actual}",
                full.join(" "),
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn explain_says_where_each_task_goes_and_why() {
    let amdahl = Amdahl::sqlite();
    let out = amdahl.run(&[
        "explain",
        "dags/examples/tpch.yaml",
        "--param",
        "sf=10",
        "--profile",
        "profiles/h100-spec.json",
    ]);
    assert_success(&out, "explain tpch");
    let shown = text(&out.stdout);
    let row = |task: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(task))
            .unwrap_or_else(|| panic!("no row for {task}:\n{shown}"))
            .to_string()
    };
    assert!(
        row("lineitem").contains("generate stages run only on the CPU"),
        "{shown}"
    );
    // Each query copies only the lineitem columns its scan keeps (Q1 7 of 16, Q6 4).
    for (query, copy) in [
        ("q1_pricing_summary", "139.24 ms"),
        ("q6_forecast_revenue", "62.42 ms"),
    ] {
        let line = row(query);
        assert!(
            line.contains(" gpu ") && line.contains("faster than the CPU"),
            "{line}"
        );
        assert!(
            line.contains(copy),
            "the copy of lineitem's columns to the GPU: {line}"
        );
    }
    assert!(row("report").contains("shell stages run only on the CPU"));
    assert!(shown.contains("predicted:") && shown.contains("as chosen (minimum cut"));
    // Small data stays on the CPU; a join is not a GPU plan.
    let out = amdahl.run(&[
        "explain",
        "dags/examples/vectors.yaml",
        "--profile",
        "profiles/h100-spec.json",
    ]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("HashJoinExec: reads 2 inputs (joins and unions run on the CPU)"),
        "{shown}"
    );
    // Without a profile: the CPU-only reference.
    let out = amdahl.run(&["explain", "dags/examples/csv_sales.yaml"]);
    assert_success(&out, "explain without a profile");
    let shown = text(&out.stdout);
    assert!(shown.contains("built-in reference (CPU only"), "{shown}");
    assert!(shown.contains("this machine has no usable GPU"), "{shown}");
    // Bad input: clear errors, non-zero exits.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ \"cpu\": 3 }").unwrap();
    let out = amdahl.run(&[
        "explain",
        "dags/examples/tpch.yaml",
        "--profile",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("bad.json:1:"),
        "{}",
        text(&out.stderr)
    );
    let out = amdahl.run(&["explain", "dags/examples/tpch.yaml", "--param", "sff=1"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown param `sff`; did you mean `sf`?"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("panicked"));
}
