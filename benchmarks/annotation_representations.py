"""Which MIMA output should annotation prediction use? (issue 14, item 6; docs/models.md "Annotation representation")

    python benchmarks/annotation_representations.py CASE OUT.jsonl [REP,REP,...]

Trains MIMA once per case with its defaults (seed 0) and caches every output a representation may be built from
(`/tmp/exp/<case>_outputs.npz`: the PoE, each modality's shared / private latent and batch-corrected features,
`get_corrected_pca`, and the raw inputs with NaN at unmeasured spots), so that representations can be compared
without retraining. Each representation is then scored by the benchmark's own leave-one-sample-out ensemble
(`spatialmix.evaluate.annotations.iter_cross_validate`, the options `spatialmix benchmark` uses): mean F1 and, per
class scored on >= 10 spots, the F1 lost against the best raw single modality (the issue's rule: no class may lose
more than 0.05). Printed and appended to OUT.jsonl.

Representations (REP):
  poe                   the shared PoE embedding
  corrected_pca         MIMA.get_corrected_pca (the current default)
  corrected_cat         every modality's corrected features, z-scored, concatenated (no PCA)
  corrected_<m>         one modality's corrected features
  corrected_blocks      a PCA per modality (up to 50 components), each block scaled to unit total variance
  corrected_cat+poe     corrected_cat beside the PoE
  denoised_<m>, denoised_cat   the denoised features (decoded with the batch latent), one modality or all
  poe+private           the PoE beside every private latent
  raw_<m>               one raw modality (scored anyway, as the reference)
  <rep>+raw_<m>         a representation beside one modality's measured inputs (both z-scored), e.g.
                        corrected_pca+raw_rna
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

case, outf = sys.argv[1], sys.argv[2]
reps = sys.argv[3].split(",") if len(sys.argv) > 3 else ["poe", "corrected_pca", "corrected_cat", "corrected_blocks"]
cache = Path(f"/tmp/exp/{case}_outputs.npz")
cache.parent.mkdir(parents=True, exist_ok=True)

if not cache.exists():
    from spatialmix.models import MIMA
    from spatialmix.models.baselines import common_spots

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _cases import case_data

    mmd = case_data(case)
    t = time.perf_counter()
    m = MIMA(mmd)
    m.train()
    train_s = time.perf_counter() - t
    arrays = {"poe": m.get_latent_representation(), "corrected_pca": m.get_corrected_pca(),
              "labels": mmd.labels.astype(str).to_numpy(), "samples": mmd.obs["sample"].astype(str).to_numpy(),
              "evaluated": common_spots(mmd),
              "modalities": np.array(mmd.modalities), "train_s": np.array(train_s),
              "epochs_run": np.array(len([h for h in m.history if "loss" in h]))}
    for mm in mmd.modalities:
        arrays[f"shared_{mm}"] = m.get_latent_representation("shared", mm)
        arrays[f"private_{mm}"] = m.get_latent_representation("private", mm)
        arrays[f"corrected_{mm}"] = m.get_corrected(mm).astype(np.float32)
        arrays[f"denoised_{mm}"] = m.get_denoised(mm).astype(np.float32)
        raw = mmd.dense(mm).astype(np.float32)
        raw[~mmd.mask[mm]] = np.nan
        arrays[f"raw_{mm}"] = raw
    np.savez(cache, **arrays)
    print(f"trained in {train_s:.0f} s, outputs cached in {cache}", flush=True)

z = dict(np.load(cache, allow_pickle=True))
mods = [str(x) for x in z["modalities"]]


def zscore(C):
    return (C - np.nanmean(C, axis=0)) / np.where(np.nanstd(C, axis=0) > 0, np.nanstd(C, axis=0), 1.0)


def build(rep):
    from sklearn.decomposition import PCA
    if "+raw_" in rep:  # a representation beside one modality's measured inputs, z-scored
        base, mm = rep.split("+raw_")
        return np.hstack([zscore(build(base)), zscore(z[f"raw_{mm}"])])
    if rep in z and not rep.startswith("corrected_"):
        return z[rep]
    if rep == "corrected_pca":
        return z["corrected_pca"]
    if rep.startswith("corrected_") and rep[len("corrected_"):] in mods:
        return zscore(z[rep])
    if rep == "corrected_cat":
        return np.hstack([zscore(z[f"corrected_{mm}"]) for mm in mods])
    if rep.startswith("denoised_") and rep[len("denoised_"):] in mods:
        return zscore(z[rep])
    if rep == "denoised_cat":
        return np.hstack([zscore(z[f"denoised_{mm}"]) for mm in mods])
    if rep == "poe+private":
        return np.hstack([z["poe"]] + [z[f"private_{mm}"] for mm in mods])
    if rep == "corrected_cat+poe":
        return np.hstack([build("corrected_cat"), zscore(z["poe"])])
    if rep == "corrected_blocks":
        blocks = []
        for mm in mods:
            C = zscore(z[f"corrected_{mm}"])
            ok = np.isfinite(C).all(axis=1)
            k = min(50, C.shape[1], int(ok.sum()) - 1)
            P = np.full((len(C), k), np.nan, np.float32)
            P[ok] = PCA(k, random_state=0).fit_transform(C[ok])
            P /= np.sqrt(np.nansum(np.nanvar(P, axis=0)))
            blocks.append(P)
        return np.hstack(blocks)
    raise SystemExit(f"unknown representation {rep!r}")


from spatialmix.evaluate.annotations import EnsembleOptions, iter_cross_validate  # noqa: E402
from spatialmix.progress import run as run_iter  # noqa: E402

labels = pd.Series(z["labels"])
ev = z["evaluated"].astype(bool)
assert (ev == np.logical_and.reduce([np.isfinite(z[f"raw_{mm}"]).all(axis=1) for mm in mods])).all()


def loocv(X):
    return run_iter(iter_cross_validate(np.asarray(X, np.float32), labels, z["samples"], scheme="loocv", mask=ev,
                                        options=EnsembleOptions(seed=0)))


raw = {f"raw_{mm}": loocv(z[f"raw_{mm}"]) for mm in mods}
best_raw = pd.concat({k: r.per_class["f1"] for k, r in raw.items()}, axis=1).max(axis=1)
n_spots = next(iter(raw.values())).per_class["n_spots"].reindex(best_raw.index)
results = {k: r for k, r in raw.items()}
for rep in reps:
    if rep not in results:
        t = time.perf_counter()
        results[rep] = loocv(build(rep))
        print(f"{rep}: scored in {time.perf_counter() - t:.0f} s", flush=True)
with open(outf, "a") as fh:
    for rep, r in results.items():
        lost = (best_raw - r.per_class["f1"].reindex(best_raw.index))[n_spots >= 10]
        rec = {"case": case, "representation": rep, "loocv_f1": round(float(r.summary["f1"]), 4),
               "classes_losing_over_0.05": {str(c): round(float(v), 3) for c, v in lost[lost > 0.05].items()},
               "train_s": round(float(z["train_s"]), 1), "epochs_run": int(z["epochs_run"])}
        print(json.dumps(rec), flush=True)
        fh.write(json.dumps(rec) + "\n")
