//! The crate graph points one way, as ARCHITECTURE.md draws it.

use super::*;

/// `dags` ← `executors` ← `scheduler` ← `web` ← the binary: no crate may depend on one to its
/// right. Reads each crate's `[dependencies]` table.
#[test]
fn workspace_dependencies_point_one_way() {
    // The order ARCHITECTURE.md draws: each crate may depend only on crates before it.
    let order = [
        ("amdahl-placement", "placement"),
        ("amdahl-dags", "dags"),
        ("amdahl-planner", "planner"),
        ("amdahl-scheduler", "scheduler"),
        ("amdahl-executors", "executors"),
        ("amdahl-runner", "runner"),
        ("amdahl-web", "web"),
    ];
    // Normal dependencies (not dev- or build-) of each crate: names of ours and others'.
    let dependencies = |dir: &str| -> Vec<String> {
        let manifest = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(dir)
                .join("Cargo.toml"),
        )
        .unwrap();
        let section = manifest
            .split("\n[dependencies]")
            .nth(1)
            .map(|rest| rest.split("\n[").next().unwrap_or_default())
            .unwrap_or_default();
        section
            .lines()
            .map(|line| line.split(['.', '=', ' ']).next().unwrap_or_default())
            .filter(|name| !name.is_empty() && !name.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    let graph: Vec<Vec<String>> = order.iter().map(|(_, dir)| dependencies(dir)).collect();
    for (position, (name, _)) in order.iter().enumerate() {
        for dependency in &graph[position] {
            if let Some(at) = order.iter().position(|(c, _)| c == dependency) {
                assert!(
                    at < position,
                    "{name} depends on {dependency}, which comes after it in ARCHITECTURE.md's order"
                );
            }
        }
    }
    // Everything a crate links, ours and others', following our crates' dependencies.
    let closure = |start: usize| -> std::collections::BTreeSet<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            for dependency in &graph[i] {
                if seen.insert(dependency.clone())
                    && let Some(at) = order.iter().position(|(c, _)| c == dependency)
                {
                    stack.push(at);
                }
            }
        }
        seen
    };
    let links = |name: &str| closure(order.iter().position(|(c, _)| *c == name).unwrap());
    // Deciding never executes: the planner and the scheduler link no executor and no CUDA;
    // the web server validates through the planner and never links the executors or cudarc.
    for (crate_name, forbidden) in [
        ("amdahl-planner", "amdahl-executors"),
        ("amdahl-planner", "cudarc"),
        ("amdahl-scheduler", "amdahl-executors"),
        ("amdahl-scheduler", "cudarc"),
        ("amdahl-web", "amdahl-executors"),
        ("amdahl-web", "amdahl-runner"),
        ("amdahl-web", "cudarc"),
    ] {
        assert!(
            !links(crate_name).contains(forbidden),
            "{crate_name} links {forbidden}: {:?}",
            links(crate_name)
        );
    }
    assert!(links("amdahl-web").contains("amdahl-planner"));
    assert!(
        links("amdahl-executors").contains("cudarc"),
        "the test sees cudarc"
    );
}
