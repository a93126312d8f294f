"""The supervisor backs off between restarts of a crashing replica, up to a cap."""

from fleet.ops.supervisor import backoff_delay


def test_restart_delays_double_from_half_a_second():
    assert [backoff_delay(n) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]


def test_restart_delays_are_capped():
    assert backoff_delay(50) == 30.0


# ---- replicas: ports, ids, scaling, the state file (real child processes, no broker: each runs a tiny sleeper) --------

import asyncio  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from fleet.ops.supervisor import Supervisor, default_http_port, replica_http_port  # noqa: E402
from tests.support import eventually  # noqa: E402


def test_each_replica_gets_its_own_port_deterministically():
    assert default_http_port("payments") == 8101
    assert [replica_http_port(8101, n) for n in (1, 2, 3)] == [8101, 8111, 8121]
    assert replica_http_port(0, 3) == 0  # 0: each picks a free port


def test_replicas_have_distinct_ids_and_ports_and_an_explicit_port_env_is_the_base(tmp_path, monkeypatch):
    monkeypatch.delenv("PAYMENTS_HTTP_PORT", raising=False)
    supervisor = Supervisor(["payments", "inventory"], state_dir=tmp_path, scale={"payments": 3}, env={"INVENTORY_HTTP_PORT": "0"})
    assert [(r.name, r.env["FLEET_REPLICA_ID"], r.env.get("PAYMENTS_HTTP_PORT") or r.env["INVENTORY_HTTP_PORT"]) for r in supervisor.replicas] == [
        ("payments-1", "payments-1", "8101"), ("payments-2", "payments-2", "8111"), ("payments-3", "payments-3", "8121"),
        ("inventory-1", "inventory-1", "0"),
    ]
    assert supervisor.replica("payments", 2).log_path == tmp_path / "logs" / "payments-2.log"


class _SleeperSupervisor(Supervisor):
    """Runs a sleeper that logs a worker_http_started line instead of `fleet run`, and exits 0 on SIGTERM."""

    async def _spawn(self, replica):
        replica._log_offset = replica.log_path.stat().st_size if replica.log_path.exists() else 0
        replica.http_port = None
        code = ("import json,signal,sys,time,os;"
                "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0));"
                "print(json.dumps({'event': 'worker_http_started', 'port': int(os.environ['PAYMENTS_HTTP_PORT'])}), flush=True);"
                "time.sleep(600)")
        with open(replica.log_path, "ab") as log_file:
            replica.process = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=log_file, env=replica.env)
        replica.status = "up"
        self.write_state()


def test_scale_up_down_restart_and_the_state_file(tmp_path, monkeypatch):
    monkeypatch.delenv("PAYMENTS_HTTP_PORT", raising=False)
    state_file = tmp_path / "fleet.json"

    async def scenario():
        supervisor = _SleeperSupervisor(["payments"], state_dir=tmp_path, grace_s=5.0, state_file=state_file)
        await supervisor.start()
        try:
            done = await supervisor.scale("payments", 3)
            assert done == {"started": ["payments-2", "payments-3"], "stopped": []}
            await eventually(lambda: all(r["http_port"] for r in json.loads(state_file.read_text())["replicas"]),
                             "every replica's port in the state file", timeout_s=10, every_s=0.05)
            state = json.loads(state_file.read_text())
            assert state["services"] == {"payments": 3}
            assert [(r["name"], r["status"], r["http_port"]) for r in state["replicas"]] == [
                ("payments-1", "up", 8101), ("payments-2", "up", 8111), ("payments-3", "up", 8121)]
            # A SIGKILLed replica is restarted after its backoff and counted.
            killed = supervisor.signal("payments", 2, signal.SIGKILL)
            await eventually(lambda: supervisor.replica("payments", 2).process.pid != killed, "payments-2 restarted", timeout_s=10, every_s=0.05)
            assert supervisor.replica("payments", 2).restarts == 1
            await eventually(lambda: supervisor.replica("payments", 2).learn_port() == 8111, "payments-2 on its port again",
                             timeout_s=10, every_s=0.05)  # running again, same port
            # Scaling down stops the highest-numbered replicas gracefully (SIGTERM → exit 0) and forgets them.
            three, two = supervisor.replica("payments", 3).process, supervisor.replica("payments", 2).process
            done = await supervisor.scale("payments", 1)
            assert done == {"started": [], "stopped": ["payments-3", "payments-2"]}
            assert three.returncode == 0 and two.returncode == 0
            assert [r.name for r in supervisor.replicas] == ["payments-1"]
            assert {r.name: r.restarts for r in supervisor.retired} == {"payments-3": 0, "payments-2": 1}
            assert [r["name"] for r in json.loads(state_file.read_text())["replicas"]] == ["payments-1"]
        finally:
            await supervisor.stop()
        assert supervisor.replica("payments", 1).process.returncode == 0
        assert json.loads(state_file.read_text())["replicas"][0]["status"] == "stopped"

    asyncio.run(scenario())
