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
