"""The ASGI app: `POST /predict` (uploads, batched), `WS /stream`, `GET /` (the page), `/health`, `/info`.

Uploads are decoded in memory: no name or path from a request reaches the file system. Limits give clear 413/422
answers; a wrong or missing bearer token gets 401 (the page and /health stay open).
"""
from __future__ import annotations

import hmac
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import AudioError, SpecrnnError

TOKEN_ENV = "SPECRNN_TOKEN"


@dataclass
class Limits:
    """What one request or stream may use (each a `specrnn serve` option)."""

    max_upload_mb: float = 25.0  # one /predict request body
    max_seconds: float = 120.0  # audio per uploaded file, and per stream
    max_files: int = 32  # files per /predict request
    max_streams: int = 16  # open /stream sockets at once
    idle_seconds: float = 30.0  # a stream with no message for this long is closed
    batch_clips: int = 32  # clips per model batch
    batch_wait_ms: float = 5.0  # how long a request waits for others to share its batch


class _TooLarge(Exception):
    pass


def _error(status: int, message: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def _authorised(given: str | None, token: str | None) -> bool:
    return token is None or given is not None and hmac.compare_digest(given.encode(), token.encode())


def _bearer(headers) -> str | None:
    auth = headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


async def _uploads(request, limits: Limits) -> list[tuple[str, bytes]]:
    """(name, bytes) per uploaded file: multipart form files, or one raw audio body (?name= names it)."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    cap = int(limits.max_upload_mb * 1024 * 1024)
    if int(request.headers.get("content-length") or 0) > cap:
        raise _TooLarge
    seen = 0

    async def body():  # counts what arrives, so a body without a length (chunked) is capped too
        nonlocal seen
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > cap:
                raise _TooLarge
            yield chunk

    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        data = b"".join([c async for c in body()])
        return [(request.query_params.get("name", "upload"), data)] if data else []
    parser = MultiPartParser(request.headers, body(), max_files=limits.max_files, max_fields=limits.max_files,
                             max_part_size=cap)
    parser.spool_max_size = cap  # uploads stay in memory
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise SpecrnnError(f"bad multipart upload: {e.message} (at most {limits.max_files} files per request)") from None
    files = [(v.filename or k, await v.read()) for k, v in form.multi_items() if hasattr(v, "read")]
    await form.close()
    return files


def _decode(files: list[tuple[str, bytes]], sample_rate: int, limits: Limits, f) -> list:
    """Each file's waveform at the model's rate, or its AudioError; SpecrnnError when one is over max_seconds."""
    import soundfile as sf

    from ..audio import decode_audio

    out = []
    for name, data in files:
        try:
            info = sf.info(io.BytesIO(data))
        except Exception:  # noqa: BLE001 - not audio: decode_audio names the problem below
            info = None
        if info is not None and info.duration > limits.max_seconds:
            raise SpecrnnError(f"{name}: {info.duration:.1f} s of audio is over the server's limit of "
                               f"{limits.max_seconds:g} s per file (--max-seconds)")
        try:
            out.append(decode_audio(data, name, sample_rate, f.max_seconds, f.crop))
        except AudioError as e:
            out.append(e)
    return out


def create_app(run: str | Path, limits: Limits | None = None, token: str | None = None, onnx: bool = False,
               log=print):
    """The Starlette app serving `run` (a run folder); `token` (or $SPECRNN_TOKEN) turns on bearer-token checks."""
    import contextlib
    import importlib.resources

    import anyio
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    from .backends import Backend
    from .batching import Batcher
    from .streams import run_stream

    limits = limits or Limits()
    token = token or os.environ.get(TOKEN_ENV) or None
    backend = Backend(run, onnx=onnx, log=log)
    batcher = Batcher(backend, limits.batch_clips, limits.batch_wait_ms / 1000)
    limiter = anyio.CapacityLimiter(max(1, os.cpu_count() or 1))  # stream steps running at once
    page = importlib.resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    open_streams = 0

    async def predict(request):
        if not _authorised(_bearer(request.headers), token):
            return _error(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)")
        p = backend.predictor
        try:
            top_k = int(request.query_params.get("top_k", 1 if p.task.sequence else min(3, len(p.classes))))
            if not 1 <= top_k <= len(p.classes):
                raise ValueError
        except ValueError:
            return _error(422, f"top_k must be a whole number from 1 to {len(p.classes)}")
        try:
            files = await _uploads(request, limits)
            if not files:
                return _error(422, "no audio: upload files as multipart form fields (curl -F file=@clip.wav) or "
                                   "send one file as the body")
            waves = await anyio.to_thread.run_sync(_decode, files, p.cfg.features.sample_rate, limits, p.cfg.features,
                                                 limiter=limiter)
        except _TooLarge:
            return _error(413, f"the upload is over the server's limit of {limits.max_upload_mb:g} MB (--max-upload-mb)")
        except SpecrnnError as e:
            return _error(422, str(e))
        preds, batch = await batcher.predict(waves, [name for name, _ in files])
        results = []
        for pred in preds:
            d = pred.to_dict(top_k)
            results.append({"file": d.pop("path"), **d})
        return JSONResponse({"results": results, "batch": batch})

    async def stream(ws):
        nonlocal open_streams
        if not _authorised(ws.query_params.get("token") or _bearer(ws.headers), token):
            return await ws.send_denial_response(_error(401, "missing or wrong token (?token=TOKEN)"))
        await ws.accept()
        if open_streams >= limits.max_streams:
            await ws.send_json({"error": f"the server has {limits.max_streams} streams open (--max-streams): try later"})
            return await ws.close(1013)
        open_streams += 1
        try:
            await run_stream(ws, backend, limits, limiter)
        except WebSocketDisconnect:
            pass
        finally:
            open_streams -= 1

    async def info(request):
        if not _authorised(_bearer(request.headers), token):
            return _error(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)")
        return JSONResponse({**backend.info(), "limits": asdict(limits), "token": token is not None,
                             "served": {"batches": batcher.batches, "clips": batcher.clips, "streams_open": open_streams}})

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def index(request):
        return HTMLResponse(page)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    routes = [Route("/", index), Route("/health", health), Route("/info", info), Route("/predict", predict, methods=["POST"]),
              WebSocketRoute("/stream", stream)]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.backend, app.state.batcher = backend, batcher
    return app


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None,
          token: str | None = None, onnx: bool = False) -> int:
    """`specrnn serve`: run the app on uvicorn until Ctrl-C."""
    try:
        import uvicorn
    except ImportError as e:
        raise SpecrnnError(f"specrnn serve needs the serve extra ({e}): pip install 'specrnn[serve]'") from None
    app = create_app(run, limits, token, onnx)
    guarded = "with a bearer token" if token or os.environ.get(TOKEN_ENV) else "no token"
    print(f"specrnn: serving {run} on http://{host}:{port}/ ({guarded}; Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", ws_max_size=16 * 1024 * 1024)
    return 0
