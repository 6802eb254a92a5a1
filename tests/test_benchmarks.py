"""The benchmark script runs end to end (quick mode) and reports nnlayers rows."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "run.py")


def test_benchmarks_quick_run_writes_json_with_nnlayers_rows(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--json", str(out), "--png", str(tmp_path / "results.png")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"run.py exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    data = json.loads(out.read_text())
    assert data["machine"]["sgemm_gflops"] > 0
    nl_rows = [r for r in data["rows"] if r["framework"] == "nnlayers"]
    assert nl_rows, "no nnlayers rows in the JSON"
    assert not [r for r in nl_rows if r.get("error")], [r["error"] for r in nl_rows if r.get("error")]
    kinds = {r["kind"] for r in nl_rows}
    assert {"train", "predict", "fit", "sgemm"} <= kinds, kinds
    for r in nl_rows:
        assert r["ms"] > 0 and r["ms"] == r["ms"], r
    assert data["targets"], "no targets in the JSON"


def test_fma_peak_builds_and_reports_both_rates(tmp_path):
    """benchmarks/fma_peak.c (the README's FMA peak) compiles with the
    compiler that built Python, reports a 1-thread and a 2-thread rate,
    and refuses a bad thread count."""
    import re
    import shlex
    import sysconfig

    exe = tmp_path / "fma_peak"
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    src = os.path.join(ROOT, "benchmarks", "fma_peak.c")
    build = subprocess.run(cc + ["-O2", "-pthread", src, "-o", str(exe)],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe), "2"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    m = re.fullmatch(r"(AVX-512|AVX2) float32 FMA peak: 1 thread ([\d.]+) GFLOP/s, "
                     r"2 threads ([\d.]+) GFLOP/s\n", run.stdout)
    assert m, run.stdout
    one, two = float(m.group(2)), float(m.group(3))
    assert one > 0 and two > 0, run.stdout
    bad = subprocess.run([str(exe), "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "usage" in bad.stderr
