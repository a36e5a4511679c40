"""A run's evidence: write-once files (``store``) and the hash chain that binds them.

``records`` is the chain's hashed form and link rules, ``chain`` appends and seals in the
bucket, ``verify`` checks a stored chain end to end, ``report`` renders the auditor's
page, and ``cli`` (``python -m bascule.governance.evidence``) is the verifier's command line.
"""
