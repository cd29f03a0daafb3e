import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.helpers.* and the packages, also without an install

SAMPLES = ROOT / "sample_videos"


@pytest.fixture
def samples() -> Path:
    return SAMPLES


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A private folder for ipc:// sockets: short (unix socket paths are limited) and unique to this test,
    unlike pytest's numbered tmp folders, which concurrent pytest sessions can end up sharing."""
    path = Path(tempfile.mkdtemp(prefix="vp-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def promtool() -> str:
    """Debian's promtool (package prometheus), which tests/run.sh installs."""
    from tests.helpers.tools import find_tool

    path = find_tool("promtool")
    if path is None:
        pytest.skip("promtool not found (on PATH or /usr/bin): install Prometheus (Debian: apt-get install prometheus)")
    return path


@pytest.fixture(scope="session", autouse=True)
def model_cache() -> Iterator[Path]:
    """Models exported by the backend layer go to a folder of this test session (stage processes inherit the
    variable), never to the user's cache, and are removed at the end."""
    import os

    path = Path(tempfile.mkdtemp(prefix="vidpipe-models-"))
    old = os.environ.get("VIDPIPE_CACHE_DIR")
    os.environ["VIDPIPE_CACHE_DIR"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("VIDPIPE_CACHE_DIR", None)
        else:
            os.environ["VIDPIPE_CACHE_DIR"] = old
        shutil.rmtree(path, ignore_errors=True)
