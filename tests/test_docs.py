"""The README's config reference and example config stay true to the code."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import load_config
from pipeline.schema_doc import embed

ROOT = Path(__file__).resolve().parent.parent


def test_readme_config_reference_is_current() -> None:
    text = (ROOT / "README.md").read_text()
    assert embed(text) == text, "run: python -m pipeline.schema_doc --write README.md"


def test_example_config_is_valid() -> None:
    cfg = load_config(ROOT / "deploy" / "config" / "example.yaml")
    assert all(Path(str(s.source)).exists() for s in cfg.streams)
