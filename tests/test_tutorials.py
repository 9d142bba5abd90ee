"""Every tutorial runs end to end as a script in its reduced smoke mode (MGPLVM_SMOKE=1)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.py"))


@pytest.mark.parametrize("script", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_smoke_mode(script, tmp_path):
    env = {**os.environ, "MGPLVM_SMOKE": "1", "MPLBACKEND": "Agg", "MGPLVM_OUT": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )
    log = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{script.name} failed:\n{log}"


def test_tutorials_are_jupytext_percent_scripts():
    assert TUTORIALS, "no tutorials found"
    for script in TUTORIALS:
        text = script.read_text()
        assert "# %%" in text, f"{script.name} has no '# %%' cells"
