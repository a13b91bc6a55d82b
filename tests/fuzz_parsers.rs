//! Property tests: nothing a socket, a browser or a YAML file can send makes
//! a parser panic, and what the RTP parser accepts stays within the packet.

use bytes::Bytes;
use ffwhep::h264::{Depacketizer, payload_nals, sps_dimensions};
use ffwhep::rtp::{Datagram, classify};
use ffwhep::sdp::offer::Offered;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn rtp_classification_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1500)) {
        if let Datagram::Rtp(p) = classify(Bytes::from(data.clone())) {
            prop_assert!(p.payload_offset < p.payload_end && p.payload_end <= data.len());
            prop_assert_eq!(p.payload().len(), p.payload_end - p.payload_offset);
        }
    }

    #[test]
    fn rtp_with_a_valid_first_byte_never_panics(
        first in 0x80u8..0xc0, rest in proptest::collection::vec(any::<u8>(), 0..64)
    ) {
        let mut data = vec![first];
        data.extend(rest);
        let _ = classify(Bytes::from(data));
    }

    #[test]
    fn h264_payload_and_sps_parsing_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = payload_nals(&data);
        let mut sps = vec![0x67];
        sps.extend(&data);
        let _ = sps_dimensions(&sps);
    }

    /// Any run of payloads (STAP-A and FU-A shapes biased in) depacketizes
    /// without a panic, into units that came from the payloads.
    #[test]
    fn h264_depacketizing_never_panics(
        payloads in proptest::collection::vec(
            (prop_oneof![Just(24u8), Just(28u8), Just(0x7cu8), any::<u8>()],
             proptest::collection::vec(any::<u8>(), 0..40)),
            0..20,
        )
    ) {
        let mut d = Depacketizer::default();
        let mut out = Vec::new();
        let mut total = 0;
        for (first, rest) in &payloads {
            let mut p = vec![*first];
            p.extend(rest);
            total += p.len();
            d.push(&p, &mut out);
        }
        // Each unit gains at most a 4-byte start code.
        prop_assert!(out.len() <= total * 5);
    }

    #[test]
    fn offers_never_panic(text in ".{0,400}") {
        let _ = Offered::parse(&text);
        let _ = Offered::parse(&format!("v=0\r\n{text}"));
    }

    #[test]
    fn profiles_never_panic(text in ".{0,300}") {
        let _ = ffwhep::profile::Plan::from_yaml(&text, "fuzz.yaml");
        let _ = ffwhep::profile::Plan::from_yaml(&format!("id: x\ninput: [{{address: a}}]\n{text}"), "fuzz.yaml");
    }
}
