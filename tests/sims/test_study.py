"""The adaptive-verification study (python -m sims.study_verification) runs end to end and reports its table."""

from __future__ import annotations

import json
from pathlib import Path

from sims import study_verification


def test_study_writes_rows_and_plot(tmp_path: Path, capsys) -> None:
    rc = study_verification.main(
        ["--out", str(tmp_path), "--jobs", "200", "--seeds", "4", "--cases", "2of3,always", "--procs", "1"]
    )
    assert rc == 0
    runs = json.loads((tmp_path / "verification.json").read_text())
    rows = {r["case"]: r for r in study_verification.pool_rows(runs)}
    assert set(rows) == {"2of3", "always"}
    assert 2.9 <= rows["2of3"]["overhead"] <= 3.1  # every job runs on a committee of three
    always = rows["always"]
    assert always["wrong_final"] == 0 and always["cheaters"] > 0
    assert always["cheaters_slashed"] == always["cheaters"] and always["honest_slashed"] == 0
    assert (tmp_path / "verification.png").stat().st_size > 0
    assert "always-cheat" in capsys.readouterr().out
