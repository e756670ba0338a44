"""`specrnn serve` under load, on loopback: requests per second and p50/p99 latency of POST /predict (one 1-s clip
per request) with 1, 10 and 100 concurrent clients; per-stream real-time factor of WS /stream with 1, 10 and 50
streams open at once. Baseline, same run: one `specrnn predict RUN FILE` process per file.
The clients run on the same 2 cores as the server, so every figure includes their cost.
python -m benchmarks.serve [--quick]
"""
from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.serving import Server

from .common import OUT, figure, finish, load_str, one_second_clips, quick_flag, random_run, start, table


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "specrnnbench" + "0" * 8
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: audio/wav\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def _http_load(port: int, clips: list[bytes], clients: int, requests: int) -> dict:
    """`clients` concurrent keep-alive connections share `requests` POST /predict requests (each one clip): wall time,
    latencies, errors. A plain asyncio HTTP/1.1 client: httpx's pool, not the server, saturated near 100 clients
    here (GET /health: 160 req/s through httpx against 7,000 through this client)."""
    latencies, errors, next_i = [], 0, 0
    bodies = [_multipart(f"c{i}.wav", c) for i, c in enumerate(clips)]

    async def client():
        nonlocal errors, next_i
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while next_i < requests:
            i, next_i = next_i, next_i + 1
            body, kind = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            writer.write(f"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: {kind}\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            length = next(int(h.split(":")[1]) for h in head if h.lower().startswith("content-length"))
            answer = json.loads(await reader.readexactly(length))
            latencies.append(time.perf_counter() - t0)
            errors += not (head[0].split()[1] == "200" and "label" in answer["results"][0])
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": requests, "wall_s": wall, "rps": requests / wall, "errors": errors,
            "p50_ms": 1000 * percentile(latencies, 50), "p99_ms": 1000 * percentile(latencies, 99)}


async def _stream_load(url: str, wave: np.ndarray, rate: int, streams: int, chunk_s: float = 0.1) -> dict:
    """`streams` sockets at once, each sending `wave` in chunks as fast as the server answers; per stream,
    real-time factor = its wall time / seconds of audio (below 1: faster than the audio plays)."""
    import websockets

    step, seconds, errors = int(chunk_s * rate), len(wave) / rate, 0

    async def one() -> float:
        nonlocal errors
        t0 = time.perf_counter()
        async with websockets.connect(url.replace("http", "ws") + "/stream", max_size=None, open_timeout=60) as ws:
            for s in range(0, len(wave), step):
                await ws.send(wave[s : s + step].astype("<f4").tobytes())
                errors += "error" in json.loads(await ws.recv())
            await ws.send(json.dumps({"end": True}))
            errors += not json.loads(await ws.recv()).get("final")
        return (time.perf_counter() - t0) / seconds

    rtf = await asyncio.gather(*(one() for _ in range(streams)))
    return {"streams": streams, "audio_s": seconds, "rtf_median": statistics.median(rtf), "rtf_max": max(rtf), "errors": errors}


def _baseline(run: Path, files: list[Path]) -> dict:
    """One `specrnn predict` process per file, one after another (what a user without a server does)."""
    exe = str(Path(sys.executable).parent / "specrnn")
    subprocess.run([exe, "predict", str(run), str(files[0])], check=True, capture_output=True)  # warm the page cache
    times = []
    for f in files:
        t0 = time.perf_counter()
        subprocess.run([exe, "predict", str(run), str(f)], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return {"files": len(files), "rps": len(files) / sum(times), "p50_ms": 1000 * statistics.median(times)}


def main(argv=None) -> dict:
    quick = quick_flag(argv)
    res = start("serve", quick)
    run = random_run(None, OUT / "runs" / "bench-default")  # the default model (timing does not depend on weights)
    files = one_second_clips(20)
    clips = [f.read_bytes() for f in files]
    requests = {1: 40, 10: 200, 100: 400} if not quick else {1: 10, 10: 40, 100: 100}
    stream_counts, stream_seconds = ([1, 10, 50], 5.0) if not quick else ([1, 10], 2.0)
    import soundfile as sf

    wave8k = np.concatenate([sf.read(str(f), dtype="float32")[0] for f in files])[: int(8000 * stream_seconds)]
    base = _baseline(run, files[: 4 if quick else 10])
    http, streams = [], []
    server = Server(run, "--max-streams", "64", "--max-files", "4")
    with server as url:
        asyncio.run(_http_load(server.port, clips, 4, 8))  # warm-up
        for c, n in requests.items():
            http.append(asyncio.run(_http_load(server.port, clips, c, n)))
        for s in stream_counts:
            streams.append(asyncio.run(_stream_load(url, wave8k, 8000, s)))
    res["raw"] = {"http": http, "streams": streams, "baseline": base}
    for h in http:
        res["figures"].append(figure(f"POST /predict, {h['clients']} concurrent client(s): requests/s", h["rps"], "req/s",
                                     "one `specrnn predict` process per file", base["rps"], errors=h["errors"],
                                     met=h["errors"] == 0, target="0 errors",
                                     note=f"p50 {h['p50_ms']:.0f} ms, p99 {h['p99_ms']:.0f} ms over {h['requests']} requests"))
    for s in streams:
        res["figures"].append(figure(f"WS /stream, {s['streams']} stream(s) at once: real-time factor per stream (median)",
                                     s["rtf_median"], "x", better="lower", errors=s["errors"], met=s["errors"] == 0,
                                     target="0 errors", note=f"max {s['rtf_max']:.3f}; {s['audio_s']:g} s of audio each, "
                                                             "100-ms chunks sent as fast as answered"))
    res["tables"].append(table("POST /predict on loopback (1-s 8 kHz clips, default model)",
                               ["clients", "requests", "req/s", "p50 ms", "p99 ms", "errors"],
                               [[h["clients"], h["requests"], f"{h['rps']:.1f}", f"{h['p50_ms']:.0f}", f"{h['p99_ms']:.0f}",
                                 h["errors"]] for h in http]
                               + [["baseline: a process per file", base["files"], f"{base['rps']:.2f}", f"{base['p50_ms']:.0f}",
                                   "—", 0]]))
    res["tables"].append(table("WS /stream: seconds of work per second of audio, per stream",
                               ["streams at once", "audio per stream (s)", "RTF median", "RTF max", "errors"],
                               [[s["streams"], f"{s['audio_s']:g}", f"{s['rtf_median']:.3f}", f"{s['rtf_max']:.3f}",
                                 s["errors"]] for s in streams]))
    res["notes"].append(f"Server and clients share the machine's {res['machine']['cores']} cores. Load: {load_str()}.")
    print(finish(res, quick))
    return res


if __name__ == "__main__":
    main()
