#!/usr/bin/env python3
"""Generate the ONNX importer's fixtures: tests/onnx/fixtures/.

    pip install torch onnx onnxscript onnxruntime numpy
    python tests/onnx/gen.py [--out DIR]

Wipes DIR (default tests/onnx/fixtures next to this script) and writes, per
case, DIR/<case>/model.onnx (+ model.onnx.data), the inputs in<k>.npy in
graph-input order and onnxruntime's outputs out<k>.npy in graph-output
order, then DIR/manifest.json (a list, one object per case) and
DIR/versions.txt. Everything is seeded, so a rerun with the same package
versions writes the same files. tests/onnx/README.md describes the format.

Small op models are built with onnx.helper and checked with
onnx.checker; the larger models are torch.nn.Modules (tests/onnx/models.py)
exported with the dynamo exporter. onnxruntime (CPUExecutionProvider, graph
optimizations off) computes the expected outputs; torch-exported cases are
also compared with PyTorch eager, and the mHC cases with a float64 NumPy
implementation of docs/design.md section 2 computed from the packed
(fn, scale, base) the fused mhc_pre op would take.
"""

import argparse
import collections
import contextlib
import io
import json
import logging
import os
import shutil
import sys
import warnings
import zlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ beside models.py

HERE = os.path.dirname(os.path.abspath(__file__))

F32, F64, I64, BOOL = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.BOOL
NP_TO_ONNX = {np.dtype(np.float32): F32, np.dtype(np.float64): F64, np.dtype(np.int64): I64,
              np.dtype(np.bool_): BOOL, np.dtype(np.float16): TensorProto.FLOAT16}

OUT = None  # the fixtures directory
MANIFEST = []
NOTES = []  # things that did not go as planned, printed at the end


def rng_for(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def case_dir(name):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    return d


def default_opset(model):
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    raise ValueError("no default-domain opset")


def run_ort(path, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return names, sess.run(names, feeds)


def record(name, path, inputs, tolerance="f32", dims=None, fuse=None, what=None, expect=None, rtol=None):
    """Run onnxruntime on the saved model at `path` with `inputs` (a list of
    arrays in graph-input order), save the .npy files and append the
    manifest entry. `expect`: reference outputs to compare onnxruntime's
    against (a list, graph-output order), with relative bound `rtol`."""
    model = onnx.load(path, load_external_data=False)
    init_names = {i.name for i in model.graph.initializer}
    in_names = [i.name for i in model.graph.input if i.name not in init_names]
    assert len(in_names) == len(inputs), (name, in_names, len(inputs))
    d = case_dir(name)
    entry = {"name": name, "model": f"{name}/model.onnx", "opset": default_opset(model), "inputs": [], "outputs": []}
    feeds = {}
    for k, (n, a) in enumerate(zip(in_names, inputs)):
        # birkhoff's integer type is i32: integer inputs are saved as int32
        # (onnxruntime still gets the int64 the model declares).
        saved = a.astype(np.int32) if a.dtype == np.int64 else a
        assert np.array_equal(saved, a), (name, n, "integer input outside the int32 range")
        np.save(os.path.join(d, f"in{k}.npy"), saved)
        entry["inputs"].append([n, f"{name}/in{k}.npy"])
        feeds[n] = a
    out_names, outs = run_ort(path, feeds)
    assert out_names == [o.name for o in model.graph.output]
    for k, (n, a) in enumerate(zip(out_names, outs)):
        assert np.all(np.isfinite(a)) if a.dtype.kind == "f" else True, (name, n)
        np.save(os.path.join(d, f"out{k}.npy"), a)
        entry["outputs"].append([n, f"{name}/out{k}.npy"])
    if dims:
        entry["dims"] = dims
    if fuse:
        entry["fuse"] = fuse
    entry["tolerance"] = tolerance
    if what:
        entry["what"] = what
    if expect is not None:
        for n, a, e in zip(out_names, outs, expect):
            e = np.asarray(e)
            assert a.shape == e.shape, (name, n, a.shape, e.shape)
            err = float(np.abs(a.astype(np.float64) - e.astype(np.float64)).max())
            peak = float(np.abs(e).max())
            bound = rtol if rtol is not None else 1e-4
            assert err <= bound * max(peak, 1.0), f"{name}/{n}: onnxruntime differs from the reference by {err} (peak {peak})"
            entry.setdefault("_checked", []).append(f"{n}: |ort-ref| {err:.2e} peak {peak:.2f}")
    MANIFEST.append(entry)
    return entry, outs


# ----------------------------------------------------------------------------
# 1. single-op models built with onnx.helper


def vi(name, arr_or_type, shape=None):
    if isinstance(arr_or_type, np.ndarray):
        return helper.make_tensor_value_info(name, NP_TO_ONNX[arr_or_type.dtype], arr_or_type.shape)
    return helper.make_tensor_value_info(name, arr_or_type, shape)


def op_case(name, nodes, inputs, outputs, inits=None, opset=20, out_types=None, tolerance="f32",
            what=None, expect=None, check=True):
    """inputs: list of (name, array); outputs: list of names (float32 unless
    out_types says otherwise); inits: dict name -> array. The output shapes
    are taken from a first onnxruntime run and written into the model."""
    inits = inits or {}
    out_types = out_types or {}
    init_protos = [numpy_helper.from_array(np.asarray(a), n) for n, a in inits.items()]

    def build(out_shapes):
        outs = [vi(n, out_types.get(n, F32), out_shapes.get(n)) for n in outputs]
        g = helper.make_graph(nodes, name, [vi(n, a) for n, a in inputs], outs, init_protos)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="birkhoff-gen")
        m.ir_version = 10 if opset <= 21 else 11
        return m

    d = case_dir(name)
    path = os.path.join(d, "model.onnx")
    m = build({})
    onnx.save(m, path)
    _, outs = run_ort(path, {n: a for n, a in inputs})
    m = build({n: list(a.shape) for n, a in zip(outputs, outs)})
    if check:
        onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
    return record(name, path, [a for _, a in inputs], tolerance=tolerance, what=what, expect=expect)


def N(op, ins, outs, **attrs):
    return helper.make_node(op, ins, outs if isinstance(outs, list) else [outs], **attrs)


def gen_op_cases():
    r = rng_for("ops")

    def x(*shape, lo=None, hi=None, seed=None):
        g = r
        if lo is not None:
            return g.uniform(lo, hi, size=shape).astype(np.float32)
        return g.standard_normal(shape).astype(np.float32)

    def away_from_zero(*shape):
        a = x(*shape)
        return (np.sign(a) * (np.abs(a) + 0.5)).astype(np.float32)

    # Elementwise binary ops, with and without broadcasting.
    op_case("op_add", [N("Add", ["x", "y"], "z")], [("x", x(3, 4, 8)), ("y", x(3, 4, 8))], ["z"],
            what="Add, equal shapes")
    op_case("op_add_broadcast", [N("Add", ["x", "y"], "z")], [("x", x(3, 1, 8)), ("y", x(4, 1))], ["z"],
            what="Add, bidirectional broadcast [3,1,8]+[4,1]")
    op_case("op_sub", [N("Sub", ["x", "w"], "z")], [("x", x(3, 4, 8))], ["z"], inits={"w": x(8)},
            what="Sub with an initializer operand broadcast over the last axis")
    op_case("op_mul", [N("Mul", ["x", "y"], "z")], [("x", x(3, 4, 8)), ("y", x(1, 4, 1))], ["z"], what="Mul")
    op_case("op_div", [N("Div", ["x", "y"], "z")], [("x", x(3, 4, 8)), ("y", away_from_zero(4, 8))], ["z"],
            what="Div")
    op_case("op_pow", [N("Pow", ["x", "y"], "z")], [("x", x(3, 8, lo=0.5, hi=2.0)), ("y", x(3, 8))], ["z"],
            what="Pow, positive base, tensor exponent")
    op_case("op_pow_square", [N("Pow", ["x", "two"], "z")], [("x", x(3, 8))], ["z"],
            inits={"two": np.array(2.0, np.float32)},
            what="Pow with a constant scalar exponent 2 on a signed base (exporters emit it for x.pow(2))")
    op_case("op_pow_rsqrt", [N("Pow", ["x", "e"], "z")], [("x", x(3, 8, lo=0.1, hi=3.0))], ["z"],
            inits={"e": np.array(-0.5, np.float32)}, what="Pow with exponent -0.5")
    # Unary ops.
    pos = x(3, 4, 8, lo=0.05, hi=4.0)
    for op, arr in [("Sqrt", pos), ("Reciprocal", away_from_zero(3, 4, 8)), ("Exp", x(3, 4, 8)), ("Log", pos),
                    ("Neg", x(3, 4, 8)), ("Abs", x(3, 4, 8)), ("Tanh", x(3, 4, 8) * 2), ("Sigmoid", x(3, 4, 8) * 3),
                    ("Relu", x(3, 4, 8)), ("Erf", x(3, 4, 8))]:
        op_case(f"op_{op.lower()}", [N(op, ["x"], "y")], [("x", arr)], ["y"], what=op)
    op_case("op_where", [N("Where", ["c", "x", "y"], "z")], [("x", x(3, 4, 8)), ("y", x(4, 8))], ["z"],
            inits={"c": r.random((3, 1, 8)) < 0.5}, what="Where with a bool initializer condition, broadcasting")
    op_case("op_max", [N("Max", ["x", "y", "w"], "z")], [("x", x(3, 4, 8)), ("y", x(4, 8))], ["z"],
            inits={"w": x(8)}, what="Max, three operands, broadcasting")
    op_case("op_min", [N("Min", ["x", "y"], "z")], [("x", x(3, 4, 8)), ("y", x(3, 1, 8))], ["z"], what="Min")
    op_case("op_clip", [N("Clip", ["x", "lo", "hi"], "y")], [("x", x(3, 4, 8) * 2)], ["y"],
            inits={"lo": np.array(-0.5, np.float32), "hi": np.array(0.75, np.float32)}, what="Clip with min and max")
    op_case("op_clip_min_only", [N("Clip", ["x", "lo"], "y")], [("x", x(3, 4, 8))], ["y"],
            inits={"lo": np.array(0.1, np.float32)}, what="Clip with min only")
    op_case("op_clip_max_only", [N("Clip", ["x", "", "hi"], "y")], [("x", x(3, 4, 8))], ["y"],
            inits={"hi": np.array(-0.2, np.float32)}, what="Clip with max only (empty min name)")
    # Comparisons: their bool result picks through Where.
    ia = np.round(x(3, 4, 8) * 1.5).astype(np.float32)
    ib = np.round(x(4, 8) * 1.5).astype(np.float32)
    for op in ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"]:
        nm = "op_" + "".join("_" + ch.lower() if ch.isupper() else ch for ch in op).lstrip("_")
        op_case(nm, [N(op, ["x", "y"], "c"), N("Where", ["c", "x", "y"], "z")], [("x", ia), ("y", ib)], ["z"],
                what=f"{op} (values with ties) feeding Where")
    # MatMul / Gemm / Einsum.
    op_case("op_matmul_2d", [N("MatMul", ["a", "b"], "c")], [("a", x(5, 8)), ("b", x(8, 6))], ["c"], what="MatMul 2-D")
    op_case("op_matmul_batched", [N("MatMul", ["a", "b"], "c")], [("a", x(3, 5, 8)), ("b", x(3, 8, 6))], ["c"],
            what="MatMul batched 3-D")
    op_case("op_matmul_broadcast", [N("MatMul", ["a", "w"], "c")], [("a", x(2, 5, 8))], ["c"], inits={"w": x(8, 6)},
            what="MatMul [B,M,K] x [K,N] (weight initializer)")
    op_case("op_matmul_broadcast_batch", [N("MatMul", ["a", "b"], "c")], [("a", x(2, 1, 5, 8)), ("b", x(3, 8, 6))],
            ["c"], what="MatMul [2,1,M,K] x [3,K,N] -> [2,3,M,N]")
    op_case("op_gemm_linear", [N("Gemm", ["a", "w", "bias"], "c", transB=1)], [("a", x(5, 8))], ["c"],
            inits={"w": x(6, 8), "bias": x(6)}, what="Gemm transB=1 with C [N] (a Linear)")
    op_case("op_gemm_transa_alpha_beta", [N("Gemm", ["a", "b", "cc"], "c", transA=1, alpha=0.5, beta=2.0)],
            [("a", x(8, 5)), ("b", x(8, 6)), ("cc", x(5, 6))], ["c"], what="Gemm transA=1 alpha=0.5 beta=2 C [M,N]")
    op_case("op_gemm_no_c", [N("Gemm", ["a", "b"], "c", transA=1, transB=1, alpha=1.5)],
            [("a", x(8, 5)), ("b", x(6, 8))], ["c"], what="Gemm transA=1 transB=1 without C")
    op_case("op_gemm_c_column", [N("Gemm", ["a", "b", "cc"], "c", beta=-1.0)], [("a", x(5, 8)), ("b", x(8, 6))],
            ["c"], inits={"cc": x(5, 1)}, what="Gemm with C [M,1] broadcast, beta=-1")
    for nm, eq, shapes in [("op_einsum_btc_cd", "btc,cd->btd", [(2, 5, 8), (8, 6)]),
                           ("op_einsum_tij_tjc", "tij,tjc->tic", [(5, 4, 4), (5, 4, 8)]),
                           ("op_einsum_transpose", "bij->bji", [(3, 4, 6)]),
                           ("op_einsum_tnc_tmc", "tnc,tmc->tnm", [(5, 4, 8), (5, 3, 8)])]:
        ins = [(f"x{k}", x(*s)) for k, s in enumerate(shapes)]
        op_case(nm, [N("Einsum", [n for n, _ in ins], "y", equation=eq)], ins, ["y"], what=f"Einsum '{eq}'")
    # Reductions: axes as an input (opset 18+).
    ax = lambda *a: np.array(a, np.int64)
    op_case("op_reduce_sum", [N("ReduceSum", ["x", "axes"], "y", keepdims=1)], [("x", x(3, 4, 8))], ["y"],
            inits={"axes": ax(1)}, what="ReduceSum axes [1] keepdims 1")
    op_case("op_reduce_sum_all", [N("ReduceSum", ["x"], "y", keepdims=0)], [("x", x(3, 4, 8))], ["y"],
            what="ReduceSum without axes (all axes), keepdims 0 -> a scalar")
    op_case("op_reduce_mean", [N("ReduceMean", ["x", "axes"], "y", keepdims=0)], [("x", x(3, 4, 8))], ["y"],
            inits={"axes": ax(-1)}, what="ReduceMean axes [-1] keepdims 0")
    op_case("op_reduce_max", [N("ReduceMax", ["x", "axes"], "y", keepdims=1)], [("x", x(3, 4, 8))], ["y"],
            inits={"axes": ax(0, 2)}, what="ReduceMax axes [0,2] keepdims 1")
    op_case("op_reduce_min", [N("ReduceMin", ["x", "axes"], "y", keepdims=0)], [("x", x(3, 4, 8))], ["y"],
            inits={"axes": ax(1)}, what="ReduceMin axes [1] keepdims 0")
    op_case("op_reduce_opset17",
            [N("ReduceMean", ["x"], "mean", axes=[-1], keepdims=1), N("ReduceMax", ["x"], "max", axes=[0, 1], keepdims=0),
             N("ReduceMin", ["x"], "min", axes=[1], keepdims=1), N("ReduceSum", ["x", "axes"], "sum", keepdims=0)],
            [("x", x(3, 4, 8))], ["mean", "max", "min", "sum"], inits={"axes": ax(2)}, opset=17,
            what="opset 17: ReduceMean/Max/Min with axes attributes, ReduceSum with an axes input; four outputs")
    # Shape ops.
    op_case("op_reshape", [N("Reshape", ["x", "s"], "y")], [("x", x(3, 4, 8))], ["y"], inits={"s": ax(0, -1, 4)},
            what="Reshape [3,4,8] -> [0,-1,4]")
    op_case("op_transpose", [N("Transpose", ["x"], "y", perm=[2, 0, 1])], [("x", x(3, 4, 8))], ["y"], what="Transpose")
    op_case("op_unsqueeze", [N("Unsqueeze", ["x", "a"], "y")], [("x", x(3, 8))], ["y"], inits={"a": ax(0, -1)},
            what="Unsqueeze axes [0,-1]")
    op_case("op_squeeze", [N("Squeeze", ["x", "a"], "y")], [("x", x(3, 1, 8, 1))], ["y"], inits={"a": ax(1)},
            what="Squeeze axes [1]")
    op_case("op_squeeze_all", [N("Squeeze", ["x"], "y")], [("x", x(3, 1, 8, 1))], ["y"],
            what="Squeeze without axes (all size-1 axes)")
    op_case("op_expand", [N("Expand", ["x", "s"], "y")], [("x", x(3, 1, 8))], ["y"], inits={"s": ax(2, 3, 4, 8)},
            what="Expand [3,1,8] -> [2,3,4,8]")
    op_case("op_expand_ones", [N("Expand", ["x", "s"], "y")], [("x", x(4, 1))], ["y"], inits={"s": ax(1, 6)},
            what="Expand [4,1] with shape [1,6] (bidirectional: result [4,6])")
    op_case("op_concat", [N("Concat", ["a", "b", "c"], "y", axis=1)], [("a", x(3, 2, 8)), ("b", x(3, 4, 8))], ["y"],
            inits={"c": x(3, 1, 8)}, what="Concat of three (one an initializer), axis 1")
    op_case("op_split_input", [N("Split", ["x", "s"], ["a", "b", "c"], axis=-1)], [("x", x(3, 8))], ["a", "b", "c"],
            inits={"s": ax(2, 3, 3)}, what="Split with the split input [2,3,3], axis -1")
    op_case("op_split_num_outputs", [N("Split", ["x"], ["a", "b"], axis=1, num_outputs=2)], [("x", x(3, 4, 8))],
            ["a", "b"], what="Split num_outputs=2 (equal parts), axis 1")
    op_case("op_split_uneven", [N("Split", ["x"], ["a", "b", "c"], axis=0, num_outputs=3)], [("x", x(8, 3))],
            ["a", "b", "c"], opset=18, what="opset 18: Split num_outputs=3 of 8 (3,3,2)")
    op_case("op_slice", [N("Slice", ["x", "st", "en", "ax", "sp"], "y")], [("x", x(3, 6, 8))], ["y"],
            inits={"st": ax(-4, 1), "en": ax(-1, 100), "ax": ax(1, -1), "sp": ax(1, 1)},
            what="Slice with axes and steps inputs, negative starts/ends, an end past the axis")
    op_case("op_slice_noaxes", [N("Slice", ["x", "st", "en"], "y")], [("x", x(3, 6, 8))], ["y"],
            inits={"st": ax(1, 0), "en": ax(3, 9223372036854775807)},
            what="Slice without axes/steps (axes 0,1), end INT64_MAX")
    op_case("op_gather_scalar", [N("Gather", ["x", "i"], "y", axis=1)], [("x", x(3, 5, 8))], ["y"],
            inits={"i": np.array(2, np.int64)}, what="Gather a scalar constant index on axis 1 (drops the axis)")
    op_case("op_gather_list", [N("Gather", ["x", "i"], "y", axis=2)], [("x", x(3, 5, 8))], ["y"],
            inits={"i": ax(5, 0, -1, 3)}, what="Gather constant indices [5,0,-1,3] on axis 2 (one negative)")
    op_case("op_softmax", [N("Softmax", ["x"], "y", axis=-1)], [("x", x(3, 4, 8) * 3)], ["y"], what="Softmax axis -1")
    op_case("op_softmax_axis1", [N("Softmax", ["x"], "y", axis=1)], [("x", x(3, 4, 8) * 3)], ["y"],
            what="Softmax axis 1 (of a 3-D input)")
    op_case("op_log_softmax", [N("LogSoftmax", ["x"], "y", axis=-1)], [("x", x(3, 4, 8) * 3)], ["y"],
            what="LogSoftmax axis -1")
    op_case("op_layer_norm", [N("LayerNormalization", ["x", "g", "b"], "y", axis=-1, epsilon=1e-5)],
            [("x", x(3, 4, 8) * 2 + 1)], ["y"], inits={"g": x(8), "b": x(8)},
            what="LayerNormalization with scale and bias, axis -1")
    try:
        op_case("op_rms_norm", [N("RMSNormalization", ["x", "g"], "y", axis=-1, epsilon=1e-5)],
                [("x", x(3, 4, 8) * 2)], ["y"], inits={"g": x(8)}, opset=23, what="RMSNormalization (opset 23)")
    except Exception as e:  # noqa: BLE001
        shutil.rmtree(os.path.join(OUT, "op_rms_norm"), ignore_errors=True)
        NOTES.append(f"op_rms_norm skipped: {type(e).__name__}: {str(e)[:200]}")
    op_case("op_cast_f64", [N("Cast", ["x"], "x64", to=F64), N("Mul", ["x64", "w"], "p"), N("Cast", ["p"], "y", to=F32)],
            [("x", x(3, 8))], ["y"], inits={"w": r.standard_normal(8)},
            what="Cast f32 -> f64, Mul by an f64 initializer, Cast back to f32")
    xb = x(4, 16)
    xb[0, :4] = np.array([1.00390625, 1.01171875, -1.00390625, 3.0e-39], np.float32)  # ties to even, a subnormal
    op_case("op_cast_bf16", [N("Cast", ["x"], "b", to=TensorProto.BFLOAT16), N("Cast", ["b"], "y", to=F32)],
            [("x", xb)], ["y"], what="Cast f32 -> bf16 -> f32 (round to nearest even; has ties and a subnormal)")
    op_case("op_constant",
            [N("Constant", [], "c", value=numpy_helper.from_array(x(8), "c")), N("Add", ["x", "c"], "s"),
             N("Constant", [], "k", value_float=0.25), N("Mul", ["s", "k"], "y")],
            [("x", x(3, 8))], ["y"], what="Constant (value tensor and value_float)")
    op_case("op_constant_of_shape",
            [N("Shape", ["x"], "s"), N("ConstantOfShape", ["s"], "c", value=numpy_helper.from_array(np.array([2.5], np.float32))),
             N("Mul", ["x", "c"], "y")],
            [("x", x(3, 4))], ["y"], what="Shape -> ConstantOfShape(value 2.5) -> Mul")
    op_case("op_constant_of_shape_default", [N("ConstantOfShape", ["s"], "c"), N("Add", ["x", "c"], "y")],
            [("x", x(3, 4))], ["y"], inits={"s": ax(2, 3, 4)}, what="ConstantOfShape without value (zeros f32)")
    op_case("op_identity", [N("Identity", ["x"], "y")], [("x", x(3, 4))], ["y"], what="Identity")
    op_case("op_trilu_upper", [N("Trilu", ["x", "k"], "y", upper=1)], [("x", x(2, 5, 6))], ["y"],
            inits={"k": np.array(1, np.int64)}, what="Trilu upper, k=1, batched non-square")
    op_case("op_trilu_lower", [N("Trilu", ["x", "k"], "y", upper=0)], [("x", x(6, 4))], ["y"],
            inits={"k": np.array(-1, np.int64)}, what="Trilu lower, k=-1")
    op_case("op_trilu_default", [N("Trilu", ["x"], "y")], [("x", x(5, 5))], ["y"], what="Trilu without k (upper, k=0)")
    # Activations ONNX has as ops, and reductions built from several IR ops.
    for nm, op, kw in [("op_softplus", "Softplus", {}), ("op_leaky_relu", "LeakyRelu", {"alpha": 0.2}),
                       ("op_elu", "Elu", {"alpha": 0.7}), ("op_hard_sigmoid", "HardSigmoid", {"alpha": 0.25, "beta": 0.4}),
                       ("op_hard_swish", "HardSwish", {}), ("op_mish", "Mish", {})]:
        op_case(nm, [N(op, ["x"], "y", **kw)], [("x", x(3, 8) * 4)], ["y"], opset=20, what=f"{op} {kw}")
    for nm, op in [("op_reduce_logsumexp", "ReduceLogSumExp"), ("op_reduce_l1", "ReduceL1"),
                   ("op_reduce_log_sum", "ReduceLogSum")]:
        src = np.abs(x(3, 4, 8)) * 3 + 0.1 if op == "ReduceLogSum" else x(3, 4, 8) * 20
        op_case(nm, [N(op, ["x", "axes"], "y", keepdims=0)], [("x", src)], ["y"], inits={"axes": ax(-1)},
                what=f"{op} axes [-1] keepdims 0 (large values: the max shift matters)")
    op_case("op_tile", [N("Tile", ["x", "r"], "y")], [("x", x(2, 3))], ["y"], inits={"r": ax(2, 3)},
            what="Tile [2,3] by [2,3]")
    op_case("op_rotary_tables", [N("Range", ["r0", "r1", "r2"], "pos"), N("Sin", ["pos"], "s"), N("Cos", ["pos"], "c"),
                                 N("Mul", ["x", "s"], "xs"), N("Mul", ["x", "c"], "xc"), N("Add", ["xs", "xc"], "y")],
            [("x", x(3, 6))], ["y"], inits={"r0": np.array(0.0, np.float32), "r1": np.array(3.0, np.float32),
                                            "r2": np.array(0.5, np.float32)},
            what="sin/cos tables of a constant Range (RoPE-style), folded at import")
    op_case("op_range",
            [N("Range", ["s", "l", "d"], "r"), N("Add", ["x", "r"], "y1"),
             N("Range", ["is", "il", "id"], "ri"), N("Cast", ["ri"], "rf", to=F32), N("Mul", ["x", "rf"], "y2")],
            [("x", x(3, 8))], ["y1", "y2"],
            inits={"s": np.array(0.5, np.float32), "l": np.array(4.5, np.float32), "d": np.array(0.5, np.float32),
                   "is": np.array(10, np.int64), "il": np.array(-6, np.int64), "id": np.array(-2, np.int64)},
            what="Range f32 (0.5..4.5 by 0.5) and Range int64 (10..-6 by -2) cast to f32")
    op_case("op_shape_chain",
            [N("Shape", ["x"], "s"), N("Gather", ["s", "i0"], "t"), N("Unsqueeze", ["t", "a0"], "tu"),
             N("Shape", ["x"], "s1", start=-1), N("Div", ["s1", "two"], "h"),
             N("Concat", ["tu", "two", "h"], "shape", axis=0), N("Reshape", ["x", "shape"], "y")],
            [("x", x(6, 8))], ["y"],
            inits={"i0": np.array(0, np.int64), "a0": ax(0), "two": ax(2)},
            what="exporter-style Shape -> Gather -> Unsqueeze / Shape(start=-1) -> Div -> Concat -> Reshape [6,8]->[6,2,4]")
    op_case("op_odd_names", [N("Add", ["input.1", "x:0"], "sum/a"), N("Relu", ["sum/a"], "out/0")],
            [("input.1", x(3, 8)), ("x:0", x(3, 8))], ["out/0"],
            what="value names that are not identifiers: inputs input.1, x:0, output out/0")
    op_case("op_multi_consumer",
            [N("Exp", ["x"], "e"), N("ReduceSum", ["e", "a"], "s", keepdims=1), N("Div", ["e", "s"], "p"),
             N("Mul", ["p", "x"], "y")],
            [("x", x(3, 8))], ["y", "p"], inits={"a": ax(-1)},
            what="a hand-written softmax whose intermediate is also a graph output")


# ----------------------------------------------------------------------------
# 2-5. torch models through the dynamo exporter


@contextlib.contextmanager
def quiet():
    """The exporter prints progress lines; keep them out of the summary."""
    buf_out, buf_err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
            yield


def export(module, args, path, opset, external, dynamic_shapes=None, input_names=None, output_names=None):
    import torch

    module.eval()
    with quiet(), torch.no_grad():
        prog = torch.onnx.export(module, args, path, dynamo=True, opset_version=opset, external_data=external,
                                 dynamic_shapes=dynamic_shapes, input_names=input_names, output_names=output_names)
    assert prog is not None
    model = onnx.load(path, load_external_data=False)
    # The exporter records stack traces with absolute paths in node metadata;
    # make them relative to the repository so the files do not depend on
    # where the checkout lives. (Loading without external data and saving
    # again keeps the external_data references as they are.)
    root = os.path.dirname(os.path.dirname(HERE)) + os.sep
    site = os.path.dirname(os.path.dirname(torch.__file__)) + os.sep
    for node in model.graph.node:
        for p in node.metadata_props:
            p.value = p.value.replace(root, "").replace(site, "")
    onnx.save(model, path)
    if default_opset(model) != opset:
        NOTES.append(f"{path}: asked for opset {opset}, the exporter wrote {default_opset(model)}")
    return model


def torch_case(name, module, args, opset=20, external=False, dynamic_shapes=None, fuse=None, tolerance="f32",
               what=None, reference=None, input_names=("x",), output_names=("y",), rtol=None):
    import torch

    d = case_dir(name)
    path = os.path.join(d, "model.onnx")
    export(module, args, path, opset, external, dynamic_shapes, list(input_names) if input_names else None,
           list(output_names) if output_names else None)
    if external:
        files = sorted(os.listdir(d))
        assert "model.onnx.data" in files and os.path.getsize(os.path.join(d, "model.onnx.data")) > 0, files
    with torch.no_grad():
        eager = module(*args)
    eager = [eager] if isinstance(eager, torch.Tensor) else list(eager)
    expect = [e.detach().numpy() for e in eager]
    entry, outs = record(name, path, [a.numpy() for a in args], tolerance=tolerance, fuse=fuse, what=what,
                         expect=expect, rtol=rtol)
    if reference is not None:
        ref = reference()
        err = float(np.abs(outs[0].astype(np.float64) - ref).max())
        peak = float(np.abs(ref).max())
        assert err <= 1e-4 * max(peak, 1.0), f"{name}: onnxruntime differs from the design.md reference by {err}"
        entry["_checked"].append(f"design.md float64 reference: |ort-ref| {err:.2e} peak {peak:.2f}")
    return entry


def gen_torch_cases():
    import torch

    from models import (MLP, Block, LinearTanh, MHCBatched, MHCBlock, MHCEinsumBS, MHCLogDomain, MHCPacked,
                        MHCPaper, TinyGPT,
                        mhc_reference, randomize, torch_layer_as_numpy)

    torch.manual_seed(0)

    def inp(name, *shape, dtype=torch.float32):
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        return torch.randn(*shape, generator=g, dtype=dtype)

    # f64 MLP.
    mlp64 = randomize(MLP(16, 32, 8), 11).double()
    torch_case("mlp_f64", mlp64, (inp("mlp_f64", 4, 16, dtype=torch.float64),), opset=20, tolerance="f64",
               what="a float64 MLP (Linear, SiLU, Linear, tanh) exported by the dynamo exporter", rtol=1e-10)
    # Transformer blocks.
    blk = randomize(Block(32, 2, 64), 12)
    torch_case("block_tc", blk, (inp("block_tc", 8, 32),), opset=20,
               what="pre-norm transformer block (RMSNorm, causal 2-head attention, SwiGLU), x [T,C]")
    blk2 = randomize(Block(32, 2, 64), 13)
    torch_case("block_bsc", blk2, (inp("block_bsc", 2, 6, 32),), opset=18,
               what="the transformer block on x [B,S,C], opset 18")
    blk3 = randomize(Block(32, 2, 64), 14)
    torch_case("block_bsc_opset21", blk3, (inp("block_bsc_opset21", 2, 5, 32),), opset=21,
               what="the transformer block on x [B,S,C], opset 21")
    # Symbolic dims.
    blkd = randomize(Block(32, 2, 64), 15)
    e = torch_case("block_dynamic", blkd, (inp("block_dynamic", 7, 32),), opset=20,
                   dynamic_shapes={"x": {0: torch.export.Dim("T", min=2, max=4096)}},
                   what="the transformer block with a symbolic token dim")
    e["dims"] = symbolic_dims(e, {0: 7})
    mlpd = randomize(MLP(16, 32, 8), 16)
    e = torch_case("mlp_dynamic", mlpd, (inp("mlp_dynamic", 3, 5, 16),), opset=19,
                   dynamic_shapes={"x": {0: torch.export.Dim("batch", max=1024), 1: torch.export.Dim("seq", max=1024)}},
                   what="an MLP on x [B,S,C] with two symbolic dims, opset 19")
    e["dims"] = symbolic_dims(e, {0: 3, 1: 5})
    # Tiny GPT with external data.
    gpt = randomize(TinyGPT(vocab=50, dim=32, heads=2, hidden=64, layers=2, max_seq=16), 17)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 50, (2, 8), generator=g, dtype=torch.int64)
    torch_case("gpt_tiny", gpt, (ids,), opset=20, external=True, input_names=("ids",), output_names=("logits",),
               what="tiny GPT LM: token ids [B,S] int64 -> Gather on a runtime index, learned positions, "
                    "2 pre-norm blocks, final norm, LM head; external data")

    # mHC spellings.
    n, C, T = 4, 32, 8

    def mhc_ref(mod, x):
        fn, scale, base = mod.packed()
        eps = getattr(mod, "eps", 0.0) if mod.sinkhorn == "tilekernels" else 0.0
        return lambda: mhc_reference(x.double().numpy(), fn, scale, base, torch_layer_as_numpy(mod.layer),
                                     mod.sinkhorn, mod.iters, eps)

    fuse1 = {"mhc_pre": 1, "mhc_post": 1}
    a = randomize(MHCPaper(n, C, LinearTanh(C), iters=20), 21)
    xa = inp("mhc_paper", T, n, C)
    torch_case("mhc_paper", a, (xa,), opset=20, external=True, fuse=fuse1, reference=mhc_ref(a, xa),
               what="mHC spelling a: paper equations, 3 projections + scalar alphas + biases, einsum mixes, "
                    "paper Sinkhorn 20 rounds; F = tanh(Linear)")
    b = randomize(MHCPacked(n, C, LinearTanh(C), iters=10, eps=1e-6), 22)
    xb = inp("mhc_packed", T, n, C)
    torch_case("mhc_packed", b, (xb,), opset=20, external=True, fuse=fuse1, reference=mhc_ref(b, xb),
               what="mHC spelling b: packed projection, split, tilekernels Sinkhorn 10 rounds eps 1e-6, "
                    "matmul mixes; F = tanh(Linear)")
    c = randomize(MHCBatched(n, C, LinearTanh(C), iters=12), 23)
    xc = inp("mhc_batched", 2, 4, n, C)
    torch_case("mhc_batched", c, (xc,), opset=20, external=True, fuse=fuse1, reference=mhc_ref(c, xc),
               what="mHC spelling c: x [B,S,n,C], H_res transposed (columns first), broadcast-and-sum mixes, "
                    "paper Sinkhorn 12 rounds; F = tanh(Linear)")
    e = randomize(MHCLogDomain(n, C, LinearTanh(C), iters=15), 25)
    xe = inp("mhc_logdomain", T, n, C)
    torch_case("mhc_logdomain", e, (xe,), opset=20, external=True, fuse=fuse1,
               what="mHC spelling e: nn.RMSNorm with weight, nn.Linear with bias, alphas after the bias, "
                    "log-domain paper Sinkhorn with torch.logsumexp (15 rounds), bmm mixes; F = tanh(Linear)")
    f = randomize(MHCEinsumBS(n, C, iters=10), 26)
    xf = inp("mhc_einsum_bs", 2, 4, n, C)
    torch_case("mhc_einsum_bs", f, (xf,), opset=20, external=True, fuse=fuse1,
               what="mHC spelling f: x [B,S,n,C], F.rms_norm, xf @ w.T + b, no alphas, paper Sinkhorn "
                    "10 rounds, einsum mixes with batch labels; F = GELU(Linear) (exact, through Erf)")
    dblk = randomize(MHCBlock(n, C, heads=2, hidden=64, iters=20), 24)
    xd = inp("mhc_block", T, n, C)

    def block_ref():
        y = mhc_ref(dblk.attn, xd)()
        fn, scale, base = dblk.ffn.packed()
        return mhc_reference(y, fn, scale, base, torch_layer_as_numpy(dblk.ffn.layer), "paper", 20, 0.0)

    torch_case("mhc_block", dblk, (xd,), opset=20, external=True, fuse={"mhc_pre": 2, "mhc_post": 2},
               reference=block_ref,
               what="the transformer block inside mHC connections (spelling a for both): "
                    "attention and SwiGLU FFN sublayers, each pre -> F -> post")


def symbolic_dims(entry, axis_values):
    """The dim_param names of the first graph input, with the sizes the
    inputs were made with."""
    model = onnx.load(os.path.join(OUT, entry["model"]), load_external_data=False)
    dims = {}
    for ax, d in enumerate(model.graph.input[0].type.tensor_type.shape.dim):
        if d.HasField("dim_param"):
            dims[d.dim_param] = axis_values[ax]
    assert dims, f"{entry['name']}: the exported input has no symbolic dim"
    return dims


# ----------------------------------------------------------------------------
# 6. error fixtures


def error_case(name, error, what, write):
    d = case_dir(name)
    write(d)
    path = os.path.join(d, "model.onnx")
    opset = None
    try:
        opset = default_opset(onnx.load(path, load_external_data=False))
    except Exception:  # noqa: BLE001 -- undecodable on purpose
        pass
    entry = {"name": name, "model": f"{name}/model.onnx"}
    if opset is not None:
        entry["opset"] = opset
    entry.update({"error": error, "what": what})
    MANIFEST.append(entry)


def small_model(opset=20, with_weight=False):
    nodes = [N("MatMul", ["x", "w"], "h"), N("Relu", ["h"], "y")]
    g = helper.make_graph(nodes, "small", [vi("x", F32, [4, 8])], [vi("y", F32, [4, 8])],
                          [numpy_helper.from_array(rng_for("small").standard_normal((8, 8)).astype(np.float32), "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="birkhoff-gen")
    m.ir_version = 10
    onnx.checker.check_model(m)
    return m


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def external_model(d, location, data_bytes, offset=None, length=None):
    """small_model with its weight moved to external data at `location`;
    `data_bytes`: the data file's contents (None: no file)."""
    m = small_model()
    w = m.graph.initializer[0]
    raw = numpy_helper.to_array(w).tobytes()
    w.ClearField("float_data")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    kv = [("location", location)]
    if offset is not None:
        kv.append(("offset", str(offset)))
    if length is not None:
        kv.append(("length", str(length)))
    for k, v in kv:
        e = w.external_data.add()
        e.key, e.value = k, v
    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(m.SerializeToString())
    if data_bytes is not None:
        with open(os.path.join(d, location), "wb") as f:
            f.write(data_bytes(raw) if callable(data_bytes) else data_bytes)
    return raw


def save_bytes(d, b):
    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(b)


def gen_error_cases():
    good = small_model().SerializeToString()

    def decodes(b):
        try:
            onnx.load_model_from_string(b)
            return True
        except Exception:  # noqa: BLE001
            return False

    cut = len(good) // 2
    assert not decodes(good[:cut])
    error_case("err_truncated", "cannot decode", "a valid model's bytes cut in half (inside the graph field)",
               lambda d: save_bytes(d, good[:cut]))

    # ModelProto.graph (field 7) written as a varint (wire type 0) instead of
    # length-delimited (wire type 2); the graph's bytes follow the varint.
    m = small_model()
    graph_bytes = m.graph.SerializeToString()
    m.ClearField("graph")
    wrong = m.SerializeToString() + bytes([(7 << 3) | 0]) + varint(len(graph_bytes)) + graph_bytes
    error_case("err_wrong_wire_type", "cannot decode",
               "ModelProto field 7 (graph) with wire type 0 (varint) instead of 2; the graph's bytes follow",
               lambda d: save_bytes(d, wrong))
    if decodes(wrong):
        NOTES.append("err_wrong_wire_type: the onnx Python package (C++ protobuf) accepts these bytes "
                     "(it skips the mismatched field as unknown); a strict decoder rejects them")

    def missing_init(d):
        g = helper.make_graph([N("MatMul", ["x", "w_missing"], "h"), N("Relu", ["h"], "y")], "g",
                              [vi("x", F32, [4, 8])], [vi("y", F32, [4, 8])])
        save_bytes(d, helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString())

    error_case("err_missing_initializer", "undefined value",
               "a MatMul consuming 'w_missing', which no input, initializer or node defines", missing_init)

    error_case("err_missing_external_file", "external data",
               "initializer w stored in external data 'weights.bin', which is not shipped",
               lambda d: external_model(d, "weights.bin", None))
    error_case("err_external_offset", "past the end",
               "initializer w (256 bytes) at offset 64 of 'weights.bin', a 128-byte file",
               lambda d: external_model(d, "weights.bin", lambda raw: raw[:128], offset=64, length=256))
    error_case("err_external_escape", "external data",
               "initializer w with external-data location '../../etc/passwd' (outside the model's directory)",
               lambda d: external_model(d, "../../etc/passwd", None))

    def cycle(d):
        g = helper.make_graph([N("Add", ["x", "b"], "a"), N("Relu", ["a"], "b")], "g",
                              [vi("x", F32, [4, 8])], [vi("a", F32, [4, 8])])
        save_bytes(d, helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString())

    error_case("err_cycle", "cycle", "Add consumes Relu's output and Relu consumes Add's", cycle)

    def huge(d):
        g = helper.make_graph([N("Relu", ["x"], "y")], "g", [vi("x", F32, [2 ** 40, 2 ** 40])],
                              [vi("y", F32, [2 ** 40, 2 ** 40])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
        onnx.checker.check_model(m)
        save_bytes(d, m.SerializeToString())

    error_case("err_huge_dim", "too large", "a graph input of shape [2^40, 2^40] (Relu)", huge)

    def resize(d):
        g = helper.make_graph([N("Resize", ["x", "", "scales"], "y", mode="nearest")], "g",
                              [vi("x", F32, [1, 1, 4, 4])], [vi("y", F32, [1, 1, 8, 8])],
                              [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
        onnx.checker.check_model(m, full_check=True)
        save_bytes(d, m.SerializeToString())

    error_case("err_unsupported_op", "Resize", "a Resize node (nearest, scales [1,1,2,2])", resize)

    def f16(d):
        g = helper.make_graph([N("Relu", ["x"], "y")], "g", [vi("x", TensorProto.FLOAT16, [4, 8])],
                              [vi("y", TensorProto.FLOAT16, [4, 8])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
        onnx.checker.check_model(m, full_check=True)
        save_bytes(d, m.SerializeToString())

    error_case("err_unsupported_dtype", "float16", "a float16 graph input (Relu)", f16)

    def diag(d):
        g = helper.make_graph([N("Einsum", ["x"], "y", equation="ii->i")], "g", [vi("x", F32, [4, 4])],
                              [vi("y", F32, [4])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
        onnx.checker.check_model(m, full_check=True)
        save_bytes(d, m.SerializeToString())

    error_case("err_unsupported_attr", "einsum", "Einsum with equation 'ii->i' (a diagonal)", diag)

    text = b"This is not an ONNX model, just a line of text.\n"
    assert not decodes(text)
    error_case("err_not_onnx", "cannot decode", "a text file named model.onnx", lambda d: save_bytes(d, text))


# ----------------------------------------------------------------------------


def check_bf16_rounding():
    """onnxruntime's f32 -> bf16 Cast against round-to-nearest-even."""
    e = next(e for e in MANIFEST if e["name"] == "op_cast_bf16")
    x = np.load(os.path.join(OUT, e["inputs"][0][1]))
    y = np.load(os.path.join(OUT, e["outputs"][0][1]))
    u = x.view(np.uint32).astype(np.uint64)
    rne = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16).astype(np.uint32).view(np.float32)
    if not np.array_equal(rne, y):
        NOTES.append("op_cast_bf16: onnxruntime's Cast does not round to nearest even; tolerance set to bf16")
        e["tolerance"] = "bf16"


def summarize():
    total = 0
    lines = []
    for e in MANIFEST:
        d = os.path.join(OUT, e["name"])
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        total += size
        ops = ""
        try:
            m = onnx.load(os.path.join(OUT, e["model"]), load_external_data=False)
            cnt = collections.Counter(n.op_type for n in m.graph.node)
            ops = " ".join(f"{k}" + (f"x{v}" if v > 1 else "") for k, v in sorted(cnt.items()))
        except Exception:  # noqa: BLE001
            ops = "(undecodable)"
        kind = f"error '{e['error']}'" if "error" in e else f"opset {e['opset']} {e['tolerance']}"
        extra = "".join(f" {k}={e[k]}" for k in ("dims", "fuse") if k in e)
        lines.append(f"{e['name']:<28} {size:>8} B  {kind}{extra}  [{ops}]")
    return lines, total


def main():
    global OUT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "fixtures"))
    args = ap.parse_args()
    OUT = os.path.abspath(args.out)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    logging.disable(logging.WARNING)

    import torch
    import onnxscript

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    gen_op_cases()
    gen_torch_cases()
    gen_error_cases()
    check_bf16_rounding()

    checked = {e["name"]: e.pop("_checked") for e in MANIFEST if "_checked" in e}
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(MANIFEST, f, indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "versions.txt"), "w") as f:
        f.write(f"python {sys.version.split()[0]}\nnumpy {np.__version__}\ntorch {torch.__version__}\n"
                f"onnx {onnx.__version__}\nonnxscript {onnxscript.__version__}\nonnxruntime {ort.__version__}\n")

    lines, total = summarize()
    print("\n".join(lines))
    for name, c in checked.items():
        print(f"checked {name}: " + "; ".join(c))
    for note in NOTES:
        print("note:", note)
    total += os.path.getsize(os.path.join(OUT, "manifest.json")) + os.path.getsize(os.path.join(OUT, "versions.txt"))
    print(f"{len(MANIFEST)} fixtures, {total} bytes in {OUT}")


if __name__ == "__main__":
    main()
