#!/usr/bin/env python3
"""An aiortc WHEP viewer that watches a stream until told to stop, for the
ladder tests: it keeps the time and size of every decoded video frame, and
writes every encoded frame it hands its decoder to a capture (Annex B H.264)
for ffprobe to check.

usage: aiortc_ladder.py URL --capture FILE [--seconds S]

Prints {"location": URL} once the session is made and {"playing": true}
at the first decoded frame, then, once stdin is closed (or after
--seconds), one JSON line: the session URL, and "frames":
[[Unix time in ms, width, height], ...] of every decoded video frame.
"""

import argparse
import asyncio
import json
import sys
import time
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import h264
from aiortc.mediastreams import MediaStreamError


def tee_decoder(capture):
    """Every encoded frame aiortc decodes also goes to `capture`."""
    decode = h264.H264Decoder.decode

    def decode_and_keep(self, encoded_frame):
        capture.write(encoded_frame.data)
        return decode(self, encoded_frame)

    h264.H264Decoder.decode = decode_and_keep


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--capture", required=True)
    ap.add_argument("--seconds", type=float, default=120.0)
    args = ap.parse_args()
    capture = open(args.capture, "wb")
    tee_decoder(capture)

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    frames = []

    async def consume(track):
        try:
            while True:
                frame = await track.recv()
                if track.kind != "video":
                    continue
                if not frames:
                    print(json.dumps({"playing": True}), flush=True)
                frames.append([round(time.time() * 1000), frame.width, frame.height])
        except MediaStreamError:
            pass

    @pc.on("track")
    def on_track(track):
        asyncio.ensure_future(consume(track))

    await pc.setLocalDescription(await pc.createOffer())
    req = urllib.request.Request(
        args.url,
        data=pc.localDescription.sdp.encode(),
        headers={"Content-Type": "application/sdp"},
        method="POST",
    )
    loop = asyncio.get_running_loop()
    resp = await loop.run_in_executor(None, urllib.request.urlopen, req)
    location = resp.headers["Location"]
    print(json.dumps({"location": location}), flush=True)
    answer = resp.read().decode()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    # Until stdin closes (the test is done) or the limit.
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    try:
        await asyncio.wait_for(stdin_closed, args.seconds)
    except asyncio.TimeoutError:
        pass
    print(json.dumps({"location": location, "frames": frames}), flush=True)
    await pc.close()
    capture.close()


if __name__ == "__main__":
    asyncio.run(main())
