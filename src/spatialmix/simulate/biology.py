"""Dataset-level "biology": shared class latents, the nonlinear maps to each modality, genes and lipids.

Everything here is the same for every sample of a dataset (it depends on the seed and the size only), so
samples are comparable: batch effects are added per sample by :mod:`spatialmix.simulate.modalities`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._config import ALWAYS, CLASS_NAMES, CLASSES, ISOTOPE_STEP, OPTIONAL, RARE, SIZES, SizeSpec
from ._random import DATASET, REFERENCE_SEED, RandomMLP, rng_for

N_SHARED = 8  # shared latent fields seen by all modalities
N_PRIVATE = {"rna": 4, "msi": 3, "he": 2}  # private fields, one set per modality

# Marker genes (real symbols) for each class; their expression is a radial-basis function of the shared
# latents around the class mean, i.e. still a nonlinear function of the shared fields.
MARKERS: dict[str, tuple[str, ...]] = {
    "Stroma": ("VIM", "ACTA2", "MYH11", "DES", "CNN1", "TAGLN", "COL1A1", "COL1A2", "COL3A1", "DCN", "LUM",
               "SPARC", "POSTN", "FLNA"),
    "Normal epithelium": ("KLK3", "KLK2", "MSMB", "ACP3", "NKX3-1", "KRT8", "KRT18", "KRT5", "KRT15", "TP63",
                          "AR", "TMPRSS2", "AZGP1"),
    "Atrophy": ("PSCA", "LTF", "CP", "KRT7", "LCN2", "PIGR"),
    "PIN": ("HPN", "GDF15", "TFF3", "GSTP1"),
    "Inflammation": ("PTPRC", "CD3E", "CD3D", "CD2", "CD19", "MS4A1", "CD74", "HLA-DRA", "CD68", "LYZ", "IGKC",
                     "IGHG1", "JCHAIN", "CXCL13", "CCL19"),
    "ISUP1": ("AMACR", "PCA3", "ERG", "OR51E2", "SPON2", "TDRD1"),
    "ISUP3": ("GOLM1", "CRISP3", "SCHLAP1", "PLA2G7", "MYO6"),
    "ISUP5": ("MKI67", "TOP2A", "CENPF", "UBE2C", "BIRC5", "HOXB13", "SOX4", "EZH2"),
    "Nerve": ("S100B", "NGFR", "MPZ", "PLP1", "SOX10", "GAP43", "PRX", "NRXN1"),
}
HOUSEKEEPING = ("ACTB", "GAPDH", "B2M", "EEF1A1", "MALAT1", "RPLP0", "TPT1", "FTL", "FTH1", "TMSB4X", "UBC",
                "PPIA", "HSP90AB1", "RPL13A", "RPS18", "CD63", "MGP")
MITO = ("MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3", "MT-ND3", "MT-ND4L", "MT-ND4",
        "MT-ND5", "MT-ND6", "MT-CYB")


@lru_cache(maxsize=1)
def reference_genes(n_max: int = 19000) -> tuple[np.ndarray, np.ndarray]:
    """Ensembl-style ids and gene symbols of the simulated reference (markers, housekeeping, MT, then others).

    The list is fixed (not seed dependent), like a reference genome; ``small`` uses its first genes.
    """
    rng = rng_for(REFERENCE_SEED, 1)
    names: list[str] = []
    seen: set[str] = set()
    for group in (*MARKERS.values(), HOUSEKEEPING, MITO):
        for g in group:
            if g not in seen:
                names.append(g)
                seen.add(g)
    letters = "ABCDEFGH"
    families = [
        lambda: f"ZNF{rng.integers(100, 999)}",
        lambda: f"SLC{rng.integers(1, 46)}A{rng.integers(1, 13)}",
        lambda: f"TMEM{rng.integers(11, 270)}",
        lambda: f"CCDC{rng.integers(6, 190)}",
        lambda: f"FAM{rng.integers(3, 240)}{letters[rng.integers(0, 5)]}",
        lambda: f"KIAA{rng.integers(100, 2030):04d}",
        lambda: f"C{rng.integers(1, 23)}orf{rng.integers(1, 180)}",
        lambda: f"LINC{rng.integers(1, 2800):05d}",
        lambda: f"RPL{rng.integers(3, 42)}",
        lambda: f"RPS{rng.integers(2, 30)}",
        lambda: f"OR{rng.integers(1, 14)}{letters[rng.integers(0, 8)]}{rng.integers(1, 60)}",
        lambda: f"ANKRD{rng.integers(1, 66)}",
        lambda: f"LRRC{rng.integers(1, 75)}",
        lambda: f"WDR{rng.integers(1, 97)}",
        lambda: f"ARHGAP{rng.integers(1, 45)}",
        lambda: f"KLHL{rng.integers(1, 42)}",
        lambda: f"TRIM{rng.integers(2, 75)}",
        lambda: f"USP{rng.integers(1, 54)}",
        lambda: f"ZBTB{rng.integers(1, 49)}",
        lambda: f"TBC1D{rng.integers(1, 32)}",
        lambda: f"FBXO{rng.integers(2, 48)}",
        lambda: f"PCDH{letters[rng.integers(0, 3)]}{rng.integers(1, 16)}",
        lambda: f"SPATA{rng.integers(1, 33)}",
        lambda: f"DNAJ{letters[rng.integers(0, 3)]}{rng.integers(1, 15)}",
        lambda: f"MIR{rng.integers(17, 9000)}HG",
        lambda: f"AC{rng.integers(4000, 99999):06d}.{rng.integers(1, 4)}",
        lambda: f"AL{rng.integers(1000, 99999):06d}.{rng.integers(1, 4)}",
    ]
    while len(names) < n_max:
        g = families[rng.integers(0, len(families))]()
        if g not in seen:
            names.append(g)
            seen.add(g)
    nums = rng.choice(np.arange(1000, 300000), size=n_max, replace=False) * 10 + rng.integers(0, 10, n_max)
    ids = np.array([f"ENSG{int(k):011d}" for k in nums])
    return ids, np.array(names)


@lru_cache(maxsize=2)
def reference_lipids(n_lipids: int) -> dict[str, np.ndarray]:
    """Monoisotopic m/z of lipid-like species in 400-1000 and their M / M+1 / M+2 features.

    Masses have a lipid-like mass defect (~0.00075 * m); isotope ratios follow the carbon count.
    Returns feature arrays sorted by m/z: ``mz``, ``lipid`` (species index), ``isotope`` (0, 1, 2) and
    ``ratio`` (relative abundance of the isotope peak within its species, summing to 1).
    """
    rng = rng_for(REFERENCE_SEED, 2, n_lipids)
    nominal = rng.integers(400, 998, n_lipids).astype(float)
    mono = nominal + 0.00075 * nominal + rng.normal(0, 0.03, n_lipids)
    n_carbon = np.round(mono / 18.0)
    r1 = 0.0107 * n_carbon
    r2 = r1**2 / 2 + 0.004
    total = 1 + r1 + r2
    mz = np.concatenate([mono, mono + ISOTOPE_STEP, mono + 2 * ISOTOPE_STEP])
    lipid = np.concatenate([np.arange(n_lipids)] * 3)
    iso = np.repeat([0, 1, 2], n_lipids)
    ratio = np.concatenate([1 / total, r1 / total, r2 / total])
    keep = (mz >= 400) & (mz <= 1000)
    order = np.argsort(mz[keep], kind="stable")
    return {
        "mono_mz": mono,
        "mz": mz[keep][order],
        "lipid": lipid[keep][order].astype(np.int32),
        "isotope": iso[keep][order].astype(np.int8),
        "ratio": ratio[keep][order],
    }


@dataclass
class Biology:
    """The dataset-level generative model (shared by all samples of one dataset)."""

    spec: SizeSpec
    class_means: np.ndarray  # (n_classes, N_SHARED)
    he_net: RandomMLP  # [shared, he private] -> (density, radius, eosin, tint) modulation
    rna_net: RandomMLP  # [shared, rna private] -> log rate per gene
    msi_net: RandomMLP  # [shared, msi private] -> (ion yield, log abundance per lipid)
    gene_ids: np.ndarray
    gene_names: np.ndarray
    gene_base: np.ndarray  # baseline log abundance per gene
    gene_dispersion: np.ndarray  # NB inverse dispersion (theta) per gene
    marker_gene: np.ndarray  # gene index of each marker entry
    marker_class: np.ndarray  # class index of each marker entry
    marker_beta: np.ndarray  # log-fold boost at the class centre
    marker_width: float
    lipid_base: np.ndarray  # baseline log abundance per lipid species
    lipids: dict[str, np.ndarray]
    presence: list[tuple[str, ...]]  # classes present in each sample
    n_samples: int

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES


def _class_presence(rng: np.random.Generator, n_samples: int) -> list[tuple[str, ...]]:
    """Which classes each sample shows: the always-present ones, a random subset of the optional ones
    (each optional class in at least one sample), and each rare class in exactly one sample."""
    chosen: list[set[str]] = [set(ALWAYS) for _ in range(n_samples)]
    for name in OPTIONAL:
        chosen[int(rng.integers(0, n_samples))].add(name)
        for i in range(n_samples):
            if rng.random() < 0.45:
                chosen[i].add(name)
    for i in range(n_samples):
        while len(chosen[i] & set(OPTIONAL)) < 2:
            chosen[i].add(str(rng.choice(OPTIONAL)))
    perm = rng.permutation(n_samples)
    for k, name in enumerate(RARE):
        chosen[int(perm[k % n_samples])].add(name)
    return [tuple(n for n in CLASS_NAMES if n in s) for s in chosen]


@lru_cache(maxsize=4)
def make_biology(seed: int, size: str, n_samples: int) -> Biology:
    """Build (and cache) the dataset-level model for ``seed``, ``size`` and ``n_samples``."""
    spec = SIZES[size]
    rng = rng_for(seed, DATASET)
    n_classes = len(CLASSES)
    # class means in the shared latent space, well separated
    for _ in range(200):
        means = rng.normal(0, 1.3, (n_classes, N_SHARED))
        d = np.linalg.norm(means[:, None] - means[None], axis=-1) + np.eye(n_classes) * 99
        if d.min() > 2.6:
            break
    he_net = RandomMLP.create(rng, N_SHARED + N_PRIVATE["he"], 16, 4, in_gain=1.2, out_scale=1.5)
    ids, names = reference_genes()
    ids, names = ids[: spec.n_genes], names[: spec.n_genes]
    G = spec.n_genes
    gene_scale = np.clip(rng.lognormal(np.log(0.5), 0.6, G), 0.05, 2.0)
    rna_net = RandomMLP.create(rng, N_SHARED + N_PRIVATE["rna"], 32, G, in_gain=1.2, out_scale=gene_scale)
    gene_base = rng.normal(0, 1.6, G)
    name_to_idx = {n: i for i, n in enumerate(names)}
    hk = [name_to_idx[g] for g in HOUSEKEEPING + MITO if g in name_to_idx]
    gene_base[hk] += 3.0 + rng.normal(0, 0.5, len(hk))
    m_gene, m_class, m_beta = [], [], []
    for ci, cname in enumerate(CLASS_NAMES):
        for g in MARKERS[cname]:
            if g in name_to_idx:
                gi = name_to_idx[g]
                m_gene.append(gi)
                m_class.append(ci)
                m_beta.append(rng.uniform(2.2, 3.5))
                gene_base[gi] = rng.normal(0.0, 0.5)
    dispersion = np.clip(rng.lognormal(np.log(6.0), 0.6, G), 0.5, 100)
    lipids = reference_lipids(spec.n_lipids)
    L = spec.n_lipids
    lipid_scale = np.concatenate([[1.0], np.clip(rng.lognormal(np.log(0.9), 0.4, L), 0.1, 3)])
    msi_net = RandomMLP.create(rng, N_SHARED + N_PRIVATE["msi"], 32, 1 + L, in_gain=1.2, out_scale=lipid_scale)
    lipid_base = rng.normal(0, 1.3, L)
    presence = _class_presence(rng_for(seed, DATASET, 7, n_samples), n_samples)
    return Biology(
        spec=spec,
        class_means=means.astype(np.float32),
        he_net=he_net,
        rna_net=rna_net,
        msi_net=msi_net,
        gene_ids=ids,
        gene_names=names,
        gene_base=gene_base.astype(np.float32),
        gene_dispersion=dispersion.astype(np.float32),
        marker_gene=np.array(m_gene, dtype=np.int64),
        marker_class=np.array(m_class, dtype=np.int64),
        marker_beta=np.array(m_beta, dtype=np.float32),
        marker_width=12.0,
        lipid_base=lipid_base.astype(np.float32),
        lipids=lipids,
        presence=presence,
        n_samples=n_samples,
    )
