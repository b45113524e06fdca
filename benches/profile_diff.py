#!/usr/bin/env python3
"""Where two kernel profiles of the same model differ.

Reads two `profile.txt` files written by `birkhoff train … --profile` (say
one with `--recompute none`, one with `--recompute block=4`), groups the
kernels by kind (the name without its `kN_` number) and prints the kinds
whose time changed, then the difference split three ways:

* kinds only one profile has: the kernels a change adds or removes (for
  recomputation, the split forward pre-mix and the per-block replays);
* matrix products: the same calls in both, so their difference is the
  machine's noise unless the shapes changed;
* everything else.

    python3 benches/profile_diff.py none/profile.txt block=4/profile.txt
    python3 benches/profile_diff.py A/profile.txt B/profile.txt --min-ms 0.1
"""

import argparse
import collections
import re


def load(path):
    """Kernel kind -> list of milliseconds, from a profile.txt."""
    kinds = collections.OrderedDict()
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, ms, _share = line.split()
            kind = re.sub(r"copy_\d+", "copy", re.sub(r"^k\d+_", "", name))
            kinds.setdefault(kind, []).append(float(ms))
    return kinds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="the baseline profile.txt")
    ap.add_argument("b", help="the profile.txt to compare with it")
    ap.add_argument("--min-ms", type=float, default=0.25,
                    help="list kinds whose time changed by at least this much")
    args = ap.parse_args()
    a, b = load(args.a), load(args.b)
    rows = []
    for kind in sorted(set(a) | set(b)):
        ta, tb = a.get(kind, []), b.get(kind, [])
        rows.append((sum(tb) - sum(ta), kind, len(ta), sum(ta), len(tb), sum(tb)))
    rows.sort()
    print(f"{'change':>9}  {'count':>9}  {'ms (a)':>8}  {'ms (b)':>8}  kind")
    for d, kind, na, sa, nb, sb in rows:
        if abs(d) >= args.min_ms or (na == 0) != (nb == 0):
            count = f"{na}->{nb}" if na != nb else str(na)
            print(f"{d:+9.2f}  {count:>9}  {sa:8.2f}  {sb:8.2f}  {kind}")
    total_a = sum(r[3] for r in rows)
    total_b = sum(r[5] for r in rows)
    only = sum(d for d, _, na, _, nb, _ in rows if (na == 0) != (nb == 0))
    matmul = sum(d for d, kind, *_ in rows if kind == "matmul")
    rest = total_b - total_a - only - matmul
    pct = lambda x: f"{100 * x / total_a:+.1f}%"
    print(f"total: {total_a:.2f} -> {total_b:.2f} ms ({pct(total_b - total_a)})")
    print(f"  kinds in one profile only: {only:+.2f} ms ({pct(only)})")
    print(f"  matrix products:           {matmul:+.2f} ms ({pct(matmul)})")
    print(f"  everything else:           {rest:+.2f} ms ({pct(rest)})")


if __name__ == "__main__":
    main()
