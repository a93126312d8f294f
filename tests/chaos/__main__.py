"""`make chaos`: runs every chaos scenario (or those named) and writes the figures to reports/chaos.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from fleet.local import kafka_cluster
from fleet.local import kafka as kafka_local
from fleet.local import postgres as postgres_local

from .harness import REPO, configure_environment
from .scenarios import SCENARIOS, run_scenario, within_deadline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="run only these (repeatable)")
    parser.add_argument("--orders", type=int, default=2000, help="orders per scenario (default 2000)")
    parser.add_argument("--per-second", type=float, default=50.0, help="pace of the order feed")
    parser.add_argument("--seed", type=int, default=5, help="seed of the demo orders")
    parser.add_argument("--settle-timeout", type=float, default=300.0, help="seconds to wait for the fleet to finish after the feed")
    parser.add_argument("--report", type=Path, default=REPO / "reports" / "chaos.json")
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "chaos", help="stores, keys and logs of each scenario")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds one scenario may take; past it, what every task was awaiting and the replicas' last log "
                             "lines are printed, the scenario is cancelled (its fleet stopped) and reported as failed")
    parser.add_argument("--keep-running", action="store_true", help="leave the chaos broker (or cluster) and database running after")
    parser.add_argument("--stop", action="store_true", help="only stop what a killed run left: the chaos broker, cluster and database")
    args = parser.parse_args(argv)
    if args.stop:
        _stop_everything(args.work, cluster=True)
        return 0
    # The broker restart scenario makes aiokafka log every refused connection: the timeline says it once.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    names = args.scenario or list(SCENARIOS)
    results = {}
    try:
        for n, name in enumerate(names):
            results[name] = asyncio.run(within_deadline(run_scenario(
                SCENARIOS[name], orders=args.orders, seed=args.seed + n, work=args.work,
                per_second=args.per_second, settle_timeout_s=args.settle_timeout,
            ), args.deadline, logs=args.work / name / "logs"))
    finally:
        if not args.keep_running:
            _stop_everything(args.work, cluster=any(SCENARIOS[name].cluster for name in names))
    report = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "orders_per_scenario": args.orders,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "processor": platform.machine()},
        "passed": all(r["passed"] for r in results.values()),
        "scenarios": results,
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'all scenarios passed' if report['passed'] else 'FAILED'}: {args.report}", flush=True)
    return 0 if report["passed"] else 1


def _stop_everything(work: Path, *, cluster: bool) -> None:
    configure_environment(work)  # the chaos broker's and database's homes, not the dev ones
    print(kafka_local.stop(), postgres_local.stop(), sep="\n", flush=True)
    if cluster:
        print(kafka_cluster.stop(), flush=True)


if __name__ == "__main__":
    sys.exit(main())
