"""Claim tests: the figures a trained model must reach, asserted with margins that were measured.

A model's figures change with the machine (CPU kernels), the number of threads, torch's deterministic
algorithms and the package versions, exactly as they change with the training seed: training amplifies any
rounding difference. So every test that asserts a figure of a *trained* model states it through
:func:`check`, and ``benchmarks/claim_spread.py`` runs those tests again over several training seeds, 1 and 2
threads and deterministic algorithms on and off, with::

    SPATIALMIX_CLAIM_SEED=k        added to the training / weight seeds of every claim test (default 0)
    SPATIALMIX_CLAIM_LOG=file      append each checked value to this JSON-lines file and do not assert
    SPATIALMIX_DETERMINISTIC=1     torch.use_deterministic_algorithms(True)
    OMP_NUM_THREADS=n              torch threads of the tests (default 1, as in ``make test``)

It writes the spread of every claim (min, mean, sd over the runs) to ``benchmarks/results/claim_spread.json``;
each threshold in the tests sits below the worst value measured, by at least three standard deviations of
the spread (``docs/reproducibility.md``). A claim that did not hold with such a margin is not asserted: the
docs say what was measured instead.
"""

from __future__ import annotations

import json
import operator
import os
from pathlib import Path

SEED = int(os.environ.get("SPATIALMIX_CLAIM_SEED", "0"))
LOG = os.environ.get("SPATIALMIX_CLAIM_LOG") or None
DETERMINISTIC = os.environ.get("SPATIALMIX_DETERMINISTIC", "0") == "1"
THREADS = int(os.environ.get("OMP_NUM_THREADS", "1") or 1)

OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def seed(base: int = 0) -> int:
    """A training / weight seed of a claim test: ``base`` + 1000 x ``SPATIALMIX_CLAIM_SEED``, so that the seed
    sets of two offsets never overlap (a test may train several models, seeds ``seed(0)``, ``seed(1)``, ...)."""
    return int(base) + 1000 * SEED


def median(values) -> float:
    """Median of a claim measured over several trainings (robust to the occasional training that collapses)."""
    import numpy as np

    return float(np.median(np.asarray(values, dtype=float)))


def set_torch_threads() -> None:
    """The tests' torch threads (``OMP_NUM_THREADS``, 1 by default) and deterministic mode."""
    import torch

    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(DETERMINISTIC)


def check(name: str, value: float, op: str, threshold: float) -> bool:
    """Assert ``value op threshold`` for the claim ``name`` (``tests/<file>::<claim>``), or, while the spread
    is being measured (``SPATIALMIX_CLAIM_LOG``), record the value and go on."""
    value = float(value)
    ok = bool(OPS[op](value, threshold))
    if LOG:
        record = {"claim": name, "value": value, "op": op, "threshold": float(threshold), "ok": ok,
                  "seed": SEED, "threads": THREADS, "deterministic": DETERMINISTIC}
        with Path(LOG).open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        return ok
    assert ok, f"claim {name}: {value:.4f} {op} {threshold:.4f} does not hold (measured spread: docs/reproducibility.md)"
    return ok
