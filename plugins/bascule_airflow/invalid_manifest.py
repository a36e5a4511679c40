from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator


class ManifestInvalidOperator(BaseOperator):
    """Fails with the manifest's validation error: the DAG exists only to show it."""

    ui_color = "#fde8e8"

    def __init__(self, *, message: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.message = message

    def execute(self, context: Any) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{self.message}\nFix the manifest; see docs/workloads.md")
