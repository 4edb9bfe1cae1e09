"""benchmarks/derp_throughput.py at a tiny size against our relay and Go's derper.

Checks the report's shape (both servers' rows and the ratio row, matching JSON), never its figures:
speed is measured by the benchmark, not asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "derp_throughput.py"


def test_benchmark_reports_ours_derpers_and_ratio(reference_binary: Callable[[str], Path]) -> None:
    reference_binary("derper")  # skips, naming the reason, where Go cannot build it
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--packets", "200", "--seconds", "6", "--loops", "asyncio", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    table = {line.split()[1]: line.split()[2:] for line in lines if line.startswith("asyncio ")}
    assert set(table) == {"pyheadscale", "derper", "ratio"}, done.stdout
    # packets dropped pkt/s Gbit/s CPU-s µs/pkt p50 p99, sender's and receiver's µs/pkt;
    # the ratio row: pkt/s Gbit/s µs/pkt p50 p99
    assert len(table["pyheadscale"]) == len(table["derper"]) == 10
    assert len(table["ratio"]) == 5 and all(cell.endswith("x") for cell in table["ratio"]), done.stdout
    report = json.loads(lines[-1])
    (run,) = report["runs"]
    for server in ("pyheadscale", "derper"):
        assert run[server]["packets"] > 0, run  # traffic really went through both relays
        assert run[server]["pps"] > 0 and run[server]["gbps"] > 0, run
        assert run[server]["server_cpu_s"] >= 0, run  # read from /proc (may round to 0 at this size)
        # The clients' own CPU per delivered packet, from their process_time.
        assert run[server]["sender_us_per_packet"] >= 0, run
        assert run[server]["receiver_us_per_packet"] >= 0, run
    assert run["ratio"]["pps"] == run["pyheadscale"]["pps"] / run["derper"]["pps"]
    assert f"{run['ratio']['pps']:.2f}x" == table["ratio"][0]
