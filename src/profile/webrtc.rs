//! The `webrtc:` section: the payload types, each leg (its input stream,
//! codec, SSRC, keyframe interval), the GOP cache's bounds and the viewer
//! limit, checked as a whole. Plain data.

use super::ladder::{Ladder, SwitchAt};
use super::restart::Secs;
use super::{
    CacheLimits, DEFAULT_AUDIO_PT, DEFAULT_CACHE, DEFAULT_VIDEO_PT, NonEmpty, PayloadType,
    checked_section,
};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use std::time::Duration;

/// The `webrtc:` section, checked.
pub(super) struct RawWebRtc {
    pub(super) enabled: bool,
    pub(super) video_pt: PayloadType,
    pub(super) audio_pt: PayloadType,
    pub(super) video: RawLeg,
    pub(super) audio: RawLeg,
    pub(super) gop_cache: Option<CacheLimits>,
    pub(super) max_viewers: Option<usize>,
}

impl Default for RawWebRtc {
    fn default() -> Self {
        Self {
            enabled: true,
            video_pt: PayloadType(DEFAULT_VIDEO_PT),
            audio_pt: PayloadType(DEFAULT_AUDIO_PT),
            video: RawLeg::default(),
            audio: RawLeg::default(),
            gop_cache: Some(DEFAULT_CACHE),
            max_viewers: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebRtcFields {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_video_pt")]
    video_pt: PayloadType,
    #[serde(default = "default_audio_pt")]
    audio_pt: PayloadType,
    #[serde(default)]
    video: RawLeg,
    #[serde(default)]
    audio: RawLeg,
    #[serde(default)]
    gop_cache: RawGopCache,
    max_viewers: Option<usize>,
}

/// `webrtc.gop_cache`: on by default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGopCache {
    enabled: bool,
    max_bytes: Bytes,
    max_age: Secs,
}

impl Default for RawGopCache {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: Bytes(DEFAULT_CACHE.max_bytes),
            max_age: Secs(DEFAULT_CACHE.max_age),
        }
    }
}

/// A positive size in bytes.
struct Bytes(usize);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        match usize::try_from(n) {
            Ok(n @ 1..) => Ok(Bytes(n)),
            _ => Err(de::Error::custom(format!(
                "{n}: expected a size in bytes above 0"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for RawWebRtc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_section::<D, RawWebRtcFields, Self>(d)
    }
}

impl TryFrom<RawWebRtcFields> for RawWebRtc {
    type Error = String;

    fn try_from(w: RawWebRtcFields) -> Result<Self, String> {
        if w.enabled && !w.video.enabled && !w.audio.enabled {
            return Err(
                "webrtc is enabled but both video and audio legs are disabled; \
                 expected at least one leg, or `enabled: false`"
                    .into(),
            );
        }
        if w.video.enabled && w.audio.enabled && w.video_pt == w.audio_pt {
            return Err(format!(
                "video_pt and audio_pt are both {}: expected two different payload types",
                w.video_pt.0
            ));
        }
        if w.audio.ladder.is_some() {
            return Err(
                "audio.ladder: a ladder has video renditions; expected it under video".into(),
            );
        }
        if w.audio.keyframe_interval.is_some() {
            return Err(
                "audio.keyframe_interval: audio has no keyframes; expected it under video".into(),
            );
        }
        let gop_cache = w.gop_cache.enabled.then_some(CacheLimits {
            max_bytes: w.gop_cache.max_bytes.0,
            max_age: w.gop_cache.max_age.0,
        });
        Ok(Self {
            enabled: w.enabled,
            video_pt: w.video_pt,
            audio_pt: w.audio_pt,
            video: w.video,
            audio: w.audio,
            gop_cache,
            max_viewers: w.max_viewers,
        })
    }
}

pub(super) struct RawLeg {
    pub(super) enabled: bool,
    pub(super) map: Option<NonEmpty>,
    pub(super) codec: Codec,
    pub(super) ssrc: Option<u32>,
    pub(super) keyframe_interval: Option<Duration>,
    pub(super) ladder: Option<Ladder>,
    pub(super) switch_at: SwitchAt,
}

/// How a leg gets its codec: the default encoder, the profile's own options,
/// or a pass-through copy.
pub(super) enum Codec {
    Default,
    Encoder(Vec<String>),
    Copy,
}

impl Default for RawLeg {
    fn default() -> Self {
        Self {
            enabled: true,
            map: None,
            codec: Codec::Default,
            ssrc: None,
            keyframe_interval: None,
            ladder: None,
            switch_at: SwitchAt::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLegFields {
    #[serde(default = "yes")]
    enabled: bool,
    map: Option<NonEmpty>,
    #[serde(default)]
    copy: bool,
    encoder: Option<Vec<String>>,
    ssrc: Option<u32>,
    keyframe_interval: Option<Secs>,
    ladder: Option<Ladder>,
    switch_at: Option<SwitchAt>,
}

impl<'de> Deserialize<'de> for RawLeg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_section::<D, RawLegFields, Self>(d)
    }
}

impl TryFrom<RawLegFields> for RawLeg {
    type Error = String;

    fn try_from(l: RawLegFields) -> Result<Self, String> {
        let codec = match (l.copy, l.encoder) {
            (true, Some(_)) => {
                return Err(
                    "`copy: true` and `encoder` exclude each other: expected one of them".into(),
                );
            }
            (true, None) => Codec::Copy,
            (false, Some(opts)) if opts.is_empty() => {
                return Err("`encoder` is empty: expected encoder options such as [\"-c:v\", \"libx264\"], or leave it out for the defaults".into());
            }
            (false, Some(opts)) => Codec::Encoder(opts),
            (false, None) => Codec::Default,
        };
        let keyframe_interval = l.keyframe_interval.map(|s| s.0);
        if keyframe_interval.is_some() && !matches!(codec, Codec::Default) {
            return Err("`keyframe_interval` sets the default encoder's keyframes: \
                 expected it without `copy` or `encoder` (put -g or -force_key_frames in `encoder`)"
                .into());
        }
        if keyframe_interval.is_some_and(|d| d.is_zero()) {
            return Err("`keyframe_interval` is 0: expected a duration above 0".into());
        }
        if let (Codec::Copy, Some(ladder)) = (&codec, &l.ladder)
            && ladder.0[0].fps.is_some()
        {
            return Err(
                "ladder[0]: with `copy: true` the first rung is the copied input, \
                 whose frame rate cannot change: expected no `fps` on it"
                    .into(),
            );
        }
        if l.switch_at.is_some() && l.ladder.is_none() {
            return Err(
                "`switch_at` says how a viewer switches between the renditions of a ladder: \
                 expected it beside `ladder`"
                    .into(),
            );
        }
        Ok(Self {
            enabled: l.enabled,
            map: l.map,
            codec,
            ssrc: l.ssrc,
            keyframe_interval,
            ladder: l.ladder,
            switch_at: l.switch_at.unwrap_or_default(),
        })
    }
}

fn yes() -> bool {
    true
}
fn default_video_pt() -> PayloadType {
    PayloadType(DEFAULT_VIDEO_PT)
}
fn default_audio_pt() -> PayloadType {
    PayloadType(DEFAULT_AUDIO_PT)
}
