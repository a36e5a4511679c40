"""Shadow jobs: the analyses a shadow run replays on the source and the target copy.

A shadow job is a plain function ``job(reader) -> result`` taking a
:class:`bascule.validation.object_shadow.DatasetReader` and returning a JSON-able result; a manifest names
it as ``package.module:function`` (resolved by :func:`bascule.validation.object_shadow.resolve_job`). To
report lists of records by identity rather than position, return them as a keyed
collection, ``{"__key__": "month", "rows": [...]}`` (see :mod:`bascule.validation.object_shadow`).

:mod:`bascule.shadow_jobs.snds` holds examples for the synthetic SNDS-like dataset.
"""
