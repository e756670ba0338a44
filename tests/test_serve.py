"""`specrnn serve`: a real server process on a loopback port, driven by a real HTTP and WebSocket client."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from .conftest import onnx_export_skip_reason, tone, write, write_tone_folder
from .serving import Server

httpx = pytest.importorskip("httpx", reason="the serve tests need httpx (pip install 'specrnn[test]')")
websockets = pytest.importorskip("websockets", reason="the serve tests need websockets (pip install 'specrnn[test]')")
pytest.importorskip("uvicorn", reason="specrnn serve needs the serve extra (pip install 'specrnn[serve]')")
pytest.importorskip("starlette", reason="specrnn serve needs the serve extra (pip install 'specrnn[serve]')")

TINY = ["--set", "model.hidden=16", "--set", "model.layers=1", "--set", "train.batch_size=16", "--set", "train.patience=50"]


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    """A low-vs-high tone run (unidirectional GRU: it streams) and clips of 0.2-1.6 s to send it."""
    root = write_tone_folder(tmp_path_factory.mktemp("data") / "tones")
    run = tmp_path_factory.mktemp("runs") / "tones"
    subprocess.run([sys.executable, "-m", "specrnn", "train", str(root), "--out", str(run), "--max-epochs", "12", *TINY],
                   check=True, capture_output=True, timeout=600)
    clips = tmp_path_factory.mktemp("clips")
    files = [write(clips / f"c{i}.wav", tone(300 if i % 2 else 3000, 0.2 + 0.1 * i, seed=100 + i)) for i in range(12)]
    return run, files


@pytest.fixture(scope="module")
def server(tones):
    with Server(tones[0], "--batch-wait-ms", "300") as url:
        yield url


def _alone(run, files):
    from specrnn import load

    return load(run, device="cpu").predict(files)


def test_health_info_and_page(server, tones):
    assert httpx.get(server + "/health").json() == {"status": "ok"}
    info = httpx.get(server + "/info").json()
    assert info["classes"] == ["high", "low"] and info["sample_rate"] == 16000 and info["task"] == "classification"
    assert info["model"]["parameters"] > 1000 and info["streaming"] and info["backend"] == "pytorch" and info["version"]
    page = httpx.get(server + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/stream" in page.text and "/predict" in page.text and "getUserMedia" in page.text
    assert "http://" not in page.text.replace("http://www.w3.org", "") and "https://" not in page.text  # no CDN


def test_predict_files_with_a_bad_one_among_them(server, tones, tmp_path):
    run, files = tones
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    sent = [("file", (f.name, f.read_bytes(), "audio/wav")) for f in files[:3]] + [("file", ("notes.wav", bad.read_bytes()))]
    r = httpx.post(server + "/predict?top_k=2", files=sent, timeout=60)
    assert r.status_code == 200
    got = r.json()["results"]
    assert [g["file"] for g in got] == ["c0.wav", "c1.wav", "c2.wav", "notes.wav"]
    assert "cannot decode as audio" in got[3]["error"] and "label" not in got[3]
    for g, want in zip(got, _alone(run, files[:3])):
        assert g["label"] == want.label and len(g["top"]) == 2
        assert g["top"][0]["probability"] == pytest.approx(want.probabilities[want.label], abs=1e-5)


def test_a_raw_body_and_a_path_like_name_never_touch_the_file_system(server, tones):
    run, files = tones
    r = httpx.post(server + "/predict?name=/etc/passwd", content=files[1].read_bytes(), headers={"content-type": "audio/wav"})
    (g,) = r.json()["results"]
    assert g["file"] == "/etc/passwd" and g["label"] == _alone(run, files[1:2])[0].label  # the body was scored, not the path
    r = httpx.post(server + "/predict", files=[("file", ("../../etc/passwd", files[2].read_bytes()))])
    assert r.json()["results"][0]["label"] == _alone(run, files[2:3])[0].label


def test_concurrent_uploads_are_batched_and_score_as_alone(server, tones):
    run, files = tones
    alone = _alone(run, files)

    def one(f):
        r = httpx.post(server + "/predict", files=[("file", (f.name, f.read_bytes()))], timeout=60)
        return r.json()

    with ThreadPoolExecutor(len(files)) as pool:
        answers = list(pool.map(one, files))
    assert max(a["batch"] for a in answers) > 1  # requests shared a padded batch (clips of 0.2 to 1.3 s)
    for a, want in zip(answers, alone):
        (g,) = a["results"]
        assert g["label"] == want.label
        for t in g["top"]:
            assert t["probability"] == pytest.approx(want.probabilities[t["label"]], abs=1e-5)


async def _stream(url: str, wave: np.ndarray, step: int, settings: dict | None = None, fmt: str = "<f4", scale: float = 1.0):
    async with websockets.connect(url.replace("http", "ws") + "/stream") as ws:
        if settings:
            await ws.send(json.dumps(settings))
            assert json.loads(await ws.recv())["ready"]
        out = []
        for s in range(0, len(wave), step):
            await ws.send((wave[s : s + step] * scale).astype(fmt).tobytes())
            out.append(json.loads(await ws.recv()))
        await ws.send(json.dumps({"end": True}))
        out.append(json.loads(await ws.recv()))
        return out


def test_stream_equals_predict_stream(server, tones):
    from specrnn.audio import load_audio

    run, files = tones
    f = files[7]
    printed = subprocess.run([sys.executable, "-m", "specrnn", "predict", str(run), str(f), "--stream", "--json",
                              "--chunk-ms", "50", "--top-k", "2"], capture_output=True, text=True, check=True).stdout
    want = [json.loads(line) for line in printed.splitlines()]
    for w in want:
        w.pop("path")
    got = asyncio.run(_stream(server, load_audio(f, 16000), 800, {"top_k": 2}))
    assert got == want and got[-1]["final"]
    # int16 at 44.1 kHz (resampled on the server): the same final label
    wave = load_audio(f, 44100)
    got16 = asyncio.run(_stream(server, wave, 4410, {"sample_rate": 44100, "format": "s16"}, "<i2", 32767))
    assert got16[-1]["final"] and got16[-1]["label"] == want[-1]["label"]


async def _closed_with(url: str, messages: list, path: str = "/stream") -> tuple[list[dict], int]:
    async with websockets.connect(url.replace("http", "ws") + path) as ws:
        replies = []
        try:
            for m in messages:
                await ws.send(m)
            while True:
                replies.append(json.loads(await ws.recv()))
        except websockets.ConnectionClosed as e:
            return replies, e.rcvd.code


def test_stream_errors(server):
    replies, code = asyncio.run(_closed_with(server, ["hello there"]))
    assert code == 1008 and "JSON objects" in replies[-1]["error"]
    replies, code = asyncio.run(_closed_with(server, [json.dumps({"format": "f64"})]))
    assert code == 1008 and "format must be one of" in replies[-1]["error"]
    replies, code = asyncio.run(_closed_with(server, [b"\x00\x01\x02"]))
    assert code == 1003 and "not whole f32 samples" in replies[-1]["error"]
    nan = np.full(400, np.nan, dtype="<f4").tobytes()
    replies, code = asyncio.run(_closed_with(server, [nan]))
    assert code == 1003 and "NaN" in replies[-1]["error"]


def test_limits_and_token(tones, tmp_path):
    run, files = tones
    long = write(tmp_path / "long.wav", tone(300, 2.5))
    args = ["--max-seconds", "2", "--max-upload-mb", "0.2", "--max-files", "2", "--max-streams", "1", "--idle-seconds", "1"]
    with Server(run, *args, env={"SPECRNN_TOKEN": "s3cret"}) as url:
        ok, wrong = {"authorization": "Bearer s3cret"}, {"authorization": "Bearer guess"}
        body = [("file", ("c0.wav", files[0].read_bytes()))]
        assert httpx.post(url + "/predict", files=body).status_code == 401
        assert httpx.post(url + "/predict", files=body, headers=wrong).status_code == 401
        assert httpx.get(url + "/info").status_code == 401 and httpx.get(url + "/health").status_code == 200
        assert httpx.post(url + "/predict", files=body, headers=ok).status_code == 200
        r = httpx.post(url + "/predict", files=[("file", ("long.wav", long.read_bytes()))], headers=ok)
        assert r.status_code == 422 and "long.wav" in r.json()["error"] and "limit of 2 s" in r.json()["error"]
        r = httpx.post(url + "/predict", files=body * 3, headers=ok)
        assert r.status_code == 422 and "at most 2 files" in r.json()["error"]
        big = np.zeros(300_000, dtype=np.uint8).tobytes()
        r = httpx.post(url + "/predict", content=big, headers={**ok, "content-type": "audio/wav"})
        assert r.status_code == 413 and "0.2 MB" in r.json()["error"]
        ws_url = url.replace("http", "ws")

        async def sockets():
            with pytest.raises(websockets.InvalidStatus) as denied:
                async with websockets.connect(ws_url + "/stream?token=guess"):
                    pass
            assert denied.value.response.status_code == 401
            async with websockets.connect(ws_url + "/stream?token=s3cret") as first:
                async with websockets.connect(ws_url + "/stream?token=s3cret") as second:  # over --max-streams 1
                    assert "streams open" in json.loads(await second.recv())["error"]
                    with pytest.raises(websockets.ConnectionClosed) as closed:
                        await second.recv()
                    assert closed.value.rcvd.code == 1013
                reply = json.loads(await first.recv())  # sent nothing for over --idle-seconds 1
                assert "no message for 1 s" in reply["error"]
            replies, code = await _closed_with(url, [np.zeros(16000 * 3, dtype="<f4").tobytes()], "/stream?token=s3cret")
            assert code == 1009 and "limit of 2 s" in replies[-1]["error"]

        asyncio.run(sockets())


@pytest.mark.skipif(onnx_export_skip_reason() is not None, reason=onnx_export_skip_reason() or "")
def test_onnx_backend_gives_the_same_outputs(tones):
    from specrnn.audio import load_audio

    run, files = tones
    with Server(run, "--onnx") as url:
        assert httpx.get(url + "/info").json()["backend"] == "onnxruntime"
        sent = [("file", (f.name, f.read_bytes())) for f in files[:6]]
        got = httpx.post(url + "/predict", files=sent, timeout=60).json()["results"]
        for g, want in zip(got, _alone(run, files[:6])):
            assert g["label"] == want.label
            assert g["top"][0]["probability"] == pytest.approx(want.probabilities[want.label], abs=1e-4)
        streamed = asyncio.run(_stream(url, load_audio(files[5], 16000), 1600))
    with Server(run) as url:
        reference = asyncio.run(_stream(url, load_audio(files[5], 16000), 1600))
    assert [s["label"] for s in streamed] == [s["label"] for s in reference]
    assert [s["probability"] for s in streamed] == pytest.approx([s["probability"] for s in reference], abs=1e-3)
