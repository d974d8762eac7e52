//! Business hours: weekly ranges and dated exceptions in the bot's IANA time zone.
//! Everything is compared in local wall-clock time, so a 09:00-18:00 day stays
//! 09:00-18:00 across daylight-saving changes.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use super::document::Hours;

/// Minutes since local midnight, `[start, end)`; `end` may be 1440 (24:00).
type Range = (u32, u32);

/// Hours compiled for fast checks.
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessHours {
    /// Monday first.
    week: [Vec<Range>; 7],
    exceptions: Vec<(NaiveDate, Vec<Range>)>,
}

impl BusinessHours {
    /// Compiles the document's hours; errors name the field (`monday[0]`, `exceptions[1].date`).
    pub fn compile(hours: &Hours) -> Result<Self, (String, String)> {
        let days = [
            ("monday", &hours.monday),
            ("tuesday", &hours.tuesday),
            ("wednesday", &hours.wednesday),
            ("thursday", &hours.thursday),
            ("friday", &hours.friday),
            ("saturday", &hours.saturday),
            ("sunday", &hours.sunday),
        ];
        let mut week: [Vec<Range>; 7] = Default::default();
        for (index, (name, ranges)) in days.iter().enumerate() {
            week[index] = ranges_of(name, ranges)?;
        }
        let mut exceptions = Vec::new();
        for (index, exception) in hours.exceptions.iter().enumerate() {
            let date = NaiveDate::parse_from_str(&exception.date, "%Y-%m-%d").map_err(|_| {
                (
                    format!("hours.exceptions[{index}].date"),
                    format!("{:?} is not a date: use YYYY-MM-DD", exception.date),
                )
            })?;
            let ranges = ranges_of(&format!("exceptions[{index}].open"), &exception.open)?;
            exceptions.push((date, ranges));
        }
        Ok(Self { week, exceptions })
    }

    /// Whether the business is open at `now`, seen in `tz`.
    pub fn is_open(&self, tz: Tz, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&tz);
        let minute = local.hour() * 60 + local.minute();
        let today = local.date_naive();
        let open_in = |date: NaiveDate, minute: u32| {
            self.ranges_on(date)
                .iter()
                .any(|&(start, end)| start <= minute && minute < end)
        };
        if open_in(today, minute) {
            return true;
        }
        // Ranges past midnight ("22:00-02:00") belong to the day they start on.
        today
            .pred_opt()
            .is_some_and(|yesterday| self.overnight_on(yesterday).any(|end| minute < end))
    }

    fn ranges_on(&self, date: NaiveDate) -> Vec<Range> {
        let ranges = match self.exceptions.iter().find(|(d, _)| *d == date) {
            Some((_, ranges)) => ranges,
            None => &self.week[weekday_index(date.weekday())],
        };
        ranges
            .iter()
            .map(|&(start, end)| (start, end.min(1440)))
            .collect()
    }

    /// Ends (in the next day's minutes) of ranges on `date` that run past midnight.
    fn overnight_on(&self, date: NaiveDate) -> impl Iterator<Item = u32> + '_ {
        let ranges = match self.exceptions.iter().find(|(d, _)| *d == date) {
            Some((_, ranges)) => ranges.clone(),
            None => self.week[weekday_index(date.weekday())].clone(),
        };
        ranges
            .into_iter()
            .filter(|&(_, end)| end > 1440)
            .map(|(_, end)| end - 1440)
    }
}

fn weekday_index(day: Weekday) -> usize {
    day.num_days_from_monday() as usize
}

/// Parses `"09:00-13:00"`; an end at or before the start runs past midnight and is
/// stored as minutes beyond 1440.
fn ranges_of(field: &str, ranges: &[String]) -> Result<Vec<Range>, (String, String)> {
    ranges
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let err = || {
                (
                    format!("hours.{field}[{index}]"),
                    format!("{text:?} is not a time range: use HH:MM-HH:MM, e.g. 09:00-18:00"),
                )
            };
            let (start, end) = text.split_once('-').ok_or_else(err)?;
            let start = minutes(start.trim()).ok_or_else(err)?;
            let end = minutes(end.trim()).ok_or_else(err)?;
            if start == end || start >= 1440 {
                return Err(err());
            }
            Ok(if end < start {
                (start, end + 1440)
            } else {
                (start, end)
            })
        })
        .collect()
}

fn minutes(text: &str) -> Option<u32> {
    if text == "24:00" {
        return Some(1440);
    }
    let time = NaiveTime::parse_from_str(text, "%H:%M").ok()?;
    Some(time.hour() * 60 + time.minute())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::document::HoursException;
    use chrono::TimeZone;

    fn hours() -> BusinessHours {
        BusinessHours::compile(&Hours {
            monday: vec!["09:00-13:00".into(), "14:00-18:00".into()],
            tuesday: vec!["09:00-18:00".into()],
            wednesday: vec!["09:00-18:00".into()],
            thursday: vec!["09:00-18:00".into()],
            friday: vec!["20:00-02:00".into()],
            saturday: vec!["10:00-24:00".into()],
            sunday: vec![],
            exceptions: vec![
                HoursException {
                    date: "2026-12-25".into(),
                    open: vec![],
                    name: Some("Navidad".into()),
                },
                HoursException {
                    date: "2026-12-24".into(),
                    open: vec!["09:00-12:00".into()],
                    name: None,
                },
            ],
        })
        .unwrap()
    }

    fn at(tz: Tz, y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        tz.with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn weekly_ranges_and_lunch_break() {
        let tz: Tz = "America/Argentina/Buenos_Aires".parse().unwrap();
        let h = hours();
        // 2026-11-23 is a Monday.
        assert!(!h.is_open(tz, at(tz, 2026, 11, 23, 8, 59)));
        assert!(h.is_open(tz, at(tz, 2026, 11, 23, 9, 0)));
        assert!(!h.is_open(tz, at(tz, 2026, 11, 23, 13, 30)));
        assert!(h.is_open(tz, at(tz, 2026, 11, 23, 17, 59)));
        assert!(!h.is_open(tz, at(tz, 2026, 11, 23, 18, 0)));
        // Sunday closed; Saturday open until midnight.
        assert!(!h.is_open(tz, at(tz, 2026, 11, 22, 12, 0)));
        assert!(h.is_open(tz, at(tz, 2026, 11, 21, 23, 59)));
    }

    #[test]
    fn overnight_ranges_belong_to_their_start_day() {
        let tz: Tz = "UTC".parse().unwrap();
        let h = hours();
        // Friday 2026-11-27 20:00 to Saturday 02:00.
        assert!(h.is_open(tz, at(tz, 2026, 11, 27, 23, 0)));
        assert!(h.is_open(tz, at(tz, 2026, 11, 28, 1, 59)));
        assert!(!h.is_open(tz, at(tz, 2026, 11, 28, 2, 0)));
        // Thursday night is not covered by Friday's range.
        assert!(!h.is_open(tz, at(tz, 2026, 11, 27, 1, 0)));
    }

    #[test]
    fn exceptions_override_the_week() {
        let tz: Tz = "Europe/Madrid".parse().unwrap();
        let h = hours();
        // 2026-12-25 is a Friday, closed for Christmas (no overnight either).
        assert!(!h.is_open(tz, at(tz, 2026, 12, 25, 21, 0)));
        // 2026-12-24, a Thursday, only in the morning.
        assert!(h.is_open(tz, at(tz, 2026, 12, 24, 11, 59)));
        assert!(!h.is_open(tz, at(tz, 2026, 12, 24, 12, 0)));
    }

    #[test]
    fn daylight_saving_changes_keep_local_hours() {
        // New York springs forward on Sunday 2026-03-08 and falls back on 2026-11-01;
        // Monday opening stays at 09:00 local on both sides of each change.
        let tz: Tz = "America/New_York".parse().unwrap();
        let h = hours();
        for (month, day) in [(3, 2), (3, 9), (10, 26), (11, 2)] {
            assert!(
                !h.is_open(tz, at(tz, 2026, month, day, 8, 59)),
                "{month}/{day}"
            );
            assert!(
                h.is_open(tz, at(tz, 2026, month, day, 9, 0)),
                "{month}/{day}"
            );
        }
        // 09:00 local is 14:00 UTC in winter and 13:00 UTC in summer.
        assert!(h.is_open(tz, Utc.with_ymd_and_hms(2026, 3, 9, 13, 0, 0).unwrap()));
        assert!(!h.is_open(tz, Utc.with_ymd_and_hms(2026, 3, 2, 13, 0, 0).unwrap()));
        // Madrid: the night of the change (2026-03-29 02:00 → 03:00), a Sunday-to-Saturday
        // overnight range from Saturday still ends at 24:00 local.
        let madrid: Tz = "Europe/Madrid".parse().unwrap();
        assert!(h.is_open(
            madrid,
            Utc.with_ymd_and_hms(2026, 3, 28, 22, 59, 0).unwrap()
        ));
        assert!(!h.is_open(madrid, Utc.with_ymd_and_hms(2026, 3, 28, 23, 0, 0).unwrap()));
        // The fall-back night repeats 01:00-02:00 local; Friday's 20:00-02:00 range covers both.
        let fri = Utc.with_ymd_and_hms(2026, 10, 31, 4, 30, 0).unwrap(); // Sat 00:30 EDT
        assert!(h.is_open(tz, fri));
    }

    #[test]
    fn bad_ranges_name_the_field() {
        let bad = Hours {
            tuesday: vec!["9-18".into()],
            ..Hours::default()
        };
        assert_eq!(
            BusinessHours::compile(&bad).unwrap_err().0,
            "hours.tuesday[0]"
        );
        let same = Hours {
            monday: vec!["09:00-09:00".into()],
            ..Hours::default()
        };
        assert!(BusinessHours::compile(&same).is_err());
        let date = Hours {
            exceptions: vec![HoursException {
                date: "25/12".into(),
                open: vec![],
                name: None,
            }],
            ..Hours::default()
        };
        assert_eq!(
            BusinessHours::compile(&date).unwrap_err().0,
            "hours.exceptions[0].date"
        );
    }
}
