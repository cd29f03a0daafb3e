"""One inference-backend layer for every model of the project: a torch module in, a fast callable out.

A model is written once as torch modules; `compile_module` runs it on

- `torch`: eager PyTorch, the reference every other backend is tested against (tests/test_backend_parity.py);
- `onnxruntime` / `openvino`: the same module exported to ONNX on first use and run by that CPU runtime. The
  export is cached under `cache_dir()` by a hash of the weights, the module's class, the example shapes and
  the export settings, so a second process (or run) loads it in milliseconds; it is never committed;
- `cuda`: torch on the GPU in fp16, each batch shape captured once as a CUDA graph and replayed, the batch
  padded up to the next power of two so that a handful of graphs serve every batch size.

`auto` picks, per model, the backend measured fastest for the device (`bench/backends.py` measures every
model on every backend; the figures are in the README): CUDA on a GPU, else the CPU runtime the model names.
Every backend takes and returns torch tensors, batched along dim 0 of every input and output; the ONNX runtimes
also take numpy arrays and then return numpy arrays. `compile_cached` finds a model's export by a key computed from
its files, so a process whose models all run on a CPU runtime never builds them, and never imports torch.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import logging
import os
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, NamedTuple, Sequence, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

Array = Any  # a torch Tensor or a numpy array

log = logging.getLogger(__name__)

CpuRuntime = Literal["torch", "onnxruntime", "openvino"]
# What a model's `backend` option may say: a backend of BACKENDS, or auto (the fastest measured for the device).
BackendName = Literal["auto", "torch", "onnxruntime", "openvino", "cuda"]
BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "openvino", "cuda")
OPSET = 17
EXPORT_VERSION = 1  # bump when the export settings change: old cache entries are then ignored

_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


def cache_dir() -> Path:
    """Where exported models are kept: $VIDPIPE_CACHE_DIR, else $XDG_CACHE_HOME/vidpipe/models."""
    if os.environ.get("VIDPIPE_CACHE_DIR"):
        return Path(os.environ["VIDPIPE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vidpipe" / "models"


def available(backend: str) -> bool:
    """Whether a backend can run here (its package is installed, or a CUDA device is present)."""
    if backend == "torch":
        return True
    if backend == "cuda":
        import torch

        return torch.cuda.is_available()
    return importlib.util.find_spec(_PACKAGES[backend]) is not None


def openvino_bf16(backend: str) -> bool:
    """Whether a CPU model whose precision is auto takes OpenVINO's bf16: the CPU computes bf16 natively
    (pipeline.device.cpu_has_bf16), OpenVINO is installed, and the backend asked for is auto or openvino."""
    from pipeline.device import cpu_has_bf16

    return backend in ("auto", "openvino") and cpu_has_bf16() and available("openvino")


def _device_type(device: Any) -> str:
    return device.split(":")[0] if isinstance(device, str) else str(device.type)


def resolve_backend(backend: str, device: torch.device | str, cpu_default: CpuRuntime) -> str:
    """The backend that runs: `auto` is cuda on a CUDA device, else the model's fastest CPU runtime, falling
    back to torch when that runtime is not installed. A backend asked for by name must fit the device."""
    kind = _device_type(device)
    if backend == "auto":
        if kind == "cuda":
            return "cuda"
        if available(cpu_default):
            return cpu_default
        log.warning("%s is not installed: models run in eager torch, slower (pip install %s)", cpu_default, _PACKAGES.get(cpu_default, cpu_default))
        return "torch"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: one of auto, {', '.join(BACKENDS)}")
    if backend == "cuda" and kind != "cuda":
        raise ValueError("backend cuda needs a CUDA device (device: auto or cuda)")
    if backend in ("onnxruntime", "openvino"):
        if kind != "cpu":
            raise ValueError(f"backend {backend} runs on the CPU: set device: cpu, or use backend cuda on a GPU")
        if not available(backend):
            raise ValueError(f"backend {backend} asked for, but the {_PACKAGES[backend]} package is not installed")
    return backend


def model_hash(module: nn.Module, examples: Sequence[Tensor], extra: str = "") -> str:
    """sha256 of what an export depends on: weights and buffers, class, input shapes (bar the batch) and settings."""
    import torch

    h = hashlib.sha256()
    h.update(f"{type(module).__module__}.{type(module).__qualname__}|{extra}|{OPSET}|{EXPORT_VERSION}|{torch.__version__}".encode())
    for x in examples:
        h.update(f"{tuple(x.shape[1:])}:{x.dtype}".encode())
    # The code that defines the computation too: an edit to a forward() must not reuse an old export.
    for mod in sorted({type(m).__module__ for m in module.modules()}):
        file = getattr(sys.modules.get(mod), "__file__", None)
        if file and os.path.exists(file):
            h.update(Path(file).read_bytes())
    tensors = dict(module.state_dict())
    tensors.update({f"buffer:{k}": v for k, v in module.named_buffers()})
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().flatten()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_key(files: Iterable[Path], extra: str = "") -> str:
    """An export key from what a model is made of, read without building it: the bytes of its weights and of its
    code's files, plus `extra` (what else shapes the export: kept columns, input shapes), the export settings and
    torch's version (the exporter). Used with compile_cached."""
    h = hashlib.sha256()
    h.update(f"{extra}|{OPSET}|{EXPORT_VERSION}|torch {importlib.metadata.version('torch')}".encode())
    for f in sorted(Path(f) for f in files):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _export_path(name: str, key: str) -> Path:
    return cache_dir() / f"{name}-{key[:20]}.onnx"


def export_onnx(module: nn.Module, examples: Sequence[Tensor], name: str, extra: str = "",
                dynamic: dict[int, dict[int, str]] | None = None, key: str | None = None) -> Path:
    """The module exported to ONNX (batch axis dynamic), from the cache when it is there already.

    `dynamic` adds further dynamic axes per input index (e.g. height and width of a fully convolutional net).
    Written to a temporary file and renamed, so processes that export at once never read half a file.
    """
    import torch

    key = key or model_hash(module, examples, extra + repr(sorted((dynamic or {}).items())))
    path = _export_path(name, key)
    if path.exists():
        return path
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    inputs = [f"in{i}" for i in range(len(examples))]
    with torch.inference_mode():
        outs = module(*examples)
    n_out = 1 if isinstance(outs, torch.Tensor) else len(outs)
    outputs = [str(k) for k in outs] if isinstance(outs, dict) else [f"out{i}" for i in range(n_out)]
    axes: dict[str, dict[int, str]] = {n: {0: "batch"} for n in inputs + outputs}
    for i, extra_axes in (dynamic or {}).items():
        axes[inputs[i]].update(extra_axes)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-level shape arithmetic
        torch.onnx.export(
            module.eval(), tuple(examples), buf, input_names=inputs, output_names=outputs,
            dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )  # fmt: skip
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=".onnx")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:  # a stop while loading (pipeline/runtime.py) or a full disk: no stray half file
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    log.info("exported %s to %s", name, path)
    return path


_T = TypeVar("_T")
_R = TypeVar("_R")


class Runner:
    """A compiled model: `runner(*inputs)` -> tuple of outputs, torch tensors batched along dim 0.

    `output_names`: the outputs' names in that order, where the model has them (ONNX graphs, torch modules
    that return a dict; known after the first call for those), else None.
    """

    backend: str = ""
    output_names: list[str] | None = None

    def __call__(self, *inputs: Array) -> tuple[Array, ...]:
        raise NotImplementedError


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, module: nn.Module, channels_last: bool = False) -> None:
        import torch

        self.module = module.eval()
        self.channels_last = channels_last
        if channels_last:
            try:
                self.module.to(memory_format=torch.channels_last)
            except Exception:  # some TorchScript modules refuse; the inputs' layout still applies
                pass

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        import torch

        if self.channels_last:
            inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in inputs)
        with torch.inference_mode():
            out = self.module(*inputs)
        return _as_tuple(self, out)


def _as_tuple(runner: Runner, out: Any) -> tuple[Tensor, ...]:
    """A module's outputs as a tuple; a dict's keys become the runner's output names."""
    from torch import Tensor

    if isinstance(out, Tensor):
        return (out,)
    if isinstance(out, dict):
        runner.output_names = [str(k) for k in out]
        return tuple(out.values())
    if isinstance(out, (tuple, list)) and all(isinstance(t, Tensor) for t in out):
        return tuple(out)
    raise ValueError(f"model returned {type(out).__name__}; expected a tensor, a tuple of tensors or a dict of them")


class InputSpec(NamedTuple):
    """An ONNX graph's input: name, numpy dtype name, shape (None for a dynamic axis)."""

    name: str
    dtype: str
    shape: list[int | None]


_ORT_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32"}


def _numpy(x: Array) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x)
    return np.ascontiguousarray(x.detach().cpu().numpy())


class CpuRunner(Runner):
    """Shared by the ONNX runtimes: `threads` CPU threads, as intra-op threads of one call, or (`per_sample`)
    as that many single-threaded calls at once, each on a share of the batch's samples.

    Per sample is the faster use of the cores for a small network like COCO-SSD: a single-threaded call costs
    a third less CPU than a two-threaded one of the same sample (no synchronisation inside the layers), and
    every sample's result is the same whatever batch it came in, which replay's determinism wants.
    """

    def __init__(self, threads: int, per_sample: bool) -> None:
        self.threads = max(1, threads)
        self.per_sample = per_sample and self.threads > 1
        self.pool: ThreadPoolExecutor | None = None
        if self.per_sample:
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix=self.backend)
        self.one_at_a_time = False  # a graph exported with a fixed batch of 1 gets the samples in turn

    def _run(self, worker: int, arrays: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def __call__(self, *inputs: Array) -> tuple[Array, ...]:
        """Numpy arrays in, numpy arrays out; torch tensors in, CPU torch tensors out."""
        arrays = [_numpy(x) for x in inputs]
        if len(arrays[0]) == 0:  # the runtimes reject an empty batch: one zero sample, its outputs without rows
            outs = [o[:0] for o in self._call([np.zeros((1, *a.shape[1:]), a.dtype) for a in arrays])]
        else:
            outs = self._call(arrays)
        if all(isinstance(x, np.ndarray) for x in inputs):
            return tuple(outs)
        import torch

        return tuple(torch.from_numpy(o) for o in outs)

    def _call(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        n = len(arrays[0])
        if n == 1 or (self.pool is None and not self.one_at_a_time):
            outs = self._run(0, arrays)
        elif self.pool is None:
            outs = self._run_share(0, arrays, np.arange(n))
        else:
            parts = np.array_split(np.arange(n), min(n, self.threads))
            futures = [self.pool.submit(self._run_share, w, arrays, idx) for w, idx in enumerate(parts)]
            results = [f.result() for f in futures]
            outs = [np.concatenate(cols) for cols in zip(*results)]
        return outs

    def map_samples(self, fn: Callable[[Callable[..., list[np.ndarray]], _T], _R], items: Sequence[_T]) -> list[_R]:
        """`fn(run, item)` for every item, on the worker threads: `run(*arrays)` runs one sample on that worker.

        For a model whose work around the network is per sample too (preprocessing, NMS): done on the workers
        it runs in parallel with the network calls instead of between batches on the stage's own thread, and
        each item's result is what it would be alone.
        """
        if self.pool is None or len(items) < 2:
            return [fn(functools.partial(self._run_one, 0), item) for item in items]
        parts = np.array_split(np.arange(len(items)), min(len(items), self.threads))
        run = [functools.partial(self._run_one, w) for w in range(len(parts))]
        futures = [self.pool.submit(lambda w, idx: [fn(run[w], items[i]) for i in idx], w, idx) for w, idx in enumerate(parts)]
        return [r for f in futures for r in f.result()]

    def _run_one(self, worker: int, *inputs: np.ndarray) -> list[np.ndarray]:
        return self._run(worker, [np.ascontiguousarray(x) for x in inputs])

    def _run_share(self, worker: int, arrays: list[np.ndarray], idx: np.ndarray) -> list[np.ndarray]:
        rows = [self._run(worker, [a[i : i + 1] for a in arrays]) for i in idx]
        return [np.concatenate(cols) for cols in zip(*rows)]


class OnnxRuntimeRunner(CpuRunner):
    backend = "onnxruntime"

    def __init__(self, path: Path | str, threads: int, per_sample: bool = False, providers: list[Any] | None = None) -> None:
        import onnxruntime as ort

        super().__init__(threads, per_sample)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1 if self.per_sample else self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # Idle worker threads must not spin: the other stages of the pipeline need those cores.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # One session serves every worker thread: run() is thread-safe.
        self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers or ["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_specs = [
            InputSpec(i.name, _ORT_TYPES.get(i.type, i.type), [d if isinstance(d, int) else None for d in i.shape])
            for i in self.session.get_inputs()
        ]
        self.one_at_a_time = any(spec.shape[:1] == [1] for spec in self.input_specs)

    def _run(self, worker: int, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return list(self.session.run(self.outputs, dict(zip(self.inputs, arrays))))


class OpenVinoRunner(CpuRunner):
    """OpenVINO on the CPU.

    Per sample, each worker thread has a compiled model of its own: one stream, one thread, the batch fixed
    at 1, so that a synchronous call runs in the calling thread and the workers share no executor. The other
    way (one compiled model with a stream per worker, THROUGHPUT hint) deadlocks now and then on 2-core
    machines when requests specialise a shape at once inside the shared TBB arenas: seen hanging our CI, and
    Ultralytics' (ultralytics/ultralytics#25921). Each model is run once at start-up, one after the other, so
    no first-call specialisation happens while the stage is serving frames.
    """

    backend = "openvino"

    def __init__(self, path: Path | str, threads: int, per_sample: bool = False, precision: str = "fp32", fixed_batch: int | None = None) -> None:
        """fixed_batch: compile the batch axis at this size and run any batch as padded chunks of it. OpenVINO
        specialises a dynamic model for each new input shape on its first call (about as long as the call
        itself for the appearance CNN), which a model whose batch size changes every call pays again and again."""
        import openvino as ov

        super().__init__(threads, per_sample)
        core = ov.Core()
        # f32 unless asked: OpenVINO would pick bf16 on CPUs that have it, which moves scores by 1e-2 (parity is
        # 1e-3). bf16 (a declared precision, with its own parity figures) is about twice as fast where the CPU has it.
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"OpenVINO on the CPU runs fp32 or bf16, not {precision}")
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            log.warning("this CPU has no bf16 instructions: OpenVINO runs the model in fp32")
        # No pinning: the stages of a pipeline share the cores, and the worker threads are ours.
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY",
                                  "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}
        # Compiled models are cached beside the exports (OpenVINO keys them by model, settings and CPU): a
        # stage's start-up compiles in less than half the time.
        cache = str(Path(path).parent / "openvino")
        model = core.read_model(str(path))
        self.fixed_batch = fixed_batch if fixed_batch and not self.per_sample else None
        if self.per_sample or self.fixed_batch:
            model = self._batch_of(model, self.fixed_batch or 1)
        config["INFERENCE_NUM_THREADS"] = 1 if self.per_sample else self.threads
        n = self.threads if self.per_sample else 1
        try:
            self.compiled = [core.compile_model(model, "CPU", {**config, "CACHE_DIR": cache}) for _ in range(n)]
        except RuntimeError as exc:  # a cache that cannot be written (disk full, read-only home): compile without
            log.warning("OpenVINO's model cache at %s failed (%s): compiling without it", cache, str(exc).splitlines()[0][:200])
            self.compiled = [core.compile_model(model, "CPU", config) for _ in range(n)]
        self.requests = [c.create_infer_request() for c in self.compiled]
        self.n_out = len(self.compiled[0].outputs)
        self.output_names = [next(iter(o.get_names()), f"out{i}") for i, o in enumerate(self.compiled[0].outputs)]
        self.input_specs = [
            InputSpec(next(iter(i.get_names()), f"in{k}"), i.get_element_type().to_dtype().name,
                      [d.get_length() if d.is_static else None for d in i.get_partial_shape()])
            for k, i in enumerate(self.compiled[0].inputs)
        ]  # fmt: skip
        self.one_at_a_time = not self.per_sample and any(spec.shape[:1] == [1] for spec in self.input_specs)
        if (self.per_sample or self.fixed_batch) and all(i.get_partial_shape().is_static for i in self.requests[0].model_inputs):
            for request in self.requests:
                request.infer([np.zeros(tuple(i.shape), dtype=i.element_type.to_dtype()) for i in request.model_inputs])

    @staticmethod
    def _batch_of(model: Any, n: int) -> Any:
        """The model with every input's batch axis fixed at n (other axes as exported)."""
        shapes = {}
        for port in model.inputs:
            shape = port.get_partial_shape()
            shape[0] = n
            shapes[port] = shape
        model.reshape(shapes)
        return model

    def _call(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        k = self.fixed_batch
        if k is None:
            return super()._call(arrays)
        n = len(arrays[0])
        if n % k:  # zero samples fill the last chunk; their outputs are dropped
            arrays = [np.concatenate([a, np.zeros((k - n % k, *a.shape[1:]), a.dtype)]) for a in arrays]
        chunks = [self._run(0, [np.ascontiguousarray(a[i : i + k]) for a in arrays]) for i in range(0, len(arrays[0]), k)]
        return [np.concatenate(cols)[:n] for cols in zip(*chunks)]

    def _run(self, worker: int, arrays: list[np.ndarray]) -> list[np.ndarray]:
        result = self.requests[worker].infer(arrays)
        # The request reuses its output buffers on the next call: copy.
        return [np.array(result[i], copy=True) for i in range(self.n_out)]


def _bucket(n: int) -> int:
    return 1 << (n - 1).bit_length()


class CudaGraphRunner(Runner):
    """fp16 on a CUDA device; each padded input shape is captured once as a CUDA graph and replayed.

    Shapes vary only in the batch (rounded up to a power of two) for fixed-size models; a model with other
    dynamic axes (`graphs=False`) runs eagerly in fp16. Outputs are float32, like the other backends.
    """

    backend = "cuda"

    def __init__(self, module: nn.Module, device: torch.device, graphs: bool = True, max_graphs: int = 16) -> None:
        import torch

        self.torch = torch
        self.module = module.eval().to(device)
        self.device = device
        self.graphs_on = graphs
        self.max_graphs = max_graphs
        self.graphs: dict[tuple[Any, ...], tuple[Any, list[Tensor], tuple[Tensor, ...]]] = {}

    def _eager(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        torch = self.torch
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
            out = self.module(*inputs)
        out = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        return tuple(o.float() if o.is_floating_point() else o for o in out)

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        inputs = tuple(x.to(self.device, non_blocking=True) for x in inputs)
        n = inputs[0].shape[0]
        if not self.graphs_on:
            return self._eager(inputs)
        b = _bucket(n)
        key = tuple((b, *x.shape[1:], x.dtype) for x in inputs)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.max_graphs:
                return self._eager(inputs)
            entry = self._capture(inputs, b)
            self.graphs[key] = entry
        graph, static_in, static_out = entry
        for s, x in zip(static_in, inputs):
            s[:n].copy_(x)
            if n < b:
                s[n:].zero_()
        graph.replay()
        return tuple(o[:n].clone() for o in static_out)

    def _capture(self, inputs: Sequence[Tensor], b: int) -> tuple[Any, list[Tensor], tuple[Tensor, ...]]:
        torch = self.torch
        static_in = [torch.zeros((b, *x.shape[1:]), dtype=x.dtype, device=self.device) for x in inputs]
        for s, x in zip(static_in, inputs):
            s[: x.shape[0]].copy_(x)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(3):  # warm-up on a side stream, as capture requires
                self._eager(static_in)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._eager(static_in)
        return graph, static_in, static_out


_threads: int | None = None


def set_threads(n: int) -> None:
    """The CPU threads of this process's models: the ONNX runtimes' default, and torch's, now if it is loaded,
    else when it loads (OMP_NUM_THREADS, which torch reads then)."""
    global _threads
    _threads = n
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def default_threads() -> int:
    """CPU threads of the ONNX runtimes when none are given: what set_threads said, else torch's thread count
    where torch is loaded, else the CPUs this process may use."""
    if _threads is not None:
        return _threads
    if "torch" in sys.modules:
        return int(sys.modules["torch"].get_num_threads())
    from pipeline.device import cpu_cores

    return cpu_cores()


def _cpu_runner(chosen: str, path: Path, threads: int | None, per_sample: bool, precision: str = "fp32", fixed_batch: int | None = None) -> Runner:
    if chosen == "openvino":
        return OpenVinoRunner(path, threads or default_threads(), per_sample, precision, fixed_batch)
    if precision != "fp32":
        raise ValueError(f"precision {precision} on the CPU runs on openvino (or eager torch), not {chosen}")
    return OnnxRuntimeRunner(path, threads or default_threads(), per_sample)


def compile_module(
    module: nn.Module,
    examples: Sequence[Tensor],
    *,
    name: str,
    backend: str = "auto",
    device: torch.device | str = "cpu",
    cpu_default: CpuRuntime = "onnxruntime",
    threads: int | None = None,
    channels_last: bool = True,
    dynamic: dict[int, dict[int, str]] | None = None,
    extra: str = "",
    per_sample: bool = False,
    key: str | None = None,
    precision: str = "fp32",
    fixed_batch: int | None = None,
) -> Runner:
    """Runs `module` on the backend asked for (see the module docstring); `examples` are CPU tensors of
    the inputs (any batch size), used for the export and its cache key (`key`, when given, is that key instead of
    a hash of the module). `threads`: CPU threads of the ONNX runtimes (default: default_threads());
    `per_sample`: use them as parallel single-sample calls; `fixed_batch`: OpenVINO runs padded chunks of this
    many samples (OpenVinoRunner)."""
    import torch

    device = torch.device(device)
    chosen = resolve_backend(backend, device, cpu_default)
    module = module.eval()
    if chosen == "torch":
        return TorchRunner(module.to(device), channels_last=channels_last)
    if chosen == "cuda":
        return CudaGraphRunner(module, device, graphs=not dynamic)
    try:
        path = export_onnx(module.cpu(), [x.cpu() for x in examples], name, extra, dynamic, key)
    except Exception as exc:  # an op the exporter does not know: the model still runs, in eager torch
        if backend != "auto":
            raise ValueError(f"{name} cannot be exported for {chosen}: {str(exc).splitlines()[0][:300]}") from None
        log.warning("%s cannot be exported to ONNX (%s): it runs in eager torch", name, str(exc).splitlines()[0][:300])
        return TorchRunner(module.to(device), channels_last=channels_last)
    return _cpu_runner(chosen, path, threads, per_sample, precision, fixed_batch)


def compile_cached(
    build: Callable[[], tuple[nn.Module, Sequence[Tensor]]],
    *,
    key: str,
    name: str,
    backend: str = "auto",
    device: str = "cpu",
    cpu_default: CpuRuntime = "onnxruntime",
    threads: int | None = None,
    channels_last: bool = True,
    per_sample: bool = False,
    precision: str = "fp32",
    fixed_batch: int | None = None,
) -> Runner:
    """compile_module for a model whose export key is known from its files (file_key): when it runs on a CPU
    runtime and its export is cached, `build` (which makes the module and its example inputs) is never called,
    and torch is never imported. Otherwise the module is built and compiled as by compile_module, its export
    filed under `key`."""
    chosen = resolve_backend(backend, device, cpu_default)
    if chosen in ("onnxruntime", "openvino") and _export_path(name, key).exists():
        return _cpu_runner(chosen, _export_path(name, key), threads, per_sample, precision, fixed_batch)
    module, examples = build()
    return compile_module(module, examples, name=name, backend=backend, device=device, cpu_default=cpu_default,
                          threads=threads, channels_last=channels_last, per_sample=per_sample, key=key,
                          precision=precision, fixed_batch=fixed_batch)  # fmt: skip


def load_onnx(
    path: Path | str,
    *,
    backend: str = "auto",
    device: torch.device | str = "cpu",
    cpu_default: CpuRuntime = "onnxruntime",
    threads: int | None = None,
) -> Runner:
    """A model that exists only as an ONNX file (a user's own detector): run by onnxruntime or OpenVINO on the
    CPU, or by ONNX Runtime's CUDA provider on a GPU (`cuda`); there is no torch form to run eagerly.
    ValueError names the file and the problem when it does not load."""
    if backend == "torch":
        raise ValueError("an ONNX model has no torch form: use backend auto, onnxruntime, openvino or cuda")
    on_cuda = _device_type(device) == "cuda"
    chosen = "cuda" if backend == "cuda" or (backend == "auto" and on_cuda) else resolve_backend(backend, "cpu", cpu_default)
    if chosen == "torch":  # auto without the preferred runtime: the other one, if it is there
        others = [b for b in ("onnxruntime", "openvino") if available(b)]
        if not others:
            raise ValueError("ONNX models need onnxruntime or openvino: pip install onnxruntime")
        chosen = others[0]
    n = threads or default_threads()
    try:
        if chosen == "cuda":
            if not on_cuda:
                raise ValueError("backend cuda needs a CUDA device (device: auto or cuda)")
            index = int(str(device).partition(":")[2] or 0)
            providers: list[Any] = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
            runner: Runner = OnnxRuntimeRunner(path, n, providers=providers)
            runner.backend = "cuda"
            return runner
        return OnnxRuntimeRunner(path, n) if chosen == "onnxruntime" else OpenVinoRunner(path, n)
    except ValueError:
        raise
    except Exception as exc:  # the runtimes' own errors: a file that is not ONNX, an op they do not know
        raise ValueError(f"cannot load {str(path)!r} as ONNX ({chosen}): {str(exc).strip().splitlines()[0][:300]}") from None
