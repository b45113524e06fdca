"""birkhoff.compile from Python: every kind of source, NumPy and torch in
and out, the IR dumps, and clear errors on bad input."""

import json
import pathlib

import numpy as np
import pytest
import torch

import birkhoff

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "onnx" / "fixtures"

POST_IR = """graph @post(%f: f32[2,3], %x: f32[2,2,3], %p: f32[2,2], %m: f32[2,2,2]) -> (y: f32[2,2,3]) {
  %4 = mhc_post %f, %x, %p, %m : f32[2,2,3]
  return %4
}
"""


def post_ref(f, x, p, m):
    return p[:, :, None] * f[:, None, :] + np.einsum("tij,tic->tjc", m, x)


def random_inputs(module, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, _, _, shape, _ in module.signature()}


def test_a_zoo_model_with_flags_runs_and_fuses():
    m = birkhoff.compile("mhc-sublayer", tokens=8, hidden=16, sinkhorn="paper", iters=3)
    names = [s[0] for s in m.signature()]
    assert names[0] == "residual" and len(names) == 4
    out = m(**random_inputs(m))
    assert out.shape == (8, 4, 16) and out.dtype == np.float32 and np.isfinite(out).all()
    assert "mhc_pre" in m.ir() and "mhc_post" in m.ir()
    assert "kernel" in m.kernel_ir()
    assert "fusion report" in m.fusion_report()


def test_the_compiled_module_matches_the_interpreter():
    cpu = birkhoff.compile("mhc-pre", tokens=5, hidden=12)
    interp = birkhoff.compile("mhc-pre", backend="interp", tokens=5, hidden=12)
    ins = random_inputs(cpu, seed=3)
    for got, want in zip(cpu(**ins), interp(**ins)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_ir_text_and_bir_files(tmp_path):
    rng = np.random.default_rng(1)
    f, x, p, m = (rng.standard_normal(s).astype(np.float32) for s in [(2, 3), (2, 2, 3), (2, 2), (2, 2, 2)])
    from_text = birkhoff.compile(POST_IR)
    np.testing.assert_allclose(from_text(f, x, p, m), post_ref(f, x, p, m), rtol=1e-5, atol=1e-6)
    path = tmp_path / "post.bir"
    path.write_text(POST_IR)
    from_file = birkhoff.compile(path)
    np.testing.assert_array_equal(from_file(f, x, p, m), from_text(f, x, p, m))


def test_torch_tensors_in_give_torch_tensors_out():
    m = birkhoff.compile(POST_IR)
    ins = [torch.randn(s) for s in [(2, 3), (2, 2, 3), (2, 2), (2, 2, 2)]]
    y = m(*ins)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    want = post_ref(*(t.numpy() for t in ins))
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-6)
    # Non-contiguous inputs are made contiguous, not misread.
    x_t = torch.randn(2, 3, 2).transpose(1, 2)
    y2 = m(ins[0], x_t, ins[2], ins[3])
    np.testing.assert_allclose(y2.numpy(), post_ref(ins[0].numpy(), x_t.numpy(), ins[2].numpy(), ins[3].numpy()),
                               rtol=1e-5, atol=1e-6)


def test_bf16_models_take_and_give_bfloat16():
    m = birkhoff.compile("mhc-post", tokens=3, hidden=8, dtype="bf16")
    ins = {name: torch.randn(shape).to(torch.bfloat16) for name, _, _, shape, _ in m.signature()}
    y = m(**ins)
    assert y.dtype == torch.bfloat16
    want = post_ref(*(ins[k].double().numpy() for k in ["layer_output", "residual", "post_mix", "comb_mix"]))
    np.testing.assert_allclose(y.double().numpy(), want, rtol=2**-7, atol=2**-6)
    # float32 arrays round to bf16; the output comes back widened to float32.
    y_np = m(**{k: v.float().numpy() for k, v in ins.items()})
    assert y_np.dtype == np.float32
    np.testing.assert_array_equal(y_np, y.float().numpy())


def test_an_onnx_export_of_mhc_runs_fused_and_matches_onnxruntime():
    entry = next(e for e in json.loads((FIXTURES / "manifest.json").read_text()) if e["name"] == "mhc_paper")
    m = birkhoff.compile(FIXTURES / entry["model"])
    ins = {name: np.load(FIXTURES / path) for name, path in entry["inputs"]}
    out = m(**ins)
    want = np.load(FIXTURES / entry["outputs"][0][1])
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
    assert "mhc_pre" in m.ir(), "the exported spelling should fuse"
    # The initializers are defaults: only data inputs are required.
    assert all(kind == "param" for _, kind, _, _, has_default in m.signature() if has_default)


@pytest.mark.parametrize(
    "source,flags,message",
    [
        ("no-such-model", {}, "neither a zoo model"),
        ("mhc-pre", {"tokens": -1}, "non-negative"),
        ("mhc-pre", {"hiden": 8}, "unknown flag"),
        ("mhc-pre", {"sinkhorn": "greedy"}, "sinkhorn"),
        ("graph @g(%x: f32[2]) -> (y: f32[2]) {\n  %1 = frobnicate %x : f32[2]\n  return %1\n}\n", {}, "2:"),
        (POST_IR, {"tokens": 4}, "model flag"),
        ("missing.bir", {}, "cannot read"),
    ],
)
def test_bad_sources_raise_value_errors(source, flags, message):
    with pytest.raises(ValueError, match=message):
        birkhoff.compile(source, **flags)


def test_bad_inputs_raise_clear_errors():
    m = birkhoff.compile(POST_IR)
    f, x, p, mm = (np.zeros(s, np.float32) for s in [(2, 3), (2, 2, 3), (2, 2), (2, 2, 2)])
    with pytest.raises(ValueError, match="expected shape"):
        m(f, x, p, np.zeros((2, 2, 3), np.float32))
    with pytest.raises(TypeError, match="expected float32, got float64"):
        m(f.astype(np.float64), x, p, mm)
    with pytest.raises(KeyError, match="not an input"):
        m.run({"nope": f})
    with pytest.raises(ValueError, match="needs inputs"):
        m.run({"f": f})
    with pytest.raises(TypeError, match="positional"):
        m(f, x, p, mm, mm)
    with pytest.raises(ValueError, match="unknown backend"):
        birkhoff.compile(POST_IR, backend="tpu")
