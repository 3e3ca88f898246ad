"""Size presets, tissue classes and their histology priors for the simulator."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParameterError

#: Visium geometry (um): spot diameter and centre-to-centre distance of the hexagonal lattice.
SPOT_DIAMETER_UM = 55.0
SPOT_PITCH_UM = 100.0
#: fiducial_diameter_fullres / spot_diameter_fullres as in Space Ranger outputs.
FIDUCIAL_RATIO = 1.615
#: M+1 / M+2 isotope spacing (Da), 13C - 12C.
ISOTOPE_STEP = 1.003355


@dataclass(frozen=True)
class SizeSpec:
    """Everything that differs between the ``small`` (bundled) and ``paper`` datasets."""

    name: str
    default_n_samples: int
    lattice_rows: int  # number of array_row values
    lattice_cols: int  # spots per row (array_col spans 2 * lattice_cols)
    in_tissue_range: tuple[int, int]
    extend_offset: tuple[float, float]  # tissue centre offset (fraction of the half capture area) when it extends
    fullres_margin_um: float  # fullres image border around the capture area
    world_extra_um: float  # simulated tissue world beyond the fullres image
    world_res_um: float  # resolution of the fine tissue fields
    noise_factor: int  # smooth fields are generated on a grid this much coarser
    n_regions: int  # noise-warped Voronoi cells in the tissue
    hires_long_px: int
    lowres_long_px: int
    n_genes: int
    library_size: float  # median UMIs per spot
    n_lipids: int  # monoisotopic species; features = 3 * n_lipids (M, M+1, M+2)
    msi_pixel_size_um: float
    msi_cont_features: int | None  # continuous mode: strongest features kept on the shared axis (None: all)
    msi_cont_noise_channels: int
    msi_noise_peaks: tuple[int, int]  # processed mode: background peaks per pixel
    msi_keep_target: float  # processed mode: ~ fraction of lipid features kept per tissue pixel
    he_mpp: float
    he_pyramid: bool
    he_coarse_um: float


SIZES: dict[str, SizeSpec] = {
    "small": SizeSpec(
        name="small",
        default_n_samples=4,
        lattice_rows=34,
        lattice_cols=30,
        in_tissue_range=(300, 350),
        extend_offset=(0.5, 0.7),
        fullres_margin_um=400.0,
        world_extra_um=1300.0,
        world_res_um=8.0,
        noise_factor=4,
        n_regions=14,
        hires_long_px=800,
        lowres_long_px=600,
        n_genes=1500,
        library_size=2500.0,
        n_lipids=50,
        msi_pixel_size_um=50.0,
        msi_cont_features=None,
        msi_cont_noise_channels=150,
        msi_noise_peaks=(4, 12),
        msi_keep_target=0.7,
        he_mpp=4.0,
        he_pyramid=False,
        he_coarse_um=8.0,
    ),
    "paper": SizeSpec(
        name="paper",
        default_n_samples=16,
        lattice_rows=78,
        lattice_cols=64,
        in_tissue_range=(2000, 3300),
        extend_offset=(0.35, 0.55),
        fullres_margin_um=800.0,
        world_extra_um=2600.0,
        world_res_um=10.0,
        noise_factor=4,
        n_regions=40,
        hires_long_px=2000,
        lowres_long_px=600,
        n_genes=18950,
        library_size=8000.0,
        n_lipids=4170,
        msi_pixel_size_um=50.0,
        msi_cont_features=1600,
        msi_cont_noise_channels=400,
        msi_noise_peaks=(20, 60),
        msi_keep_target=0.08,
        he_mpp=2.0,
        he_pyramid=True,
        he_coarse_um=8.0,
    ),
}


def get_size(size: str) -> SizeSpec:
    """Return the :class:`SizeSpec` for ``size`` or raise :class:`ParameterError`."""
    if not isinstance(size, str) or size not in SIZES:
        raise ParameterError(
            f"size must be one of {sorted(SIZES)}, got {size!r}. "
            "Use size='small' for the bundled demo (4 samples, ~20 MB) or size='paper' for the full-scale data"
        )
    return SIZES[size]


@dataclass(frozen=True)
class TissueClass:
    """A tissue class and the histology it shows (priors; the shared latent fields modulate them)."""

    name: str  # the pathologist's label, as written in annotations.csv
    weight: float  # how often Voronoi cells get this class (0: only placed on purpose)
    density: float  # nuclei per 1000 um^2
    radius_um: float  # nuclear radius
    aspect: float  # nuclear elongation (1 = round)
    eosin: float  # eosin optical density of the cytoplasm / stroma
    tint: float  # hematoxylin optical density of the cytoplasm
    lumen_threshold: float  # glands: lumen where the lumen noise exceeds this (inf: no glands)


CLASSES: tuple[TissueClass, ...] = (
    TissueClass("Stroma", 3.0, 1.3, 2.6, 2.4, 0.80, 0.03, float("inf")),
    TissueClass("Normal epithelium", 2.0, 3.0, 3.0, 1.2, 0.40, 0.07, 0.75),
    TissueClass("Atrophy", 1.0, 3.4, 2.7, 1.3, 0.50, 0.11, 1.05),
    TissueClass("PIN", 1.0, 4.0, 3.5, 1.2, 0.42, 0.10, 0.95),
    TissueClass("Inflammation", 1.0, 8.5, 2.1, 1.05, 0.32, 0.13, float("inf")),
    TissueClass("ISUP1", 1.5, 4.2, 3.3, 1.15, 0.45, 0.09, 1.15),
    TissueClass("ISUP3", 1.5, 4.8, 3.7, 1.15, 0.48, 0.12, 1.45),
    TissueClass("ISUP5", 0.0, 6.2, 4.3, 1.1, 0.38, 0.17, float("inf")),
    TissueClass("Nerve", 0.0, 1.6, 2.5, 2.8, 0.62, 0.04, float("inf")),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
#: classes that are always present, classes placed in exactly one sample of a dataset.
ALWAYS = ("Stroma", "Normal epithelium")
RARE = ("Nerve", "ISUP5")
OPTIONAL = tuple(n for n in CLASS_NAMES if n not in ALWAYS + RARE)


def sample_name(index: int) -> tuple[str, int, int]:
    """``P{patient}_S{section}`` for a 0-based sample index (2 sections per patient)."""
    patient = index // 2 + 1
    section = index % 2 + 1
    return f"P{patient}_S{section}", patient, section
