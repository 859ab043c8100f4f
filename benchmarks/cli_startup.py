"""How long a ``statement-router`` call takes before it does anything: ``--help`` and a
light command, each the median of ``--runs`` fresh processes.

    .venv/bin/python benchmarks/cli_startup.py              # 9 runs of each command
    .venv/bin/python benchmarks/cli_startup.py --runs 21

A benchmark, never a timed test. Each run starts the installed console script (the
``statement-router`` beside this Python) in a new process with the caller's environment
(``PYTHONPATH`` included, so a worktree measures its own code), waits for it to exit and
takes the wall time and the CPU time (user + system, less sensitive to other load on a
shared machine). One JSON line per command: median, min and max wall seconds, median CPU
seconds. A command that fails is reported, not timed. Also printed: the seconds of
``python -c pass``, the floor under any Python command on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS: dict[str, list[str]] = {
    "--help": ["--help"],
    "--version": ["--version"],
    "connectors": ["connectors"],  # settings and the catalogue, no store, no broker
    "schemas export": ["schemas", "export"],  # a light command writing files
}


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="processes per command")
    args = parser.parse_args()
    script = Path(sys.executable).with_name("statement-router")
    workdir = Path(tempfile.mkdtemp(prefix="cli-startup-"))
    env = {**os.environ, "DATA_DIR": str(workdir / "var")}
    floor = [timed([sys.executable, "-c", "pass"], env)[0] for _ in range(args.runs)]
    print(json.dumps({"benchmark": "cli_startup", "command": "python -c pass",
                      "runs": args.runs, "median_s": round(statistics.median(floor), 3)}))
    for name, extra in COMMANDS.items():
        if name == "schemas export":
            extra = [*extra, str(workdir / "schemas")]
        try:
            runs = [timed([str(script), *extra], env) for _ in range(args.runs)]
        except subprocess.CalledProcessError as exc:
            lines = [line.strip("│╭╮╰╯─ ") for line in exc.stderr.decode(errors="replace")
                     .splitlines()]
            print(json.dumps({"benchmark": "cli_startup", "command": name,
                              "error": " ".join(line for line in lines[-3:] if line)},
                             ensure_ascii=False))
            continue
        times = [wall for wall, _ in runs]
        print(json.dumps({
            "benchmark": "cli_startup",
            "command": name,
            "runs": args.runs,
            "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3),
            "max_s": round(max(times), 3),
            "median_cpu_s": round(statistics.median(cpu for _, cpu in runs), 3),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        }))


if __name__ == "__main__":
    main()
