//! Cron schedules: five fields or an `@hourly`-style nickname, never seconds or years.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

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
