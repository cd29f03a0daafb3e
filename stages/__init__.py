"""Stage kinds: one module or package per kind (decode, infer, record, ...)."""
