"""The run configuration: typed sections with defaults, loaded from YAML and `--set key=value`.

Every run writes its fully resolved config, so a run folder says exactly what produced it.
"""
from __future__ import annotations

import dataclasses
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
    normalize: str = "global"  # global | utterance | frame | none
    stack: int = 2  # stack k consecutive frames into one: k x fewer RNN steps (10 ms hop -> 20 ms)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    cell: str = "lstm"  # lstm | gru (LSTM measured 1.3x faster than GRU per step on CPU)
    hidden: int = 128
    layers: int = 2
    bidirectional: bool = True
    dropout: float = 0.15  # between RNN layers and before the head
    layer_norm: bool = False  # LayerNorm between RNN layers
    projection: int | None = None  # linear projection between RNN layers
    pooling: str = "attention"  # last | mean | max | meanstd | attention | dot (| padded_last: the known-wrong seed recipe)
    attention_heads: int = 1
    head: str = "clip"  # clip | frame
    head_hidden: list[int] = field(default_factory=list)  # hidden sizes of an MLP head (ReLU); [] = one linear layer
    multilabel: bool = False
    rnn_impl: str = "auto"  # auto | padded | packed (identical results; speed differs by device) | naive (known-wrong)


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
    mixup: float = 0.0  # Beta(mixup, mixup) mixing weight; 0 = off
    noise_dir: str | None = None
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
    bucket: bool = True  # length-bucketed batches to limit padding
    on_error: str = "stop"  # stop | skip
    cache_dir: str | None = None  # default: $SPECRNN_CACHE or ~/.cache/specrnn


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


CHOICES = {
    "features.kind": {"logmel", "mfcc", "logpower"},
    "features.crop": {"start", "center"},
    "model.normalize": {"global", "utterance", "frame", "none"},
    "model.frontend.type": {"none", "cnn"},
    "model.cell": {"lstm", "gru"},
    "model.pooling": {"last", "mean", "max", "meanstd", "attention", "dot", "padded_last"},
    "model.head": {"clip", "frame"},
    "model.rnn_impl": {"auto", "padded", "packed", "naive"},
    "train.schedule": {"onecycle", "cosine", "constant"},
    "data.on_error": {"stop", "skip"},
}


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
            kwargs[key] = _coerce(value, default, f"{prefix}{key}")
    obj = cls(**kwargs)
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if name in CHOICES and getattr(obj, f.name) not in CHOICES[name]:
            raise SpecrnnError(f"config '{name}' must be one of {sorted(CHOICES[name])}, got {getattr(obj, f.name)!r}")
    return obj


def _coerce(value: Any, default: Any, name: str) -> Any:
    """Check a value against its default's type; YAML's '1e-3' (a string) becomes a float."""
    if value is None or default is None or name in FREE_TYPED:
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
            raise SpecrnnError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SpecrnnError(f"{path}: not valid YAML ({e})") from None
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
    extra = overrides if isinstance(overrides, dict) else parse_set(overrides or [])
    return _build(Config, _merge(base, extra), "")


def config_from_dict(data: dict) -> Config:
    return _build(Config, data, "")
