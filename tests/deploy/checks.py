"""What the deploy tests share: check() records a failure and goes on; finish() reports them all."""
import sys

FAILURES = []


def check(cond, what):
    """Records `what` as a failure (and prints it) unless `cond`; returns `cond`."""
    if not cond:
        FAILURES.append(what)
        print(f"FAIL: {what}", flush=True)
    return cond


def finish(name):
    """Exits 1 after listing the count of failures, else prints NAME: OK."""
    if FAILURES:
        print(f"{name}: {len(FAILURES)} failure(s)")
        sys.exit(1)
    print(f"{name}: OK")
