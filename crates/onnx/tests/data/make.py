"""Writes the small, mostly malformed ONNX models that
crates/onnx/tests/edge_cases.rs imports (and fuzz.rs mutates).

    python crates/onnx/tests/data/make.py     # rewrites crates/onnx/tests/data/*.onnx

Needs the `onnx` and `numpy` packages (any recent version: the models are
built field by field with onnx.helper and never run through the checker,
since most are invalid on purpose). README.md lists what each file is.
Deterministic: a rerun writes the same bytes.
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
F32 = TensorProto.FLOAT
I64 = TensorProto.INT64


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def model(nodes, inputs, outputs, inits=(), opset=20, functions=(), name="g"):
    g = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset),
                                            helper.make_opsetid("local", 1)],
                          functions=list(functions), producer_name="make.py")
    m.ir_version = 8
    return m


def save(name, m):
    b = m if isinstance(m, bytes) else m.SerializeToString()
    assert len(b) < 10 * 1024, (name, len(b))
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(b)


def external(name="W", dims=(2, 2), location="weights.bin", offset=None, length=None,
             data_type=F32):
    """An initializer whose data lives in `location` (written by the test)."""
    t = TensorProto()
    t.name = name
    t.data_type = data_type
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", offset), ("length", length)):
        if v is not None:
            e = t.external_data.add()
            e.key, e.value = k, str(v)
    return t


def add_w(w, x_shape=(2, 2)):
    """y = x + W, W the initializer `w`."""
    return model([helper.make_node("Add", ["x", "W"], ["y"])], [vi("x", F32, list(x_shape))],
                 [vi("y", F32, list(x_shape))], [w])


def identity_w(w):
    """y = W: the initializer is the graph's output."""
    return model([helper.make_node("Identity", ["W"], ["y"])], [], [vi("y", w.data_type, None)],
                 [w])


def no_data(name, dims, data_type=F32):
    """An initializer with dims and no values (the importer must look at
    the dims before it looks for data)."""
    t = TensorProto()
    t.name = name
    t.data_type = data_type
    t.dims.extend(dims)
    return t


def main():
    # --- External data (tests write weights.bin or make it something else).
    save("ext_ok.onnx", add_w(external(offset=0, length=16)))
    save("ext_absolute.onnx", add_w(external(location="/etc/passwd")))
    save("ext_dotdot.onnx", add_w(external(location="../weights.bin")))
    save("ext_inner_dotdot.onnx", add_w(external(location="sub/../weights.bin")))
    save("ext_length_mismatch.onnx", add_w(external(length=12)))
    save("ext_offset_past_end.onnx", add_w(external(offset=1000)))
    save("ext_offset_overflow.onnx", add_w(external(offset=2 ** 64 - 8, length=16)))
    save("ext_negative_offset.onnx", add_w(external(offset=-4)))
    save("ext_no_location.onnx", add_w(external(location=None, length=16)))
    os.makedirs(os.path.join(HERE, "external"), exist_ok=True)
    save("external/model.onnx", add_w(external(offset=0, length=16)))
    with open(os.path.join(HERE, "external", "weights.bin"), "wb") as f:
        f.write(np.array([1, 2, 3, 4], np.float32).tobytes())

    # --- Shapes and sizes.
    relu = lambda shape, elem=F32: model([helper.make_node("Relu", ["x"], ["y"])],  # noqa: E731
                                         [vi("x", elem, shape)], [vi("y", elem, shape)])
    save("input_dims_overflow.onnx", relu([2 ** 32, 2 ** 32, 2 ** 32]))
    save("input_dims_over_2_40.onnx", relu([2 ** 21, 2 ** 20]))
    save("input_negative_dim.onnx", relu([2, -3]))
    # A zero after dims whose product overflows: a count of 0, computed in
    # an order that overflows first.
    save("input_zero_after_overflow.onnx", relu([2 ** 32, 2 ** 32, 0]))
    save("input_zero_dim.onnx", model([helper.make_node("Identity", ["x"], ["y"])],
                                      [vi("x", F32, [0, 4])], [vi("y", F32, [0, 4])]))
    save("input_unknown_dim.onnx", relu([None, 4]))
    save("input_symbolic.onnx", relu(["batch", 4]))
    # Float initializers with no data: the count is checked first.
    save("init_dims_overflow.onnx", identity_w(no_data("W", [2 ** 32, 2 ** 32])))
    save("init_dims_over_2_40.onnx", identity_w(no_data("W", [2 ** 21, 2 ** 20])))
    save("init_int_zero_after_overflow.onnx", add_w(no_data("W", [2 ** 32, 2 ** 32, 0], I64)))
    save("init_negative_dims.onnx", add_w(no_data("W", [-2, -1])))
    save("init_int_dims_overflow.onnx", add_w(no_data("W", [2 ** 32, 2 ** 32], I64)))
    # Size of a float initializer with negative dims ([-2, -3]: 6 "elements").
    save("init_negative_dims_size.onnx",
         model([helper.make_node("Size", ["W"], ["n"])], [], [vi("n", I64, [])],
               [no_data("W", [-2, -3])]))
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "W")
    w.raw_data = w.raw_data[:20]  # 5 of 6 floats
    save("init_raw_data_short.onnx", add_w(w, (2, 3)))
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "W")
    w.ClearField("raw_data")
    w.float_data.extend([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])  # 7 of 6 floats
    save("init_float_data_long.onnx", add_w(w, (2, 3)))
    # A Constant node whose tensor has dims past 2^40 and no data.
    c = no_data("c", [2 ** 21, 2 ** 21])
    save("constant_huge.onnx",
         model([helper.make_node("Constant", [], ["c"], value=c),
                helper.make_node("Add", ["x", "c"], ["y"])],
               [vi("x", F32, [2, 2])], [vi("y", F32, [2, 2])]))
    # ConstantOfShape of a shape past 2^40.
    shp = numpy_helper.from_array(np.array([2 ** 21, 2 ** 21], np.int64), "shape")
    save("constant_of_shape_huge.onnx",
         model([helper.make_node("ConstantOfShape", ["shape"], ["c"]),
                helper.make_node("Add", ["x", "c"], ["y"])],
               [vi("x", F32, [2, 2])], [vi("y", F32, [2, 2])], [shp]))

    # --- Model and graph structure.
    save("opset_12.onnx", model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", F32, [2])],
                                [vi("y", F32, [2])], opset=12))
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", F32, [2])], [vi("y", F32, [2])])
    m.ClearField("graph")
    save("no_graph.onnx", m)
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", F32, [2])], [vi("y", F32, [2])])
    del m.opset_import[:]
    save("no_default_opset.onnx", m)
    save("output_not_computed.onnx",
         model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", F32, [2])],
               [vi("y", F32, [2]), vi("nowhere", F32, [2])]))
    save("no_outputs.onnx", model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", F32, [2])], []))
    save("two_producers.onnx",
         model([helper.make_node("Relu", ["x"], ["y"], name="first"),
                helper.make_node("Neg", ["x"], ["y"], name="second")],
               [vi("x", F32, [2])], [vi("y", F32, [2])]))
    save("output_is_input.onnx", model([], [vi("x", F32, [2])], [vi("x", F32, [2])]))
    # Names that would break a one-line message.
    save("newline_node_name.onnx",
         model([helper.make_node("NoSuchOp", ["x"], ["y"], name="bad\nname")],
               [vi("x", F32, [2])], [vi("y", F32, [2])]))
    save("nul_output_name.onnx",
         model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", F32, [2])],
               [vi("y\0z", F32, [2])]))

    # --- Ops on extreme operands.
    ints = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    # Slice without axes, more starts than the input's rank (a scalar).
    save("slice_scalar.onnx",
         model([helper.make_node("Slice", ["x", "starts", "ends"], ["y"])], [vi("x", F32, [])],
               [vi("y", F32, [])], [ints("starts", [0]), ints("ends", [1])]))
    # Split sizes whose sum overflows i64.
    save("split_sizes_overflow.onnx",
         model([helper.make_node("Split", ["x", "split"], ["a", "b"], axis=0)],
               [vi("x", F32, [4])], [vi("a", F32, [4]), vi("b", F32, [4])],
               [ints("split", [2 ** 63 - 1, 1])]))
    # Split into 2^40 outputs (the attribute; the node lists two).
    save("split_num_outputs_huge.onnx",
         model([helper.make_node("Split", ["x"], ["a", "b"], axis=0, num_outputs=2 ** 40)],
               [vi("x", F32, [4])], [vi("a", F32, [2]), vi("b", F32, [2])], opset=18))
    # Reshape to a shape whose element count overflows.
    save("reshape_overflow.onnx",
         model([helper.make_node("Reshape", ["x", "shape"], ["y"])], [vi("x", F32, [4])],
               [vi("y", F32, [4])], [ints("shape", [-1, 2 ** 32, 2 ** 32])]))
    # Expand an empty constant ([0]) to [2^62, 4, 1]: the result
    # [2^62, 4, 0] has no elements, but its first two dims overflow.
    save("expand_empty_overflow.onnx",
         model([helper.make_node("Constant", [], ["e"], value=ints("e", np.zeros([0], np.int64))),
                helper.make_node("Expand", ["e", "shape"], ["y"])],
               [], [vi("y", I64, None)], [ints("shape", [2 ** 62, 4, 1])]))
    # Expand a constant to [2^20, 2^20] (2^40 elements, the IR's limit).
    save("expand_constant_huge.onnx",
         model([helper.make_node("Constant", [], ["one"], value_float=1.0),
                helper.make_node("Expand", ["one", "shape"], ["big"]),
                helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0)],
               [], [vi("y", F32, [])], [ints("shape", [2 ** 20, 2 ** 20])]))
    # Gather from a [1, 4096] constant with [4096, 4096] constant indices:
    # each operand within the folding limits (2^24 elements), the result
    # [4096, 4096, 4096] (2^36) folded one index at a time.
    save("gather_constant_huge.onnx",
         model([helper.make_node("ConstantOfShape", ["s1"], ["table"],
                                 value=numpy_helper.from_array(np.array([1.0], np.float32))),
                helper.make_node("ConstantOfShape", ["s2"], ["idx"],
                                 value=numpy_helper.from_array(np.array([0], np.int64))),
                helper.make_node("Gather", ["table", "idx"], ["g"], axis=0),
                helper.make_node("ReduceSum", ["g"], ["y"], keepdims=0)],
               [], [vi("y", F32, [])], [ints("s1", [1, 4096]), ints("s2", [4096, 4096])]))
    # Trilu on a [65536, 65536] input (2^32 elements, within the IR's
    # limit): the graph is small; a mask built as a constant would not be.
    save("trilu_large.onnx",
         model([helper.make_node("Trilu", ["x"], ["y"])], [vi("x", F32, [2 ** 16, 2 ** 16])],
               [vi("y", F32, [2 ** 16, 2 ** 16])]))
    # Local functions calling each other 10 deep, 10 calls per level: a
    # 2 KB model that inlines to 10^10 nodes.
    funcs = []
    for level in range(10):
        callee = f"f{level + 1}" if level < 9 else None
        nodes = []
        prev = "a"
        for k in range(10):
            out = "b" if k == 9 else f"t{k}"
            if callee:
                nodes.append(helper.make_node(callee, [prev], [out], domain="local"))
            else:
                nodes.append(helper.make_node("Relu", [prev], [out]))
            prev = out
        funcs.append(helper.make_function("local", f"f{level}", ["a"], ["b"], nodes,
                                          [helper.make_opsetid("", 20),
                                           helper.make_opsetid("local", 1)]))
    save("function_blowup.onnx",
         model([helper.make_node("f0", ["x"], ["y"], domain="local")], [vi("x", F32, [2])],
               [vi("y", F32, [2])], functions=funcs))
    # A function that calls itself.
    rec = helper.make_function("local", "r", ["a"], ["b"],
                               [helper.make_node("r", ["a"], ["b"], domain="local")],
                               [helper.make_opsetid("local", 1)])
    save("function_recursive.onnx",
         model([helper.make_node("r", ["x"], ["y"], domain="local")], [vi("x", F32, [2])],
               [vi("y", F32, [2])], functions=[rec]))


if __name__ == "__main__":
    main()
