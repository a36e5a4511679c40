"""Who is calling, and which workloads they may see or act on, decided by Airflow's auth manager.

Airflow does not authenticate a plugin's FastAPI app: every route here depends on
``caller``, which validates the same JWT the UI and the REST API use (the ``Authorization``
header, else the UI's ``_token`` cookie), through the configured auth manager. DAG access
is asked of the auth manager per DAG id, so the page applies exactly the UI's rules,
whichever auth manager (simple, FAB) is configured.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request, status

TOKEN_COOKIE = "_token"  # airflow.api_fastapi.auth.managers.base_auth_manager.COOKIE_NAME_JWT_TOKEN


async def caller(request: Request) -> Any:
    """The authenticated user, or 401 (no token) / 403 (a token the auth manager refuses)."""
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(TOKEN_COOKIE)
    return await resolve_user_from_token(token)


def _dag_allowed(user: Any, dag_id: str, method: str, entity: Any = None) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.models.dag import DagModel

    details = DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id))
    return bool(
        get_auth_manager().is_authorized_dag(method=method, access_entity=entity, details=details, user=user)  # type: ignore[arg-type]
    )


def can_read(user: Any, dag_id: str) -> bool:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

    return _dag_allowed(user, dag_id, "GET") and _dag_allowed(user, dag_id, "GET", DagAccessEntity.RUN)


def can_respond(user: Any, dag_id: str) -> bool:
    """May answer the gate: the same check the HITL endpoint makes (it also checks the assignment)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

    return _dag_allowed(user, dag_id, "PUT", DagAccessEntity.HITL_DETAIL)


def require_read(user: Any, dag_id: str) -> None:
    # 404, not 403: a user without access learns nothing, not even that the workload exists.
    if not can_read(user, dag_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such workload")


def user_name(user: Any) -> str:
    return str(user.get_name())
