"""Run scim2-tester's checks against a SCIM server and count them (called by scim2-tester.sh).

    SCIM2_TESTER_TOKEN=... python scim2_tester_run.py BASE_URL

Does what `scim2 --url BASE_URL --header "Authorization: Bearer ..." test` (scim2-cli) does, but
lets scim2-tester run the discovery itself (so a broken discovery endpoint is a failed check, not
an abort) and counts the results by status instead of printing them all.

Exit status: 0 when the checks ran, 2 when they could not (server unreachable, token refused,
scim2-tester raised).
"""

import os
import sys
import traceback

from httpx2 import Client
from httpx2 import HTTPError
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status
from scim2_tester import check_server

PASSED = (Status.SUCCESS, Status.COMPLIANT, Status.ACCEPTABLE)
FAILED = (Status.DEVIATION, Status.ERROR, Status.CRITICAL)
SKIPPED = (Status.SKIPPED,)


def one_line(text: object) -> str:
    return " ".join(str(text).split("\n")).strip()


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: SCIM2_TESTER_TOKEN=... scim2_tester_run.py BASE_URL", file=sys.stderr)
        return 2
    base_url = sys.argv[1].rstrip("/")
    token = os.environ.get("SCIM2_TESTER_TOKEN", "")
    verbose = os.environ.get("SCIM2_TESTER_VERBOSE", "") not in ("", "0")

    http = Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30.0,
    )

    # Whether there is a server to check at all: an unreachable server or a refused token is a
    # failed run, not a list of failed checks.
    try:
        probe = http.get(f"{base_url}/ServiceProviderConfig")
    except HTTPError as exc:
        print(f"scim2-tester: cannot reach {base_url}: {exc}", file=sys.stderr)
        return 2
    if probe.status_code in (401, 403):
        print(
            f"scim2-tester: {base_url}/ServiceProviderConfig answered {probe.status_code}: "
            "the token was refused",
            file=sys.stderr,
        )
        return 2

    try:
        results = check_server(SyncSCIMClient(http))
    except Exception:
        traceback.print_exc()
        print("scim2-tester: the checks could not run", file=sys.stderr)
        return 2

    counts = {status: 0 for status in Status}
    for result in results:
        counts[result.status] += 1
        if result.status in FAILED:
            where = f" [{result.resource_type}]" if result.resource_type else ""
            print(f"{result.status.name} {result.title}{where}: {one_line(result.reason)}")
            if verbose and result.data is not None:
                print(f"    data: {one_line(result.data)}")

    detail = ", ".join(f"{s.name} {n}" for s, n in counts.items() if n)
    print(
        f"scim2-tester: {sum(counts[s] for s in PASSED)} passed, "
        f"{sum(counts[s] for s in FAILED)} failed, "
        f"{sum(counts[s] for s in SKIPPED)} skipped ({detail})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
