"""Random streams, smooth random fields and small random networks used by the simulator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A fixed seed for what is the same in every dataset, like a reference genome or a slide whitelist:
#: barcodes, gene ids and names, lipid masses.
REFERENCE_SEED = 20251021

# stream tags (never reorder: they make the data of one sample independent of the others)
DATASET, SAMPLE = 1, 2
S_GEOMETRY, S_FIELDS, S_LABELS, S_HE, S_VISIUM, S_MSI_GRID, S_MSI_TIC, S_RNA, S_MSI_SPECTRA, S_STAIN = range(10)


def rng_for(*key: int) -> np.random.Generator:
    """An independent generator for a tuple of non-negative integers (seed, stream tags ...)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float, n: int = 1) -> np.ndarray:
    """``n`` Gaussian random fields of unit variance with correlation length ``sigma_px`` pixels.

    White noise filtered in Fourier space (periodic; the grids are padded by the callers' world margin).
    Returns float32 of shape ``(n, *shape)``.
    """
    ny, nx = shape
    white = rng.standard_normal((n, ny, nx)).astype(np.float32)
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.rfftfreq(nx)[None, :]
    kernel = np.exp(-2.0 * (np.pi * sigma_px) ** 2 * (fx**2 + fy**2)).astype(np.float32)
    out = np.fft.irfft2(np.fft.rfft2(white, axes=(1, 2)) * kernel, s=(ny, nx), axes=(1, 2)).astype(np.float32)
    out -= out.mean(axis=(1, 2), keepdims=True)
    out /= out.std(axis=(1, 2), keepdims=True) + 1e-12
    return out


def upsample_bilinear(a: np.ndarray, factor: int, out_shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of the last two axes by an integer ``factor`` (pixel-centre aligned, edges
    clamped).

    For an integer factor the interpolation weights repeat every ``factor`` output pixels, so each phase
    is two shifted slices and a lerp. ``scipy.ndimage.zoom`` does the same ~5x slower on the 13-megapixel
    images of the ``paper`` size (measured), and this runs on every simulated section.
    """
    k = int(factor)
    if k == 1:
        return np.ascontiguousarray(a[..., : out_shape[0], : out_shape[1]], dtype=np.float32)

    def along(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
        x = np.moveaxis(x, axis, -1)
        n_in = x.shape[-1]
        xp = np.concatenate([x[..., :1], x, x[..., -1:]], axis=-1)  # clamped edges
        out = np.empty((*x.shape[:-1], n_in * k), dtype=np.float32)
        for r in range(k):
            pos = (r + 0.5) / k - 0.5  # source position of output phase r relative to input pixel 0
            i0 = int(np.floor(pos))
            w = np.float32(pos - i0)
            lo = xp[..., i0 + 1 : i0 + 1 + n_in]
            tmp = xp[..., i0 + 2 : i0 + 2 + n_in] - lo
            tmp *= w
            tmp += lo
            out[..., r::k] = tmp
        return np.moveaxis(out[..., :n_out], -1, axis)

    rows = along(np.asarray(a, dtype=np.float32), a.ndim - 2, out_shape[0])
    return np.ascontiguousarray(along(rows, a.ndim - 1, out_shape[1]))


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0, x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))


@dataclass
class RandomMLP:
    """A fixed random 2-layer map ``y = tanh(x W1 + b1) W2 + b2`` (the nonlinear link from latents to data)."""

    W1: np.ndarray
    b1: np.ndarray
    W2: np.ndarray
    b2: np.ndarray

    @classmethod
    def create(
        cls,
        rng: np.random.Generator,
        n_in: int,
        n_hidden: int,
        n_out: int,
        *,
        in_gain: float = 1.0,
        out_scale: float | np.ndarray = 1.0,
    ) -> RandomMLP:
        W1 = rng.normal(0, in_gain / np.sqrt(n_in), (n_in, n_hidden))
        b1 = rng.normal(0, 0.4, n_hidden)
        scale = np.broadcast_to(np.asarray(out_scale, dtype=float), (n_out,))
        W2 = rng.normal(0, 1.0, (n_hidden, n_out)) * scale / np.sqrt(n_hidden)
        b2 = np.zeros(n_out)
        f = np.float32
        return cls(W1.astype(f), b1.astype(f), W2.astype(f), b2.astype(f))

    def hidden(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x.astype(np.float32, copy=False) @ self.W1 + self.b1)

    def output(self, h: np.ndarray, cols: slice | np.ndarray | None = None) -> np.ndarray:
        if cols is None:
            return h @ self.W2 + self.b2
        return h @ self.W2[:, cols] + self.b2[cols]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.output(self.hidden(x))
