"""``python -m bascule.governance.evidence s3://<evidence bucket>/_bascule/<workload>/runs/<run_key>/``: verify a run's chain."""

import sys

from bascule.governance.evidence.cli import main

sys.exit(main())
