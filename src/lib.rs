//! ffwhep: run FFmpeg and serve its output to WebRTC viewers over WHEP.
//!
//! Layers, bottom up: `profile` (the typed plan), `ffmpeg` (argv and the
//! supervisor), `ports`, `rtp` and `source` (RTP in), `offer` and `peer`
//! (WebRTC out), `whep` (HTTP), `stream` (one stream's lifecycle), `app`
//! (the commands) and `smoke` (the built-in viewer that checks a profile).

pub mod app;
pub mod auth;
pub mod candidates;
pub mod cli;
pub mod exit;
pub mod ffmpeg;
pub mod h264;
pub mod http;
pub mod latency;
pub mod metrics;
pub mod offer;
pub mod peer;
pub mod player;
pub mod ports;
pub mod profile;
pub mod registry;
pub mod restart;
pub mod rtp;
pub mod smoke;
pub mod source;
pub mod status;
pub mod stream;
pub mod term;
pub mod trickle;
pub mod whep;
