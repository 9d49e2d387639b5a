//! Dynamic mapping in the store: a mapped task's expansion creates its instances and points
//! the tasks downstream of it at them (see [`crate::store::Store::finish_attempt`]).
//!
//! **Invariant:** a mapped task's instances and the `needs` naming them change in the
//! transaction that records the expansion's end, fenced with it: a stale expansion creates
//! nothing, and no decision ever sees a downstream task waiting on instances that do not
//! exist (or on the task alone while its instances run).

/// The mapped task's row the instances copy (how they run, where they sit in the run).
#[derive(sqlx::FromRow)]
pub(super) struct Parent {
    pub position: i64,
    pub kind: String,
    pub priority: i64,
    pub retries: i64,
    pub retry_delay_ms: i64,
    pub timeout_ms: Option<i64>,
    pub device_pref: String,
    pub pool: Option<String>,
    pub in_process: i64,
    pub max_retry_delay_ms: Option<i64>,
}

pub(super) const PARENT: &str = "SELECT position, kind, priority, retries, retry_delay_ms, timeout_ms, \
        device_pref, pool, in_process, max_retry_delay_ms \
     FROM task_instances WHERE run_id = $1 AND task_id = $2";

/// Removes the instances of an earlier expansion (the task was cleared and ran again).
pub(super) const DELETE_INSTANCES: &str = "DELETE FROM task_instances \
     WHERE run_id = $1 AND map_index IS NOT NULL AND substr(task_id, 1, length($2)) = $2";

/// Tasks of the run that may name the mapped task or its instances in their `needs` (a
/// cheap filter; [`rewrite_needs`] decides).
pub(super) const MAYBE_DOWNSTREAM: &str = "SELECT task_id, needs_json FROM task_instances \
     WHERE run_id = $1 AND map_index IS NULL AND needs_json LIKE $2";

pub(super) const SET_NEEDS: &str =
    "UPDATE task_instances SET needs_json = $1 WHERE run_id = $2 AND task_id = $3";

/// The columns an instance is inserted with (in the order [`Parent`] and the instance give
/// them).
pub(super) const INSERT_INSTANCES: &str = "INSERT INTO task_instances (run_id, task_id, position, kind, state, \
        needs_json, priority, retries, retry_delay_ms, timeout_ms, device_pref, pool, in_process, \
        trigger_rule, max_retry_delay_ms, depends_on_past, map_index, map_value) ";

/// A task's `needs` after `parent` expanded into `instances`: the task itself, or an earlier
/// expansion's instances, replaced by the new instances where the first of them stood; the
/// task alone when there are none (it was skipped: its downstream tasks judge that). `None`
/// when the task needs none of them.
pub fn rewrite_needs(needs: &[String], parent: &str, instances: &[String]) -> Option<Vec<String>> {
    let of_parent = |need: &String| amdahl_dags::mapping::split_instance(need).0 == parent;
    let first = needs.iter().position(of_parent)?;
    let mut out: Vec<String> = needs[..first].to_vec();
    if instances.is_empty() {
        out.push(parent.to_string());
    } else {
        out.extend(instances.iter().cloned());
    }
    out.extend(needs[first..].iter().filter(|n| !of_parent(n)).cloned());
    Some(out)
}

/// The `LIKE` pattern [`MAYBE_DOWNSTREAM`] filters with: `"parent` anywhere (a task id is
/// letters, digits, `_` and `-`; `_` matching any one character only widens the filter).
pub(super) fn downstream_pattern(parent: &str) -> String {
    format!("%\"{parent}%")
}

#[cfg(test)]
mod tests {
    use super::rewrite_needs;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_task_is_replaced_by_its_instances_in_place() {
        let got = rewrite_needs(&s(&["a", "load", "b"]), "load", &s(&["load[0]", "load[1]"]));
        assert_eq!(got, Some(s(&["a", "load[0]", "load[1]", "b"])));
    }

    #[test]
    fn a_new_expansion_replaces_the_old_instances() {
        let got = rewrite_needs(
            &s(&["load[0]", "x", "load[1]", "load[2]"]),
            "load",
            &s(&["load[0]"]),
        );
        assert_eq!(got, Some(s(&["load[0]", "x"])));
    }

    #[test]
    fn no_instances_leave_the_task_itself() {
        let got = rewrite_needs(&s(&["load[0]", "load[1]"]), "load", &[]);
        assert_eq!(got, Some(s(&["load"])));
    }

    #[test]
    fn tasks_that_need_something_else_are_left_alone() {
        assert_eq!(
            rewrite_needs(&s(&["loader", "load_2"]), "load", &s(&["load[0]"])),
            None
        );
        assert_eq!(rewrite_needs(&[], "load", &s(&["load[0]"])), None);
    }
}
