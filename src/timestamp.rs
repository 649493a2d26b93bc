//! UTC timestamps with microsecond precision and their fixed-width text form.
//!
//! The database stores every time as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, so text
//! order is time order and the claim predicate can compare strings. A
//! [`Timestamp`] is truncated to whole microseconds when it is made, so it
//! survives a round trip through the database unchanged.
//!
//! Time is injected: queue functions take a `now: Timestamp`, and long-running
//! parts read it from a [`Clock`] so tests can drive it by hand.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// A point in time, UTC, whole microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

const DB_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from_offset(OffsetDateTime::now_utc())
    }

    /// Makes a timestamp from any offset date-time, converting to UTC and
    /// truncating to microseconds.
    pub fn from_offset(t: OffsetDateTime) -> Self {
        let t = t.to_offset(time::UtcOffset::UTC);
        let micros = t.microsecond();
        // Cannot fail: the value is already a valid nanosecond count.
        let t = t.replace_nanosecond(micros * 1_000).unwrap_or(t);
        Self(t)
    }

    /// The date-time itself (UTC).
    pub fn as_offset(self) -> OffsetDateTime {
        self.0
    }

    /// A file time (or any `SystemTime`), truncated to microseconds.
    pub fn from_system(t: std::time::SystemTime) -> Self {
        Self::from_offset(OffsetDateTime::from(t))
    }

    /// Seconds since the Unix epoch (UTC), for tests and fixtures.
    pub fn from_unix_seconds(secs: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp(secs)
            .ok()
            .map(Self::from_offset)
    }

    /// Parses the database's fixed-width form or any RFC 3339 timestamp.
    pub fn parse(text: &str) -> Option<Self> {
        time::PrimitiveDateTime::parse(text, DB_FORMAT)
            .map(|p| p.assume_utc())
            .or_else(|_| OffsetDateTime::parse(text, &Rfc3339))
            .ok()
            .map(Self::from_offset)
    }

    /// The fixed-width text form stored in the database.
    pub fn to_db(self) -> String {
        // Years 0..=9999 always format; the fallback is never taken for
        // times a clock or a validated bundle can produce.
        self.0
            .format(DB_FORMAT)
            .unwrap_or_else(|_| "0000-00-00T00:00:00.000000Z".to_owned())
    }

    /// This time moved forward by `d` (saturating at the far future).
    pub fn plus(self, d: Duration) -> Self {
        Self(self.0.saturating_add(time_duration(d)))
    }

    /// This time moved back by `d` (saturating at the far past).
    pub fn minus(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(time_duration(d)))
    }

    /// How long after `earlier` this time is; zero if it is not after it.
    pub fn since(self, earlier: Timestamp) -> Duration {
        let d = self.0 - earlier.0;
        Duration::try_from(d).unwrap_or(Duration::ZERO)
    }
}

fn time_duration(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_db())
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_db())
    }
}

/// A duration in the largest unit that divides it (`30m`, `12h`, `7d`,
/// `90s`, `250ms`): how a configured duration is shown back.
pub fn config_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("w", 604_800_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// How long ago (or how far ahead) `t` is from `now`, the way people say
/// it: `just now`, `45s ago`, `3m ago`, `2h ago`, `5d ago`, `in 25s`.
pub fn relative(t: Timestamp, now: Timestamp) -> String {
    let (d, future) = if t > now {
        (t.since(now), true)
    } else {
        (now.since(t), false)
    };
    let s = d.as_secs();
    let amount = match s {
        0 if !future => return "just now".to_owned(),
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        86_400..=31_535_999 => format!("{}d", s / 86_400),
        _ => format!("{}y", s / 31_536_000),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// Formats a duration the way the log lines do: `30s`, `1.5s`, `250ms`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

/// Parses durations such as `250ms`, `30s`, `5m`, `2h`, `7d`, `1w`. The unit
/// is required: a bare `30` could mean seconds or days, and for `prune` the
/// difference is everything.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (expected e.g. 30s, 5m, 12h, 7d, 1w)"))?;
    let secs = match unit.trim() {
        "" => {
            return Err(format!(
                "duration {text:?} needs a unit: ms, s, m, h, d or w (e.g. {text}s or {text}d)"
            ));
        }
        "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        "w" => value * 7.0 * 86_400.0,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {text:?} (use ms, s, m, h, d or w)"
            ));
        }
    };
    if !secs.is_finite() || !(0.0..=1e10).contains(&secs) {
        return Err(format!("duration {text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A time given on the command line: a duration from now (`2h`, `30m`)
/// or an RFC 3339 time (`2026-12-01T22:00:00Z`, `…+02:00`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// This long from now.
    In(Duration),
    /// At this time.
    At(Timestamp),
}

impl When {
    /// Parses a duration or an RFC 3339 time.
    pub fn parse(text: &str) -> Result<When, String> {
        let text = text.trim();
        if text.starts_with(|c: char| c.is_ascii_digit()) && text.len() >= 10 && text.contains('-')
        {
            return Timestamp::parse(text).map(When::At).ok_or_else(|| {
                format!(
                    "invalid time {text:?} (expected RFC 3339 with a zone, e.g. 2026-12-01T22:00:00Z, or a duration from now such as 2h)"
                )
            });
        }
        parse_duration(text)
            .map(When::In)
            .map_err(|e| format!("{e}; or give an RFC 3339 time such as 2026-12-01T22:00:00Z"))
    }

    /// The time it names, `now` being now.
    pub fn resolve(self, now: Timestamp) -> Timestamp {
        match self {
            When::In(d) => now.plus(d),
            When::At(t) => t,
        }
    }
}

/// A source of the current time. Workers read it; tests replace it.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to; shared by clones.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t = t.plus(d);
    }

    /// Sets the clock to `t` (which may be earlier than now).
    pub fn set(&self, t: Timestamp) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_form_is_fixed_width_and_round_trips() {
        let t = Timestamp::parse("2026-11-28T10:00:00.1234567+02:00").unwrap();
        assert_eq!(t.to_db(), "2026-11-28T08:00:00.123456Z");
        assert_eq!(Timestamp::parse(&t.to_db()), Some(t));
        let now = Timestamp::parse("2026-11-28T10:00:00Z").unwrap();
        assert_eq!(
            When::parse("2h").unwrap().resolve(now),
            Timestamp::parse("2026-11-28T12:00:00Z").unwrap()
        );
        assert_eq!(
            When::parse("2026-12-01T22:00:00+01:00")
                .unwrap()
                .resolve(now),
            Timestamp::parse("2026-12-01T21:00:00Z").unwrap()
        );
        assert!(When::parse("2026-12-01").unwrap_err().contains("RFC 3339"));
        assert!(When::parse("tonight").unwrap_err().contains("RFC 3339"));
        let early = Timestamp::from_unix_seconds(5).unwrap();
        assert_eq!(early.to_db().len(), t.to_db().len());
        assert!(early.to_db() < t.to_db());
    }

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("30").unwrap_err().contains("needs a unit"));
        assert_eq!(config_duration(Duration::from_secs(1800)), "30m");
        assert_eq!(config_duration(Duration::from_secs(90)), "90s");
        assert_eq!(config_duration(Duration::from_millis(250)), "250ms");
        let now = Timestamp::from_unix_seconds(1_000_000).unwrap();
        assert_eq!(relative(now, now), "just now");
        assert_eq!(relative(now.minus(Duration::from_secs(180)), now), "3m ago");
        assert_eq!(relative(now.plus(Duration::from_secs(25)), now), "in 25s");
        assert_eq!(human_duration(Duration::from_secs(60)), "60s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
    }
}
