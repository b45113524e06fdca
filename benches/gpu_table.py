#!/usr/bin/env python3
"""Merges one GPU benchmark run (birkhoff and the PyTorch peer) into one
markdown table, and keeps the raw JSON next to it.

Usage:
  python3 benches/gpu_table.py RESULTS_DIR [--out table.md] [--json merged.json]
  python3 benches/gpu_table.py [--gpu-info FILE] [--torch FILE]
                               [--birkhoff FILE ...] [--out ...] [--json ...]
  python3 benches/gpu_table.py --self-test

RESULTS_DIR is what `scripts/gpu-check run` writes:
  gpu-info.json                        `birkhoff gpu-info --json`
  birkhoff/<stage>-T<T>-C<C>.json      `birkhoff bench <stage> ... --json`
  torch.jsonl                          `python3 benches/torch_mhc.py --json`
The flags name the same files one by one instead (and add to RESULTS_DIR's
when both are given). A birkhoff file's stage, shape and dtype come from
its JSON (`model`, and the type of its `residual` input); a file that holds
no JSON (a failed run) is placed by its name, <stage>-T<T>-C<C>.json.
Any of them may be missing or hold a failure: that cell reads "—".

Columns, per stage and shape T×n×C (T tokens, n streams, C hidden):
  birkhoff µs    median device time of birkhoff's fused GPU program
  min MB         the minimal bytes (below), in MB (10^6 bytes)
  GB/s           minimal bytes / median time
  % copy         GB/s over the device-to-device copy bandwidth (bytes read +
                 written per second; `birkhoff gpu-info`, else torch's copy)
  eager µs, compile µs (and max-autotune µs when measured)
                 torch_mhc.py's medians for the same stage and shape
  × eager, × compile
                 torch time / birkhoff time: above 1, birkhoff is faster

The minimal-bytes model counts every tensor a stage reads or writes exactly
once, at the storage size of the dtype (bf16 2 bytes, f32 4), with
m = n(n+2) mixing coefficients per token:
  mhc-pre       reads  residual T·n·C, fn m·n·C, scale 3, base m
                writes layer_input T·C, post_mix T·n, comb_mix T·n·n
  mhc-post      reads  layer_output T·C, residual T·n·C, post_mix T·n,
                       comb_mix T·n·n
                writes residual_out T·n·C
  mhc-sublayer  reads  residual T·n·C, fn m·n·C, scale 3, base m
                writes residual_out T·n·C
(the pre-to-post intermediates of the sublayer are not counted: a program
that keeps them on chip moves none of those bytes). It is the model
`birkhoff bench` reports `bytes` on; a disagreement is flagged under the
table.
"""

import argparse
import glob
import json
import os
import re
import sys
import tempfile

STAGES = ("mhc-pre", "mhc-post", "mhc-sublayer")
DTYPE_BYTES = {"bf16": 2, "f32": 4, "f64": 8}
DASH = "—"


def minimal_elements(stage, T, n, C):
    """Elements read + written once each by `stage` (module docs)."""
    m = n * (n + 2)
    weights = m * n * C + 3 + m
    if stage == "mhc-pre":
        return T * n * C + weights + T * C + T * n + T * n * n
    if stage == "mhc-post":
        return T * C + T * n * C + T * n + T * n * n + T * n * C
    if stage == "mhc-sublayer":
        return T * n * C + weights + T * n * C
    raise ValueError(f"unknown stage {stage}")


def minimal_bytes(stage, T, n, C, dtype):
    return minimal_elements(stage, T, n, C) * DTYPE_BYTES[dtype]


def read_json(path):
    """The last JSON object in a file (tools may print text before it), or
    None when the file is missing or holds none."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def read_jsonl(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    except OSError:
        pass
    return out


def number(x):
    return x if isinstance(x, (int, float)) and x == x and x > 0 else None


TYPE = re.compile(r"^(?P<dtype>[a-z0-9]+)\[(?P<dims>[0-9, ]*)\]$")
NAME = re.compile(r"^(?P<stage>[a-z-]+)-T(?P<T>\d+)-C(?P<C>\d+)\.json$")


def birkhoff_key(path, rec):
    """(stage, T, C) and dtype (or None) of one `birkhoff bench --json`
    file: from its JSON where it has one, else from its name."""
    m = NAME.match(os.path.basename(path))
    stage = (rec or {}).get("model", "").replace("_", "-") or (m and m["stage"])
    residual = ((rec or {}).get("inputs") or {}).get("residual", "")
    t = TYPE.match(residual.replace(" ", ""))
    if t:
        dims = [int(x) for x in t["dims"].split(",") if x]
        if len(dims) == 3:
            return (stage, dims[0], dims[2]), dims[1], t["dtype"]
    if m:
        return (m["stage"], int(m["T"]), int(m["C"])), None, None
    return None, None, None


def load(results=None, gpu_info=None, torch=None, birkhoff=()):
    """Everything the table needs, from a results directory and/or files."""
    paths = list(birkhoff)
    if results:
        gpu_info = gpu_info or os.path.join(results, "gpu-info.json")
        torch = torch or os.path.join(results, "torch.jsonl")
        paths = sorted(glob.glob(os.path.join(results, "birkhoff", "*.json"))) + paths
    data = dict(gpu_info=read_json(gpu_info) if gpu_info else None, birkhoff={}, shapes={}, torch={},
                torch_copy=None, torch_env=None, notes=[])
    for path in paths:
        rec = read_json(path)
        key, streams, dtype = birkhoff_key(path, rec)
        if key is None:
            data["notes"].append(f"{path}: no stage or shape (not a birkhoff bench JSON?)")
            continue
        data["birkhoff"][key] = rec if rec is not None else {"error": f"no JSON in {os.path.basename(path)}"}
        data["shapes"].setdefault(key, {})["birkhoff"] = (streams, dtype)
    for rec in read_jsonl(torch) if torch else []:
        kind = rec.get("kind")
        if kind == "copy":
            data["torch_copy"] = rec
        elif kind == "env":
            data["torch_env"] = rec
        elif kind == "stage":
            key = (rec.get("stage"), rec.get("tokens"), rec.get("hidden"))
            data["torch"].setdefault(key, {})[rec.get("impl")] = rec
            seen = data["shapes"].setdefault(key, {}).get("torch", (None, None))
            data["shapes"][key]["torch"] = (seen[0] or rec.get("streams"), seen[1] or rec.get("dtype"))
    return data


def copy_gbps(data):
    info = data["gpu_info"] or {}
    if number(info.get("copy_gbps")):
        return info["copy_gbps"], "birkhoff gpu-info"
    tc = data["torch_copy"] or {}
    if number(tc.get("gbps")):
        return tc["gbps"], "torch copy"
    return None, None


def fmt(x, spec):
    return DASH if x is None else format(x, spec)


def build_rows(data, streams, dtype):
    keys = sorted(set(data["birkhoff"]) | set(data["torch"]),
                  key=lambda k: (STAGES.index(k[0]) if k[0] in STAGES else 9, k[1] or 0, k[2] or 0))
    bw, _ = copy_gbps(data)
    rows = []
    for stage, T, C in keys:
        if stage not in STAGES or T is None or C is None:
            continue
        b = data["birkhoff"].get((stage, T, C)) or {}
        t = data["torch"].get((stage, T, C), {})
        known = data["shapes"].get((stage, T, C), {})
        bn, bd = known.get("birkhoff", (None, None))
        tn, td = known.get("torch", (None, None))
        if bd and td and (bn, bd) != (tn or bn, td):
            data["notes"].append(f"{stage} T={T} C={C}: birkhoff ran n={bn} {bd}, torch n={tn} {td}")
        n_row = bn or tn or streams
        dtype_row = next((d for d in (bd, td) if d in DTYPE_BYTES), dtype)
        nbytes = minimal_bytes(stage, T, n_row, C, dtype_row)
        b_s = number(b.get("median_s")) if "error" not in b else None
        peer = {impl: number(r.get("median_s")) if "error" not in r else None for impl, r in t.items()}
        row = dict(stage=stage, tokens=T, hidden=C, streams=n_row, dtype=dtype_row, bytes=nbytes,
                   birkhoff_s=b_s, gbps=nbytes / b_s / 1e9 if b_s else None)
        row["pct_copy"] = 100 * row["gbps"] / bw if row["gbps"] and bw else None
        for impl in ("eager", "compile", "compile-max-autotune"):
            row[f"{impl}_s"] = peer.get(impl)
            row[f"x_{impl}"] = peer[impl] / b_s if peer.get(impl) and b_s else None
        reported = b.get("bytes")
        if b_s and isinstance(reported, int) and reported != nbytes:
            data["notes"].append(f"{stage} C={C}: birkhoff bench counts {reported} bytes, this table {nbytes}")
        for impl, r in t.items():
            if "error" in r:
                data["notes"].append(f"{stage} C={C} torch {impl} failed: {r['error']}")
        if b_s and b.get("backend") not in (None, "gpu"):
            data["notes"].append(f"{stage} C={C}: the birkhoff time is from backend {b['backend']}, not the GPU")
        if b and "error" in b:
            data["notes"].append(f"{stage} C={C} birkhoff failed: {b['error']}")
        rows.append(row)
    return rows


def markdown(data, rows, streams, dtype):
    bw, source = copy_gbps(data)
    info = data["gpu_info"] or {}
    env = data["torch_env"] or {}
    device = info.get("device") or env.get("device") or "unknown device"
    dtypes = sorted({r["dtype"] for r in rows}) or [dtype]
    out = [f"### mHC on {device}: birkhoff vs PyTorch ({', '.join(dtypes)})", ""]
    tc = (data["torch_copy"] or {}).get("gbps")
    out.append(f"Copy bandwidth (read + write): {fmt(bw, '.0f')} GB/s ({source or 'not measured'})"
               + (f"; torch copy {tc:.0f} GB/s" if number(tc) else "")
               + (f"; torch {env['torch']}" if env.get("torch") else "") + ".")
    out.append("GB/s on the minimal-bytes model (every tensor read or written once); "
               "× = torch time / birkhoff time (above 1: birkhoff is faster).")
    out.append("")
    autotune = any(r["compile-max-autotune_s"] for r in rows)
    head = ["stage", "shape T×n×C", "dtype", "birkhoff µs", "min MB", "GB/s", "% copy", "eager µs",
            "compile µs"]
    if autotune:
        head.append("max-autotune µs")
    head += ["× eager", "× compile"] + (["× max-autotune"] if autotune else [])
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    us = lambda s: fmt(s * 1e6 if s else None, ".1f")
    for r in rows:
        cells = [r["stage"], f"{r['tokens']}×{r['streams']}×{r['hidden']}", r["dtype"], us(r["birkhoff_s"]),
                 fmt(r["bytes"] / 1e6, ".1f"), fmt(r["gbps"], ".0f"), fmt(r["pct_copy"], ".0f"), us(r["eager_s"]),
                 us(r["compile_s"])]
        if autotune:
            cells.append(us(r["compile-max-autotune_s"]))
        cells += [fmt(r["x_eager"], ".2f"), fmt(r["x_compile"], ".2f")]
        if autotune:
            cells.append(fmt(r["x_compile-max-autotune"], ".2f"))
        out.append("| " + " | ".join(cells) + " |")
    if not rows:
        out.append("| " + " | ".join([DASH] * len(head)) + " |")
    if data["notes"]:
        out.append("")
        out += [f"* {n}" for n in data["notes"]]
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", help="the results directory of `scripts/gpu-check run`")
    ap.add_argument("--gpu-info", metavar="FILE", help="`birkhoff gpu-info --json` output")
    ap.add_argument("--torch", metavar="FILE", help="`torch_mhc.py --json` output (JSON lines)")
    ap.add_argument("--birkhoff", metavar="FILE", nargs="+", default=[],
                    help="`birkhoff bench ... --target gpu --json` outputs")
    ap.add_argument("--streams", type=int, default=4, help="n where a file does not say (default 4)")
    ap.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="bf16",
                    help="dtype where a file does not say (default bf16)")
    ap.add_argument("--out", help="also write the markdown here")
    ap.add_argument("--json", help="also write everything merged (raw inputs and rows) here")
    ap.add_argument("--self-test", action="store_true", help="run the tests on synthetic fixtures and exit")
    a = ap.parse_args(argv)
    if a.self_test:
        return self_test()
    if not (a.results or a.gpu_info or a.torch or a.birkhoff):
        ap.error("give RESULTS_DIR or --gpu-info/--torch/--birkhoff files")
    if a.results and not os.path.isdir(a.results):
        ap.error(f"{a.results} is not a directory")
    data = load(a.results, a.gpu_info, a.torch, a.birkhoff)
    rows = build_rows(data, a.streams, a.dtype)
    md = markdown(data, rows, a.streams, a.dtype)
    sys.stdout.write(md)
    if a.out:
        with open(a.out, "w") as f:
            f.write(md)
    if a.json:
        merged = dict(gpu_info=data["gpu_info"], torch_env=data["torch_env"], torch_copy=data["torch_copy"],
                      birkhoff={f"{k[0]}-T{k[1]}-C{k[2]}": v for k, v in data["birkhoff"].items()},
                      torch={f"{k[0]}-T{k[1]}-C{k[2]}": v for k, v in data["torch"].items()},
                      rows=rows, notes=data["notes"])
        with open(a.json, "w") as f:
            json.dump(merged, f, indent=1)
    return 0


# ------------------------------------------------------------------ self-test

def self_test():
    """Builds a synthetic fixture directory (made-up numbers, not
    measurements) and checks the merge: byte counts, GB/s, ratios, and "—"
    for every missing or failed piece."""
    T, n = 8, 4
    # Byte model against a hand count for T=8, n=4, C=16 (m = 24) in bf16.
    assert minimal_elements("mhc-pre", T, n, 16) == 8 * 64 + 24 * 64 + 3 + 24 + 8 * 16 + 8 * 4 + 8 * 16
    assert minimal_elements("mhc-post", T, n, 16) == 8 * 16 + 8 * 64 + 8 * 4 + 8 * 16 + 8 * 64
    assert minimal_elements("mhc-sublayer", T, n, 16) == 8 * 64 + 24 * 64 + 3 + 24 + 8 * 64
    assert minimal_bytes("mhc-post", T, n, 16, "f32") == 2 * minimal_bytes("mhc-post", T, n, 16, "bf16")

    with tempfile.TemporaryDirectory(prefix="gpu-table-synthetic-fixture-") as d:
        os.makedirs(os.path.join(d, "birkhoff"))
        w = lambda name, obj: open(os.path.join(d, name), "w").write(
            obj if isinstance(obj, str) else json.dumps(obj) + "\n")
        w("gpu-info.json", {"device": "SYNTHETIC-FIXTURE", "sms": 1, "memory_bytes": 1, "copy_gbps": 1000.0,
                            "copy_bytes": 1})
        pre16 = minimal_bytes("mhc-pre", T, n, 16, "bf16")
        # birkhoff: pre at C=16 (2 µs; bytes as birkhoff would count them),
        # post at C=16 with a wrong byte count, sublayer at C=16 failed
        # (text, no JSON), pre at C=32 missing altogether.
        w("birkhoff/mhc-pre-T8-C16.json", "compiling...\n" + json.dumps(
            {"model": "mhc_pre", "median_s": 2e-6, "bytes": pre16,
             "inputs": {"residual": "bf16[8,4,16]", "fn": "bf16[24,64]", "scale": "bf16[3]", "base": "bf16[24]"}})
          + "\n")
        w("birkhoff/mhc-post-T8-C16.json", {"model": "mhc-post", "median_s": 4e-6, "bytes": 1})
        w("birkhoff/mhc-sublayer-T8-C16.json", "error: no CUDA device\n")
        lines = [
            {"kind": "env", "device": "SYNTHETIC-FIXTURE", "torch": "0.0-fixture"},
            {"kind": "copy", "bytes": 1, "median_s": 1.0, "gbps": 500.0},
            {"kind": "stage", "stage": "mhc-pre", "tokens": T, "streams": n, "hidden": 16, "dtype": "bf16",
             "impl": "eager", "median_s": 8e-6},
            {"kind": "stage", "stage": "mhc-pre", "tokens": T, "hidden": 16, "impl": "compile", "median_s": 3e-6},
            {"kind": "stage", "stage": "mhc-pre", "tokens": T, "hidden": 32, "impl": "eager", "median_s": 9e-6},
            {"kind": "stage", "stage": "mhc-post", "tokens": T, "hidden": 16, "impl": "eager", "median_s": 6e-6},
            {"kind": "stage", "stage": "mhc-post", "tokens": T, "hidden": 16, "impl": "compile",
             "error": "BackendCompilerFailed: fixture"},
        ]
        w("torch.jsonl", "".join(json.dumps(x) + "\n" for x in lines) + "not json\n")
        data = load(d)
        rows = {(r["stage"], r["hidden"]): r for r in build_rows(data, n, "bf16")}
        assert set(rows) == {("mhc-pre", 16), ("mhc-pre", 32), ("mhc-post", 16), ("mhc-sublayer", 16)}, rows
        pre = rows[("mhc-pre", 16)]
        assert abs(pre["gbps"] - pre16 / 2e-6 / 1e9) < 1e-9
        assert abs(pre["pct_copy"] - 100 * pre["gbps"] / 1000.0) < 1e-9  # gpu-info wins over torch's copy
        assert abs(pre["x_eager"] - 4.0) < 1e-12 and abs(pre["x_compile"] - 1.5) < 1e-12
        post = rows[("mhc-post", 16)]
        assert post["compile_s"] is None and post["x_compile"] is None and abs(post["x_eager"] - 1.5) < 1e-12
        assert rows[("mhc-sublayer", 16)]["birkhoff_s"] is None
        assert rows[("mhc-pre", 32)]["birkhoff_s"] is None and rows[("mhc-pre", 32)]["eager_s"] == 9e-6
        assert any("counts 1 bytes" in x for x in data["notes"]), data["notes"]
        assert any("BackendCompilerFailed" in x for x in data["notes"]), data["notes"]
        md = markdown(data, build_rows(load(d), n, "bf16"), n, "bf16")
        assert f"| mhc-pre | 8×4×16 | bf16 | 2.0 | {pre16 / 1e6:.1f} |" in md, md
        assert "| mhc-sublayer | 8×4×16 | bf16 | — |" in md and "| — | — | — |" in md, md
        assert "max-autotune" not in md
        # Without gpu-info the torch copy is the ceiling.
        os.remove(os.path.join(d, "gpu-info.json"))
        data = load(d)
        pre = [r for r in build_rows(data, n, "bf16") if r["stage"] == "mhc-pre" and r["hidden"] == 16][0]
        assert abs(pre["pct_copy"] - 100 * pre["gbps"] / 500.0) < 1e-9
        # The files one by one, without a directory; an f32 run is counted
        # at 4 bytes an element, whatever --dtype says.
        f32 = os.path.join(d, "f32-pre.json")
        with open(f32, "w") as f:
            json.dump({"model": "mhc_pre", "median_s": 1e-6, "inputs": {"residual": "f32[8,4,16]"}}, f)
        data = load(None, None, os.path.join(d, "torch.jsonl"), [f32])
        pre = [r for r in build_rows(data, n, "bf16") if r["stage"] == "mhc-pre" and r["hidden"] == 16][0]
        assert pre["dtype"] == "f32" and pre["bytes"] == 2 * pre16, pre
        assert abs(pre["pct_copy"] - 100 * pre["gbps"] / 500.0) < 1e-9
        assert any("birkhoff ran n=4 f32, torch n=4 bf16" in x for x in data["notes"]), data["notes"]
        # An empty directory still gives a table.
        with tempfile.TemporaryDirectory(prefix="gpu-table-synthetic-fixture-empty-") as e:
            md = markdown(load(e), build_rows(load(e), n, "bf16"), n, "bf16")
            assert "not measured" in md and DASH in md
    print("gpu_table self-test: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
