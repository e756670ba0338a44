"""`specrnn models`: the model presets (configs in specrnn/presets) listed, shown as YAML, or built and summarised
(layers, output shapes, parameters)."""
from __future__ import annotations

import os

from ..config import load_config, preset_path
from ..errors import SpecrnnError


def describe(action: str, name: str | None, sets: list[str] | None = None, classes: int = 10) -> str:
    """What `specrnn models [list|show|config] [NAME]` prints."""
    from ..tasks import make_task
    from .build import build_model, summarize

    folder = preset_path("x").parent
    names = sorted(p.stem for p in folder.glob("*.yaml") if p.stem != "search_space")
    if action == "list" or not name:
        return "\n".join(f"{p.stem:12s} {p.read_text().splitlines()[0].lstrip('# ').strip().split(': ', 1)[-1]}"
                         for p in (folder / f"{n}.yaml" for n in names))
    if action == "config" and name == "search_space":
        return preset_path("search_space").read_text().rstrip("\n")
    if name not in names and not os.path.isfile(name):
        raise SpecrnnError(f"no preset or config file '{name}' (presets: {', '.join(names)})")
    cfg = load_config(name, sets)
    if action == "config":
        with open(preset_path(name) if preset_path(name).is_file() else name) as f:
            return f.read().rstrip("\n")
    kind = cfg.task if cfg.task.kind != "auto" else cfg.task.model_copy(update={"kind": "classification"})  # no labels here
    task = make_task(kind, [str(i) for i in range(classes)])  # CTC scores the tokens and a blank
    return summarize(build_model(cfg.model, cfg.features.n_features, task, cfg.augment), cfg.features.n_features)
