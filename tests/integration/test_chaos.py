"""Delivery guarantees under faults, on a real broker: each chaos scenario at a smaller size than `make chaos` runs it.
Every order reaches its one outcome, no effect happens twice, no key is reordered, and the dead letters are exactly
the poison injected, whatever was killed, restarted or slowed."""

import json
import os
import subprocess
import sys

import pytest

from contracts import REGISTRY
from tests.chaos.harness import REPO, chaos_cluster_env
from tests.chaos.scenarios import SCENARIOS


# Payments' group reads orders.placed.v2 and, until it is retired, v1: three members share the partitions of both.
PAYMENTS_PARTITIONS = sum(t.partitions for t in REGISTRY.consumed_in_group_by("payments"))

# Proof that each scenario's fault really struck: a run where nothing happened would pass the figures too.
STRUCK = {
    "worker_sigkill": lambda r: {"payments-1", "inventory-1", "notifications-1", "tracker-1"} <= set(r["evidence"]["replica_restarts"]),
    "sigterm_slow_handler": lambda r: r["evidence"]["slow_handlers_injected"] >= 2
    and {"payments-1", "shipping-1"} <= set(r["evidence"]["replica_restarts"]),
    "broker_restart": lambda r: {"broker_killed", "broker_restarted"} <= {e["event"] for e in r["timeline"]},
    "slower_than_max_poll": lambda r: r["evidence"]["commits_refused_after_rebalance"] >= 1,
    "dependency_outage": lambda r: {"database_stopped", "database_restarted"} <= {e["event"] for e in r["timeline"]}
    and r["evidence"]["handler_failures"] >= 1,
    # Scaled 1 → 3 → 1 with a SIGKILL between: `fleet status --json` saw three members (two partitions each), the killed
    # replica was restarted, payments ended on one replica, the other services' groups kept their members and logged no
    # new assignment, and every group's lag went back to zero (an unparseable poison record at the end of a partition
    # is committed past too: tests/integration/test_signed_wire.py).
    "scale_payments": lambda r: [e["replicas"] for e in r["timeline"] if e["event"] == "scaled"] == [3, 1]
    and r["evidence"]["status_while_three"]["member_count"] == 3
    and r["evidence"]["status_while_three"]["replicas_up"] == 3
    and r["evidence"]["status_while_three"]["partitions_per_member"] == [PAYMENTS_PARTITIONS // 3] * 3
    and "payments-2" in r["evidence"]["replica_restarts"]
    and r["evidence"]["payments_replicas_at_end"] == 1
    and r["evidence"]["other_groups_unchanged"] and r["evidence"]["other_groups_rebalanced"] == []
    and r["evidence"]["lag_unexplained"] == [] and r["evidence"]["lag_on_poison_tail"] == []
    and sum(r["evidence"]["lag_after_settled"].values()) == 0,
    # Paused for twice the consumers' session timeout under load: `fleet status` said paused while payments' lag grew,
    # the group kept its members, and after `fleet resume` every order got its one outcome (the figures above).
    "pause_payments": lambda r: [e["event"] for e in r["timeline"] if e["event"].startswith("operator_")] == ["operator_pause", "operator_resume"]
    and r["evidence"]["paused"]["status_paused"] and r["evidence"]["paused"]["members_unchanged"]
    and r["evidence"]["paused"]["no_new_assignment"]
    and r["evidence"]["paused"]["paused_s"] > r["evidence"]["paused"]["session_timeout_s"]
    and r["evidence"]["paused"]["lag_while_paused"][1] > r["evidence"]["paused"]["lag_while_paused"][0],
    # On the three-node cluster: the struck node led the busiest orders partition, the leadership left it while it was
    # away, it came back into that partition's ISR, and the time until an order sent after the strike completed is a number.
    "leader_sigkill": lambda r: _failed_over(r, ["broker_killed", "leader_moved", "broker_restarted", "back_in_isr"]),
    # SIGSTOP longer than the session timeout: the other nodes' metadata left the frozen node out (fenced) before SIGCONT.
    "broker_sigstop": lambda r: _failed_over(r, ["broker_paused", "broker_fenced", "leader_moved", "broker_resumed", "back_in_isr"])
    and r["evidence"]["struck"]["paused_s"] > r["evidence"]["struck"]["session_timeout_s"],
}


def _failed_over(report: dict, steps: list[str]) -> bool:
    """The failover steps happened in this order, the leadership left the struck node and it rejoined the ISR."""
    struck = report["evidence"]["struck"]
    return ([e["event"] for e in report["timeline"] if e["event"] in steps] == steps
            and struck["leader_before"] == struck["node"] and struck["leader_while_down"] not in (struck["node"], -1)
            and struck["node"] not in struck["isr_while_down"] and struck["node"] in struck["isr_after"]
            and isinstance(report["progress_resumed_after_s"], (int, float)) and report["orders_sent_after_strike"] > 0)


# A stalled run is cut short by the harness itself (--deadline) with what it was awaiting printed, before the
# subprocess timeout, which is before pytest's: so a failure always comes with the run's own output.
DEADLINE_S = 420


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


@pytest.mark.timeout(DEADLINE_S + 180)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_nothing_is_lost_or_done_twice_when(scenario, tmp_path):
    report_path = tmp_path / "chaos.json"
    command = [sys.executable, "-m", "tests.chaos", "--scenario", scenario, "--orders", "300", "--per-second", "40",
               "--settle-timeout", "180", "--deadline", str(DEADLINE_S), "--report", str(report_path), "--work", str(tmp_path / "work")]
    try:
        run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=DEADLINE_S + 120)
    except subprocess.TimeoutExpired as killed:  # the harness's own deadline did not stop it: kill what it left running
        subprocess.run([sys.executable, "-m", "tests.chaos", "--stop"], cwd=REPO, capture_output=True, timeout=120)
        pytest.fail(f"the chaos run outlived its deadline and was killed:\n{_text(killed.stdout)[-6000:]}\n{_text(killed.stderr)[-3000:]}")
    finally:
        if SCENARIOS[scenario].cluster:  # the run stops its cluster, unless it was killed: its nodes would outlive it
            subprocess.run([sys.executable, "-m", "fleet.local.kafka_cluster", "stop"], cwd=REPO, env={**os.environ, **chaos_cluster_env()},
                           capture_output=True, timeout=120)
    assert report_path.exists(), f"the chaos run wrote no report:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    assert "timed_out_after_s" not in json.loads(report_path.read_text())["scenarios"][scenario], \
        f"the chaos run stalled:\n{run.stdout[-8000:]}\n{run.stderr[-3000:]}"
    report = json.loads(report_path.read_text())["scenarios"][scenario]
    summary = {k: report[k] for k in ("settled", "lost", "wrong_outcome", "double_effects", "per_key_inversions", "dead_letters", "examples", "evidence")}
    assert report["passed"] and run.returncode == 0, f"{json.dumps(summary, indent=1)}\n{run.stdout[-3000:]}"
    assert report["orders"] == 300 and report["dead_letters"]["injected"] == 10
    assert STRUCK[scenario](report), f"the fault did not strike: {report['evidence']} {report['timeline']}"
    assert report["lost"] == 0 and report["double_effects_total"] == 0 and report["per_key_inversions"] == 0
