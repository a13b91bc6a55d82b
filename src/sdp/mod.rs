//! SDP, as pure functions: the first look at an offer, trickled
//! `application/trickle-ice-sdpfrag` bodies, and the answer's host candidates
//! rewritten for a NAT or the UDP mux, the header extensions agreed on.
//! Knows nothing of WebRTC state or HTTP.

pub(crate) mod candidates;
pub(crate) mod extmap;
pub mod offer;
pub(crate) mod remote;
pub(crate) mod trickle;
