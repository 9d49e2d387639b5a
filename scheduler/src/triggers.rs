//! When scheduled runs are due: cron intervals, `start_date`, `catchup`, `max_active_runs`.
//!
//! Airflow's semantics, which users know: a schedule cuts time into intervals at its cron
//! ticks; the run for the interval `[a, b)` is created once `b` has passed, and its logical
//! date is `a`. The first interval starts at the first tick at or after `start_date`. With
//! `catchup: true` every missed interval gets a run, oldest first; without it only the latest
//! complete one does. Never more than `max_active_runs` runs of a DAG are unfinished at once.
//! Ticks are read on the DAG's `timezone:` wall clock ([`Schedule`]); logical dates are UTC.
//! Pure: the clock is an argument.

use amdahl_dags::schedule::Schedule;
use chrono::{DateTime, Utc};

/// What the decision needs to know about one scheduled DAG.
pub struct ScheduleView<'a> {
    pub cron: &'a Schedule,
    /// Midnight of `start_date` in the DAG's zone (or the epoch when it has none).
    pub start: DateTime<Utc>,
    pub catchup: bool,
    /// The logical date of the newest scheduled run so far.
    pub last_logical: Option<DateTime<Utc>>,
    /// Unfinished runs of the DAG, of any trigger.
    pub active_runs: usize,
    pub max_active_runs: usize,
}

/// The logical dates of the runs to create at `now`, oldest first, at most `limit`.
pub fn due_runs(view: &ScheduleView<'_>, now: DateTime<Utc>, limit: usize) -> Vec<DateTime<Utc>> {
    let slots = view
        .max_active_runs
        .saturating_sub(view.active_runs)
        .min(limit);
    if slots == 0 {
        return Vec::new();
    }
    let Some(first) = view.cron.next(&view.start, true) else {
        return Vec::new();
    };
    let after_last = |tick: &DateTime<Utc>| view.last_logical.is_none_or(|last| *tick > last);
    let interval_closed =
        |tick: &DateTime<Utc>| view.cron.next(tick, false).is_some_and(|end| end <= now);
    if view.catchup {
        let mut due = Vec::new();
        let mut tick = match view.last_logical {
            Some(last) if last >= first => view.cron.next(&last, false),
            _ => Some(first),
        };
        while let Some(start) = tick {
            if due.len() >= slots || !interval_closed(&start) {
                break;
            }
            due.push(start);
            tick = view.cron.next(&start, false);
        }
        return due;
    }
    // Without catchup: the latest closed interval only, if it is new.
    let Some(end) = view.cron.previous(&now, true) else {
        return Vec::new();
    };
    match view.cron.previous(&end, false) {
        Some(start) if start >= first && after_last(&start) => vec![start],
        _ => Vec::new(),
    }
}

/// When the scheduler will next create a run of a schedule (the end of the interval that is
/// open at `now`, or of the first interval when `start` is still ahead).
pub fn next_run_at(
    cron: &Schedule,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let first = cron.next(&start, true)?;
    cron.next(&first.max(now), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, hour, minute, 0).unwrap()
    }

    fn cron(text: &str) -> Schedule {
        Schedule::parse(text, chrono_tz::Tz::UTC).unwrap()
    }

    #[test]
    fn next_run_is_the_end_of_the_open_interval() {
        let daily = cron("@daily");
        assert_eq!(
            next_run_at(&daily, at(1, 0, 0), at(5, 13, 0)),
            Some(at(6, 0, 0))
        );
        // Start still ahead: the first interval [start, start + 1 day) closes a day later.
        assert_eq!(
            next_run_at(&daily, at(10, 0, 0), at(5, 13, 0)),
            Some(at(11, 0, 0))
        );
        let hourly = cron("0 * * * *");
        assert_eq!(
            next_run_at(&hourly, at(1, 0, 0), at(5, 13, 0)),
            Some(at(5, 14, 0))
        );
    }

    /// (name, cron, catchup, last logical, active, max active, now, expected logical dates)
    #[test]
    fn scenarios() {
        let daily = cron("@daily");
        let hourly = cron("0 * * * *");
        type Case<'a> = (
            &'a str,
            &'a Schedule,
            bool,
            Option<DateTime<Utc>>,
            usize,
            usize,
            DateTime<Utc>,
            Vec<DateTime<Utc>>,
        );
        let cases: Vec<Case> = vec![
            (
                "nothing before the first interval closes",
                &daily,
                true,
                None,
                0,
                16,
                at(1, 23, 59),
                vec![],
            ),
            (
                "the first interval closes at the next tick",
                &daily,
                true,
                None,
                0,
                16,
                at(2, 0, 0),
                vec![at(1, 0, 0)],
            ),
            (
                "catchup fills every missed interval, oldest first",
                &daily,
                true,
                None,
                0,
                16,
                at(4, 12, 0),
                vec![at(1, 0, 0), at(2, 0, 0), at(3, 0, 0)],
            ),
            (
                "catchup resumes after the last run",
                &daily,
                true,
                Some(at(2, 0, 0)),
                0,
                16,
                at(4, 12, 0),
                vec![at(3, 0, 0)],
            ),
            (
                "max_active_runs caps catchup",
                &daily,
                true,
                None,
                1,
                2,
                at(4, 12, 0),
                vec![at(1, 0, 0)],
            ),
            (
                "no slots, no runs",
                &daily,
                true,
                None,
                2,
                2,
                at(4, 12, 0),
                vec![],
            ),
            (
                "without catchup only the latest closed interval",
                &daily,
                false,
                None,
                0,
                16,
                at(4, 12, 0),
                vec![at(3, 0, 0)],
            ),
            (
                "without catchup nothing twice",
                &daily,
                false,
                Some(at(3, 0, 0)),
                0,
                16,
                at(4, 12, 0),
                vec![],
            ),
            (
                "hourly, exactly at a tick",
                &hourly,
                false,
                Some(at(1, 9, 0)),
                0,
                16,
                at(1, 11, 0),
                vec![at(1, 10, 0)],
            ),
        ];
        for (name, cron, catchup, last_logical, active_runs, max_active_runs, now, expected) in
            cases
        {
            let view = ScheduleView {
                cron,
                start: at(1, 0, 0),
                catchup,
                last_logical,
                active_runs,
                max_active_runs,
            };
            assert_eq!(due_runs(&view, now, 100), expected, "{name}");
        }
    }

    #[test]
    fn a_start_between_ticks_waits_for_the_next_tick() {
        let daily = cron("@daily");
        let view = ScheduleView {
            cron: &daily,
            start: at(1, 6, 0),
            catchup: true,
            last_logical: None,
            active_runs: 0,
            max_active_runs: 16,
        };
        assert_eq!(due_runs(&view, at(3, 1, 0), 10), vec![at(2, 0, 0)]);
    }

    /// A 02:30 daily schedule in Europe/Paris, caught up across both daylight saving
    /// changes of 2026 (29 March: 02:00 → 03:00; 25 October: 03:00 → 02:00): one run a day,
    /// on the spring-forward day at 03:00 local, on the fall-back day at the first 02:30.
    #[test]
    fn a_local_schedule_runs_once_a_day_across_daylight_saving_changes() {
        let paris = Schedule::parse("30 2 * * *", chrono_tz::Europe::Paris).unwrap();
        let utc = |m, d, h, min| Utc.with_ymd_and_hms(2026, m, d, h, min, 0).unwrap();
        let day = |m, d| chrono::NaiveDate::from_ymd_opt(2026, m, d).unwrap();
        let cases = [
            (
                day(3, 28),
                utc(3, 31, 12, 0),
                vec![utc(3, 28, 1, 30), utc(3, 29, 1, 0), utc(3, 30, 0, 30)],
            ),
            (
                day(10, 24),
                utc(10, 27, 12, 0),
                vec![utc(10, 24, 0, 30), utc(10, 25, 0, 30), utc(10, 26, 1, 30)],
            ),
        ];
        for (start_date, now, expected) in cases {
            let view = ScheduleView {
                cron: &paris,
                start: paris.start_of(start_date),
                catchup: true,
                last_logical: None,
                active_runs: 0,
                max_active_runs: 16,
            };
            assert_eq!(due_runs(&view, now, 100), expected, "from {start_date}");
            // Without catchup, the latest closed interval only.
            let view = ScheduleView {
                catchup: false,
                ..view
            };
            assert_eq!(
                due_runs(&view, now, 100),
                expected[2..],
                "from {start_date}"
            );
        }
    }
}
