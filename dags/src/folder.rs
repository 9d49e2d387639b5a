//! Checks across the DAGs of a folder: their data schedules together (`after:` names, DAGs
//! starting each other in a cycle, assets that no task produces).

use std::collections::{BTreeMap, BTreeSet};

use crate::assets::after_dag;
use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::model::Dag;
use crate::yaml::Span;

/// A problem found across DAG files: which DAG (its index in the list checked) and what.
#[derive(Clone, Debug)]
pub struct FolderProblem {
    pub dag: usize,
    pub diagnostic: Diagnostic,
}

/// What [`check_folder`] found: errors refuse the DAGs they name (their data schedules are
/// not followed); warnings are printed and change nothing.
#[derive(Clone, Debug, Default)]
pub struct FolderCheck {
    pub errors: Vec<FolderProblem>,
    pub warnings: Vec<FolderProblem>,
}

impl FolderCheck {
    /// Every problem rendered against its DAG's source: errors first, then warnings.
    pub fn render(&self, dags: &[&Dag]) -> String {
        let mut out = String::new();
        for (level, problems) in [("error", &self.errors), ("warning", &self.warnings)] {
            for p in problems {
                let source = dags.get(p.dag).map_or("", |d| d.source.text.as_str());
                out.push_str(&p.diagnostic.render_as(level, source));
                out.push('\n');
            }
        }
        out
    }

    /// Whether DAG `index` is refused (an error names it).
    pub fn refuses(&self, index: usize) -> bool {
        self.errors.iter().any(|p| p.dag == index)
    }
}

/// Checks the data schedules of DAGs that are scheduled together (a DAG folder):
/// `after:` must name one of them (error, with "did you mean"); DAGs must not start each other
/// in a cycle (error on each DAG of the cycle, the cycle printed); an asset that no task of
/// them produces can only start runs when it is posted (warning, with "did you mean" when a
/// produced name is close).
pub fn check_folder(dags: &[&Dag]) -> FolderCheck {
    let mut check = FolderCheck::default();
    let ids: BTreeMap<&str, usize> = dags
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.as_str(), i))
        .collect();
    let mut producers: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (i, dag) in dags.iter().enumerate() {
        for task in &dag.tasks {
            for asset in &task.produces {
                producers.entry(asset.as_str()).or_default().insert(i);
            }
        }
    }
    // `starts[a]`: the DAGs whose runs a run of `a` may start.
    let mut starts: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); dags.len()];
    for (i, dag) in dags.iter().enumerate() {
        let Some(schedule) = &dag.data_schedule else {
            continue;
        };
        let file = dag.source.display_path.as_str();
        for (key, span) in &schedule.watch {
            if let Some(upstream) = after_dag(key) {
                match ids.get(upstream) {
                    Some(&u) => {
                        starts[u].insert(i);
                    }
                    None => {
                        let message = format!("`after` names DAG `{upstream}`, which is not here");
                        let d = Diagnostic::new(file, *span, message);
                        let d = match did_you_mean(upstream, ids.keys().copied()) {
                            Some(s) => d.with_help(format!("did you mean `{s}`?")),
                            None => d.with_help("name a DAG of the same DAG folder"),
                        };
                        check.errors.push(FolderProblem {
                            dag: i,
                            diagnostic: d,
                        });
                    }
                }
                continue;
            }
            match producers.get(key.as_str()) {
                Some(from) => {
                    for &u in from {
                        starts[u].insert(i);
                    }
                }
                None => {
                    let message = format!(
                        "no task here produces asset `{key}`: runs start only when it is posted"
                    );
                    let d = Diagnostic::new(file, *span, message);
                    let d = match did_you_mean(key, producers.keys().copied()) {
                        Some(s) => d.with_help(format!("did you mean `{s}`?")),
                        None => d.with_help(format!(
                            "post events with `amdahl assets emit {key}` or `POST /api/v1/assets/{key}/events`"
                        )),
                    };
                    check.warnings.push(FolderProblem {
                        dag: i,
                        diagnostic: d,
                    });
                }
            }
        }
    }
    for (members, cycle) in cycles(&starts) {
        let names: Vec<&str> = cycle
            .iter()
            .chain(cycle.first())
            .map(|&i| dags[i].id.as_str())
            .collect();
        let path = names.join(" → ");
        for &i in &members {
            let span = dags[i]
                .data_schedule
                .as_ref()
                .map_or(Span::at(1, 1, 1), |s| s.span);
            check.errors.push(FolderProblem {
                dag: i,
                diagnostic: Diagnostic::new(
                    &dags[i].source.display_path,
                    span,
                    format!("DAGs start each other in a cycle: {path}"),
                )
                .with_help("a run would start the next one forever; break the cycle"),
            });
        }
    }
    check
}

/// The cycles of a directed graph, one per strongly connected component that has one (a
/// component of several nodes, or a node with an edge to itself): the component's nodes, and
/// one cycle through them in order.
fn cycles(edges: &[BTreeSet<usize>]) -> Vec<(Vec<usize>, Vec<usize>)> {
    let n = edges.len();
    // Kosaraju: finishing order on the graph, then components on the reversed graph.
    let mut order = Vec::with_capacity(n);
    let mut seen = vec![false; n];
    for root in 0..n {
        if seen[root] {
            continue;
        }
        seen[root] = true;
        let mut stack = vec![(root, edges[root].iter().copied().collect::<Vec<_>>())];
        while let Some((node, next)) = stack.last_mut() {
            match next.pop() {
                Some(m) if !seen[m] => {
                    seen[m] = true;
                    stack.push((m, edges[m].iter().copied().collect()));
                }
                Some(_) => {}
                None => {
                    order.push(*node);
                    stack.pop();
                }
            }
        }
    }
    let mut reversed = vec![Vec::new(); n];
    for (from, to) in edges.iter().enumerate() {
        for &t in to {
            reversed[t].push(from);
        }
    }
    let mut component = vec![usize::MAX; n];
    let mut found = Vec::new();
    for &root in order.iter().rev() {
        if component[root] != usize::MAX {
            continue;
        }
        let mut members = vec![root];
        component[root] = root;
        let mut i = 0;
        while i < members.len() {
            for &m in &reversed[members[i]] {
                if component[m] == usize::MAX {
                    component[m] = root;
                    members.push(m);
                }
            }
            i += 1;
        }
        members.sort_unstable();
        let first = members[0];
        if members.len() > 1 || edges[first].contains(&first) {
            let cycle = cycle_through(edges, &component, first);
            found.push((members, cycle));
        }
    }
    found.sort();
    found
}

/// A shortest cycle from `first` back to itself inside its component (breadth first).
fn cycle_through(edges: &[BTreeSet<usize>], component: &[usize], first: usize) -> Vec<usize> {
    let mut parent = vec![usize::MAX; edges.len()];
    let mut queue = std::collections::VecDeque::from([first]);
    while let Some(node) = queue.pop_front() {
        for &m in &edges[node] {
            if component[m] != component[first] {
                continue;
            }
            if m == first {
                let mut cycle = vec![node];
                while let Some(&last) = cycle.last() {
                    if last == first {
                        break;
                    }
                    cycle.push(parent[last]);
                }
                cycle.reverse();
                return cycle;
            }
            if parent[m] == usize::MAX {
                parent[m] = node;
                queue.push_back(m);
            }
        }
    }
    vec![first]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_cycle_once() {
        let g = |e: &[&[usize]]| {
            e.iter()
                .map(|s| s.iter().copied().collect())
                .collect::<Vec<_>>()
        };
        let c = |e: &[&[usize]]| {
            cycles(&g(e))
                .into_iter()
                .map(|(_, cycle)| cycle)
                .collect::<Vec<_>>()
        };
        assert!(c(&[&[1], &[2], &[]]).is_empty());
        assert_eq!(c(&[&[1], &[2], &[0]]), vec![vec![0, 1, 2]]);
        assert_eq!(c(&[&[0]]), vec![vec![0]]);
        assert_eq!(c(&[&[1], &[0], &[3], &[2]]), vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(c(&[&[1], &[2, 0], &[1]]), vec![vec![0, 1]]);
        // Every node of the component is named, not only the printed cycle's.
        assert_eq!(cycles(&g(&[&[1], &[2, 0], &[1]]))[0].0, vec![0, 1, 2]);
    }
}
