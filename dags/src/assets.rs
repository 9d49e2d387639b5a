//! Assets: names for data that tasks update (`produces:`) and that DAGs wait on
//! (`schedule: { assets | any | after }`). The checks that need every DAG of a folder are in
//! [`crate::folder`].
//!
//! An asset is only a name (`lake.orders`); what it means is up to the team. Events on it are
//! recorded by the store (a producing task's success, a successful run of a DAG watched by
//! `after:`, or a post from outside); the scheduler starts a watching DAG's run when its rule
//! holds. `after: { dag: ingest }` watches the key `dag:ingest`, which no asset name can spell
//! (names have no `:`), so both kinds of schedule are one rule over keys.

use crate::yaml::Span;

/// Longest asset name.
pub const MAX_NAME: usize = 200;
/// Most assets one schedule may watch or one task may produce.
pub const MAX_LISTED: usize = 64;

/// Whether `name` may name an asset: 1 to 200 of ASCII letters, digits, `_`, `-`, `.` and
/// `/`, starting with a letter, digit or `_`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
}

/// The key `after: { dag: ID }` watches: one event per successful run of that DAG.
pub fn after_key(dag_id: &str) -> String {
    format!("dag:{dag_id}")
}

/// The DAG a key made by [`after_key`] names.
pub fn after_dag(key: &str) -> Option<&str> {
    key.strip_prefix("dag:")
}

/// Runs started by data instead of the clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSchedule {
    /// The keys watched, in the file's order, with where each is written: asset names, or
    /// the one key of `after:` (see [`after_key`]).
    pub watch: Vec<(String, Span)>,
    /// `any:`: a run when any key has a new event; otherwise when every one has.
    pub any: bool,
    /// Where `schedule:` is written.
    pub span: Span,
}

impl DataSchedule {
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.watch.iter().map(|(k, _)| k.as_str())
    }

    /// The rule in words: `every new event on a, b`, `any new event on a, b`, `after dag x`.
    pub fn describe(&self) -> String {
        let keys: Vec<&str> = self.keys().collect();
        if let [only] = keys.as_slice()
            && let Some(dag) = after_dag(only)
        {
            return format!("after each successful run of `{dag}`");
        }
        let names = keys.join(", ");
        if self.any && keys.len() > 1 {
            format!("when any of {names} has a new event")
        } else if keys.len() > 1 {
            format!("when each of {names} has a new event")
        } else {
            format!("when {names} has a new event")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["lake.orders", "a", "raw/orders-v2", "_x", "A9"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "dag:x", ".x", "-x", "a b", "é", &"a".repeat(201)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        assert_eq!(after_dag(&after_key("ingest")), Some("ingest"));
        assert_eq!(after_dag("lake.orders"), None);
    }
}
