//! Backfills: the runs of a past date range, created by the scheduler a few at a time.
//!
//! A backfill cuts `[from, to]` at its DAG's cron ticks (each tick is one logical date, as
//! for cron runs), decides per date whether a run is wanted (`reprocess`), and keeps at most
//! `max_active_runs` of its runs unfinished, refilling a slot as soon as a run ends. It ends
//! when no wanted date is left and none of its runs is unfinished. Pure: what exists is an
//! argument, so every rule is a table test.

use amdahl_dags::schedule::Schedule;
use chrono::{DateTime, Utc};

use crate::state::RunState;

/// Which dates that already have a run get another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reprocess {
    /// Only dates with no run at all.
    None,
    /// Also dates whose latest run failed or was cancelled.
    Failed,
    /// Every date.
    All,
}

impl Reprocess {
    pub fn as_str(self) -> &'static str {
        match self {
            Reprocess::None => "none",
            Reprocess::Failed => "failed",
            Reprocess::All => "all",
        }
    }

    pub fn parse(text: &str) -> Option<Reprocess> {
        match text {
            "none" => Some(Reprocess::None),
            "failed" => Some(Reprocess::Failed),
            "all" => Some(Reprocess::All),
            _ => None,
        }
    }
}

/// The most dates one backfill may cover.
pub const MAX_DATES: usize = 10_000;

/// The cron ticks in `[from, to]`, oldest first; `Err` past [`MAX_DATES`].
pub fn dates(
    cron: &Schedule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>, String> {
    let mut out = Vec::new();
    let mut tick = cron.next(&from, true);
    while let Some(t) = tick {
        if t > to {
            break;
        }
        if out.len() == MAX_DATES {
            return Err(format!(
                "the range holds more than {MAX_DATES} schedule ticks; split it into smaller backfills"
            ));
        }
        out.push(t);
        tick = cron.next(&t, false);
    }
    Ok(out)
}

/// The dates whose interval has ended at `now` (the next tick has passed), as the scheduler
/// requires of its own runs: a run's logical date starts an interval that it processes once
/// the interval is over. `dates` are oldest first, so the ended ones are a prefix; the rest
/// are returned apart, for the message that says the range was cut.
pub fn ended(
    cron: &Schedule,
    dates: Vec<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (Vec<DateTime<Utc>>, Vec<DateTime<Utc>>) {
    let closed = |tick: &DateTime<Utc>| cron.next(tick, false).is_some_and(|end| end <= now);
    let cut = dates.iter().position(|d| !closed(d)).unwrap_or(dates.len());
    let mut dates = dates;
    let open = dates.split_off(cut);
    (dates, open)
}

/// One logical date of a backfill and the runs it has.
#[derive(Clone, Debug, PartialEq)]
pub struct DateView {
    pub logical: DateTime<Utc>,
    /// The state of this backfill's own run for the date, if it made one.
    pub own: Option<RunState>,
    /// The state of the newest other run of the DAG for the date (cron, manual, an earlier
    /// backfill), if any.
    pub other: Option<RunState>,
}

/// What a backfill should do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Create runs for these dates, oldest first.
    Create(Vec<DateTime<Utc>>),
    /// Runs are unfinished and no slot is free (or nothing is left to create): wait.
    Wait,
    /// Nothing is left: the backfill ends, `success` if every run it made succeeded.
    Finish(RunState),
}

/// Whether a date wants a run from the backfill, by its other runs and the policy.
pub fn wanted(other: Option<RunState>, reprocess: Reprocess) -> bool {
    match (reprocess, other) {
        (_, None) | (Reprocess::All, _) => true,
        (Reprocess::Failed, Some(state)) => {
            matches!(state, RunState::Failed | RunState::Cancelled)
        }
        (Reprocess::None, Some(_)) => false,
    }
}

/// Decides a backfill's next step from its dates (oldest first).
pub fn step(dates: &[DateView], reprocess: Reprocess, max_active_runs: usize) -> Step {
    let active = dates
        .iter()
        .filter(|d| d.own.is_some_and(|s| !s.is_terminal()))
        .count();
    let slots = max_active_runs.max(1).saturating_sub(active);
    let todo: Vec<DateTime<Utc>> = dates
        .iter()
        .filter(|d| d.own.is_none() && wanted(d.other, reprocess))
        .map(|d| d.logical)
        .collect();
    if todo.is_empty() && active == 0 {
        let ok = dates
            .iter()
            .filter_map(|d| d.own)
            .all(|s| s == RunState::Success);
        return Step::Finish(if ok {
            RunState::Success
        } else {
            RunState::Failed
        });
    }
    if slots == 0 || todo.is_empty() {
        return Step::Wait;
    }
    Step::Create(todo.into_iter().take(slots).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunState::*;
    use chrono::TimeZone;

    fn day(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, 0, 0, 0).unwrap()
    }

    fn date(d: u32, own: Option<RunState>, other: Option<RunState>) -> DateView {
        DateView {
            logical: day(d),
            own,
            other,
        }
    }

    #[test]
    fn intervals_that_have_not_ended_are_cut_off() {
        let daily = Schedule::parse("@daily", chrono_tz::Tz::UTC).unwrap();
        let day = |d: u32| Utc.with_ymd_and_hms(2026, 3, d, 0, 0, 0).unwrap();
        let range = dates(&daily, day(1), day(5)).unwrap();
        // At noon on the 4th, the intervals of the 1st, 2nd and 3rd have ended; the 4th's
        // ends at midnight, the 5th's a day later.
        let now = Utc.with_ymd_and_hms(2026, 3, 4, 12, 0, 0).unwrap();
        assert_eq!(
            ended(&daily, range.clone(), now),
            (vec![day(1), day(2), day(3)], vec![day(4), day(5)])
        );
        // Exactly at the end of an interval, it has ended.
        assert_eq!(ended(&daily, range.clone(), day(5)).0.len(), 4);
        assert_eq!(
            ended(&daily, range.clone(), day(1)).0,
            Vec::<DateTime<Utc>>::new()
        );
        assert_eq!(ended(&daily, range, day(30)).1, Vec::<DateTime<Utc>>::new());
    }

    #[test]
    fn ranges_are_cut_at_the_schedule_ticks_inclusively() {
        let daily = Schedule::parse("@daily", chrono_tz::Tz::UTC).unwrap();
        assert_eq!(
            dates(&daily, day(1), day(3)).unwrap(),
            vec![day(1), day(2), day(3)]
        );
        let mid = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        assert_eq!(dates(&daily, mid, day(3)).unwrap(), vec![day(2), day(3)]);
        assert!(dates(&daily, day(3), day(1)).unwrap().is_empty());
        let minutely = Schedule::parse("* * * * *", chrono_tz::Tz::UTC).unwrap();
        let far = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
        assert!(dates(&minutely, day(1), far).unwrap_err().contains("split"));
    }

    /// (name, dates, reprocess, max active runs, expected step)
    #[test]
    fn scenarios() {
        type Case = (&'static str, Vec<DateView>, Reprocess, usize, Step);
        let cases: Vec<Case> = vec![
            (
                "a fresh backfill fills its slots oldest first",
                vec![
                    date(1, None, None),
                    date(2, None, None),
                    date(3, None, None),
                ],
                Reprocess::None,
                2,
                Step::Create(vec![day(1), day(2)]),
            ),
            (
                "a finished run frees its slot at once",
                vec![
                    date(1, Some(Success), None),
                    date(2, Some(Running), None),
                    date(3, None, None),
                ],
                Reprocess::None,
                2,
                Step::Create(vec![day(3)]),
            ),
            (
                "full slots wait",
                vec![
                    date(1, Some(Running), None),
                    date(2, Some(Queued), None),
                    date(3, None, None),
                ],
                Reprocess::None,
                2,
                Step::Wait,
            ),
            (
                "reprocess none skips dates that have any run",
                vec![
                    date(1, None, Some(Success)),
                    date(2, None, Some(Failed)),
                    date(3, None, None),
                ],
                Reprocess::None,
                5,
                Step::Create(vec![day(3)]),
            ),
            (
                "reprocess failed reruns failed and cancelled dates",
                vec![
                    date(1, None, Some(Success)),
                    date(2, None, Some(Failed)),
                    date(3, None, Some(Cancelled)),
                    date(4, None, Some(Running)),
                ],
                Reprocess::Failed,
                5,
                Step::Create(vec![day(2), day(3)]),
            ),
            (
                "reprocess all reruns every date",
                vec![date(1, None, Some(Success)), date(2, None, Some(Running))],
                Reprocess::All,
                5,
                Step::Create(vec![day(1), day(2)]),
            ),
            (
                "the last run ending finishes the backfill",
                vec![date(1, Some(Success), None), date(2, None, Some(Success))],
                Reprocess::None,
                2,
                Step::Finish(Success),
            ),
            (
                "one failed run fails the backfill",
                vec![date(1, Some(Success), None), date(2, Some(Failed), None)],
                Reprocess::None,
                2,
                Step::Finish(Failed),
            ),
            (
                "nothing wanted finishes at once",
                vec![date(1, None, Some(Success))],
                Reprocess::None,
                2,
                Step::Finish(Success),
            ),
        ];
        for (name, dates, reprocess, max, expected) in cases {
            assert_eq!(step(&dates, reprocess, max), expected, "{name}");
        }
    }
}
