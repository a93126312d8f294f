"""`fleet up --demo` as `make run` starts it, watched until one order has gone all the way through, then stopped with Ctrl-C."""

from dataclasses import dataclass

WHOLE_FLOW = {"orders.placed", "payments.authorized", "notifications.sent"}


def flow_steps(lines: list[str]) -> dict[str, set[str]]:
    """Which topics each key has appeared on, from `fleet watch` lines (`time  topic  key  what  corr=...`)."""
    steps: dict[str, set[str]] = {}
    for line in lines:
        parts = line.split()
        if "corr=" in line and len(parts) > 3:
            steps.setdefault(parts[2], set()).add(parts[1].rsplit(".", 1)[0])
    return steps


@dataclass
class FleetUpRun:
    returncode: int
    lines: list[str]  # what `fleet up` printed until an order's whole flow was seen
    rest: str  # what it printed after Ctrl-C

    @property
    def saw_an_order_through(self) -> bool:
        return any(WHOLE_FLOW <= steps for steps in flow_steps(self.lines).values())


def fleet_up_until_an_order_is_through(cwd, env: dict | None = None, give_up_s: float = 120.0) -> FleetUpRun:
    """What `make run` does: `fleet up --demo` until one order is seen placed, authorized and notified, then Ctrl-C."""
    import signal
    import subprocess
    import sys
    import threading

    process = subprocess.Popen([sys.executable, "-m", "fleet", "up", "--demo", "--orders", "5", "--every", "0.5"], cwd=cwd,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    give_up = threading.Timer(give_up_s, process.send_signal, [signal.SIGINT])  # it runs until Ctrl-C: never hang the suite
    give_up.start()
    try:
        for line in process.stdout:
            lines.append(line.rstrip())
            if any(WHOLE_FLOW <= steps for steps in flow_steps(lines).values()):
                break
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        give_up.cancel()
        if process.poll() is None:
            process.kill()
    return FleetUpRun(process.returncode, lines, rest)
