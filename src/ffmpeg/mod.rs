//! FFmpeg: the argv ffwhep builds for it, its output lines and progress
//! reports, and the supervisor that runs it. Knows nothing of WebRTC or HTTP.

pub mod args;
pub mod lines;
pub mod progress;
pub mod snapshot;
pub mod supervisor;
