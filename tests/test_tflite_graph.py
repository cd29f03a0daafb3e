"""tools/tflite_graph.py's dequantisation, on hand-made tensors (the flatbuffer reading itself is exercised by
tests/test_movenet_parity.py's converter test where the `tflite` package and the model are present)."""

from __future__ import annotations

import numpy as np
import pytest

from tools.tflite_graph import Graph, Op, Quantization, Tensor, dequantize


def _tensor(data: np.ndarray, quant: Quantization | None = None, dtype: str = "") -> Tensor:
    return Tensor(0, "t", dtype or data.dtype.name.upper(), data.shape, data.shape, data, quant)


def test_float16_widens_exactly() -> None:
    values = np.array([0.007843017578125, -1.0, 65504.0, 6.1e-5, 0.0], np.float16)
    out = dequantize(_tensor(values))
    assert out.dtype == np.float32 and np.array_equal(out, values.astype(np.float32))


def test_int8_per_tensor_and_per_channel() -> None:
    q = np.array([[-128, 0, 127], [5, -5, 1]], np.int8)
    out = dequantize(_tensor(q, Quantization(np.array([0.5], np.float32), np.array([3]), 0)))
    assert np.array_equal(out, ((q.astype(np.float64) - 3) * 0.5).astype(np.float32))
    scales = np.array([0.1, 0.25, 2.0], np.float32)  # per output channel along axis 1
    out = dequantize(_tensor(q, Quantization(scales, np.zeros(3, np.int64), 1)))
    assert np.allclose(out, q * scales.astype(np.float64)[None, :], rtol=0, atol=1e-6)
    u = np.array([0, 128, 255], np.uint8)
    assert np.array_equal(dequantize(_tensor(u, Quantization(np.array([1 / 128], np.float32), np.array([128]), 0))),
                          np.array([-1.0, 0.0, 127 / 128], np.float32))  # fmt: skip


def test_integer_constant_without_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="without quantisation"):
        dequantize(_tensor(np.array([1, 2], np.int8)))


def test_constant_follows_a_dequantize_op() -> None:
    weight = _tensor(np.array([1.5, -2.0], np.float16))
    activation = Tensor(1, "w_dequantize", "FLOAT32", (2,), (2,), None, None)
    graph = Graph([weight, activation], [Op(0, "DEQUANTIZE", [0], [1])], [], [], "", 3)
    assert np.array_equal(graph.constant(1), np.array([1.5, -2.0], np.float32))
    with pytest.raises(ValueError, match="not a constant"):
        Graph([activation], [], [], [], "", 3).constant(0)
