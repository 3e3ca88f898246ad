"""The benchmark's inputs: opening a dataset, the raw representations, and the models it may run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spatialmix.errors import ParameterError, ProjectError, SpatialMixError


DEFAULT_MODELS = ("mima", "pca", "harmony")
#: peers trained by scvi-tools: a training length given to the benchmark (``--epochs``) becomes their max_epochs
SCVI_TOOLS_PEERS = ("scvi", "totalvi", "multivi")


def default_sources(samples) -> list[str]:
    """Half of the samples as labelled sources: every other one in sorted order (P1_S1, P2_S1 of P1_S1, P1_S2,
    P2_S1, P2_S2), so each patient has a source and a target section when samples are named by patient."""
    uniq = sorted(pd.unique(np.asarray(samples).astype(str)))
    return uniq[::2]


def _model_params(model_params: dict | None, name: str) -> dict:
    """``model_params`` is ``{model name: {param: value}}``; a flat dict (the older form) applies to ``mima``."""
    from spatialmix.models import MODELS
    from spatialmix.models.peers import PEERS

    model_params = model_params or {}
    if any(k in MODELS or k in PEERS for k in model_params):
        return dict(model_params.get(name) or {})
    return dict(model_params) if name == "mima" else {}


@dataclass
class Representation:
    name: str
    kind: str  # "raw", "baseline" or "model"
    X: np.ndarray  # (n_spots, dims); NaN rows where undefined
    resources: dict = field(default_factory=dict)
    source: str = ""  # the --models entry it came from


MULTIOMICS_SUFFIXES = (".h5mu", ".h5ad")


def _is_multiomics(data) -> bool:
    """True for non-spatial multi-omics input: a MultiModalData, or .h5mu / .h5ad path(s)."""
    from spatialmix.data import MultiModalData

    if isinstance(data, MultiModalData):
        return True
    items = data if isinstance(data, (list, tuple)) else str(data).split(",")
    return any(str(x).strip().split("=")[-1].lower().endswith(MULTIOMICS_SUFFIXES) for x in items)


def _open(data) -> tuple[Any, Path | None]:
    """(SpatialData, dataset folder or None) from a project zarr or a dataset folder."""
    from spatialmix.project import load_project

    path = Path(data)
    if not path.exists():
        raise ProjectError(f"{path} does not exist. Pass a dataset folder (with samples.csv, e.g. written by "
                           "`spatialmix simulate`), a project .zarr saved by spatialmix, an .h5mu file or "
                           ".h5ad files (one per modality)")
    if path.suffix == ".zarr" or (path / "zarr.json").exists() or (path / ".zgroup").exists():
        return load_project(path), None
    if not (path / "samples.csv").exists() and not path.is_file():
        raise ProjectError(f"{path} is neither a project .zarr nor a dataset folder with samples.csv "
                           "(non-spatial multi-omics: an .h5mu file or .h5ad files)")
    return None, path


def _raw(data) -> list[Representation]:
    from spatialmix.models.baselines import concatenated

    reps = []
    for m in data.modalities:
        X = data.dense(m)
        X[~data.mask[m]] = np.nan
        reps.append(Representation(f"raw_{m}", "raw", X, source="raw"))
    if len(data.modalities) > 1:
        Xc, keep = concatenated(data)
        full = np.full((data.n_obs, Xc.shape[1]), np.nan, np.float32)
        full[keep] = Xc
        reps.append(Representation("raw_concat", "raw", full, source="raw"))
    return reps


def _load(data, *, annotation_key, label_key, batch_key, preprocessing, zscore, sample_key, modalities):
    """(SpatialData or None, MultiModalData, label column or None) of any benchmark input, checked before any
    long work: a spatial dataset folder (prepared here) or project, or non-spatial multi-omics."""
    from spatialmix.data import as_multimodal

    if _is_multiomics(data):
        return None, None, as_multimodal(data, batch_key=batch_key, label_key=label_key, preprocessing=preprocessing,
                                         zscore=zscore, sample_key=sample_key, modalities=modalities)
    sdata, folder = _open(data)
    return sdata, folder, None


def applicable_peers(data, why: dict[str, str] | None = None) -> list[str]:
    """The peers (:data:`spatialmix.models.peers.PEERS`) that can run on ``data`` (their ``check`` passes);
    ``why`` (a dict), when given, receives the reason of each one that cannot."""
    from spatialmix.models.peers import PEERS

    out = []
    for name, peer in PEERS.items():
        try:
            peer.check(data)
        except SpatialMixError as err:
            if why is not None:
                why[name] = str(err)
            continue
        out.append(name)
    return out


def _check_models(models, mmd, labels, skipped: dict[str, str] | None = None) -> list[str]:
    """Expand ``peers`` / ``all`` and refuse, before any work, a listed method the data cannot support.

    ``peers`` / ``all`` take what can run on this data; each method they leave out is recorded with the reason
    in ``skipped`` (shown in the report, never dropped silently). A method named explicitly that cannot run
    is an error."""
    from spatialmix.models import MODELS
    from spatialmix.models.baselines import BASELINES
    from spatialmix.models.peers import PEERS

    skipped = {} if skipped is None else skipped
    models = [m.strip().lower() for m in models if m.strip()]
    n_batches = mmd.obs[mmd.batch_key].nunique()
    expanded: list[str] = []
    for m in models:
        if m in ("peers", "all"):
            extra = []
            if m == "all":
                extra += ["mima", "pca"]
                if n_batches >= 2:
                    extra.append("harmony")
                else:
                    skipped["harmony"] = f"one batch only ({mmd.obs[mmd.batch_key].iloc[0]!r}): nothing to integrate"
            extra += applicable_peers(mmd, skipped)
            expanded += [x for x in extra if x not in expanded]
        elif m not in expanded:
            expanded.append(m)
    for m in expanded:
        skipped.pop(m, None)
    unknown = [m for m in expanded if m not in MODELS and m not in BASELINES and m not in PEERS]
    if unknown:
        raise ParameterError(f"unknown model(s) {unknown}; choose from "
                             f"{sorted(MODELS) + sorted(BASELINES) + sorted(PEERS)}, or 'peers' / 'all'")
    if not expanded:
        raise ParameterError("no model to benchmark; pass e.g. --models mima,pca,harmony")
    for m in expanded:
        if m in PEERS:
            PEERS[m].check(mmd)  # raises a ParameterError that says why
        elif m == "harmony" and n_batches < 2:
            raise ParameterError("harmony needs at least two batches; this data has one "
                                 f"({mmd.obs[mmd.batch_key].iloc[0]!r}). Leave it out of --models")
        elif m in MODELS and MODELS[m].needs_labels and labels is None:
            raise ParameterError(f"{m} is trained on labelled source samples; this data has no label column "
                                 "(pass --label-key / annotation_key)")
        elif m in ("modamix", "calibration", "scmodal") and mmd.obs["sample"].nunique() < 2:
            raise ParameterError(f"{m} aligns samples with each other; this data has one sample")
    return expanded
