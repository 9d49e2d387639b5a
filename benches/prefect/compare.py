"""Amdahl against Prefect 3 on the same machine, in one run (issue 23).

The same two workloads on both, timed by this script the same way (wall time, best of
ROUNDS after a warm-up run):

- chain: 40 tasks, each after the one before;
- fan-out: 200 independent tasks.

Prefect: a flow of `@task` functions that add one, called in this process against a Prefect
server started by `compare.sh` (its default: SQLite), so every flow and task run is recorded
there. Amdahl: `amdahl trigger FILE --wait` against services with default flags (no `--slots`),
each task `shell: "true"` (it forks a process, which Prefect's tasks do not): on SQLite one
`amdahl standalone`, and when AMDAHL_BENCH_POSTGRES_URL names a server, a fresh database there
with `amdahl scheduler` + `amdahl worker`. The Amdahl time includes starting the `trigger`
process, validating the file and creating the run; the Prefect time includes creating the
flow run.

Run it through `benches/prefect/compare.sh`, which installs Prefect into a virtualenv and
builds `amdahl` in release.
"""

import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from prefect import flow, task

ROUNDS = int(os.environ.get("AMDAHL_BENCH_ROUNDS", "3"))
CHAIN = 40
FAN = 200


@task
def step(x: int) -> int:
    return x + 1


@flow
def chain() -> int:
    x = 0
    for _ in range(CHAIN):
        x = step(x)
    return x


@flow
def fan_out() -> int:
    return sum(f.result() for f in step.map(range(FAN)))


def best(run):
    """The best wall time of ROUNDS runs after one warm-up, in seconds."""
    run()
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def dag_files(folder):
    lines = ["dag: chain40", "tasks:"]
    for i in range(CHAIN):
        lines.append(f"  t{i:02}:")
        if i:
            lines.append(f"    needs: [t{i - 1:02}]")
        lines.append('    shell: "true"')
    chain_file = os.path.join(folder, "chain40.yaml")
    with open(chain_file, "w") as f:
        f.write("\n".join(lines) + "\n")
    lines = ["dag: fan200", f"max_active_tasks: {FAN}", "tasks:"]
    for i in range(FAN):
        lines.append(f"  t{i:03}:")
        lines.append('    shell: "true"')
    fan_file = os.path.join(folder, "fan200.yaml")
    with open(fan_file, "w") as f:
        f.write("\n".join(lines) + "\n")
    return chain_file, fan_file


def amdahl_times(amdahl, url, services, folder):
    """Best trigger-to-exit times of the two DAGs against `services` (the arguments of each
    process) started on `url`; a service's `--dags-folder` is an empty folder."""
    home = tempfile.mkdtemp(prefix="amdahl-bench-")
    env = dict(os.environ, AMDAHL_HOME=home, AMDAHL_DATABASE_URL=url)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run([amdahl, "db", "migrate"], env=env, check=True, **quiet)
    empty = tempfile.mkdtemp(prefix="amdahl-bench-dags-")
    started = [
        subprocess.Popen([amdahl, *[empty if a == "EMPTY" else a for a in args]], env=env, **quiet)
        for args in services
    ]
    try:
        chain_file, fan_file = dag_files(folder)

        def trigger(file):
            return lambda: subprocess.run(
                [amdahl, "trigger", file, "--wait"], env=env, check=True, **quiet
            )

        return best(trigger(chain_file)), best(trigger(fan_file))
    finally:
        for process in started:
            process.terminate()
        for process in started:
            process.wait()


def fresh_postgres_database(base_url):
    """A new database on the server `base_url` names; returns its URL."""
    name = f"amdahl_bench_{os.getpid()}"
    subprocess.run(
        ["psql", base_url, "-qc", f"DROP DATABASE IF EXISTS {name}"], check=True
    )
    subprocess.run(["psql", base_url, "-qc", f"CREATE DATABASE {name}"], check=True)
    address, _, query = base_url.partition("?")
    url = address.rsplit("/", 1)[0] + "/" + name
    return url + ("?" + query if query else ""), name


def main():
    amdahl = sys.argv[1]
    api = os.environ["PREFECT_API_URL"]
    urllib.request.urlopen(api + "/health", timeout=10).read()
    folder = tempfile.mkdtemp(prefix="amdahl-bench-files-")

    rows = []
    prefect_chain = best(chain)
    prefect_fan = best(fan_out)
    rows.append(("Prefect 3 (server, SQLite)", prefect_chain, prefect_fan))

    sqlite_url = "sqlite://" + os.path.join(tempfile.mkdtemp(), "state.db")
    a_chain, a_fan = amdahl_times(
        amdahl, sqlite_url, [["standalone", "--dags-folder", "EMPTY"]], folder
    )
    rows.append(("Amdahl, SQLite, standalone", a_chain, a_fan))

    base = os.environ.get("AMDAHL_BENCH_POSTGRES_URL")
    if base:
        url, name = fresh_postgres_database(base)
        try:
            a_chain, a_fan = amdahl_times(
                amdahl, url, [["scheduler", "--dags-folder", "EMPTY"], ["worker"]], folder
            )
            rows.append(("Amdahl, PostgreSQL, scheduler + worker", a_chain, a_fan))
        finally:
            subprocess.run(
                ["psql", base, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                check=False,
            )

    print()
    print(f"best of {ROUNDS} after a warm-up; per task = wall time / tasks")
    print()
    print(f"| {'system':<40} | {'chain of 40, per task':>22} | {'fan-out of 200, per task':>25} "
          f"| {'÷ Prefect (chain)':>17} | {'÷ Prefect (fan-out)':>19} |")
    print(f"|{'-' * 42}|{'-' * 24}|{'-' * 27}|{'-' * 19}|{'-' * 21}|")
    for system, chain_s, fan_s in rows:
        print(f"| {system:<40} | {chain_s / CHAIN * 1e3:>19.2f} ms | {fan_s / FAN * 1e3:>22.2f} ms "
              f"| {chain_s / prefect_chain:>17.3f} | {fan_s / prefect_fan:>19.3f} |")


if __name__ == "__main__":
    main()
