"""analyze: zones, lines and the rules that turn confirmed tracks into events (issue 5, in progress)."""
