"""track: a CNN-LSTM multi-object tracker (appearance CNN + motion LSTM + two-stage association).

The stage kind lives in stages.track.stage.
"""
