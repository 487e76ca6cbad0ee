"""Shared fixtures."""
from __future__ import annotations

import pytest

from patterns import make_patterned


@pytest.fixture(scope="session")
def patterned():
    return make_patterned()
