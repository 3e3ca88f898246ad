"""Sweep MIMA variants on a development case (how the defaults of issue 14 were chosen; docs/models.md).

    python benchmarks/mima_variants.py CASE 'VARIANTS_JSON' OUT.jsonl

CASE is a key of spatialmix.datasets.CASES (starmap, visium_he, sim0, sim7, sim11); VARIANTS_JSON maps a name to
{"params": {...MIMA parameters}, "train": {...training options}, "reps": ["poe", "shared_cat", ...]} (a rep is
"poe", "poe+private", "shared_cat", "poe+shared", "corrected_pca", "poe+corrected_pca" or one latent such as
"shared_rna" / "private_msi"). Each variant
is trained once; printed and appended to OUT.jsonl: training seconds, epochs run, a quick leave-one-batch-out
logistic-regression macro F1 (a proxy, not the benchmark's LOOCV ensemble) and the scIB scores of the
benchmark's own function (spatialmix.evaluate.metrics.scib_benchmark, with PCA-50 of the inputs as the
unintegrated reference, so totals sit ~0.01 above `spatialmix benchmark`'s, which uses pca_concat).
Spatial cases are prepared once into /tmp/exp/<case>.zarr.

A variant's "warmup" dict tries training schedules that are not MIMA options (issue 14 candidates): "kl_steps": N
ramps every KL weight linearly from 0 to its value over the first N optimiser steps (scVI's KL warm-up);
"adv_steps": N ramps the adversary's weight the same way, with "dann": 1 along Ganin & Lempitsky's
2 / (1 + exp(-10 p)) - 1; "val_no_adv": 1 leaves the adversarial terms out of the validation loss that early
stopping watches. Validation always uses the full KL weights.

With a fourth argument ``--loocv`` every representation (and each raw modality) is also scored by the
benchmark's own leave-one-sample-out ensemble (spatialmix.evaluate.annotations.iter_cross_validate, the
options `spatialmix benchmark` uses): mean F1 and, per class scored on >= 10 spots, the F1 lost against the
best raw single modality (issue 14, item 6: no class may lose more than 0.05).
"""
import json, sys, time
import numpy as np, pandas as pd
from spatialmix.models import MIMA
from spatialmix.evaluate.metrics import scib_benchmark
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.metrics import f1_score

case = sys.argv[1]; variants = json.loads(sys.argv[2]); outf = sys.argv[3]; with_loocv = "--loocv" in sys.argv[4:]
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parent))
from _cases import case_data  # noqa: E402
mmd = case_data(case)
lk = mmd.annotation_key
labels = mmd.labels.astype(str).to_numpy(); batches = mmd.obs[mmd.batch_key].astype(str).to_numpy()
from spatialmix.evaluate.annotations import PAPER_EXCLUDED
from spatialmix.models.baselines import common_spots
valid = ~pd.Series(labels).isin(["nan", "None", "", *PAPER_EXCLUDED]).to_numpy()
ev = np.zeros(len(labels), bool); ev[common_spots(mmd)] = True
valid &= ev
def lobo(Z):
    f = []
    for b in np.unique(batches):
        tr, te = (batches != b) & valid, (batches == b) & valid
        s = StandardScaler().fit(Z[tr]); clf = LogisticRegression(max_iter=2000, C=1.0).fit(s.transform(Z[tr]), labels[tr])
        f.append(f1_score(labels[te], clf.predict(s.transform(Z[te])), average="macro"))
    return float(np.mean(f))
embs = {}; rec = {}
from sklearn.decomposition import PCA
X = np.hstack([mmd.dense(m) for m in mmd.modalities]); embs["pca"] = PCA(50, random_state=0).fit_transform(X)
rec["pca"] = {"lobo_f1": lobo(embs["pca"])}
for name, v in variants.items():
    t = time.perf_counter()
    params = v.get("params", {}); tr = v.get("train", {})
    m = MIMA(mmd, **params)
    wu = v.get("warmup", {})
    if wu:  # schedules tried for issue 14 (not MIMA options): the module's loss wrapped, counting training steps
        import types
        mod = m.module; base_beta = dict(mod.beta); base_adv = mod.adversarial; state = {"n": 0}
        orig = mod.loss
        def patched(self, *a, **k):
            if self.training:
                state["n"] += 1
                fk = min(1.0, state["n"] / wu["kl_steps"]) if wu.get("kl_steps") else 1.0
                fa = min(1.0, state["n"] / wu["adv_steps"]) if wu.get("adv_steps") else 1.0
                if wu.get("dann"):  # Ganin's 2/(1+exp(-10 p)) - 1
                    p = min(1.0, state["n"] / wu["adv_steps"]); fa = 2 / (1 + np.exp(-10 * p)) - 1
                self.beta = {kk: vv * fk for kk, vv in base_beta.items()}; self.adversarial = base_adv * fa
            else:
                self.beta = base_beta; self.adversarial = 0.0 if wu.get("val_no_adv") else base_adv
            return orig(*a, **k)
        mod.loss = types.MethodType(patched, mod)
    m.train(**tr)
    if wu: print("warm-up steps seen", state["n"], flush=True)
    hist = [h for h in m.history if "loss" in h]
    Z = m.get_latent_representation()
    reps = v.get("reps", ["poe"])
    allz = {"poe": Z}
    for mm in m.modalities:
        allz[f"shared_{mm}"] = m.get_latent_representation("shared", mm)
        allz[f"private_{mm}"] = m.get_latent_representation("private", mm)
    for rep in reps:
        if rep in ("corrected_pca", "poe+corrected_pca") and "corrected_pca" not in allz:
            C = np.hstack([StandardScaler().fit_transform(m.get_corrected(mm)) for mm in m.modalities])
            ok = np.isfinite(C).all(axis=1); P = np.full((len(C), 50), np.nan, np.float32)
            P[ok] = PCA(50, random_state=0).fit_transform(C[ok]); allz["corrected_pca"] = P
        if rep.startswith("residual") and "residual_pca" not in allz:
            # residual correction (candidate, ours): the measured input minus the decoder's batch effect,
            # x + decoder(without batch) - decoder(with batch); keeps what the bottleneck does not reconstruct
            blocks = []
            for mm in m.modalities:
                R = mmd.dense(mm) + m.get_corrected(mm) - m.get_denoised(mm)
                allz[f"residual_{mm}"] = R
                blocks.append(StandardScaler().fit_transform(R))
            C = np.hstack(blocks); ok = np.isfinite(C).all(axis=1); P = np.full((len(C), 50), np.nan, np.float32)
            P[ok] = PCA(50, random_state=0).fit_transform(C[ok]); allz["residual_pca"] = P
        if "raw_pca" in rep and "raw_pca" not in allz:  # PCA-50 of the measured inputs, each feature z-scored
            C = np.hstack([StandardScaler().fit_transform(np.where(mmd.mask[mm][:, None], mmd.dense(mm), np.nan))
                           for mm in m.modalities])
            ok = np.isfinite(C).all(axis=1); P = np.full((len(C), 50), np.nan, np.float32)
            P[ok] = PCA(50, random_state=0).fit_transform(C[ok]); allz["raw_pca"] = P
        if rep == "corrected_pca+raw_pca" and "corrected_pca" not in allz:
            C = np.hstack([StandardScaler().fit_transform(m.get_corrected(mm)) for mm in m.modalities])
            ok = np.isfinite(C).all(axis=1); P = np.full((len(C), 50), np.nan, np.float32)
            P[ok] = PCA(50, random_state=0).fit_transform(C[ok]); allz["corrected_pca"] = P
        if rep == "poe_harmony" and rep not in allz:  # candidate (ours): Harmony on the PoE embedding
            from spatialmix.models.baselines import harmony
            allz[rep] = harmony(Z, batches, seed=0)
        parts = {"corrected_pca+raw_pca": ["corrected_pca", "raw_pca"], "corrected_pca": ["corrected_pca"], "poe+corrected_pca": ["poe", "corrected_pca"], "poe": ["poe"], "poe+private": ["poe"] + [f"private_{mm}" for mm in m.modalities],
                 "shared_cat": [f"shared_{mm}" for mm in m.modalities],
                 "poe+shared": ["poe"] + [f"shared_{mm}" for mm in m.modalities]}.get(rep, [rep])
        Zr = np.hstack([allz[k] for k in parts])
        key = name if rep == "poe" else f"{name}:{rep}"
        embs[key] = Zr
        rec[key] = {"train_s": round(time.perf_counter() - t, 1), "lobo_f1": lobo(Zr), "epochs_run": len(hist), **v}
        print(key, rec[key], flush=True)
if with_loocv:
    from spatialmix.evaluate.annotations import EnsembleOptions, iter_cross_validate
    from spatialmix.progress import run as run_iter
    samples = mmd.obs["sample"].astype(str).to_numpy()

    def loocv(X):
        return run_iter(iter_cross_validate(X, pd.Series(labels, index=mmd.obs.index), samples, scheme="loocv",
                                            mask=ev, options=EnsembleOptions(seed=0)))
    raw = {}
    for mm in mmd.modalities:
        Xr = mmd.dense(mm).astype(np.float32); Xr[~mmd.mask[mm]] = np.nan
        raw[f"raw_{mm}"] = loocv(Xr)
    pcs = {k: r.per_class for k, r in raw.items()}
    best_raw = pd.concat({k: v["f1"] for k, v in pcs.items()}, axis=1).max(axis=1)
    n_spots = next(iter(pcs.values()))["n_spots"]
    for k, r in raw.items():
        rec.setdefault(k, {})["loocv_f1"] = round(r.summary["f1"], 4)
        print(k, "LOOCV F1", round(r.summary["f1"], 4), flush=True)
    for n in [k for k in embs if k != "pca"]:
        r = loocv(embs[n])
        pc = r.per_class["f1"].reindex(best_raw.index)
        lost = (best_raw - pc)[n_spots.reindex(best_raw.index) >= 10]
        rec[n]["loocv_f1"] = round(r.summary["f1"], 4)
        rec[n]["loocv_worst_class_loss"] = {str(lost.idxmax()): round(float(lost.max()), 4)}
        rec[n]["loocv_classes_losing_over_0.05"] = {str(c): round(float(v), 3) for c, v in lost[lost > 0.05].items()}
        print(n, "LOOCV F1", rec[n]["loocv_f1"], "classes losing > 0.05 F1 vs best raw modality:",
              rec[n]["loocv_classes_losing_over_0.05"], flush=True)
if lk:
    lab2 = np.where(valid, labels, None).astype(object)
    tab = scib_benchmark({k: v[ev] for k, v in embs.items()}, batches[ev], lab2[ev], pre_integrated="pca")
    for n in embs:
        rec[n].update({k: round(float(tab.loc[n, k]), 4) for k in ("Bio conservation", "Batch correction", "Total")})
with open(outf, "a") as fh:
    for n, r in rec.items(): fh.write(json.dumps({"case": case, "name": n, **r}) + "\n")
for n, r in rec.items(): print(n, {k: r.get(k) for k in ("train_s", "lobo_f1", "Bio conservation", "Batch correction", "Total")})
