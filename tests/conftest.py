import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/invariants.py


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
