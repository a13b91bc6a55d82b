//! SDP, as pure functions: the first look at an offer, trickled
//! `application/trickle-ice-sdpfrag` bodies, and the answer's host candidates
//! rewritten for a NAT or the UDP mux. Knows nothing of WebRTC state or HTTP.

pub(crate) mod candidates;
pub mod offer;
// For the coming connection of ffwhep's own (docs/OWN_CONNECTION.md).
#[allow(dead_code)]
pub(crate) mod remote;
pub(crate) mod trickle;
