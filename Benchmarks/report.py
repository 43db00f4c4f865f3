#!/usr/bin/env python3
"""Gathers the per-run JSON files that Benchmarks/run collected into one results file,
computes each relay's CPU per chunk against nginx's from the same run, and prints the table.

Called by `run`; it reads only files and the machine's own description, so it can also be
run again on a kept work folder (`run --keep-workdir`).
"""
import argparse
import datetime
import glob
import json
import os
import platform
import shutil
import subprocess


def command_output(*argv):
    """First line a command prints, or None when it cannot run."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine():
    model = None
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_kb = None
    try:
        with open("/proc/meminfo") as meminfo:
            memory_kb = int(meminfo.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(memory_kb / 1048576, 1) if memory_kb else None,
        "kernel": platform.release(),
        "os": command_output("sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""),
        "load_average_at_end": os.getloadavg(),
    }


def number(value, digits=1):
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def main():
    parser = argparse.ArgumentParser()
    for option in ("runs", "results", "started-at", "targets", "concurrency", "duration", "model", "slow",
                   "slow-streams", "slow-seconds", "nofile", "keepalive", "repo", "chatrelayd", "nginx"):
        parser.add_argument("--" + option, required=True)
    args = parser.parse_args()

    targets = {}
    for path in sorted(glob.glob(os.path.join(args.runs, "*.target.json"))):
        with open(path) as file:
            entry = json.load(file)
        targets[entry.pop("target")] = entry

    target_order = args.targets.split()
    concurrency_order = [int(c) for c in args.concurrency.split()]
    runs = []
    for path in glob.glob(os.path.join(args.runs, "*.json")):
        if path.endswith(".target.json"):
            continue
        target, case = os.path.basename(path)[: -len(".json")].rsplit(".", 1)
        with open(path) as file:
            run = json.load(file)
        run["target"] = target
        run["case"] = "slow" if case == "slow" else "throughput"
        runs.append(run)

    def order(run):
        target_index = target_order.index(run["target"]) if run["target"] in target_order else len(target_order)
        return (run["case"] == "slow", target_index, run["concurrency"])

    runs.sort(key=order)

    # Ratios only against nginx measured in this same run, at the same concurrency and case.
    nginx_cpu = {
        (run["case"], run["concurrency"]): (run.get("relay") or {}).get("cpu_microseconds_per_chunk")
        for run in runs
        if run["target"] == "nginx"
    }
    for run in runs:
        mine = (run.get("relay") or {}).get("cpu_microseconds_per_chunk")
        theirs = nginx_cpu.get((run["case"], run["concurrency"]))
        run["cpu_ratio_to_nginx"] = round(mine / theirs, 2) if mine and theirs else None

    def system_share(relay):
        # The kernel's part of the relay's CPU (older results have no system time).
        cpu, system = relay.get("cpu_seconds"), relay.get("system_cpu_seconds")
        return f"{100 * system / cpu:.0f}%" if cpu and system is not None else "-"

    header = ("target", "conc", "req/s", "chunks/s", "ttfb p50", "ttfb p99", "ttfc p50", "ttfc p99", "gap p99",
              "CPU µs/chunk", "sys", "×nginx", "peak RSS MB", "errors")
    rows = []
    for run in runs:
        relay = run.get("relay") or {}
        concurrency = str(run["concurrency"]) + (" slow" if run["case"] == "slow" else "")
        rows.append((
            run["target"], concurrency, number(run["requests_per_second"]), number(run["chunks_per_second"], 0),
            number(run["ttfb_ms"].get("p50"), 2), number(run["ttfb_ms"].get("p99"), 2),
            number(run["ttfc_ms"].get("p50"), 2), number(run["ttfc_ms"].get("p99"), 2),
            number(run["gap_ms"].get("p99"), 2),
            number(relay.get("cpu_microseconds_per_chunk"), 2),
            system_share(relay),
            number(run["cpu_ratio_to_nginx"], 2),
            number(relay.get("peak_rss_mb"), 1),
            str(run["errors"]),
        ))
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    lines = []
    lines.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))))

    notes = []
    idle = [f"{name} {number(entry['idle_rss_mb'])} MB (PSS {number(entry.get('idle_pss_mb'))})"
            for name, entry in targets.items() if entry.get("idle_rss_mb") is not None]
    if idle:
        notes.append("idle RSS before load: " + ", ".join(idle))
    for name, entry in targets.items():
        if entry["status"] != "ok":
            notes.append(f"{name}: {entry['status']}: {entry.get('note')}")
    for run in runs:
        expected = int(args.slow_seconds) if run["case"] == "slow" else None
        low, high = run.get("content_chunks_per_request_min"), run.get("content_chunks_per_request_max")
        if run["errors"]:
            kinds = ", ".join(f"{kind} ×{count}" for kind, count in sorted(run["error_kinds"].items()))
            notes.append(f"{run['target']} at {run['concurrency']}{' (slow)' if run['case'] == 'slow' else ''}: {kinds}")
        if low is not None and low != high:
            notes.append(f"{run['target']} at {run['concurrency']}: content chunks per stream varied {low}...{high}")
        if run.get("unannounced_closes") or run.get("stale_connection_retries"):
            notes.append(f"{run['target']} at {run['concurrency']}: {run['connections_opened']} connections for "
                         f"{run['requests_completed']} streams: it closed kept-alive connections without 'Connection: close' "
                         f"({run['stale_connection_retries']} requests found theirs closed and were sent again on a new one)")
        if run.get("connect_retries"):
            notes.append(f"{run['target']} at {run['concurrency']}: {run['connect_retries']} connects retried (backlog full)")

    now = datetime.datetime.now(datetime.timezone.utc)
    machine_facts = machine()
    title = (f"chatrelayd relay benchmark, {args.started_at}, {machine_facts['cpus']} CPUs ({machine_facts['cpu_model']}), "
             f"model {args.model}, {args.duration} s per row, "
             f"{'keep-alive clients' if args.keepalive == '1' else 'a new connection per request'}; CPU µs per data event the client received, "
             f"×nginx = that over nginx's at the same concurrency in this run")
    table = "\n".join([title, ""] + lines + ([""] + notes if notes else []))

    git = lambda *a: command_output("git", "-C", args.repo, *a)  # noqa: E731
    result = {
        "started_at": args.started_at,
        "finished_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_facts,
        "versions": {
            "chatrelayd": command_output(args.chatrelayd, "--version") if os.path.exists(args.chatrelayd) else None,
            "chatrelayd_commit": git("rev-parse", "HEAD"),
            "chatrelayd_tree_dirty": bool(command_output("git", "-C", args.repo, "status", "--porcelain", "--", "Sources")),
            "nginx": command_output(args.nginx, "-v") if shutil.which(args.nginx) or os.path.exists(args.nginx) else None,
            "swift": command_output("swift", "--version"),
        },
        "settings": {
            "targets": target_order,
            "concurrency": concurrency_order,
            "duration_seconds": float(args.duration),
            "model": args.model,
            "slow_case": args.slow == "1",
            "slow_streams": int(args.slow_streams),
            "slow_seconds": int(args.slow_seconds),
            "open_file_limit": int(args.nofile),
            "client_keepalive": args.keepalive == "1",
        },
        "targets": targets,
        "runs": runs,
        "table": table,
    }
    os.makedirs(args.results, exist_ok=True)
    latest = os.path.join(args.results, "latest.json")
    dated = os.path.join(args.results, "benchmark-" + now.strftime("%Y-%m-%dT%H%M%SZ") + ".json")
    for path in (latest, dated):
        with open(path, "w") as file:
            json.dump(result, file, indent=2, sort_keys=True)
            file.write("\n")
    print(table)
    print(f"\nwrote {latest} and {dated}")


if __name__ == "__main__":
    main()
