"""Shared pytest set-up: the repo root on sys.path and quiet, fixed seeds."""
import os.path as osp
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def repo_root() -> str:
    return ROOT


@pytest.fixture(scope='module')
def single_thread():
    """One intra-op thread for a module of small-tensor tests: they gain
    nothing from more, and on a busy 2-core machine every parallel region
    waits for a core. Used with ``pytestmark =
    pytest.mark.usefixtures('single_thread')``; restores the setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
