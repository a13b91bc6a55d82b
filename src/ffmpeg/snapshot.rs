//! The short FFmpeg run behind a snapshot: H.264 (Annex B) in on stdin, the
//! last of its frames out as one JPEG on stdout.

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The longest a decode may take before it is killed.
pub const DECODE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of FFmpeg's stderr kept for an error.
const MAX_ERROR: usize = 1024;
/// Frames written before the last: a decoder that drops a damaged frame or
/// two still writes the newest it has.
const SLACK_FRAMES: usize = 3;

/// The argv (after the program) that decodes `frames` frames of H.264 from
/// stdin on one thread and writes the last few as JPEGs, `width` wide when
/// given (the height follows the aspect ratio, rounded to even).
pub fn argv(frames: usize, width: Option<u32>) -> Vec<String> {
    let from = frames.saturating_sub(1 + SLACK_FRAMES);
    let mut filter = format!("select=gte(n\\,{from})");
    if let Some(w) = width {
        filter.push_str(&format!(",scale={w}:-2"));
    }
    [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-threads",
        "1",
        "-f",
        "h264",
        "-i",
        "pipe:0",
        "-vf",
        &filter,
        "-c:v",
        "mjpeg",
        "-q:v",
        "3",
        "-f",
        "image2pipe",
        "pipe:1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs `ffmpeg` on `annexb`; the JPEG, or what went wrong.
pub async fn decode(
    ffmpeg: &OsStr,
    annexb: Vec<u8>,
    frames: usize,
    width: Option<u32>,
) -> anyhow::Result<Vec<u8>> {
    let mut child = tokio::process::Command::new(ffmpeg)
        .args(argv(frames, width))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        anyhow::bail!("FFmpeg's pipes were not set up");
    };
    // Written while the output is read: neither side can fill up.
    let feed = async move {
        // FFmpeg may stop reading once it has its frame: not an error.
        let _ = stdin.write_all(&annexb).await;
        drop(stdin);
    };
    let mut jpegs = Vec::new();
    let mut err = Vec::new();
    let mut stderr = (&mut stderr).take(MAX_ERROR as u64);
    let run = async {
        let (_, out, e) = tokio::join!(
            feed,
            stdout.read_to_end(&mut jpegs),
            stderr.read_to_end(&mut err)
        );
        out?;
        e?;
        child.wait().await
    };
    let status = tokio::time::timeout(DECODE_TIMEOUT, run)
        .await
        .map_err(|_| anyhow::anyhow!("FFmpeg took over {DECODE_TIMEOUT:?}"))??;
    let err = String::from_utf8_lossy(&err).trim().to_owned();
    if !status.success() {
        anyhow::bail!("FFmpeg {status}: {err}");
    }
    match last_jpeg(&jpegs) {
        Some(start) => Ok(jpegs.split_off(start)),
        None => anyhow::bail!("FFmpeg wrote no picture: {err}"),
    }
}

/// Where the last of concatenated JPEGs starts: its SOI marker followed by
/// another marker (inside a JPEG's entropy-coded data 0xFF is always
/// followed by 0x00, so FF D8 FF is no image data).
fn last_jpeg(data: &[u8]) -> Option<usize> {
    data.windows(3).rposition(|w| w == [0xff, 0xd8, 0xff])
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_last_frames_are_selected_and_scaled() {
        let a = super::argv(120, Some(320)).join(" ");
        assert!(a.contains("-threads 1 -f h264 -i pipe:0"), "{a}");
        assert!(a.contains("-vf select=gte(n\\,116),scale=320:-2"), "{a}");
        assert!(a.ends_with("-c:v mjpeg -q:v 3 -f image2pipe pipe:1"), "{a}");
        let a = super::argv(1, None).join(" ");
        assert!(a.contains("-vf select=gte(n\\,0) "), "{a}");
    }

    #[test]
    fn the_last_of_several_jpegs_is_found() {
        let one = [0xff, 0xd8, 0xff, 0xe0, 1, 0xff, 0x00, 2, 0xff, 0xd9];
        let mut two = one.to_vec();
        two.extend([0xff, 0xd8, 0xff, 0xdb, 3, 0xff, 0xd9]);
        assert_eq!(super::last_jpeg(&one), Some(0));
        assert_eq!(super::last_jpeg(&two), Some(one.len()));
        assert_eq!(super::last_jpeg(&[1, 2, 3]), None);
    }
}
