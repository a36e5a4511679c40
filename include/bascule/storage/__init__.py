"""A small seam over the two object stores Bascule talks to.

Clients are built from Airflow connections by the glue in ``plugins/`` and passed
in, so everything here runs and is tested without Airflow.
"""

from bascule.storage.base import ObjectInfo

__all__ = ["ObjectInfo"]
