"""analyze: zones, directed lines and rules over confirmed tracks; raises alerts (stage in stages.analyze.stage)."""

from stages.analyze.stage import AnalyzeStage

__all__ = ["AnalyzeStage"]
