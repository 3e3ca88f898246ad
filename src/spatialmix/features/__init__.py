"""Per-spot features: MSI pixels aggregated onto spots, H&E morphology under each spot.

Each long computation is a progress generator (``iter_*``) with a plain-function twin:

- :func:`aggregate_msi` / :func:`iter_aggregate_msi`: area-weighted MSI spectra per spot.
- :func:`morphology_features` / :func:`iter_morphology_features`: colour, texture and nuclei features of the
  H&E patch under each spot, or the embedding of a user's TorchScript image encoder.
"""

from spatialmix.features.morphology import iter_morphology_features, morphology_features
from spatialmix.features.msi import aggregate_msi, iter_aggregate_msi

__all__ = ["aggregate_msi", "iter_aggregate_msi", "iter_morphology_features", "morphology_features"]
