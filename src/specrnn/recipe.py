"""The automatic recipe: `specrnn train DATA` with no --config looks at the data and picks its settings by the
written rules below, one function each; every choice is printed with its reason and written at the top of
config.yaml, and --set wins over any of them.

The rules distil what was measured on the shared data sets (docs/experiments.md): the default GRU on short
speech-like clips (FSDD digits 100%), the CRNN with attention and augmentation of configs/esc10.yaml on long
sound-event clips (ESC-10, 87.25% against the plain defaults' 73.25%) and on 44.1 kHz drum one-shots, and the
CTC head with whole clips at their own rate for token-sequence labels. The very-short-clip frames and the class weights are standard practice, not
yet measured here (benchmarks/RESULTS.md says what is).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .tasks import infer_kind, with_task

SAMPLE = 1000  # files whose headers are read for durations and rates (evenly spaced; a million-row manifest stays quick)
LONG_S = 2.5  # median clip length from which clips are treated as sound events / scenes
HIFI_RATE = 22050  # ... and recordings at this rate or more (sound effects, music; speech corpora are 8-16 kHz)
VERY_SHORT_S = 0.1  # median below this: finer frames, so a 50 ms clip still has a few
CROP_S = 30.0  # the longest audio read from one clip (features.max_seconds)
SMALL = 256  # fewer clips than this get smaller batches
IMBALANCE = 1.5  # largest / smallest class count from which the loss is weighted per class
CTC_EPOCHS = 40  # token-sequence training: epochs, with early stopping held off until the last
CTC_SMALL_EPOCHS = 100  # ... and for fewer than SMALL clips (yesno, 24 training clips: 6 steps an epoch)


@dataclass
class DataProfile:
    """What the recipe reads from a manifest: sizes, label type, durations and sample rates (a sample of files)."""

    clips: int
    counts: dict[str, int]
    groups: int
    label_type: str  # the task the labels ask for: classification | multilabel | ctc
    seconds: list[float] = field(default_factory=list)
    rates: list[int] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        return float(np.median(self.seconds)) if self.seconds else 1.0

    @property
    def rate(self) -> int:
        return int(np.median(self.rates)) if self.rates else 16000


@dataclass
class Choice:
    key: str  # dotted config key
    value: object
    why: str


def profile(man) -> DataProfile:
    """Read a Manifest's labels and a sample of its files' headers (unreadable files are left to training's checks)."""
    import soundfile as sf

    labels = man.labels
    kind = infer_kind(labels)
    counts: dict[str, int] = {}
    for x in labels:
        for part in (x.split() if kind == "ctc" else x.split(";") if kind == "multilabel" else [x]):
            counts[part.strip()] = counts.get(part.strip(), 0) + 1
    seconds, rates = [], []
    for i in np.unique(np.linspace(0, len(man) - 1, min(SAMPLE, len(man))).astype(int)) if len(man) else []:
        try:
            info = sf.info(man.paths[i])
        except Exception:  # noqa: BLE001 - a bad file is named by the training's own checks
            continue
        seconds.append(info.frames / info.samplerate)
        rates.append(info.samplerate)
    return DataProfile(len(man), counts, len(set(man.groups)) if man.groups else 0, kind, seconds, rates)


# ---------------------------------------------------------------- the rules, one per function
def rule_labels(p: DataProfile) -> list[Choice]:
    """Token sequences ("yes no no yes") need CTC on whole clips; ';'-joined labels are multi-label."""
    if p.label_type == "ctc":
        why = f"labels are space-separated token sequences ({len(p.counts)} tokens): CTC"
        return [Choice("task.kind", "ctc", why), Choice("features.max_seconds", None, "CTC reads whole clips")]
    if p.label_type == "multilabel":
        return [Choice("task.kind", "multilabel", "labels hold several classes joined by ';'")]
    return []


def rule_ctc(p: DataProfile) -> list[Choice]:
    """CTC sits on a plateau (every step blank) before it learns, and leaves it only with enough optimiser steps:
    batches of 8, CTC_EPOCHS epochs (CTC_SMALL_EPOCHS under SMALL clips) with early stopping off until the end,
    per-frame normalisation (it streams; per-clip statistics do not), 4 stacked frames (40 ms steps), and, under
    SMALL clips, every training clip cut at its pauses to a random run of its tokens (augment.pause_crop): so few
    sequences cannot then be learnt one whole sequence per clip. yesno (60 clips) over 10 seeds: 2 of 10 below 5%
    word error without the cut, 9 of 10 with it; connected FSDD digits (900 clips): 2.6% word error without it,
    23.6% with it (the model learns to guess a token at the first step), so it is not applied there
    (docs/experiments.md). Benchmarks: benchmarks/RESULTS.md, "Recognition"."""
    if p.label_type != "ctc":
        return []
    why = "CTC learns after a plateau: enough small steps"
    epochs = CTC_EPOCHS if p.clips >= SMALL else CTC_SMALL_EPOCHS
    return [Choice("train.batch_size", 8, why), Choice("train.max_epochs", epochs, why + (f" ({p.clips} clips)" if p.clips < SMALL else "")),
            Choice("train.patience", epochs, "no early stop on the plateau"),
            Choice("model.normalize", "frame", "each frame's own mean and variance: streams, unlike per-clip"),
            Choice("model.stack", 4, "40 ms steps: enough for a token each, a quarter of the RNN steps"),
            *([Choice("augment.pause_crop", 1.0, f"{p.clips} clips: cut at pauses to random runs of tokens, so no "
                                                 "sequence is learnt by heart")] if p.clips < SMALL else [])]


def is_events(p: DataProfile) -> bool:
    """Sound events rather than speech: long clips (median >= LONG_S), or recordings at HIFI_RATE or more."""
    return p.label_type != "ctc" and (p.median_seconds >= LONG_S or p.rate >= HIFI_RATE)


def rule_events(p: DataProfile) -> list[Choice]:
    """Sound events (is_events) get the configs/esc10.yaml CRNN, attention and augmentation. Long clips: ESC-10,
    87.25% against the plain defaults' 73.25%; recordings at 44.1 kHz of 1 s median, drum one-shots of Hydrogen's
    kits, kit-disjoint: see benchmarks/RESULTS.md ("Defaults on non-speech sets")."""
    if not is_events(p):
        return []
    what = (f"clips are long (median {p.median_seconds:.1f} s)" if p.median_seconds >= LONG_S
            else f"recorded at {p.rate} Hz (sound effects, music; speech corpora are 8-16 kHz)")
    why = f"{what}: sound events, the CRNN + attention recipe (configs/esc10.yaml)"
    return [Choice("model.stack", 1, why),
            Choice("model.frontend", {"type": "cnn", "channels": [16, 32, 64], "kernel": 3, "time_strides": [1, 2, 1],
                                      "freq_pools": [2, 2, 2], "dropout": 0.1}, "the event recipe"),
            Choice("model.bidirectional", True, "the event recipe (whole clips, no streaming)"),
            Choice("model.layers", 1, "the event recipe"), Choice("model.hidden", 128, "the event recipe"),
            Choice("model.dropout", 0.3, "the event recipe"), Choice("model.pooling", "attention", "the event recipe"),
            Choice("augment", {"time_masks": 2, "time_mask_width": 20, "freq_masks": 2, "freq_mask_width": 8,
                               "gain_db": 6, "time_shift": 0.5, "mixup": 0.3}, "the event recipe"),
            Choice("train.max_epochs", 40, "the event recipe"), Choice("train.patience", 15, "the event recipe")]


def feature_rate(p: DataProfile) -> int:
    """The features' sample rate: events recorded at >= HIFI_RATE keep HIFI_RATE, token sequences keep a native
    rate below 16 kHz, the rest is read at 16 kHz (the defaults)."""
    if is_events(p) and p.rate >= HIFI_RATE:
        return HIFI_RATE
    return p.rate if p.label_type == "ctc" and p.rate < 16000 else 16000


def rule_rate(p: DataProfile) -> list[Choice]:
    """Sample rate (feature_rate) and frames: events at 22.05 kHz get 46 ms windows and 20 ms hops; token sequences
    at their native rate 25 ms windows and 10 ms hops; 16 kHz keeps the defaults."""
    r = feature_rate(p)
    if r == HIFI_RATE:
        why = f"recorded at {p.rate} Hz: sound events keep detail up to 11 kHz"
        return [Choice("features.sample_rate", r, why), Choice("features.n_fft", 1024, "46 ms windows"),
                Choice("features.win_length", 1024, "46 ms windows"), Choice("features.hop_length", 441, "20 ms hops")]
    if r != 16000:
        n_fft = 1 << int(np.ceil(np.log2(0.025 * r)))
        return [Choice("features.sample_rate", r, f"recorded at {r} Hz: no resampling"),
                Choice("features.n_fft", n_fft, "25 ms windows"), Choice("features.win_length", int(0.025 * r), "25 ms windows"),
                Choice("features.hop_length", int(0.01 * r), "10 ms hops")]
    return []


def rule_short(p: DataProfile) -> list[Choice]:
    """Very short clips (median < VERY_SHORT_S, e.g. single hits): 16 ms windows and 5 ms hops (a 50 ms clip: 10 frames)."""
    if p.median_seconds >= VERY_SHORT_S:
        return []
    why = f"clips are very short (median {1000 * p.median_seconds:.0f} ms): finer frames"
    r = feature_rate(p)
    win = round(0.016 * r)
    return [Choice("features.n_fft", 1 << (win - 1).bit_length(), why), Choice("features.win_length", win, why),
            Choice("features.hop_length", round(0.005 * r), why)]


def rule_long(p: DataProfile) -> list[Choice]:
    """Clips longer than CROP_S are read in their middle CROP_S seconds (not their start)."""
    if p.label_type == "ctc" or not p.seconds or max(p.seconds) <= CROP_S:
        return []
    return [Choice("features.crop", "center", f"some clips are over {CROP_S:g} s (longest {max(p.seconds):.0f} s): "
                                              f"the middle {CROP_S:g} s of each is read")]


def rule_imbalance(p: DataProfile) -> list[Choice]:
    """Classes of very different sizes (largest / smallest > IMBALANCE): weight the loss by 1 / class share."""
    if p.label_type == "ctc" or len(p.counts) < 2:
        return []
    big, small = max(p.counts.values()), min(p.counts.values())
    if big / small <= IMBALANCE:
        return []
    return [Choice("train.class_weights", "balanced", f"classes are imbalanced ({big} against {small} clips): "
                                                     "each class weighted by 1 / its share")]


def rule_small(p: DataProfile) -> list[Choice]:
    """Few clips (< SMALL): smaller batches, so an epoch still holds about 16 optimiser steps (batch >= 4)."""
    if p.clips >= SMALL:
        return []
    size = max(4, p.clips // 16)
    return [Choice("train.batch_size", size, f"{p.clips} clips: batches of {size}, about 16 steps an epoch")]


RULES = [rule_labels, rule_ctc, rule_events, rule_rate, rule_short, rule_long, rule_imbalance, rule_small]


def choose(p: DataProfile) -> list[Choice]:
    """Every rule's choices, later rules winning on the same key."""
    out: dict[str, Choice] = {}
    for rule in RULES:
        for c in rule(p):
            out[c.key] = c
    return list(out.values())


def as_config(choices: list[Choice]) -> dict:
    """The choices as a nested config dict (the layer between the defaults and --set)."""
    out: dict = {}
    for c in choices:
        *parents, leaf = c.key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = c.value
    return out


def describe(p: DataProfile, choices: list[Choice], overridden: set[str]) -> list[str]:
    """The lines `train` prints and config.yaml starts with."""
    kind = {"classification": "classes", "multilabel": "classes (multi-label)", "ctc": "tokens"}[p.label_type]
    secs = f"median {p.median_seconds:.2f} s" + (f", {min(p.seconds):.2f}-{max(p.seconds):.1f} s" if p.seconds else "")
    lines = [f"recipe: {p.clips} clips, {len(p.counts)} {kind}, {p.groups or 'no'} groups, {secs}, {p.rate} Hz"]
    if not choices:
        lines.append("recipe: the defaults fit this data (short clips, balanced classes)")
    for c in choices:
        won = " (--set wins)" if any(c.key == k or c.key.startswith(k + ".") or k.startswith(c.key + ".") for k in overridden) else ""
        lines.append(f"recipe: {c.key} = {c.value!r}{won}: {c.why}")
    return lines


def flat_keys(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        out |= flat_keys(v, key + ".") if isinstance(v, dict) else {key}
    return out


def resolve(man, config, overrides, log=print):
    """(Config, recipe lines): with no --config, the recipe's choices under --set; with one, that config as given.
    Either way `task.kind` is concrete (inferred from the labels when auto)."""
    from .config import load_config, parse_set

    if config is not None:
        return with_task(load_config(config, overrides), man.labels), []
    p = profile(man)
    choices = choose(p)
    given = flat_keys(overrides if isinstance(overrides, dict) else parse_set(overrides or []))
    lines = describe(p, choices, given)
    for line in lines:
        log(line)
    return with_task(load_config(as_config(choices), overrides), man.labels), lines
