"""Offline tooling: training the tracker's networks, converting third-party weights, the semi-synthetic tracking
sequences and detection evaluation. Run as `python -m tools.NAME`; nothing under `stages/` or `pipeline/` imports
it (tests/test_layout.py checks), so a pipeline process never loads this code."""
