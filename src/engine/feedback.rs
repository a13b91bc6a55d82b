//! Viewer feedback the relay answers itself: an interceptor that passes
//! chosen inbound RTCP to the application (NACK, PLI and FIR here; the rest
//! stops at the interceptors that use it).

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::time::Instant;

/// Last in the chain: marks the inbound RTCP packets `wanted` picks for the
/// application, and lets the rest stop at the end of the chain.
pub struct RtcpToApp {
    wanted: fn(&dyn rtc::rtcp::Packet) -> bool,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RtcpToApp {
    pub fn new(wanted: fn(&dyn rtc::rtcp::Packet) -> bool) -> Self {
        Self {
            wanted,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    /// What a sender answers itself: NACK, PLI and FIR.
    pub fn feedback() -> Self {
        Self::new(|p| {
            let any = p.as_any();
            any.is::<TransportLayerNack>()
                || any.is::<PictureLossIndication>()
                || any.is::<FullIntraRequest>()
        })
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpToApp {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let kept: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| (self.wanted)(p.as_ref()))
                .cloned()
                .collect();
            if kept.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(kept);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for RtcpToApp {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
