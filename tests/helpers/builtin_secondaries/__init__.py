"""A stand-in for stages/infer/secondaries/ (which ships no model yet): a package of built-in secondary models."""
