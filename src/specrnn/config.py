"""The run configuration: typed sections (pydantic models) with defaults, loaded from YAML and `--set key=value`.

Choices are Literal types and ranges Field constraints; the checks that span fields are validators. Every problem
is one SpecrnnError naming its dotted key, before any work. Every run writes its fully resolved config, so a run
folder says exactly what produced it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from .errors import SpecrnnError

NOISE_COLORS = {"white": 0, "pink": 1, "brown": 2}  # power spectrum ~ 1 / f^exponent
Whole = Annotated[int, Field(ge=1)]  # list items: channels, strides, pools
Seed = Annotated[int, Field(ge=0, lt=2**32)]  # numpy's seeds: 0 <= seed < 2^32


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FeatureConfig(Section):
    """How a waveform becomes a (T, F) sequence. Stored with the model: predict needs it."""

    sample_rate: int = Field(16000, ge=1000)
    kind: Literal["logmel", "mfcc", "logpower"] = "logmel"
    n_fft: int = Field(512, ge=16)
    win_length: int = Field(400, ge=1)  # 25 ms at 16 kHz
    hop_length: int = Field(160, ge=1)  # 10 ms at 16 kHz
    n_mels: int = Field(64, ge=1)
    f_min: float = Field(0.0, ge=0)
    f_max: Optional[float] = None
    n_mfcc: int = Field(40, ge=1)
    top_db: Optional[float] = Field(80.0, gt=0)
    trim_db: Optional[float] = Field(None, gt=0)  # drop leading/trailing frames this many dB below the loudest (offline only)
    max_seconds: Optional[float] = Field(30.0, gt=0)  # crop policy: longer clips are cut (only what is kept is decoded)
    crop: Literal["start", "center"] = "start"

    @property
    def n_features(self) -> int:
        return {"logmel": self.n_mels, "mfcc": self.n_mfcc, "logpower": self.n_fft // 2 + 1}[self.kind]

    @model_validator(mode="after")
    def _consistent(self):
        if self.win_length > self.n_fft:
            raise SpecrnnError(f"config 'features.win_length' ({self.win_length}) must not exceed features.n_fft ({self.n_fft})")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise SpecrnnError(f"config 'features.n_mfcc' ({self.n_mfcc}) must not exceed features.n_mels ({self.n_mels})")
        if self.f_max is not None and not self.f_min < self.f_max <= self.sample_rate / 2:
            raise SpecrnnError(f"config 'features.f_max' must lie in (f_min, sample_rate/2] = ({self.f_min}, {self.sample_rate / 2}]")
        return self


class FrontendConfig(Section):
    """Optional 2-D CNN over (time, frequency); its output size is inferred, never typed in."""

    type: Literal["none", "cnn"] = "none"
    channels: list[Whole] = [32, 32]
    kernel: Any = 3  # int, or [time, frequency]; odd sizes
    time_strides: list[Whole] = [1, 1]
    freq_pools: list[Whole] = [2, 2]
    dropout: float = Field(0.0, ge=0, lt=1)


class ModelConfig(Section):
    normalize: Literal["global", "utterance", "frame", "none", "group"] = "global"  # group: each speaker's mean removed
    stack: int = Field(2, ge=1)  # stack k consecutive frames into one: k x fewer RNN steps (10 ms hop -> 20 ms)
    frontend: FrontendConfig = Field(default_factory=FrontendConfig)
    cell: Literal["lstm", "gru"] = "gru"  # the default (preset `gru`) was chosen on FSDD: see docs/models_fsdd.md
    hidden: int = Field(128, ge=1)
    layers: int = Field(2, ge=1)
    bidirectional: StrictBool = False  # unidirectional: as accurate on FSDD, faster (half the RNN work), and it streams
    dropout: float = Field(0.15, ge=0, lt=1)  # between RNN layers and before the head
    layer_norm: StrictBool = False  # LayerNorm between RNN layers
    projection: Optional[int] = Field(None, ge=1)  # linear projection between RNN layers
    # last | mean | max | meanstd | attention | dot (| padded_last: the known-wrong seed recipe)
    pooling: Literal["last", "mean", "max", "meanstd", "attention", "dot", "padded_last"] = "attention"
    attention_heads: int = Field(1, ge=1)
    head: Literal["clip", "frame"] = "clip"  # frame: outputs per frame (a ctc task always has them)
    head_hidden: list[int] = []  # hidden sizes of an MLP head (ReLU); [] = one linear layer
    # auto | padded | packed (identical results; speed differs by device) | naive (known-wrong)
    rnn_impl: Literal["auto", "padded", "packed", "naive"] = "auto"
    rnn_init: Literal["default", "orthogonal"] = "default"  # orthogonal: recurrent weights per gate, zero biases


class TaskConfig(Section):
    """What is learned; the model is built for it. auto: from the labels when the run starts (tasks.infer_kind):
    token sequences like "yes no yes" -> ctc, classes joined by ';' -> multilabel, else classification."""

    kind: Literal["auto", "classification", "multilabel", "ctc"] = "auto"


class AugmentConfig(Section):
    """Training-only augmentation, applied batched on features; never on validation or test."""

    time_masks: int = Field(2, ge=0)
    time_mask_width: int = Field(10, ge=0)  # frames (10 ms each)
    time_mask_fraction: float = Field(0.2, ge=0, le=1)  # and at most this share of the clip
    freq_masks: int = Field(2, ge=0)
    freq_mask_width: int = Field(8, ge=0)
    gain_db: float = Field(0.0, ge=0)  # random gain in +-gain_db
    time_shift: float = Field(0.0, ge=0, le=1)  # circular shift by up to this share of the clip
    freq_warp: float = Field(0.0, ge=0, le=0.5)  # stretch the frequency axis by 1 +- freq_warp (speaker variation)
    speed: float = Field(0.0, ge=0, le=0.5)  # speed perturbation: play clips 1 +- speed times as fast (speaking rate)
    mixup: float = Field(0.0, ge=0)  # Beta(mixup, mixup) mixing weight; 0 = off
    concat: float = Field(0.0, ge=0, le=1)  # CTC: this share of training clips get another clip (and its tokens) appended
    pause_crop: float = Field(0.0, ge=0, le=1)  # CTC: this share of training clips cut to a random run of tokens at pauses
    noise_dir: Optional[str] = None
    noise_colors: list[str] = []  # built-in stationary noise: white, pink, brown
    noise_snr_db: list[float] = [5.0, 30.0]

    @model_validator(mode="after")
    def _noise(self):
        bad = sorted(set(self.noise_colors) - set(NOISE_COLORS))
        if bad:
            raise SpecrnnError(f"config 'augment.noise_colors' knows {', '.join(NOISE_COLORS)}; got {', '.join(map(repr, bad))}")
        snr = self.noise_snr_db
        if len(snr) != 2 or snr[0] > snr[1] or snr[0] < -50 or snr[1] > 100:
            raise SpecrnnError(f"config 'augment.noise_snr_db' must be [low, high] with -50 <= low <= high <= 100 (dB), got {snr}")
        return self


class TrainConfig(Section):
    batch_size: int = Field(32, ge=1)
    max_epochs: int = Field(20, ge=1)
    steps_per_epoch: Optional[int] = Field(None, ge=1)  # at most this many batches an epoch (big data: validate sooner)
    min_epochs: int = Field(1, ge=0)
    patience: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup_fraction: float = Field(0.15, ge=0, lt=1)
    grad_clip: float = Field(5.0, ge=0)
    label_smoothing: float = Field(0.05, ge=0, lt=1)
    class_weights: Literal["none", "balanced"] = "none"  # balanced: each class's loss weighted by 1 / its training share
    ema: float = Field(0.0, ge=0, lt=1)  # exponential moving average of the weights (decay per step, e.g. 0.999); 0 = off
    adversary: float = Field(0.0, ge=0)  # speaker-adversarial weight (gradient reversal on the clip embedding); 0 = off
    precision: str = "auto"  # auto | 32 | 16-mixed | bf16-mixed
    accelerator: str = "auto"
    threads: Optional[int] = Field(None, ge=1)
    devices: Any = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"


class DataConfig(Section):
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    group_val: StrictBool = True  # validation holds out whole groups (speakers); false: val rows from training groups
    bucket: StrictBool = True  # length-bucketed batches to limit padding
    on_error: Literal["stop", "skip"] = "stop"
    cache_dir: Optional[str] = None  # default: $SPECRNN_CACHE or ~/.cache/specrnn
    split_seed: Optional[Seed] = None  # seeds the train/val/test split; null = `seed` (train --seeds keeps one split)


class Config(Section):
    seed: Seed = 0
    task: TaskConfig = Field(default_factory=TaskConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    data: DataConfig = Field(default_factory=DataConfig)

    def to_dict(self) -> dict:
        return self.model_dump()

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data):
        """Configs written before the task section said `model.head: ctc` or `model.multilabel: true`: still read."""
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, dict) or not ({"multilabel"} & set(model) or model.get("head") == "ctc"):
            return data
        model = dict(model)
        multilabel = model.pop("multilabel", None)
        kind = "ctc" if model.get("head") == "ctc" else "multilabel" if multilabel is True else "classification"
        if kind == "ctc":
            model["head"] = "frame"
        task = dict(data.get("task") or {})
        if task.get("kind", "auto") == "auto":
            task["kind"] = kind
        return {**data, "model": model, "task": task}

    @model_validator(mode="after")
    def _consistent(self):
        if self.data.val_fraction + self.data.test_fraction >= 1:
            raise SpecrnnError("config 'data.val_fraction' + 'data.test_fraction' must be below 1")
        if self.task.kind == "ctc" and (self.augment.mixup > 0 or self.augment.time_shift > 0):
            raise SpecrnnError("task.kind: ctc learns token sequences; it cannot blend labels (augment.mixup) or roll "
                               "clips (augment.time_shift reorders the tokens)")
        for name in ("concat", "pause_crop"):
            if getattr(self.augment, name) > 0 and self.task.kind not in ("ctc", "auto"):
                raise SpecrnnError(f"augment.{name} edits token sequences: it needs task.kind ctc, not {self.task.kind}")
        if self.task.kind == "ctc" and self.features.max_seconds is not None:
            raise SpecrnnError("task.kind: ctc needs whole clips: set features.max_seconds: null (a crop would cut tokens "
                               "off the audio while the label keeps them)")
        if self.task.kind == "ctc":
            self.model.head = "frame"  # CTC scores every frame
        return self


BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}
TYPE_NAMES = {"int": "int", "float": "float", "bool": "bool", "string": "str", "list": "list"}


def _message(err: dict, data: dict) -> str:
    """One pydantic error -> the sentence a user reads, naming the dotted key."""
    loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
    key, kind, value = ".".join(loc), err["type"], err.get("input")
    if kind == "extra_forbidden":
        section: type[BaseModel] = Config
        for part in loc[:-1]:
            section = section.model_fields[part].annotation
        return f"unknown config key '{key}' (known: {', '.join(sorted(section.model_fields))})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"config section '{key}' must be a mapping, got {value!r}"
    item = any(isinstance(p, int) for p in err["loc"])
    if item:  # a list's item: show the whole list, as the user wrote it
        value = data
        for part in loc:
            value = value.get(part) if isinstance(value, dict) else value
    if kind == "finite_number":
        return f"config '{key}' must {'hold finite numbers' if item else 'be a finite number'}, got {value!r}"
    if kind in BOUNDS:
        op, name = BOUNDS[kind]
        if item:
            return f"config '{key}' must hold whole numbers {op} {err['ctx'][name]}, got {value!r}"
        return f"config '{key}' must be {op} {err['ctx'][name]}, got {value!r}"
    if kind == "literal_error":
        choices = sorted(x.strip("'") for x in err["ctx"]["expected"].replace(" or ", ", ").split(", "))
        return f"config '{key}' must be one of {choices}, got {value!r}"
    expected = next((n for t, n in TYPE_NAMES.items() if kind.startswith(t)), kind)
    if item:
        return f"config '{key}' expects a list of {expected}, got {value!r}"
    return f"config '{key}' expects {expected}, got {value!r}"


def parse_seeds(value) -> list[int]:
    """Seeds as an int, a list of ints or '0,1,2' -> distinct whole numbers in [0, 2^32): one training each."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    elif isinstance(value, str):
        try:
            value = [int(s) for s in value.split(",")]
        except ValueError:
            raise SpecrnnError(f"seeds must be integers like 0,1,2 (comma-separated whole numbers), got {value!r}") from None
    if not (isinstance(value, (list, tuple)) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value)):
        raise SpecrnnError(f"seeds must be an int, a list of ints or '0,1,2', got {value!r}")
    if len(set(value)) != len(value):
        raise SpecrnnError(f"seeds must be distinct whole numbers from 0 to 2^32 - 1: a seed is listed twice in "
                           f"{list(value)}, and each seed is one training")
    if any(not 0 <= s < 2**32 for s in value):
        raise SpecrnnError(f"seeds must be distinct whole numbers from 0 to 2^32 - 1, got {list(value)}")
    return list(value)


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
    """A validated Config from a nested dict; the first problem found becomes one SpecrnnError naming its key."""
    if not isinstance(data, dict):
        raise SpecrnnError(f"config section 'root' must be a mapping, got {data!r}")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise SpecrnnError(_message(e.errors()[0], data)) from None
