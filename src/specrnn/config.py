"""The run configuration: typed sections with defaults, loaded from YAML and `--set key=value`.

Every run writes its fully resolved config, so a run folder says exactly what produced it.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecrnnError


@dataclass
class FeatureConfig:
    """How a waveform becomes a (T, F) sequence. Stored with the model: predict needs it."""

    sample_rate: int = 16000
    kind: str = "logmel"  # logmel | mfcc | logpower
    n_fft: int = 512
    win_length: int = 400  # 25 ms at 16 kHz
    hop_length: int = 160  # 10 ms at 16 kHz
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float | None = None
    n_mfcc: int = 40
    top_db: float | None = 80.0
    trim_db: float | None = None  # drop leading/trailing frames this many dB below the loudest frame (offline only)
    max_seconds: float | None = 30.0  # crop policy: longer clips are cut (only what is kept is decoded)
    crop: str = "start"  # start | center

    @property
    def n_features(self) -> int:
        return {"logmel": self.n_mels, "mfcc": self.n_mfcc, "logpower": self.n_fft // 2 + 1}[self.kind]


@dataclass
class FrontendConfig:
    """Optional 2-D CNN over (time, frequency); its output size is inferred, never typed in."""

    type: str = "none"  # none | cnn
    channels: list[int] = field(default_factory=lambda: [32, 32])
    kernel: Any = 3  # int, or [time, frequency]; odd sizes
    time_strides: list[int] = field(default_factory=lambda: [1, 1])
    freq_pools: list[int] = field(default_factory=lambda: [2, 2])
    dropout: float = 0.0


@dataclass
class ModelConfig:
    normalize: str = "global"  # global | utterance | frame | none | group (each speaker's mean removed, then global)
    stack: int = 2  # stack k consecutive frames into one: k x fewer RNN steps (10 ms hop -> 20 ms)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    cell: str = "gru"  # lstm | gru; the default (preset `gru`) was chosen on FSDD: see docs/models_fsdd.md
    hidden: int = 128
    layers: int = 2
    bidirectional: bool = False  # unidirectional: as accurate on FSDD, faster (half the RNN work), and it streams
    dropout: float = 0.15  # between RNN layers and before the head
    layer_norm: bool = False  # LayerNorm between RNN layers
    projection: int | None = None  # linear projection between RNN layers
    pooling: str = "attention"  # last | mean | max | meanstd | attention | dot (| padded_last: the known-wrong seed recipe)
    attention_heads: int = 1
    head: str = "clip"  # clip | frame | ctc (token sequences: labels like "yes no yes")
    head_hidden: list[int] = field(default_factory=list)  # hidden sizes of an MLP head (ReLU); [] = one linear layer
    multilabel: bool = False
    rnn_impl: str = "auto"  # auto | padded | packed (identical results; speed differs by device) | naive (known-wrong)
    rnn_init: str = "default"  # default (PyTorch's uniform) | orthogonal (recurrent weights per gate, zero biases)


@dataclass
class AugmentConfig:
    """Training-only augmentation, applied batched on features; never on validation or test."""

    time_masks: int = 2
    time_mask_width: int = 10  # frames (10 ms each)
    time_mask_fraction: float = 0.2  # and at most this share of the clip
    freq_masks: int = 2
    freq_mask_width: int = 8
    gain_db: float = 0.0  # random gain in +-gain_db
    time_shift: float = 0.0  # circular shift by up to this share of the clip
    freq_warp: float = 0.0  # stretch the frequency axis by a random factor in 1 +- freq_warp (speaker variation)
    speed: float = 0.0  # speed perturbation: play clips 1 +- speed times as fast (speaking rate)
    mixup: float = 0.0  # Beta(mixup, mixup) mixing weight; 0 = off
    noise_dir: str | None = None
    noise_colors: list[str] = field(default_factory=list)  # built-in stationary noise: white, pink, brown
    noise_snr_db: list[float] = field(default_factory=lambda: [5.0, 30.0])


@dataclass
class TrainConfig:
    batch_size: int = 32
    max_epochs: int = 20
    min_epochs: int = 1
    patience: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-2
    schedule: str = "onecycle"  # onecycle | cosine | constant
    warmup_fraction: float = 0.15
    grad_clip: float = 5.0
    label_smoothing: float = 0.05
    ema: float = 0.0  # keep an exponential moving average of the weights (decay per step, e.g. 0.999); 0 = off
    adversary: float = 0.0  # speaker-adversarial weight: the clip embedding learns to hide its group (gradient reversal); 0 = off
    precision: str = "auto"  # auto | 32 | 16-mixed | bf16-mixed
    accelerator: str = "auto"
    threads: int | None = None
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"


@dataclass
class DataConfig:
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    group_val: bool = True  # validation holds out whole groups (speakers); false: val rows come from training groups
    bucket: bool = True  # length-bucketed batches to limit padding
    on_error: str = "stop"  # stop | skip
    cache_dir: str | None = None  # default: $SPECRNN_CACHE or ~/.cache/specrnn
    split_seed: int | None = None  # seeds the train/val/test split; null = `seed` (train --seeds keeps one split)


@dataclass
class Config:
    seed: int = 0
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


NOISE_COLORS = {"white": 0, "pink": 1, "brown": 2}  # power spectrum ~ 1 / f^exponent

CHOICES = {
    "features.kind": {"logmel", "mfcc", "logpower"},
    "features.crop": {"start", "center"},
    "model.normalize": {"global", "utterance", "frame", "none", "group"},
    "model.frontend.type": {"none", "cnn"},
    "model.cell": {"lstm", "gru"},
    "model.pooling": {"last", "mean", "max", "meanstd", "attention", "dot", "padded_last"},
    "model.head": {"clip", "frame", "ctc"},
    "model.rnn_impl": {"auto", "padded", "packed", "naive"},
    "model.rnn_init": {"default", "orthogonal"},
    "train.schedule": {"onecycle", "cosine", "constant"},
    "data.on_error": {"stop", "skip"},
}


# (low, high, low inclusive, high inclusive); None = unbounded. Checked for every config, so a bad value is one
# clear line before any work rather than a traceback deep inside training.
RANGES = {
    "features.sample_rate": (1000, None, True, True), "features.n_fft": (16, None, True, True),
    "features.win_length": (1, None, True, True), "features.hop_length": (1, None, True, True),
    "features.n_mels": (1, None, True, True), "features.n_mfcc": (1, None, True, True),
    "features.f_min": (0, None, True, True), "features.top_db": (0, None, False, True),
    "features.trim_db": (0, None, False, True),
    "features.max_seconds": (0, None, False, True),
    "model.stack": (1, None, True, True), "model.hidden": (1, None, True, True), "model.layers": (1, None, True, True),
    "model.dropout": (0, 1, True, False), "model.attention_heads": (1, None, True, True), "model.projection": (1, None, True, True),
    "model.frontend.dropout": (0, 1, True, False),
    "augment.time_masks": (0, None, True, True), "augment.time_mask_width": (0, None, True, True),
    "augment.time_mask_fraction": (0, 1, True, True), "augment.freq_masks": (0, None, True, True),
    "augment.freq_mask_width": (0, None, True, True), "augment.gain_db": (0, None, True, True),
    "augment.time_shift": (0, 1, True, True), "augment.freq_warp": (0, 0.5, True, True), "augment.speed": (0, 0.5, True, True), "augment.mixup": (0, None, True, True),
    "train.batch_size": (1, None, True, True), "train.max_epochs": (1, None, True, True), "train.min_epochs": (0, None, True, True),
    "train.patience": (1, None, True, True), "train.lr": (0, None, False, True), "train.weight_decay": (0, None, True, True),
    "train.warmup_fraction": (0, 1, True, False), "train.grad_clip": (0, None, True, True),
    "train.label_smoothing": (0, 1, True, False), "train.ema": (0, 1, True, False), "train.adversary": (0, None, True, True), "train.threads": (1, None, True, True), "train.num_nodes": (1, None, True, True),
    "data.val_fraction": (0, 1, True, False), "data.test_fraction": (0, 1, True, False),
    "seed": (0, 2**32, True, False), "data.split_seed": (0, 2**32, True, False),  # numpy's seeds: 0 <= seed < 2^32
}


def _check_ranges(cfg: "Config") -> None:
    d = cfg.to_dict()
    for key, (lo, hi, lo_in, hi_in) in RANGES.items():
        node = d
        for part in key.split("."):
            node = node[part]
        if node is None:
            continue
        if isinstance(node, float) and not math.isfinite(node):
            raise SpecrnnError(f"config '{key}' must be a finite number, got {node!r}")
        bad = (lo is not None and (node < lo if lo_in else node <= lo)) or (hi is not None and (node > hi if hi_in else node >= hi))
        if bad:
            lo_s = "" if lo is None else f"{'>=' if lo_in else '>'} {lo}"
            hi_s = "" if hi is None else f"{'<=' if hi_in else '<'} {hi}"
            raise SpecrnnError(f"config '{key}' must be {' and '.join(x for x in (lo_s, hi_s) if x)}, got {node!r}")
    fe = cfg.model.frontend
    for name in ("channels", "time_strides", "freq_pools"):
        values = getattr(fe, name)
        if values is not None and any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
            raise SpecrnnError(f"config 'model.frontend.{name}' must hold whole numbers >= 1, got {values!r}")
    f = cfg.features
    if f.win_length > f.n_fft:
        raise SpecrnnError(f"config 'features.win_length' ({f.win_length}) must not exceed features.n_fft ({f.n_fft})")
    if f.kind == "mfcc" and f.n_mfcc > f.n_mels:
        raise SpecrnnError(f"config 'features.n_mfcc' ({f.n_mfcc}) must not exceed features.n_mels ({f.n_mels})")
    if f.f_max is not None and not f.f_min < f.f_max <= f.sample_rate / 2:
        raise SpecrnnError(f"config 'features.f_max' must lie in (f_min, sample_rate/2] = ({f.f_min}, {f.sample_rate / 2}]")
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1:
        raise SpecrnnError("config 'data.val_fraction' + 'data.test_fraction' must be below 1")
    bad_colors = sorted(set(cfg.augment.noise_colors) - set(NOISE_COLORS))
    if bad_colors:
        raise SpecrnnError(f"config 'augment.noise_colors' knows {', '.join(NOISE_COLORS)}; got {', '.join(map(repr, bad_colors))}")
    if cfg.model.head == "ctc" and (cfg.model.multilabel or cfg.augment.mixup > 0 or cfg.augment.time_shift > 0):
        raise SpecrnnError("model.head: ctc learns token sequences; it cannot be multi-label (model.multilabel), "
                           "blend labels (augment.mixup) or roll clips (augment.time_shift reorders the tokens)")
    if cfg.model.head == "ctc" and cfg.features.max_seconds is not None:
        raise SpecrnnError("model.head: ctc needs whole clips: set features.max_seconds: null (a crop would cut tokens "
                           "off the audio while the label keeps them)")
    snr = cfg.augment.noise_snr_db
    if len(snr) != 2 or snr[0] > snr[1] or snr[0] < -50 or snr[1] > 100:
        raise SpecrnnError(f"config 'augment.noise_snr_db' must be [low, high] with -50 <= low <= high <= 100 (dB), got {snr}")


def _build(cls, values: dict, prefix: str):
    if not isinstance(values, dict):
        raise SpecrnnError(f"config section '{prefix.rstrip('.') or 'root'}' must be a mapping, got {values!r}")
    kwargs = {}
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in known:
            raise SpecrnnError(f"unknown config key '{prefix}{key}' (known: {', '.join(sorted(known))})")
        default = known[key].default_factory() if known[key].default_factory is not dataclasses.MISSING else known[key].default
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, default, f"{prefix}{key}", str(known[key].type))
    obj = cls(**kwargs)
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if name in CHOICES and getattr(obj, f.name) not in CHOICES[name]:
            raise SpecrnnError(f"config '{name}' must be one of {sorted(CHOICES[name])}, got {getattr(obj, f.name)!r}")
    return obj


def _coerce(value: Any, default: Any, name: str, annotation: str = "") -> Any:
    """Check a value against its default's type; YAML's '1e-3' (a string) becomes a float. A list's items are
    checked against the field's `list[...]` annotation, one by one."""
    if value is None or default is None or name in FREE_TYPED:
        return value
    item = re.fullmatch(r"list\[(int|float|str)\]", annotation.replace(" ", ""))
    if isinstance(default, list) and isinstance(value, list) and item:
        sample = {"int": 0, "float": 0.0, "str": ""}[item.group(1)]
        try:
            value = [_coerce(v, sample, name) for v in value]
        except SpecrnnError:
            raise SpecrnnError(f"config '{name}' expects a list of {item.group(1)}, got {value!r}") from None
        if item.group(1) == "float" and not all(math.isfinite(v) for v in value):
            raise SpecrnnError(f"config '{name}' must hold finite numbers, got {value!r}")
        return value
    ok = True
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        try:
            value = float(value) if not isinstance(value, bool) else value
        except (TypeError, ValueError):
            ok = False
        ok = ok and isinstance(value, float)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    if not ok:
        raise SpecrnnError(f"config '{name}' expects {type(default).__name__}, got {value!r}")
    return value


FREE_TYPED = {"train.devices", "model.frontend.kernel"}


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_set(items: list[str]) -> dict:
    """`['model.hidden=256', 'train.lr=1e-3']` -> nested dict, values parsed as YAML scalars."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise SpecrnnError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else None
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def preset_path(name: str) -> Path:
    return Path(__file__).parent / "presets" / f"{name}.yaml"


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        alt = preset_path(str(path))
        if alt.is_file():
            path = alt
        else:
            names = sorted(p.stem for p in preset_path("x").parent.glob("*.yaml") if p.stem != "search_space")
            raise SpecrnnError(f"config file not found: {path} (presets: {', '.join(names)})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecrnnError(f"{path}: not valid YAML{where} ({getattr(e, 'problem', None) or str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise SpecrnnError(f"{path}: a config file must hold a mapping")
    return data


def load_config(config: str | Path | dict | Config | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Defaults, then a YAML file (or preset name, or dict), then `--set` overrides."""
    if isinstance(config, Config):
        base = config.to_dict()
    elif isinstance(config, dict):
        base = config
    elif config is None:
        base = {}
    else:
        base = read_yaml(config)
    extra = _nested(overrides) if isinstance(overrides, dict) else parse_set(overrides or [])
    return config_from_dict(_merge(base, extra))


def _nested(d: dict) -> dict:
    """{'model.hidden': 32} -> {'model': {'hidden': 32}}; nested dicts pass through (both may mix)."""
    out: dict = {}
    for key, value in d.items():
        parts = str(key).split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = _merge(node.get(parts[-1], {}), value) if isinstance(value, dict) else value
    return out


def config_from_dict(data: dict) -> Config:
    cfg = _build(Config, data, "")
    _check_ranges(cfg)
    return cfg
