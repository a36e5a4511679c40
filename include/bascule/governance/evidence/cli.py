"""The verifier's command line: ``python -m bascule.governance.evidence`` (or ``scripts/verify_evidence.py``).

Exit status: 0 the chain verifies, 1 it is broken (or unsealed with ``--require-seal``),
2 usage or access error.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bascule.exceptions import StoreAccessError
from bascule.governance.evidence.records import chain_prefix
from bascule.governance.evidence.report import render_markdown, render_report
from bascule.governance.evidence.verify import VerifyResult, list_runs, verify

_RUN_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/_bascule/(?P<workload>[^/]+)/runs/(?P<run>[^/]+)(?:/(?:chain/?)?)?$")
_WORKLOAD_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/_bascule/(?P<workload>[^/]+)(?:/(?:runs/?)?)?$")


# Older runs of object workloads kept their evidence in the data bucket; every run now writes it to
# the workload's evidence bucket.
_WHERE = "; the evidence is in the workload's evidence bucket (evidence.bucket in its manifest), not its data bucket"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="verify_evidence.py",
        description="Verify a Bascule run's hash-chained evidence (exit 0 OK, 1 broken, 2 usage or access error).",
    )
    parser.add_argument(
        "uri",
        help="s3://<evidence bucket>/_bascule/<workload>/runs/<run_key>/ (with --list: "
        "s3://<evidence bucket>/_bascule/<workload>/); the bucket is evidence.bucket in the workload's manifest",
    )
    parser.add_argument("--list", action="store_true", help="list the runs of a workload that have a chain")
    parser.add_argument("--endpoint-url", help="S3 endpoint (default: boto3's, e.g. AWS_ENDPOINT_URL)")
    parser.add_argument("--region", help="S3 region (default: boto3's)")
    parser.add_argument("--report", help="write the auditor report (HTML) to this file")
    parser.add_argument("--markdown", help="write a Markdown summary to this file")
    parser.add_argument("--skip-artifacts", action="store_true", help="do not re-hash the artifact files")
    parser.add_argument("--require-seal", action="store_true", help="an unsealed chain counts as broken")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``verify_evidence.py s3://<evidence bucket>/_bascule/<workload>/runs/<run_key>/`` — exit 0 OK, 1 broken, 2 usage/access."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["verify"]:
        args_in = args_in[1:]
    elif args_in[:1] == ["list"]:
        args_in = ["--list", *args_in[1:]]
    try:
        args = _parser().parse_args(args_in)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2

    pattern = _WORKLOAD_URI if args.list else _RUN_URI
    match = pattern.match(args.uri)
    if not match:
        expected = (
            "s3://<evidence bucket>/_bascule/<workload>/"
            if args.list
            else "s3://<evidence bucket>/_bascule/<workload>/runs/<run_key>/"
        )
        print(f"error: '{args.uri}' is not of the form {expected}", file=sys.stderr)
        return 2
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=args.endpoint_url, region_name=args.region)
        if args.list:
            return _list(client, match["bucket"], match["workload"])
        result = verify(
            client, match["bucket"], match["workload"], match["run"], check_artifacts=not args.skip_artifacts
        )
    except (StoreAccessError, BotoCoreError, ClientError) as exc:
        print(f"error: cannot read the evidence: {exc}", file=sys.stderr)
        return 2
    return _report(result, args)


def _list(client: Any, bucket: str, workload_id: str) -> int:
    runs = list_runs(client, bucket, workload_id)
    for run_key, count in runs:
        print(f"{run_key}\t{count} record(s)\ts3://{bucket}/{chain_prefix(workload_id, run_key)}")
    if not runs:
        print(f"no evidence chain under s3://{bucket}/_bascule/{workload_id}/runs/{_WHERE}", file=sys.stderr)
    return 0


def _report(result: VerifyResult, args: argparse.Namespace) -> int:
    """Print the verdict, write the reports asked for, and the exit status."""
    if result.records == 0 and result.first_broken is None:
        print(f"error: {result.reason} (--list shows a workload's runs){_WHERE}", file=sys.stderr)
        return 2
    print(result.summary())
    for note in result.notes:
        print(f"note: {note}")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as out:
            out.write(render_report(result.chain, result.artifacts, verification=result))
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as out:
            out.write(render_markdown(result.chain, result))
    if not result.ok:
        return 1
    if args.require_seal and not result.sealed:
        print("the chain is not sealed (--require-seal)")
        return 1
    return 0
