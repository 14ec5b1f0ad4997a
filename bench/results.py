#!/usr/bin/env python3
"""Benchmark result files: merge a device run's pieces into one JSON, print
its table, and generate bench/RESULTS.md from it (never typed by hand).

  results.py merge --out R.json --gpu gpu.txt --tests tests.log \
      --sanitizer sanitizer.txt --bench bench.json --peers peers.json --commit SHA
  results.py table R.json
  results.py markdown [--gpu R.json] [--cpu C.json ...] > bench/RESULTS.md

--cpu takes result files of bench/cpu_vs_torch.py --json.
"""
import argparse
import json
import re
import sys


def parse_tests(path):
    passed = failed = skipped = 0
    try:
        text = open(path, encoding="utf-8", errors="replace").read()
    except OSError:
        return {"passed": 0, "failed": 0, "skipped": 0, "error": "no log"}
    for m in re.finditer(r"Synthesis: Tested: (\d+) \| Passing: (\d+) \| "
                         r"Failing: (\d+) \| Crashing: (\d+)", text):
        passed += int(m.group(2))
        failed += int(m.group(3)) + int(m.group(4))
    for m in re.finditer(r"skipping (\d+) tests", text):
        skipped += int(m.group(1))
    summary = re.findall(r"^.*tests passed.*$", text, re.M)
    return {"passed": passed, "failed": failed, "skipped": skipped,
            "ctest": summary[-1].strip() if summary else None}


def parse_sanitizer(path):
    out = {}
    try:
        for line in open(path, encoding="utf-8"):
            parts = line.split(None, 1)
            if len(parts) == 2:
                out[parts[0]] = parts[1].strip()
    except OSError:
        pass
    for tool in ("memcheck", "racecheck", "initcheck", "synccheck"):
        out.setdefault(tool, "not run")
    return out


def load_json(path, default):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def merge(a):
    gpu = ""
    try:
        gpu = open(a.gpu, encoding="utf-8").readline().strip()
    except OSError:
        pass
    fields = [x.strip() for x in gpu.split(",")] if gpu else []
    bench = load_json(a.bench, {})
    peers = load_json(a.peers, {})
    res = {
        "commit": a.commit,
        "device": fields[0] if fields else bench.get("device", "unknown"),
        "driver": fields[1] if len(fields) > 1 else "unknown",
        "tests": parse_tests(a.tests),
        "sanitizer": parse_sanitizer(a.sanitizer),
        "copy_gbps": bench.get("copy_gbps"),
        "results": bench.get("results", []),
        "peers": peers.get("peers", []),
        "peer_versions": peers.get("versions", {}),
    }
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1)
        f.write("\n")


def rows_of(res):
    """xent rows with the peers' times for the same shape beside them."""
    peers = {}
    for p in res.get("peers", []):
        key = (p.get("op"), p.get("dtype"), p.get("n_rows"), p.get("n_classes"))
        peers.setdefault(key, {})[p.get("name")] = p.get("us")
    out = []
    for r in res.get("results", []):
        key = (r.get("op"), r.get("dtype"), r.get("n_rows"), r.get("n_classes"))
        out.append((r, peers.get(key, {})))
    return out


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def table(res, md=False):
    names = ["torch_eager", "torch_compile", "liger"]
    head = ["op", "dtype", "variant", "N", "C", "us", "GB/s", "% copy"] + \
        [n + " us" for n in names]
    lines = []
    if md:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
    else:
        lines.append(" ".join(f"{h:>12}" for h in head))
    for r, p in rows_of(res):
        cells = [r.get("op"), r.get("dtype"), r.get("variant", "auto"),
                 str(r.get("n_rows")), str(r.get("n_classes")),
                 fmt(r.get("us"), ".1f"), fmt(r.get("gbps"), ".0f"),
                 fmt(None if r.get("frac_of_copy") is None
                     else 100 * r["frac_of_copy"], ".1f")]
        cells += [fmt(p.get(n), ".1f") for n in names]
        if md:
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        else:
            lines.append(" ".join(f"{str(c):>12}" for c in cells))
    return "\n".join(lines)


def gpu_markdown(res, path):
    t = res.get("tests", {})
    s = res.get("sanitizer", {})
    print(f"## GPU ({path})\n")
    print(f"- card: {res.get('device')}, driver {res.get('driver')}")
    print(f"- commit: {res.get('commit')}")
    print(f"- device-to-device copy bandwidth in the same run: "
          f"{fmt(res.get('copy_gbps'), '.0f')} GB/s (read + write)")
    print(f"- tests: {t.get('passed')} passed, {t.get('failed')} failed, "
          f"{t.get('skipped')} skipped")
    print("- compute-sanitizer: " + ", ".join(f"{k} {v}" for k, v in sorted(s.items())))
    print("\nGB/s counts the minimum bytes (forward: logits read once; fused "
          "forward+backward: logits read once and gradient written once); "
          "% copy is that over the copy bandwidth. Peers are timed in the "
          "same run on the same card by bench/compare_torch.py.\n")
    print(table(res, md=True))
    print()


def cpu_markdown(res, path):
    m = res.get("machine", {})
    env = res.get("malloc_env") or {}
    print(f"### {path}\n")
    print(f"- machine: {m.get('cpu_model')}, {m.get('cpus')} CPUs; "
          f"{res.get('threads')} thread on each side; torch {res.get('torch')}")
    print(f"- commit: {res.get('commit')}, {res.get('date')}")
    print(f"- torch's malloc: {'reuse (' + ', '.join(sorted(env)) + ')' if env else 'glibc default'}")
    print(f"- {res.get('op')}, median of {res.get('runs')} runs after "
          f"{res.get('warmup')} warm-up\n")
    print("| N | C | dtype | xent ms | torch ms | torch / xent | xent GB/s | check |")
    print("|---|---|---|---|---|---|---|---|")
    for r in res.get("results", []):
        x, t = r.get("xent", {}), r.get("torch", {})
        ratio = (t.get("median_ms") / x.get("median_ms")
                 if x.get("median_ms") and t.get("median_ms") else None)
        print(f"| {r.get('n_rows')} | {r.get('n_classes')} | {r.get('dtype')} | "
              f"{fmt(x.get('median_ms'), '.1f')} | {fmt(t.get('median_ms'), '.1f')} | "
              f"{fmt(ratio, '.2f')}x | {fmt(x.get('gbps'), '.1f')} | "
              f"{'ok' if r.get('check', {}).get('ok') else 'FAILED'} |")
    print()


def markdown(gpu, cpus):
    print("# Benchmark results\n")
    args = (f" --gpu {gpu}" if gpu else "") + "".join(f" --cpu {c}" for c in cpus)
    print(f"Generated by `python3 bench/results.py markdown{args}` from the "
          "result files in bench/results/; do not edit by hand.\n")
    if gpu:
        res = load_json(gpu, None)
        if res is None:
            sys.exit(f"{gpu}: cannot read")
        gpu_markdown(res, gpu)
    else:
        print("## GPU\n")
        print("No GPU result file yet: tools/device-check.sh writes one on a "
              "GPU machine.\n")
    if cpus:
        print("## CPU backend against PyTorch (bench/cpu_vs_torch.py)\n")
        print("Command: `python3 bench/cpu_vs_torch.py --runs 7 --json FILE` "
              "(add `--malloc-reuse` for the run where torch's allocator keeps "
              "freed memory). Method and analysis: bench/CPU.md.\n")
        for c in cpus:
            res = load_json(c, None)
            if res is None:
                sys.exit(f"{c}: cannot read")
            cpu_markdown(res, c)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge")
    for k in ("out", "gpu", "tests", "sanitizer", "bench", "peers", "commit"):
        m.add_argument("--" + k, required=True)
    t = sub.add_parser("table")
    t.add_argument("json")
    md = sub.add_parser("markdown")
    md.add_argument("--gpu")
    md.add_argument("--cpu", action="append", default=[])
    a = ap.parse_args()
    if a.cmd == "merge":
        merge(a)
    elif a.cmd == "table":
        res = load_json(a.json, None)
        if res is None:
            sys.exit(f"{a.json}: cannot read")
        t = res["tests"]
        print(f"{res['device']} driver {res['driver']} commit {res['commit'][:12]}")
        print(f"tests: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped")
        print("sanitizer: " + ", ".join(f"{k} {v}" for k, v in sorted(res["sanitizer"].items())))
        print(table(res))
    else:
        markdown(a.gpu, a.cpu)


if __name__ == "__main__":
    main()
