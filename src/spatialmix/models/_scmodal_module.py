"""The scMODAL networks and losses as pure ``torch.nn`` modules (no data handling, no training loop).

scMODAL (Wang et al., Nat Commun 2025) aligns K unpaired datasets (one per modality) in one latent space:

- one encoder ``E_k`` and one decoder ``G_k`` per dataset (features <-> shared latent),
- one discriminator per consecutive dataset pair ``(k, k+1)`` on the latents (JS-divergence GAN: a standard
  binary cross-entropy discriminator; the encoders are trained to fool it),
- the autoencoder and cross-domain consistency loss (eq. 2): reconstruction ``G_k(E_k(x_k)) ~ x_k`` and the
  latent cycle ``E_j(G_j(E_k(x_k))) ~ E_k(x_k)`` for every consecutive pair in both directions,
- the anchor loss (eq. 3): mutual nearest neighbours (MNN) between the two datasets of a pair, found in every
  mini-batch on the *linked features* by angular (cosine) distance, pulled together in the latent space,
- geometry preservation (eqs. 4-6): each cell's row of Gaussian-kernel similarities to the other cells of its
  mini-batch points the same way in the latent space as in the input space (cosine, capped at 0.975).

Everything is computed on the module's device with B x B matrices (matrix products of row-normalised
vectors); no B x B x D tensor is ever built. ``docs/models.md`` documents how each equation was read.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

#: the cap on each cell's cosine between its input and latent kernel vectors in the geometry loss (paper: 0.975)
GEO_THRESHOLD = 0.975


def gaussian_kernel(x: torch.Tensor) -> torch.Tensor:
    """Eqs. 4-5: ``K_ij = exp(-||x_i - x_j||^2 / (2 d))`` with ``d`` the number of columns of ``x`` (``p`` input
    features or ``q`` latent dimensions), i.e. the squared distance averaged over the coordinates.

    Built from one ``B x B`` Gram matrix (``|x_i|^2 + |x_j|^2 - 2 x_i.x_j``, clamped at 0 against rounding);
    no ``B x B x d`` tensor of differences is formed."""
    sq = (x * x).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
    return torch.exp(-d2 / (2.0 * x.shape[1]))


def geometry_loss(x: torch.Tensor, z: torch.Tensor, threshold: float = GEO_THRESHOLD) -> torch.Tensor:
    """Eq. 6, geometry preservation within one dataset's mini-batch:
    ``-(1/B) sum_i min(cos(K^x_i, K^z_i), threshold)``, where ``K^x_i`` / ``K^z_i`` are row ``i`` of the input's
    and the latent's Gaussian kernel matrices (:func:`gaussian_kernel`, bandwidths ``2p`` and ``2q``).

    Each cell's vector of kernel similarities to the other cells of the batch should point the same way in the
    latent space as in the input space; the cap stops the gradient once a cell's cosine exceeds ``threshold``,
    so the latent space need not copy the input geometry exactly. Lowest value ``-threshold``. Only ``B x B``
    matrices are formed. (Until issue 17 this was our reading: thresholded kernel values of the cosine
    distance and a squared difference.)"""
    kx = gaussian_kernel(x)
    kz = gaussian_kernel(z)
    cos = F.cosine_similarity(kx, kz, dim=1, eps=1e-6)
    return -cos.clamp(max=threshold).mean()


def cosine_kernel(x: torch.Tensor) -> torch.Tensor:
    """``exp(-(1 - cos_ij)^2 / 2)`` of the rows' cosine similarity (the kernel of our earlier reading, kept as
    ``geometry="thresholded"``); one ``B x B`` matrix product of the row-normalised inputs."""
    u = F.normalize(x, dim=1, eps=1e-8)
    cos = (u @ u.T).clamp(-1.0, 1.0)
    return torch.exp(-((1.0 - cos) ** 2) / 2.0)


def thresholded_geometry_loss(x: torch.Tensor, z: torch.Tensor, threshold: float = GEO_THRESHOLD) -> torch.Tensor:
    """OURS (``geometry="thresholded"``, the form used before issue 17): the cosine kernels
    (:func:`cosine_kernel`) of the inputs and of the latents, each thresholded (values at or below ``threshold``
    become 0), and the mean squared difference over the pairs ``i != j``. Very similar inputs keep their
    similarity and latents may not be very similar unless their inputs are."""
    sx, sz = cosine_kernel(x), cosine_kernel(z)
    wx = torch.where(sx > threshold, sx, torch.zeros_like(sx))
    wz = torch.where(sz > threshold, sz, torch.zeros_like(sz))
    n = x.shape[0]
    diff = (wx - wz) ** 2
    diff = diff - torch.diag_embed(torch.diagonal(diff))
    return diff.sum() / max(n * (n - 1), 1)


GEOMETRY_LOSSES = {"paper": geometry_loss, "thresholded": thresholded_geometry_loss}


def mnn_pairs(a: torch.Tensor, b: torch.Tensor, k: int = 30) -> torch.Tensor:
    """Mutual nearest neighbours between the rows of ``a`` and ``b`` by cosine similarity.

    Row ``i`` of ``a`` and row ``j`` of ``b`` are an anchor when ``j`` is among the ``k`` most similar rows
    of ``b`` to ``a_i`` and ``i`` among the ``k`` most similar rows of ``a`` to ``b_j``. Returns a
    ``(n_anchors, 2)`` long tensor of ``(i, j)``, on the inputs' device.
    """
    sim = F.normalize(a, dim=1, eps=1e-8) @ F.normalize(b, dim=1, eps=1e-8).T
    ka, kb = min(k, b.shape[0]), min(k, a.shape[0])
    near_ab = torch.zeros_like(sim, dtype=torch.bool)
    near_ab.scatter_(1, sim.topk(ka, dim=1).indices, True)  # for each a_i: its k nearest b
    near_ba = torch.zeros_like(sim, dtype=torch.bool)
    near_ba.scatter_(0, sim.topk(kb, dim=0).indices, True)  # for each b_j: its k nearest a
    return torch.nonzero(near_ab & near_ba)


def anchor_loss(za: torch.Tensor, zb: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Eq. 3: ``(1 / |A|) sum over anchors (i, j) of (1/q) ||z_i - z_j||^2`` (q latent dimensions), 0 without
    anchors. The normalisation by the number of anchors ``|A|`` is the authors' code's (``sum(S * D) / sum(S)``),
    so the term does not grow with the batch size."""
    if pairs.shape[0] == 0:
        return za.sum() * 0.0
    return ((za[pairs[:, 0]] - zb[pairs[:, 1]]) ** 2).mean()


def cycle_loss(z: torch.Tensor, z_cycled: torch.Tensor) -> torch.Tensor:
    """Eq. 2's cross-domain term: ``(1/B) sum_i (1/q) ||E_j(G_j(z_i)) - z_i||^2``."""
    return ((z_cycled - z) ** 2).mean()


#: the hidden layer of the encoders and decoders: the authors' code's (Linear - ReLU - Linear) or ours before
#: this option existed (Linear - BatchNorm - LeakyReLU(0.2) - Linear)
HIDDEN_LAYERS = ("relu", "batchnorm")


def _mlp(n_in: int, n_hidden: int, n_out: int, hidden_layer: str) -> nn.Sequential:
    if hidden_layer == "relu":
        return nn.Sequential(nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_out))
    if hidden_layer == "batchnorm":
        return nn.Sequential(nn.Linear(n_in, n_hidden), nn.BatchNorm1d(n_hidden), nn.LeakyReLU(0.2),
                             nn.Linear(n_hidden, n_out))
    raise ValueError(f"unknown hidden_layer {hidden_layer!r}; one of {HIDDEN_LAYERS}")


class Encoder(nn.Module):
    """Features -> hidden (``hidden_layer``) -> latent, on the unit sphere when ``sphere`` (ours)."""

    def __init__(self, n_features: int, n_latent: int, n_hidden: int, sphere: bool, hidden_layer: str):
        super().__init__()
        self.net = _mlp(n_features, n_hidden, n_latent, hidden_layer)
        self.sphere = bool(sphere)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return F.normalize(z, dim=1, eps=1e-8) if self.sphere else z


class Discriminator(nn.Module):
    """Latent -> logit that the latent comes from the first dataset of its pair."""

    def __init__(self, n_latent: int, n_hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_latent, n_hidden), nn.LeakyReLU(0.2), nn.Linear(n_hidden, n_hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(n_hidden, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(1)


class SCMODALModule(nn.Module):
    """Encoders, decoders and pair discriminators of K datasets, with scMODAL's losses.

    Training batches hold, for dataset ``k`` (group ``d{k}``): ``d{k}/x`` (standardised features),
    ``d{k}/link_next`` (its linked features to dataset ``k+1``) and ``d{k}/link_prev`` (to ``k-1``).
    The per-feature means and standard deviations of each dataset are buffers (saved with the weights), so
    new data is standardised exactly as the training data was.
    """

    def __init__(self, n_features: Sequence[int], *, n_latent: int = 20, n_hidden: int = 512,
                 n_hidden_disc: int = 256, lambda_ae: float = 10.0, lambda_anchor: float = 10.0,
                 lambda_geo: float = 10.0, lambda_gan: float = 1.0, mnn_k: int = 30,
                 geo_threshold: float = GEO_THRESHOLD, clip: float = 10.0, sphere: bool = False,
                 geometry: str = "paper", hidden_layer: str = "relu"):
        super().__init__()
        self.n_datasets = len(n_features)
        self.n_latent = n_latent
        self.lambdas = {"ae": float(lambda_ae), "anchor": float(lambda_anchor), "geo": float(lambda_geo),
                        "gan": float(lambda_gan)}
        self.mnn_k = int(mnn_k)
        self.geo_threshold = float(geo_threshold)
        self.geometry = GEOMETRY_LOSSES[geometry]
        self.clip = float(clip)
        self.encoders = nn.ModuleList([Encoder(d, n_latent, n_hidden, sphere, hidden_layer) for d in n_features])
        self.decoders = nn.ModuleList([_mlp(n_latent, n_hidden, d, hidden_layer) for d in n_features])
        self.discriminators = nn.ModuleList([Discriminator(n_latent, n_hidden_disc)
                                             for _ in range(self.n_datasets - 1)])
        for k, d in enumerate(n_features):
            self.register_buffer(f"mean_{k}", torch.zeros(d))
            self.register_buffer(f"std_{k}", torch.ones(d))

    # -- scaling -------------------------------------------------------------------------------------------
    def set_scaling(self, k: int, mean: torch.Tensor, std: torch.Tensor) -> None:
        getattr(self, f"mean_{k}").copy_(torch.as_tensor(mean, dtype=torch.float32))
        getattr(self, f"std_{k}").copy_(torch.as_tensor(std, dtype=torch.float32))

    def standardise(self, k: int, x: torch.Tensor) -> torch.Tensor:
        return ((x - getattr(self, f"mean_{k}")) / getattr(self, f"std_{k}")).clamp(-self.clip, self.clip)

    def unstandardise(self, k: int, x: torch.Tensor) -> torch.Tensor:
        return x * getattr(self, f"std_{k}") + getattr(self, f"mean_{k}")

    # -- inference -----------------------------------------------------------------------------------------
    def encode(self, k: int, x_raw: torch.Tensor) -> torch.Tensor:
        """Latent of raw (unstandardised) features of dataset ``k``."""
        return self.encoders[k](self.standardise(k, x_raw))

    def translate(self, source: int, target: int, x_raw: torch.Tensor) -> torch.Tensor:
        """``G_target(E_source(x))`` in the target's feature units."""
        return self.unstandardise(target, self.decoders[target](self.encode(source, x_raw)))

    # -- training ------------------------------------------------------------------------------------------
    def configure_optimizers(self, lr: float, weight_decay: float) -> dict[str, torch.optim.Optimizer]:
        gen = list(self.encoders.parameters()) + list(self.decoders.parameters())
        return {"disc": torch.optim.Adam(self.discriminators.parameters(), lr=lr, weight_decay=weight_decay),
                "main": torch.optim.Adam(gen, lr=lr, weight_decay=weight_decay)}

    def phases(self, epoch: int, step: int) -> list[tuple[str, str]]:
        """Every step: one discriminator update, then one encoder / decoder update."""
        return [("disc", "disc"), ("gen", "main")]

    def _gan_terms(self, zs: list[torch.Tensor], *, fool: bool) -> torch.Tensor:
        """BCE of every pair discriminator: dataset k labelled 1, dataset k+1 labelled 0 (flipped to fool)."""
        losses = []
        for k, disc in enumerate(self.discriminators):
            la, lb = disc(zs[k]), disc(zs[k + 1])
            ya, yb = (0.0, 1.0) if fool else (1.0, 0.0)
            losses.append(F.binary_cross_entropy_with_logits(la, torch.full_like(la, ya))
                          + F.binary_cross_entropy_with_logits(lb, torch.full_like(lb, yb)))
        return torch.stack(losses).mean()

    def forward(self, batch: dict[str, torch.Tensor], phase: str | None = None):
        xs = [batch[f"d{k}/x"] for k in range(self.n_datasets)]
        if phase == "disc":
            with torch.no_grad():
                zs = [enc(x) for enc, x in zip(self.encoders, xs)]
            loss = self._gan_terms(zs, fool=False)
            return loss, {"disc": loss}
        if phase not in (None, "gen"):
            raise ValueError(f"unknown phase {phase!r}")
        zs = [enc(x) for enc, x in zip(self.encoders, xs)]
        recon = torch.stack([F.mse_loss(dec(z), x) for dec, z, x in zip(self.decoders, zs, xs)]).mean()
        cycle, anchor = [], []
        for k in range(self.n_datasets - 1):
            for a, b in ((k, k + 1), (k + 1, k)):  # E_b(G_b(E_a(x_a))) ~ E_a(x_a)
                cycle.append(cycle_loss(zs[a], self.encoders[b](self.decoders[b](zs[a]))))
            pairs = mnn_pairs(batch[f"d{k}/link_next"], batch[f"d{k + 1}/link_prev"], self.mnn_k)
            anchor.append(anchor_loss(zs[k], zs[k + 1], pairs))
        cycle_l = torch.stack(cycle).mean()
        anchor_l = torch.stack(anchor).mean()
        geo = torch.stack([self.geometry(x, z, self.geo_threshold) for x, z in zip(xs, zs)]).mean()
        gan = self._gan_terms(zs, fool=True)
        lam = self.lambdas
        total = lam["ae"] * (recon + cycle_l) + lam["anchor"] * anchor_l + lam["geo"] * geo + lam["gan"] * gan
        return total, {"recon": recon, "cycle": cycle_l, "anchor": anchor_l, "geo": geo, "gan": gan}


def n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
