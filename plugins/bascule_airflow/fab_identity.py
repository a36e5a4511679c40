"""The FAB auth manager, with approvers matched by user name.

Manifests name approvers by user name (``approvals.approvers: [approver1, ...]``), and the
approval gate assigns its HITL task to those names. Airflow's default check compares the
assigned ids with ``user.get_id()``, which for FAB is the numeric row id of ``ab_user``
("3"): no named approver could ever answer. FAB user names are unique and are what
people, LDAP and OIDC know, so the gate is matched on them. Set
``[core] auth_manager = bascule_airflow.fab_identity.BasculeFabAuthManager``.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager


class BasculeFabAuthManager(FabAuthManager):
    def is_authorized_hitl_task(self, *, assigned_users: set[str], user: Any) -> bool:
        # The gate's assigned ids ARE user names (approval.py). No fallback to the numeric id:
        # a manifest naming "3" must never admit whoever happens to be row 3 of ab_user.
        return user.get_name() in assigned_users
