"""RNA counts and MSI spectra of one simulated sample (the slow part; :mod:`.scene` has the geometry)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ._random import DATASET, S_MSI_SPECTRA, S_RNA, SAMPLE, rng_for, sigmoid
from .biology import N_PRIVATE, N_SHARED, Biology
from .scene import TIC_SCALE, SampleScene, msi_yield
from .tissue import spot_subpoints

REFERENCE_LIBRARY = 1.0e4  # truth RNA means are expected counts per 10,000 UMIs (batch-free)


def round_float16(a: np.ndarray, bits: int = 8) -> np.ndarray:
    """Non-negative values as float16 rounded to ``bits`` significant bits (0.4% steps for 8): the truth
    matrices compress ~20% better and the precision is far below any effect in the data."""
    u = np.clip(a, 0, 65504).astype(np.float16).view(np.uint16).astype(np.uint32)
    drop = 11 - bits
    u = ((u + (1 << (drop - 1))) >> drop) << drop
    return np.minimum(u, 0x7BFF).astype(np.uint16).view(np.float16)


@dataclass
class SpotTruth:
    """Batch-free signals at the in-tissue spots (filtered-matrix order)."""

    barcodes: np.ndarray
    x_um: np.ndarray
    y_um: np.ndarray
    region: np.ndarray  # class index
    factors: np.ndarray  # shared latent factors (n, 8)
    private: dict[str, np.ndarray]  # private factors per modality
    cellularity: np.ndarray


def _cellularity(w, sx: np.ndarray, sy: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Nuclei per spot relative to a typical epithelium (3 per 1000 um^2), from the histology fields."""
    dens = w.sample(w.morph["density"], sx, sy)
    return np.clip((dens * t).mean(1) / 3.0, 0.05, None)


def spot_truth(scene: SampleScene, bio: Biology) -> SpotTruth:
    spots = scene.in_tissue
    w = scene.tissue.world
    x, y = spots.x_um.to_numpy(), spots.y_um.to_numpy()
    sx, sy = spot_subpoints(x, y)
    t = w.sample(w.tissue, sx, sy, cval=0.0) + 1e-3
    z = (w.sample(w.z, sx, sy) * t[..., None]).sum(1) / t.sum(1)[:, None]
    priv = {}
    for mod in N_PRIVATE:
        p = w.sample(w.private[mod], sx, sy, coarse=True)
        priv[mod] = ((p * t[..., None]).sum(1) / t.sum(1)[:, None]).astype(np.float32)
    cell = _cellularity(w, sx, sy, t - 1e-3)
    names = list(bio.class_names)
    region = np.array([names.index(r) for r in spots.region], dtype=np.int16)
    return SpotTruth(spots.barcode.to_numpy(), x, y, region, z.astype(np.float32), priv, cell.astype(np.float32))


# ---------------------------------------------------------------------------------------------- RNA
@dataclass
class RNAResult:
    counts: sp.csr_matrix  # spots x genes, int32, filtered-matrix order
    mean: np.ndarray  # batch-free expected counts per 10k UMIs, float16 (spots x genes)
    library_factor: float
    gene_batch: np.ndarray  # multiplicative batch factor per gene


def _rna_batch(bio: Biology, seed: int, scene: SampleScene) -> tuple[float, np.ndarray]:
    G = bio.spec.n_genes
    rng_p = rng_for(seed, DATASET, 100 + scene.patient)
    rng_s = rng_for(seed, SAMPLE, scene.index, S_RNA, 1)
    log_b = rng_p.normal(0, 0.3, G) + rng_s.normal(0, 0.2, G)
    lib = float(bio.spec.library_size * np.exp(rng_s.normal(0, 0.35)))
    return lib, np.exp(log_b).astype(np.float32)


def simulate_rna(scene: SampleScene, bio: Biology, *, chunk: int | None = None) -> RNAResult:
    """Negative-binomial counts of the in-tissue spots.

    Expression = softmax over genes of a random 2-layer map of (shared, RNA-private) latents plus
    class-marker radial-basis terms, averaged over the spot disc; counts = NB(library x cellularity x
    expression x gene batch factor).
    """
    rng = rng_for(scene.seed, SAMPLE, scene.index, S_RNA)
    w = scene.tissue.world
    spots = scene.in_tissue
    x, y = spots.x_um.to_numpy(), spots.y_um.to_numpy()
    n, G = len(spots), bio.spec.n_genes
    lib, gene_batch = _rna_batch(bio, scene.seed, scene)
    theta = bio.gene_dispersion
    chunk = chunk or max(1, int(6_000_000 // (7 * G)))
    blocks, means = [], np.empty((n, G), dtype=np.float16)
    for s in range(0, n, chunk):
        sl = slice(s, min(n, s + chunk))
        sx, sy = spot_subpoints(x[sl], y[sl])
        t = w.sample(w.tissue, sx, sy, cval=0.0) + 1e-3  # (m, 7)
        z = w.sample(w.z, sx, sy)
        p = w.sample(w.private["rna"], sx, sy, coarse=True)
        m = t.shape[0]
        zf = z.reshape(-1, N_SHARED)
        logit = bio.rna_net(np.concatenate([zf, p.reshape(-1, N_PRIVATE["rna"])], axis=1)) + bio.gene_base
        d2 = ((zf[:, None, :] - bio.class_means[None]) ** 2).sum(-1)
        rbf = np.exp(-d2 / bio.marker_width).astype(np.float32)
        logit[:, bio.marker_gene] += bio.marker_beta * rbf[:, bio.marker_class]
        logit -= logit.max(1, keepdims=True)
        e = np.exp(logit)
        e /= e.sum(1, keepdims=True)
        wts = (t / t.sum(1, keepdims=True)).reshape(-1, 1)
        prob = (e * wts).reshape(m, 7, G).sum(1)  # (m, G), rows sum to 1
        means[sl] = round_float16(prob * REFERENCE_LIBRARY)
        cellularity = _cellularity(w, sx, sy, t - 1e-3)
        size = lib * cellularity**0.6 * np.exp(rng.normal(0, 0.25, m))
        q = prob * gene_batch
        mu = q / q.sum(1, keepdims=True) * size[:, None]
        lam = rng.gamma(theta, 1.0 / theta, size=(m, G)) * mu
        counts = rng.poisson(lam).astype(np.int32)
        blocks.append(sp.csr_matrix(counts))
    mat = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, G), dtype=np.int32)
    mat.sort_indices()
    return RNAResult(mat.astype(np.int32), means, lib, gene_batch)


# ---------------------------------------------------------------------------------------------- MSI
class MSISimulator:
    """Spectra of one sample's MSI raster, pixel by pixel, with per-sample batch effects.

    Lipid composition = softmax of a random 2-layer map of (shared, MSI-private) latents; each species
    gives M, M+1, M+2 peaks. Batch effects: the intensity factor and baseline in the scene's TIC, a smooth
    m/z-dependent multiplicative drift, pixel noise, detection dropouts and a mass calibration shift.
    Every spectrum sums exactly to the scene's TIC of that pixel.
    """

    def __init__(self, scene: SampleScene, bio: Biology):
        self.scene, self.bio = scene, bio
        spec = bio.spec
        rng = rng_for(scene.seed, SAMPLE, scene.index, S_MSI_SPECTRA, 0)
        lip = bio.lipids
        self.mz_true = lip["mz"]
        self.feat_lipid = lip["lipid"]
        self.feat_ratio = lip["ratio"].astype(np.float32)
        u = (self.mz_true - 700.0) / 300.0
        c1, c2 = rng.normal(0, 0.5), rng.normal(0, 0.4)
        c3, k, ph = rng.uniform(0.1, 0.3), rng.uniform(1, 2.5), rng.uniform(0, 2 * np.pi)
        self.drift = np.exp(c1 * u + c2 * (u**2 - 1 / 3) + c3 * np.sin(np.pi * (u + 1) * k + ph)).astype(np.float32)
        self.ppm_shift = float(rng.choice([-1, 1]) * rng.uniform(1.5, 5.0))
        # detection limit: keep ~msi_keep_target of the features of a typical tissue pixel
        base_share = self._shares(np.zeros((1, bio.msi_net.W1.shape[1]), np.float32))[0]
        self.log_det = float(np.log(TIC_SCALE) + np.quantile(np.log(base_share), 1 - spec.msi_keep_target))
        self.mode = scene.msi_mode
        if self.mode == "continuous":
            n_feat = spec.msi_cont_features or self.mz_true.size
            top = np.sort(np.argsort(-base_share, kind="stable")[:n_feat])
            noise_mz = np.sort(rng.uniform(400, 1000, spec.msi_cont_noise_channels))
            axis = np.concatenate([self.mz_true[top] * (1 + self.ppm_shift * 1e-6), noise_mz])
            order = np.argsort(axis, kind="stable")
            self.axis = axis[order].astype(np.float32)
            pos = np.empty_like(order)
            pos[order] = np.arange(order.size)
            self.feat_channel = pos[: top.size]
            self.feat_index = top
            self.noise_channel = pos[top.size :]
            self.noise_weight = rng.exponential(1.0, spec.msi_cont_noise_channels).astype(np.float32)
        else:
            self.axis = None

    def _shares(self, h: np.ndarray) -> np.ndarray:
        """Relative intensity of every feature (rows sum to 1) for hidden states ``h``."""
        L = self.bio.spec.n_lipids
        logit = self.bio.msi_net.output(h, cols=slice(1, 1 + L)) + self.bio.lipid_base
        logit -= logit.max(1, keepdims=True)
        a = np.exp(logit)
        a /= a.sum(1, keepdims=True)
        share = a[:, self.feat_lipid] * self.feat_ratio
        return share / share.sum(1, keepdims=True)

    def truth_at_spots(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Batch-free feature intensities at spots (no intensity factor, drift, noise or dropouts)."""
        sx, sy = spot_subpoints(x, y)
        S, _, h = msi_yield(self.scene.tissue, self.bio, sx, sy)
        out = np.empty((x.size, self.mz_true.size), dtype=np.float16)
        for s in range(0, x.size, 256):
            sl = slice(s, s + 256)
            out[sl] = round_float16(TIC_SCALE * S[sl, None] * self._shares(h[sl]))
        return out

    def spectra(self, chunk: int = 256) -> Iterator[tuple[int, list[tuple[np.ndarray, np.ndarray]]]]:
        """Yield ``(first_pixel, [(mz, intensity), ...])`` chunks in row-major pixel order (y, then x)."""
        sig_all = self.scene.msi_signal
        n = sig_all["tic"].size
        rng = rng_for(self.scene.seed, SAMPLE, self.scene.index, S_MSI_SPECTRA, 1)
        spec = self.bio.spec
        drift = self.drift
        for s in range(0, n, chunk):
            sl = slice(s, min(n, s + chunk))
            m = sl.stop - sl.start
            sig = sig_all["signal"][sl]
            bg = sig_all["background"][sl]
            base = sig_all["baseline"][sl]
            tic = sig_all["tic"][sl]
            share = self._shares(sig_all["hidden"][sl])
            # detection dropouts (weak peaks often missing) and a few random ones
            p_keep = 0.97 * sigmoid((np.log(sig[:, None] * share + 1e-30) - self.log_det) / 0.35)
            keep = rng.random(share.shape) < p_keep
            obs = share.astype(np.float64) * drift * np.exp(rng.normal(0, 0.12, share.shape)) * keep
            tot = obs.sum(1)
            has = tot > 0
            obs[has] /= tot[has, None]
            bg = np.where(has, bg, bg + sig)  # nothing detected: the signal is background
            sig = np.where(has, sig, 0.0)
            out = []
            if self.mode == "continuous":
                C = self.axis.size
                inten = np.zeros((m, C), dtype=np.float64)
                fi = self.feat_index
                top = obs[:, fi]
                top_tot = top.sum(1)
                bg = np.where(top_tot > 0, bg, bg + sig)  # no feature of the axis detected
                sig = np.where(top_tot > 0, sig, 0.0)
                inten[:, self.feat_channel] += top / np.maximum(top_tot, 1e-300)[:, None] * sig[:, None]
                nw = self.noise_weight[None] * np.exp(rng.normal(0, 0.3, (m, self.noise_weight.size)))
                inten[:, self.noise_channel] += nw / nw.sum(1, keepdims=True) * bg[:, None]
                bw = np.clip(1 + 0.3 * rng.standard_normal((m, C)), 0, None) + 1e-6
                inten += bw / bw.sum(1, keepdims=True) * base[:, None]
                for row, total in zip(inten, tic):
                    out.append((self.axis, self._exact(row, total)))
            else:
                lo, hi = spec.msi_noise_peaks
                pix_ppm = rng.normal(0, 1.0, m)
                for j in range(m):
                    kj = np.flatnonzero(obs[j] > 0)
                    n_noise = int(rng.integers(lo, hi + 1))
                    mz = np.concatenate([
                        self.mz_true[kj] * (1 + (self.ppm_shift + pix_ppm[j] + rng.normal(0, 1.5, kj.size)) * 1e-6),
                        rng.uniform(400, 1000, n_noise),
                    ])
                    nw = rng.exponential(1.0, n_noise)
                    inten = np.concatenate([obs[j, kj] * sig[j], nw / nw.sum() * bg[j]])
                    bw = np.clip(1 + 0.2 * rng.standard_normal(inten.size), 0.2, None)
                    inten = inten + bw / bw.sum() * base[j]
                    order = np.argsort(mz, kind="stable")
                    out.append((mz[order].astype(np.float32), self._exact(inten[order], tic[j])))
            yield s, out

    @staticmethod
    def _exact(x: np.ndarray, total: float) -> np.ndarray:
        """float32 intensities whose sum is ``total`` (the scene's TIC) to float32 precision."""
        x = np.asarray(x, dtype=np.float64)
        return (x * (total / x.sum())).astype(np.float32)
