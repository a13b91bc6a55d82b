//! FFmpeg: the argv ffwhep builds for it, its progress reports, and the
//! supervisor that runs it.

pub mod args;
pub mod progress;
pub mod supervisor;
