//! The `restart:` section of a profile and the value types it is written
//! in: durations (`1.5`, `500ms`, `2s`), factors and fractions. Plain data.

use serde::Deserialize;
use serde::de::{self, Deserializer};
use std::fmt;
use std::time::Duration;

/// When to restart FFmpeg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Never: the stream ends with FFmpeg's first exit.
    #[default]
    Never,
    /// After a failed run (non-zero exit, killed, stalled), not after a clean end.
    OnFailure,
    /// After every run, clean or not.
    Always,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Never => "never",
            Policy::OnFailure => "on-failure",
            Policy::Always => "always",
        })
    }
}

/// The `restart:` section of a profile.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartConfig {
    pub policy: Policy,
    pub initial_delay: Secs,
    pub factor: Factor,
    pub max_delay: Secs,
    /// Each delay is varied by up to this fraction either way (0 to 1).
    pub jitter: Fraction,
    /// At most this many restarts within `window`; one more and the stream fails.
    pub max_attempts: u32,
    pub window: Secs,
    /// A run that lasted this long resets the backoff to `initial_delay`.
    pub healthy_after: Secs,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            policy: Policy::Never,
            initial_delay: Secs(Duration::from_secs(1)),
            factor: Factor(2.0),
            max_delay: Secs(Duration::from_secs(30)),
            jitter: Fraction(0.2),
            max_attempts: 10,
            window: Secs(Duration::from_secs(600)),
            healthy_after: Secs(Duration::from_secs(30)),
        }
    }
}

/// A duration written as seconds (`1.5`) or with a unit (`500ms`, `2s`, `5m`, `1h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secs(pub Duration);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecsVisitor)
    }
}

struct SecsVisitor;

const DURATION_EXPECTED: &str =
    "a duration: seconds (e.g. 2.5) or a number with ms, s, m or h (e.g. \"500ms\")";

impl de::Visitor<'_> for SecsVisitor {
    type Value = Secs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(DURATION_EXPECTED)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secs, E> {
        Ok(Secs(Duration::from_secs(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs, E> {
        u64::try_from(v)
            .map(|v| Secs(Duration::from_secs(v)))
            .map_err(|_| E::custom(format!("{v}: expected {DURATION_EXPECTED}")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Secs, E> {
        Duration::try_from_secs_f64(v)
            .map(Secs)
            .map_err(|_| E::custom(format!("{v}: expected {DURATION_EXPECTED}")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secs, E> {
        parse_duration(v)
            .map(Secs)
            .ok_or_else(|| E::custom(format!("{v:?}: expected {DURATION_EXPECTED}")))
    }
}

/// Parses `1.5`, `500ms`, `2s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(n * scale).ok()
}

/// A backoff factor, at least 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factor(pub f64);

impl<'de> Deserialize<'de> for Factor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_f64(RangeVisitor {
            min: 1.0,
            max: 100.0,
            what: "a backoff factor from 1 to 100",
        })
        .map(Factor)
    }
}

/// A fraction from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fraction(pub f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_f64(RangeVisitor {
            min: 0.0,
            max: 1.0,
            what: "a fraction from 0 to 1",
        })
        .map(Fraction)
    }
}

struct RangeVisitor {
    min: f64,
    max: f64,
    what: &'static str,
}

impl de::Visitor<'_> for RangeVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        if (self.min..=self.max).contains(&v) {
            Ok(v)
        } else {
            Err(E::custom(format!("{v}: expected {}", self.what)))
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5 fortnights"), None);
    }
}
