//! Durations as people write them (`90s`, `10m`, `1h30m`): how the
//! schedule's flags parse them and how plans and messages show them.

use std::time::Duration;

/// Seconds as people write them: `90s`, `10m`, `1h30m`.
pub fn human(seconds: u64) -> String {
    humantime::format_duration(Duration::from_secs(seconds))
        .to_string()
        .replace(' ', "")
}

/// Parses `--gate-query-for` and `--gate-query-interval` (`5m`, `30s`).
pub fn parse_period(raw: &str) -> Result<Duration, String> {
    let period = humantime::parse_duration(raw.trim())
        .map_err(|e| format!("{raw:?} is not a duration like 30s or 5m: {e}"))?;
    if period.as_secs() == 0 {
        return Err(format!("{raw:?} is shorter than a second"));
    }
    Ok(period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_show_as_people_write_them() {
        assert_eq!(human(90), "1m30s");
        assert_eq!(human(5400), "1h30m");
        assert_eq!(parse_period("5m"), Ok(Duration::from_secs(300)));
        assert!(
            parse_period("500ms")
                .unwrap_err()
                .contains("shorter than a second")
        );
        assert!(parse_period("soon").unwrap_err().contains("not a duration"));
    }
}
