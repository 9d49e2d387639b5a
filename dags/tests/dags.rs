//! The `dags` crate's integration tests: golden diagnostics and the JSON Schema.
//!
//! Golden cases: every `cases/*.yaml` is loaded and its rendered diagnostics (or `ok …`) must
//! equal `cases/*.expected`. Run with `UPDATE_EXPECT=1` to rewrite the expectations after an
//! intended change, then review the diff.

use std::path::{Path, PathBuf};

use amdahl_dags::load::{
    DAG_KEYS, DATASET_KEYS, DEFAULTS_KEYS, GENERATE_KEYS, SECRET_KEYS, TASK_KEYS,
};
use amdahl_dags::{load_file, schema};

fn update() -> bool {
    std::env::var("UPDATE_EXPECT").as_deref() == Ok("1")
}

fn check_expectation(expected_path: &Path, actual: &str) -> Result<(), String> {
    if update() {
        std::fs::write(expected_path, actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(expected_path).map_err(|_| {
        format!(
            "missing {} (run with UPDATE_EXPECT=1)",
            expected_path.display()
        )
    })?;
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "{} differs.\n--- expected\n{expected}\n--- actual\n{actual}",
            expected_path.display()
        ))
    }
}

#[test]
fn golden_diagnostics() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir("tests/cases")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "the golden cases are there");
    let mut failures = Vec::new();
    for case in &cases {
        let actual = match load_file(case) {
            Ok(dag) => format!(
                "ok: dag `{}` with tasks {:?}\n",
                dag.id,
                dag.tasks.iter().map(|t| &t.id).collect::<Vec<_>>()
            ),
            Err(e) => e.render(),
        };
        if let Err(message) = check_expectation(&case.with_extension("expected"), &actual) {
            failures.push(message);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Cross-file checks of data schedules: every `folders/NAME/` holds DAG files that load one
/// by one; what `folder::check_folder` says about them together must equal
/// `folders/NAME.expected`.
#[test]
fn golden_folder_checks() {
    let mut folders: Vec<PathBuf> = std::fs::read_dir("tests/folders")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    assert!(!folders.is_empty(), "the folder cases are there");
    let mut failures = Vec::new();
    for folder in &folders {
        let dags: Vec<amdahl_dags::Dag> =
            amdahl_dags::discover::dag_files(std::slice::from_ref(folder))
                .iter()
                .map(|f| load_file(f).unwrap_or_else(|e| panic!("{}", e.render())))
                .collect();
        let refs: Vec<&amdahl_dags::Dag> = dags.iter().collect();
        let check = amdahl_dags::folder::check_folder(&refs);
        let actual = check.render(&refs);
        if let Err(message) = check_expectation(&folder.with_extension("expected"), &actual) {
            failures.push(message);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_problem_carries_a_location() {
    let error = load_file(Path::new("tests/cases/wrong_types.yaml")).unwrap_err();
    assert!(
        error.diagnostics.len() >= 6,
        "all problems reported: {}",
        error.render()
    );
    for d in &error.diagnostics.items {
        assert!(d.line > 1 && d.column >= 1, "{d}");
        assert_eq!(d.file, "tests/cases/wrong_types.yaml");
    }
}

#[test]
fn the_committed_json_schema_is_current() {
    let path = Path::new("amdahl-dag.schema.json");
    check_expectation(path, &schema::json_schema()).unwrap();
}

#[test]
fn the_schema_names_exactly_the_keys_the_loader_accepts() {
    let schema: serde_json::Value = serde_json::from_str(&schema::json_schema()).unwrap();
    let keys = |pointer: &str| -> Vec<String> {
        let mut keys: Vec<String> = schema
            .pointer(pointer)
            .and_then(|v| v.as_object())
            .unwrap_or_else(|| panic!("{pointer} in the schema"))
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    let sorted = |list: &[&str]| {
        let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(keys("/properties"), sorted(DAG_KEYS));
    assert_eq!(keys("/$defs/Defaults/properties"), sorted(DEFAULTS_KEYS));
    assert_eq!(keys("/$defs/TaskSpec/properties"), sorted(TASK_KEYS));
    assert_eq!(keys("/$defs/DatasetSpec/properties"), sorted(DATASET_KEYS));
    assert_eq!(keys("/$defs/SecretSpec/properties"), sorted(SECRET_KEYS));
    assert_eq!(
        keys("/$defs/GenerateSpec/properties"),
        sorted(GENERATE_KEYS)
    );
    assert_eq!(
        keys("/$defs/NotifierSpec/properties"),
        sorted(amdahl_dags::load::NOTIFIER_KEYS)
    );
    assert_eq!(
        keys("/$defs/WebhookSpec/properties"),
        sorted(amdahl_dags::load::WEBHOOK_KEYS)
    );
    assert_eq!(
        keys("/$defs/EmailSpec/properties"),
        sorted(amdahl_dags::load::EMAIL_KEYS)
    );
    assert_eq!(
        keys("/$defs/DataScheduleSpec/properties"),
        sorted(amdahl_dags::load::SCHEDULE_KEYS)
    );
    assert_eq!(
        keys("/$defs/AfterSpec/properties"),
        sorted(amdahl_dags::load::AFTER_KEYS)
    );
}

#[test]
fn every_example_dag_loads() {
    let mut found = 0;
    for entry in std::fs::read_dir("examples").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            found += 1;
            if let Err(e) = load_file(&path) {
                panic!("{}:\n{}", path.display(), e.render());
            }
        }
    }
    assert!(found >= 2);
}

#[test]
fn relative_dataset_paths_resolve_against_the_dag_folder() {
    let dag = load_file(Path::new("examples/csv_sales.yaml")).unwrap();
    let orders = dag.datasets["orders"]
        .location
        .local()
        .expect("a local dataset");
    assert!(
        orders.ends_with("examples/data/orders.csv"),
        "{}",
        orders.display()
    );
    assert!(orders.is_absolute());
}

#[test]
fn params_override_with_checks() {
    let dag = load_file(Path::new("examples/tpch.yaml")).unwrap();
    let set = |text: &str| amdahl_dags::params::parse_assignment(text).unwrap();
    let params = amdahl_dags::params::resolve(&dag, &[set("sf=1")]).unwrap();
    assert_eq!(params["sf"], serde_json::json!(1));
    let err = amdahl_dags::params::resolve(&dag, &[set("sff=1")]).unwrap_err();
    assert!(err.contains("did you mean `sf`"), "{err}");
}

/// DAGs at the task limit load (and are refused) without quadratic blow-ups; one task over
/// the limit is refused outright.
#[test]
fn huge_dags_are_handled_in_bounded_work() {
    let limit = amdahl_dags::load::MAX_TASKS;
    let dag = |line: &dyn Fn(usize) -> String, count: usize| {
        let mut text = String::from("dag: huge\ntasks:\n");
        for i in 0..count {
            text.push_str(&line(i));
        }
        text
    };
    let started = std::time::Instant::now();
    let one_cycle = dag(
        &|i| format!("  t{i}: {{ needs: [t{}], shell: echo }}\n", (i + 1) % limit),
        limit,
    );
    let error =
        amdahl_dags::load_bytes("huge.yaml", Path::new("."), one_cycle.as_bytes()).unwrap_err();
    assert_eq!(error.diagnostics.len(), 1, "{}", error.diagnostics);
    assert!(
        error.diagnostics.items[0].message.contains("9990 more"),
        "{}",
        error.diagnostics.items[0]
    );

    let unknown = dag(
        &|i| format!("  t{i}: {{ needs: [missing{i}], shell: echo }}\n"),
        limit,
    );
    let error =
        amdahl_dags::load_bytes("huge.yaml", Path::new("."), unknown.as_bytes()).unwrap_err();
    assert_eq!(error.diagnostics.len(), limit, "one unknown need per task");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );

    let too_many = dag(&|i| format!("  t{i}: {{ shell: echo }}\n"), limit + 1);
    let error =
        amdahl_dags::load_bytes("huge.yaml", Path::new("."), too_many.as_bytes()).unwrap_err();
    assert!(
        error.diagnostics.items[0].message.contains("at most 10000"),
        "{}",
        error.diagnostics.items[0]
    );
}

/// Mutated versions of every example and golden case load or fail with diagnostics; none
/// panics. The mutator is deterministic, so a failure is reproducible by its round.
#[test]
fn mutated_files_never_panic() {
    let mut sources: Vec<Vec<u8>> = Vec::new();
    for dir in ["examples", "tests/cases"] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml")
                && std::fs::metadata(&path).unwrap().len() < 10_000
            {
                sources.push(std::fs::read(&path).unwrap());
            }
        }
    }
    let mut mutator = amdahl_dags::testing::Mutator::new(0x2545_f491_4f6c_dd1d);
    let mut loaded = 0;
    for round in 0..3_000 {
        let bytes = mutator.mutate(&sources[round % sources.len()]);
        if amdahl_dags::load_bytes("mutated.yaml", Path::new("examples"), &bytes).is_ok() {
            loaded += 1;
        }
    }
    assert!(
        loaded > 0,
        "some mutations still load, so the success path is exercised too"
    );
}

/// Inputs that once troubled the loader or a fuzzer (scripts/fuzz), and hostile shapes written
/// by hand (deep nesting, endless and recursive templates, unclosed tags): each loads or fails
/// with located diagnostics, in bounded time, without a panic. A fuzzer's finding is added by
/// copying its input into tests/fuzz/.
#[test]
fn fuzz_regressions_load_or_fail_cleanly() {
    let mut inputs = 0;
    for entry in std::fs::read_dir("tests/fuzz").unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let started = std::time::Instant::now();
        let name = path.display().to_string();
        match amdahl_dags::load_bytes(&name, Path::new("tests"), &bytes) {
            Ok(_) => {}
            Err(error) => {
                let rendered = error.render();
                assert!(rendered.contains(&name), "{name}: {rendered}");
            }
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{name} took {:?}",
            started.elapsed()
        );
        inputs += 1;
    }
    assert!(inputs >= 6, "the regression inputs are missing ({inputs})");
}
