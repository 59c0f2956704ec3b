"""The benchmark scripts' plumbing, run for real on tiny budgets (their figures are docs/benchmarks.md's)."""

import json
import subprocess

import pytest

from tests.conftest import ROOT, SHARED


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "corpora").exists(), reason="../shared/corpora not present")
def test_gpu_check_smoke_runs_both_trainings_and_writes_one_file(tmp_path):
    """``bench/gpu.sh --smoke``: the GPU check's whole path (recipe, corpora, stages, scoring, report) on the CPU."""
    out = tmp_path / "gpu"
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--smoke", "--out", str(out),
                           "--shared", str(SHARED / "corpora")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu.json").read_text())
    assert report["smoke"] is True
    assert [r["run"] for r in report["runs"]] == ["ko-en recipe", "Multi30k Transformer"]
    for run in report["runs"]:
        assert run["device"] == "cpu" and run["steps"] > 0 and run["target_tokens_per_sec"] > 0
        assert 0 <= run["bleu"] <= 100 and 0 <= run["chrf"] <= 100
        assert run["bleu_signature"].startswith("nrefs:1")
    assert (out / "gpu.md").read_text().count("\n") == 4  # header, rule, two rows
