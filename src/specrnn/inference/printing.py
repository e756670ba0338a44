"""What `specrnn predict` prints: one line (or JSON object) per file, or with --stream per chunk."""
from __future__ import annotations

import sys

import numpy as np

from ..errors import SpecrnnError
from ..formatting import percent, significant
from .streaming import StreamingClassifier, check_streamable, stream


def print_stream(predictor, files: list[str], chunk_ms: float, as_json: bool, top_k: int = 1) -> int:
    """`specrnn predict --stream`: after every chunk of each file, the running top label (and the next top_k - 1),
    or for a CTC model the sequence decoded so far."""
    import json

    from ..audio import load_audio

    f = predictor.cfg.features
    step = max(1, int(round(chunk_ms / 1000 * f.sample_rate)))
    failed = 0
    for path in files:
        try:
            wave = load_audio(path, f.sample_rate, f.max_seconds, f.crop)
        except SpecrnnError as e:
            print(f"specrnn: error: {e}", file=sys.stderr)
            failed += 1
            continue
        s = stream(predictor)
        events = []
        for start in range(0, len(wave), step):
            s.push_audio(wave[start : start + step])
            events.append((min(start + step, len(wave)) / f.sample_rate, reading(s, top_k)))
        s.finish()
        events.append((len(wave) / f.sample_rate, reading(s, top_k)))
        for i, (t, said) in enumerate(events):
            final = i == len(events) - 1
            line = {"path": str(path), "time": round(t, 3), "label": None, **said}
            if final:
                line["final"] = True
            when = "end" if final else f"{t:7.2f}s"
            if as_json:
                print(json.dumps(line))
            elif s.ctc is not None and said:
                how = "best path" if s.decoding.beam is None else "over its paths"
                print(f"{path}\t{when}\t{line['label'] or '(nothing decoded)'}\t({how} {percent(line['probability'])})")
            else:
                tops = line.get("top", [line] if said else [])
                print(f"{path}\t{when}\t" + (", ".join(f"{x['label']} {percent(x['probability'])}" for x in tops) or "-"))
    return 1 if failed else 0


def reading(s: StreamingClassifier, top_k: int) -> dict:
    """What a stream says now: the top label and its probability (and the top k), or a CTC model's sequence so far
    and its best path's probability; {} before the first frame reaches the RNN."""
    if s.ctc is not None:
        p = s.path_probability()
        return {} if p is None else {"label": " ".join(s.tokens()), "probability": significant(p, 4)}
    p = s.probabilities()
    if p is None:
        return {}
    best = np.argsort(-p, kind="stable")[:top_k]
    out = {"label": s.classes[best[0]], "probability": significant(float(p[best[0]]), 4)}
    if top_k > 1:
        out["top"] = [{"label": s.classes[k], "probability": significant(float(p[k]), 4)} for k in best]
    return out


def predict_command(run_dir, paths: list[str], top_k: int | None, as_json: bool, stream_: bool, chunk_ms: float | None,
                    enroll: list[str] | None, decoding: dict | None = None) -> int:
    """`specrnn predict`: load the run, enrol a per-speaker model, print each file's labels (or each chunk's with
    --stream); 1 when a file could not be read, else 0."""
    import json

    from ..data.manifest import expand_audio_paths
    from .predictor import load

    if chunk_ms is not None and not stream_:
        raise SpecrnnError("--chunk-ms sets the chunk of --stream; add --stream (or drop --chunk-ms)")
    files = expand_audio_paths(paths)  # a folder becomes the audio files below it
    predictor = load(run_dir)
    if decoding:
        predictor.set_decoding(**decoding)
    if stream_:  # refused before enrolment reads any audio
        check_streamable(predictor.cfg.model, predictor.cfg.features)
    if enroll and predictor.cfg.model.normalize != "group":
        raise SpecrnnError(f"--enroll: this model normalises with '{predictor.cfg.model.normalize}', not per speaker; "
                           "it needs no enrolment (drop --enroll)")
    if enroll:
        predictor.enroll(enroll)
    elif predictor.needs_enrolment:
        try:
            predictor.enroll(files, skip_unusable=True)
        except SpecrnnError:  # nothing usable to enrol: predict names each file's problem
            pass
        else:
            print(f"specrnn: note: this model normalises per speaker and no --enroll was given, so the {predictor.enrolled} "
                  f"usable file(s) of the {len(files)} to predict enrol the speaker: they should be one speaker's, a single "
                  "short clip enrols poorly, and scores depend on which files are passed together (--enroll makes them "
                  "reproducible)", file=sys.stderr)
    if stream_:
        f = predictor.cfg.features
        frame_ms = 1000 * f.hop_length / f.sample_rate
        chunk_ms = 100.0 if chunk_ms is None else chunk_ms
        if predictor.task.sequence and (top_k or 1) > 1:
            raise SpecrnnError("--top-k with --stream: a CTC stream shows its one running sequence (best path); "
                               "for the K most probable sequences, predict without --stream")
        if chunk_ms < frame_ms:
            raise SpecrnnError(f"--chunk-ms {chunk_ms:g} is shorter than one feature frame ({frame_ms:g} ms)")
        return print_stream(predictor, files, chunk_ms, as_json, top_k or 1)
    ctc = predictor.task.sequence
    top_k = top_k or (1 if ctc else 3)
    preds = predictor.predict(files, n_best=top_k if ctc else 1)
    note_cropped([p.path for p in preds if not p.error], predictor.cfg.features)
    failed = 0
    if as_json:
        print(json.dumps([p.to_dict(top_k) for p in preds]))
    for p in preds:
        if p.error:
            failed += 1
            print(f"specrnn: error: {p.path}: {p.error}", file=sys.stderr)
        elif not as_json and ctc:  # a token sequence and its best path's probability (then the k most probable sequences)
            more = "; most probable sequences: " + ", ".join(f"'{seq}' {percent(q)}" for seq, q in p.top(top_k)) if top_k > 1 else ""
            how = "over its paths" if p.beam else "best path"
            print(f"{p.path}\t{p.label or '(nothing decoded)'}\t({how} {percent(p.path_probability)}{more})")
        elif not as_json:
            tops = ", ".join(f"{lab} {percent(prob)}" for lab, prob in p.top(top_k))
            print(f"{p.path}\t{p.label}\t({tops})")
    return 1 if failed else 0


def align_command(run_dir, paths: list[str], transcripts: list[str], as_json: bool) -> int:
    """`specrnn predict --transcript`: each file's known transcript aligned to its audio (token, start, end)."""
    import json

    from .predictor import load

    if len(paths) != len(transcripts):
        raise SpecrnnError(f"--transcript: {len(paths)} file(s) but {len(transcripts)} transcript(s); give one per file, in order")
    spans = load(run_dir).align(paths, transcripts)
    if as_json:
        print(json.dumps([{"path": str(p), "transcript": t, "tokens": s} for p, t, s in zip(paths, transcripts, spans)]))
    for p, s in zip(paths, spans):
        if not as_json:
            print(f"{p}\t" + " ".join(f"{x['token']} {x['start']:.2f}-{x['end']:.2f}s" for x in s))
    return 0


def note_cropped(paths: list[str], f) -> None:
    """A note for each file longer than features.max_seconds: the model read only part of it."""
    if f.max_seconds is None:
        return
    import soundfile as sf

    for path in paths:
        try:
            seconds = sf.info(str(path)).duration
        except Exception:  # it decoded for the prediction; a header soundfile cannot size is not worth an error
            continue
        if seconds > f.max_seconds:
            part = "first" if f.crop == "start" else "middle"
            print(f"specrnn: note: {path} is {seconds:.1f} s long; the model read its {part} {f.max_seconds:g} s "
                  "(features.max_seconds, features.crop)", file=sys.stderr)
