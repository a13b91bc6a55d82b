//! H.264 bitstream facts the relay, snapshots and the smoke check need: NAL
//! unit types in RTP payloads and Annex B data, RTP payloads turned back
//! into Annex B, and the picture size an SPS declares. Pure; nothing here
//! can panic on any input.

/// NAL unit types (ITU-T H.264 table 7-1) that matter here.
pub mod nal {
    pub const NON_IDR: u8 = 1;
    pub const IDR: u8 = 5;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
}

/// The NAL units of Annex B data (start codes 00 00 01 or 00 00 00 01), each
/// without its start code.
pub fn annexb_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 2 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|s| s - 3)
        .chain([data.len()])
        .collect();
    starts.into_iter().zip(ends).map(move |(s, e)| {
        // Drop the zero byte of a 4-byte start code that precedes the next unit.
        let mut end = e;
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        &data[s..end]
    })
}

/// What one RTP payload of H.264 (RFC 6184) carries, as far as starting a
/// decoder goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PayloadNals {
    pub sps: bool,
    pub pps: bool,
    /// The start of an IDR slice (a whole one, or the first FU-A fragment).
    pub idr_start: bool,
}

impl PayloadNals {
    /// The payload begins or belongs to a keyframe a decoder can start on.
    pub fn is_keyframe_part(&self) -> bool {
        self.sps || self.pps || self.idr_start
    }
}

/// NAL type of a STAP-A aggregation packet.
const STAP_A: u8 = 24;
/// NAL type of an FU-A fragment.
const FU_A: u8 = 28;

/// Reads the NAL types an RTP payload carries: a single NAL unit, a STAP-A
/// (several units with 16-bit sizes), or an FU-A fragment (whose start bit
/// and inner type are read). Malformed payloads carry nothing.
pub fn payload_nals(payload: &[u8]) -> PayloadNals {
    let mut out = PayloadNals::default();
    let mut note = |t: u8| match t {
        nal::SPS => out.sps = true,
        nal::PPS => out.pps = true,
        nal::IDR => out.idr_start = true,
        _ => {}
    };
    let Some(&first) = payload.first() else {
        return PayloadNals::default();
    };
    match first & 0x1f {
        STAP_A => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let Some(unit) = rest.get(2..2 + size) else {
                    break;
                };
                if let Some(t) = unit_type(unit) {
                    note(t);
                }
                rest = &rest[2 + size..];
            }
        }
        FU_A => {
            if let Some(&header) = payload.get(1)
                && header & 0x80 != 0
            {
                note(header & 0x1f);
            }
        }
        t => note(t),
    }
    out
}

/// RTP payloads of H.264 (RFC 6184) turned back into Annex B: single NAL
/// units, STAP-A and FU-A, each unit after a 00 00 00 01 start code. A
/// malformed payload, or an FU-A whose start was not seen, adds nothing (and
/// drops the fragment being gathered).
#[derive(Debug, Default)]
pub struct Depacketizer {
    /// The unit being gathered from FU-A fragments.
    fragment: Option<Vec<u8>>,
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

impl Depacketizer {
    /// Appends what `payload` completes to `out`.
    pub fn push(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        let Some(&first) = payload.first() else {
            return;
        };
        match first & 0x1f {
            STAP_A => {
                self.fragment = None;
                let mut rest = &payload[1..];
                let mut units = Vec::new();
                while !rest.is_empty() {
                    let Some(size) = rest
                        .get(..2)
                        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                    else {
                        return; // a truncated size: the packet is malformed
                    };
                    let Some(unit) = rest.get(2..2 + size).filter(|u| !u.is_empty()) else {
                        return;
                    };
                    units.push(unit);
                    rest = &rest[2 + size..];
                }
                for unit in units {
                    out.extend_from_slice(&START_CODE);
                    out.extend_from_slice(unit);
                }
            }
            FU_A => {
                let (Some(&header), Some(data)) = (payload.get(1), payload.get(2..)) else {
                    self.fragment = None;
                    return;
                };
                if header & 0x80 != 0 {
                    // The unit's header: the indicator's F and NRI, the
                    // fragment header's type.
                    let mut unit = vec![(first & 0xe0) | (header & 0x1f)];
                    unit.extend_from_slice(data);
                    self.fragment = Some(unit);
                } else if let Some(unit) = self.fragment.as_mut() {
                    unit.extend_from_slice(data);
                }
                if header & 0x40 != 0
                    && let Some(unit) = self.fragment.take()
                {
                    out.extend_from_slice(&START_CODE);
                    out.extend_from_slice(&unit);
                }
            }
            0 | 25..=31 => self.fragment = None, // reserved, or modes not negotiated
            _ => {
                self.fragment = None;
                out.extend_from_slice(&START_CODE);
                out.extend_from_slice(payload);
            }
        }
    }
}

/// The type of a NAL unit (its first byte's low 5 bits).
pub fn unit_type(unit: &[u8]) -> Option<u8> {
    unit.first().map(|b| b & 0x1f)
}

/// Reads Exp-Golomb coded fields from an RBSP, skipping emulation
/// prevention bytes (00 00 03).
struct Bits<'a> {
    data: &'a [u8],
    byte: usize,
    bit: u8,
    zeros: u8,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            byte: 0,
            bit: 0,
            zeros: 0,
        }
    }

    fn bit(&mut self) -> Option<u32> {
        if self.bit == 0 {
            // Entering a new byte: skip an emulation prevention byte.
            if self.zeros >= 2 && self.data.get(self.byte) == Some(&3) {
                self.byte += 1;
                self.zeros = 0;
            }
            let b = *self.data.get(self.byte)?;
            self.zeros = if b == 0 { self.zeros + 1 } else { 0 };
        }
        let b = *self.data.get(self.byte)?;
        let v = (b >> (7 - self.bit)) & 1;
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.byte += 1;
        }
        Some(u32::from(v))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    fn ue(&mut self) -> Option<u32> {
        let mut leading = 0;
        while self.bit()? == 0 {
            leading += 1;
            if leading > 31 {
                return None;
            }
        }
        Some((1u32 << leading) - 1 + self.bits(leading)?)
    }

    fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        let magnitude = i32::try_from(k.div_ceil(2)).ok()?;
        Some(if k % 2 == 1 { magnitude } else { -magnitude })
    }
}

/// The displayed picture size (after cropping) an SPS NAL unit declares.
pub fn sps_dimensions(sps: &[u8]) -> Option<(u32, u32)> {
    if unit_type(sps)? != nal::SPS {
        return None;
    }
    let mut r = Bits::new(sps.get(1..)?);
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()?.min(255) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()?.checked_add(1)?;
    let height_map_units = r.ue()?.checked_add(1)?;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if r.bit()? == 1 {
        let (l, rt, t, b) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let (unit_x, unit_y) = match chroma_format_idc {
            1 => (2, 2 * (2 - frame_mbs_only)),
            2 => (2, 2 - frame_mbs_only),
            _ => (1, 2 - frame_mbs_only),
        };
        crop_x = unit_x * l.checked_add(rt)?;
        crop_y = unit_y * t.checked_add(b)?;
    }
    let width = (width_mbs.checked_mul(16)?).checked_sub(crop_x)?;
    let height = ((2 - frame_mbs_only) * height_map_units.checked_mul(16)?).checked_sub(crop_y)?;
    Some((width, height))
}

fn skip_scaling_list(r: &mut Bits<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // SPS NAL units written by FFmpeg 5.1's libx264 (ffmpeg -f lavfi -i
    // testsrc2=size=WxH -frames:v 1 -c:v libx264 -profile:v P out.h264).
    /// Baseline, 640x360 (cropped from 368 lines).
    const SPS_640X360: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00,
        0x04, 0x00, 0x00, 0x03, 0x00, 0xf2, 0x3c, 0x58, 0xba, 0x80,
    ];
    /// High, 1920x1080 (cropped from 1088 lines).
    const SPS_1080P_HIGH: &[u8] = &[
        0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00,
        0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58,
    ];
    /// High 4:4:4, 350x202 (cropped on both axes).
    const SPS_444_350X202: &[u8] = &[
        0x67, 0xf4, 0x00, 0x0d, 0x91, 0x9b, 0x28, 0x2c, 0x37, 0xdc, 0xf8, 0x08, 0x80, 0x00, 0x00,
        0x03, 0x00, 0x80, 0x00, 0x00, 0x1e, 0x07, 0x8a, 0x14, 0xcb,
    ];

    #[test]
    fn reads_picture_sizes() {
        assert_eq!(sps_dimensions(SPS_640X360), Some((640, 360)));
        assert_eq!(sps_dimensions(SPS_1080P_HIGH), Some((1920, 1080)));
        assert_eq!(sps_dimensions(SPS_444_350X202), Some((350, 202)));
        assert_eq!(sps_dimensions(&[0x68, 0xce]), None, "a PPS is not an SPS");
    }

    #[test]
    fn depacketizes_to_annex_b_and_refuses_what_is_malformed() {
        let mut d = Depacketizer::default();
        let mut out = Vec::new();
        d.push(&[0x41, 9], &mut out); // a single unit
        d.push(&[24, 0, 2, 0x67, 1, 0, 1, 0x68], &mut out); // STAP-A: SPS, PPS
        d.push(&[0x7c, 0x85, 0xaa], &mut out); // FU-A start of an IDR
        d.push(&[0x7c, 0x05, 0xbb], &mut out); // middle
        d.push(&[0x7c, 0x45, 0xcc], &mut out); // end
        let units: Vec<&[u8]> = annexb_units(&out).collect();
        assert_eq!(
            units,
            [
                &[0x41, 9][..],
                &[0x67, 1],
                &[0x68],
                &[0x65, 0xaa, 0xbb, 0xcc]
            ]
        );
        let mut out = Vec::new();
        // A STAP-A one byte short, a size past the end, a lone size byte.
        d.push(&[24, 0, 2, 0x67], &mut out);
        d.push(&[24, 0, 9, 0x67, 1], &mut out);
        d.push(&[24, 0, 1, 0x68, 0], &mut out);
        // FU-A middle and end fragments with no start; a bare indicator.
        d.push(&[0x7c, 0x05, 1], &mut out);
        d.push(&[0x7c, 0x45, 2], &mut out);
        d.push(&[0x7c], &mut out);
        d.push(&[], &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn reads_single_stap_a_and_fu_a_payloads() {
        assert_eq!(
            payload_nals(&[0x67, 0x42, 0xc0]),
            PayloadNals {
                sps: true,
                ..Default::default()
            }
        );
        assert_eq!(
            payload_nals(&[0x65, 0x88]),
            PayloadNals {
                idr_start: true,
                ..Default::default()
            }
        );
        assert!(!payload_nals(&[0x41, 0x9a]).is_keyframe_part(), "a P slice");
        // STAP-A with an SPS (3 bytes) and a PPS (2 bytes).
        let stap = [0x78, 0, 3, 0x67, 1, 2, 0, 2, 0x68, 3];
        assert_eq!(
            payload_nals(&stap),
            PayloadNals {
                sps: true,
                pps: true,
                idr_start: false
            }
        );
        // FU-A: indicator 0x7c, header with S bit and type 5; then a middle fragment.
        assert!(payload_nals(&[0x7c, 0x85, 0xaa]).idr_start);
        assert!(
            !payload_nals(&[0x7c, 0x05, 0xaa]).idr_start,
            "not the start fragment"
        );
        assert!(
            !payload_nals(&[0x7c, 0x81, 0xaa]).is_keyframe_part(),
            "a P slice start"
        );
        // Truncated or empty payloads never panic and carry nothing.
        for bad in [&[][..], &[0x78], &[0x78, 0, 9, 0x67], &[0x7c]] {
            let _ = payload_nals(bad);
        }
        assert!(
            !payload_nals(&[0x78, 0, 9, 0x67]).sps,
            "a unit running past the payload"
        );
    }

    #[test]
    fn splits_annexb() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 9,
        ];
        let units: Vec<&[u8]> = annexb_units(&data).collect();
        assert_eq!(units, [&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 9][..]]);
        let types: Vec<_> = units.iter().filter_map(|u| unit_type(u)).collect();
        assert_eq!(types, [nal::SPS, nal::PPS, nal::IDR]);
    }

    #[test]
    fn never_panics_on_truncated_or_random_sps() {
        for n in 0..SPS_1080P_HIGH.len() {
            let _ = sps_dimensions(&SPS_1080P_HIGH[..n]);
        }
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut v = vec![0x67];
            for _ in 0..24 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                v.push((x >> 16) as u8);
            }
            let _ = sps_dimensions(&v);
        }
    }
}
