"""``kill -9`` at a chosen instant: run a Python snippet in a child process and SIGKILL it (crash-consistency tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def run_and_kill(child: str, args: dict, delay: float) -> int:
    """Run ``child`` (Python source; ``sys.argv[1]`` is ``args`` as JSON), SIGKILL it after ``delay`` s
    if still running; its return code."""
    proc = subprocess.Popen([sys.executable, "-c", child, json.dumps(args)], env=ENV, cwd=REPO)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return proc.returncode
