//! When a DAG with a data schedule gets a run: pure, over where its cursors stand.
//!
//! Each DAG reads each key it waits on (an asset, or `dag:ID` for `after:`) through a cursor:
//! the newest event it consumed. `schedule: { assets: [...] }` wants a new event on every key,
//! `any:` on one; a run then consumes every event up to the newest of the keys it moves, so a
//! burst of events starts one run, not one each (as Airflow merges queued asset events). A key
//! the DAG never looked at first gets a cursor at the newest event there is: events from before
//! a DAG waited on an asset never start it.

use crate::store::{CursorMove, Watched};

/// What a DAG waiting on keys should do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssetStep {
    /// Start cursors for the keys it never looked at.
    StartCursors(Vec<String>),
    /// Create a run moving these cursors.
    Run(Vec<CursorMove>),
    /// Nothing new (enough).
    Wait,
}

pub fn asset_step(watched: &[Watched], any: bool) -> AssetStep {
    let fresh: Vec<String> = watched
        .iter()
        .filter(|w| w.cursor.is_none())
        .map(|w| w.asset.clone())
        .collect();
    if !fresh.is_empty() {
        return AssetStep::StartCursors(fresh);
    }
    let moves: Vec<CursorMove> = watched
        .iter()
        .filter_map(|w| {
            let (from, to) = (w.cursor?, w.newest?);
            (to > from).then(|| CursorMove {
                asset: w.asset.clone(),
                from,
                to,
            })
        })
        .collect();
    let ready = if any {
        !moves.is_empty()
    } else {
        !watched.is_empty() && moves.len() == watched.len()
    };
    if ready {
        AssetStep::Run(moves)
    } else {
        AssetStep::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(asset: &str, cursor: Option<i64>, newest: Option<i64>) -> Watched {
        Watched {
            asset: asset.into(),
            cursor,
            newest,
        }
    }

    fn mv(asset: &str, from: i64, to: i64) -> CursorMove {
        CursorMove {
            asset: asset.into(),
            from,
            to,
        }
    }

    #[test]
    fn scenarios() {
        // (what the DAG waits on, any?, what it does)
        let table: Vec<(Vec<Watched>, bool, AssetStep)> = vec![
            // Never looked: cursors start first (the store says where), no run yet.
            (
                vec![w("a", None, Some(7)), w("b", Some(3), Some(9))],
                false,
                AssetStep::StartCursors(vec!["a".into()]),
            ),
            (
                vec![w("a", None, None)],
                true,
                AssetStep::StartCursors(vec!["a".into()]),
            ),
            // Every key new: one run consuming all of them.
            (
                vec![w("a", Some(1), Some(5)), w("b", Some(2), Some(4))],
                false,
                AssetStep::Run(vec![mv("a", 1, 5), mv("b", 2, 4)]),
            ),
            // Only one new: `assets:` waits, `any:` runs and moves that one only.
            (
                vec![w("a", Some(1), Some(5)), w("b", Some(4), Some(4))],
                false,
                AssetStep::Wait,
            ),
            (
                vec![w("a", Some(1), Some(5)), w("b", Some(4), Some(4))],
                true,
                AssetStep::Run(vec![mv("a", 1, 5)]),
            ),
            // No event at all yet.
            (vec![w("a", Some(0), None)], true, AssetStep::Wait),
            (vec![], false, AssetStep::Wait),
        ];
        for (watched, any, expected) in table {
            assert_eq!(asset_step(&watched, any), expected, "{watched:?} any={any}");
        }
    }
}
