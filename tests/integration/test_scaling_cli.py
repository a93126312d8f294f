"""`fleet up`, `fleet scale`, `fleet status --json` and `fleet down` as an operator runs them, against the real broker:
payments goes 1 → 2 → 1 replicas while the fleet runs, status sees the members, down stops everything."""

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from contracts import OrderPlaced
from tests.support import eventually_sync, start_group_at_end

REPO = Path(__file__).resolve().parents[2]


def _fleet(cwd: Path, env: dict, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _status(cwd: Path, env: dict) -> dict:
    run = _fleet(cwd, env, "status", "payments", "--json", "--interval", "0")
    assert run.returncode == 0, run.stderr[-3000:]
    [row] = json.loads(run.stdout)["services"]
    return row


def _until(what: str, condition):
    """`fleet up` and `fleet scale` act in the background: asks again every second, for up to 90 s."""
    return eventually_sync(condition, what, timeout_s=90.0, every_s=1.0)


def test_up_scale_status_down(kafka, tmp_path):
    group = f"it-scale-{uuid.uuid4().hex[:8]}"
    asyncio.run(start_group_at_end(kafka, group, [OrderPlaced]))  # the broker's earlier orders are not ours to decide
    env = {**os.environ, "PYTHONPATH": str(REPO), "PAYMENTS_GROUP_ID": group, "PAYMENTS_HTTP_PORT": "0",
           "FLEET_KEYS_DIR": str(tmp_path / ".fleet" / "keys"), "FLEET_LOG_FORMAT": "json"}
    env.pop("PAYMENTS_STORE_URL", None)  # its own sqlite file under tmp_path/.fleet
    assert "no local fleet is running" in _fleet(tmp_path, env, "down").stdout
    assert _fleet(tmp_path, env, "scale", "payments=2").returncode == 1  # nothing to scale yet, and it says so
    up_log = open(tmp_path / "up.log", "w")
    up = subprocess.Popen([sys.executable, "-m", "fleet", "up", "payments"], cwd=tmp_path, env=env, stdout=up_log, stderr=subprocess.STDOUT)
    try:
        state_file = tmp_path / ".fleet" / "fleet.json"
        _until("fleet up wrote its state file", lambda: state_file.exists())
        one = _until("one payments member", lambda: (row := _status(tmp_path, env))["member_count"] == 1 and row)
        assert one["group"] == group and one["replicas"]["desired"] == 1

        scaled = _fleet(tmp_path, env, "scale", "payments=2")
        assert scaled.returncode == 0 and "started payments-2" in scaled.stdout, scaled.stdout + scaled.stderr
        two = _until("two payments members", lambda: (row := _status(tmp_path, env))["member_count"] == 2
                     and row["group_state"] == "Stable" and row["replicas"]["up"] == 2 and row)
        # Payments reads orders.placed.v2 and, until v1 is retired, v1 (6 partitions each): 3 of each topic per member.
        for topic in ("orders.placed.v1", "orders.placed.v2"):
            assert sorted(sum(p.startswith(f"{topic}[") for p in m["partitions"]) for m in two["members"]) == [3, 3], topic
        ports = [r["http_port"] for r in _until("both ports known", lambda: all(r["http_port"] for r in _status(tmp_path, env)["replicas"]["list"])
                                                 and _status(tmp_path, env)["replicas"]["list"])]
        assert len(set(ports)) == 2
        assert [r["name"] for r in json.loads(state_file.read_text())["replicas"]] == ["payments-1", "payments-2"]

        scaled = _fleet(tmp_path, env, "scale", "payments=1")
        assert scaled.returncode == 0 and "stopped payments-2" in scaled.stdout, scaled.stdout + scaled.stderr
        _until("one payments member again", lambda: _status(tmp_path, env)["member_count"] == 1)
        stopped = [line for line in (tmp_path / "up.log").read_text().splitlines() if "replica_stopped" in line and "payments-2" in line]
        assert stopped and all(json.loads(line)["exit_code"] == 0 for line in stopped), stopped  # SIGTERM, graceful exit
        assert "worker_http_started" in (tmp_path / ".fleet" / "logs" / "payments-2.log").read_text()

        down = _fleet(tmp_path, env, "down")
        assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr
        assert up.wait(timeout=60) == 0
        assert not state_file.exists()
        assert _status(tmp_path, env)["member_count"] == 0
    finally:
        if up.poll() is None:
            up.terminate()
            up.wait(timeout=60)
        up_log.close()
