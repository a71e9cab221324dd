//! `GET /usage` and `GET /admin/v1/usage`: what keys used, per UTC day and model, and
//! the `YYYY-MM-DD` days those reports are keyed by.

use serde::{Deserialize, Serialize};

/// One key's use of one model on one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageRow {
    /// The UTC day the requests finished on (`YYYY-MM-DD`).
    #[cfg_attr(feature = "openapi", schema(example = "2026-01-01"))]
    pub day: String,
    /// The name of the key that made the requests.
    pub key_name: String,
    /// The model the requests were sent to.
    #[cfg_attr(feature = "openapi", schema(example = "wan22-fast-t2v"))]
    pub model_id: String,
    /// Requests that ended `COMPLETED`.
    pub completed: u64,
    /// Requests that ended `FAILED` (after their last attempt).
    pub failed: u64,
    /// Requests that ended `CANCELLED`.
    pub cancelled: u64,
    /// Seconds of video the completed requests produced (frames / fps).
    pub video_seconds: f64,
    /// Seconds workers spent rendering the completed requests (failed attempts report
    /// no time, so they are not counted).
    pub run_seconds: f64,
}

/// The sums of a report's rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageTotals {
    /// Requests that ended `COMPLETED`.
    pub completed: u64,
    /// Requests that ended `FAILED`.
    pub failed: u64,
    /// Requests that ended `CANCELLED`.
    pub cancelled: u64,
    /// Seconds of video produced.
    pub video_seconds: f64,
    /// Seconds workers spent rendering.
    pub run_seconds: f64,
}

/// `GET /usage`, `GET /admin/v1/usage` → 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageReport {
    /// The first day counted (`YYYY-MM-DD`, UTC).
    #[cfg_attr(feature = "openapi", schema(example = "2026-01-01"))]
    pub from: String,
    /// The last day counted (`YYYY-MM-DD`, UTC), inclusive.
    #[cfg_attr(feature = "openapi", schema(example = "2026-01-31"))]
    pub to: String,
    /// Ordered by day, then key name, then model; days with no finished requests have
    /// no rows.
    pub rows: Vec<UsageRow>,
    /// The sums of `rows`.
    pub totals: UsageTotals,
}

impl UsageTotals {
    /// The sums of `rows`.
    pub fn of(rows: &[UsageRow]) -> Self {
        rows.iter().fold(Self::default(), |t, r| Self {
            completed: t.completed + r.completed,
            failed: t.failed + r.failed,
            cancelled: t.cancelled + r.cancelled,
            video_seconds: t.video_seconds + r.video_seconds,
            run_seconds: t.run_seconds + r.run_seconds,
        })
    }
}

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (days since 1970-01-01): (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // In range by construction: 1..=31 and 1..=12.
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The day number (days since 1970-01-01, UTC) of a time in milliseconds.
pub fn day_number(ms: i64) -> i64 {
    ms.div_euclid(MS_PER_DAY)
}

/// `YYYY-MM-DD` of a day number.
pub fn day_text(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD` (UTC) of a time in milliseconds since the Unix epoch.
pub fn utc_day(ms: i64) -> String {
    day_text(day_number(ms))
}

/// The day number of a `YYYY-MM-DD` date (years 1000 to 9999); `None` when it is not
/// one, or names a day the month does not have.
pub fn parse_day(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let digits = |s: &str| -> Option<u32> {
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let year = digits(text.get(0..4)?)?;
    let month = digits(text.get(5..7)?)?;
    let day = digits(text.get(8..10)?)?;
    if year < 1000 || !(1..=12).contains(&month) || day == 0 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    // 31 April becomes 1 May: refuse what does not round-trip.
    (civil_from_days(days) == (i64::from(year), month, day)).then_some(days)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(-1), "1969-12-31");
        assert_eq!(utc_day(1_767_225_600_000), "2026-01-01");
        assert_eq!(utc_day(1_767_225_599_999), "2025-12-31");
        for days in [-300_000, -1, 0, 59, 60, 11_016, 20_454, 2_900_000] {
            assert_eq!(parse_day(&day_text(days)), Some(days), "{days}");
        }
        assert_eq!(parse_day("2024-02-29"), Some(19_782));
        for bad in [
            "2025-02-29",
            "2026-04-31",
            "2026-13-01",
            "2026-00-10",
            "2026-1-01",
            "26-01-01",
            "2026/01/01",
            "+026-01-01",
            "",
            "2026-01-0x",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn totals_add_the_rows() {
        let row = |c, v| UsageRow {
            day: "2026-01-01".into(),
            key_name: "k".into(),
            model_id: "m".into(),
            completed: c,
            failed: 1,
            cancelled: 0,
            video_seconds: v,
            run_seconds: 1.5,
        };
        let t = UsageTotals::of(&[row(2, 5.0), row(3, 2.5)]);
        assert_eq!((t.completed, t.failed, t.cancelled), (5, 2, 0));
        assert_eq!((t.video_seconds, t.run_seconds), (7.5, 3.0));
    }
}
