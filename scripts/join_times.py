#!/usr/bin/env python3
"""Joins a WHEP stream N times at random moments with aiortc and measures the
time from the POST to the first decoded video frame. Prints one line:
joins p50_ms p95_ms max_ms failures.

usage: join_times.py URL N GOP_SECONDS
"""

import asyncio
import random
import sys
import time
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription


async def join(url: str, timeout: float) -> float | None:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    first = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track):
        if track.kind != "video":
            return

        async def read():
            try:
                await track.recv()
                if not first.done():
                    first.set_result(time.monotonic())
            except Exception:
                pass

        asyncio.ensure_future(read())

    await pc.setLocalDescription(await pc.createOffer())
    t0 = time.monotonic()
    req = urllib.request.Request(url, data=pc.localDescription.sdp.encode(),
                                 headers={"Content-Type": "application/sdp"}, method="POST")
    resp = await asyncio.get_running_loop().run_in_executor(None, urllib.request.urlopen, req)
    location = resp.headers["Location"]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=resp.read().decode(), type="answer"))
    try:
        t1 = await asyncio.wait_for(first, timeout)
        return (t1 - t0) * 1000
    except asyncio.TimeoutError:
        return None
    finally:
        await pc.close()
        base = url.split("/whep/")[0]
        delete = urllib.request.Request(base + location, method="DELETE")
        await asyncio.get_running_loop().run_in_executor(None, urllib.request.urlopen, delete)


async def main() -> None:
    url, n, gop = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    times, failures = [], 0
    for _ in range(n):
        await asyncio.sleep(random.uniform(0, gop))  # a random moment in the GOP
        t = await join(url, 10.0)
        if t is None:
            failures += 1
        else:
            times.append(t)
    times.sort()
    pick = lambda q: round(times[min(len(times) - 1, int(q * len(times)))]) if times else -1
    print(len(times), pick(0.5), pick(0.95), round(times[-1]) if times else -1, failures)


if __name__ == "__main__":
    asyncio.run(main())
