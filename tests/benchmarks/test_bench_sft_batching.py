"""benchmarks/bench_sft_batching.py runs as a user runs it and reports the three batchings."""

import json
import subprocess
import sys

import pytest

from xraygpt.common.config import REPO_ROOT


@pytest.mark.slow  # ~20 s: a subprocess that imports transformers and times 3 x 4 steps
def test_bench_sft_batching_reports_padded_grouped_packed(tmp_path):
    conversations = [
        {
            "id": f"c{i}",
            "conversations": [
                {"from": "human", "value": "Describe the x-ray. " * (1 + i % 7)},
                {"from": "gpt", "value": "No acute finding. " * (1 + i % 5)},
            ],
        }
        for i in range(48)
    ]
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(conversations), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks/bench_sft_batching.py")]
        + ["--conversations", str(path), "--steps", "2", "--batch", "4", "--max-length", "256"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "", "PYTHONPATH": str(REPO_ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout.splitlines()[0])
    rows = {row["batching"]: row for row in record["results"]}
    assert sorted(rows) == ["length-grouped", "packed", "padded"]
    assert rows["padded"]["speed-up"] == 1.0
    assert rows["length-grouped"]["padding_share"] < rows["padded"]["padding_share"]
    assert all(row["tokens_per_s"] > 0 for row in rows.values())
