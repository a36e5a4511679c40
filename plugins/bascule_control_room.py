"""Registers Bascule's control room with Airflow: a "Migrations" entry in the UI navigation,
backed by a FastAPI app the API server mounts at ``/bascule`` (code in
``bascule_airflow/control_room/``). Importing it builds the app and touches no network or DB.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from bascule_airflow.control_room.app import create_app
from bascule_airflow.extra_links import PHASE_LINKS


class BasculeControlRoomPlugin(AirflowPlugin):
    name = "bascule_control_room"
    # Registered so the API server knows the phase tasks' buttons (their URLs are stored per task instance).
    operator_extra_links = list(PHASE_LINKS)
    fastapi_apps = [{"app": create_app(), "url_prefix": "/bascule", "name": "Bascule control room"}]
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
