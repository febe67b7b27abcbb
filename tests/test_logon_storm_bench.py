"""bench/logon_storm.py keeps working: a tiny storm (10 directory users, cheap backend) through
the real portal, worker and slapd ends with 0 errors and 0 double assignments in its JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_tiny_logon_storm_gets_everyone_to_their_console():
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "logon_storm.py"), "--users", "10", "--within", "3",
                             "--reference-seconds", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["users"] == 10
    assert summary["completed"] == 10
    assert summary["errors"] == 0
    assert summary["double_assignments"] == 0
    assert summary["phases"]["console"]["p50"] > 0  # every browser got to its desktop's ServerInit
    assert summary["queries_per_launch"]["total"] > 0
