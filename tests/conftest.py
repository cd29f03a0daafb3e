import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.helpers.* and the packages, also without an install

SAMPLES = ROOT / "sample_videos"


@pytest.fixture
def samples() -> Path:
    return SAMPLES
