//! FFmpeg: the argv ffwhep builds for it and the supervisor that runs it.

pub mod args;
pub mod supervisor;
