#!/usr/bin/env python3
"""Fused linear + cross-entropy (an LM head): xent_linear_ce against PyTorch.

  linear_vs_torch.py --lib build/libxent.so [--budget-gib 4] [--json out.json]

For each (N, D, C) in bf16 (default: (8192, 4096, 128256) and
(32768, 2048, 201088)) it times forward + backward of
  loss = F.cross_entropy(F.linear(H, W).float(), y)       (mean, ignore -100)
with gradients w.r.t. H and W, as
  torch-eager     the line above, loss.backward()
  torch-compile   the same function under torch.compile
  gemm-floor      the three bare bf16 GEMMs alone (H W^T, G W, G^T H with a
                  preallocated bf16 G): no implementation that computes
                  the logits and both gradients can beat this
  xent            xent_linear_ce through ctypes on libxent.so: a CUDA
                  handle on PyTorch's current stream, a workspace sized by
                  xent_linear_ce_chunk_rows for --budget-gib, dH and dW in
                  bf16 (or fp32 with --grad-f32)
and reports the median time (CUDA events, after a warm-up) and memory: for
torch the peak torch.cuda.max_memory_allocated above the inputs; for xent
the same measured peak (the workspace and the outputs are allocated by
PyTorch's allocator, so it is counted) and the workspace + outputs bytes.
Runs that do not fit the card are reported as OOM. The xent loss is checked
against torch-eager's (relative difference printed).

Needs a CUDA GPU, PyTorch and a libxent.so built from this tree.
"""
import argparse
import ctypes as ct
import json
import statistics
import sys

import torch
import torch.nn.functional as F

# ---- libxent through ctypes (include/xent.h) -------------------------------
XENT_DTYPE_F32, XENT_DTYPE_BF16 = 0, 2
XENT_TARGET_INDEX_I64 = 1
XENT_REDUCTION_MEAN = 1
XENT_FLAG_GRAD_F32 = 1 << 1
STATUS_TOO_SMALL = 5


class LinearCeDesc(ct.Structure):
    _fields_ = [
        ("n_rows", ct.c_int64), ("hidden", ct.c_int64),
        ("n_classes", ct.c_int64), ("dtype", ct.c_int),
        ("target_type", ct.c_int), ("reduction", ct.c_int),
        ("ignore_index", ct.c_int64), ("weights", ct.c_void_p),
        ("n_weights", ct.c_int64), ("label_smoothing", ct.c_float),
        ("z_loss", ct.c_float), ("softcap", ct.c_float),
        ("flags", ct.c_uint32), ("variant", ct.c_int),
    ]


class Upstream(ct.Structure):
    _fields_ = [("d_dloss", ct.c_void_p), ("dloss_stride", ct.c_int64),
                ("scale", ct.c_float)]


class Outputs(ct.Structure):
    _fields_ = [("d_loss", ct.c_void_p), ("d_loss_rows", ct.c_void_p),
                ("d_lse", ct.c_void_p), ("d_dhidden", ct.c_void_p),
                ("d_dweight", ct.c_void_p), ("d_dbias", ct.c_void_p)]


class Xent:
    def __init__(self, path):
        lib = ct.CDLL(path)
        lib.xent_status_string.restype = ct.c_char_p
        lib.xent_status_string.argtypes = [ct.c_int]
        lib.xent_create.argtypes = [ct.POINTER(ct.c_void_p)]
        lib.xent_set_stream.argtypes = [ct.c_void_p, ct.c_void_p]
        lib.xent_destroy.argtypes = [ct.c_void_p]
        lib.xent_linear_ce_desc_init.restype = None
        lib.xent_linear_ce_desc_init.argtypes = [
            ct.POINTER(LinearCeDesc), ct.c_int64, ct.c_int64, ct.c_int64]
        lib.xent_linear_ce_create.argtypes = [
            ct.c_void_p, ct.c_void_p, ct.POINTER(ct.c_void_p)]
        lib.xent_linear_ce_destroy.argtypes = [ct.c_void_p]
        lib.xent_linear_ce_workspace_size.argtypes = [
            ct.c_void_p, ct.POINTER(LinearCeDesc), ct.c_int64,
            ct.POINTER(ct.c_size_t)]
        lib.xent_linear_ce_chunk_rows.argtypes = [
            ct.c_void_p, ct.POINTER(LinearCeDesc), ct.c_size_t,
            ct.POINTER(ct.c_int64)]
        lib.xent_linear_ce.argtypes = [
            ct.c_void_p, ct.POINTER(LinearCeDesc), ct.c_void_p, ct.c_void_p,
            ct.c_void_p, ct.c_void_p, ct.POINTER(Upstream),
            ct.POINTER(Outputs), ct.c_int64, ct.c_void_p, ct.c_size_t]
        for f in ("xent_create", "xent_set_stream", "xent_destroy",
                  "xent_linear_ce_create", "xent_linear_ce_destroy",
                  "xent_linear_ce_workspace_size", "xent_linear_ce_chunk_rows",
                  "xent_linear_ce"):
            getattr(lib, f).restype = ct.c_int
        self.lib = lib
        self.h = ct.c_void_p()
        self.check(lib.xent_create(ct.byref(self.h)), "xent_create")
        stream = torch.cuda.current_stream().cuda_stream
        self.check(lib.xent_set_stream(self.h, ct.c_void_p(stream)),
                   "xent_set_stream")
        self.ctx = ct.c_void_p()
        self.check(lib.xent_linear_ce_create(self.h, None,
                                             ct.byref(self.ctx)),
                   "xent_linear_ce_create")

    def check(self, st, what):
        if st != 0:
            raise RuntimeError(
                f"{what}: {self.lib.xent_status_string(st).decode()}")

    def close(self):
        self.lib.xent_linear_ce_destroy(self.ctx)
        self.lib.xent_destroy(self.h)


# ---- timing -----------------------------------------------------------------
def time_cuda(fn, warmup=3, runs=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def measured(fn, base_bytes):
    """(median ms, peak bytes above base_bytes) or ('OOM', None)."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        ms = time_cuda(fn)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "OOM", None
    torch.cuda.synchronize()
    return ms, torch.cuda.max_memory_allocated() - base_bytes


def torch_loss(h, w, y):
    return F.cross_entropy(F.linear(h, w).float(), y)


def run_shape(x, n, d, c, budget, grad_f32, seed=0):
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(seed)
    h = (torch.randn(n, d, device=dev, generator=g) * 1.0).bfloat16()
    w = (torch.randn(c, d, device=dev, generator=g) / d ** 0.5).bfloat16()
    y = torch.randint(0, c, (n,), device=dev, generator=g)
    h.requires_grad_(True)
    w.requires_grad_(True)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    res = {"n_rows": n, "hidden": d, "n_classes": c, "dtype": "bf16"}
    flops = 3 * 2 * n * d * c

    def eager():
        h.grad = None
        w.grad = None
        torch_loss(h, w, y).backward()

    ms, mem = measured(eager, base)
    res["torch_eager"] = {"ms": ms, "peak_bytes": mem}
    ref_loss = None
    if ms != "OOM":
        with torch.no_grad():
            ref_loss = torch_loss(h, w, y).item()
    h.grad = None
    w.grad = None

    compiled = torch.compile(torch_loss)

    def comp():
        h.grad = None
        w.grad = None
        compiled(h, w, y).backward()

    try:
        ms, mem = measured(comp, base)
    except Exception as e:  # compile failures are reported, not fatal
        ms, mem = f"error: {type(e).__name__}", None
    res["torch_compile"] = {"ms": ms, "peak_bytes": mem}
    h.grad = None
    w.grad = None
    torch.cuda.empty_cache()

    # the GEMM floor: H W^T, G W, G^T H in bf16 with a preallocated G
    with torch.no_grad():
        try:
            z = torch.empty(n, c, device=dev, dtype=torch.bfloat16)
            dh = torch.empty(n, d, device=dev, dtype=torch.bfloat16)
            dw = torch.empty(c, d, device=dev, dtype=torch.bfloat16)

            def floor():
                torch.matmul(h, w.t(), out=z)
                torch.matmul(z, w, out=dh)
                torch.matmul(z.t(), h, out=dw)

            ms = time_cuda(floor)
            res["gemm_floor"] = {"ms": ms, "tflops": flops / ms / 1e9}
            del z, dh, dw
        except torch.cuda.OutOfMemoryError:
            res["gemm_floor"] = {"ms": "OOM"}
    torch.cuda.empty_cache()

    # xent
    desc = LinearCeDesc()
    x.lib.xent_linear_ce_desc_init(ct.byref(desc), n, d, c)
    desc.dtype = XENT_DTYPE_BF16
    desc.target_type = XENT_TARGET_INDEX_I64
    desc.reduction = XENT_REDUCTION_MEAN
    if grad_f32:
        desc.flags = XENT_FLAG_GRAD_F32
    chunk = ct.c_int64()
    x.check(x.lib.xent_linear_ce_chunk_rows(x.h, ct.byref(desc), budget,
                                            ct.byref(chunk)),
            "xent_linear_ce_chunk_rows")
    wsb = ct.c_size_t()
    x.check(x.lib.xent_linear_ce_workspace_size(x.h, ct.byref(desc), chunk,
                                                ct.byref(wsb)),
            "xent_linear_ce_workspace_size")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    gdt = torch.float32 if grad_f32 else torch.bfloat16
    ws = torch.empty(wsb.value, device=dev, dtype=torch.uint8)
    loss = torch.empty(1, device=dev, dtype=torch.float32)
    dh = torch.empty(n, d, device=dev, dtype=gdt)
    dw = torch.empty(c, d, device=dev, dtype=gdt)
    out = Outputs(loss.data_ptr(), None, None, dh.data_ptr(), dw.data_ptr(),
                  None)
    up = Upstream(None, 0, 1.0)

    def xent_call():
        x.check(x.lib.xent_linear_ce(x.ctx, ct.byref(desc), h.data_ptr(),
                                     w.data_ptr(), None, y.data_ptr(),
                                     ct.byref(up), ct.byref(out), chunk,
                                     ws.data_ptr(), wsb.value),
                "xent_linear_ce")

    ms = time_cuda(xent_call)
    torch.cuda.synchronize()
    own = wsb.value + loss.numel() * 4 + dh.numel() * dh.element_size() + \
        dw.numel() * dw.element_size()
    res["xent"] = {"ms": ms, "chunk_rows": chunk.value,
                   "workspace_bytes": wsb.value,
                   "workspace_plus_outputs_bytes": own,
                   "peak_bytes": torch.cuda.max_memory_allocated() - base,
                   "loss": loss.item()}
    if ref_loss is not None:
        res["xent"]["loss_rel_diff_vs_eager"] = \
            abs(loss.item() - ref_loss) / abs(ref_loss)
    del ws, dh, dw, loss
    torch.cuda.empty_cache()
    return res


def fmt(v):
    if isinstance(v, float):
        return f"{v:9.2f}"
    return f"{v!s:>9}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default="build/libxent.so")
    ap.add_argument("--budget-gib", type=float, default=4.0,
                    help="xent workspace budget")
    ap.add_argument("--grad-f32", action="store_true",
                    help="xent: dH/dW in fp32 (fp32 accumulation of dW)")
    ap.add_argument("--shape", action="append", default=None,
                    help="N,D,C (repeatable)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("linear_vs_torch.py: no CUDA device", file=sys.stderr)
        return 2
    shapes = [(8192, 4096, 128256), (32768, 2048, 201088)]
    if a.shape:
        shapes = [tuple(int(v) for v in s.split(",")) for s in a.shape]
    x = Xent(a.lib)
    budget = int(a.budget_gib * (1 << 30))
    results = []
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"{'N,D,C':>22} {'impl':>14} {'ms':>9} {'peak GiB':>9}")
    for n, d, c in shapes:
        r = run_shape(x, n, d, c, budget, a.grad_f32)
        results.append(r)
        for k in ("torch_eager", "torch_compile", "gemm_floor", "xent"):
            v = r[k]
            pk = v.get("peak_bytes")
            pk = pk / (1 << 30) if isinstance(pk, int) else "-"
            print(f"{f'{n},{d},{c}':>22} {k:>14} {fmt(v['ms'])} {fmt(pk)}")
        xr = r["xent"]
        print(f"{'':>22} xent chunk_rows={xr['chunk_rows']} workspace="
              f"{xr['workspace_bytes'] / (1 << 30):.2f} GiB, +outputs "
              f"{xr['workspace_plus_outputs_bytes'] / (1 << 30):.2f} GiB, "
              f"loss rel diff vs eager "
              f"{xr.get('loss_rel_diff_vs_eager', 'n/a')}")
    x.close()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(),
                       "torch": torch.__version__, "results": results}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
