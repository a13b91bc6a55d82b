//! The YAML stream profile: its schema, defaults and validation, turned into
//! a typed [`Plan`] that nothing downstream has to re-check.
//!
//! Every check that can fail runs while serde_yaml walks the document, so each
//! error carries the line and column of the value that is wrong.

pub mod access;
pub mod hooks;
pub mod ladder;
pub mod restart;
mod webrtc;
pub mod whip;

use access::Access;
use hooks::HookConfig;
use ladder::{Ladder, Rung};
use restart::{RestartConfig, Secs};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use std::fmt;
use std::path::Path;
use std::time::Duration;
use webrtc::{Codec, RawLeg, RawWebRtc};
use whip::WhipConfig;

/// The profile compiled into the binary: `profiles/testsrc.yaml`.
pub const BUILTIN_TESTSRC: &str = include_str!("../../profiles/testsrc.yaml");
/// The name the built-in profile goes by in messages.
pub const BUILTIN_NAME: &str = "<built-in testsrc>";

/// Default RTP payload type of the H.264 leg.
pub const DEFAULT_VIDEO_PT: u8 = 102;
/// Default RTP payload type of the Opus leg.
pub const DEFAULT_AUDIO_PT: u8 = 111;

/// The default keyframe interval: with the GOP cache, join time does not
/// depend on it, so it leans toward quality; 2 s keeps a viewer without the
/// cache waiting 1 s on average.
pub const DEFAULT_KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);
/// Default GOP cache bounds: 8 MB holds a 4 s GOP of 15 Mb/s video.
pub const DEFAULT_CACHE: CacheLimits = CacheLimits {
    max_bytes: 8_000_000,
    max_age: Duration::from_secs(10),
};

/// Encoder options for the video leg when the profile gives none (README,
/// "Profiles"; constrained-baseline is what every browser decodes):
/// WebRTC-safe H.264 with no B-frames and a keyframe every `interval`.
pub fn default_video_encoder(interval: Duration) -> Vec<String> {
    let mut v = to_strings(&DEFAULT_VIDEO_ENCODER[..DEFAULT_VIDEO_ENCODER.len() - 1]);
    v.push(format!("expr:gte(t,n_forced*{})", interval.as_secs_f64()));
    v
}

/// [`default_video_encoder`]'s options before the keyframe expression.
const DEFAULT_VIDEO_ENCODER: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-tune",
    "zerolatency",
    "-profile:v",
    "baseline",
    "-pix_fmt",
    "yuv420p",
    "-bf",
    "0",
    "-force_key_frames",
    "",
];
/// Encoder options for the audio leg when the profile gives none.
pub const DEFAULT_AUDIO_ENCODER: &[&str] =
    &["-c:a", "libopus", "-ar", "48000", "-ac", "2", "-b:a", "64k"];
/// Video options for `copy: true`: pass H.264 through, with SPS/PPS in-band
/// before every IDR so a viewer can start decoding.
pub const VIDEO_COPY: &[&str] = &[
    "-c:v",
    "copy",
    "-bsf:v",
    "h264_mp4toannexb,dump_extra=freq=keyframe",
];
/// Audio options for `copy: true`: pass Opus through.
pub const AUDIO_COPY: &[&str] = &["-c:a", "copy"];

/// A profile that could not be used, with where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    pub file: String,
    /// 1-based line and column, when the error points into the document.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ProfileError {}

/// A stream id: 1 to 64 of letters, digits, `_` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamId(String);

impl StreamId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if s.is_empty() || s.len() > 64 || !s.chars().all(ok_char) {
            return Err(format!(
                "invalid stream id {s:?}: expected 1 to 64 letters, digits, '_' or '-'"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor("a stream id", StreamId::parse))
    }
}

/// Reads a section as its raw fields, then checks them as a whole (`T`
/// from `R`) while still inside the section's mapping: so serde_yaml marks
/// an error of the check with the section's line and column, not those of
/// the mapping around it (`#[serde(try_from)]` checks only after leaving it).
pub(crate) fn checked_section<'de, D, R, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    R: Deserialize<'de>,
    T: TryFrom<R, Error = String>,
{
    struct Section<R, T>(std::marker::PhantomData<(R, T)>);
    impl<'de, R: Deserialize<'de>, T: TryFrom<R, Error = String>> de::Visitor<'de> for Section<R, T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping")
        }

        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            let raw = R::deserialize(de::value::MapAccessDeserializer::new(map))?;
            T::try_from(raw).map_err(de::Error::custom)
        }
    }
    d.deserialize_map(Section(std::marker::PhantomData))
}

/// Validates a string scalar inside the visitor, so serde_yaml marks the
/// error with the scalar's own line and column.
struct StrVisitor<F>(&'static str, F);

impl<T, F: FnOnce(&str) -> Result<T, String>> de::Visitor<'_> for StrVisitor<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.1)(v).map_err(E::custom)
    }
}

/// A dynamic RTP payload type, 96 to 127.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadType(pub u8);

impl<'de> Deserialize<'de> for PayloadType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_i64(PtVisitor)
    }
}

struct PtVisitor;

impl de::Visitor<'_> for PtVisitor {
    type Value = PayloadType;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a dynamic payload type, 96 to 127")
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<PayloadType, E> {
        match u8::try_from(n) {
            Ok(pt @ 96..=127) => Ok(PayloadType(pt)),
            _ => Err(E::custom(format!(
                "invalid payload type {n}: expected a dynamic payload type, 96 to 127"
            ))),
        }
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<PayloadType, E> {
        self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

/// A string that must not be empty (addresses, stream maps).
#[derive(Debug, Clone, PartialEq, Eq)]
struct NonEmpty(String);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor("a non-empty string", |s: &str| {
            if s.trim().is_empty() {
                return Err("empty string: expected a non-empty string".to_owned());
            }
            Ok(NonEmpty(s.to_owned()))
        }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    id: StreamId,
    #[serde(default)]
    options: Vec<String>,
    input: Inputs,
    #[serde(default)]
    output: Vec<RawIo>,
    #[serde(default)]
    webrtc: RawWebRtc,
    #[serde(default)]
    restart: RestartConfig,
    #[serde(default = "default_stale_timeout")]
    stale_timeout: Secs,
    auth: Option<Access>,
    #[serde(default)]
    hooks: Vec<HookConfig>,
    #[serde(default)]
    whip: Vec<WhipConfig>,
}

/// How long FFmpeg may go without progress (or a source without RTP) before
/// it is treated as stalled.
pub const DEFAULT_STALE_TIMEOUT: Duration = Duration::from_secs(15);

fn default_stale_timeout() -> Secs {
    Secs(DEFAULT_STALE_TIMEOUT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIo {
    address: NonEmpty,
    #[serde(default)]
    options: Vec<String>,
}

/// The `input` list, which must hold at least one input.
struct Inputs(Vec<RawIo>);

impl<'de> Deserialize<'de> for Inputs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(InputsVisitor)
    }
}

struct InputsVisitor;

impl<'de> de::Visitor<'de> for InputsVisitor {
    type Value = Inputs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of inputs")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Inputs, A::Error> {
        let mut list = Vec::new();
        while let Some(io) = seq.next_element::<RawIo>()? {
            list.push(io);
        }
        if list.is_empty() {
            return Err(de::Error::custom(
                "empty input list: expected at least one input",
            ));
        }
        Ok(Inputs(list))
    }
}

/// An FFmpeg input or output: its options, then its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Io {
    pub address: String,
    pub options: Vec<String>,
}

/// The kind of media a leg carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Video,
    Audio,
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
        })
    }
}

/// One injected RTP leg, ready to be turned into FFmpeg arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct LegPlan {
    pub kind: MediaKind,
    /// The `-map` specifier of the input stream this leg carries.
    pub map: String,
    /// Codec options: the defaults, the profile's own, or a copy.
    pub codec_args: Vec<String>,
    pub payload_type: u8,
    pub ssrc: u32,
    /// The video ladder's renditions, from the best down: each its own RTP
    /// leg (the first on the leg's port). Empty without a ladder.
    pub rungs: Vec<RungPlan>,
    /// Where a viewer's switch between them takes effect.
    pub switch_at: ladder::SwitchAt,
}

/// One rendition of a laddered video leg, ready for FFmpeg.
#[derive(Debug, Clone, PartialEq)]
pub struct RungPlan {
    pub rung: Rung,
    pub ssrc: u32,
    /// The leg's encoder (or the default) with this rung's bitrate; for the
    /// first rung of a copied leg, the copy.
    pub codec_args: Vec<String>,
    /// Scaled from the decoded input; false for the copied input itself.
    pub scaled: bool,
}

/// A validated profile: everything needed to run one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub id: StreamId,
    pub global_options: Vec<String>,
    pub inputs: Vec<Io>,
    pub outputs: Vec<Io>,
    pub video: Option<LegPlan>,
    pub audio: Option<LegPlan>,
    pub restart: RestartConfig,
    /// `None` when stall detection is off (`stale_timeout: 0`).
    pub stale_timeout: Option<Duration>,
    /// The video GOP cache's bounds; `None` when it is off.
    pub gop_cache: Option<CacheLimits>,
    /// Who may watch: the stream's own bearer token, or a service to ask.
    pub auth: Option<Access>,
    /// At most this many viewers of this stream (503 beyond).
    pub max_viewers: Option<usize>,
    /// What runs, or is told, when something happens to the stream.
    pub hooks: Vec<HookConfig>,
    /// SFUs the stream is pushed into over WHIP.
    pub whip: Vec<WhipConfig>,
}

impl Plan {
    /// Reads and validates the profile at `path`.
    pub fn from_file(path: &Path) -> Result<Self, ProfileError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
            file: file.clone(),
            position: None,
            message: format!("cannot read the profile: {e}"),
        })?;
        Self::from_yaml(&text, &file)
    }

    /// The built-in test-pattern profile.
    pub fn builtin() -> Result<Self, ProfileError> {
        Self::from_yaml(BUILTIN_TESTSRC, BUILTIN_NAME)
    }

    /// Parses and validates profile text; `file` names it in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<Self, ProfileError> {
        let raw: RawProfile = serde_yaml::from_str(text).map_err(|e| yaml_error(file, &e))?;
        Ok(Self::from_raw(raw))
    }

    fn from_raw(raw: RawProfile) -> Self {
        let w = raw.webrtc;
        let leg = |kind: MediaKind, l: RawLeg, pt: PayloadType| -> Option<LegPlan> {
            if !w.enabled || !l.enabled {
                return None;
            }
            let interval = l.keyframe_interval.unwrap_or(DEFAULT_KEYFRAME_INTERVAL);
            let (default_map, default_enc, copy) = match kind {
                MediaKind::Video => ("0:v:0", default_video_encoder(interval), VIDEO_COPY),
                MediaKind::Audio => ("0:a:0", to_strings(DEFAULT_AUDIO_ENCODER), AUDIO_COPY),
            };
            let ssrc = l.ssrc.unwrap_or_else(|| default_ssrc(&raw.id, kind));
            let rungs = l
                .ladder
                .as_ref()
                .map(|ladder| rung_plans(ladder, &l.codec, interval, ssrc))
                .unwrap_or_default();
            let codec_args = match l.codec {
                Codec::Default => default_enc,
                Codec::Copy => to_strings(copy),
                Codec::Encoder(opts) => opts,
            };
            Some(LegPlan {
                kind,
                map: l.map.map_or_else(|| default_map.to_owned(), |m| m.0),
                codec_args,
                payload_type: pt.0,
                ssrc,
                rungs,
                switch_at: l.switch_at,
            })
        };
        let video = leg(MediaKind::Video, w.video, w.video_pt);
        let audio = leg(MediaKind::Audio, w.audio, w.audio_pt);
        let io = |v: Vec<RawIo>| {
            v.into_iter()
                .map(|r| Io {
                    address: r.address.0,
                    options: r.options,
                })
                .collect()
        };
        Plan {
            max_viewers: w.max_viewers,
            auth: raw.auth,
            hooks: raw.hooks,
            whip: raw.whip,
            gop_cache: w.gop_cache,
            restart: raw.restart,
            stale_timeout: Some(raw.stale_timeout.0).filter(|d| !d.is_zero()),
            global_options: raw.options,
            inputs: io(raw.input.0),
            outputs: io(raw.output),
            video,
            audio,
            id: raw.id,
        }
    }
}

/// Each rung's codec options (its bitrate as the target and the cap, with
/// half a second of rate-control buffer) and SSRC. The encoded rungs of a copied leg
/// take their keyframes where the input has them, so every rung's GOPs
/// line up.
fn rung_plans(ladder: &Ladder, codec: &Codec, interval: Duration, ssrc: u32) -> Vec<RungPlan> {
    ladder
        .0
        .iter()
        .enumerate()
        .map(|(k, rung)| {
            let copied = k == 0 && matches!(codec, Codec::Copy);
            let codec_args = if copied {
                to_strings(VIDEO_COPY)
            } else {
                let mut args = match codec {
                    Codec::Encoder(opts) => opts.clone(),
                    Codec::Default => default_video_encoder(interval),
                    Codec::Copy => keyframes_of_the_source(default_video_encoder(interval)),
                };
                // Half a second of buffer: a keyframe is at most that much
                // of the rung's rate, a burst a modest link can queue.
                let b = rung.bitrate.to_string();
                let buf = (rung.bitrate / 2).to_string();
                args.extend(["-b:v", &b, "-maxrate", &b, "-bufsize", &buf].map(String::from));
                args
            };
            RungPlan {
                rung: *rung,
                ssrc: rung_ssrc(ssrc, k),
                codec_args,
                scaled: !copied,
            }
        })
        .collect()
}

/// The default encoder's options with its keyframes where the input's are.
fn keyframes_of_the_source(mut args: Vec<String>) -> Vec<String> {
    if let Some(last) = args.last_mut() {
        "source".clone_into(last);
    }
    args
}

/// Rung `k`'s SSRC: the leg's for the first, a stable other for the rest.
fn rung_ssrc(leg: u32, k: usize) -> u32 {
    if k == 0 {
        return leg;
    }
    let mixed = leg ^ (k as u32).wrapping_mul(0x9e37_79b9);
    let s = mixed & 0x7fff_ffff;
    if s == leg { s ^ 1 } else { s }
}

fn to_strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| (*s).to_owned()).collect()
}

/// A stable SSRC for FFmpeg's leg, so `ffwhep args` prints exactly what
/// `run` spawns. Viewers never see it: each gets its own SSRC.
fn default_ssrc(id: &StreamId, kind: MediaKind) -> u32 {
    // FNV-1a over the id and the kind.
    let mut h: u32 = 0x811c_9dc5;
    for b in id.as_str().bytes().chain([kind as u8]) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    // FFmpeg reads -ssrc as a signed 32-bit integer: keep it positive.
    h & 0x7fff_ffff
}

fn yaml_error(file: &str, e: &serde_yaml::Error) -> ProfileError {
    let position = e.location().map(|l| (l.line(), l.column()));
    // serde_yaml appends " at line L column C"; the position is shown in front instead.
    let mut message = e.to_string();
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    ProfileError {
        file: file.to_owned(),
        position,
        message,
    }
}

/// Bounds of the GOP cache; past either it is dropped until the next keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub max_bytes: usize,
    pub max_age: Duration,
}

#[cfg(test)]
mod tests;
