"""MIMA training speed and peak memory at the ``small`` and ``paper`` dataset scales.

For each scale a :class:`~spatialmix.data.MultiModalData` is built, a default-parameter :class:`MIMA` is trained
for a few epochs through the one training engine (:mod:`spatialmix.train`, batch size 128, 80 / 20 split), and
its progress events are collected. Measured, per scale:

- seconds per epoch (the engine's ``info["seconds_per_epoch"]``: the optimiser steps over the training spots
  plus one validation pass over the validation spots) and spots per second = training spots / seconds per
  epoch; also the median time of one optimiser step (from consecutive step events) and the training-only
  throughput it implies (batch size / step time);
- memory: the process's peak resident memory while training (Linux ``VmHWM`` reset through
  ``/proc/self/clear_refs`` just before training, and a psutil sampling thread as a cross-check), its increase
  over the resident memory just before training, the lifetime peak (``resource.getrusage().ru_maxrss``), and on
  CUDA ``torch.cuda.max_memory_allocated``;
- the size of the dense training tensors (every modality as float32, masks, batch codes), the size of the
  model inputs as held by ``MultiModalData`` (CSR for rna / msi) and the parameter count.

Data:

- ``small``: the real bundled demo project (``demo_out/project.zarr``: 4 samples, 1,290 spots, 1,500 genes,
  526 m/z, 67 morphology features), read with ``load_project`` + ``MultiModalData.from_spatialdata``.
- ``paper``: the shapes of the simulator's ``paper`` size (``spatialmix.simulate._config.SIZES["paper"]``):
  16 samples, 18,950 genes, 3 x 4,170 = 12,510 m/z features, and ``in_tissue_range`` (2,000 - 3,300 spots per
  sample) whose midpoint, 2,650, gives 16 x 2,650 = 42,400 spots. Morphology has the 67 features spatialmix
  computes (the paper's 512-d foundation-model embedding would add a 512 -> latent projection, negligible
  next to the 18,950- and 12,510-feature modalities). The values are synthetic (random sparse log1p counts
  for rna, ~30 % of spots without MSI coverage, z-scored morphology): training speed and memory depend on the
  shapes, not on the values. ``--paper-spots`` reduces the spot count where a machine cannot hold it.

Each scale runs in a fresh subprocess so that its memory figures are its own. ``--quick`` runs tiny synthetic
shapes for one epoch (a smoke test, seconds) and writes to a temporary file unless ``--out`` is given.
Prints a table and writes JSON (``--out``, default ``benchmarks/results/train_speed.json``).

Run: ``PYTHONPATH=src python benchmarks/train_speed.py [--device auto|cpu|cuda] [--threads 2]
[--epochs-small 5] [--epochs-paper 1] [--precision 16-mixed] [--compile auto|on|off] [--tf32 on|off]
[--static-shapes auto|on|off] [--batched-decoders auto|on|off] [--scales small paper] [--quick]``.
The GPU matrix (compile x fp32 / TF32 / bf16) is
``benchmarks/gpu_paper_scale.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_PROJECT = REPO / "demo_out" / "project.zarr"
DEFAULT_OUT = HERE / "results" / "train_speed.json"
MB = 1024**2

#: morphology features spatialmix computes per spot (the paper uses a 512-d embedding; see the docstring)
N_MORPHOLOGY = 67
#: fraction of spots without MSI coverage in the synthetic paper-scale data (the demo has 29 %)
MSI_UNCOVERED = 0.3
#: fraction of non-zero genes per spot (Visium: a few thousand of ~19k genes) and of m/z per covered spot
RNA_DENSITY = 0.10
MSI_DENSITY = 0.25

#: tiny shapes for ``--quick``: (samples, spots per sample, genes, m/z)
QUICK_SHAPES = {"small": (4, 60, 300, 80), "paper": (16, 40, 1200, 1100)}


# -- data -------------------------------------------------------------------------------------------------
def paper_shapes() -> dict:
    """Samples, spots, genes and m/z features that the simulator's ``paper`` size implies."""
    from spatialmix.simulate._config import get_size

    spec = get_size("paper")
    lo, hi = spec.in_tissue_range
    per_sample = (lo + hi) // 2
    return {"n_samples": spec.default_n_samples, "spots_per_sample": per_sample,
            "n_spots": spec.default_n_samples * per_sample, "in_tissue_range": [lo, hi],
            "n_genes": spec.n_genes, "n_msi": 3 * spec.n_lipids, "n_morphology": N_MORPHOLOGY}


def _sparse_block(rng, n_rows: int, n_cols: int, density: float, chunk: int = 2048):
    """Random CSR (float32) with ``density`` non-zeros per row, values like log1p of normalised counts."""
    import scipy.sparse as sp

    blocks = []
    for start in range(0, n_rows, chunk):
        rows = min(chunk, n_rows - start)
        keep = rng.random((rows, n_cols), dtype=np.float32) < density
        r, c = np.nonzero(keep)
        del keep
        vals = np.log1p(rng.gamma(1.5, 2.0, r.size).astype(np.float32))
        blocks.append(sp.csr_matrix((vals, (r, c)), shape=(rows, n_cols), dtype=np.float32))
    return sp.vstack(blocks, format="csr", dtype=np.float32)


def synthetic_data(n_samples: int, spots_per_sample: int, n_genes: int, n_msi: int, n_morph: int = N_MORPHOLOGY,
                   *, seed: int = 0):
    """A :class:`MultiModalData` of the given shapes with random values (rna, msi CSR; morphology dense)."""
    import pandas as pd

    from spatialmix.data import MultiModalData

    rng = np.random.default_rng(seed)
    n = n_samples * spots_per_sample
    samples = [f"P{i // 2 + 1}_S{i % 2 + 1}" for i in range(n_samples)]
    sample_col = np.repeat(samples, spots_per_sample)
    barcodes = [f"SPOT{j:05d}-1" for j in range(spots_per_sample)] * n_samples
    obs = pd.DataFrame({
        "sample": pd.Categorical(sample_col, categories=samples),
        "patient": pd.Categorical([s.split("_")[0] for s in sample_col]),
        "batch": pd.Categorical(sample_col, categories=samples),
        "barcode": barcodes,
        "spot_id": np.tile(np.arange(spots_per_sample), n_samples),
    }, index=[f"{s}_{b}" for s, b in zip(sample_col, barcodes)])
    rna = _sparse_block(rng, n, n_genes, RNA_DENSITY)
    msi_mask = rng.random(n) >= MSI_UNCOVERED
    msi = _sparse_block(rng, n, n_msi, MSI_DENSITY)
    msi = msi.multiply(msi_mask[:, None].astype(np.float32)).tocsr().astype(np.float32)  # uncovered rows: zeros
    msi.eliminate_zeros()
    morph = rng.standard_normal((n, n_morph), dtype=np.float32)
    X = {"rna": rna, "msi": msi, "morphology": morph}
    mask = {"rna": np.ones(n, bool), "msi": msi_mask, "morphology": np.ones(n, bool)}
    var_names = {"rna": pd.Index([f"GENE{i:05d}" for i in range(n_genes)]),
                 "msi": pd.Index([f"{m:.4f}" for m in np.linspace(400.0, 1000.0, n_msi)]),
                 "morphology": pd.Index([f"morph_{i:02d}" for i in range(n_morph)])}
    return MultiModalData(["rna", "msi", "morphology"], X, mask, var_names, obs, counts=None, batch_key="batch",
                          annotation_key=None)


def add_shape_arguments(ap, *, samples: int = 16, spots_per_sample: int = 1250, genes: int = 10000,
                        msi: int = 4000) -> None:
    """The ``--samples``, ``--spots-per-sample``, ``--genes``, ``--msi`` and ``--threads`` options of the
    benchmarks that build :func:`synthetic_data` (output_memory.py, train_memory.py)."""
    ap.add_argument("--samples", type=int, default=samples)
    ap.add_argument("--spots-per-sample", type=int, default=spots_per_sample)
    ap.add_argument("--genes", type=int, default=genes)
    ap.add_argument("--msi", type=int, default=msi)
    ap.add_argument("--threads", type=int, default=1)


def build_data(scale: str, *, quick: bool, project: Path, paper_spots: int | None, seed: int = 0):
    """``(data, description)`` for ``scale``."""
    if quick:
        n_samples, per, genes, msi = QUICK_SHAPES[scale]
        return synthetic_data(n_samples, per, genes, msi, seed=seed), {
            "source": "synthetic values, tiny shapes (--quick smoke test)"}
    if scale == "small":
        from spatialmix.errors import ProjectError
        from spatialmix.data import MultiModalData
        from spatialmix.project import load_project

        if not Path(project).exists():
            raise ProjectError(f"the demo project {project} does not exist; create it with "
                               f"`spatialmix --quiet demo --out {Path(project).parent}` or pass --project")
        data = MultiModalData.from_spatialdata(load_project(project))
        return data, {"source": f"real bundled demo project ({project})"}
    shapes = paper_shapes()
    per = shapes["spots_per_sample"]
    note = (f"synthetic values, real shapes: {shapes['n_samples']} samples x {per} spots (midpoint of the paper "
            f"size's in_tissue_range {shapes['in_tissue_range']}), {shapes['n_genes']} genes, {shapes['n_msi']} m/z "
            f"(3 x n_lipids), {N_MORPHOLOGY} morphology features (the 67 spatialmix computes, not the paper's "
            f"512-d embedding); rna {RNA_DENSITY:.0%} non-zero log1p values, msi {MSI_DENSITY:.0%} non-zero on "
            f"covered spots with ~{MSI_UNCOVERED:.0%} of spots uncovered")
    if paper_spots is not None:
        per = max(1, int(paper_spots) // shapes["n_samples"])
        note += f"; REDUCED to {per * shapes['n_samples']} spots ({per} per sample) with --paper-spots"
    data = synthetic_data(shapes["n_samples"], per, shapes["n_genes"], shapes["n_msi"], seed=seed)
    return data, {"source": note, "paper_config_spots": shapes["n_spots"]}


def input_bytes(data) -> int:
    """Bytes of the model inputs as ``MultiModalData`` holds them (CSR data + indices + indptr, or dense)."""
    import scipy.sparse as sp

    total = 0
    for m in data.modalities:
        x = data.X[m]
        total += x.data.nbytes + x.indices.nbytes + x.indptr.nbytes if sp.issparse(x) else x.nbytes
    return int(total)


def tensor_bytes(data) -> int:
    """Bytes of MIMA's dense training tensors: float32 matrices, bool masks, int64 batch codes."""
    n = data.n_obs
    return int(sum(n * data.n_vars(m) * 4 + n for m in data.modalities) + n * 8)


# -- memory -----------------------------------------------------------------------------------------------
from spatialmix._resources import reset_peak as _reset_hwm  # noqa: E402  (Linux VmHWM := current RSS)
from spatialmix._resources import status_bytes as _status_bytes  # noqa: E402


def measured_call(call, sampler: "RSSSampler") -> tuple:
    """``(call(), figures)``: wall seconds and the peak RSS during the call (total and above its start, MB;
    ``sampler`` is a started :class:`RSSSampler`), after a garbage collection."""
    import gc

    gc.collect()
    sampler.reset()
    base = sampler.current()
    t0 = time.perf_counter()
    out = call()
    seconds = time.perf_counter() - t0
    time.sleep(0.05)
    mb = 1024**2
    return out, {"seconds": round(seconds, 2), "peak_rss_mb": round(sampler.peak / mb, 1),
                 "peak_above_start_mb": round((sampler.peak - base) / mb, 1)}


def start_stages(*, threads: int, interval: float, width: int = 34):
    """Set torch's threads, start an :class:`RSSSampler` and return ``(stage, sampler, stages)``: ``stage(name,
    call)`` runs ``call`` under :func:`measured_call`, records its seconds and peak RSS in ``stages[name]``,
    prints one line and returns the call's result (the HD benchmarks' stages)."""
    import torch

    torch.set_num_threads(threads)
    sampler = RSSSampler(interval=interval)
    sampler.start()
    stages: dict[str, dict] = {}

    def stage(name, call):
        out, fig = measured_call(call, sampler)
        stages[name] = {"seconds": round(fig["seconds"], 1), "peak_rss_mb": round(fig["peak_rss_mb"]),
                        "peak_above_start_mb": round(fig["peak_above_start_mb"])}
        print(f"{name:<{width}} {fig['seconds']:8.1f} s   peak RSS {fig['peak_rss_mb']:8.0f} MB "
              f"({fig['peak_above_start_mb']:+.0f} MB)", flush=True)
        return out

    return stage, sampler, stages


def write_report(out: dict, path, *, indent: int = 1) -> None:
    """Print a benchmark's result as JSON and write it to ``path`` (its folder made if needed)."""
    print(json.dumps(out, indent=indent))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=indent))


def _maxrss_bytes() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


class RSSSampler(threading.Thread):
    """Samples this process's RSS every ``interval`` s (psutil); ``peak`` since the last ``reset()``."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._halt = threading.Event()

    def current(self) -> int:
        return int(self._proc.memory_info().rss)

    def reset(self) -> None:
        self.peak = self.current()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, self.current())
            self._halt.wait(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        self.peak = max(self.peak, self.current())
        return self.peak


def _cpu_counters() -> dict:
    """This process's CPU seconds and, with psutil, the machine's busy CPU seconds (all processes)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    out = {"own": ru.ru_utime + ru.ru_stime}
    try:
        import psutil

        c = psutil.cpu_times()
        out["busy"] = sum(getattr(c, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))
    except ImportError:
        pass
    return out


def _cpu_share(before: dict, after: dict, wall: float) -> dict:
    """Cores used by this process and by every other process while training (shared-CPU indicator)."""
    own = (after["own"] - before["own"]) / wall
    res = {"cores": os.cpu_count(), "own_cores_used": own}
    if "busy" in before and "busy" in after:
        res["other_processes_cores_used"] = max(0.0, (after["busy"] - before["busy"]) / wall - own)
    return res


def machine_info(threads: int) -> dict:
    import torch

    import spatialmix

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "threads_asked": threads,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "spatialmix": spatialmix.__version__,
            "cuda_available": torch.cuda.is_available()}
    try:
        import lightning_fabric

        info["lightning_fabric"] = lightning_fabric.__version__
    except Exception:  # pragma: no cover - informative only
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        pass
    try:
        import psutil

        info["memory_total_gib"] = round(psutil.virtual_memory().total / 1024**3, 1)
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


# -- one scale (runs in its own process) ------------------------------------------------------------------
def measure(scale: str, *, epochs: int, device: str, precision: str, threads: int, batch_size: int, project: Path,
            paper_spots: int | None, quick: bool, max_epoch_minutes: float, seed: int = 0,
            accelerations: dict | None = None) -> dict:
    """Build the data of ``scale``, train MIMA, return the figures (call in a fresh process)."""
    import torch

    from spatialmix.models import MIMA
    from spatialmix.models._mima_module import n_parameters
    from spatialmix.train import resolve_device

    torch.set_num_threads(threads)
    try:
        sampler = RSSSampler()
        sampler.start()
    except ImportError:
        sampler = None
    rss_start = _status_bytes("VmRSS")
    load_start = os.getloadavg()
    t = time.perf_counter()
    data, described = build_data(scale, quick=quick, project=project, paper_spots=paper_spots, seed=seed)
    build_s = time.perf_counter() - t
    rss_data = _status_bytes("VmRSS")
    model = MIMA(data)
    accelerator, _ = resolve_device(device)
    cuda = accelerator == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    hwm_reset = _reset_hwm()
    rss_before = _status_bytes("VmRSS")
    if sampler is not None:
        sampler.reset()

    epochs_seen: list[dict] = []
    step_times: list[float] = []
    state = {"last": None, "epoch_start": time.perf_counter(), "aborted": None}

    def on_event(ev) -> None:
        kind = ev.info.get("event")
        if kind == "step":
            if ev.info["step"] > 1 and state["last"] is not None:
                step_times.append(ev.time - state["last"])
            state["last"] = ev.time
            done, per_epoch = ev.info["step"], ev.info["steps_per_epoch"]
            # extrapolate from the median step after >= 10 steps (the first step of a run carries one-time costs)
            guess = float(np.median(step_times)) * per_epoch if len(step_times) >= 10 else 0.0
            if guess > 60 * max_epoch_minutes and state["aborted"] is None:
                state["aborted"] = (f"stopped after {done} of {per_epoch} steps: the epoch would take "
                                    f"~{guess / 60:.1f} min ({guess:.0f} s; > --max-epoch-minutes "
                                    f"{max_epoch_minutes:g}); reduce --paper-spots")
                print(state["aborted"], file=sys.stderr, flush=True)
                model.stop_training()
        elif kind == "epoch":
            epochs_seen.append({"epoch": ev.info["epoch"], "seconds": ev.info["seconds_per_epoch"],
                                "loss": ev.info["loss"], "val_loss": ev.info["val_loss"]})
            print(f"  [{scale}] epoch {ev.info['epoch']}/{ev.info['epochs']}: {ev.info['seconds_per_epoch']:.2f} s, "
                  f"loss {ev.info['loss']:.4g}", file=sys.stderr, flush=True)
            state["epoch_start"] = time.perf_counter()
            state["last"] = None

    cpu0 = _cpu_counters()
    t = time.perf_counter()
    state["epoch_start"] = t
    model.train(epochs=epochs, batch_size=batch_size, device=device, precision=precision, seed=seed,
                progress=on_event, **(accelerations or {}))
    train_wall = time.perf_counter() - t
    cpu = _cpu_share(cpu0, _cpu_counters(), train_wall)
    hwm = _status_bytes("VmHWM")
    sampled_peak = sampler.stop() if sampler is not None else None
    gpu = {}
    if cuda:
        gpu = {"max_memory_allocated_bytes": int(torch.cuda.max_memory_allocated()),
               "max_memory_reserved_bytes": int(torch.cuda.max_memory_reserved()),
               "device_name": torch.cuda.get_device_name(0)}

    n_train, n_val = len(model.split_["train"]), len(model.split_["validation"])
    secs = [e["seconds"] for e in epochs_seen]
    steady = secs[1:] if len(secs) > 1 else secs  # the first epoch includes one-time allocations
    sec_epoch = float(np.median(steady)) if steady else None
    step_s = float(np.median(step_times)) if step_times else None
    steps_per_epoch = -(-n_train // batch_size)
    return {
        "scale": scale,
        "data": {**described, "n_spots": data.n_obs, "n_samples": int(data.obs[data.batch_key].nunique()),
                 "n_train_spots": n_train, "n_validation_spots": n_val,
                 "features": {m: data.n_vars(m) for m in data.modalities},
                 "covered_spots": {m: int(np.asarray(data.mask[m]).sum()) for m in data.modalities},
                 "input_mb": input_bytes(data) / MB, "dense_tensor_mb": tensor_bytes(data) / MB,
                 "build_seconds": build_s},
        "model": {"parameters": int(n_parameters(model.module)), "hidden": model.params["hidden"],
                  "n_latent": model.params["n_latent"], "repr": repr(model)},
        "training": {"epochs_asked": epochs, "epochs_done": len(epochs_seen), "batch_size": batch_size,
                     "steps_per_epoch": steps_per_epoch, "device": device, "accelerator": accelerator,
                     "precision": precision, "accelerations": model.train_config.get("accelerations"),
                     "aborted": state["aborted"], "wall_seconds": train_wall,
                     "epochs": epochs_seen, "seconds_per_epoch_first": secs[0] if secs else None,
                     "seconds_per_epoch": sec_epoch,
                     "seconds_per_epoch_note": "median over epochs after the first (the only one when 1 epoch); "
                                               "train steps + one validation pass",
                     "spots_per_second": n_train / sec_epoch if sec_epoch else None,
                     "seconds_per_epoch_min": min(steady) if steady else None,
                     "seconds_per_epoch_max": max(steady) if steady else None,
                     "spots_per_second_per_epoch": [n_train / s for s in secs],
                     "step_seconds_median": step_s,
                     "train_only_spots_per_second": batch_size / step_s if step_s else None,
                     "extrapolated_seconds_per_epoch": (step_s * steps_per_epoch if step_s else None)},
        "memory": {"rss_start_mb": (rss_start or 0) / MB, "rss_after_data_mb": (rss_data or 0) / MB,
                   "rss_before_training_mb": (rss_before or 0) / MB,
                   "peak_rss_training_mb": (hwm / MB) if hwm_reset and hwm else None,
                   "peak_rss_training_increase_mb": ((hwm - rss_before) / MB) if hwm_reset and hwm else None,
                   "peak_rss_sampled_mb": sampled_peak / MB if sampled_peak else None,
                   "peak_rss_lifetime_mb": _maxrss_bytes() / MB, "hwm_reset_worked": hwm_reset,
                   **{k.replace("_bytes", "_mb"): v / MB for k, v in gpu.items() if k.endswith("_bytes")},
                   **({"cuda_device": gpu["device_name"]} if gpu else {})},
        "cpu_during_training": cpu,
        "load_average": {"before": list(load_start), "after": list(os.getloadavg())},
        "machine": machine_info(threads),
    }


# -- driver -----------------------------------------------------------------------------------------------
def _child(scale: str, args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", scale, "--device", args.device,
           "--threads", str(args.threads), "--batch-size", str(args.batch_size), "--precision", args.precision,
           "--epochs-small", str(args.epochs_small), "--epochs-paper", str(args.epochs_paper),
           "--project", str(args.project), "--max-epoch-minutes", str(args.max_epoch_minutes)]
    if args.paper_spots is not None:
        cmd += ["--paper-spots", str(args.paper_spots)]
    cmd += ["--compile", args.compile, "--tf32", args.tf32, "--static-shapes", args.static_shapes,
            "--batched-decoders", args.batched_decoders]
    if args.quick:
        cmd.append("--quick")
    res = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=False)  # stderr: live progress
    if res.returncode != 0:
        lines = res.stdout.strip().splitlines()
        return {"scale": scale, "error": f"exit status {res.returncode}", "output": lines[-20:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _fmt(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(results: list[dict]) -> None:
    head = (f"{'scale':<6} {'spots':>7} {'train':>6} {'rna/msi/morph':>17} {'params':>11} {'tensors MB':>10} "
            f"{'s/epoch':>8} {'spots/s':>8} {'train spots/s':>13} {'peak RSS MB':>11} {'+train MB':>9} {'GPU MB':>8} "
            f"{'others cores':>12}")
    print(head)
    print("-" * len(head))
    for r in results:
        if "error" in r:
            print(f"{r['scale']:<6} failed: {r['error']}")
            continue
        d, tr, mem = r["data"], r["training"], r["memory"]
        f = d["features"]
        feats = "/".join(str(f.get(m, "-")) for m in ("rna", "msi", "morphology"))
        print(f"{r['scale']:<6} {d['n_spots']:>7} {d['n_train_spots']:>6} {feats:>17} {r['model']['parameters']:>11,} "
              f"{d['dense_tensor_mb']:>10.1f} {_fmt(tr['seconds_per_epoch'], '.2f'):>8} "
              f"{_fmt(tr['spots_per_second'], '.0f'):>8} {_fmt(tr['train_only_spots_per_second'], '.0f'):>13} "
              f"{_fmt(mem['peak_rss_training_mb'] or mem['peak_rss_sampled_mb'], '.0f'):>11} "
              f"{_fmt(mem['peak_rss_training_increase_mb'], '.0f'):>9} "
              f"{_fmt(mem.get('max_memory_allocated_mb'), '.0f'):>8} "
              f"{_fmt(r.get('cpu_during_training', {}).get('other_processes_cores_used'), '.2f'):>12}")
        if tr["aborted"]:
            print(f"       {tr['aborted']}")


def parse_args(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", nargs="+", default=["small", "paper"], choices=["small", "paper"])
    ap.add_argument("--epochs-small", type=int, default=5)
    ap.add_argument("--epochs-paper", type=int, default=1)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (| cuda:N)")
    ap.add_argument("--precision", default="32-true", help="32-true (default) or 16-mixed / bf16-mixed on a GPU")
    ap.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads (default 1)")
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                    help="torch.compile the training step (auto: the engine's default, on with CUDA)")
    ap.add_argument("--tf32", choices=["on", "off"], default="on", help="TF32 matrix products on CUDA")
    ap.add_argument("--static-shapes", choices=["auto", "on", "off"], default="auto",
                    help="full mini-batches only (auto: the engine's default, on when compiling)")
    ap.add_argument("--batched-decoders", choices=["auto", "on", "off"], default="auto",
                    help="one decoder call per modality per step (auto: the engine's default, on with CUDA)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--project", type=Path, default=DEFAULT_PROJECT, help="the demo project for the small scale")
    ap.add_argument("--paper-spots", type=int, default=None,
                    help="reduce the paper scale to about this many spots (default: 42,400, from the size config)")
    ap.add_argument("--max-epoch-minutes", type=float, default=15.0,
                    help="stop a scale whose epoch would take longer than this (extrapolated from its steps)")
    ap.add_argument("--quick", action="store_true", help="tiny synthetic shapes, 1 epoch (smoke test)")
    ap.add_argument("--note", default=None, help="free text stored in the JSON (e.g. 'CPU shared with others')")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"JSON output (default {DEFAULT_OUT.relative_to(REPO)}; with --quick a temporary file)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from spatialmix.errors import ParameterError

    for name in ("epochs_small", "epochs_paper", "threads", "batch_size"):
        if getattr(args, name) < 1:
            raise ParameterError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.quick:
        args.epochs_small = args.epochs_paper = 1
    return args


def accelerations(args) -> dict:
    """The engine options of --compile / --tf32 / --static-shapes / --batched-decoders ("auto": left to the
    engine)."""
    flag = {"on": True, "off": False}
    out = {"tf32": args.tf32 == "on"}
    if args.compile != "auto":
        out["compile"] = flag[args.compile]
    if args.static_shapes != "auto":
        out["static_shapes"] = flag[args.static_shapes]
    if args.batched_decoders != "auto":
        out["batched_decoders"] = flag[args.batched_decoders]
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.child:  # inside the per-scale subprocess: print one JSON line
        epochs = args.epochs_small if args.child == "small" else args.epochs_paper
        res = measure(args.child, epochs=epochs, device=args.device, precision=args.precision, threads=args.threads,
                      batch_size=args.batch_size, project=args.project, paper_spots=args.paper_spots,
                      quick=args.quick, max_epoch_minutes=args.max_epoch_minutes,
                      accelerations=accelerations(args))
        print(json.dumps(res))
        return res

    if args.precision == "16-mixed":  # fail before building anything
        from spatialmix.train import resolve_device

        if resolve_device(args.device)[0] != "cuda":
            from spatialmix.errors import ParameterError

            raise ParameterError("--precision 16-mixed needs a CUDA GPU (use --device cuda on a GPU machine, "
                                 "or 32-true / bf16-mixed on CPU)")
    out = args.out or (Path(tempfile.gettempdir()) / "spatialmix_train_speed_quick.json" if args.quick else DEFAULT_OUT)
    results = []
    for scale in args.scales:
        print(f"{scale}: building data and training MIMA ({args.device}, {args.threads} thread(s)) ...", flush=True)
        results.append(_child(scale, args))
    ok = [r for r in results if "error" not in r]
    result = {
        "benchmark": "train_speed",
        "model": "mima (default parameters)",
        "quick": args.quick,
        "note": args.note,
        "values": "small: real demo data; paper: synthetic values, real shapes (speed does not depend on the values)",
        "threads": args.threads,
        "accelerations_asked": accelerations(args),
        "machine": ok[0]["machine"] if ok else None,
        "scales": {r["scale"]: {k: v for k, v in r.items() if k != "machine"} for r in results},
    }
    print_table(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    _res = main()
    sys.exit(1 if any("error" in r for r in _res.get("scales", {}).values()) else 0)
