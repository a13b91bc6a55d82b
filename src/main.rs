//! ffwhep: run FFmpeg and serve its output to WebRTC viewers over WHEP.

fn main() -> std::process::ExitCode {
    ffwhep::main()
}
