"""Regenerate docs/screenshots/*.png (``make screenshots``).

The screenshots are taken by the browser tests of the control room, at the moments they
check (the pending gate at "1 of 2", the workload page, the viewer's page), on a real
Airflow and real headless Chromium: so a screenshot never shows a state the tests did
not see. This runs those tests with ``BASCULE_SCREENSHOTS_DIR`` set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BASCULE_SCREENSHOTS_DIR": str(OUT)}
    command = [sys.executable, "-m", "pytest", "-q", "-m", "browser", "tests/e2e/test_control_room.py"]
    result = subprocess.run(command, cwd=ROOT, env=env, check=False)
    print("\n".join(f"wrote {p.relative_to(ROOT)}" for p in sorted(OUT.glob("*.png"))))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
