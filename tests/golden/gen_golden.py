#!/usr/bin/env python3
"""Golden vectors for xent, produced by PyTorch itself.

What it generates
  tests/golden/ce.txt       softmax cross-entropy: torch.nn.functional.cross_entropy
                            (index and probability targets, class weights,
                            ignore_index, label_smoothing, reduction none/mean/sum),
                            plus z-loss and logit softcap composed from torch ops
                            (cases marked `composed 1`).
  tests/golden/entropy.txt  entropy of softmax(z) per row:
                            torch.distributions.Categorical(logits=z).entropy().
  tests/golden/kl.txt       KL(q || softmax(z)) with torch.nn.functional.kl_div
                            (log_softmax(z), target, reduction, log_target).
  tests/golden/bce.txt      torch.nn.functional.binary_cross_entropy_with_logits
                            (soft and hard targets, pos_weight, weight).

Every value is computed in float64 on the CPU, gradients by autograd. The file
format and the keys of every op are documented at the top of tests/golden.h,
which is the C loader CI uses (CI has no PyTorch).

Inputs are drawn from a small built-in PRNG (splitmix64, seeded from the case
name) and snapped to dyadic grids, so they are exactly representable in
float32 (the library's input type) and do not depend on numpy/torch RNG
streams or on libm. Scalar options (label_smoothing, z_loss, softcap) are the
float32 roundings of their nominal values (e.g. 0.1 -> 0.10000000149011612),
because that is what the library receives through its float fields.
Values are written with Python's repr(): the shortest string that reads back
as exactly the same double (strtod); inf/-inf/nan are spelled so.

The generator also checks itself: torch's reduced losses against the closed
forms of include/xent.h (per-row formula and the MEAN denominator), and the
autograd gradients against central finite differences on every small case.
Any mismatch aborts without writing.

How to rerun (from the repository root; needs torch 2.x):
    python3 tests/golden/gen_golden.py            # rewrites tests/golden/*.txt
    python3 tests/golden/gen_golden.py --check    # verify the committed files
Re-running with the same torch build reproduces the files byte for byte
(single-threaded torch; the torch version is recorded in each file's header).
"""

import argparse
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
F64 = torch.float64
IGNORE_DEFAULT = -100


# ---------------------------------------------------------------------------
# Deterministic inputs
# ---------------------------------------------------------------------------
def f32(x):
    """x rounded to the nearest float32, as a Python float."""
    return struct.unpack("<f", struct.pack("<f", float(x)))[0]


class Rng:
    """splitmix64: tiny, portable, stable across Python/numpy/torch versions."""

    MASK = (1 << 64) - 1

    def __init__(self, name):
        seed = 0x9E3779B97F4A7C15
        for ch in name.encode():
            seed = ((seed ^ ch) * 0x100000001B3) & self.MASK
        self.state = seed

    def u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & self.MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & self.MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & self.MASK
        return z ^ (z >> 31)

    def uniform(self):
        """Uniform in [0, 1) with 53 random bits."""
        return (self.u64() >> 11) / float(1 << 53)

    def randint(self, n):
        return self.u64() % n

    def grid(self, lo, hi, step):
        """Uniform on the grid lo + k*step within [lo, hi] (exact dyadic)."""
        k = int(round((hi - lo) / step))
        return lo + self.randint(k + 1) * step

    def normal_grid(self, scale, step=1.0 / 256):
        """Roughly N(0, scale^2), snapped to multiples of `step`.

        Irwin-Hall (sum of 12 uniforms - 6) uses only + and -, so the value
        before snapping is bit-identical everywhere."""
        s = sum(self.uniform() for _ in range(12)) - 6.0
        return round(s * scale / step) * step


def make_logits(rng, n, c, scale=2.0):
    return [rng.normal_grid(scale) for _ in range(n * c)]


def make_probs(rng, n, c, zero_frac=0.0, total=1.0):
    """Rows of dyadic probabilities (multiples of total/1024) summing exactly
    to `total`; about zero_frac of the entries are exact zeros (never all;
    zero_frac >= 1 gives one-hot rows)."""
    out = []
    for _ in range(n):
        raw = []
        for _ in range(c):
            u = rng.uniform()
            raw.append(0.0 if rng.uniform() < zero_frac else u * u * u + 1e-3)
        if sum(raw) == 0.0:
            raw[rng.randint(c)] = 1.0
        s = sum(raw)
        counts = [int(math.floor(1024 * r / s)) for r in raw]
        counts[raw.index(max(raw))] += 1024 - sum(counts)
        out.extend(k * total / 1024.0 for k in counts)
    return out


def make_weights(rng, c, with_zero=False):
    w = [rng.grid(0.25, 2.0, 1.0 / 16) for _ in range(c)]
    if with_zero and c > 1:
        w[c - 1] = 0.0
    return w


# ---------------------------------------------------------------------------
# Output formatting
# ---------------------------------------------------------------------------
def fmt(v):
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return v
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v)


def tolist(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


class Case:
    def __init__(self, name):
        self.name = name
        self.lines = []

    def scalar(self, key, value):
        self.lines.append("%s %s" % (key, fmt(value)))

    def array(self, key, values):
        values = list(values)
        self.lines.append(" ".join([key, str(len(values))] + [fmt(v) for v in values]))

    def text(self):
        return "case %s\n%s\nend\n" % (self.name, "\n".join(self.lines))


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------
def close(a, b, rtol=1e-12, atol=1e-12):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= atol + rtol * max(abs(a), abs(b))


def assert_close(what, a, b, rtol=1e-12, atol=1e-12):
    a, b = list(a), list(b)
    assert len(a) == len(b), (what, len(a), len(b))
    for i, (x, y) in enumerate(zip(a, b)):
        if not close(x, y, rtol, atol):
            raise AssertionError("%s[%d]: %r vs %r" % (what, i, x, y))


FD_CHECKED = []


def fd_check(name, fun, x, grad, max_elems=200):
    """Central differences of the scalar fun(x) against the autograd grad."""
    if x.numel() == 0 or x.numel() > max_elems:
        return
    base = fun(x.detach().clone()).item()
    if not math.isfinite(base):
        return
    flat = x.detach().clone().reshape(-1)
    g = grad.reshape(-1)
    h = 1e-5
    for i in range(flat.numel()):
        xp = flat.clone()
        xm = flat.clone()
        xp[i] += h
        xm[i] -= h
        step = float(xp[i] - xm[i])
        d = (fun(xp.view_as(x)).item() - fun(xm.view_as(x)).item()) / step
        err = abs(d - float(g[i]))
        # truncation O(h^2) plus the rounding of the two loss values
        tol = 1e-6 * max(1.0, abs(float(g[i]))) + 8 * 2.2e-16 * max(1.0, abs(base)) / step
        if err > tol:
            raise AssertionError("%s: finite difference %r vs autograd %r at %d"
                                 % (name, d, float(g[i]), i))
    FD_CHECKED.append(name)


# ---------------------------------------------------------------------------
# Cross-entropy
# ---------------------------------------------------------------------------
def ce_forward(z, t, target, w, ii, ls, zl, cap, reduction, use_torch_reduction):
    """Returns (loss, rows, lse). loss is the reduced loss (sum of rows for
    'none'). With use_torch_reduction the reduction is torch's own."""
    n, c = z.shape
    zc = cap * torch.tanh(z / cap) if cap > 0 else z
    rows = F.cross_entropy(zc, t, weight=w, ignore_index=ii,
                           label_smoothing=ls, reduction="none")
    lse = torch.logsumexp(zc, dim=1)
    if target == "index":
        mask = t != ii
        if w is not None:
            denom = w[t[mask]].sum()
        else:
            denom = mask.sum().to(F64)
    else:
        mask = torch.ones(n, dtype=torch.bool)
        denom = torch.tensor(float(n), dtype=F64)
    if zl > 0:
        rows = rows + torch.where(mask, zl * lse * lse, torch.zeros_like(lse))
    if use_torch_reduction and reduction != "none":
        loss = F.cross_entropy(zc, t, weight=w, ignore_index=ii,
                               label_smoothing=ls, reduction=reduction)
    elif reduction == "mean":
        loss = rows.sum() / denom
    else:
        loss = rows.sum()
    return loss, rows, lse, float(denom)


def ce_closed_form_rows(z, t, target, w, ii, ls, cap):
    """The per-row formula of include/xent.h, written out by hand."""
    n, c = z.shape
    zc = cap * torch.tanh(z / cap) if cap > 0 else z
    lse = torch.logsumexp(zc, dim=1)
    wv = w if w is not None else torch.ones(c, dtype=F64)
    out = []
    for i in range(n):
        nll = lse[i] - zc[i]
        if target == "index":
            y = int(t[i])
            if y == ii:
                out.append(0.0)
                continue
            v = (1 - ls) * wv[y] * nll[y] + (ls / c) * (wv * nll).sum()
        else:
            q = (1 - ls) * t[i] + ls / c
            v = (wv * q * nll).sum()
        out.append(float(v))
    return out


def ce_case(name, n, c, reduction="mean", target="index", ignore_index=IGNORE_DEFAULT,
            ignored=(), weights=False, zero_weight=False, ls=0.0, z_loss=0.0,
            softcap=0.0, peaked=(), huge=(), scale=2.0, zero_frac=0.0,
            prob_total=1.0, seed_name=None):
    rng = Rng("ce/" + (seed_name or name))
    ls, z_loss, softcap = f32(ls), f32(z_loss), f32(softcap)
    logits = make_logits(rng, n, c, scale)
    if target == "index":
        choices = [k for k in range(c) if k != ignore_index] or [0]
        targets = [choices[rng.randint(len(choices))] for _ in range(n)]
        for i in ignored:
            targets[i] = ignore_index
        if ignore_index >= 0:
            # rows whose target is the in-range ignore index
            pass
    else:
        targets = make_probs(rng, n, c, zero_frac, prob_total)
    for i in peaked:  # a dominant logit: on the target for even rows
        y = targets[i] if target == "index" and targets[i] != ignore_index else None
        k = y if (y is not None and i % 2 == 0) else rng.randint(c)
        logits[i * c + k] += 20.0
    for i in huge:  # +-1e4 logits in the row
        for k in range(c):
            logits[i * c + k] = (1e4 if rng.randint(2) else -1e4) + rng.grid(-4, 4, 0.25)
    w = make_weights(rng, c, zero_weight) if weights else None
    composed = z_loss > 0 or softcap > 0

    z = torch.tensor(logits, dtype=F64).view(n, c).requires_grad_(True)
    if target == "index":
        t = torch.tensor(targets, dtype=torch.long)
    else:
        t = torch.tensor(targets, dtype=F64).view(n, c)
    wt = torch.tensor(w, dtype=F64) if w is not None else None

    loss, rows, lse, denom = ce_forward(z, t, target, wt, ignore_index, ls, z_loss,
                                        softcap, reduction, not composed)
    (grad,) = torch.autograd.grad(loss, z) if n > 0 else (torch.zeros(0, c, dtype=F64),)

    # Self-checks against the closed forms of xent.h.
    ref_rows = ce_closed_form_rows(z.detach(), t, target, wt, ignore_index, ls, softcap)
    if z_loss > 0:
        for i in range(n):
            if target != "index" or targets[i] != ignore_index:
                ref_rows[i] += z_loss * lse[i].item() ** 2
    assert_close(name + " rows", tolist(rows), ref_rows, 1e-11, 1e-11)
    comp, _, _, _ = ce_forward(z, t, target, wt, ignore_index, ls, z_loss, softcap,
                               reduction, False)
    assert close(loss.item(), comp.item(), 1e-12, 1e-12), (name, loss.item(), comp.item())
    if reduction == "mean" and n > 0:
        assert close(loss.item(), sum(ref_rows) / denom if denom != 0 else float("nan"),
                     1e-11, 1e-11), name
    if n > 0:
        def fun(x):
            return ce_forward(x, t, target, wt, ignore_index, ls, z_loss, softcap,
                              reduction, not composed)[0]
        fd_check(name, fun, z, grad)

    cs = Case(name)
    cs.scalar("op", "ce")
    cs.scalar("n", n)
    cs.scalar("c", c)
    cs.scalar("reduction", reduction)
    cs.scalar("target", target)
    cs.scalar("ignore_index", ignore_index)
    cs.scalar("label_smoothing", ls)
    cs.scalar("z_loss", z_loss)
    cs.scalar("softcap", softcap)
    cs.scalar("composed", composed)
    cs.scalar("mean_denom", denom)
    cs.array("logits", logits)
    cs.array("targets", targets)
    if w is not None:
        cs.array("weights", w)
    cs.array("loss", [loss.item()])
    cs.array("loss_rows", tolist(rows))
    cs.array("lse", tolist(lse))
    cs.array("grad", tolist(grad))
    return cs


def ce_cases():
    R3 = ("none", "mean", "sum")
    specs = []

    def add(base, reductions=R3, **kw):
        for r in reductions:
            specs.append(dict(name="%s_%s" % (base, r), reduction=r, seed_name=base, **kw))

    add("basic", n=8, c=10)
    add("ignore_default", n=8, c=10, ignored=(1, 4, 5))
    add("ignore_inside", n=9, c=5, ignore_index=2, ignored=(0, 3, 7))
    add("weights", n=8, c=10, weights=True)
    add("weights_zero_class", ("mean",), n=8, c=6, weights=True, zero_weight=True)
    add("weights_ignore", ("mean", "sum"), n=8, c=7, weights=True, ignored=(2, 6))
    add("weights_ignore_inside", ("mean", "sum"), n=9, c=7, weights=True, ignore_index=2, ignored=(1, 5))
    add("ls01", n=8, c=10, ls=0.1)
    add("ls03_weights", n=8, c=7, ls=0.3, weights=True)
    add("ls10", ("mean", "sum"), n=6, c=7, ls=1.0)
    add("ls10_weights_ignore", ("mean", "sum"), n=6, c=7, ls=1.0, weights=True, ignored=(3,))
    add("ls01_weights_ignore", n=8, c=10, ls=0.1, weights=True, ignored=(0, 5))
    add("ls03_weights_ignore_inside", n=9, c=7, ls=0.3, weights=True, ignore_index=2,
        ignored=(2, 4))
    add("ls01_ignore", ("mean",), n=8, c=10, ls=0.1, ignored=(7,))
    add("probs", n=6, c=7, target="probs", zero_frac=0.3)
    add("probs_ls01", ("mean", "sum"), n=6, c=7, target="probs", ls=0.1)
    add("probs_weights", ("mean", "sum"), n=6, c=7, target="probs", weights=True)
    add("probs_ls03_weights", n=6, c=7, target="probs", ls=0.3, weights=True, zero_frac=0.3)
    add("probs_unnormalized", ("mean",), n=5, c=7, target="probs", prob_total=0.5)
    add("probs_onehot", ("mean",), n=6, c=7, target="probs", zero_frac=2.0)
    add("c1", ("none", "mean"), n=4, c=1)
    add("c1_probs", ("mean",), n=4, c=1, target="probs")
    add("c1_ls_weights", ("mean",), n=4, c=1, ls=0.1, weights=True)
    add("c2", ("mean",), n=8, c=2, ls=0.1, ignored=(3,))
    add("c3", ("sum",), n=8, c=3, weights=True)
    add("n1_c33", ("mean",), n=1, c=33)
    add("n1_c33_ls_weights", ("mean",), n=1, c=33, ls=0.1, weights=True)
    add("all_ignored", n=4, c=3, ignored=(0, 1, 2, 3))
    add("all_ignored_weights_ls", ("mean",), n=4, c=3, weights=True, ls=0.1,
        ignored=(0, 1, 2, 3))
    add("all_ignored_inside", ("mean",), n=3, c=4, ignore_index=1, ignored=(0, 1, 2))
    add("empty", ("mean", "sum"), n=0, c=5)
    add("empty_probs", ("mean",), n=0, c=5, target="probs")
    add("peaked", ("mean", "sum"), n=8, c=33, peaked=(0, 1, 2, 4, 5))
    add("peaked_ls_weights", ("mean",), n=8, c=33, peaked=(0, 2, 3, 6), ls=0.1,
        weights=True)
    add("huge", ("mean",), n=6, c=7, huge=(1, 4))
    add("huge_ls_weights_ignore", ("mean",), n=6, c=7, huge=(0, 2), ls=0.3, weights=True,
        ignored=(2,))
    add("large", ("mean",), n=16, c=40, ls=0.1, weights=True, ignored=(3, 9),
        peaked=(5, 6))
    # Beyond PyTorch: composed from torch ops.
    add("zloss", ("mean", "sum"), n=8, c=10, z_loss=1e-2)
    add("zloss_ignore_weights", ("mean",), n=8, c=10, z_loss=1e-2, weights=True,
        ignored=(1, 2))
    add("softcap", ("mean", "sum"), n=8, c=10, softcap=5.0, scale=8.0)
    add("softcap_peaked", ("mean",), n=6, c=33, softcap=30.0, peaked=(0, 1, 3))
    add("zloss_softcap_all", n=9, c=7, z_loss=1e-3, softcap=5.0, ls=0.1, weights=True,
        ignore_index=2, ignored=(4,), scale=6.0)
    add("zloss_probs", ("mean",), n=6, c=7, target="probs", z_loss=1e-2)
    add("softcap_probs_ls", ("sum",), n=6, c=7, target="probs", softcap=5.0, ls=0.1,
        scale=8.0)
    add("zloss_huge", ("mean",), n=4, c=7, z_loss=1e-4, huge=(1,))
    return [ce_case(**s) for s in specs]


# ---------------------------------------------------------------------------
# Entropy
# ---------------------------------------------------------------------------
def entropy_rows(z):
    return torch.distributions.Categorical(logits=z).entropy()


def entropy_reduce(rows, reduction):
    return rows.mean() if reduction == "mean" else rows.sum()


def entropy_case(name, n, c, reduction, peaked=(), huge=(), uniform=(), scale=2.0,
                 seed_name=None):
    rng = Rng("entropy/" + (seed_name or name))
    logits = make_logits(rng, n, c, scale)
    for i in peaked:
        logits[i * c + rng.randint(c)] += 20.0
    for i in huge:
        for k in range(c):
            logits[i * c + k] = (1e4 if rng.randint(2) else -1e4) + rng.grid(-4, 4, 0.25)
    for i in uniform:
        v = logits[i * c]
        for k in range(c):
            logits[i * c + k] = v
    z = torch.tensor(logits, dtype=F64).view(n, c).requires_grad_(True)
    rows = entropy_rows(z)
    loss = entropy_reduce(rows, reduction)
    (grad,) = torch.autograd.grad(loss, z)
    p = torch.softmax(z.detach(), 1)
    lp = torch.log_softmax(z.detach(), 1)
    manual = -(p * lp).sum(1)
    assert_close(name + " rows", tolist(rows), tolist(manual), 1e-12, 1e-12)
    for i in uniform:
        assert close(rows[i].item(), math.log(c), 1e-13, 1e-13), name
    fd_check(name, lambda x: entropy_reduce(entropy_rows(x), reduction), z, grad)
    cs = Case(name)
    cs.scalar("op", "entropy")
    cs.scalar("n", n)
    cs.scalar("c", c)
    cs.scalar("reduction", reduction)
    cs.array("logits", logits)
    cs.array("loss", [loss.item()])
    cs.array("loss_rows", tolist(rows))
    cs.array("grad", tolist(grad))
    return cs


def entropy_cases():
    out = []
    for r in ("none", "mean", "sum"):
        out.append(entropy_case("basic_" + r, 8, 10, r, seed_name="basic"))
    out.append(entropy_case("uniform_rows_mean", 4, 7, "mean", uniform=(0, 2)))
    out.append(entropy_case("peaked_mean", 8, 33, "mean", peaked=(0, 1, 5)))
    out.append(entropy_case("peaked_none", 8, 33, "none", peaked=(2, 3)))
    out.append(entropy_case("huge_mean", 6, 7, "mean", huge=(1, 4)))
    out.append(entropy_case("huge_sum", 4, 5, "sum", huge=(0, 1, 2, 3)))
    out.append(entropy_case("c1_mean", 4, 1, "mean"))
    out.append(entropy_case("c2_sum", 8, 2, "sum"))
    out.append(entropy_case("c3_none", 5, 3, "none"))
    out.append(entropy_case("n1_c33_mean", 1, 33, "mean"))
    out.append(entropy_case("wide_mean", 3, 40, "mean", scale=0.5))
    out.append(entropy_case("large_mean", 16, 40, "mean", scale=4.0, peaked=(2, 7)))
    return out


# ---------------------------------------------------------------------------
# KL divergence
# ---------------------------------------------------------------------------
def kl_forward(z, tgt, log_target, reduction):
    lp = F.log_softmax(z, dim=1)
    tq = F.log_softmax(tgt, dim=1) if log_target else tgt
    elems = F.kl_div(lp, tq, reduction="none", log_target=log_target)
    rows = elems.sum(1)
    if reduction == "none":
        loss = rows.sum()
    else:
        loss = F.kl_div(lp, tq, reduction=reduction, log_target=log_target)
    return loss, rows


def kl_case(name, n, c, reduction, teacher="probs", zero_frac=0.0, peaked=(), huge=(),
            same=False, scale=2.0, seed_name=None):
    rng = Rng("kl/" + (seed_name or name))
    logits = make_logits(rng, n, c, scale)
    for i in peaked:
        logits[i * c + rng.randint(c)] += 20.0
    for i in huge:
        for k in range(c):
            logits[i * c + k] = (1e4 if rng.randint(2) else -1e4) + rng.grid(-4, 4, 0.25)
    if teacher == "probs":
        tv = make_probs(rng, n, c, zero_frac)
    else:
        tv = list(logits) if same else make_logits(rng, n, c, scale)
        for i in peaked:
            tv[i * c + rng.randint(c)] += 20.0
    log_target = teacher == "logits"
    z = torch.tensor(logits, dtype=F64).view(n, c).requires_grad_(True)
    tt = torch.tensor(tv, dtype=F64).view(n, c).requires_grad_(log_target)
    loss, rows = kl_forward(z, tt, log_target, reduction)
    if log_target:
        grad, grad_t = torch.autograd.grad(loss, (z, tt))
    else:
        (grad,) = torch.autograd.grad(loss, z)
    # Self-checks: KL = H_p(q) - H(q) per row, batchmean = sum / N.
    lp = torch.log_softmax(z.detach(), 1)
    q = torch.softmax(tt.detach(), 1) if log_target else tt.detach()
    lq = torch.log_softmax(tt.detach(), 1) if log_target else torch.log(q)
    manual = (torch.where(q > 0, q * lq, torch.zeros_like(q)) - q * lp).sum(1)
    assert_close(name + " rows", tolist(rows), tolist(manual), 1e-11, 1e-11)
    for v in tolist(rows):
        assert v >= -1e-12, (name, v)
    if same:
        assert_close(name + " same", tolist(rows), [0.0] * n, 0, 1e-14)
    if reduction == "batchmean":
        assert close(loss.item(), sum(tolist(rows)) / n, 1e-12, 1e-12), name
    fd_check(name, lambda x: kl_forward(x, tt.detach(), log_target, reduction)[0], z, grad)
    if log_target:
        fd_check(name + " target",
                 lambda x: kl_forward(z.detach(), x, log_target, reduction)[0], tt, grad_t)
    cs = Case(name)
    cs.scalar("op", "kl")
    cs.scalar("n", n)
    cs.scalar("c", c)
    cs.scalar("reduction", reduction)
    cs.scalar("target", teacher)
    cs.scalar("log_target", log_target)
    cs.array("logits", logits)
    cs.array("target_logits" if log_target else "target_probs", tv)
    cs.array("loss", [loss.item()])
    cs.array("loss_rows", tolist(rows))
    cs.array("grad", tolist(grad))
    if log_target:
        cs.array("grad_target", tolist(grad_t))
    return cs


def kl_cases():
    out = []
    for r in ("none", "batchmean", "sum"):
        out.append(kl_case("probs_" + r, 6, 7, r, seed_name="probs"))
    for r in ("none", "batchmean", "sum"):
        out.append(kl_case("probs_zeros_" + r, 6, 7, r, zero_frac=0.4, seed_name="probs_zeros"))
    for r in ("none", "batchmean", "sum"):
        out.append(kl_case("logits_" + r, 6, 7, r, teacher="logits", seed_name="logits"))
    out.append(kl_case("onehot_batchmean", 6, 7, "batchmean", zero_frac=2.0))
    out.append(kl_case("same_logits_batchmean", 4, 10, "batchmean", teacher="logits",
                       same=True))
    out.append(kl_case("peaked_logits_batchmean", 8, 33, "batchmean", teacher="logits",
                       peaked=(0, 3, 4)))
    out.append(kl_case("huge_probs_batchmean", 6, 7, "batchmean", zero_frac=0.3,
                       huge=(1, 4)))
    out.append(kl_case("c1_batchmean", 4, 1, "batchmean"))
    out.append(kl_case("c2_logits_sum", 8, 2, "sum", teacher="logits"))
    out.append(kl_case("n1_c33_batchmean", 1, 33, "batchmean", zero_frac=0.3))
    out.append(kl_case("large_logits_batchmean", 16, 40, "batchmean", teacher="logits",
                       scale=3.0))
    return out


# ---------------------------------------------------------------------------
# Binary cross-entropy with logits
# ---------------------------------------------------------------------------
def bce_forward(z, y, w, pw, reduction):
    elems = F.binary_cross_entropy_with_logits(z, y, weight=w, pos_weight=pw,
                                               reduction="none")
    if reduction == "none":
        loss = elems.sum()
    else:
        loss = F.binary_cross_entropy_with_logits(z, y, weight=w, pos_weight=pw,
                                                  reduction=reduction)
    return loss, elems


def bce_case(name, n, c, reduction, soft=False, pos_weight=False, weight=False,
             zmax=8.0, huge=False, seed_name=None):
    rng = Rng("bce/" + (seed_name or name))
    logits = [rng.grid(-zmax, zmax, 1.0 / 64) for _ in range(n * c)]
    if huge:  # a few exact extremes
        for k, v in zip(range(min(4, n * c)), (100.0, -100.0, 1e4, -1e4)):
            logits[k] = v
    if soft:
        targets = [rng.grid(0.0, 1.0, 1.0 / 64) for _ in range(n * c)]
    else:
        targets = [float(rng.randint(2)) for _ in range(n * c)]
    if huge:  # pair the extremes with both labels
        for k, v in zip(range(min(4, n * c)), (0.0, 1.0, 0.0, 1.0)):
            targets[k] = v
    pw = [rng.grid(0.25, 4.0, 1.0 / 16) for _ in range(c)] if pos_weight else None
    wv = [rng.grid(0.0, 2.0, 1.0 / 16) for _ in range(n * c)] if weight else None
    z = torch.tensor(logits, dtype=F64).view(n, c).requires_grad_(True)
    y = torch.tensor(targets, dtype=F64).view(n, c)
    pwt = torch.tensor(pw, dtype=F64) if pw is not None else None
    wt = torch.tensor(wv, dtype=F64).view(n, c) if wv is not None else None
    loss, elems = bce_forward(z, y, wt, pwt, reduction)
    (grad,) = torch.autograd.grad(loss, z)
    # Self-check: the stable closed form.
    zd = z.detach()
    lw = 1 + (pwt - 1) * y if pwt is not None else torch.ones_like(y)
    sp = torch.log1p(torch.exp(-zd.abs())) + torch.clamp(-zd, min=0)  # softplus(-z)
    manual = (1 - y) * zd + lw * sp
    if wt is not None:
        manual = manual * wt
    assert_close(name + " elems", tolist(elems), tolist(manual), 1e-12, 1e-12)
    if reduction == "mean":
        assert close(loss.item(), float(manual.sum()) / (n * c), 1e-12, 1e-12), name
    fd_check(name, lambda x: bce_forward(x, y, wt, pwt, reduction)[0], z, grad)
    cs = Case(name)
    cs.scalar("op", "bce")
    cs.scalar("n", n)
    cs.scalar("c", c)
    cs.scalar("reduction", reduction)
    cs.array("logits", logits)
    cs.array("targets", targets)
    if pw is not None:
        cs.array("pos_weight", pw)
    if wv is not None:
        cs.array("weight", wv)
    cs.array("loss", [loss.item()])
    cs.array("loss_elems", tolist(elems))
    cs.array("grad", tolist(grad))
    return cs


def bce_cases():
    out = []
    for r in ("none", "mean", "sum"):
        out.append(bce_case("hard_" + r, 6, 7, r, seed_name="hard"))
    for r in ("none", "mean", "sum"):
        out.append(bce_case("soft_" + r, 6, 7, r, soft=True, seed_name="soft"))
    for r in ("none", "mean", "sum"):
        out.append(bce_case("pos_weight_" + r, 6, 7, r, pos_weight=True, seed_name="pos_weight"))
    out.append(bce_case("weight_mean", 6, 7, "mean", weight=True, soft=True))
    out.append(bce_case("pos_weight_weight_soft_mean", 6, 7, "mean", pos_weight=True,
                        weight=True, soft=True))
    out.append(bce_case("pos_weight_weight_sum", 5, 3, "sum", pos_weight=True, weight=True))
    out.append(bce_case("extreme_hard_mean", 4, 8, "mean", zmax=100.0, huge=True))
    out.append(bce_case("extreme_soft_pos_weight_none", 4, 8, "none", zmax=100.0, huge=True,
                        soft=True, pos_weight=True))
    out.append(bce_case("c1_mean", 5, 1, "mean", soft=True))
    out.append(bce_case("n1_c33_sum", 1, 33, "sum", pos_weight=True, zmax=30.0))
    out.append(bce_case("large_mean", 16, 40, "mean", soft=True, pos_weight=True))
    return out


# ---------------------------------------------------------------------------
OPS = [
    ("ce", "softmax cross-entropy (torch.nn.functional.cross_entropy; z-loss and "
           "softcap composed)", ce_cases),
    ("entropy", "entropy of softmax(z) (torch.distributions.Categorical.entropy)",
     entropy_cases),
    ("kl", "KL(q || softmax(z)) (torch.nn.functional.kl_div on log_softmax(z))",
     kl_cases),
    ("bce", "binary cross-entropy with logits "
            "(torch.nn.functional.binary_cross_entropy_with_logits)", bce_cases),
]


def render(op, desc, cases):
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names in " + op
    head = ("# xent golden vectors, op %s: %s.\n"
            "# Generated by tests/golden/gen_golden.py with torch %s, float64 on the CPU;\n"
            "# do not edit, rerun the generator. Format: see tests/golden.h.\n"
            "# %d cases.\n" % (op, desc, torch.__version__.split("+")[0], len(cases)))
    return head + "".join("\n" + c.text() for c in cases)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="compare with the files on disk instead of writing them")
    ap.add_argument("--out", default=HERE, help="output directory (default: %(default)s)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    bad = 0
    total = 0
    for op, desc, fn in OPS:
        text = render(op, desc, fn())
        path = os.path.join(args.out, op + ".txt")
        total += len(text)
        if args.check:
            try:
                with open(path, encoding="ascii", newline="") as fh:
                    same = fh.read() == text
            except OSError:
                same = False
            print("%-12s %s" % (op + ".txt", "ok" if same else "DIFFERS"))
            bad += not same
        else:
            os.makedirs(args.out, exist_ok=True)
            with open(path, "w", encoding="ascii", newline="\n") as fh:
                fh.write(text)
            print("wrote %s (%d bytes, %d cases)" % (path, len(text), text.count("\ncase ")))
    print("finite-difference checks passed on %d cases; %d bytes in all"
          % (len(FD_CHECKED), total))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
