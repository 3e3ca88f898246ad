"""Ground truth of a simulated dataset (``truth/`` of every sample), aligned to a project's spots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spatialmix.errors import MissingFileError


def load_truth(data: str | Path, obs: pd.DataFrame | None = None) -> pd.DataFrame:
    """True tissue region (and latent biology) per spot of a dataset written by ``spatialmix simulate``.

    Returns one row per in-tissue spot with ``sample``, ``barcode``, ``region`` (categorical) and the
    ``factor_<i>`` columns (the shared biology). With ``obs`` (a project's spot table, with ``sample`` and
    ``barcode`` columns) the rows are reindexed to ``obs.index`` in its order.
    """
    data = Path(data)
    folders = sorted(p.parent for p in data.glob("*/truth/spots.csv"))
    if not folders:
        raise MissingFileError("no truth/spots.csv under this folder: it is not a simulated dataset", data,
                               "point to a folder written by `spatialmix simulate` (or the bundled sample_data)")
    parts = []
    for folder in folders:
        sample = folder.parent.name
        spots = pd.read_csv(folder / "spots.csv")
        spots = spots[spots["in_tissue"] == 1]
        frame = pd.DataFrame({"sample": sample, "barcode": spots["barcode"].to_numpy(),
                              "region": spots["region"].astype(str).to_numpy()})
        sig = folder / "signals.npz"
        if sig.exists():
            z = np.load(sig)
            pos = pd.Index(z["barcodes"]).get_indexer(frame["barcode"])
            ok = pos >= 0
            for i in range(z["factors"].shape[1]):
                col = np.full(len(frame), np.nan, np.float32)
                col[ok] = z["factors"][pos[ok], i]
                frame[f"factor_{i}"] = col
        parts.append(frame)
    truth = pd.concat(parts, ignore_index=True)
    truth["region"] = pd.Categorical(truth["region"])
    if obs is None:
        return truth
    key = pd.MultiIndex.from_frame(truth[["sample", "barcode"]].astype(str))
    want = pd.MultiIndex.from_frame(obs[["sample", "barcode"]].astype(str))
    pos = key.get_indexer(want)
    if (pos < 0).any():
        missing = want[pos < 0][:3].tolist()
        raise MissingFileError(f"{int((pos < 0).sum())} spots have no truth entry (e.g. {missing})", data,
                               "use the truth of the dataset the project was prepared from")
    out = truth.iloc[pos].copy()
    out.index = obs.index
    return out
