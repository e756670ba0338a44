"""`specrnn serve`'s arguments (argparse only: the ASGI stack is imported when the command runs)."""
from __future__ import annotations

import argparse

LIMITS = [  # flag, type, default, what it bounds (each a field of serve.app.Limits)
    ("--max-upload-mb", float, 25.0, "limit: one /predict request's body, in MB"),
    ("--max-seconds", float, 120.0, "limit: seconds of audio per uploaded file and per stream"),
    ("--max-files", int, 32, "limit: files per /predict request"),
    ("--max-streams", int, 16, "limit: /stream sockets open at once"),
    ("--idle-seconds", float, 30.0, "limit: a stream with no message for this long is closed"),
    ("--batch-wait-ms", float, 5.0, "how long an upload waits for others to share its batch"),
]


def add_arguments(p: argparse.ArgumentParser, positive) -> None:
    p.add_argument("run_dir", help="run folder made by `specrnn train`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--token", help="require this bearer token (default: $SPECRNN_TOKEN, else none)")
    p.add_argument("--onnx", action="store_true", help="run the network on onnxruntime (exported at start-up)")
    for flag, kind, default, what in LIMITS:
        p.add_argument(flag, type=positive(kind), default=default, help=f"{what} (default {default:g})")
    p.set_defaults(func=run)


def run(a) -> int:
    from .app import Limits, serve

    limits = Limits(**{flag[2:].replace("-", "_"): getattr(a, flag[2:].replace("-", "_")) for flag, *_ in LIMITS})
    return serve(a.run_dir, a.host, a.port, limits, a.token, a.onnx)
