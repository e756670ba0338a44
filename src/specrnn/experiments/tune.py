"""Hyperparameter search with Optuna: a YAML search space, pruning from validation curves, the objective on
validation data only (test rows are dropped before anything is computed), resumable from SQLite storage."""
from __future__ import annotations

import csv
import io
import os
import multiprocessing
import time
from pathlib import Path

import yaml

from ..config import config_from_dict, load_config, preset_path, read_yaml
from ..errors import Interrupted, SpecrnnError
from ..files import atomic_write_text, write_json
from ..tasks import label_kind, with_task

STUDY = "specrnn"
SCORE = {False: ("val_accuracy", "val accuracy"), True: ("val_token_accuracy", "val token accuracy")}  # by sequences
WORKER_ENV = "SPECRNN_TUNE_WORKER"  # set in the extra processes of `tune --jobs N`: they only run trials


def read_space(path: str | Path | None, base: dict | None = None) -> dict:
    """The search space {config key: spec}, checked before any work: well-formed ranges, and (given the base
    config) keys and values the config accepts at both ends of every range."""
    path = Path(path) if path else preset_path("search_space")
    if not path.is_file():
        raise SpecrnnError(f"search space file not found: {path}")
    space = read_yaml(path)
    for key, spec in space.items():
        if not isinstance(spec, dict) or not ({"choices", "int", "float"} & set(spec)):
            raise SpecrnnError(f"{path}: '{key}' needs choices, int: [low, high] or float: [low, high]")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise SpecrnnError(f"{path}: '{key}': choices must be a non-empty list")
            continue
        kind = "int" if "int" in spec else "float"
        bounds = spec[kind]
        numeric = (int,) if kind == "int" else (int, float)
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, numeric) and not isinstance(b, bool) for b in bounds)):
            raise SpecrnnError(f"{path}: '{key}': {kind} needs [low, high] ({kind} numbers), got {bounds!r}")
        if bounds[0] > bounds[1]:
            raise SpecrnnError(f"{path}: '{key}': low {bounds[0]} is above high {bounds[1]}")
        if spec.get("log") and bounds[0] <= 0:
            raise SpecrnnError(f"{path}: '{key}': a log range needs low > 0, got {bounds[0]}")
    if base is not None:  # unknown keys and out-of-range values fail now, not in the first trial
        ends = lambda v, i: v["choices"][i] if "choices" in v else v.get("int", v.get("float"))[i]  # noqa: E731
        points = [{k: ends(v, i) for k, v in space.items()} for i in (0, -1)]
        points += [{k: c} for k, v in space.items() for c in v.get("choices", [])]
        for point in points:
            try:
                apply(base, point)
            except SpecrnnError as e:
                raise SpecrnnError(f"{path}: {e}") from None
    return space


def sample(trial, space: dict) -> dict:
    """Draw one point of the space: {config key: value}."""
    params = {}
    for key, spec in space.items():
        if "choices" in spec:
            params[key] = trial.suggest_categorical(key, spec["choices"])
        elif "int" in spec:
            params[key] = trial.suggest_int(key, *spec["int"], log=bool(spec.get("log")))
        else:
            params[key] = trial.suggest_float(key, *spec["float"], log=bool(spec.get("log")))
    return params


def apply(base: dict, params: dict) -> dict:
    """Config dict with the sampled values set (and the derived rules of the space applied)."""
    params = dict(params)
    sets = []
    strength = params.pop("augment.strength", None)
    if strength is not None:
        sets += [f"augment.time_mask_width={round(10 * strength)}", f"augment.freq_mask_width={round(8 * strength)}"]
    if params.get("model.frontend.type") == "cnn":
        sets += ["model.stack=1", "model.frontend.time_strides=[2, 1]"]
    sets += [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}" for k, v in params.items()]
    return load_config(base, sets).to_dict()


class Pruning:
    """A Lightning callback that reports validation accuracy to Optuna each epoch and stops a poor trial."""

    def __new__(cls, trial):
        from lightning.pytorch.callbacks import Callback

        class _Pruning(Callback):
            def __init__(self, trial):
                self.trial, self.pruned = trial, False

            def on_validation_end(self, trainer, pl_module):
                if trainer.sanity_checking or "val_acc" not in trainer.callback_metrics:
                    return
                self.trial.report(float(trainer.callback_metrics["val_acc"]), trainer.current_epoch)
                if self.trial.should_prune():
                    self.pruned = trainer.should_stop = True

        return _Pruning(trial)


def tune(data, out, trials: int = 20, timeout: float | None = None, storage: str | None = None, space: str | None = None,
         config=None, overrides=None, jobs: int | None = None, log=print) -> dict:
    """Run (or resume) the study in `out`; write best.yaml, trials.csv and plots; return the best trial.

    With `jobs` > 1 (default on CPU: one per core's worth of threads, as `cv`), extra processes run trials of
    the same study through its SQLite storage; together they stop once `trials` trials have finished."""
    import optuna
    from optuna.trial import TrialState

    from ..data.manifest import load_manifest
    from ..data.splits import assign_splits
    from ..jobs import train_prepared
    from ..training.prepare import prepare_data

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if timeout is not None and timeout <= 0:
        raise SpecrnnError(f"--timeout must be above 0 seconds, got {timeout}")
    base = load_config(config, overrides)
    space_d = read_space(space, base.to_dict())
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    worker = int(os.environ.get(WORKER_ENV, 0))
    try:
        study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize", load_if_exists=True,
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=4))
    except Exception as e:  # a malformed URL, a folder that does not exist, a database of something else
        raise SpecrnnError(f"--storage {storage}: cannot open an Optuna study there ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]})") from None
    # seeded by the base seed, the process and the trials already in the study: a fresh study is reproducible,
    # and a resumed one samples new points instead of replaying the ones it started with
    study.sampler = optuna.samplers.TPESampler(seed=base.seed + 1000 * worker + 7919 * len(study.trials))
    for t in [] if worker else study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # a killed run's
        study.tell(t.number, state=TrialState.FAIL)  # public API: a killed run's trial ends as failed
        study.enqueue_trial(t.params, skip_if_exists=False)
        log(f"trial {t.number} was interrupted: queued again")
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if done:
        log(f"resuming study in {storage}: {done} trial(s) finished")

    rows = load_manifest(data)
    base = with_task(base, rows.labels)
    base_d = base.to_dict()
    sequences = label_kind(base.task) == "sequence"
    if sequences:  # a CTC head scores every step: pooling plays no part, and searching it would waste trials
        space_d = {k: v for k, v in space_d.items() if not k.startswith(("model.pooling", "model.attention_heads"))}
    # validation data only: the test rows are dropped before features are computed
    man = assign_splits(rows, base.data.val_fraction, base.data.test_fraction, base.seed, stratify=not sequences)
    man = man.select([i for i, s in enumerate(man.splits) if s != "test"])
    prep = prepare_data(man, base, None, log)
    assert not len(prep.sets["test"])

    def objective(trial):
        cfg = config_from_dict(apply(base_d, sample(trial, space_d)))
        run_dir = out / "trials" / f"trial-{trial.number:03d}"
        run_dir.mkdir(parents=True, exist_ok=True)
        pruning = Pruning(trial)
        t0 = time.perf_counter()
        try:
            m = train_prepared(prep, cfg, run_dir, log=lambda *a: None, callbacks=[pruning], evaluate_test=False)
        except Interrupted:
            raise
        except SpecrnnError as e:  # e.g. a CNN stride that leaves a clip too few CTC steps: this trial fails, not the study
            log(f"trial {trial.number} failed: {e}")
            trial.set_user_attr("error", str(e))
            return float("nan")  # Optuna records a failed trial (without the traceback an exception would print)
        # the score first (accuracy; 1 - token error rate for CTC); the loss only breaks ties (its term stays
        # below 1e-5, under one clip in 100,000)
        score = 1.0 - m["val"]["token_error_rate"] if sequences else m["val"]["accuracy"]
        value = score - 1e-6 * min(float(m["best_val_loss"]), 10.0)
        trial.set_user_attr(SCORE[sequences][0], score)
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
        log(f"trial {trial.number}: {SCORE[sequences][1]} {100 * score:.2f}% "
            f"({'pruned' if pruning.pruned else 'complete'}, {time.perf_counter() - t0:.0f} s)")
        if pruning.pruned:
            raise optuna.TrialPruned()
        return value

    if done >= trials:
        return _report(study, base_d, out, log, sequences)
    from ..devices import auto_jobs

    jobs = 1 if worker else (jobs or auto_jobs(trials - done))
    pool = _start_workers(jobs - 1, data, out, trials, timeout, storage, space, base_d)
    if pool is not None:
        log(f"{jobs} processes run trials of the study (logs: {out / 'worker-*.log'})")
    stop = optuna.study.MaxTrialsCallback(trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
    try:
        study.optimize(objective, n_trials=trials - done, timeout=timeout, catch=(RuntimeError,), callbacks=[stop])
    except BaseException:
        if pool is not None:  # Ctrl-C or a failure: end the workers too (the study's finished trials are kept)
            pool.shutdown(wait=False, cancel_futures=True)
            for child in multiprocessing.active_children():
                child.terminate()
        raise
    if pool is not None:
        pool.shutdown()  # the workers stop by themselves once the study has its trials
    return {} if worker else _report(study, base_d, out, log, sequences)


def _start_workers(n: int, data, out: Path, trials: int, timeout, storage: str, space, base_d: dict):
    """`n` more processes on the same study (the same data, space and resolved base config), each running
    `tune_worker` through the Python API; None when n is 0."""
    if n < 1:
        return None
    from concurrent.futures import ProcessPoolExecutor

    base_file = out / "base_config.yaml"
    atomic_write_text(base_file, yaml.safe_dump(base_d, sort_keys=False))
    pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))
    for k in range(1, n + 1):
        pool.submit(tune_worker, k, str(data), str(out), trials, timeout, storage, space, str(base_file))
    return pool


def tune_worker(k: int, data: str, out: str, trials: int, timeout, storage: str, space, base_file: str) -> None:
    """Worker k of `tune --jobs N`: runs trials of the study until it has `trials`; its lines go to worker-k.log."""
    import contextlib

    os.environ[WORKER_ENV] = str(k)
    with open(Path(out) / f"worker-{k}.log", "w") as logf, contextlib.redirect_stdout(logf), contextlib.redirect_stderr(logf):
        try:
            tune(data, out, trials, timeout, storage, space, config=base_file, jobs=1,
                 log=lambda *a, **kw: print(*a, file=logf, flush=True))
        except Exception:
            import traceback

            traceback.print_exc(file=logf)


def _report(study, base_d: dict, out: Path, log, sequences: bool = False) -> dict:
    from optuna.trial import TrialState

    key, name = SCORE[sequences]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise SpecrnnError("no trial completed; nothing to report")
    best = study.best_trial
    best_cfg = apply(base_d, best.params)
    atomic_write_text(out / "best.yaml", f"# specrnn tune: best of {len(complete)} complete trials, {name} "
                      f"{100 * best.user_attrs.get(key, float('nan')):.2f}% (trial {best.number})\n"
                      + yaml.safe_dump(best_cfg, sort_keys=False))
    keys = sorted({k for t in study.trials for k in t.params})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["number", "state", "value", key, "seconds", *keys])
    for t in study.trials:
        w.writerow([t.number, t.state.name, t.value, t.user_attrs.get(key), t.user_attrs.get("seconds"),
                    *[t.params.get(k) for k in keys]])
    atomic_write_text(out / "trials.csv", buf.getvalue())
    _plots(study, out)
    result = {"best_trial": best.number, "best_value": best.value, f"best_{key}": best.user_attrs.get(key),
              "best_params": best.params, "n_complete": len(complete),
              "n_pruned": len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))), "best_config": str(out / "best.yaml")}
    write_json(out / "tune.json", result)
    log(f"best trial {best.number}: {name} {100 * result[f'best_{key}']:.2f}%; "
        f"{result['n_complete']} complete, {result['n_pruned']} pruned\n"
        f"best config: {out / 'best.yaml'}  (specrnn train DATA --config {out / 'best.yaml'})")
    return result


def _plots(study, out: Path) -> None:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    for name, fn in (("optimization_history.png", ovm.plot_optimization_history), ("param_importances.png", ovm.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn(study)
            fig = ax.figure if hasattr(ax, "figure") else plt.gcf()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
            from ..files import atomic_write_bytes

            atomic_write_bytes(out / name, buf.getvalue())
            plt.close("all")
        except Exception as e:  # importance needs several complete trials that differ
            atomic_write_text(out / (name + ".txt"), f"not drawn: {type(e).__name__}: {e}\n")
