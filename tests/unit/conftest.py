"""Fixtures shared by the unit tests' modules."""

# The simulated CPUs' world of the kernel core (test_core_grace.py), for the
# modules that test more of it (test_core_grace_regions.py).
from tests.unit.test_core_grace import shared  # noqa: F401
