"""``example_config`` (a commented configuration for a dataset folder) and ``docs/config.md``'s parameter
tables, generated from the declarations.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spatialmix.conventions import ANNOTATION_KEY
from spatialmix.samples import read_samples_csv

from ._checks import OUTPUT_DEFAULTS, SAMPLE_KEYS, _toml
from ._load import PREPARE_CHECKS


# ============================================================================================================
# example_config
# ============================================================================================================
_COMMENTS = {
    "samples_csv": "one row per sample; paths in it are relative to it",
    "annotation_key": "obs column that receives the pathologist's labels",
    "register": "automatic registration of MSI and H&E onto the Visium spots",
    "bin_ppm": "m/z bin width in ppm (the same grid for every sample)",
    "mz_range": "keep only this m/z window",
    "morphology": "per-spot H&E features",
    "morphology_encoder": "TorchScript image encoder instead of the built-in image features",
    "min_msi_coverage": "spots covered less than this by MSI pixels count as without MSI",
    "min_feature_fraction": "keep an m/z bin present in at least this fraction of spots",
    "model.name": "a key of spatialmix.models.MODELS",
    "modalities": "which tables to integrate",
    "n_latent": "size of the shared, private and batch latents",
    "beta": "KL weight",
    "preset": "spatialmix (ours) or paper (the preprint's loss)",
    "epochs": "passes over the data, or \"auto\": ~13,000 steps with early stopping",
    "lr": "learning rate (Adam)",
    "batch_size": "spots per step",
    "device": "auto, cpu, cuda or cuda:N",
    "model.seed": "seeds the weight initialisation",
    "model.hidden": "per-modality hidden layers ([] = direct)",
    "train.seed": "same seed + same device = same result",
    "translations": "[sources, target]: impute target from sources",
    "corrected": "batch-corrected features of every modality",
    "rgb": "3D UMAP of the embedding as RGB colours",
    "figures": "PNG figures (training curve, maps)",
    "metrics": "integration scores and annotation accuracy",
}


def _line(section: str, key: str, value: Any, *, commented: bool = False, note: str | None = None) -> str:
    body = f"{'# ' if commented else ''}{key} = {_toml(value)}"
    note = note or _COMMENTS.get(f"{section}.{key}") or _COMMENTS.get(key)
    return f"{body:<44} # {note}" if note else body


def example_config(data_dir: str | Path, *, relative_to: str | Path | None = None,
                   explicit_samples: bool = False) -> str:
    """A commented run configuration for the dataset folder ``data_dir`` (which holds a ``samples.csv``).

    Paths are absolute, or relative to ``relative_to`` (the folder the file will be saved in). With
    ``explicit_samples`` the samples are listed as ``[[samples]]`` tables instead of pointing to the csv. Keys the
    example leaves at their defaults are shown commented out with the default value.
    """
    import inspect

    from spatialmix.models import MODELS
    from spatialmix.models.mima import DEFAULTS
    from spatialmix.pipeline import iter_prepare
    from spatialmix.train import TrainConfig

    data_dir = Path(data_dir).expanduser().resolve()
    csv = data_dir if data_dir.suffix == ".csv" else data_dir / "samples.csv"
    specs = read_samples_csv(csv)

    def show(p: Path) -> str:
        p = Path(p).resolve()
        return Path(os.path.relpath(p, Path(relative_to).resolve())).as_posix() if relative_to else p.as_posix()

    mods = ["rna"] + (["msi"] if any(s.imzml for s in specs) else []) + (["morphology"] if any(s.he for s in specs) else [])
    translations = [["+".join(m for m in mods if m != t), t] for t in ("rna", "msi") if t in mods and len(mods) > 1]
    lines = [f"# napari-spatialmix run configuration for {data_dir.name}",
             "# run:  spatialmix run THIS_FILE.toml --out RESULTS_DIR",
             "# Relative paths are relative to the folder of this file. Every key: docs/config.md",
             "", "[data]"]
    if not explicit_samples:
        lines.append(_line("data", "samples_csv", show(csv)))
    lines += [_line("data", "annotation_key", ANNOTATION_KEY), ""]
    if explicit_samples:
        for s in specs:
            lines.append("[[samples]]")
            lines.append(f"name = {_toml(s.sample)}")
            lines.append(f"patient = {_toml(s.patient)}")
            for key in SAMPLE_KEYS[2:]:
                value = getattr(s, key)
                if value is not None:
                    lines.append(f"{key} = {_toml(show(value) if isinstance(value, Path) else value)}")
            lines.append("")

    sig = inspect.signature(iter_prepare).parameters
    lines.append("[prepare]")
    for key in PREPARE_CHECKS:
        default = sig[key].default
        shown = {"mz_range": [400.0, 1000.0], "morphology_encoder": "encoder.pt"}.get(key, default)
        lines.append(_line("prepare", key, shown, commented=key not in ("register", "bin_ppm")))
    lines += ["", "[model]", _line("model", "name", "mima"), _line("model", "modalities", mods)]
    for key, value in DEFAULTS.items():
        if value is None:
            lines.append(_line("model", key, DEFAULTS["beta"], commented=True, note="default: the value of beta"))
        else:
            lines.append(_line("model", key, value, commented=key not in ("n_latent", "beta")))
    lines.append(_line("model", "hidden", {"rna": [300, 300], "msi": []}, commented=True))
    train_defaults = TrainConfig.defaults()
    train_defaults.update(MODELS["mima"].train_defaults)
    lines += ["", "[train]"]
    shown_first = ("epochs", "lr", "batch_size", "device", "seed")
    for key in shown_first:
        lines.append(_line("train", key, train_defaults[key]))
    for key, value in train_defaults.items():
        if key in shown_first:
            continue
        note = None
        if value is None:
            value, note = {"checkpoint_dir": ("checkpoints", None), "resume": (True, None),
                           "early_stopping": (True, 'default: on with epochs = "auto", else off'),
                           "patience": (10, 'default: 10; with epochs = "auto" 10 epochs or 500 steps'),
                           "max_steps": (10000, "optimiser steps instead of epochs")}.get(key, ("", None))
        lines.append(_line("train", key, value, commented=True, note=note))
    lines += ["", "[outputs]", _line("outputs", "translations", translations)]
    for key, value in OUTPUT_DEFAULTS.items():
        if key != "translations":
            lines.append(_line("outputs", key, value))
    return "\n".join(lines) + "\n"


# ============================================================================================================
# docs/config.md's parameter tables, generated from the declarations
# ============================================================================================================
def documented_params() -> dict:
    """The declarations whose tables ``docs/config.md`` holds, by the name in its ``<!-- params:NAME -->``
    markers: ``prepare`` for ``pipeline.PrepareParams``, ``model.<name>`` for each model's ``Params``, ``train`` for
    the engine's ``TrainConfig``."""
    from spatialmix.models import MODELS
    from spatialmix.train import TrainConfig

    from spatialmix.pipeline import PrepareParams

    return {"prepare": PrepareParams, **{f"model.{name}": cls.Params for name, cls in MODELS.items()},
            "train": TrainConfig}


def write_param_docs(path: str | Path = "docs/config.md") -> bool:
    """Regenerate the parameter tables of ``path`` from the declarations (``make docs-config``); True when the
    file changed."""
    from spatialmix.params import render_docs

    path = Path(path)
    text = path.read_text()
    new = render_docs(text, documented_params())
    if new != text:
        path.write_text(new)
    return new != text

