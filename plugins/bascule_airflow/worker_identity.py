"""The host name a task instance records: which worker ran it.

Several Celery workers on one machine share its FQDN, so Airflow's default
(``socket.getfqdn``) cannot tell them apart in the task instance's ``hostname``. A worker
started with ``BASCULE_WORKER_HOSTNAME`` (the stack script sets it to the worker's
Celery ``-H`` name) records that instead. Set
``[core] hostname_callable = bascule_airflow.worker_identity.hostname``.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("BASCULE_WORKER_HOSTNAME") or socket.getfqdn()
