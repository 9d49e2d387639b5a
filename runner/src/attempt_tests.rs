//! `prepare_stage` with a shared data root: a mapped need's instances as one input.

use super::*;

const DAG: &str = r#"
dag: mapped
tasks:
  per_code:
    map: { over: "{{ params.codes }}", as: code }
    sql: "SELECT '{{ code }}' AS code"
  report:
    needs: [per_code]
    sql: "SELECT * FROM per_code"
  split:
    needs: [per_code]
    shards: 2
    sql: "SELECT * FROM per_code"
  command:
    needs: [per_code]
    shell: "cat $AMDAHL_INPUT_PER_CODE"
params:
  codes: [a, b, c]
"#;

/// With a shared root, a mapped task's instances are read in index order as one table (the
/// first prefix its location, the others its parts), by what reads through a query only.
#[test]
fn a_mapped_needs_instances_in_object_storage_are_one_input_in_parts() {
    let dir = std::env::temp_dir();
    let dag = amdahl_dags::load_bytes("mapped.yaml", &dir, DAG.as_bytes())
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let context = RunContext::new(&dag, 7, "2026-12-07T00:00:00Z".into(), dag.params.clone());
    let root = DataRoot {
        local: dir.clone(),
        shared: Some(amdahl_dags::ObjectLocation {
            url: "s3://lake/amdahl".into(),
            options: Default::default(),
        }),
    };
    let url = |i: usize| format!("s3://lake/amdahl/runs/7/per_code[{i}]/attempt-1/");
    // Ten instances, so that index order is not text order.
    let published: HashMap<String, String> = (0..10)
        .rev()
        .map(|i| (format!("per_code[{i}]"), url(i)))
        .chain([("per_code".to_string(), "s3://lake/elsewhere/".to_string())])
        .collect();
    let stage = prepare_stage(&dag, &context, "report", 1, &root, &published).unwrap();
    let input = stage
        .inputs
        .iter()
        .find(|i| i.name == "per_code")
        .expect("an input per_code");
    let urls: Vec<String> = std::iter::once(&input.location)
        .chain(&input.parts)
        .map(|l| l.to_string())
        .collect();
    assert_eq!(urls, (0..10).map(url).collect::<Vec<_>>());

    for task in ["split", "command"] {
        let refused = prepare_stage(&dag, &context, task, 1, &root, &published).unwrap_err();
        assert!(
            refused.contains("task `per_code` is mapped") && refused.contains("only a `sql` task"),
            "{task}: {refused}"
        );
    }
    // No instance published (the map was empty, or they failed): nothing to read.
    let missing = prepare_stage(&dag, &context, "report", 1, &root, &HashMap::new()).unwrap_err();
    assert!(missing.contains("left no output"), "{missing}");
    // A local root reads the task's folder, whose `map=i` folders are the instances.
    let local = prepare_stage(
        &dag,
        &context,
        "report",
        1,
        &DataRoot::local(&dir),
        &published,
    );
    assert!(local.is_err_and(|e| e.contains("left no output")));
}
