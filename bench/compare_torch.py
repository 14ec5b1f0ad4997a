#!/usr/bin/env python3
"""Time PyTorch's cross-entropy on the shapes xent benchmarks, on the same
card, in one process: eager F.cross_entropy, a torch.compile'd version, and
Liger-Kernel's fused cross-entropy when it is importable.

  compare_torch.py --shapes-from bench.json --json peers.json

The shapes are read from the rows of an `xent bench --suite --json` result
(op, dtype, n_rows, n_classes), so both sides time exactly the same problems.
Timing follows bench/: CUDA events, a warm-up, the median of many runs, and
rotation over enough input copies that the working set exceeds the L2 cache.
Forward-only runs under torch.no_grad(); forward+backward computes the mean
loss and its gradient with respect to the logits.
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def time_cuda(fn, n_inputs, min_runs=20, max_runs=200, budget_s=1.5):
    """Median microseconds of fn(k) over rotating input k."""
    for k in range(min(n_inputs, 3)):  # warm-up
        fn(k)
    torch.cuda.synchronize()
    times = []
    start = time.perf_counter()
    k = 0
    while len(times) < max_runs:
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn(k % n_inputs)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3)
        k += 1
        if len(times) >= min_runs and time.perf_counter() - start > budget_s:
            break
    return statistics.median(times)


def make_inputs(n, c, dtype, l2_bytes):
    per = n * c * torch.tensor([], dtype=dtype).element_size()
    copies = max(1, min(8, -(-4 * l2_bytes // max(per, 1))))
    g = torch.Generator(device="cuda").manual_seed(1234)
    xs, ys = [], []
    for _ in range(copies):
        x = torch.randn(n, c, device="cuda", generator=g, dtype=torch.float32) * 2
        xs.append(x.to(dtype))
        ys.append(torch.randint(0, c, (n,), device="cuda", generator=g))
    return xs, ys


def peer_fns(name, op):
    if name == "torch_eager":
        ce = F.cross_entropy
    elif name == "torch_compile":
        ce = torch.compile(F.cross_entropy, dynamic=False)
    elif name == "liger":
        from liger_kernel.transformers import LigerCrossEntropyLoss
        ce = LigerCrossEntropyLoss()
    else:
        raise ValueError(name)

    if op == "fwd":
        def run(x, y):
            with torch.no_grad():
                return ce(x, y)
    else:
        def run(x, y):
            x.grad = None
            loss = ce(x, y)
            loss.backward()
            return loss
    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes-from", required=True,
                    help="an `xent bench --suite --json` result")
    ap.add_argument("--json", required=True, help="output file")
    ap.add_argument("--compile-budget", type=float, default=120.0,
                    help="seconds of torch.compile work before skipping it")
    a = ap.parse_args()

    with open(a.shapes_from, encoding="utf-8") as f:
        rows = json.load(f).get("results", [])
    shapes = sorted({(r["op"], r["dtype"], r["n_rows"], r["n_classes"])
                     for r in rows if r.get("dtype") in DTYPES},
                    key=lambda s: (s[3], s[2], s[1], s[0]))
    names = ["torch_eager", "torch_compile"]
    try:
        import liger_kernel  # noqa: F401
        names.append("liger")
    except ImportError:
        print("liger_kernel not importable: skipped", file=sys.stderr)

    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    peers = []
    compile_spent = 0.0
    for op, dt, n, c in shapes:
        dtype = DTYPES[dt]
        try:
            xs, ys = make_inputs(n, c, dtype, l2)
        except torch.cuda.OutOfMemoryError:
            print(f"{op} {dt} {n}x{c}: out of memory, skipped", file=sys.stderr)
            continue
        if op == "fwd_bwd":
            for x in xs:
                x.requires_grad_(True)
        for name in names:
            if name == "torch_compile" and compile_spent > a.compile_budget:
                print(f"{op} {dt} {n}x{c} {name}: compile budget spent, skipped",
                      file=sys.stderr)
                continue
            t0 = time.perf_counter()
            try:
                run = peer_fns(name, op)
                us = time_cuda(lambda k: run(xs[k], ys[k]), len(xs))
            except Exception as e:  # a peer failing is reported, not fatal
                print(f"{op} {dt} {n}x{c} {name}: {type(e).__name__}: {e}",
                      file=sys.stderr)
                torch.cuda.empty_cache()
                continue
            if name == "torch_compile":
                compile_spent += time.perf_counter() - t0
            peers.append({"name": name, "op": op, "dtype": dt, "n_rows": n,
                          "n_classes": c, "us": round(us, 2)})
            print(f"{op:8s} {dt:5s} {n:8d} x {c:7d} {name:14s} {us:10.1f} us",
                  flush=True)
        del xs, ys
        torch.cuda.empty_cache()

    versions = {"torch": torch.__version__}
    try:
        import triton
        versions["triton"] = triton.__version__
    except ImportError:
        pass
    with open(a.json, "w", encoding="utf-8") as f:
        json.dump({"device": torch.cuda.get_device_name(0), "versions": versions,
                   "peers": peers}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
