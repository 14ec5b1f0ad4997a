#!/usr/bin/env python3
"""xent's CPU backend against PyTorch's CPU F.cross_entropy, one process.

Fused loss + gradient (reduction MEAN, int64 class-index targets, fp32
logits, the gradient into a separate buffer), on ONE thread on each side:
xent_create_cpu(&h, 1) and torch.set_num_threads(1). Each side runs on the
same logits and targets; times are wall-clock (time.perf_counter) around
one call, the median (and min) of --runs runs after --warmup runs, the two
sides alternating run by run so that a change in the machine's load hits
both.

  # build the library (Release), then:
  python3 bench/cpu_vs_torch.py                       # auto-detects build*/
  python3 bench/cpu_vs_torch.py --lib build/release/libxent.so \\
      --shapes 4096x32768,8192x4096 --runs 7 --json cpu_vs_torch.json

--lib defaults to the first libxent.so found under <repo>/build*/ (e.g.
build/release/ from the CMake preset); the environment variable XENT_LIB
also works. XENT_CPU_ISA=avx2|generic caps the instruction set xent picks
(default: the widest this CPU runs).

--malloc-reuse re-executes the script (same process id, one process) with
glibc malloc told to keep freed memory (MALLOC_MMAP_THRESHOLD_,
MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_). By default every 512 MiB tensor
torch allocates is a fresh mmap whose pages the kernel zeroes on first
touch, which is most of torch's time at 4096 x 32768; with reuse, torch's
time is its arithmetic and memory traffic. Report both.

What each side does per run:
  xent   xent_ce_forward_backward(h, MEAN, logits, targets, grad, &loss):
         reads the logits and writes the gradient into caller buffers that
         are allocated once, before timing.
  torch  loss = F.cross_entropy(x, y); (g,) = torch.autograd.grad(loss, x)
         (autograd.grad rather than backward(), so no accumulation into a
         previous .grad); torch allocates its intermediates every run, as
         it does in use.

Before timing, xent's loss and gradient are checked against a float64
reference (torch, float64): the loss over every row, the gradient on
--check-rows sampled rows, with the fp32 tolerance of tests/conformance.c
(|got - ref| <= 1e-5 |ref| + 1e-5 max|ref| elementwise, and
||got - ref|| <= 1e-5 ||ref||). A failed check exits with status 1.

Prints a table and, with --json PATH, writes the machine (CPU model from
/proc/cpuinfo), the commit, the torch version and every run's time.
"""
import argparse
import ctypes
import datetime
import glob
import json
import mmap
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# glibc tunables: serve large blocks from the heap and never give freed
# memory back, so repeated large allocations reuse already-touched pages
MALLOC_REUSE = [("MALLOC_MMAP_THRESHOLD_", str(1 << 34)),
                ("MALLOC_TRIM_THRESHOLD_", str(1 << 34)),
                ("MALLOC_TOP_PAD_", str(1 << 30))]

XENT_DTYPE_F32 = 0
XENT_TARGET_INDEX_I64 = 1
XENT_REDUCTION_MEAN = 1


class CeDesc(ctypes.Structure):
    """struct xent_ce_desc of include/xent.h (field order and types)."""
    _fields_ = [
        ("n_rows", ctypes.c_int64),
        ("n_classes", ctypes.c_int64),
        ("ld", ctypes.c_int64),
        ("logits_dtype", ctypes.c_int),
        ("target_type", ctypes.c_int),
        ("target_ld", ctypes.c_int64),
        ("reduction", ctypes.c_int),
        ("ignore_index", ctypes.c_int64),
        ("weights", ctypes.c_void_p),
        ("n_weights", ctypes.c_int64),
        ("label_smoothing", ctypes.c_float),
        ("z_loss", ctypes.c_float),
        ("softcap", ctypes.c_float),
        ("flags", ctypes.c_uint32),
        ("variant", ctypes.c_int),
    ]


def find_lib(arg):
    if arg:
        return arg
    if os.environ.get("XENT_LIB"):
        return os.environ["XENT_LIB"]
    pats = [os.path.join(REPO, "build*", "libxent.so"),
            os.path.join(REPO, "build*", "*", "libxent.so")]
    for pat in pats:
        hits = sorted(glob.glob(pat))
        if hits:
            return hits[0]
    sys.exit("libxent.so not found under %s/build*/: build the library "
             "(cmake --preset release && cmake --build --preset release) or "
             "pass --lib PATH" % REPO)


class Xent:
    def __init__(self, path, n_threads):
        self.path = os.path.abspath(path)
        lib = ctypes.CDLL(self.path)
        vp, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.xent_create_cpu.argtypes = [ctypes.POINTER(vp), ctypes.c_int]
        lib.xent_destroy.argtypes = [vp]
        lib.xent_ce_desc_init.argtypes = [ctypes.POINTER(CeDesc), i64, i64]
        lib.xent_ce_desc_init.restype = None
        lib.xent_ce_workspace_size.argtypes = [
            vp, ctypes.POINTER(CeDesc), ctypes.POINTER(ctypes.c_size_t)]
        lib.xent_ce_forward_backward.argtypes = [
            vp, ctypes.POINTER(CeDesc), vp, vp, vp, vp, vp, vp, vp, vp,
            ctypes.c_size_t]
        lib.xent_status_string.argtypes = [ctypes.c_int]
        lib.xent_status_string.restype = ctypes.c_char_p
        lib.xent_version_string.restype = ctypes.c_char_p
        self.lib = lib
        self.h = vp()
        self.check(lib.xent_create_cpu(ctypes.byref(self.h), n_threads),
                   "xent_create_cpu")
        self.version = lib.xent_version_string().decode()

    def check(self, st, what):
        if st != 0:
            sys.exit("%s: %s" % (what, self.lib.xent_status_string(st).decode()))

    def problem(self, n, c):
        d = CeDesc()
        self.lib.xent_ce_desc_init(ctypes.byref(d), n, c)
        d.logits_dtype = XENT_DTYPE_F32
        d.target_type = XENT_TARGET_INDEX_I64
        d.reduction = XENT_REDUCTION_MEAN
        ws = ctypes.c_size_t()
        self.check(self.lib.xent_ce_workspace_size(self.h, ctypes.byref(d),
                                                   ctypes.byref(ws)),
                   "xent_ce_workspace_size")
        return d, np.empty(max(ws.value, 1), dtype=np.uint8)

    def fwd_bwd(self, d, logits, targets, grad, loss, ws):
        st = self.lib.xent_ce_forward_backward(
            self.h, ctypes.byref(d), logits.ctypes.data, targets.ctypes.data,
            None, grad.ctypes.data, loss.ctypes.data, None, None,
            ws.ctypes.data, ws.nbytes)
        self.check(st, "xent_ce_forward_backward")


def time_runs(fns, warmup, runs):
    """Seconds of each run of each fn, the fns alternating run by run."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    out = [[] for _ in fns]
    for _ in range(runs):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t)
    return out


def close(got, ref):
    """The fp32 rule of tests/conformance.c; returns (ok, max_err, rel_norm)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    err = np.abs(got - ref)
    ok_el = bool(np.all(err <= 1e-5 * np.abs(ref) + 1e-5 * scale))
    norm = float(np.linalg.norm(ref))
    rel = float(np.linalg.norm(got - ref)) / norm if norm > 0 else 0.0
    return ok_el and rel <= 1e-5, float(err.max()) if err.size else 0.0, rel


def validate(x, y, xent_loss, xent_grad, check_rows, seed):
    """xent vs float64 torch; torch fp32 vs float64 for reference."""
    n, c = x.shape
    lse = torch.empty(n, dtype=torch.float64)
    for r0 in range(0, n, 256):  # float64 in slices: 256 x C at a time
        lse[r0:r0 + 256] = torch.logsumexp(x[r0:r0 + 256].double(), dim=1)
    zy = x.gather(1, y.view(-1, 1)).view(-1).double()
    ref_loss = float((lse - zy).mean())
    g = torch.Generator().manual_seed(seed + 1)
    rows = torch.randperm(n, generator=g)[:check_rows]
    xr = x[rows].double()
    ref_grad = torch.softmax(xr, dim=1)
    ref_grad[torch.arange(len(rows)), y[rows]] -= 1.0
    ref_grad /= n
    ok_l, err_l, _ = close([xent_loss], [ref_loss])
    ok_g, err_g, rel_g = close(xent_grad[rows.numpy()], ref_grad.numpy())
    return {"loss": float(xent_loss), "loss_ref_f64": ref_loss,
            "loss_abs_err": err_l, "grad_rows_checked": len(rows),
            "grad_max_abs_err": err_g, "grad_rel_norm": rel_g,
            "ok": ok_l and ok_g}


def machine():
    model = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": model, "cpus": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version()}


def commit():
    try:
        sha = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"],
                             capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain"],
                               capture_output=True, text=True).stdout.strip()
        return sha.stdout.strip() + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "uncommitted working tree"


def stats_ms(ts):
    return {"median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts),
            "runs_ms": [1e3 * t for t in ts]}


def page_array(shape, dtype):
    """A C-contiguous array in its own anonymous mapping: page-aligned and
    placed the same way whatever malloc does (see --malloc-reuse), with
    transparent huge pages requested, as numpy does for its large arrays
    (MADV_HUGEPAGE)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = mmap.mmap(-1, max(nbytes, 1),
                    flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        buf.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape))).reshape(
        shape)


def bench_shape(xent, n, c, args):
    g = torch.Generator().manual_seed(args.seed)
    logits = page_array((n, c), np.float32)
    x = torch.from_numpy(logits)  # the same memory for both sides
    torch.randn(n, c, generator=g, out=x)
    x.mul_(args.logit_std)
    y = torch.randint(0, c, (n,), generator=g, dtype=torch.int64)
    targets = y.numpy()
    grad = page_array((n, c), np.float32)
    loss = np.zeros(1, dtype=np.float32)
    d, ws = xent.problem(n, c)

    def run_xent():
        xent.fwd_bwd(d, logits, targets, grad, loss, ws)

    run_xent()
    check = validate(x, y, float(loss[0]), grad, args.check_rows, args.seed)
    xr = x.detach().requires_grad_(True)

    def run_torch():
        lt = F.cross_entropy(xr, y)
        (gt,) = torch.autograd.grad(lt, xr)
        return lt, gt

    lt, gt = run_torch()
    rows = np.arange(min(n, args.check_rows))
    _, _, rel_t = close(gt[rows].numpy(), grad[rows])
    check["torch_vs_xent_grad_rel_norm"] = rel_t
    check["torch_loss"] = float(lt.detach())
    del lt, gt

    tx, tt = time_runs([run_xent, run_torch], args.warmup, args.runs)
    res = {"n_rows": n, "n_classes": c, "dtype": "f32",
           "bytes_min": 2 * n * c * 4,
           "xent": stats_ms(tx), "torch": stats_ms(tt), "check": check}
    res["ratio_torch_over_xent"] = (res["torch"]["median_ms"] /
                                    res["xent"]["median_ms"])
    res["xent"]["gbps"] = res["bytes_min"] / (1e6 * res["xent"]["median_ms"])
    res["torch"]["gbps"] = res["bytes_min"] / (1e6 * res["torch"]["median_ms"])
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", help="path to libxent.so (default: build*/)")
    ap.add_argument("--shapes", default="4096x32768",
                    help="comma-separated NxC (default 4096x32768)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1,
                    help="threads on each side (default 1)")
    ap.add_argument("--check-rows", type=int, default=16)
    ap.add_argument("--logit-std", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--malloc-reuse", action="store_true",
                    help="glibc malloc keeps freed memory (see above)")
    args = ap.parse_args()
    if args.malloc_reuse and MALLOC_REUSE[0][0] not in os.environ:
        env = dict(os.environ, **dict(MALLOC_REUSE))
        os.execve(sys.executable, [sys.executable] + sys.argv, env)

    torch.set_num_threads(args.threads)
    xent = Xent(find_lib(args.lib), args.threads)
    shapes = [tuple(int(v) for v in s.lower().split("x"))
              for s in args.shapes.split(",") if s]
    out = {"machine": machine(), "commit": commit(),
           "date": datetime.datetime.now().astimezone().isoformat(
               timespec="seconds"),
           "torch": torch.__version__, "numpy": np.__version__,
           "xent_version": xent.version, "library": xent.path,
           "xent_cpu_isa": os.environ.get("XENT_CPU_ISA", "auto"),
           "malloc_env": {k: os.environ[k] for k, _ in MALLOC_REUSE
                          if k in os.environ},
           "threads": args.threads, "runs": args.runs,
           "warmup": args.warmup, "op": "ce fwd+bwd, MEAN, i64 targets",
           "results": []}
    print("# %s, %d thread(s), torch %s, %d runs after %d warm-up, malloc %s"
          % (out["machine"]["cpu_model"], args.threads, torch.__version__,
             args.runs, args.warmup,
             "reuse" if out["malloc_env"] else "default"))
    hdr = ("%-12s %11s %11s %11s %11s %7s %8s %9s"
           % ("shape", "xent med ms", "xent min ms", "torch med", "torch min",
              "ratio", "xent GB/s", "check"))
    print(hdr)
    ok = True
    for n, c in shapes:
        r = bench_shape(xent, n, c, args)
        out["results"].append(r)
        ok &= r["check"]["ok"]
        print("%-12s %11.1f %11.1f %11.1f %11.1f %6.2fx %8.1f %9s"
              % ("%dx%d" % (n, c), r["xent"]["median_ms"],
                 r["xent"]["min_ms"], r["torch"]["median_ms"],
                 r["torch"]["min_ms"], r["ratio_torch_over_xent"],
                 r["xent"]["gbps"],
                 "ok" if r["check"]["ok"] else "FAILED"))
        sys.stdout.flush()
    print("ratio = torch median / xent median; GB/s counts the minimum "
          "traffic, N*C*4 read + N*C*4 written")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    if not ok:
        print("validation FAILED: see the check fields", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
