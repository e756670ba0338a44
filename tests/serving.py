"""A real `specrnn serve` process on a free loopback port, for the serve tests and the serve benchmark."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`with Server(run, "--token", "x") as url:` starts the server, waits for /health, and stops it after."""

    def __init__(self, run: str | Path, *args: str, env: dict | None = None, wait_s: float = 120.0):
        self.run, self.args, self.env, self.wait_s = str(run), [str(a) for a in args], env, wait_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> str:
        import httpx

        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"specrnn-serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "specrnn", "serve", self.run, "--port", str(self.port), *self.args],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ, **(self.env or {})))
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"specrnn serve exited {self.proc.returncode}:\n{self.log.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"specrnn serve did not answer /health within {self.wait_s:g} s")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
