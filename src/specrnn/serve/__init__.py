"""`specrnn serve RUN`: a trained run behind HTTP and WebSocket endpoints (Starlette on uvicorn, the `serve` extra).

`app.py` builds the ASGI app (routes, limits, token), `batching.py` groups concurrent uploads into padded batches,
`streams.py` runs one carried-state stream per WebSocket, `backends.py` holds the model (PyTorch or onnxruntime),
and `page.html` is the self-contained web page served at `/`.
"""
from __future__ import annotations

__all__ = ["Limits", "create_app", "serve"]


def __getattr__(name: str):  # the ASGI stack is imported only when the server is used
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
