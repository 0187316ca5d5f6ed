"""scripts/rerun.sh refuses, with one line, the records it cannot replay
(training the others takes minutes to hours, so that path is checked by hand:
see the README)."""
import json
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "rerun.sh"


def _rerun(tmp_path, provenance):
    record = tmp_path / "run.json"
    record.write_text(json.dumps({"provenance": provenance}))
    return subprocess.run(["bash", str(SCRIPT), str(record), str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("provenance, message", [
    ({"commit": "a" * 40, "machine": "x"}, "has no training command (an ensemble: rerun its members)"),
    ({"commit": "a" * 40 + "+dirty", "machine": "x", "command": "python -m emkd_lib run --profile smoke"},
     "was trained from uncommitted code"),
])
def test_rerun_refuses_what_it_cannot_replay(tmp_path, provenance, message):
    done = _rerun(tmp_path, provenance)
    assert done.returncode != 0
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists()


def test_rerun_names_a_missing_record(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "nowhere.json")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == f"rerun: no such record: {tmp_path / 'nowhere.json'}"
