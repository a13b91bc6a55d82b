//! `webrtc.video.ladder`: the renditions the video leg is sent in, from the
//! best down, each rung checked where it is written (so an error carries
//! that rung's line and column). Plain data.

use serde::Deserialize;
use serde::de::{self, Deserializer};
use std::fmt;

/// At most this many rungs: each is an encoder in FFmpeg and a port here.
pub const MAX_RUNGS: usize = 6;

/// One rendition of the ladder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rung {
    /// Picture height in pixels; the width follows the aspect ratio.
    pub height: u32,
    /// Target video bitrate in bits per second.
    pub bitrate: u64,
    /// Frame rate, when the rung lowers it.
    pub fps: Option<f64>,
}

impl Rung {
    /// What the rung is called in URLs, logs and status: its height.
    pub fn name(&self) -> String {
        format!("{}p", self.height)
    }
}

/// Where a viewer's switch between renditions takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwitchAt {
    /// At the target rendition's next keyframe, live.
    #[default]
    Keyframe,
    /// At once, from the target's cached GOP (as a viewer joins).
    Cache,
}

/// The ladder as written: one rung or more, each shorter and leaner than
/// the one above it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ladder(pub Vec<Rung>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRung {
    height: Height,
    bitrate: Bitrate,
    fps: Option<Fps>,
}

impl<'de> Deserialize<'de> for Ladder {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(LadderVisitor)
    }
}

struct LadderVisitor;

impl<'de> de::Visitor<'de> for LadderVisitor {
    type Value = Ladder;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of renditions, e.g. [{height: 720, bitrate: 2500k}]")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Ladder, A::Error> {
        let mut rungs: Vec<Rung> = Vec::new();
        loop {
            let seed = RungSeed {
                above: rungs.last().copied(),
                index: rungs.len(),
            };
            let Some(rung) = seq.next_element_seed(seed)? else {
                break;
            };
            rungs.push(rung);
        }
        if rungs.is_empty() {
            return Err(de::Error::custom(
                "empty ladder: expected at least one rung, or leave `ladder` out",
            ));
        }
        Ok(Ladder(rungs))
    }
}

/// Reads rung `index` and checks it against the one above it while still
/// inside its mapping, so an error carries the rung's own position.
struct RungSeed {
    above: Option<Rung>,
    index: usize,
}

impl<'de> de::DeserializeSeed<'de> for RungSeed {
    type Value = Rung;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Rung, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> de::Visitor<'de> for RungSeed {
    type Value = Rung;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a rung, e.g. {height: 360, bitrate: 700k}")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Rung, A::Error> {
        let r = RawRung::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let rung = Rung {
            height: r.height.0,
            bitrate: r.bitrate.0,
            fps: r.fps.map(|f| f.0),
        };
        if self.index >= MAX_RUNGS {
            return Err(de::Error::custom(format!(
                "more than {MAX_RUNGS} rungs: expected at most {MAX_RUNGS}"
            )));
        }
        if let Some(above) = &self.above {
            check_below(above, &rung).map_err(de::Error::custom)?;
        }
        Ok(rung)
    }
}

/// A rung must be shorter and leaner than the one above it.
fn check_below(above: &Rung, rung: &Rung) -> Result<(), String> {
    if rung.height >= above.height {
        return Err(format!(
            "height {} is not below the rung above it ({}): \
             expected rungs from the tallest down",
            rung.height, above.height
        ));
    }
    if rung.bitrate >= above.bitrate {
        return Err(format!(
            "bitrate {} is not below the rung above it ({}): \
             expected each rung leaner than the one above",
            Bitrate(rung.bitrate),
            Bitrate(above.bitrate)
        ));
    }
    Ok(())
}

/// An even picture height, 32 to 4320 (4:2:0 needs even dimensions).
struct Height(u32);

impl<'de> Deserialize<'de> for Height {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        match u32::try_from(n) {
            Ok(h @ 32..=4320) if h.is_multiple_of(2) => Ok(Height(h)),
            _ => Err(de::Error::custom(format!(
                "height {n}: expected an even number of pixels, 32 to 4320"
            ))),
        }
    }
}

/// Bits per second: a number, or one with a `k` or `M` suffix ("700k").
#[derive(Clone, Copy)]
pub(crate) struct Bitrate(pub u64);

/// Bitrates a rung may have: 16 kb/s to 100 Mb/s.
const BITRATES: std::ops::RangeInclusive<u64> = 16_000..=100_000_000;

impl Bitrate {
    fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("bitrate {s:?}: expected bits per second, e.g. 2500k, 2.5M or 700000");
        let t = s.trim();
        let (digits, unit) = match t.char_indices().last() {
            Some((i, 'k' | 'K')) => (&t[..i], 1e3),
            Some((i, 'm' | 'M')) => (&t[..i], 1e6),
            _ => (t, 1.0),
        };
        let n: f64 = digits.trim().parse().map_err(|_| bad())?;
        let bps = n * unit;
        if !bps.is_finite() || bps < 0.0 {
            return Err(bad());
        }
        Self::checked(bps.round() as u64)
    }

    fn checked(bps: u64) -> Result<Self, String> {
        if BITRATES.contains(&bps) {
            Ok(Self(bps))
        } else {
            Err(format!(
                "bitrate {}: expected 16k to 100M bits per second",
                Bitrate(bps)
            ))
        }
    }
}

impl fmt::Display for Bitrate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b.is_multiple_of(1000) {
            write!(f, "{}k", b / 1000)
        } else {
            write!(f, "{b}")
        }
    }
}

impl<'de> Deserialize<'de> for Bitrate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Bitrate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a bitrate, e.g. 2500k")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Bitrate, E> {
                Bitrate::checked(n).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Bitrate, E> {
                self.visit_u64(u64::try_from(n).unwrap_or(0))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Bitrate, E> {
                Bitrate::parse(&n.to_string()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Bitrate, E> {
                Bitrate::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A frame rate above 0, at most 240.
struct Fps(f64);

impl<'de> Deserialize<'de> for Fps {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = f64::deserialize(d)?;
        if n > 0.0 && n <= 240.0 {
            Ok(Fps(n))
        } else {
            Err(de::Error::custom(format!(
                "fps {n}: expected a frame rate above 0, at most 240"
            )))
        }
    }
}
