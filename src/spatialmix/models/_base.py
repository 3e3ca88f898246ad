"""The user-facing model interface shared by every model (scvi-tools' ``model`` side of the split).

A model is built from a :class:`~spatialmix.data.MultiModalData`, trained by the one engine
(:mod:`spatialmix.train`), and asked for outputs. ``save(dir)`` writes the weights, the configuration, the
modality order, the feature names and the batches; ``load(dir, data)`` checks a new dataset against them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spatialmix.errors import FeatureMismatchError, ModelError, ParameterError, ProjectError
from spatialmix.progress import run

WEIGHTS = "model.pt"
CONFIG = "model.json"


def versions() -> dict[str, str]:
    import sys

    import torch

    from spatialmix import __version__

    return {"spatialmix": __version__, "torch": torch.__version__, "python": sys.version.split()[0]}


class BaseModel:
    """Common machinery: parameters, training through :mod:`spatialmix.train`, save / load, checks."""

    name = "base"
    #: the model's paper defaults for :class:`spatialmix.train.TrainConfig`
    train_defaults: dict[str, Any] = {}
    #: the outputs this model can produce; :mod:`spatialmix.results` writes only these. Any of ``"latent"``
    #: (``get_latent_representation()``), ``"private"`` (``get_latent_representation("private", m)``),
    #: ``"corrected"`` (``get_corrected(m)``), ``"denoised"`` (``get_denoised(m)``), ``"translations"``
    #: (``translate(sources, target)``) and ``"labels"`` (``predict_labels()``).
    supports: frozenset[str] = frozenset({"latent"})
    #: whether the model needs the annotation column (labelled training samples)
    needs_labels: bool = False
    #: the declaration of the model's parameters (a :class:`spatialmix.params.Params`: type, default, range,
    #: meaning); the constructor, ``[model]`` of a run configuration, the widget and docs/config.md read it
    Params: type | None = None
    #: the model's parameters and their defaults (the keys its constructor, ``[model]`` and the widget accept;
    #: ``Params.defaults()`` when the model declares them)
    defaults: dict[str, Any] = {}
    #: keyword arguments the constructor takes besides :attr:`defaults` (listed in the unknown-parameter error)
    extra_arguments: tuple[str, ...] = ("modalities",)

    def __init__(self, data, **params):
        self.data = data
        self.params = params
        self.modalities: list[str] = list(params.get("modalities") or data.modalities)
        self.var_names = {m: pd.Index(data.var_names[m]) for m in self.modalities}
        self.batches = list(pd.Categorical(data.obs[data.batch_key]).categories)
        self._reset_training_state()

    @classmethod
    def _resolve_params(cls, data, params: dict, modalities=None) -> tuple[dict[str, Any], list[str]]:
        """The checks every constructor starts with: no unknown parameter, then the defaults filled in and the
        modalities resolved (default: all of ``data``'s; each must be in ``data``, none named twice)."""
        unknown = sorted(set(params) - set(cls.defaults))
        if unknown:
            raise ParameterError(f"unknown {cls.__name__} parameter(s) {unknown}; allowed: "
                                 f"{sorted([*cls.defaults, *cls.extra_arguments])}")
        mods = list(modalities) if modalities is not None else list(data.modalities)
        if not mods:
            raise ParameterError(f"{cls.__name__} needs at least one modality")
        missing = [m for m in mods if m not in data.modalities]
        if missing:
            raise ParameterError(f"modalities {missing} are not in the data (it has {data.modalities})")
        if len(set(mods)) != len(mods):
            raise ParameterError(f"modalities {mods} name a modality twice")
        merged = {**cls.defaults, **params}
        if cls.Params is not None:  # the declared types and ranges (spatialmix.params): checked here, once
            merged = cls.Params.check(merged, owner=f"{cls.__name__} parameter")
        return merged, mods

    def _in_chunks(self, n: int, step, *, batch_size: int = 4096) -> np.ndarray:
        """The inference loop every model shares: ``step(rows, device)`` (a slice of ``range(n)`` and the
        module's device; returns a tensor, or a list of tensors for several outputs of one pass) over ``n`` rows
        in chunks of ``batch_size``, in eval mode without gradients, the chunks written into one preallocated
        float32 array per output (a list when ``step`` returns a list). The module's training mode is restored
        after."""
        import torch

        module = self.module
        device = next(module.parameters()).device
        was_training = module.training
        module.eval()
        outs = None  # filled chunk by chunk: each output exists once in memory (no list of parts to concatenate)
        many = False
        try:
            with torch.no_grad():
                for s in range(0, n, batch_size):
                    got = step(slice(s, min(s + batch_size, n)), device)
                    many = isinstance(got, (list, tuple))
                    parts = [t.float().cpu().numpy() for t in (got if many else [got])]
                    if outs is None:
                        outs = [np.empty((n, *p.shape[1:]), dtype=np.float32) for p in parts]
                    for o, p in zip(outs, parts):
                        o[s:s + len(p)] = p
        finally:
            module.train(was_training)
        if outs is None:
            return np.zeros((0, 0), np.float32)
        return outs if many else outs[0]

    def _reset_training_state(self) -> None:
        """An untrained model's training record (also used when a saved model is rebuilt)."""
        self.history: list[dict[str, Any]] = []
        self.train_config: dict[str, Any] = {}
        self.is_trained = False
        self.stopped_early = False
        self.split_: dict[str, np.ndarray] | None = None
        self._stop_event = threading.Event()

    # -- training ------------------------------------------------------------------------------------------
    def iter_train(self, **options):
        """Generator: progress events while training; returns the model (see :func:`spatialmix.train.iter_train`)."""
        from spatialmix.train import iter_train

        return (yield from iter_train(self, **options))

    def train(self, *, progress: bool = False, **options):
        """Train with the model's paper defaults, overridable (``epochs=``, ``lr=``, ``device=``, ...)."""
        return run(self.iter_train(**options), progress=progress)

    def stop_training(self) -> None:
        """Ask a running training to stop after its current step (keeps the last completed epoch)."""
        self._stop_event.set()

    def _after_training(self, history, cfg, stopped: bool = False) -> None:
        self.history = list(history)
        self.train_config = cfg.model_dump()
        if getattr(self, "accelerations_", None) is not None:  # what compile / TF32 / fused Adam resolved to
            self.train_config["accelerations"] = dict(self.accelerations_)
        done = [h for h in history if "loss" in h]
        schedule = getattr(self, "schedule_", None)
        if schedule:  # what "auto" and the early-stopping defaults resolved to, and where training ended
            ends = [h for h in history if "best_epoch" in h]
            self.train_config["schedule"] = {**schedule, "epochs_run": len(done),
                                             "best_epoch": ends[-1]["best_epoch"] if ends else None,
                                             "early_stopped": bool(ends and ends[-1].get("early_stopped"))}
        self.is_trained = bool(done)
        self.stopped_early = stopped

    def _fingerprint(self) -> dict[str, Any]:
        return {"model": self.name, "modalities": self.modalities,
                "n_features": [len(self.var_names[m]) for m in self.modalities], "batches": self.batches,
                "params": {k: v for k, v in self.params.items() if k != "modalities"}}

    def _unsupported(self, what: str, instead: str = "") -> ModelError:
        """The error for an output this model does not produce (never a silent fallback)."""
        return ModelError(f"{type(self).__name__} does not produce {what}" + (f"; {instead}" if instead else "")
                          + f". It provides: {sorted(self.supports)}")

    def get_corrected(self, modality: str, *, data=None):
        raise self._unsupported("batch-corrected features")

    def get_denoised(self, modality: str, *, data=None):
        raise self._unsupported("denoised features")

    def translate(self, sources, target: str, **kwargs):
        raise self._unsupported("translations between modalities")

    def predict_labels(self, *, data=None) -> pd.DataFrame:
        raise self._unsupported("label predictions", "train an annotation classifier on its embedding instead "
                                "(spatialmix.evaluate.annotations)")

    def _check_trained(self) -> None:
        if not self.is_trained:
            raise ModelError(f"{type(self).__name__} is not trained yet: call .train() first (or load a saved model)")

    def training_curve(self) -> pd.DataFrame:
        """One row per completed epoch: loss, validation loss, every loss term and seconds."""
        return pd.DataFrame([h for h in self.history if "loss" in h])

    # -- data checks ---------------------------------------------------------------------------------------
    def _resolve_data(self, data):
        data = self.data if data is None else data
        if data is None:
            raise ModelError("no data: pass data= (a spatialmix.data.MultiModalData)")
        self.check_data(data)
        return data

    def check_data(self, data) -> None:
        """Raise :class:`FeatureMismatchError` naming what differs when ``data`` does not fit the model."""
        problems = []
        missing_mods = [m for m in self.modalities if m not in data.modalities]
        if missing_mods:
            problems.append(f"modalities {missing_mods} are missing (the model was trained on {self.modalities}, "
                            f"the data has {data.modalities})")
        for m in self.modalities:
            if m in missing_mods:
                continue
            theirs = pd.Index(data.var_names[m])
            ours = self.var_names[m]
            if theirs.equals(ours):
                continue
            absent = ours.difference(theirs, sort=False)
            extra = theirs.difference(ours, sort=False)
            detail = []
            if len(absent):
                detail.append(f"{len(absent)} feature(s) missing, e.g. {list(absent[:5])}")
            if len(extra):
                detail.append(f"{len(extra)} unknown feature(s), e.g. {list(extra[:5])}")
            if not detail:
                detail.append("same features in another order")
            problems.append(f"{m}: " + "; ".join(detail))
        if problems:
            raise FeatureMismatchError(
                "the data does not match the features the model was trained on: " + " | ".join(problems)
                + ". Build the data with the same modalities and features (e.g. subset the tables to "
                "model.var_names[modality] in that order)"
            )

    def _batch_codes(self, data) -> np.ndarray:
        """Codes of ``data``'s batches in the model's batch order; -1 for batches the model never saw."""
        cats = pd.Index(self.batches)
        return cats.get_indexer(data.obs[data.batch_key].astype(str)).astype(np.int64)

    # -- save / load ---------------------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        from spatialmix.project import jsonable

        return jsonable({
            "model": self.name, "class": type(self).__name__, "params": self.params, "modalities": self.modalities,
            "var_names": {m: [str(v) for v in self.var_names[m]] for m in self.modalities},
            "batches": [str(b) for b in self.batches], "batch_key": getattr(self.data, "batch_key", "batch"),
            "annotation_key": getattr(self.data, "annotation_key", None),
            "train_config": self.train_config, "history": self.history, "is_trained": self.is_trained,
            "stopped_early": self.stopped_early, "versions": versions(),
            "split": {k: v.tolist() for k, v in (self.split_ or {}).items()},
        })

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``model.pt`` (weights) and ``model.json`` (configuration, features, batches, training curve)
        into the folder ``path``, atomically: a failure leaves any earlier save untouched."""
        import torch

        path = Path(path)
        if path.exists() and not overwrite:
            raise ProjectError(f"{path} already exists; pass overwrite=True to replace the saved model")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            torch.save(self.module.state_dict(), tmp / WEIGHTS)
            (tmp / CONFIG).write_text(json.dumps(self._config(), indent=1))
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                path.rename(old)
                tmp.rename(path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path, data=None, *, device: str = "cpu"):
        """Load a model saved with :meth:`save`; ``data`` (optional) is checked against its features."""
        import torch

        path = Path(path)
        if not (path / CONFIG).exists() or not (path / WEIGHTS).exists():
            raise ProjectError(f"{path} is not a saved spatialmix model (needs {CONFIG} and {WEIGHTS}); "
                               "save one with model.save(folder)")
        config = json.loads((path / CONFIG).read_text())
        if config.get("model") != cls.name:
            raise ModelError(f"{path} holds a {config.get('model')!r} model, not {cls.name!r}; "
                             f"load it with that model's class")
        model = cls._from_config(config, data)
        state = torch.load(path / WEIGHTS, map_location=device, weights_only=True)
        model.module.load_state_dict(state)
        model.history = config.get("history", [])
        model.train_config = config.get("train_config", {})
        model.is_trained = bool(config.get("is_trained"))
        model.stopped_early = bool(config.get("stopped_early"))
        model.split_ = {k: np.asarray(v, dtype=np.int64) for k, v in config.get("split", {}).items()} or None
        if data is not None:
            model.check_data(data)
        return model

    @classmethod
    def _from_config(cls, config: dict, data):
        """Rebuild an untrained model from a saved ``model.json`` (the weights are loaded after): its parameters
        hold everything each model's ``_build()`` needs to create the same networks."""
        obj = cls.__new__(cls)
        obj.data = data
        obj.params = dict(config["params"])
        obj.modalities = list(config["modalities"])
        obj.var_names = {m: pd.Index(v) for m, v in config["var_names"].items()}
        obj.batches = list(config["batches"])
        obj._reset_training_state()
        obj._build()
        return obj
