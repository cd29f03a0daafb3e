"""The README's config reference and example configs stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, load_config
from pipeline.curve import make_keys
from pipeline.schema_doc import embed

ROOT = Path(__file__).resolve().parent.parent


def test_readme_config_reference_is_current() -> None:
    text = (ROOT / "README.md").read_text()
    assert embed(text) == text, "run: python -m pipeline.schema_doc --write README.md"


def test_example_config_is_valid() -> None:
    cfg = load_config(ROOT / "deploy" / "config" / "example.yaml")
    assert all(Path(str(s.source)).exists() for s in cfg.streams)


def test_two_host_example_passes_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's "Stages on two hosts by hand": its config, with the keys its commands make, loads; without the
    keys its tcp://* bind is refused."""
    m = re.search(r"```yaml\n(# pipeline.yaml, the same file on both hosts.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert m, "the two-host example is gone from README.md"
    data = yaml.safe_load(m.group(1))
    monkeypatch.chdir(tmp_path)  # `vidpipe keys keys` makes them here; curve_keys is relative to the config beside them
    (tmp_path / "pipeline.yaml").write_text(m.group(1))
    make_keys(data["transport"]["curve_keys"], [st["name"] for st in data["stages"]])  # vidpipe keys keys --config pipeline.yaml
    cfg = load_config(tmp_path / "pipeline.yaml")
    assert [st.name for st in cfg.stages] == ["decode", "infer", "record"]
    del data["transport"]
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"binds where other hosts can reach it"):
        load_config(tmp_path / "pipeline.yaml")
