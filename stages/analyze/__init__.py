"""analyze: zones, directed lines and rules over confirmed tracks; raises alerts (stage in stages.analyze.stage)."""
