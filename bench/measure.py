#!/usr/bin/env python3
"""Runs one load command against a running service and keeps its JSON report as a figure of
bench/run.sh, with the CPU the service (and PostgreSQL's server, when it serves the run) spent
on it.

usage: bench/measure.py FIGURES KEY SERVICE_PID -- COMMAND [ARGS...]

COMMAND prints one JSON object (`webhook-inbox bench ... --format json` does). Appends to
FIGURES one line: that object, plus
  key                       KEY;
  service_cpu_us            CPU of the whole service process per request answered, in µs;
  storage_cpu_us            the part of it on the SQLite store's own threads (`sqlite-*`: the
                            writer, the checkpointer, the WAL sync), 0 on PostgreSQL;
  outside_storage_cpu_us    the rest: the HTTP path, from the socket to the hand-off and back;
  postgres_cpu_us           CPU of every `postgres` process on the machine per request;
  load_cpu_us               CPU of COMMAND itself per request.
Also prints the object's one-line summary on stderr.
"""
import json
import os
import resource
import subprocess
import sys

TICK = os.sysconf("SC_CLK_TCK")


def ticks(stat_path):
    """User plus system clock ticks of one /proc stat file (0 when it is gone)."""
    try:
        with open(stat_path) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[11]) + int(fields[12])


def service_ticks(pid):
    """(all threads, the store's own threads) of the service."""
    total = ticks(f"/proc/{pid}/stat")
    storage = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/comm") as comm:
            if comm.read().startswith("sqlite-"):
                storage += ticks(f"/proc/{pid}/task/{task}/stat")
    return total, storage


def postgres_ticks():
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() != "postgres":
                    continue
        except FileNotFoundError:
            continue
        total += ticks(f"/proc/{pid}/stat")
    return total


def main():
    figures, key, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    command = sys.argv[sys.argv.index("--") + 1:]
    before = service_ticks(pid), postgres_ticks()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = service_ticks(pid), postgres_ticks()
    figure = json.loads(output.strip().splitlines()[-1])
    requests = max(1, figure.get("requests", 1))
    per_request = lambda delta_ticks: round(delta_ticks / TICK / requests * 1e6, 1)
    service = after[0][0] - before[0][0]
    storage = after[0][1] - before[0][1]
    load = (children_after.ru_utime + children_after.ru_stime
            - children_before.ru_utime - children_before.ru_stime)
    figure.update(
        key=key,
        service_cpu_us=per_request(service),
        storage_cpu_us=per_request(storage),
        outside_storage_cpu_us=per_request(service - storage),
        postgres_cpu_us=per_request(after[1] - before[1]),
        load_cpu_us=round(load / requests * 1e6, 1),
    )
    with open(figures, "a") as out:
        out.write(json.dumps(figure) + "\n")
    print(f"{key}: {figure.get('requests_per_sec', 0):,.0f} requests/s, "
          f"service {figure['service_cpu_us']} µs per request", file=sys.stderr)


main()
