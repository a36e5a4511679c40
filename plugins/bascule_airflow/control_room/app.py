"""The control room's FastAPI app, mounted by Airflow's API server under ``/bascule``.

Routes: the page (``/``, ``/workloads/{id}``), its JSON (``/api/...``) and the rendered
runbooks (``/runbooks``). Each depends on ``access.caller``; workload data is filtered per
DAG by the auth manager. Approve/reject is not here: the page calls Airflow's own HITL
endpoint, so every check on a response (assignment, four-eyes, permissions) stays in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.responses import FileResponse, HTMLResponse, Response

from bascule_airflow.control_room import access

STATIC = Path(__file__).resolve().parent / "static"
User = Annotated[Any, Depends(access.caller)]


def _manifests() -> list[Any]:
    from bascule.workload import load_manifests
    from bascule_airflow.dag_factory import workloads_dir

    return load_manifests(workloads_dir())


def _invalid_dag_id(manifest: Any) -> str:
    from bascule_airflow.dag_factory import invalid_manifest_dag_id

    return invalid_manifest_dag_id(manifest.path)


def _row(session: Any, user: Any, manifest: Any, now: Any) -> dict[str, Any] | None:
    from bascule.programme import manifest_summary
    from bascule_airflow.control_room import runs, view

    if manifest.workload is None:
        dag_id = _invalid_dag_id(manifest)
        return {**manifest_summary(manifest, now), "dag_id": dag_id} if access.can_read(user, dag_id) else None
    row = manifest_summary(manifest, now)
    if not access.can_read(user, row["dag_id"]):
        return None
    run = runs.latest_run(session, row["dag_id"])
    return {
        **row,
        "can_respond": access.can_respond(user, row["dag_id"]),
        "routing": runs.routing(session, row["dag_id"], row["id"]),
        "run": view.run_view(session, row["dag_id"], run, row["kind"]) if run is not None else None,
    }


def _find(user: Any, workload_id: str) -> Any:
    for manifest in _manifests():
        if manifest.workload is not None and manifest.workload.id == workload_id:
            access.require_read(user, f"migrate_{workload_id}")
            return manifest
    raise HTTPException(status.HTTP_404_NOT_FOUND, "no such workload")


def _read_evidence(workload: Any, uri: str) -> tuple[bytes, str]:
    """Read one file of this workload's evidence (never another bucket or workload's prefix)."""
    from bascule_airflow import clients

    store = clients.evidence_store(workload)
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if bucket != store.bucket or not key.startswith(store.prefix):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not this workload's evidence")
    answer = store.client.get_object(Bucket=bucket, Key=key)
    return answer["Body"].read(), answer.get("ContentType") or "application/octet-stream"


def create_app() -> FastAPI:
    app = FastAPI(title="Bascule control room", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=FileResponse)
    @app.get("/workloads/{workload_id}", response_class=FileResponse)
    def page(user: User) -> FileResponse:
        # The page is only a shell; everything it shows comes from the checked JSON routes.
        return FileResponse(STATIC / "page.html", headers={"Cache-Control": "no-store"})

    @app.get("/static/page.js", response_class=FileResponse)
    def script(user: User) -> FileResponse:
        return FileResponse(STATIC / "page.js", media_type="text/javascript")

    @app.get("/api/me")
    def me(user: User) -> dict[str, Any]:
        return {"user": access.user_name(user)}

    @app.get("/api/workloads")
    def workloads(user: User) -> dict[str, Any]:
        import pendulum
        from airflow.utils.session import create_session

        now = pendulum.now("UTC")
        with create_session() as session:
            rows = [_row(session, user, m, now) for m in _manifests()]
        return {"user": access.user_name(user), "now": now.isoformat(), "workloads": [r for r in rows if r]}

    @app.get("/api/workloads/{workload_id}")
    def workload(workload_id: str, user: User, run: str | None = None) -> dict[str, Any]:
        import pendulum
        from airflow.utils.session import create_session

        from bascule_airflow.control_room import runs, view

        manifest = _find(user, workload_id)
        now = pendulum.now("UTC")
        with create_session() as session:
            row = _row(session, user, manifest, now) or {}
            chosen = runs.find_run(session, row["dag_id"], run)
            if run and chosen is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, "no such run")
            row["run"] = view.run_view(session, row["dag_id"], chosen, row["kind"]) if chosen is not None else None
            row["runs"] = runs.recent_runs(session, row["dag_id"])
        return {"user": access.user_name(user), "now": now.isoformat(), "workload": row}

    @app.get("/workloads/{workload_id}/reports/{report}")
    def stored_report(workload_id: str, report: str, user: User, run: str) -> Response:
        from airflow.utils.session import create_session

        from bascule_airflow.control_room import runs, view

        if report not in ("evidence", "validation"):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such report")
        workload = _find(user, workload_id).workload
        with create_session() as session:
            uri = view.report_uri(runs.xcoms(session, f"migrate_{workload_id}", run), report, workload)
        if not uri:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"the run has not written its {report} report yet")
        body, kind = _read_evidence(workload, uri)
        # Reports are our own HTML, but served from Airflow's origin: no script may run in them.
        return Response(body, media_type=kind, headers={"Content-Security-Policy": "sandbox"})

    @app.get("/runbooks", response_class=HTMLResponse)
    def runbooks(user: User) -> HTMLResponse:
        from bascule.runbooks import RUNBOOKS, render_html

        return HTMLResponse(render_html(RUNBOOKS.read_text(encoding="utf-8")))

    return app
