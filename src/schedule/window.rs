//! Maintenance windows: `Mon-Fri 01:00-05:00 Europe/Paris`. A wave starts
//! only while the window is open; outside it the run waits for the next
//! opening. The time zone database is compiled into klm (the image has none).

use std::fmt;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// The days of the week, Monday first, as the window names them.
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// When waves may start: on some days of the week, between two times of day
/// in a time zone. An end at or before the start ends on the next day
/// (`22:00-02:00`).
#[derive(Debug, Clone)]
pub struct Window {
    /// Monday first.
    days: [bool; 7],
    /// Minutes from midnight.
    start: u16,
    /// Minutes from midnight (1440: midnight at the end of the day).
    end: u16,
    /// The time zone the times are in.
    zone: TimeZone,
    /// The window as written, for people.
    text: String,
}

/// The hint every refusal of a window ends with.
const FORMAT: &str = "write the window as [DAYS] HH:MM-HH:MM [TIME ZONE], e.g. \"Mon-Fri 01:00-05:00 Europe/Paris\" (days: Mon..Sun, ranges and commas; none: every day; time zone: an IANA name, none: UTC)";

impl Window {
    /// Parses a window; an empty one is no window (None).
    pub fn parse(raw: &str) -> Result<Option<Window>, String> {
        let text = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() {
            return Ok(None);
        }
        let parts: Vec<&str> = text.split(' ').collect();
        let at = parts
            .iter()
            .position(|p| p.contains(':'))
            .ok_or_else(|| format!("window {text:?} has no HH:MM-HH:MM times; {FORMAT}"))?;
        let days = match &parts[..at] {
            [] => [true; 7],
            [days] => {
                parse_days(days).map_err(|why| format!("window {text:?}: {why}; {FORMAT}"))?
            }
            _ => {
                return Err(format!(
                    "window {text:?}: the days are one word (Mon-Fri, Sat,Sun); {FORMAT}"
                ));
            }
        };
        let (start, end) =
            parse_times(parts[at]).map_err(|why| format!("window {text:?}: {why}; {FORMAT}"))?;
        let zone = match &parts[at + 1..] {
            [] => TimeZone::UTC,
            [name] => TimeZone::get(name).map_err(|_| {
                format!("window {text:?}: {name:?} is not a time zone klm knows (an IANA name such as Europe/Paris, America/New_York or UTC); {FORMAT}")
            })?,
            _ => return Err(format!("window {text:?} has words after its time zone; {FORMAT}")),
        };
        Ok(Some(Window {
            days,
            start,
            end,
            zone,
            text,
        }))
    }

    /// Whether the window is open at `now`.
    pub fn is_open(&self, now: Timestamp) -> bool {
        self.openings(now, -1..=0)
            .into_iter()
            .any(|(start, end)| start <= now && now < end)
    }

    /// When the window next opens: `now` when it is open.
    pub fn next_open(&self, now: Timestamp) -> Timestamp {
        if self.is_open(now) {
            return now;
        }
        // Every day's window is shorter than a day, so one of the next
        // eight days (today's may be over) holds the next opening.
        self.openings(now, 0..=8)
            .into_iter()
            .map(|(start, _)| start)
            .filter(|start| *start > now)
            .min()
            .expect("a window opens on at least one day a week")
    }

    /// The openings (start, end) of the window's days from `days` days
    /// around the local date of `now`.
    fn openings(
        &self,
        now: Timestamp,
        days: std::ops::RangeInclusive<i64>,
    ) -> Vec<(Timestamp, Timestamp)> {
        let today = now.to_zoned(self.zone.clone()).date();
        days.filter_map(|offset| today.checked_add(offset.days()).ok())
            .filter(|date| self.days[usize::from(date.weekday().to_monday_zero_offset() as u8)])
            .filter_map(|date| {
                let start = self.instant(date, self.start)?;
                let end_date = if self.end <= self.start {
                    date.tomorrow().ok()?
                } else {
                    date
                };
                Some((start, self.instant(end_date, self.end)?))
            })
            .collect()
    }

    /// `minutes` after midnight of `date`, in the window's zone (a time a
    /// clock change skips is the instant after the gap).
    fn instant(&self, date: Date, minutes: u16) -> Option<Timestamp> {
        let (date, minutes) = if minutes == 24 * 60 {
            (date.tomorrow().ok()?, 0)
        } else {
            (date, minutes)
        };
        let time = Time::new((minutes / 60) as i8, (minutes % 60) as i8, 0, 0).ok()?;
        DateTime::from_parts(date, time)
            .to_zoned(self.zone.clone())
            .ok()
            .map(|z| z.timestamp())
    }
}

/// Windows are the same when written the same (once spaces are tidied).
impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// `--window`: the maintenance window, None when empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowArg(pub Option<Window>);

/// Parses `--window` (as clap's value parser; see [`Window::parse`]).
pub fn parse_window(raw: &str) -> Result<WindowArg, String> {
    Window::parse(raw).map(WindowArg)
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `Mon-Fri`, `Sat,Sun`, `Mon,Wed-Fri`: the days, Monday first.
fn parse_days(raw: &str) -> Result<[bool; 7], String> {
    let day = |name: &str| {
        DAYS.iter()
            .position(|d| d.eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("{name:?} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
    };
    let mut days = [false; 7];
    for item in raw.split(',') {
        match item.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (day(from)?, day(to)?);
                // A range may wrap around the week: Fri-Mon.
                let mut d = from;
                loop {
                    days[d] = true;
                    if d == to {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days[day(item)?] = true,
        }
    }
    Ok(days)
}

/// `01:00-05:00`: the start and end in minutes from midnight.
fn parse_times(raw: &str) -> Result<(u16, u16), String> {
    let (start, end) = raw
        .split_once('-')
        .ok_or_else(|| format!("{raw:?} is not a range of two times (01:00-05:00)"))?;
    let minutes = |time: &str| -> Result<u16, String> {
        let bad = || format!("{time:?} is not a time of day (HH:MM, 00:00 to 24:00)");
        let (h, m) = time.split_once(':').ok_or_else(bad)?;
        let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if m > 59 || h > 24 || (h == 24 && m > 0) || time.len() != 5 {
            return Err(bad());
        }
        Ok(h * 60 + m)
    };
    let (start, end) = (minutes(start)?, minutes(end)?);
    if start == 24 * 60 {
        return Err("a window cannot start at 24:00; write 00:00".into());
    }
    if start == end {
        return Err(format!("{raw:?} is a window of no length"));
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(when: &str) -> Timestamp {
        when.parse().unwrap()
    }

    fn window(raw: &str) -> Window {
        Window::parse(raw).unwrap().unwrap()
    }

    #[test]
    fn a_weekday_window_in_paris() {
        // Winter: Paris is UTC+1. 2026-12-02 is a Wednesday.
        let w = window("Mon-Fri 01:00-05:00 Europe/Paris");
        assert!(w.is_open(at("2026-12-02T00:30:00Z")), "01:30 in Paris");
        assert!(
            !w.is_open(at("2026-12-02T04:00:00Z")),
            "05:00 in Paris: closed"
        );
        assert!(!w.is_open(at("2026-12-01T23:59:00Z")), "00:59 in Paris");
        assert_eq!(
            w.next_open(at("2026-12-02T00:30:00Z")),
            at("2026-12-02T00:30:00Z")
        );
        assert_eq!(
            w.next_open(at("2026-12-02T10:00:00Z")),
            at("2026-12-03T00:00:00Z")
        );
        // Friday after the window: Monday's.
        assert_eq!(
            w.next_open(at("2026-12-04T12:00:00Z")),
            at("2026-12-07T00:00:00Z")
        );
        assert_eq!(w.to_string(), "Mon-Fri 01:00-05:00 Europe/Paris");
    }

    #[test]
    fn windows_across_midnight_belong_to_their_first_day() {
        let w = window("Fri 22:00-02:00");
        // Friday 2026-12-04 22:00 UTC to Saturday 02:00.
        assert!(w.is_open(at("2026-12-05T01:59:00Z")));
        assert!(!w.is_open(at("2026-12-05T02:00:00Z")));
        assert!(
            !w.is_open(at("2026-12-04T01:00:00Z")),
            "Thursday's night is not Friday's"
        );
        assert_eq!(
            w.next_open(at("2026-12-05T03:00:00Z")),
            at("2026-12-11T22:00:00Z")
        );
    }

    #[test]
    fn days_ranges_lists_wrap_and_every_day() {
        let w = window("Sat,Sun 00:00-24:00");
        assert!(w.is_open(at("2026-12-05T23:59:00Z")));
        assert!(!w.is_open(at("2026-12-07T00:00:00Z")), "Monday");
        assert_eq!(
            w.next_open(at("2026-12-02T12:00:00Z")),
            at("2026-12-05T00:00:00Z")
        );
        assert_eq!(
            parse_days("Fri-Mon").unwrap(),
            [true, false, false, false, true, true, true]
        );
        assert_eq!(
            parse_days("mon,wed-thu").unwrap(),
            [true, false, true, true, false, false, false]
        );
        let daily = window("09:00-10:00");
        assert_eq!(
            daily.next_open(at("2026-12-02T10:00:00Z")),
            at("2026-12-03T09:00:00Z")
        );
    }

    #[test]
    fn clock_changes_move_the_opening_with_the_zone() {
        // Paris goes to summer time on 2027-03-28 at 02:00 (02:30 does not exist).
        let w = window("Sun 02:30-04:00 Europe/Paris");
        assert_eq!(
            w.next_open(at("2027-03-27T12:00:00Z")),
            at("2027-03-28T01:30:00Z")
        );
        // In summer Paris is UTC+2.
        assert_eq!(
            window("Mon 01:00-02:00 Europe/Paris").next_open(at("2027-06-01T00:00:00Z")),
            at("2027-06-06T23:00:00Z")
        );
    }

    #[test]
    fn bad_windows_say_what_to_write() {
        assert_eq!(Window::parse("  ").unwrap(), None);
        for (bad, says) in [
            ("Mon-Fri", "no HH:MM-HH:MM"),
            ("Mon-Fry 01:00-05:00", "\"Fry\" is not a day"),
            ("Mon 1:00-05:00", "not a time of day"),
            ("Mon 01:00-25:00", "not a time of day"),
            ("Mon 01:60-02:00", "not a time of day"),
            ("Mon 01:00", "not a range"),
            ("Mon 03:00-03:00", "no length"),
            ("Mon 01:00-05:00 Mars/Olympus", "not a time zone"),
            ("Mon 01:00-05:00 Europe/Paris extra", "after its time zone"),
            ("Mon Tue 01:00-05:00", "one word"),
        ] {
            let err = Window::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(
                err.contains("e.g. \"Mon-Fri 01:00-05:00 Europe/Paris\""),
                "{bad}: {err}"
            );
        }
    }
}
