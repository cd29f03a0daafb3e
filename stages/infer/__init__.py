"""infer: runs detectors on batches of frames. The stage kind lives in stages.infer.stage."""

from stages.infer.stage import InferStage

__all__ = ["InferStage"]
