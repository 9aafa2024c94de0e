"""The example scripts run and print what the docs quote from them."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_saliency_digits_example(tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "saliency_digits.py"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    accuracy = float(re.search(r"test accuracy (\S+) \(30 epochs run\)", out)[1])
    assert accuracy >= 0.95
    for steps in (50, 200, 1000):
        assert f"largest relative gap, {steps} Gauss-Legendre points: " in out
    assert "|x * grad| on non-zero pixels, all blocks reinitialised: " in out
    assert "mean spearman_abs after reinitialising block 3" in out
    assert re.search(r"deletion areas: random \S+, gradient -", out)
    assert (tmp_path / "saliency" / "saliency_sample_0.png").stat().st_size > 0
