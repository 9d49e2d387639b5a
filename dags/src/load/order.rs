//! Topological order of a DAG's tasks, and a report naming the tasks on every cycle.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::Cx;
use crate::model::Task;
use crate::yaml::Span;

impl Cx {
    /// Orders tasks so that each comes after its `needs`; reports every cycle by name.
    pub(super) fn order(&mut self, tasks: Vec<(Task, Vec<(String, Span)>)>) -> Vec<Task> {
        let index: HashMap<String, usize> = tasks
            .iter()
            .enumerate()
            .map(|(i, (t, _))| (t.id.clone(), i))
            .collect();
        let mut indegree: Vec<usize> = tasks
            .iter()
            .map(|(t, _)| t.needs.iter().filter(|n| index.contains_key(*n)).count())
            .collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
        for (i, (t, _)) in tasks.iter().enumerate() {
            for need in &t.needs {
                if let Some(&j) = index.get(need) {
                    dependents[j].push(i);
                }
            }
        }
        let mut ready: BTreeSet<usize> = (0..tasks.len()).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(tasks.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &d in &dependents[i] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        if order.len() < tasks.len() {
            self.report_cycles(&tasks, &index, &order);
        }
        let mut slots: Vec<Option<Task>> = tasks.into_iter().map(|(t, _)| Some(t)).collect();
        order.into_iter().filter_map(|i| slots[i].take()).collect()
    }

    pub(super) fn report_cycles(
        &mut self,
        tasks: &[(Task, Vec<(String, Span)>)],
        index: &HashMap<String, usize>,
        done: &[usize],
    ) {
        let done: HashSet<usize> = done.iter().copied().collect();
        let mut reported: HashSet<Vec<usize>> = HashSet::new();
        // Tasks some earlier walk went through: walking from them again finds nothing new,
        // and skipping them keeps this linear in the number of tasks.
        let mut walked: HashSet<usize> = HashSet::new();
        for start in 0..tasks.len() {
            if done.contains(&start) || walked.contains(&start) {
                continue;
            }
            // Walk `needs` edges inside the unordered set until a task repeats: that is a cycle.
            let mut path = vec![start];
            let mut position: HashMap<usize, usize> = HashMap::from([(start, 0)]);
            let mut current = start;
            let cycle = loop {
                let next = tasks[current]
                    .0
                    .needs
                    .iter()
                    .filter_map(|n| index.get(n).copied())
                    .find(|j| !done.contains(j));
                let Some(next) = next else { break None };
                if let Some(&at) = position.get(&next) {
                    break Some(path[at..].to_vec());
                }
                if walked.contains(&next) {
                    break None;
                }
                position.insert(next, path.len());
                path.push(next);
                current = next;
            };
            walked.extend(path.iter().copied());
            let Some(mut cycle) = cycle else { continue };
            let min_at = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, v)| **v)
                .map_or(0, |(i, _)| i);
            cycle.rotate_left(min_at);
            if !reported.insert(cycle.clone()) {
                continue;
            }
            let first = &tasks[cycle[0]];
            let second = &tasks[cycle[(1) % cycle.len()]].0.id;
            let mut names: Vec<String> = cycle.iter().map(|&i| tasks[i].0.id.clone()).collect();
            if names.len() > 12 {
                let hidden = names.len() - 10;
                names.truncate(10);
                names.push(format!("… ({hidden} more)"));
            }
            names.push(tasks[cycle[0]].0.id.clone());
            let span = first
                .1
                .iter()
                .find(|(n, _)| n == second)
                .map_or(first.0.span, |(_, s)| *s);
            self.error_help(
                span,
                format!("tasks form a cycle: {}", names.join(" → ")),
                "each arrow reads \"needs\"; remove one of these needs",
            );
        }
    }
}
