mod ffmpeg;
mod ports;
mod profile;
mod rtp;
mod source;
fn main() {}
