"""What every benchmark prints beside its figures: how loaded the machine was."""

from __future__ import annotations

import os
import subprocess


def uptime() -> str:
    """``uptime``'s line (load averages): on a shared machine the figures move with the neighbours' load."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
