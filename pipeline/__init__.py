"""vidpipe framework: protocol, transport, stage runtime, config, launcher, metrics, CLI. No model code."""

__version__ = "0.1.0"
