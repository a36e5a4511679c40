"""Verify a Bascule run's hash-chained evidence, and write the auditor report.

    python scripts/verify_evidence.py s3://<evidence bucket>/_bascule/<workload>/runs/<run_key>/ \
        [--endpoint-url URL] [--region R] [--report out.html] [--markdown out.md] \
        [--skip-artifacts] [--require-seal]
    python scripts/verify_evidence.py --list s3://<evidence bucket>/_bascule/<workload>/

The evidence bucket is ``evidence.bucket`` in the workload's manifest (either kind): an object
workload's data bucket holds the source's objects and nothing else.

Credentials come from boto3's usual sources (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL, profiles). Exit status: 0 the chain verifies, 1 it is broken (the first
broken record is printed), 2 usage or access error. Same as ``python -m bascule.governance.evidence``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable from a checkout without the venv's .pth file: the domain lives in include/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from bascule.governance.evidence.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
