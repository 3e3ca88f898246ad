"""scMODAL: alignment of unpaired modalities through feature links (Wang et al., Nat Commun 2025), the
user-facing model.

>>> links = correlation_links(data, "rna", "msi", samples=["P1_S1"])      # from one paired reference section
>>> model = SCMODAL(data, modalities=["rna", "msi"], links={"rna|msi": links},
...                 samples={"rna": ["P1_S1", "P1_S2"], "msi": ["P2_S1", "P2_S2"]})
>>> model.train()                                        # paper defaults: 10,000 steps, 500 spots per dataset
>>> z_rna = model.get_latent_representation("rna")       # E_rna(x_rna), NaN rows where RNA is not measured
>>> msi_from_rna = model.translate("rna", "msi")         # G_msi(E_rna(x_rna))

Every modality is one dataset: the spots where it is measured (optionally only the samples named in
``samples``). Which spot of one dataset is which spot of another is never used in training: every step draws
its own mini-batch from each dataset. The networks and losses are in
:mod:`spatialmix.models._scmodal_module`; ``docs/models.md`` documents the defaults and how the paper's
equations were read.

Why one file of about 520 lines: it is one model class and the links it needs. :class:`SCMODAL`'s methods share
its datasets (``_dataset_rows``), its checked links and their standardisation; its constructor calls
:func:`correlation_links` itself for ``link_reference``, and both key links with ``_pair_key``. The networks and
losses are already apart in ``_scmodal_module``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from spatialmix.errors import ModelError, ParameterError
from spatialmix.params import Params, param

from ._base import BaseModel
from ._scmodal_module import GEO_THRESHOLD, GEOMETRY_LOSSES, HIDDEN_LAYERS, SCMODALModule, n_parameters

class SCMODALParams(Params):
    """scMODAL's parameters, declared once (``spatialmix.params``)."""

    n_latent: int = param(20, "latent size", ge=1)
    n_hidden: int = param(512, "encoder / decoder width", ge=1)
    n_hidden_disc: int = param(256, "discriminator width", ge=1)
    lambda_ae: float = param(10.0, "weight of the autoencoder term (the paper's; 0 switches the term off)", ge=0)
    lambda_anchor: float = param(10.0, "weight of the MNN-anchor term (ours: 10; the paper uses 1)", ge=0)
    lambda_geo: float = param(10.0, "weight of the geometry term (the authors' code's; the paper's text gives 1)",
                              ge=0)
    lambda_gan: float = param(1.0, "weight of the adversarial term (the paper's)", ge=0)
    mnn_k: int = param(30, "neighbours of the MNN anchor search", ge=1)
    geo_threshold: float = param(GEO_THRESHOLD, "cap of each cell's cosine between its input and latent kernel "
                                 "rows in the geometry loss (eq. 6)", gt=0, lt=1)
    sphere: bool = param(False, "put the latents on the unit sphere (ours, the form before issue 17); `false` is "
                         "the paper's unconstrained latent")
    geometry: Literal[tuple(GEOMETRY_LOSSES)] = param(  # type: ignore[valid-type]
        "paper", "the geometry loss: the paper's eqs. 4-6, or our earlier reading (thresholded cosine kernels, "
        "squared difference)")
    hidden_layer: Literal[HIDDEN_LAYERS] = param(  # type: ignore[valid-type]
        "relu", "the encoders' and decoders' hidden layer: `relu` (Linear - ReLU - Linear, the authors' code) or "
        "`batchnorm` (Linear - BatchNorm - LeakyReLU(0.2) - Linear, ours)")
    link_reference: Any = param("", "derive the feature links from the correlation on this sample's paired spots "
                                "(empty: features with the same name)", kind="sample name(s), comma-separated")
    link_top: int = param(100, "links kept per modality pair", ge=1)
    seed: int = param(0, "seeds the weight initialisation", ge=0)


#: scMODAL's parameter defaults, from :class:`SCMODALParams`
DEFAULTS: dict[str, Any] = SCMODALParams.defaults()
#: the column of ``data.obs`` that ``samples=`` refers to
SAMPLE_KEY = "sample"
#: inputs are standardised per feature and clipped to +- this many standard deviations
CLIP = 10.0


def _pair_key(a: str, b: str) -> str:
    return f"{a}|{b}"


def _check_modality(data, m: str, what: str = "modality") -> None:
    if m not in data.modalities:
        raise ParameterError(f"{what} {m!r} is not in the data (it has {data.modalities})")


def same_name_links(data, a: str, b: str) -> list[list[str]]:
    """Links between the features of modalities ``a`` and ``b`` that have the same name (in ``a``'s order).

    Returns ``[[feature_a, feature_b], ...]`` (empty when the modalities share no feature name).
    """
    _check_modality(data, a)
    _check_modality(data, b)
    names_b = set(map(str, data.var_names[b]))
    return [[str(f), str(f)] for f in data.var_names[a] if str(f) in names_b]


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=0).astype(np.float64)


def _zscore(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64)
    sd = x.std(axis=0)
    ok = sd > 0
    return (x - x.mean(axis=0)) / np.where(ok, sd, 1.0), ok


def correlation_links(data, a: str, b: str, *, samples: Sequence[str], top: int = 100,
                      method: str = "spearman", min_corr: float = 0.0,
                      max_per_feature: int | None = None) -> list[list[str]]:
    """Links from the correlation of every feature of ``a`` with every feature of ``b`` on paired spots.

    A user with one (or a few) paired reference sections, where both modalities were measured on the same
    spots, derives feature links there and uses them to align unpaired sections.

    Parameters
    ----------
    samples
        The reference samples (``data.obs["sample"]``); only their spots measured by both modalities are used.
    top
        How many links to keep: the ``top`` most positively correlated feature pairs.
    method
        ``"spearman"`` (rank correlation, default) or ``"pearson"``.
    min_corr
        Keep only pairs whose correlation exceeds this (default 0: positive correlations only).
    max_per_feature
        At most this many links per feature of either modality, taken greedily from the most correlated pair
        down (``1``: one-to-one links). Default ``None``: no limit, the ``top`` pairs as they rank. Without a
        limit the top pairs can crowd onto a few features: on the `small` seed-7 data the 100 top gene-lipid
        pairs of one section used 13 distinct genes (of four sections: 1). Whether one-to-one links align
        better depends on the data (``docs/benchmarks.md``).

    Returns ``[[feature_a, feature_b], ...]``, most correlated first.
    """
    _check_modality(data, a)
    _check_modality(data, b)
    if a == b:
        raise ParameterError(f"correlation_links needs two different modalities, got {a!r} twice")
    if method not in ("spearman", "pearson"):
        raise ParameterError(f"method must be 'spearman' or 'pearson', got {method!r}")
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ParameterError(f"top must be a whole number >= 1, got {top!r}")
    if not -1 <= float(min_corr) < 1:
        raise ParameterError(f"min_corr must be in [-1, 1), got {min_corr!r}")
    if max_per_feature is not None and (isinstance(max_per_feature, bool)
                                        or not isinstance(max_per_feature, (int, np.integer)) or max_per_feature < 1):
        raise ParameterError(f"max_per_feature must be a whole number >= 1 or None (no limit), got {max_per_feature!r}")
    if isinstance(samples, str):
        samples = [samples]
    if SAMPLE_KEY not in data.obs:
        raise ParameterError(f"the data has no {SAMPLE_KEY!r} column in obs to choose reference samples from")
    known = set(map(str, data.obs[SAMPLE_KEY]))
    unknown = sorted(set(map(str, samples)) - known)
    if unknown or not samples:
        raise ParameterError(f"reference samples {unknown or '[]'} are not in the data (it has {sorted(known)})")
    rows = (data.obs[SAMPLE_KEY].astype(str).isin(list(map(str, samples))).to_numpy()
            & np.asarray(data.mask[a], bool) & np.asarray(data.mask[b], bool))
    if rows.sum() < 3:
        raise ParameterError(f"the reference samples {list(samples)} have {int(rows.sum())} spots measured by both "
                             f"{a!r} and {b!r}; correlation links need paired spots (at least 3)")
    xa, xb = data.dense(a)[rows], data.dense(b)[rows]
    if method == "spearman":
        xa, xb = _ranks(xa), _ranks(xb)
    za, ok_a = _zscore(xa)
    zb, ok_b = _zscore(xb)
    corr = za.T @ zb / rows.sum()
    corr[~ok_a, :] = -np.inf  # constant features correlate with nothing
    corr[:, ~ok_b] = -np.inf
    order = np.argsort(-corr, axis=None, kind="stable")
    if max_per_feature is None:
        ia, ib = np.unravel_index(order[:top], corr.shape)
    else:  # greedy, most correlated first, skipping pairs whose features already have max_per_feature links
        used_a, used_b = np.zeros(corr.shape[0], int), np.zeros(corr.shape[1], int)
        picked = []
        for flat in order:
            i, j = divmod(int(flat), corr.shape[1])
            if not corr[i, j] > float(min_corr) or len(picked) == top:
                break
            if used_a[i] < max_per_feature and used_b[j] < max_per_feature:
                used_a[i] += 1
                used_b[j] += 1
                picked.append((i, j))
        ia = np.array([i for i, _ in picked], int)
        ib = np.array([j for _, j in picked], int)
    keep = corr[ia, ib] > float(min_corr)
    return [[str(data.var_names[a][i]), str(data.var_names[b][j])] for i, j in zip(ia[keep], ib[keep])]


class SCMODAL(BaseModel):
    """Encoders to one latent space, GAN alignment, MNN anchors on linked features, geometry preservation.

    Parameters
    ----------
    data
        The per-spot inputs (:class:`spatialmix.data.MultiModalData`); spots need not be paired.
    modalities
        The datasets to align, in order (default: every modality of ``data``; at least two). Consecutive
        modalities are linked (a discriminator and MNN anchors per pair).
    links
        ``{"a|b": [[feature of a, feature of b], ...]}`` for every consecutive pair ``a, b`` of ``modalities``:
        positively correlated features (see :func:`same_name_links`, :func:`correlation_links`). Default:
        features with the same name in both modalities (an error when a pair has none).
    samples
        ``{modality: [sample, ...]}``: train that modality's dataset on these samples only (``obs["sample"]``);
        modalities not named use every sample. Outputs are still given for every spot.
    n_latent
        Size of the shared latent (20, the paper's).
    n_hidden, n_hidden_disc
        Width of the encoder / decoder hidden layer (512) and of the discriminators' two hidden layers (256).
    lambda_ae, lambda_anchor, lambda_geo, lambda_gan
        Loss weights: autoencoder + cross-domain consistency (10, the paper's), MNN anchors (10, ours: the paper
        uses 1; measured in ``docs/models.md``), geometry (10, the authors' code's; the paper's text gives 1),
        adversarial (1). 0 switches a term off.
    mnn_k
        Neighbours searched in each direction for mutual nearest neighbours (30).
    geo_threshold
        Cap of each cell's cosine between its input and latent kernel rows in the geometry loss (eq. 6; 0.975,
        the paper's): above it a cell's geometry counts as preserved and gets no gradient.
    sphere
        Put the latents on the unit sphere (ours, used before issue 17); False (default) gives the paper's
        unconstrained latent (``docs/models.md`` has the measurement).
    geometry
        ``"paper"`` (eqs. 4-6: Gaussian kernels of the Euclidean distances, bandwidths 2p / 2q, each cell's cosine
        between its input and latent kernel rows capped at ``geo_threshold``) or ``"thresholded"`` (ours, used
        before issue 17: thresholded cosine kernels, squared difference).
    link_reference, link_top
        When ``links`` is not given: a sample (or comma-separated samples) with paired spots from which
        :func:`correlation_links` derives the ``link_top`` (100) most correlated feature pairs of every consecutive
        modality pair (what the napari widget and ``[model] link_reference`` in a run configuration use). Empty
        (default): features with the same name.
    seed
        Seeds the weight initialisation (training has its own ``seed`` option).
    """

    name = "scmodal"
    supports = frozenset({"latent", "translations"})
    needs_labels = False
    single_source_translation = True
    train_defaults = {"max_steps": 10000, "batch_size": 500, "lr": 1e-3, "weight_decay": 1e-3,
                      "train_fraction": 1.0}
    Params = SCMODALParams
    defaults = DEFAULTS
    extra_arguments = ("links", "modalities", "samples")

    def __init__(self, data, *, modalities: Sequence[str] | None = None,
                 links: dict[str, Sequence[Sequence[str]]] | None = None,
                 samples: dict[str, Sequence[str]] | None = None, **params):
        p, mods = self._resolve_params(data, params, modalities)
        if len(mods) < 2:
            raise ParameterError(f"SCMODAL aligns at least two different modalities, got {mods}")
        p["modalities"] = mods
        ref = p.get("link_reference") or ""
        ref = [r.strip() for r in ref.split(",") if r.strip()] if isinstance(ref, str) else [str(r) for r in ref]
        if links is None and ref:
            links = {_pair_key(a, b): correlation_links(data, a, b, samples=ref, top=int(p["link_top"]))
                     for a, b in zip(mods[:-1], mods[1:])}
        p["link_reference"] = ",".join(ref)
        p["links"] = self._check_links(data, mods, links)
        p["samples"] = self._check_samples(data, mods, samples)
        super().__init__(data, **p)
        self._build()
        rows = self._dataset_rows(data)
        for k, m in enumerate(mods):
            if len(rows[m]) < 2:
                raise ParameterError(f"the {m!r} dataset has {len(rows[m])} spot(s) (spots where {m} is measured"
                                     f"{' in samples ' + str(p['samples'][m]) if m in p['samples'] else ''}); "
                                     "it needs at least 2")
            x = data.dense(m)[rows[m]].astype(np.float64)
            sd = x.std(axis=0)
            self.module.set_scaling(k, x.mean(axis=0), np.where(sd > 0, sd, 1.0))

    # -- parameter checks ----------------------------------------------------------------------------------
    @staticmethod
    def _check_links(data, mods, links) -> dict[str, list[list[str]]]:
        expected = [_pair_key(a, b) for a, b in zip(mods[:-1], mods[1:])]
        if links is None:
            out = {}
            for a, b in zip(mods[:-1], mods[1:]):
                found = same_name_links(data, a, b)
                if not found:
                    raise ParameterError(
                        f"modalities {a!r} and {b!r} share no feature name, so there are no default links; pass "
                        f"links={{'{a}|{b}': [[feature of {a}, feature of {b}], ...]}} (e.g. from "
                        "spatialmix.models.scmodal.correlation_links on a paired reference sample)")
                out[_pair_key(a, b)] = found
            return out
        if not isinstance(links, dict):
            raise ParameterError(f"links must be a dict {{'a|b': [[feature of a, feature of b], ...]}} for the "
                                 f"consecutive modality pairs {expected}, got {type(links).__name__}")
        extra = sorted(set(links) - set(expected))
        if extra:
            raise ParameterError(f"links given for {extra}, which are not consecutive modality pairs of {mods}; "
                                 f"expected keys {expected}")
        absent = [k for k in expected if k not in links]
        if absent:
            raise ParameterError(f"links are missing for the modality pair(s) {absent}; every consecutive pair "
                                 f"of {mods} needs linked features ({expected})")
        out = {}
        for key in expected:
            a, b = key.split("|")
            pairs = links[key]
            try:
                pairs = [[str(f) for f in pair] for pair in pairs]
            except TypeError:
                raise ParameterError(f"links[{key!r}] must be a list of [feature of {a}, feature of {b}] pairs") from None
            if not pairs:
                raise ParameterError(f"links[{key!r}] is empty; give at least one linked feature pair")
            bad_shape = [pr for pr in pairs if len(pr) != 2]
            if bad_shape:
                raise ParameterError(f"links[{key!r}] entries must be [feature of {a}, feature of {b}] pairs; "
                                     f"got {bad_shape[:3]}")
            for pos, m in ((0, a), (1, b)):
                names = set(map(str, data.var_names[m]))
                unknown = list(dict.fromkeys(pr[pos] for pr in pairs if pr[pos] not in names))
                if unknown:
                    raise ParameterError(f"links[{key!r}] names {len(unknown)} feature(s) that {m!r} does not have: "
                                         f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}")
            out[key] = pairs
        return out

    @staticmethod
    def _check_samples(data, mods, samples) -> dict[str, list[str]]:
        if samples is None:
            return {}
        if not isinstance(samples, dict):
            raise ParameterError(f"samples must be a dict {{modality: [sample, ...]}}, got {type(samples).__name__}")
        unknown_mods = sorted(set(samples) - set(mods))
        if unknown_mods:
            raise ParameterError(f"samples= names modalities {unknown_mods} that the model does not align ({mods})")
        if samples and SAMPLE_KEY not in data.obs:
            raise ParameterError(f"samples= needs a {SAMPLE_KEY!r} column in the data's obs")
        known = list(dict.fromkeys(map(str, data.obs[SAMPLE_KEY]))) if SAMPLE_KEY in data.obs else []
        out = {}
        for m, chosen in samples.items():
            chosen = [chosen] if isinstance(chosen, str) else [str(s) for s in chosen]
            bad = [s for s in chosen if s not in known]
            if bad or not chosen:
                raise ParameterError(f"samples[{m!r}] names samples {bad or '[]'} that are not in the data "
                                     f"(it has {known})")
            out[m] = chosen
        return out

    # -- building ------------------------------------------------------------------------------------------
    def _build(self) -> None:
        import torch

        p = self.params
        torch.manual_seed(int(p["seed"]))
        self.module = SCMODALModule(
            [len(self.var_names[m]) for m in self.modalities], n_latent=p["n_latent"], n_hidden=p["n_hidden"],
            n_hidden_disc=p["n_hidden_disc"], lambda_ae=p["lambda_ae"], lambda_anchor=p["lambda_anchor"],
            lambda_geo=p["lambda_geo"], lambda_gan=p["lambda_gan"], mnn_k=p["mnn_k"],
            geo_threshold=p["geo_threshold"], clip=CLIP,
            # models saved before issue 17 have neither key: they were trained with latents on the sphere and the
            # thresholded geometry loss, so they are rebuilt that way (not with today's defaults)
            sphere=p.get("sphere", True), geometry=p.get("geometry", "thresholded"),
            # models saved before the option existed were built with BatchNorm
            hidden_layer=p.get("hidden_layer", "batchnorm"))

    # -- datasets ------------------------------------------------------------------------------------------
    def _dataset_rows(self, data) -> dict[str, np.ndarray]:
        """Positions of the spots of each modality's training dataset (measured, in the chosen samples)."""
        out = {}
        for m in self.modalities:
            keep = np.asarray(data.mask[m], bool).copy()
            chosen = self.params.get("samples", {}).get(m)
            if chosen is not None:
                keep &= data.obs[SAMPLE_KEY].astype(str).isin(chosen).to_numpy()
            out[m] = np.flatnonzero(keep)
        return out

    def datasets(self) -> dict[str, pd.Index]:
        """The spots (``obs`` names) of each modality's training dataset."""
        if self.data is None:
            raise ModelError("this model was loaded without data; pass data to SCMODAL.load(path, data)")
        return {m: self.data.obs.index[r] for m, r in self._dataset_rows(self.data).items()}

    def _link_columns(self, m: str, key: str, pos: int) -> np.ndarray:
        names = [pr[pos] for pr in self.params["links"][key]]
        return pd.Index(self.var_names[m]).get_indexer(names)

    def _training_groups(self) -> dict[str, dict]:
        import torch

        if self.data is None:
            raise ModelError("this model was loaded without data; pass data to SCMODAL.load(path, data) to train it")
        self.check_data(self.data)
        data = self.data
        rows = self._dataset_rows(data)
        mods = self.modalities
        groups = {}
        for k, m in enumerate(mods):
            x = torch.as_tensor(data.dense(m)[rows[m]])
            mean = getattr(self.module, f"mean_{k}").detach().cpu()
            std = getattr(self.module, f"std_{k}").detach().cpu()
            g = {"x": ((x - mean) / std).clamp(-CLIP, CLIP)}
            for name, j, pos in (("link_next", k + 1, 0), ("link_prev", k - 1, 1)):
                if not 0 <= j < len(mods):
                    continue
                key = _pair_key(m, mods[j]) if pos == 0 else _pair_key(mods[j], m)
                lx = x[:, torch.as_tensor(self._link_columns(m, key, pos))].double()
                sd = lx.std(dim=0, unbiased=False)
                lx = (lx - lx.mean(dim=0)) / torch.where(sd > 0, sd, torch.ones_like(sd))
                g[name] = lx.clamp(-CLIP, CLIP).float()
            groups[f"d{k}"] = g
        self._selection_set = self._selection_subsample(groups)
        return groups

    # -- checkpoint selection (ours; docs/models.md "Training length") ------------------------------------------
    #: spots per dataset the selection criterion is computed on, steps before the first score and between two
    #: scores, scores without improvement before training stops
    SELECTION_SPOTS = 2000
    # 250 since the ReLU hidden layer (1,000 with BatchNorm, where the earliest scores picked too early weights on
    # the bundled sample); measured in docs/models.md
    selection_start_steps = 250
    selection_every_steps = 250
    selection_patience = 8

    def _selection_subsample(self, groups) -> list[dict]:
        """Per consecutive dataset pair: a fixed subsample of each dataset's standardised features, the mutual
        nearest neighbours of their linked features (the anchors, as training finds them) and random pairs."""
        import torch

        from ._scmodal_module import mnn_pairs

        gen = torch.Generator().manual_seed(0)
        sub = {}
        for g, t in groups.items():
            n = t["x"].shape[0]
            sub[g] = torch.randperm(n, generator=gen)[: self.SELECTION_SPOTS]
        out = []
        for k in range(len(self.modalities) - 1):
            a, b = f"d{k}", f"d{k + 1}"
            ia, ib = sub[a], sub[b]
            anchors = mnn_pairs(groups[a]["link_next"][ia], groups[b]["link_prev"][ib], self.params["mnn_k"])
            rand = torch.stack([torch.randint(len(ia), (20000,), generator=gen),
                                torch.randint(len(ib), (20000,), generator=gen)], dim=1)
            out.append({"k": k, "xa": groups[a]["x"][ia], "xb": groups[b]["x"][ib], "anchors": anchors, "random": rand})
        return out

    def selection_criterion(self) -> float:
        """Unsupervised score of the current alignment (lower is better), used by the training engine to keep the
        best weights: per linked dataset pair, the mean squared latent distance of the anchor pairs (mutual nearest
        neighbours of the linked features on a fixed subsample of up to 2,000 spots per dataset) over that of
        random cross-dataset pairs, averaged over the pairs. 1 means the anchors are no closer than chance.
        Needs neither labels nor paired spots."""
        import torch

        sets = getattr(self, "_selection_set", None)
        if not sets:
            return float("nan")
        module = self.module
        device = next(module.parameters()).device
        was_training = module.training
        module.eval()
        ratios = []
        with torch.no_grad():
            for s in sets:
                if len(s["anchors"]) == 0:
                    continue
                za = module.encoders[s["k"]](s["xa"].to(device))
                zb = module.encoders[s["k"] + 1](s["xb"].to(device))
                anc, rnd = s["anchors"].to(device), s["random"].to(device)
                d_anchor = ((za[anc[:, 0]] - zb[anc[:, 1]]) ** 2).sum(dim=1).mean()
                d_random = ((za[rnd[:, 0]] - zb[rnd[:, 1]]) ** 2).sum(dim=1).mean()
                ratios.append(float(d_anchor / d_random.clamp_min(1e-12)))
        module.train(was_training)
        return float(np.mean(ratios)) if ratios else float("nan")

    # -- outputs -------------------------------------------------------------------------------------------
    def _index(self, modality: str) -> int:
        if modality not in self.modalities:
            raise ParameterError(f"modality {modality!r} is not in this model (it aligns {self.modalities})")
        return self.modalities.index(modality)

    def _infer(self, data, source: str, fn, n_out: int, *, batch_size: int = 4096) -> np.ndarray:
        """``fn(x)`` on the spots of ``data`` where ``source`` is measured (chunks, eval mode, no_grad, on the
        module's device); NaN rows elsewhere."""
        import torch

        rows = np.flatnonzero(np.asarray(data.mask[source], bool))
        x_all = data.dense(source)
        out = np.full((data.n_obs, n_out), np.nan, np.float32)
        if len(rows):
            out[rows] = self._in_chunks(
                len(rows), lambda sl, device: fn(torch.as_tensor(x_all[rows[sl]], device=device)), batch_size=batch_size)
        return out

    def get_latent_representation(self, modality: str | None = None, *, data=None) -> np.ndarray:
        """Latent of every spot: with ``modality``, ``E_modality(x)`` (NaN rows where it is not measured);
        without, the mean over the modalities measured at each spot (NaN where none is)."""
        self._check_trained()
        data = self._resolve_data(data)
        n_latent = self.params["n_latent"]
        if modality is not None:
            k = self._index(modality)
            return self._infer(data, modality, lambda x: self.module.encode(k, x), n_latent)
        zs = np.stack([self._infer(data, m, lambda x, k=k: self.module.encode(k, x), n_latent)
                       for k, m in enumerate(self.modalities)])
        seen = ~np.isnan(zs[..., 0])
        total = np.where(seen[..., None], zs, 0.0).sum(axis=0)
        count = seen.sum(axis=0)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)

    def translate(self, sources: str | Sequence[str], target: str, *, data=None) -> np.ndarray:
        """``G_target(E_source(x_source))`` for every spot, in the target's feature units (the inverse of the
        per-feature standardisation); NaN rows where the source is not measured. One source only."""
        self._check_trained()
        data = self._resolve_data(data)
        srcs = [sources] if isinstance(sources, str) else list(sources)
        if len(srcs) != 1:
            raise ParameterError(f"SCMODAL translates from a single source modality, got {srcs}; "
                                 "call translate once per source")
        source = srcs[0]
        if source == target:
            raise ParameterError(f"target {target!r} is also the source; SCMODAL translates between modalities")
        s, t = self._index(source), self._index(target)
        return self._infer(data, source, lambda x: self.module.translate(s, t, x), len(self.var_names[target]))

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "untrained"
        links = ", ".join(f"{k}: {len(v)}" for k, v in self.params["links"].items())
        return (f"SCMODAL({state}; {' -> '.join(self.modalities)}; latent {self.params['n_latent']}; "
                f"links {links}; {n_parameters(self.module):,} parameters)")
