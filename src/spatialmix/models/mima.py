"""MIMA: modality-agnostic multi-omics integration and batch correction (Alvira Larizgoitia, Partel et al.,
bioRxiv 2025.10.21.683449), the user-facing model.

>>> data = MultiModalData.from_spatialdata(sdata)
>>> model = MIMA(data)                  # every modality; our defaults (preset="paper": the preprint's loss)
>>> model.train()                     # epochs="auto": ~13,000 steps, early stopping (preset="paper": 50 epochs, lr 1e-4)
>>> z = model.get_latent_representation()           # PoE embedding (n_spots, 100)
>>> msi = model.get_corrected("msi")                 # batch-corrected MSI
>>> rna = model.translate(["msi", "morphology"], "rna")   # genes imputed from MSI + H&E

The networks and the loss live in :mod:`spatialmix.models._mima_module`; ``docs/models.md`` documents every
default and each choice the paper leaves open.

Why one file of about 550 lines: it is one model class. Every output of :class:`MIMA` goes through the same
fitted module, the same chunked inference (``_infer``, ``get_outputs``) and the same masks of ``data``;
:class:`MIMAParams` is its parameter declaration, and the networks and loss are already apart in ``_mima_module``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import AfterValidator

from spatialmix.data import measured_only
from spatialmix.errors import ModelError, ParameterError
from spatialmix.params import Params, param

from ._base import BaseModel
from ._mima_module import MIMAModule, n_parameters

#: a modality with at most this many features is projected to the latents directly (the paper's rule)
DIRECT_MAX_FEATURES = 1000

def _latent_names(v: str) -> str:
    if not v or not set(v.split("+")) <= {"shared", "private", "poe"}:
        raise ValueError("must be '+'-joined latents among 'shared', 'private' and 'poe' (e.g. 'shared+private')")
    return v


class MIMAParams(Params):
    """MIMA's parameters, declared once: the constructor, ``[model]`` of a run configuration, the Integrate dock
    and ``docs/config.md`` all read this (``spatialmix.params``). Defaults are ours (``preset="spatialmix"``);
    :data:`PRESETS` lists what ``preset="paper"`` changes."""

    n_latent: int = param(100, "size of the shared, private and batch latents", ge=1)
    n_hidden: int = param(300, "width of the hidden layers of high-dimensional modalities", ge=1)
    n_layers: int = param(2, "number of hidden layers", ge=0)
    direct_max_features: int = param(DIRECT_MAX_FEATURES, "modalities with at most this many features are "
                                     "projected to the latents directly", ge=0)
    dropout: float = param(0.1, "dropout in encoder / decoder layers", ge=0, lt=1)
    latent_dropout: float = param(0.3, "dropout before the latent layers", ge=0, lt=1)
    latent_dropout_at: Literal["heads", "z"] = param(
        "heads", "where the latent dropout acts: the latent heads' input, or the latent sample before decoding "
        "(ablation)")
    beta: float = param(0.01, "KL weight", ge=0)
    beta_poe: float | None = param(None, "KL weight of the PoE latent", ge=0, default_text="`beta`")
    beta_shared: float | None = param(None, "KL weight of the shared latents", ge=0, default_text="`beta`")
    beta_private: float | None = param(None, "KL weight of the private latents", ge=0, default_text="`beta`")
    beta_batch: float | None = param(0.0, "KL weight of the batch latent (ours: 0; the paper's preset: `beta`)",
                                     ge=0)
    translation_loss: bool = param(True, "cross-modal translation terms in the loss")
    batch_input: Literal["sample", "sample+features"] = param("sample", "what the batch latent is read from")
    encode_covariate: bool = param(False, "also feed the sample one-hot to the shared / private heads (ablation)")
    adversarial: float = param(0.1, "weight of the batch-adversarial term (0 = the paper's loss only)", ge=0)
    adversarial_on: Annotated[str, AfterValidator(_latent_names)] = param(
        "shared+private", "which latents the batch classifiers read (ablation; `\"poe\"`: the shared embedding "
        "itself)", kind="`\"+\"`-joined among `\"shared\"`, `\"private\"`, `\"poe\"`")
    translation_detach: bool = param(False, "the translation terms do not train the target's batch latent (the "
                                     "paper's)")
    translation_poe: bool = param(
        True, "the translation terms decode the sources' product of experts with the prior, as `translate` does "
        "(ours); `false`: the paper's source-own shared latent, and `translate` then leaves the prior out")
    translation_weight: float = param(1.0, "weight of the translation terms in the loss (ours; the paper's is 1)",
                                      ge=0)
    count_likelihood: Literal["mse", "nb"] = param(
        "mse", "`\"nb\"` (ours): a negative-binomial likelihood of the raw counts (observed library size, one "
        "dispersion per feature) for modalities prepared with kind `\"counts\"`, MSE for the others; outputs in "
        "log1p(10,000 x proportion), the input's units")
    preset: Literal["spatialmix", "paper"] = param(
        "spatialmix", "`\"paper\"`: the preprint's loss (no adversary, every KL weight 0.01, `batch_input = "
        "\"sample+features\"`, `translation_detach = true`, `translation_poe = false`, training 50 epochs at lr "
        "1e-4); keys given explicitly win")
    seed: int = param(0, "seeds the weight initialisation", ge=0)


#: MIMA's parameter defaults (ours, preset "spatialmix"), from :class:`MIMAParams`
DEFAULTS: dict[str, Any] = MIMAParams.defaults()

#: What each preset changes from :data:`DEFAULTS` (explicit parameters override a preset).
#: ``"paper"``: the preprint's loss: no batch adversary, beta 0.01 for every KL term (the batch latent's
#: too), the batch latent read from the sample and the modality's features, and translation terms that do
#: not train the target's batch latent. ``"spatialmix"``: ours (differences listed in docs/models.md).
PRESETS: dict[str, dict[str, Any]] = {
    "spatialmix": {},
    "paper": {"adversarial": 0.0, "beta_batch": None, "batch_input": "sample+features", "translation_detach": True,
              "translation_poe": False},
}


class MIMA(BaseModel):
    """Product-of-experts VAE with shared, private and batch latents per modality.

    Outputs never invent values: the corrected and denoised reconstructions and the per-modality shared /
    private latents are NaN at spots where that modality was not measured, and a translation is NaN where
    none of its sources was measured (a translation is the only output at a spot's unmeasured modality).

    Parameters
    ----------
    data
        The paired per-spot inputs (:class:`spatialmix.data.MultiModalData`).
    modalities
        Which of ``data``'s modalities to integrate, in order (default: all; any number >= 1).
    n_latent
        Size of the shared, private and batch latents (paper: 100).
    n_hidden, n_layers
        Hidden layers of encoders (and mirrored decoders) of high-dimensional modalities (paper: 2 x 300, ReLU).
    direct_max_features
        Modalities with at most this many features are projected to the latents directly (paper: ~1,000).
    hidden
        ``{modality: [sizes]}`` overriding the hidden layers of single modalities (``[]`` = direct).
    dropout, latent_dropout
        Dropout in encoder / decoder layers (0.1) and in the latent layers (0.3): by default on the input of the
        latent heads (``latent_dropout_at="heads"``); ``"z"`` applies it to the latent sample before decoding
        (ablation; worse in our measurements).
    beta
        KL weight (0.01, the paper's); ``beta_poe``, ``beta_shared``, ``beta_private`` override the weight of the
        PoE KL and of each modality's shared / private KL. ``beta_batch`` defaults to 0: with equal weights the
        L2 cost of a per-sample offset is split evenly between the batch and the private latent, so half of the
        batch effect stays in the batch-corrected output (measured in ``docs/models.md``).
    adversarial
        Weight of the batch-adversarial term (default 0.1; 0 = the paper's loss only): a small classifier per
        modality tries to tell the sample from the shared and private latent means, and the encoders are
        trained through a gradient reversal to defeat it (see ``docs/models.md`` for the ablation).
    encode_covariate
        Also feed the sample one-hot to the shared / private heads (ablation only; worse in our measurements).
    translation_loss
        Include the cross-modal translation terms in the loss (the paper does; off only for the ablation).
    batch_input
        ``"sample"`` (default): each batch latent is a Gaussian per sample, read from the one-hot sample code;
        ``"sample+features"`` (the ``paper`` preset, our reading of the preprint's Methods): the batch head also
        sees the modality's features; a translation then adds each sample's mean batch latent of the target
        over the spots where the target was measured.
    translation_detach
        The translation terms do not train the target's batch latent (the ``paper`` preset; default off).
    translation_poe
        (ours, default on) Each translation term decodes the product of the sources' experts *with the prior
        expert*, exactly what :meth:`translate` decodes (every single source and all other modalities together;
        with more than three modalities also one random subset per step). Off (the ``paper`` preset): the
        paper's terms, the source's own shared latent, and :meth:`translate` then leaves the prior out.
    translation_weight
        Weight of the translation terms (ours; 1 = the paper's).
    count_likelihood
        How modalities of raw counts (preprocessing kind ``"counts"``, e.g. RNA, with their counts kept) are
        reconstructed: ``"mse"`` (default, the paper's: squared error of the log-normalised values) or ``"nb"``
        (ours, scVI's: negative-binomial likelihood of the raw counts with the spot's observed library size and
        a dispersion per feature; the decoder gives expression proportions, and the outputs are
        ``log1p(1e4 x proportion)``, the units of the input). Other modalities keep the squared error.
    preset
        ``"spatialmix"`` (default, ours: batch adversary 0.1, ``beta_batch`` 0, the batch latent from the sample
        alone, ``translation_poe``, and training with ``epochs="auto"`` at lr 1e-3; see ``docs/models.md`` for
        the measurements behind each) or ``"paper"`` (the preprint's loss: no adversary, every KL weight 0.01,
        ``batch_input="sample+features"``, ``translation_detach``, the paper's translation terms, and its
        schedule: 50 epochs, lr 1e-4, batch 128, 80/20 split). A preset only fills in defaults: parameters
        given explicitly win.
    seed
        Seeds the weight initialisation (training has its own ``seed`` option).
    """

    name = "mima"
    supports = frozenset({"latent", "private", "corrected", "corrected_pca", "denoised", "translations",
                          "expert_weights"})
    #: ours (preset "spatialmix"): about 13,000 optimiser steps whatever the data size, early stopping on the
    #: validation loss with the best epoch restored (spatialmix.train.auto_schedule), lr 1e-3
    train_defaults = {"epochs": "auto", "batch_size": 128, "lr": 1e-3, "train_fraction": 0.8}
    #: the preprint's schedule (preset "paper"): 50 epochs, lr 1e-4, batch 128, 80/20 split
    paper_train_defaults = {"epochs": 50, "batch_size": 128, "lr": 1e-4, "train_fraction": 0.8}
    Params = MIMAParams
    defaults = DEFAULTS
    extra_arguments = ("hidden", "modalities")

    def __init__(self, data, *, modalities: Sequence[str] | None = None, hidden: dict[str, list[int]] | None = None,
                 **params):
        preset = params.get("preset", DEFAULTS["preset"])
        if preset not in PRESETS:
            raise ParameterError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        params = {**PRESETS[preset], **params}
        p, mods = self._resolve_params(data, params, modalities)
        p["modalities"] = mods
        p["hidden"] = self._hidden_layers(mods, {m: data.n_vars(m) for m in mods}, p, hidden)
        p["likelihoods"] = self._likelihoods(data, mods, p["count_likelihood"])
        super().__init__(data, **p)
        self._build()

    @staticmethod
    def _hidden_layers(mods, n_vars, p, override) -> dict[str, list[int]]:
        override = dict(override or {})
        unknown = sorted(set(override) - set(mods))
        if unknown:
            raise ParameterError(f"hidden= names modalities {unknown} that the model does not use ({mods})")
        out = {}
        for m in mods:
            if m in override:
                out[m] = [int(h) for h in override[m]]
            elif n_vars[m] <= p["direct_max_features"]:
                out[m] = []
            else:
                out[m] = [int(p["n_hidden"])] * int(p["n_layers"])
        return out

    @staticmethod
    def _likelihoods(data, mods, choice) -> dict[str, str]:
        """``{modality: "mse" | "nb"}``: ``"nb"`` for the modalities of raw counts when ``choice`` is "nb"."""
        if choice == "mse":
            return {m: "mse" for m in mods}
        kinds = data.preprocessing or {}
        raw = data.raw or {}
        nb = [m for m in mods if kinds.get(m) == "counts" and raw.get(m) is not None]
        if not nb:
            raise ParameterError(
                "count_likelihood='nb' needs a modality of raw counts (preprocessing kind 'counts' with its counts "
                f"kept), but the modalities {mods} are of kinds { {m: kinds.get(m) for m in mods} }; load the counts "
                "with preprocessing={'rna': 'counts'} or use count_likelihood='mse'")
        return {m: ("nb" if m in nb else "mse") for m in mods}

    def _betas(self) -> dict[str, float]:
        p = self.params
        base = float(p["beta"])
        return {k: float(p[f"beta_{k}"]) if p.get(f"beta_{k}") is not None else base
                for k in ("poe", "shared", "private", "batch")}

    def _build(self) -> None:
        import torch

        p = self.params
        if p.get("preset") == "paper":  # also for a model loaded from disk
            self.train_defaults = dict(self.paper_train_defaults)
        torch.manual_seed(int(p["seed"]))
        self.module = MIMAModule(
            [len(self.var_names[m]) for m in self.modalities], max(len(self.batches), 1),
            n_latent=int(p["n_latent"]), hidden=[p["hidden"][m] for m in self.modalities],
            dropout=float(p["dropout"]), latent_dropout=float(p["latent_dropout"]), beta=self._betas(),
            translation=bool(p["translation_loss"]), batch_input=p["batch_input"],
            encode_covariate=bool(p.get("encode_covariate", False)), adversarial=float(p.get("adversarial", 0.0)),
            adversarial_on=str(p.get("adversarial_on", "shared+private")).split("+"),
            latent_dropout_at=str(p.get("latent_dropout_at", "heads")),
            names=self.modalities, translation_detach=bool(p.get("translation_detach", False)),
            translation_poe=bool(p.get("translation_poe", False)),
            translation_weight=float(p.get("translation_weight", 1.0)),
            likelihoods=[p.get("likelihoods", {}).get(m, "mse") for m in self.modalities],
        )

    # -- tensors -------------------------------------------------------------------------------------------
    def _tensors(self, data, device="cpu") -> dict:
        import torch

        out = {}
        for m in self.modalities:
            out[f"x_{m}"] = torch.as_tensor(data.dense(m), device=device)
            out[f"mask_{m}"] = torch.as_tensor(np.asarray(data.mask[m], bool), device=device)
        codes = self._batch_codes(data)
        if (codes < 0).any() and data is self.data:
            raise ModelError("some spots have no batch")  # cannot happen for the training data
        out["batch"] = torch.as_tensor(np.where(codes < 0, 0, codes), device=device)
        out["_known_batch"] = torch.as_tensor(codes >= 0, device=device)
        return out

    def _training_tensors(self) -> dict:
        """What the engine trains on: sparse (CSR) modalities stay sparse (:class:`spatialmix.train.SparseRows`,
        densified one mini-batch at a time), the others as dense tensors; masks and batch codes."""
        import scipy.sparse as sp
        import torch

        from spatialmix.train import SparseRows

        if self.data is None:
            raise ModelError("this model was loaded without data; pass data to MIMA.load(path, data) to train it")
        data = self.data
        out = {}
        for m in self.modalities:
            X = data.X[m]
            out[f"x_{m}"] = SparseRows(X) if sp.issparse(X) else torch.as_tensor(data.dense(m))
            out[f"mask_{m}"] = torch.as_tensor(np.asarray(data.mask[m], bool))
            if self.params.get("likelihoods", {}).get(m) == "nb":  # the raw counts the NB likelihood scores
                out[f"counts_{m}"] = self._counts_tensor(data, m)
        codes = self._batch_codes(data)
        if (codes < 0).any():
            raise ModelError("some spots have no batch")  # cannot happen for the training data
        out["batch"] = torch.as_tensor(codes)
        return out

    @staticmethod
    def _counts_tensor(data, m):
        import scipy.sparse as sp
        import torch

        from spatialmix.train import SparseRows

        raw = (data.raw or {}).get(m)
        if raw is None or raw.shape != data.X[m].shape:
            raise ModelError(f"count_likelihood='nb' needs the raw counts of {m!r} for every spot "
                             f"(got {None if raw is None else raw.shape}, expected {data.X[m].shape})")
        return SparseRows(raw) if sp.issparse(raw) else torch.as_tensor(np.asarray(raw, np.float32))

    def _infer(self, data, fn, *, batch_size: int = 4096) -> np.ndarray:
        """Run ``fn(xs, masks, batch)`` over ``data`` in chunks, eval mode, on the module's device.

        Only each chunk's rows are densified (a CSR modality stays sparse): an output costs one chunk of dense
        rows in memory, not a dense copy of every modality (issue 16; at the paper's scale that copy was
        ~5 GB per output call)."""
        import torch

        codes = self._batch_codes(data)
        batch = np.where(codes < 0, 0, codes)
        masks = {m: np.asarray(data.mask[m], bool) for m in self.modalities}

        def rows(m, sl):
            x = data.X[m][sl]
            return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)

        def step(sl, device):
            xs = [torch.as_tensor(rows(m, sl), device=device) for m in self.modalities]
            ms = [torch.as_tensor(masks[m][sl], device=device) for m in self.modalities]
            return fn(xs, ms, torch.as_tensor(batch[sl], device=device))

        return self._in_chunks(data.n_obs, step, batch_size=batch_size)

    def _index(self, modality: str) -> int:
        if modality not in self.modalities:
            raise ModelError(f"modality {modality!r} is not in this model (it integrates {self.modalities})")
        return self.modalities.index(modality)

    def _needs_known_batches(self, data, what: str) -> None:
        unknown = sorted(set(data.obs[data.batch_key].astype(str)) - set(map(str, self.batches)))
        if unknown:
            raise ModelError(f"{what} uses the batch latent of each sample, but samples {unknown} were not in "
                             f"the training data ({self.batches}); use the batch-free output instead")

    # -- outputs -------------------------------------------------------------------------------------------
    def get_latent_representation(self, kind: str = "poe", modality: str | None = None, *, data=None) -> np.ndarray:
        """Latent means per spot.

        ``kind="poe"`` (default): the shared product-of-experts embedding; ``"shared"``, ``"private"``,
        ``"batch"``: that latent of ``modality``.
        """
        self._check_trained()
        data = self._resolve_data(data)
        if kind == "poe":
            return self._infer(data, lambda xs, ms, b: self.module.latents(xs, ms, b)["poe"])
        if kind not in ("shared", "private", "batch"):
            raise ParameterError(f"kind must be 'poe', 'shared', 'private' or 'batch', got {kind!r}")
        if modality is None:
            raise ParameterError(f"kind={kind!r} needs modality= (one of {self.modalities})")
        self._index(modality)
        z = self._infer(data, lambda xs, ms, b: self.module.latents(xs, ms, b)[f"{kind}_{modality}"])
        if kind == "batch":  # read from the spot's sample, defined whether or not the modality was measured
            return z
        return measured_only(z, data, [modality], inplace=True)  # an encoder of zero-filled input: not a value

    def get_expert_weights(self, *, data=None) -> pd.DataFrame:
        """How much each modality decides a spot's shared embedding: its expert's share of the product-of-experts
        precision (averaged over the latent dimensions), one column per modality and one for the standard-normal
        prior expert; rows sum to 1 and a modality not measured at a spot has weight 0 there.

        A class marked by one modality only is kept in the PoE when that modality's weight is high on its spots;
        where the other experts outvote it (high weights elsewhere) the class blurs (``docs/models.md``).
        """
        self._check_trained()
        data = self._resolve_data(data)
        w = self._infer(data, lambda xs, ms, b: self.module.expert_weights(xs, ms, b))
        return pd.DataFrame(w, index=data.obs.index.copy(), columns=[*self.modalities, "prior"])

    def get_corrected(self, modality: str, *, data=None) -> np.ndarray:
        """Batch-corrected reconstruction of ``modality``: decoder(PoE + private), no batch latent.

        NaN rows at spots where ``modality`` was not measured: its private latent would be encoded from the
        zero-filled input there, so the value would be invented. Values at those spots come only from
        :meth:`translate` of the modalities that were measured there.
        """
        self._check_trained()
        data = self._resolve_data(data)
        i = self._index(modality)
        out = self._infer(data, lambda xs, ms, b: self.module.reconstruct(xs, ms, b, modality=i, with_batch=False))
        return measured_only(out, data, [modality], inplace=True)  # out is ours

    def get_corrected_pca(self, n_components: int = 50, *, seed: int = 0, data=None,
                          corrected: dict | None = None) -> np.ndarray:
        """The base of the representation for annotation prediction (ours, ``docs/models.md``, "Annotation
        representation"): the first ``n_components`` principal components of every modality's batch-corrected
        features (:meth:`get_corrected`), each feature z-scored over the spots where it was measured, concatenated.
        Predictions use it alone or beside measured features, chosen per fold
        (``spatialmix.evaluate.annotations.representation_candidates``).

        Measured with the benchmark's leave-one-sample-out ensemble, it keeps classes that one modality marks
        better than the shared PoE embedding does (a product of experts lets the other experts outvote a signal
        only one modality carries): LOOCV F1 0.704 vs the PoE's 0.522 on the bundled sample, 0.556 vs 0.485
        on seed 7, 0.627 vs 0.623 on STARmap, each above the best raw single modality; but on simulator seed 11
        0.638 vs the PoE's 0.573, both below raw RNA's 0.769. Rows of spots where any
        modality was not measured are NaN (the corrected features are not defined there); the components are
        fit on the other spots of ``data``. ``corrected``: ``{modality: get_corrected(modality)}`` already
        computed (the results writer passes the layers it has just made), else computed here.
        """
        from sklearn.decomposition import PCA

        self._check_trained()
        data = self._resolve_data(data)
        from spatialmix.lazy import chunked_pca, is_lazy

        if corrected is not None and any(is_lazy(v) for v in corrected.values()):
            # lazy layers (too large for memory, spatialmix.lazy): z-scored and fit block by block
            arrays = [corrected[m] if m in corrected else self.get_corrected(m, data=data) for m in self.modalities]
            return chunked_pca(arrays, n_components, seed=seed)
        # one float32 matrix filled block by block (z-scored with float64 means / SDs): at 20,000 spots x 5,000
        # genes the float64 blocks and their hstack held ~2.4 GB beside the outputs, this holds 0.4 GB
        widths = [len(self.var_names[m]) for m in self.modalities]
        X = np.empty((data.n_obs, sum(widths)), dtype=np.float32)
        col = 0
        for m, w in zip(self.modalities, widths):
            C = corrected[m] if corrected is not None and m in corrected else self.get_corrected(m, data=data)
            C = np.asarray(C, dtype=np.float32)
            mu = np.nanmean(C, axis=0, dtype=np.float64)
            sd = np.nanstd(C, axis=0, dtype=np.float64)
            block = X[:, col:col + w]
            np.subtract(C, mu.astype(np.float32), out=block)
            block /= np.where(sd > 0, sd, 1.0).astype(np.float32)
            col += w
            del C
        ok = np.isfinite(X).all(axis=1)
        k = min(int(n_components), int(ok.sum()) - 1, X.shape[1])
        if k < 1:
            raise ModelError(f"only {int(ok.sum())} spots have every modality ({', '.join(self.modalities)}) "
                             "measured; the corrected-feature PCA needs at least 2")
        out = np.full((data.n_obs, k), np.nan, dtype=np.float32)
        out[ok] = PCA(n_components=k, random_state=seed).fit_transform(X[ok])
        return out

    def get_denoised(self, modality: str, *, data=None) -> np.ndarray:
        """Denoised reconstruction of ``modality``: decoder(PoE + private + batch); NaN rows where
        ``modality`` was not measured (as :meth:`get_corrected`)."""
        self._check_trained()
        data = self._resolve_data(data)
        self._needs_known_batches(data, "the denoised reconstruction")
        i = self._index(modality)
        out = self._infer(data, lambda xs, ms, b: self.module.reconstruct(xs, ms, b, modality=i, with_batch=True))
        return measured_only(out, data, [modality], inplace=True)  # out is ours

    def translate(self, sources: str | Sequence[str], target: str, *, batch_free: bool = False, data=None) -> np.ndarray:
        """Impute ``target`` from the shared latent of ``sources`` (product of their experts).

        With the target's batch latent of each spot's sample (default) the result is on the scale of that
        sample's measurements; ``batch_free=True`` decodes without it (comparable across samples).
        """
        self._check_trained()
        data = self._resolve_data(data)
        sources, src, t, table = self._translation_request(sources, target, batch_free, data)
        out = self._infer(data, lambda xs, ms, b: self.module.translate(xs, ms, b, sources=src, target=t,
                                                                         with_batch=not batch_free,
                                                                         batch_table=table))
        # a spot where none of the sources was measured has only the prior expert: nothing to translate from
        return measured_only(out, data, sources, inplace=True)  # out is ours

    def _translation_request(self, sources, target: str, batch_free: bool, data):
        """Checked ``(source names, source indices, target index, batch table or None)`` of a translation."""
        sources = [sources] if isinstance(sources, str) else list(sources)
        if not sources:
            raise ParameterError("translate needs at least one source modality")
        if target in sources:
            raise ParameterError(f"target {target!r} is also a source; use get_denoised / get_corrected for it")
        src = [self._index(s) for s in sources]
        t = self._index(target)
        table = None
        if not batch_free:
            self._needs_known_batches(data, "translation with the target's batch latent")
            if self.params["batch_input"] != "sample":
                table = self._batch_table(target)
        return sources, src, t, table

    def get_outputs(self, requests, *, data=None) -> dict:
        """Several outputs in one chunked inference pass: each chunk is encoded once and every requested output
        decoded from that encoding (issue 16: writing the demo's results encoded every chunk once per output).

        ``requests``: ``("latent", None)``, ``("private", m)``, ``("corrected", m)``, ``("denoised", m)``,
        ``("expert_weights", None)`` and ``("translation", (sources, target))``. Returns ``{request: value}``
        with ``sources`` as a tuple; each value equals the single-output method's (:meth:`get_latent_representation`,
        :meth:`get_corrected`, :meth:`get_denoised`, :meth:`get_expert_weights`, :meth:`translate`), NaN rows
        included.
        """
        self._check_trained()
        data = self._resolve_data(data)
        keys, module_requests, masks_by = [], [], []
        for what, arg in requests:
            if what == "latent":
                keys.append(("latent", None))
                module_requests.append(("latent",))
                masks_by.append(None)
            elif what in ("private", "corrected", "denoised"):
                if what == "denoised":
                    self._needs_known_batches(data, "the denoised reconstruction")
                keys.append((what, arg))
                module_requests.append((what, self._index(arg)))
                masks_by.append([arg])
            elif what == "expert_weights":
                keys.append(("expert_weights", None))
                module_requests.append(("expert_weights",))
                masks_by.append(None)
            elif what == "translation":
                sources, target = arg
                names, src, t, table = self._translation_request(sources, target, False, data)
                keys.append(("translation", (tuple(names), target)))
                module_requests.append(("translation", src, t, True, table))
                masks_by.append(names)
            else:
                raise ParameterError(f"unknown output request {(what, arg)!r}; one of latent, private, corrected, "
                                     "denoised, expert_weights, translation")
        if not module_requests:
            return {}
        arrays = self._infer(data, lambda xs, ms, b: self.module.outputs(xs, ms, b, module_requests))
        out = {}
        for key, arr, by in zip(keys, arrays, masks_by):
            if key[0] == "expert_weights":
                arr = pd.DataFrame(arr, index=data.obs.index.copy(), columns=[*self.modalities, "prior"])
            elif by is not None:
                arr = measured_only(arr, data, by, inplace=True)  # arr is ours
            out[key] = arr
        return out

    def _batch_table(self, modality: str):
        """Each training sample's mean batch latent of ``modality`` over the spots where it was measured (the
        batch latent of a translation when it reads the features, ``batch_input='sample+features'``; computed
        from the current weights at each call, so it is never stale after more training)."""
        import torch

        if self.data is None:
            raise ModelError("translation with the batch latent of a feature-reading batch encoder needs the "
                             "training data: load the model with MIMA.load(path, data), or use batch_free=True")
        z = self._infer(self.data, lambda xs, ms, b: self.module.latents(xs, ms, b)[f"batch_{modality}"])
        codes = self._batch_codes(self.data)
        ok = np.asarray(self.data.mask[modality], bool) & (codes >= 0)
        table = np.zeros((max(len(self.batches), 1), z.shape[1]), np.float32)
        for b in range(table.shape[0]):
            rows = ok & (codes == b)
            if rows.any():
                table[b] = z[rows].mean(axis=0)
        return torch.as_tensor(table)

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "untrained"
        hidden = ", ".join(f"{m}: {len(self.var_names[m])} -> {self.params['hidden'][m] or 'direct'}"
                           for m in self.modalities)
        return (f"MIMA({state}; {len(self.batches)} batches; latent {self.params['n_latent']}; {hidden}; "
                f"{n_parameters(self.module):,} parameters)")
