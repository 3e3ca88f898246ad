"""One training engine for every model: devices, seeds, mini-batches by index, progress, stop, checkpoints.

:func:`iter_train` is a generator: it yields :class:`~spatialmix.progress.Progress` events (one per optimiser
step and one per epoch with every loss term, the validation loss, seconds per epoch and the estimated time
left) and returns the trained model. The napari worker and the CLI drive the same generator.

A model plugs in by providing

- ``module``: the ``torch.nn.Module`` whose ``forward(batch)`` returns ``(total_loss, {term: tensor})``,
- ``_training_tensors()``: ``{name: tensor}`` with one row per observation (moved to the device once),
- ``train_defaults``: its paper's training defaults (lr, batch size, epochs, ...),
- ``_fingerprint()``: what a checkpoint must match to be resumed (modalities, feature counts, batches).

Models trained with several optimisers or alternating objectives (adversarial alignment, GANs, the
two-step calibration schedule) add to their module

- ``configure_optimizers(lr, weight_decay) -> {name: optimizer}`` (default: one Adam over every parameter,
  named ``"main"``),
- ``phases(epoch, step) -> [(phase, optimizer_name), ...]``: the updates of one training step, in order.
  For each, the engine calls ``module(batch, phase=phase)`` (through Fabric, so DDP hooks still run),
  checks the loss, back-propagates and steps that optimiser. ``epoch`` counts from 1 over the whole training
  (never reset per stage), so a model's stage schedule and loss ramps can rely on it. Validation calls
  ``module(batch)`` (``phase=None``): the module returns its evaluation loss.

Models whose inputs are several unpaired datasets (different rows, e.g. scMODAL) return
``_training_groups() -> {group: {name: tensor}}`` instead of ``_training_tensors()``: each group is split and
shuffled on its own, every step draws ``batch_size`` rows from every group (smaller groups cycle), and the
module receives ``{"<group>/<name>": tensor}``. ``max_steps`` (optional) counts optimiser steps instead of
epochs, for models whose papers do (scMODAL: 10,000 steps).

A model whose loss says little about the quality of the result (unsupervised alignment: scMODAL's GAN) may
define ``selection_criterion() -> float`` (lower is better; it must leave the module in training mode) and
``selection_every_steps`` / ``selection_start_steps`` / ``selection_patience``: the engine then scores the model
every ``selection_every_steps`` optimiser steps from ``selection_start_steps`` on (and at the last epoch) instead
of reading a validation loss, keeps the best-scoring weights,
stops after ``selection_patience`` scores without improvement and restores the best (``early_stopping=False``
switches this off and keeps the last weights). The scores are in the history (``selection``).

A module whose layers need several rows per mini-batch in training mode (BatchNorm: two) sets
``min_batch_rows``: a last mini-batch smaller than that is merged into the one before it (the epoch has one
step fewer, its last step a few rows more), and a training split smaller than that is refused.

Lightning Fabric runs the loop on CPU, one GPU, or several GPUs / nodes (``devices``, ``num_nodes``,
``strategy``; launch several processes with ``torchrun`` or ``fabric run``), with optional mixed precision.

Why one file of about 760 lines: it is one engine. ``_Training`` holds the state of one run (Fabric, tensors and
split, optimisers, history, best weights, checkpoint folder) that its stage methods share, and the rest is what
drives it or what it slices and records: :class:`TrainConfig` (its options), :class:`SparseRows` (mini-batch
rows), ``_EpochSums``, ``_validate`` and the checkpoint helpers.
"""

from __future__ import annotations

import math
import threading
import time
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, Field

from spatialmix.errors import ParameterError, TrainingError
from spatialmix.params import Params, param
from spatialmix.progress import Progress, run

CHECKPOINT_NAME = "last.ckpt"
#: the devices ``device=`` accepts
DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

#: ``epochs="auto"``: train for about this many optimiser steps, whatever the data size: the MIMA paper's 50
#: epochs over its ~33,600 training spots at batch 128 are ~13,000 steps, so the paper's size gets the paper's
#: schedule, a few hundred cells get thousands of epochs and a few dozen samples one step per epoch; early
#: stopping on the validation loss (with the best epoch restored) ends it sooner once the model stops improving.
AUTO_STEPS = 13_000
#: ``patience`` with ``epochs="auto"``: epochs without a better validation loss before stopping, at least
#: 10 epochs and at least this many optimiser steps (so tiny data, one step per epoch, is not stopped by noise).
AUTO_PATIENCE_STEPS = 500


def auto_schedule(steps_per_epoch: int, *, steps: int | None = None, patience_steps: int | None = None
                  ) -> tuple[int, int]:
    """``(epochs, patience)`` of ``epochs="auto"`` for ``steps_per_epoch`` optimiser steps per epoch."""
    steps = AUTO_STEPS if steps is None else steps
    patience_steps = AUTO_PATIENCE_STEPS if patience_steps is None else patience_steps
    spe = max(1, int(steps_per_epoch))
    return max(1, math.ceil(steps / spe)), max(10, math.ceil(patience_steps / spe))


_PRECISIONS = Literal["32-true", "32", "16-mixed", "bf16-mixed", "64-true"]


def _device_name(v: str) -> str:
    if not DEVICE_RE.match(v.strip().lower()):
        raise ValueError('must be "auto", "cpu", "cuda" or "cuda:N" (N = GPU number)')
    return v.strip().lower()


class TrainConfig(Params):
    """Training options shared by every model, declared once (``spatialmix.params``): ``model.train(**)``,
    ``[train]`` of a run configuration, the CLI's training flags and ``docs/config.md`` read this. The defaults
    here are the engine's; each model supplies its own (``train_defaults``: its paper's or ours)."""

    epochs: Literal["auto"] | Annotated[int, Field(ge=1)] = param(
        50, "passes over the data; `\"auto\"`: about 13,000 optimiser steps whatever the data size "
        "(`ceil(13000 / steps per epoch)` epochs), with early stopping on by default",
        default_text="the model's (MIMA: `\"auto\"`)",
        fix="Give the number of passes over the data, e.g. epochs = 50, or epochs = \"auto\" (fits the data size)")
    max_steps: int | None = param(None, "optimiser steps instead of epochs (scMODAL's default: 10,000)", ge=1,
                                  fix="Give the number of optimiser steps, e.g. max_steps = 10000")
    batch_size: int = param(128, "spots per optimiser step", ge=1)
    lr: float = param(1e-4, "learning rate", gt=0, default_text="the model's (MIMA: `1e-3`)")
    weight_decay: float = param(0.0, "weight decay", ge=0)
    train_fraction: float = param(0.8, "fraction of spots trained on; the rest is the validation set", gt=0, le=1)
    early_stopping: bool | None = param(None, "stop when the validation loss stops improving; the best epoch is "
                                        "kept", default_text="on with `epochs = \"auto\"`, else `false`")
    patience: int | None = param(None, "epochs without improvement before early stopping", ge=1,
                                 default_text="`10`; with `\"auto\"` 10 epochs or 500 steps, whichever is more")
    min_delta: float = param(0.0, "smallest improvement that counts", ge=0)
    checkpoint_every: int = param(0, "write a checkpoint every N epochs (0 = never; needs `checkpoint_dir`)", ge=0)
    checkpoint_dir: str | None = param(
        None, "folder for checkpoints (in a configuration relative to its folder; need not exist). `last.ckpt` "
        "there always holds a completed epoch: written every `checkpoint_every` epochs, when the run is stopped "
        "(Ctrl-C, SIGTERM) and at the end", kind="path", default_text="`OUT/checkpoints` (`spatialmix run`)")
    resume: bool | str | None = param(
        None, "`true`: resume from `checkpoint_dir`'s last checkpoint (needs `checkpoint_dir`); a path: that "
        "checkpoint (must exist)", kind="bool or path")
    device: Annotated[str, AfterValidator(_device_name)] = param(
        "auto", "where to train (`auto`: the GPU when torch sees one). Whether the GPU is there is checked when "
        "training starts", kind="auto, cpu, cuda or cuda:N",
        fix='"auto" uses the GPU when torch sees one, else the CPU')
    devices: int = param(1, "GPUs per node (Lightning Fabric)", ge=1)
    num_nodes: int = param(1, "nodes (Lightning Fabric)", ge=1)
    strategy: str = param("auto", "Lightning Fabric strategy (`\"ddp\"`, ...)", min_length=1)
    precision: _PRECISIONS = param("32-true", "numeric precision")
    seed: int = param(0, "seeds the split and the mini-batches: same seed + same device = same result", ge=0)
    step_events: bool = param(True, "progress events during an epoch (not only per epoch)")
    step_event_interval: float = param(
        0.1, "at least this many seconds between two step events (0: one per optimiser step); each event reads "
        "the loss from the device, so per-step events would sync every step", ge=0)
    compile: bool | None = param(
        None, "compile the training step with `torch.compile` (validation and outputs stay uncompiled). If "
        "compiling fails, training goes on uncompiled with a warning, and `train_config[\"accelerations\"]` says "
        "why", default_text="on with a CUDA GPU, off on the CPU")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = param(
        "default", "`torch.compile`'s mode (`\"reduce-overhead\"`: CUDA graphs)")
    static_shapes: bool | None = param(
        None, "every optimiser step gets exactly `batch_size` rows: the epoch's last, smaller mini-batch is "
        "left out (a different one each epoch, as the rows are shuffled), so a compiled step is not compiled "
        "again for a second shape", default_text="on when compiling, else off")
    tf32: bool = param(True, "TF32 matrix products and convolutions on a CUDA GPU during training (about 3 "
                       "decimal digits; no effect on the CPU)")
    batched_decoders: bool | None = param(
        None, "one decoder call per modality per training step, on all the latents it decodes stacked by rows "
        "(MIMA: 5 calls become 1 with three modalities; other models have one call already). The same outputs "
        "per row; the dropout masks are drawn in another order, so a seeded run is not the unbatched one's",
        default_text="on with a CUDA GPU, off on the CPU")

    @classmethod
    def build(cls, defaults: dict[str, Any], overrides: dict[str, Any]) -> "TrainConfig":
        """The options of one training run: the model's ``defaults`` under the caller's ``overrides``, checked
        against the declaration (:class:`~spatialmix.errors.ParameterError` naming the option)."""
        known = set(cls.model_fields)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ParameterError(f"unknown training option(s) {unknown}; allowed: {sorted(known)}")
        values = {**{k: v for k, v in defaults.items() if k in known}, **overrides}
        cfg = cls.model_construct(**cls.check(values, owner="training option"))  # checked once, just above
        cfg._check_together()
        return cfg

    def validate(self) -> None:
        """Every option against its declaration, then the options that need each other."""
        self.check(self.model_dump(), owner="training option")
        self._check_together()

    def _check_together(self) -> None:
        """What no single option can tell: the options that need each other."""
        if self.checkpoint_every and not self.checkpoint_dir:
            raise ParameterError("checkpoint_every needs checkpoint_dir (the folder to write checkpoints into)")


def resolve_device(device: str) -> tuple[str, list[int] | int | str]:
    """``auto|cpu|cuda|cuda:N`` -> Lightning Fabric ``(accelerator, devices)``; clear error when absent."""
    import torch

    device = str(device).strip().lower()
    if device == "auto":
        return ("cuda", 1) if torch.cuda.is_available() else ("cpu", 1)
    if device == "cpu":
        return "cpu", 1
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise TrainingError(
                f"device {device!r} was asked for but this machine has no CUDA GPU that torch can use "
                f"(torch {torch.__version__}). Use device='cpu' or 'auto'"
            )
        if device == "cuda":
            return "cuda", 1
        try:
            index = int(device.split(":", 1)[1])
        except ValueError:
            raise ParameterError(f"device {device!r}: expected cuda:N with a GPU number N") from None
        if not 0 <= index < torch.cuda.device_count():
            raise TrainingError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPU(s)")
        return "cuda", [index]
    raise ParameterError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def split_indices(n: int, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random train / validation split of ``n`` observations (sorted positions)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_train = n if train_fraction >= 1 else max(1, min(n - 1, int(round(train_fraction * n))))
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def _cpu_state(module) -> dict:
    return _cpu_copy(module.state_dict())


class SparseRows:
    """A CSR matrix kept sparse for training (issue 16): indexing it with a tensor of row numbers gives those
    rows as a dense float tensor on the matrix's device, so training holds the sparse data plus one dense
    mini-batch instead of a dense copy of the whole matrix. Moves to a device with ``.to`` (Fabric does it).

    The gather is vectorised torch (no per-row loop, the same code on CPU and GPU); column indices keep
    SciPy's int32. ``torch.sparse_csr_tensor`` is not used: its row indexing is not implemented for every
    backend, and what the engine needs is dense rows out."""

    def __init__(self, matrix):
        import torch

        m = matrix.tocsr()
        if not m.has_canonical_format:  # duplicate entries would overwrite instead of adding up
            m = m.copy()
            m.sum_duplicates()
        self.crow = torch.as_tensor(m.indptr.astype(np.int64))
        self.col = torch.as_tensor(m.indices)
        self.values = torch.as_tensor(np.asarray(m.data, dtype=np.float32))
        self.shape = tuple(m.shape)

    @property
    def device(self):
        return self.values.device

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.numel() for t in (self.crow, self.col, self.values))

    def to(self, device, **kwargs) -> "SparseRows":
        out = SparseRows.__new__(SparseRows)
        out.crow, out.col, out.values = (t.to(device, **kwargs) for t in (self.crow, self.col, self.values))
        out.shape = self.shape
        return out

    def __getitem__(self, idx):
        import torch

        idx = torch.as_tensor(idx, device=self.crow.device).long()
        start = self.crow[idx]
        n = self.crow[idx + 1] - start
        rows = torch.repeat_interleave(torch.arange(len(idx), device=idx.device), n)
        first = torch.repeat_interleave(torch.cumsum(n, 0) - n, n)  # each row's first slot in the flat list
        pos = torch.repeat_interleave(start, n) + torch.arange(len(rows), device=idx.device) - first
        out = torch.zeros((len(idx), self.shape[1]), dtype=self.values.dtype, device=self.values.device)
        out[rows, self.col[pos].long()] = self.values[pos]
        return out


class _EpochSums:
    """An epoch's loss terms summed on the training device, read once per epoch (no host sync per step).

    ``add`` takes one optimiser step's values (per phase: the phase's total and its terms, one stacked tensor);
    it also records, still on the device, the first step at which a value was non-finite and which ones, so
    that NaN / Inf stops training with the term's name at the next read (:meth:`first_bad`)."""

    def __init__(self, device):
        import torch

        self.dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.total = None
        self.terms: dict[tuple, Any] = {}  # (phase, term names) -> summed values (without the total)
        self.bad: dict[tuple, tuple[Any, Any]] = {}  # (phase, names) -> (first bad step or 0, non-finite mask)

    def add(self, step_total, step_values: dict[tuple, Any], w: int, step: int) -> None:
        import torch

        t = step_total.to(self.dtype) * w
        self.total = t if self.total is None else self.total + t
        for key, v in step_values.items():
            s = v[1:].to(self.dtype) * w
            self.terms[key] = s if key not in self.terms else self.terms[key] + s
            broken = ~torch.isfinite(v)
            now = torch.where(broken.any(), step, 0)
            if key not in self.bad:
                self.bad[key] = (now, broken)
            else:
                first, mask = self.bad[key]
                new = (first == 0) & (now > 0)
                self.bad[key] = (torch.where(new, now, first), torch.where(new, broken, mask))

    def first_bad(self) -> tuple[int, list[str]] | None:
        """``(step, non-finite term names)`` of the first step with a NaN / Inf value, else None (one sync)."""
        found = []
        for (phase, names), (first, mask) in self.bad.items():
            step = int(first)
            if step:
                m = mask.tolist()
                found.append((step, [n for n, b in zip(names, m[1:]) if b] or ["total"]))
        return min(found) if found else None

    def read(self) -> tuple[float, dict[str, float]]:
        """(summed total, {term: summed value}); a term several phases report keeps the last phase's value."""
        terms: dict[str, float] = {}
        for (phase, names), v in self.terms.items():
            terms.update(zip(names, v.tolist()))
        return (float(self.total) if self.total is not None else 0.0), terms


def iter_train(model, *, stop: threading.Event | None = None, **options):
    """Train ``model`` in place; yields progress events, returns the model.

    Parameters
    ----------
    model
        A spatialmix model (see the module docstring for what the engine needs from it).
    stop
        Optional ``threading.Event``; when set, training stops after the current step and the model keeps the
        weights of the last completed epoch (``model.stop_training()`` sets the model's own event).
    **options
        :class:`TrainConfig` fields overriding the model's defaults.

    The events' ``info`` holds ``event`` (``"step"`` or ``"epoch"``), ``epoch``, ``epochs``, ``step``,
    ``steps_per_epoch``, ``loss``; epoch events add ``terms`` (mean of each loss term), ``val_loss``,
    ``val_terms``, ``seconds_per_epoch`` and ``eta_s``. Closing the generator early (or ``stop``) also
    restores the last completed epoch.

    With ``checkpoint_dir``, ``last.ckpt`` (written atomically) always holds a completed epoch: every
    ``checkpoint_every`` epochs, when training is stopped, interrupted (Ctrl-C, SIGTERM as
    :class:`spatialmix.errors.Interrupted`) or closed mid-epoch (the last completed epoch), and when it ends (the
    weights kept, marked finished: resuming with the same ``epochs`` / ``max_steps`` trains no further).
    """
    cfg = TrainConfig.build(model.train_defaults, options)
    run = _Training(model, cfg, stop)   # 1. devices, seeds, the data on the device, the split, the optimisers
    run.resume()                        # 2. a checkpoint's weights, optimiser state, history and RNG states
    run.plan()                          # 3. steps per epoch, epochs ("auto"), early stopping and its patience
    return (yield from run.epochs())    # 4. the epochs: steps, validation, events, checkpoints, early stop


class _Training:
    """One run of :func:`iter_train`, broken at its stages (each a method, sharing this state)."""

    # -- 1. set-up ---------------------------------------------------------------------------------------
    def __init__(self, model, cfg: TrainConfig, stop: threading.Event | None):
        import torch
        from lightning_fabric import Fabric

        self.model, self.cfg = model, cfg
        self.stop = stop if stop is not None else model._stop_event
        self.stop.clear()
        accelerator, devices = resolve_device(cfg.device)
        if cfg.devices > 1:
            devices = cfg.devices
        precision = "32-true" if cfg.precision == "32" else cfg.precision
        if accelerator == "cpu" and precision in ("16-mixed",):
            raise ParameterError("precision '16-mixed' needs a GPU; use '32-true' (or 'bf16-mixed') on CPU")
        fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=cfg.num_nodes, strategy=cfg.strategy,
                        precision=precision)
        if fabric.world_size > 1:
            fabric.launch()
        self.fabric = fabric
        self.on_cuda = accelerator == "cuda"
        compiling = cfg.compile if cfg.compile is not None else self.on_cuda
        self.static_shapes = cfg.static_shapes if cfg.static_shapes is not None else compiling
        # what the run used, in train_config["accelerations"]; fused Adam only on CUDA (on the CPU it would
        # change the results by rounding, and CPU runs stay comparable with earlier ones)
        model.accelerations_ = {"compile": compiling, "compile_mode": cfg.compile_mode if compiling else None,
                                "static_shapes": self.static_shapes, "tf32": bool(self.on_cuda and cfg.tf32),
                                "fused_adam": False, "batched_decoders": None}
        if hasattr(model.module, "batched_decoders"):  # modules with several decoder calls per step (MIMA)
            batched = cfg.batched_decoders if cfg.batched_decoders is not None else self.on_cuda
            model.module.batched_decoders = model.accelerations_["batched_decoders"] = bool(batched)
        torch.manual_seed(cfg.seed)
        self.shuffle = torch.Generator().manual_seed(cfg.seed)
        self._data_on_device()
        self._optimizers()
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.resumed_finished = False
        self.best = {"val": math.inf, "epoch": 0, "state": None, "bad": 0}
        self.ckpt_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None

    def _data_on_device(self) -> None:
        """The training tensors moved to the device once (mini-batches are index slices) and the split."""
        model, cfg, fabric = self.model, self.cfg, self.fabric
        grouped = hasattr(model, "_training_groups")
        groups = model._training_groups() if grouped else {"": model._training_tensors()}
        sizes, splits = {}, {}
        for g, tensors in groups.items():
            n_rows = {k: v.shape[0] for k, v in tensors.items()}
            if len(set(n_rows.values())) != 1:
                raise TrainingError(f"training tensors of {model.name}{' group ' + repr(g) if g else ''} have "
                                    f"different row counts {n_rows}; every tensor needs one row per observation")
            sizes[g] = next(iter(n_rows.values()))
            splits[g] = split_indices(sizes[g], cfg.train_fraction, cfg.seed)
        model.split_ = ({"train": splits[""][0], "validation": splits[""][1]} if not grouped else
                        {f"{kind}/{g}": splits[g][i] for g in groups for i, kind in enumerate(("train", "validation"))})
        self.data = {(f"{g}/{k}" if grouped else k): fabric.to_device(v)
                     for g, tensors in groups.items() for k, v in tensors.items()}
        self.keys_of = {g: [(f"{g}/{k}" if grouped else k) for k in tensors] for g, tensors in groups.items()}
        del groups  # on a GPU, do not keep a host copy of the dense inputs alive for the whole training
        self.device = next(iter(self.data.values())).device
        self.train_idx = {g: splits[g][0] for g in splits}
        self.val_idx = {g: splits[g][1] for g in splits}

    def _optimizers(self) -> None:
        import torch

        module, cfg = self.model.module, self.cfg
        if hasattr(module, "configure_optimizers"):
            optimizers = dict(module.configure_optimizers(lr=cfg.lr, weight_decay=cfg.weight_decay))
        else:
            optimizers = {"main": torch.optim.Adam(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)}
        if self.on_cuda:
            optimizers = {k: _fused_adam(o) for k, o in optimizers.items()}
            self.model.accelerations_["fused_adam"] = all(o.defaults.get("fused") for o in optimizers.values())
        self.opt_names = list(optimizers)
        self.fmodule, *fopts = self.fabric.setup(module, *optimizers.values())
        self.optimizers = dict(zip(self.opt_names, fopts))
        self.phases = getattr(module, "phases", None)
        # validation, the selection score and every output run the uncompiled module (self.fmodule); only the
        # training step (forward and backward) is compiled
        self.step_module = self.fmodule
        if self.model.accelerations_["compile"]:
            self.step_module = torch.compile(self.fmodule, mode=None if self.cfg.compile_mode == "default"
                                             else self.cfg.compile_mode)

    def _compile_failed(self, error: BaseException) -> None:
        """Compiling the training step failed: warn, say why in train_config, and go on uncompiled."""
        import warnings

        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:300]
        warnings.warn(f"torch.compile failed for {self.model.name} ({reason}); training goes on uncompiled",
                      RuntimeWarning, stacklevel=2)
        self.model.accelerations_.update(compile=False, compile_error=reason)
        self.step_module = self.fmodule
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    # -- 2. resume -----------------------------------------------------------------------------------------
    def resume(self) -> None:
        import torch

        cfg, model = self.cfg, self.model
        if not cfg.resume:
            return
        ckpt_dir = self.ckpt_dir
        path = Path(cfg.resume) if not isinstance(cfg.resume, bool) else (ckpt_dir / CHECKPOINT_NAME if ckpt_dir else None)
        if path is None:
            raise ParameterError("resume=True needs checkpoint_dir; or pass the checkpoint path as resume=")
        if path.is_dir():
            path = path / CHECKPOINT_NAME
        if not path.exists():
            raise TrainingError(f"no checkpoint to resume from at {path}; train without resume first, "
                                "with checkpoint_every and checkpoint_dir set")
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if ckpt.get("fingerprint") != model._fingerprint():
            raise TrainingError(
                f"checkpoint {path} was written for a different model or dataset "
                f"({ckpt.get('fingerprint')}) than this one ({model._fingerprint()}); start a new training")
        model.module.load_state_dict(ckpt["module"])
        saved_opts = ckpt["optimizer"] if isinstance(ckpt["optimizer"], dict) and "state" not in ckpt["optimizer"] \
            else {"main": ckpt["optimizer"]}
        for name, opt in self.optimizers.items():
            opt.load_state_dict(saved_opts[name])
        self.history = list(ckpt["history"])
        self.start_epoch = int(ckpt["epoch"])
        # a checkpoint written when training ended, resumed with the same schedule: nothing is left to train
        self.resumed_finished = bool(ckpt.get("finished")) and all(
            ckpt.get("config", {}).get(k) == getattr(cfg, k) for k in ("epochs", "max_steps"))
        self.best.update(ckpt.get("best", {}))
        self.shuffle.set_state(ckpt["shuffle_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        if any(not np.array_equal(ckpt["split"][k], v) for k, v in model.split_.items() if k.startswith("train")):
            raise TrainingError(f"checkpoint {path} used another train/validation split (seed or "
                                "train_fraction changed); resume with the same options")

    # -- 3. the schedule -----------------------------------------------------------------------------------
    def plan(self) -> None:
        import torch

        model, cfg, module = self.model, self.cfg, self.model.module
        self.train_dev = {g: torch.as_tensor(v, device=self.device) for g, v in self.train_idx.items()}
        self.world, self.rank = self.fabric.world_size, self.fabric.global_rank
        n_local = {g: len(range(self.rank, len(v), self.world)) for g, v in self.train_idx.items()}
        if min(n_local.values()) < 1:
            raise TrainingError(f"{model.name}: a group of the training data has no training rows "
                                f"({ {g: len(v) for g, v in self.train_idx.items()} }); give it more observations")
        min_rows = int(getattr(module, "min_batch_rows", 1) or 1)
        if cfg.batch_size < min_rows:
            raise ParameterError(f"{model.name} needs at least {min_rows} rows per mini-batch (BatchNorm); "
                                 f"batch_size={cfg.batch_size} is too small")
        if min(n_local.values()) < min_rows:
            raise TrainingError(f"{model.name} needs at least {min_rows} training rows per mini-batch (BatchNorm), "
                                f"but the training split has {min(n_local.values())}; give it more observations or a "
                                "larger train_fraction")
        steps_per_epoch = max(1, max(math.ceil(n / cfg.batch_size) for n in n_local.values()))
        # a last mini-batch of fewer than min_rows rows joins the one before it (single group; with several
        # groups every step draws min(batch_size, group size) rows)
        tail = {g: n - (math.ceil(n / cfg.batch_size) - 1) * cfg.batch_size for g, n in n_local.items()}
        self.merge_tail = (len(n_local) == 1 and steps_per_epoch > 1 and next(iter(tail.values())) < min_rows)
        if self.merge_tail:
            steps_per_epoch -= 1
        if self.static_shapes and len(n_local) == 1:  # full mini-batches only (several groups always are)
            self.merge_tail = False
            steps_per_epoch = max(1, next(iter(n_local.values())) // cfg.batch_size)
        auto = cfg.epochs == "auto" and cfg.max_steps is None
        auto_epochs, auto_patience = auto_schedule(steps_per_epoch)
        if cfg.max_steps is not None:
            epochs = math.ceil(cfg.max_steps / steps_per_epoch)
        else:
            epochs = auto_epochs if auto else int(cfg.epochs)
        # early stopping: on by default with epochs="auto" (needs a validation split) or a model's own selection
        # criterion, else as asked
        has_val = any(len(v) for v in self.val_idx.values())
        select = getattr(model, "selection_criterion", None)
        if cfg.early_stopping is False:
            select = None
        self.early_stopping = bool(cfg.early_stopping) if cfg.early_stopping is not None else (
            (auto and has_val) or select is not None)
        self.select = select
        self.select_every = max(1, math.ceil(int(getattr(model, "selection_every_steps", 1)) / steps_per_epoch))
        self.select_start = int(getattr(model, "selection_start_steps", 0))
        default_patience = int(getattr(model, "selection_patience", 10)) if select is not None else (
            auto_patience if auto else 10)
        self.patience = int(cfg.patience) if cfg.patience is not None else default_patience
        self.steps_per_epoch, self.n_epochs = steps_per_epoch, epochs
        model.schedule_ = {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "auto": auto,
                           "early_stopping": self.early_stopping, "patience": self.patience, "lr": cfg.lr,
                           "batch_size": cfg.batch_size}
        self.total_steps = epochs * steps_per_epoch if cfg.max_steps is None else cfg.max_steps
        self.stage = f"train {model.name}"

    # -- 4. the epochs -------------------------------------------------------------------------------------
    def restore(self, state) -> None:
        self.model.module.load_state_dict(state)

    def non_finite(self, epoch, found) -> TrainingError:
        step, bad = found
        self.restore(self.last_good)
        self.model._after_training(self.history, self.cfg)
        return TrainingError(
            f"training loss became non-finite at epoch {epoch}, step {step}: non-finite term(s) {bad}. "
            f"The model keeps the weights of epoch {epoch - 1}. Check the inputs for NaN/Inf, or lower the "
            "learning rate (lr)"
        )

    def write_snapshot(self, **extra) -> str | None:
        """Write the last completed epoch's checkpoint (rank 0, when there is a checkpoint_dir); its path."""
        if self.snapshot is None or self.rank != 0:
            return None
        return str(_write_checkpoint(self.ckpt_dir, {**self.snapshot, **extra}))

    def epochs(self):
        """The training loop: yields step / epoch events; returns the model (the best or last completed epoch
        kept, also when stopped, interrupted or closed)."""
        model, cfg = self.model, self.cfg
        self.last_good = _cpu_state(model.module)
        # what a checkpoint of the last completed epoch holds, kept in memory (when there is a checkpoint_dir) so
        # that a stop, Ctrl-C or SIGTERM in the middle of an epoch still writes exactly that epoch's checkpoint
        self.snapshot: dict[str, Any] | None = None
        self.epoch_seconds: list[float] = []
        self.last_event = -math.inf  # step events at most every step_event_interval seconds, across epochs too
        completed = False
        epochs = self.n_epochs
        tf32_before = self._set_tf32()
        try:
            first = self.start_epoch + 1 if not self.resumed_finished else epochs + 1
            for epoch in range(first, epochs + 1):
                t0 = time.perf_counter()
                sums_dev, count = yield from self._steps(epoch)
                if sums_dev is None:  # stopped
                    completed = True
                    model._after_training(self.history, cfg, stopped=True)
                    return model
                if (yield from self._end_epoch(epoch, t0, sums_dev, count)):
                    break
            else:
                best = self.best
                if self.early_stopping and best["state"] is not None and best["epoch"] != epochs:
                    # the schedule ran out before the patience did: keep the best epoch, as an early stop would
                    self.restore(best["state"])
                    self.history.append({"epoch": epochs, "early_stopped": False, "best_epoch": best["epoch"]})
            completed = True
            # the trained weights (after an early stop: the best epoch's), marked finished: resuming with the same
            # schedule (e.g. a job stopped while writing its outputs) trains no further
            self.write_snapshot(module=_cpu_state(model.module), history=list(self.history), finished=True)
            model._after_training(self.history, cfg)
            return model
        except (KeyboardInterrupt, GeneratorExit):
            # Ctrl-C, SIGTERM (spatialmix.errors.Interrupted) or the caller closing the generator: the last
            # completed epoch is kept in the model (below) and on disk
            self.write_snapshot()
            raise
        finally:
            if tf32_before is not None:  # the process's own settings again
                import torch

                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32_before
            if not completed:  # closed mid-epoch (GeneratorExit) or an error: keep the last completed epoch
                self.restore(self.last_good)
                if self.history:
                    model._after_training(self.history, cfg, stopped=True)

    def _set_tf32(self):
        """On CUDA: TF32 matrix products and convolutions on (``tf32=True``) or off for the training; returns the
        settings to restore afterwards (None on the CPU, where nothing changes)."""
        import torch

        if not self.on_cuda:
            return None
        before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(self.cfg.tf32)
        return before

    def _steps(self, epoch: int):
        """One epoch's optimiser steps (yielding throttled step events); returns ``(sums, rows)``, or
        ``(None, 0)`` when stopped (the last completed epoch restored and checkpointed)."""
        import torch

        cfg, device = self.cfg, self.device
        steps_per_epoch, epochs = self.steps_per_epoch, self.n_epochs
        self.fmodule.train()
        orders = {}
        for g, idx_g in self.train_dev.items():
            perm = torch.randperm(len(idx_g), generator=self.shuffle).to(device)
            orders[g] = idx_g[perm][self.rank::self.world]
        sums_dev = _EpochSums(device)
        count = 0
        for step in range(steps_per_epoch):
            global_step = (epoch - 1) * steps_per_epoch + step + 1
            if global_step > self.total_steps:
                break
            batch = {}
            for g, order in orders.items():
                if len(orders) == 1:
                    end = None if self.merge_tail and step == steps_per_epoch - 1 else (step + 1) * cfg.batch_size
                    idx = order[step * cfg.batch_size:end]
                else:  # every group gives batch_size rows per step; smaller groups cycle
                    take = min(cfg.batch_size, len(order))
                    idx = order[(step * take + torch.arange(take, device=device)) % len(order)]
                batch.update({k: self.data[k][idx] for k in self.keys_of[g]})
            if len(idx) == 0:
                break
            plan = self.phases(epoch, step + 1) if self.phases is not None else [(None, self.opt_names[0])]
            step_total = None
            step_values: dict[tuple, Any] = {}
            for phase, opt_name in plan:
                opt = self.optimizers[opt_name]
                try:
                    names, values = self._backward(batch, phase, opt)
                except Exception as error:  # noqa: BLE001 - only a compiled step is retried, uncompiled
                    if self.step_module is self.fmodule:
                        raise
                    self._compile_failed(error)
                    names, values = self._backward(batch, phase, opt)
                opt.step()
                step_total = values[0] if step_total is None else step_total + values[0]
                step_values[(phase, names)] = values
            w = len(idx)
            sums_dev.add(step_total, step_values, w, step + 1)
            count += w
            if self.stop.is_set():
                self.restore(self.last_good)
                saved = self.write_snapshot()
                yield Progress(self.stage, global_step, self.total_steps,
                               f"stopped in epoch {epoch}; kept epoch {epoch - 1}"
                               + (f" (checkpoint {saved})" if saved else ""),
                               {"event": "stopped", "epoch": epoch - 1, "epochs": epochs, "checkpoint": saved})
                return None, 0
            # throttled (default: at most 10 per second): a progress bar shows no more, and each event syncs
            if cfg.step_events and time.perf_counter() - self.last_event >= cfg.step_event_interval:
                self.last_event = time.perf_counter()
                found = sums_dev.first_bad()  # this event syncs anyway: check for NaN / Inf here too
                if found:
                    raise self.non_finite(epoch, found)
                yield Progress(self.stage, global_step, self.total_steps, f"epoch {epoch}/{epochs}",
                               {"event": "step", "epoch": epoch, "epochs": epochs, "step": step + 1,
                                "steps_per_epoch": steps_per_epoch, "loss": float(step_total)})
        return sums_dev, count

    def _backward(self, batch, phase, opt):
        """One phase's forward and backward pass; the loss terms as ``(names, values)``, kept on the device
        (read once per epoch and at the throttled step events, not per step)."""
        import torch

        module = self.step_module
        total, terms = module(batch, phase=phase) if phase is not None else module(batch)
        names = tuple(terms)
        values = torch.stack([total.detach().float(), *[terms[k].detach().float() for k in names]])
        opt.zero_grad(set_to_none=True)
        self.fabric.backward(total)
        return names, values

    def _end_epoch(self, epoch: int, t0: float, sums_dev, count: int):
        """Validation, the history record, the model's selection score, the epoch event, checkpoints and the
        early-stopping decision; returns True when training stops here."""
        model, cfg, best = self.model, self.cfg, self.best
        epochs, steps_per_epoch, total_steps = self.n_epochs, self.steps_per_epoch, self.total_steps
        found = sums_dev.first_bad()
        if found:
            raise self.non_finite(epoch, found)
        loss_sum, sums = sums_dev.read()
        val_loss, val_terms = _validate(self.fmodule, self.data, self.keys_of, self.val_idx, cfg.batch_size,
                                        self.device)
        if val_loss is not None and not math.isfinite(val_loss):
            bad = [k for k, v in val_terms.items() if not math.isfinite(v)]
            self.restore(self.last_good)
            model._after_training(self.history, cfg)
            raise TrainingError(f"validation loss became {val_loss} at epoch {epoch}: non-finite term(s) {bad}. "
                                f"The model keeps the weights of epoch {epoch - 1}. Lower the learning rate (lr)")
        seconds = time.perf_counter() - t0
        self.epoch_seconds.append(seconds)
        record = {"epoch": epoch, "loss": loss_sum / max(count, 1), "val_loss": val_loss, "seconds": seconds,
                  **{k: v / max(count, 1) for k, v in sums.items()},
                  **{f"val_{k}": v for k, v in val_terms.items()}}
        self.history.append(record)
        self.last_good = _cpu_state(model.module)
        eta = float(np.mean(self.epoch_seconds[-5:])) * (epochs - epoch)
        score, scored = val_loss, True
        select = self.select
        if select is not None:  # the model's own criterion replaces the validation loss, every few epochs
            last_epoch = epoch == epochs or epoch * steps_per_epoch >= total_steps
            started = epoch * steps_per_epoch >= self.select_start
            scored = (started and epoch % self.select_every == 0) or last_epoch
            if scored:
                score = float(select())
                record["selection"] = score
        if scored:
            improved = score is not None and score < best["val"] - cfg.min_delta
            if improved:
                best.update(val=score, epoch=epoch, bad=0, state=self.last_good if self.early_stopping else None)
            else:
                best["bad"] += 1
        monitored = self.early_stopping and (val_loss is not None or select is not None)
        if self.ckpt_dir is not None:
            self.snapshot = _checkpoint_state(self.last_good, self.optimizers, epoch, self.history, best,
                                              self.shuffle, model, cfg)
        msg = f"epoch {epoch}/{epochs} loss {record['loss']:.4g}" + (
            f" val {val_loss:.4g}" if val_loss is not None else "")
        yield Progress(self.stage, min(epoch * steps_per_epoch, total_steps), total_steps, msg,
                       {"event": "epoch", "epoch": epoch, "epochs": epochs, "step": steps_per_epoch,
                        "steps_per_epoch": steps_per_epoch, "loss": record["loss"],
                        "terms": {k: v / max(count, 1) for k, v in sums.items()}, "val_loss": val_loss,
                        "val_terms": val_terms, "seconds_per_epoch": seconds, "eta_s": eta,
                        "early_stopping": monitored,
                        "patience_left": max(self.patience - best["bad"], 0)})
        if cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0:
            self.write_snapshot()
        if monitored and best["bad"] >= self.patience:
            self.restore(best["state"] if best["state"] is not None else self.last_good)
            self.history.append({"epoch": epoch, "early_stopped": True, "best_epoch": best["epoch"]})
            yield Progress(self.stage, total_steps, total_steps,
                           f"early stop at epoch {epoch}; best epoch {best['epoch']} "
                           f"({'selection score' if select is not None else 'val'} {best['val']:.4g})",
                           {"event": "early_stop", "epoch": epoch, "epochs": epochs, "best_epoch": best["epoch"]})
            return True
        return False


def _validate(fmodule, data, keys_of, val_idx, batch_size, device):
    """Mean loss (and terms) over the validation rows in eval mode; ``(None, {})`` when there are none.

    With several groups (unpaired datasets), chunk ``c`` takes the ``c``-th slice of every group's validation
    rows (smaller groups cycle) and is weighted by the largest group's share."""
    import torch

    if any(len(v) == 0 for v in val_idx.values()):
        return None, {}
    fmodule.eval()
    chunk = max(batch_size, 1024)
    idx_all = {g: torch.as_tensor(v, device=device) for g, v in val_idx.items()}
    n_chunks = max(math.ceil(len(v) / chunk) for v in idx_all.values())
    sums: dict[str, float] = {}
    total_sum, n = 0.0, 0
    with torch.no_grad():
        for c in range(n_chunks):
            batch, w = {}, 0
            for g, idx_g in idx_all.items():
                if len(idx_all) == 1:
                    idx = idx_g[c * chunk:(c + 1) * chunk]
                else:
                    take = min(chunk, len(idx_g))
                    idx = idx_g[(c * take + torch.arange(take, device=device)) % len(idx_g)]
                batch.update({k: data[k][idx] for k in keys_of[g]})
                w = max(w, len(idx))
            total, terms = fmodule(batch)
            total_sum += float(total) * w
            n += w
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) * w
    return total_sum / n, {k: v / n for k, v in sums.items()}


def _fused_adam(opt):
    """The same Adam / AdamW (parameters, groups, hyper-parameters) with ``fused=True``: one kernel for every
    parameter on CUDA instead of one per tensor. Other optimisers, or one already stepped, are returned as
    they are."""
    import torch

    if type(opt) not in (torch.optim.Adam, torch.optim.AdamW) or opt.defaults.get("fused") or opt.state:
        return opt
    import inspect

    accepted = set(inspect.signature(type(opt).__init__).parameters)  # AdamW fixes decoupled_weight_decay itself
    groups = [{**g, "fused": True, "foreach": None} for g in opt.param_groups]
    defaults = {k: v for k, v in opt.defaults.items() if k in accepted and k not in ("fused", "foreach")}
    return type(opt)(groups, **defaults, fused=True)


def _cpu_copy(obj):
    """A copy of a (nested) state dict with every tensor copied to the CPU."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def _checkpoint_state(module_state, optimizers, epoch, history, best, shuffle, model, cfg) -> dict[str, Any]:
    """Everything :func:`iter_train` needs to resume after ``epoch`` (copies: training may go on)."""
    import torch

    return {
        "module": module_state, "optimizer": {k: _cpu_copy(o.state_dict()) for k, o in optimizers.items()},
        "epoch": epoch,
        "history": list(history), "best": {k: v for k, v in best.items() if k != "state"},
        "shuffle_rng": shuffle.get_state(), "torch_rng": torch.get_rng_state(),
        "split": model.split_, "fingerprint": model._fingerprint(), "config": cfg.model_dump(), "model": model.name,
    }


def _write_checkpoint(folder: Path, state: dict[str, Any]) -> Path:
    """Write ``last.ckpt`` atomically (temp file + rename) so a crash never leaves half a checkpoint."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{CHECKPOINT_NAME}.tmp"
    torch.save(state, tmp)
    tmp.replace(folder / CHECKPOINT_NAME)
    return folder / CHECKPOINT_NAME


def train(model, *, progress: bool = False, **options):
    """Train ``model`` (see :func:`iter_train`), optionally with a terminal progress bar; returns the model."""
    return run(iter_train(model, **options), progress=progress)


__all__ = ["TrainConfig", "iter_train", "resolve_device", "split_indices", "train"]
