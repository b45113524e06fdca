"""birkhoff from Python: compile graphs, run them on NumPy arrays and torch
tensors, and use birkhoff's fused mHC kernels as PyTorch custom ops
(:mod:`birkhoff.torch`).

>>> import numpy as np, birkhoff
>>> m = birkhoff.compile("mhc-post", tokens=4, hidden=8)
>>> [name for name, *_ in m.signature()]
['layer_output', 'residual', 'post_mix', 'comb_mix']
"""

from __future__ import annotations

import numpy as np

from . import _native
from ._native import __version__

__all__ = ["compile", "Module", "__version__"]

_NUMPY_DTYPES = {
    "f32": np.dtype("<f4"),
    "f64": np.dtype("<f8"),
    "i32": np.dtype("<i4"),
    "bool": np.dtype("bool"),
    # bf16 travels as its 16-bit patterns.
    "bf16": np.dtype("<u2"),
}


def compile(source, backend="cpu", optimize=True, **flags):
    """Compiles ``source`` and returns a callable :class:`Module`.

    ``source`` is a zoo model name (``"mhc-sublayer"``, with the zoo's flags
    as keywords: ``tokens=``, ``hidden=``, ``sinkhorn="paper"``, ...), IR
    text holding one graph, or the path of a ``.bir`` or ``.onnx`` file.
    ``backend`` is ``"cpu"`` (Cranelift), ``"gpu"`` (a build with the ``gpu``
    feature and a CUDA device) or ``"interp"`` (the f64 reference
    interpreter). ``threads=`` and ``projection=`` set the compiler's
    options. Errors in the source (a parse error with its line and column,
    an unknown model or flag, a type error) raise ``ValueError``.
    """
    return Module(_native.compile(str(source), backend, optimize, flags))


def _is_torch(value):
    mod = type(value).__module__
    return mod.startswith("torch")


def _bf16_bits(a):
    """float32 → bf16 bit patterns, rounding to nearest even (NaN stays NaN)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    bits = a.view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def _from_bf16_bits(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


class Module:
    """A compiled graph. Call it with its inputs, positionally (in the
    graph's order, skipping inputs that have defaults) or by name; it returns
    one output, or a tuple when the graph has several. Inputs are NumPy
    arrays or CPU torch tensors of exactly the declared dtype and shape
    (bf16 inputs: torch ``bfloat16`` tensors, or float32 arrays that are
    rounded to nearest even). Outputs are NumPy arrays, or torch tensors when
    any input was one (bf16 outputs: ``bfloat16`` tensors, float32 arrays).
    Nothing is copied: inputs are read in place (non-contiguous ones are made
    contiguous first), and outputs take over the memory the program wrote.
    """

    def __init__(self, native):
        self._native = native
        self._inputs = native.inputs()
        self._outputs = native.outputs()

    def signature(self):
        """``(name, kind, dtype, shape, has_default)`` per input."""
        return [tuple(i) for i in self._inputs]

    def output_signature(self):
        """``(name, dtype, shape)`` per output."""
        return [tuple(o) for o in self._outputs]

    def ir(self):
        """The graph that runs (after the optimizer), as IR text."""
        return self._native.ir()

    def kernel_ir(self):
        """The lowered kernel program, as text."""
        return self._native.kernel_ir()

    def fusion_report(self):
        """What the optimizer fused and why, as text (``None`` if off)."""
        return self._native.fusion_report()

    def compile_seconds(self):
        """How long compiling took."""
        return self._native.compile_seconds()

    def __call__(self, *args, **kwargs):
        required = [i for i in self._inputs if not i[4]]
        if len(args) > len(required):
            raise TypeError(
                f"{len(args)} positional inputs given, the graph takes at most "
                f"{len(required)}: {', '.join(i[0] for i in required)}"
            )
        named = {}
        for spec, value in zip(required, args):
            named[spec[0]] = value
        for name, value in kwargs.items():
            if name in named:
                raise TypeError(f"input {name!r} given twice")
            named[name] = value
        out = self.run(named)
        values = tuple(out.values())
        return values[0] if len(values) == 1 else values

    def run(self, inputs):
        """Runs on a dict of inputs by name; returns a dict of outputs in
        the graph's order."""
        specs = {i[0]: i for i in self._inputs}
        as_torch = any(_is_torch(v) for v in inputs.values())
        buffers = []
        for name, value in inputs.items():
            if name not in specs:
                raise KeyError(
                    f"{name!r} is not an input; the inputs are "
                    f"{', '.join(specs)}"
                )
            _, _, dtype, shape, _ = specs[name]
            array = _to_numpy(name, value, dtype)
            if list(array.shape) != list(shape):
                raise ValueError(
                    f"input {name!r}: expected shape {list(shape)}, got "
                    f"{list(array.shape)}"
                )
            buffers.append((name, array))
        raw = self._native.run(buffers)
        return {name: _wrap(dtype, array, as_torch) for name, dtype, array in raw}


def _to_numpy(name, value, dtype):
    """A C-contiguous little-endian array of ``dtype``'s layout, without a
    copy where the value already has it."""
    if _is_torch(value):
        want = _torch_dtype(dtype)
        if value.dtype != want:
            raise TypeError(f"input {name!r}: expected torch.{str(want)[6:]}, got {value.dtype}")
        if value.device.type != "cpu":
            raise TypeError(
                f"input {name!r} is on {value.device}; Module takes CPU tensors"
            )
        return _tensor_array(value)
    array = np.asarray(value)
    if dtype == "bf16":
        if array.dtype != np.float32:
            raise TypeError(
                f"input {name!r}: a bf16 input takes float32 arrays (rounded to "
                f"bf16) or torch.bfloat16 tensors, got {array.dtype}"
            )
        return _bf16_bits(array)
    want = _NUMPY_DTYPES[dtype]
    if array.dtype != want:
        raise TypeError(f"input {name!r}: expected {want.name}, got {array.dtype}")
    return np.ascontiguousarray(array)


def _tensor_array(t):
    """A CPU tensor's elements as a C-contiguous NumPy array, without a copy
    where it is contiguous (bf16 as its uint16 bit patterns). DLPack rather
    than ``.numpy()``, which would mark the storage as never resizable
    again: FSDP frees gathered parameters by resizing their storage to
    zero."""
    import torch

    t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return np.from_dlpack(t.view(torch.int16)).view(np.uint16)
    return np.from_dlpack(t)


def _torch_dtype(dtype):
    import torch

    return {
        "f32": torch.float32,
        "f64": torch.float64,
        "bf16": torch.bfloat16,
        "i32": torch.int32,
        "bool": torch.bool,
    }[dtype]


def _wrap(dtype, array, as_torch):
    """An output array (bf16 as uint16 bits) as the caller wants it, without
    a copy (NumPy bf16 outputs are widened to float32)."""
    if as_torch:
        import torch

        if dtype == "bf16":
            return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(array)
    if dtype == "bf16":
        return _from_bf16_bits(array)
    return array
