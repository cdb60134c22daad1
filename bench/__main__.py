"""`python -m bench [name ...]`: run the named benchmarks (default: those of BENCHMARKS, in
order; the ones of EXTRA only when named)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ["ingest", "ledger", "billing"]
# Only when named: does the rejections log slow the accepted path? what does the claim cost
# against its alternatives? where does a billing run's time go?
EXTRA = ["ingest_rejections", "ingest_claim", "billing_phases"]


def main(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("-")] or BENCHMARKS
    options = [a for a in argv if a.startswith("-")]
    status = 0
    for name in names:
        if name not in BENCHMARKS + EXTRA:
            print(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS + EXTRA)}")
            return 2
        module = importlib.import_module(f"bench.{name}")
        print(f"== bench {name} ==", flush=True)
        status |= module.main(options)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
