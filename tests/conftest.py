"""Shared test fixtures."""

from __future__ import annotations

import pyro
import pytest
import torch


@pytest.fixture
def float64_one_thread():
    """float64 default dtype, one torch thread (small problems on a shared 2-core machine:
    threading only hurts), seeded torch / numpy / random; restored afterwards."""
    old, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    pyro.set_rng_seed(0)
    yield
    torch.set_default_dtype(old)
    torch.set_num_threads(threads)
