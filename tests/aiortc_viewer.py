#!/usr/bin/env python3
"""An independent WHEP viewer built on aiortc (a WebRTC stack nobody here wrote).

It POSTs a recvonly offer to a WHEP URL, decodes what arrives for a while,
then optionally waits for the server to hang up. Prints one JSON line:
decoded video frames and their size, the time from the POST to the first
decoded video frame, audio frames, and how the call ended.

usage: aiortc_viewer.py URL [--seconds S] [--frames N] [--audio-frames N]
                          [--wait-hangup S] [--token T]

With --frames or --audio-frames it watches until that many frames were
decoded; without, until the call ends (e.g. ICE fails). --seconds is only
the limit.
"""

import argparse
import asyncio
import json
import time
import urllib.error
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--frames", type=int, default=0)
    ap.add_argument("--audio-frames", type=int, default=0)
    ap.add_argument("--wait-hangup", type=float, default=0.0)
    ap.add_argument("--token", default=None)
    args = ap.parse_args()

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    stats = {"video_frames": 0, "width": 0, "height": 0, "audio_frames": 0, "first_frame_ms": None}
    ended = asyncio.Event()
    reached = asyncio.Event()

    async def consume(track):
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    if stats["video_frames"] == 0:
                        stats["first_frame_ms"] = round((time.monotonic() - posted) * 1000)
                    stats["video_frames"] += 1
                    stats["width"], stats["height"] = frame.width, frame.height
                else:
                    stats["audio_frames"] += 1
                if stats["video_frames"] >= args.frames and stats["audio_frames"] >= args.audio_frames:
                    reached.set()
        except MediaStreamError:
            ended.set()

    @pc.on("track")
    def on_track(track):
        asyncio.ensure_future(consume(track))

    @pc.on("connectionstatechange")
    def on_state():
        if pc.connectionState in ("closed", "failed", "disconnected"):
            ended.set()

    await pc.setLocalDescription(await pc.createOffer())
    posted = time.monotonic()
    req = urllib.request.Request(
        args.url,
        data=pc.localDescription.sdp.encode(),
        headers={"Content-Type": "application/sdp"},
        method="POST",
    )
    if args.token:
        req.add_header("Authorization", "Bearer " + args.token)
    loop = asyncio.get_running_loop()
    try:
        resp = await loop.run_in_executor(None, urllib.request.urlopen, req)
    except urllib.error.HTTPError as e:
        print(json.dumps({"status": e.code, "www_authenticate": e.headers.get("WWW-Authenticate"),
                          "reason": e.read().decode().strip()}), flush=True)
        await pc.close()
        return
    stats["status"] = resp.status
    stats["location"] = resp.headers["Location"]
    answer = resp.read().decode()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    # Until the frames asked for arrive, or (asked for none) until the call
    # ends, as when ICE fails; --seconds is only the limit.
    awaited = reached if (args.frames or args.audio_frames) else ended
    try:
        await asyncio.wait_for(awaited.wait(), args.seconds)
    except asyncio.TimeoutError:
        pass
    stats["connection"] = pc.connectionState
    if args.wait_hangup > 0:
        print(json.dumps({"ready": True}), flush=True)
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(ended.wait(), args.wait_hangup)
            stats["hangup_seconds"] = round(time.monotonic() - t0, 3)
        except asyncio.TimeoutError:
            stats["hangup_seconds"] = None
    print(json.dumps(stats), flush=True)
    await pc.close()


if __name__ == "__main__":
    asyncio.run(main())
