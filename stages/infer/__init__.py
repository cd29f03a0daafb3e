"""infer: runs detectors on batches of frames. The stage kind lives in stages.infer.stage."""
