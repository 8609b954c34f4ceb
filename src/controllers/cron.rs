//! Cron schedules as CronJobs take them (robfig/cron's standard parser, which Kubernetes uses):
//! five fields — minute, hour, day of month, month, day of week — each `*`, `?`, a value, a
//! range `a-b`, a step `*/n` or `a-b/n`, or a list of those; month and weekday names (`jan`,
//! `mon`); the descriptors @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly.
//! When both day fields are restricted a day matching either runs, as in cron.

use jiff::{ToSpan, Zoned};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// A day field given as `*` or `?`: the other one alone decides.
    any_day: bool,
    any_weekday: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(text: &str, names: &[&str], offset: u32) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + offset);
    }
    text.parse().map_err(|_| {
        format!("failed to parse int from {text}: strconv.Atoi: parsing \"{text}\": invalid syntax")
    })
}

/// One field into a bit set over [min, max].
fn field(
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_offset: u32,
) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("failed to parse int from {s}"))?;
                if step == 0 {
                    return Err(format!("step of range should be a positive number: {part}"));
                }
                (r, Some(step))
            }
            None => (part, None),
        };
        let (start, end) = if range == "*" || range == "?" {
            if step.is_none() {
                star = true;
            }
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, names, name_offset)?, value(b, names, name_offset)?)
        } else {
            let v = value(range, names, name_offset)?;
            // "a/n" means from a to the end, in steps of n.
            (v, if step.is_some() { max } else { v })
        };
        if start < min || end > max || start > end {
            return Err(format!(
                "end of range ({end}) above maximum ({max}): {part}"
            ));
        }
        let step = step.unwrap_or(1);
        let mut v = start;
        while v <= end {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(format!("unrecognized descriptor: {other}"));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: {text}",
                fields.len()
            ));
        }
        let (minutes, _) = field(fields[0], 0, 59, &[], 0)?;
        let (hours, _) = field(fields[1], 0, 23, &[], 0)?;
        let (days, any_day) = field(fields[2], 1, 31, &[], 0)?;
        let (months, _) = field(fields[3], 1, 12, &MONTHS, 1)?;
        let (mut weekdays, any_weekday) = field(fields[4], 0, 7, &WEEKDAYS, 0)?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Schedule {
            minutes,
            hours,
            days,
            months,
            weekdays,
            any_day,
            any_weekday,
        })
    }

    fn day_matches(&self, t: &Zoned) -> bool {
        let dom = self.days & (1 << t.day() as u32) != 0;
        let dow = self.weekdays & (1 << t.weekday().to_sunday_zero_offset() as u32) != 0;
        if self.any_day || self.any_weekday {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first scheduled time strictly after `after` (None if none within five years).
    pub fn next(&self, after: &Zoned) -> Option<Zoned> {
        let limit = after.year() as i32 + 5;
        let mut t = after
            .round(
                jiff::ZonedRound::new()
                    .smallest(jiff::Unit::Minute)
                    .mode(jiff::RoundMode::Trunc),
            )
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        while (t.year() as i32) <= limit {
            if self.months & (1 << t.month() as u32) == 0 {
                t = t
                    .first_of_month()
                    .ok()?
                    .start_of_day()
                    .ok()?
                    .checked_add(1.month())
                    .ok()?;
                continue;
            }
            if !self.day_matches(&t) {
                t = t.start_of_day().ok()?.checked_add(1.day()).ok()?;
                continue;
            }
            if self.hours & (1 << t.hour() as u32) == 0 {
                t = t
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minutes & (1 << t.minute() as u32) == 0 {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            return Some(t);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Zoned {
        format!("{s}[UTC]").parse().expect("a zoned time")
    }

    fn next(spec: &str, after: &str) -> String {
        Schedule::parse(spec)
            .expect("a valid schedule")
            .next(&at(after))
            .expect("a next time")
            .strftime("%Y-%m-%dT%H:%M")
            .to_string()
    }

    #[test]
    fn next_times_follow_cron() {
        assert_eq!(
            next("*/1 * * * *", "2024-01-01T10:00:30"),
            "2024-01-01T10:01"
        );
        assert_eq!(
            next("*/15 * * * *", "2024-01-01T10:01:00"),
            "2024-01-01T10:15"
        );
        assert_eq!(next("0 3 * * *", "2024-01-01T10:00:00"), "2024-01-02T03:00");
        assert_eq!(next("@hourly", "2024-01-01T10:00:00"), "2024-01-01T11:00");
        assert_eq!(next("@monthly", "2024-01-15T00:00:00"), "2024-02-01T00:00");
        assert_eq!(
            next("0 0 29 2 *", "2024-03-01T00:00:00"),
            "2028-02-29T00:00"
        );
        assert_eq!(
            next("30 9 * * mon-fri", "2024-01-05T10:00:00"),
            "2024-01-08T09:30"
        );
        assert_eq!(
            next("0 0 * jan,jul sun", "2024-02-01T00:00:00"),
            "2024-07-07T00:00"
        );
        // Both day fields restricted: either may match.
        assert_eq!(
            next("0 0 13 * 5", "2024-01-01T00:00:00"),
            "2024-01-05T00:00"
        );
        assert_eq!(next("0 0 * * 7", "2024-01-01T00:00:00"), "2024-01-07T00:00");
    }

    #[test]
    fn bad_schedules_are_rejected() {
        assert!(Schedule::parse("* * * *").is_err());
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("*/0 * * * *").is_err());
        assert!(Schedule::parse("@sometimes").is_err());
        assert!(Schedule::parse("0 0 * foo *").is_err());
    }
}
