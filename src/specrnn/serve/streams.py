"""`WS /stream`: one carried-state stream per socket, fed PCM chunks, answering each with the running prediction.

Protocol (documented in the README): an optional first text message `{"sample_rate": 48000, "format": "f32",
"top_k": 3}` (defaults: the model's rate, little-endian float32 in [-1, 1], top 1; "s16" is little-endian int16),
then binary messages of mono PCM; each gets one JSON reply, as `specrnn predict --stream --json` prints per chunk
(`time` in seconds of audio received, `label`, `probability`, `top`; for CTC the sequence so far). The text message
`{"end": true}` ends the stream: the reply has `"final": true` (equal to the offline prediction) and the socket closes.
A problem gets `{"error": "..."}` and a close code: 1003 bad data, 1008 policy (idle, bad message), 1009 too long,
1013 too many streams.
"""
from __future__ import annotations

import asyncio
import json

import numpy as np

from ..errors import SpecrnnError
from ..inference.printing import reading

FORMATS = {"f32": (np.dtype("<f4"), 1.0), "s16": (np.dtype("<i2"), 32768.0)}


class _Closing(Exception):
    def __init__(self, code: int, message: str):
        self.code, self.message = code, message


def _settings(text: str, rate: int, fmt: str, top_k: int, n_classes: int) -> tuple[int, str, int] | None:
    """A text message: None for the end of the stream, else the (sample rate, format, top-k) it sets."""
    try:
        msg = json.loads(text)
    except ValueError:
        msg = text.strip()
    if msg == "end" or isinstance(msg, dict) and msg.get("end"):
        return None
    if not isinstance(msg, dict):
        raise _Closing(1008, 'text messages are JSON objects: {"sample_rate": ..., "format": "f32"|"s16"} or {"end": true}')
    unknown = set(msg) - {"sample_rate", "format", "top_k", "end"}
    if unknown:
        raise _Closing(1008, f"unknown setting(s) {sorted(unknown)}: use sample_rate, format, top_k or end")
    rate, fmt, top_k = msg.get("sample_rate", rate), msg.get("format", fmt), msg.get("top_k", top_k)
    if isinstance(rate, bool) or not isinstance(rate, int) or not 1000 <= rate <= 384000:
        raise _Closing(1008, f"sample_rate must be a whole number of Hz from 1000 to 384000, got {rate!r}")
    if fmt not in FORMATS:
        raise _Closing(1008, f"format must be one of {sorted(FORMATS)} (little-endian float32 or int16), got {fmt!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= n_classes:
        raise _Closing(1008, f"top_k must be a whole number from 1 to {n_classes}, got {top_k!r}")
    return rate, fmt, top_k


async def run_stream(ws, backend, limits, limiter) -> None:
    """Serve one accepted socket until the client ends it, goes away, idles or breaks a limit."""
    import anyio

    model_rate = backend.predictor.cfg.features.sample_rate
    rate, fmt, top_k, received, sent_audio = model_rate, "f32", 1, 0, False
    classes = backend.predictor.classes
    try:
        try:
            stream = backend.new_stream()
        except SpecrnnError as e:
            raise _Closing(1008, f"this model cannot stream: {e}") from None
        while True:
            try:
                msg = await asyncio.wait_for(ws.receive(), limits.idle_seconds)
            except asyncio.TimeoutError:
                raise _Closing(1008, f"no message for {limits.idle_seconds:g} s: closing the stream (--idle-seconds)") from None
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") is not None:
                settings = _settings(msg["text"], rate, fmt, top_k, len(classes))
                if settings is None:
                    await anyio.to_thread.run_sync(stream.finish, limiter=limiter)
                    await ws.send_json({"time": round(received / rate, 3), "label": None, **reading(stream, top_k), "final": True})
                    await ws.close(1000)
                    return
                if sent_audio and settings[:2] != (rate, fmt):
                    raise _Closing(1008, "sample_rate and format are set before the first audio chunk")
                rate, fmt, top_k = settings
                await ws.send_json({"ready": True, "sample_rate": rate, "format": fmt, "top_k": top_k,
                                    "model_sample_rate": model_rate})
                continue
            data = msg.get("bytes") or b""
            dtype, scale = FORMATS[fmt]
            if len(data) % dtype.itemsize:
                raise _Closing(1003, f"a binary message of {len(data)} bytes is not whole {fmt} samples ({dtype.itemsize} bytes each)")
            samples = np.frombuffer(data, dtype=dtype).astype(np.float32) / np.float32(scale)
            received += len(samples)
            sent_audio = True
            if received / rate > limits.max_seconds:
                raise _Closing(1009, f"the stream passed the server's limit of {limits.max_seconds:g} s of audio (--max-seconds)")
            try:
                await anyio.to_thread.run_sync(stream.push_audio, samples, rate, limiter=limiter)
            except SpecrnnError as e:
                raise _Closing(1003, str(e)) from None
            await ws.send_json({"time": round(received / rate, 3), "label": None, **reading(stream, top_k)})
    except _Closing as c:
        await ws.send_json({"error": c.message})
        await ws.close(c.code, reason=c.message[:120])
