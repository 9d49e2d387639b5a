//! Cron schedules: five fields or an `@hourly`-style nickname, never seconds or years, read
//! on a DAG's `timezone:` wall clock (UTC by default).
//!
//! Across daylight saving changes a schedule behaves as cron does on a machine in that zone:
//! a time that does not exist on the spring-forward day (02:30 in Europe/Paris) runs once, at
//! the first instant after the gap (03:00 local); a time that happens twice on the fall-back
//! day runs once, at its first occurrence. Every instant a [`Schedule`] returns is UTC.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A cron pattern on a time zone's wall clock.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    pub fn new(cron: Cron, zone: Tz) -> Schedule {
        Schedule { cron, zone }
    }

    /// Parses a `schedule:` value for a zone.
    pub fn parse(text: &str, zone: Tz) -> Result<Schedule, String> {
        parse_cron(text).map(|cron| Schedule::new(cron, zone))
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// Whether the schedule runs on UTC (the default), so local times need no showing.
    pub fn is_utc(&self) -> bool {
        self.zone == Tz::UTC
    }

    /// `t` on the zone's wall clock, e.g. `2026-03-29 02:30 CEST`.
    pub fn local_text(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.zone)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string()
    }

    /// The first tick after `t` (or at it, with `inclusive`).
    pub fn next(&self, t: &DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.zone), inclusive)
            .ok()
            .map(|tick| tick.with_timezone(&Utc))
    }

    /// The last tick before `t` (or at it, with `inclusive`).
    pub fn previous(&self, t: &DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.zone), inclusive)
            .ok()
            .map(|tick| tick.with_timezone(&Utc))
    }

    /// Midnight of `date` on the zone's wall clock (the first instant of that day where a
    /// change skips midnight).
    pub fn start_of(&self, date: NaiveDate) -> DateTime<Utc> {
        let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
        match self.zone.from_local_datetime(&midnight) {
            chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
                t.with_timezone(&Utc)
            }
            // No zone skips more than a day's first hours; the first instant after.
            chrono::LocalResult::None => (1..=180)
                .find_map(|minutes| {
                    self.zone
                        .from_local_datetime(&(midnight + chrono::Duration::minutes(minutes)))
                        .earliest()
                })
                .map_or_else(|| midnight.and_utc(), |t| t.with_timezone(&Utc)),
        }
    }
}

/// Parses a `timezone:` value: an IANA name such as `Europe/Paris` (`UTC` too).
pub fn parse_zone(text: &str) -> Result<Tz, String> {
    text.parse::<Tz>().map_err(|_| {
        let mut message =
            format!("unknown time zone `{text}`; use an IANA name such as `Europe/Paris`");
        if let Some(near) =
            crate::diagnostic::did_you_mean(text, chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()))
        {
            message = format!("unknown time zone `{text}`; did you mean `{near}`?");
        }
        message
    })
}

/// Parses a DAG's `schedule:` value.
pub fn parse_cron(text: &str) -> Result<Cron, String> {
    let trimmed = text.trim();
    if !trimmed.starts_with('@') && trimmed.split_whitespace().count() != 5 {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week) or @hourly/@daily/@weekly/@monthly/@yearly, found {}",
            trimmed.split_whitespace().count()
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(trimmed)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    /// A case: pattern, zone, from, the next ticks expected (UTC).
    type Case = (&'static str, Tz, DateTime<Utc>, Vec<DateTime<Utc>>);

    #[test]
    fn ticks_follow_the_zone_across_daylight_saving_changes() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let cases: Vec<Case> = vec![
            // 02:30 daily: on 2026-03-29 02:00 → 03:00 local, 02:30 does not exist; it runs
            // once, at 03:00 CEST (01:00 UTC); the days around it at 02:30 local.
            (
                "30 2 * * *",
                paris,
                utc(2026, 3, 27, 12, 0),
                vec![
                    utc(2026, 3, 28, 1, 30),
                    utc(2026, 3, 29, 1, 0),
                    utc(2026, 3, 30, 0, 30),
                ],
            ),
            // On 2026-10-25 03:00 → 02:00 local, 02:30 happens twice; it runs once.
            (
                "30 2 * * *",
                paris,
                utc(2026, 10, 24, 12, 0),
                vec![utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
            ),
            // Midnight local is 23:00 or 22:00 UTC the day before.
            (
                "@daily",
                paris,
                utc(2026, 3, 28, 12, 0),
                vec![utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 22, 0)],
            ),
            (
                "@daily",
                Tz::UTC,
                utc(2026, 3, 28, 12, 0),
                vec![utc(2026, 3, 29, 0, 0), utc(2026, 3, 30, 0, 0)],
            ),
        ];
        for (pattern, zone, from, expected) in cases {
            let schedule = Schedule::parse(pattern, zone).unwrap();
            let mut ticks = Vec::new();
            let mut t = from;
            for _ in 0..expected.len() {
                t = schedule.next(&t, false).unwrap();
                ticks.push(t);
            }
            assert_eq!(ticks, expected, "{pattern} in {zone} from {from}");
            // And back: each tick's previous one is the tick before it.
            for pair in expected.windows(2) {
                assert_eq!(
                    schedule.previous(&pair[1], false),
                    Some(pair[0]),
                    "{pattern} in {zone}"
                );
            }
        }
    }

    #[test]
    fn days_start_at_local_midnight() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let schedule = Schedule::parse("@daily", paris).unwrap();
        let day = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
        assert_eq!(schedule.start_of(day(1, 1)), utc(2025, 12, 31, 23, 0));
        assert_eq!(schedule.start_of(day(7, 1)), utc(2026, 6, 30, 22, 0));
        // America/Santiago skips midnight on its spring-forward day: the day starts at 01:00.
        let santiago: Tz = "America/Santiago".parse().unwrap();
        let schedule = Schedule::parse("@daily", santiago).unwrap();
        assert_eq!(schedule.start_of(day(9, 6)), utc(2026, 9, 6, 4, 0));
    }

    #[test]
    fn zones_are_iana_names() {
        assert_eq!(parse_zone("Europe/Paris"), Ok(chrono_tz::Europe::Paris));
        assert_eq!(parse_zone("UTC"), Ok(Tz::UTC));
        assert_eq!(
            parse_zone("Europe/Pari"),
            Err("unknown time zone `Europe/Pari`; did you mean `Europe/Paris`?".into())
        );
        assert!(
            parse_zone("Mars/Olympus")
                .unwrap_err()
                .contains("IANA name")
        );
    }

    #[test]
    fn accepts_five_fields_and_nicknames() {
        assert!(parse_cron("0 3 * * *").is_ok());
        assert!(parse_cron("@daily").is_ok());
        assert!(parse_cron("*/15 * * * 1-5").is_ok());
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(parse_cron("0 3 * *").is_err());
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("0 0 3 * * *").is_err());
        assert!(parse_cron("@sometimes").is_err());
    }
}
