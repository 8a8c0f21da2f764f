"""Test configuration: Hypothesis profiles and torch seeding.

Profiles: ``ci`` (derandomized, no deadline, no example database) is loaded when ``CI`` is set, as CI runs
``make test`` with ``CI=true``; ``dev`` (the default here, no deadline) and ``thorough`` (2000 examples) are
chosen with ``HYPOTHESIS_PROFILE``. Hypothesis seeds ``random`` and NumPy, not torch: tests that draw
torch randomness build a ``torch.Generator`` from a drawn seed, and every test starts from a fixed
global torch seed (the autouse fixture below).
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True,
                          max_examples=60, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

#: Every test starts from this global torch seed (tests needing several streams build generators).
TORCH_SEED = 20260305


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(TORCH_SEED)
