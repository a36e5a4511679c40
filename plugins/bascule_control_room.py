"""Registers Bascule's control room with Airflow: a "Migrations" entry in the UI navigation,
backed by a FastAPI app the API server mounts at ``/bascule`` (code in
``bascule_airflow/control_room/``), and the middleware that keeps the approval gate's
Required Actions body current. Importing it builds the app and touches no network or DB.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from bascule_airflow.control_room.app import create_app
from bascule_airflow.control_room.gate_body import GateBodyRefresh
from bascule_airflow.extra_links import PHASE_LINKS


class BasculeControlRoomPlugin(AirflowPlugin):
    name = "bascule_control_room"
    # Registered so the API server knows the phase tasks' buttons (their URLs are stored per task instance).
    operator_extra_links = list(PHASE_LINKS)
    fastapi_apps = [{"app": create_app(), "url_prefix": "/bascule", "name": "Bascule control room"}]
    # Airflow 3.3 keeps a HITL request's first body when the gate asks again: this writes the new
    # one, so Required Actions shows the quorum as it is now (why and what it may touch: its module).
    fastapi_root_middlewares = [{"middleware": GateBodyRefresh, "name": "Bascule gate body refresh"}]
    # An external view with a url_route is shown inside the Airflow UI (an iframe), in the nav.
    external_views = [
        {
            "name": "Migrations",
            "href": "/bascule/",
            "destination": "nav",
            "url_route": "migrations",
            "category": None,
        }
    ]
