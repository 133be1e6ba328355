"""Samples a process tree's memory every INTERVAL seconds until STOPFILE
exists (bench/documents-rss.sh).

  documents_rss_sampler.py PID STOPFILE [--interval 0.02]

Each sample reads /proc/PID/status (VmRSS) and, for every descendant (found
through /proc/*/stat parent ids), VmRSS and VmHWM: a child's VmHWM is its
own peak so far, so the last sample before it exits is close to its true
peak even when it lives for less than a few intervals. Prints one JSON line:
samples, keel_rss_peak_kib (largest sampled VmRSS), keel_hwm_kib (VmHWM at
the end), tree_rss_peak_kib (largest sampled sum over the tree), and
children: {name: {"rss_peak_kib", "hwm_kib", "seen"}} (the largest over
processes of that name; seen = how many distinct pids).
"""
import json
import os
import sys
import time


def status(pid):
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Name", "VmRSS", "VmHWM"):
                    values[key] = rest.split()[0] if key != "Name" else rest.strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return values


def descendants(root):
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid …; comm may hold spaces and parentheses.
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def main():
    pid, stopfile = int(sys.argv[1]), sys.argv[2]
    interval = float(sys.argv[sys.argv.index("--interval") + 1]) if "--interval" in sys.argv else 0.02
    samples = keel_peak = tree_peak = 0
    children = {}
    pids = {}
    while not os.path.exists(stopfile):
        keel = status(pid)
        if keel is None:
            break
        total = int(keel.get("VmRSS", 0))
        keel_peak = max(keel_peak, total)
        for child in descendants(pid):
            s = status(child)
            if not s or "VmRSS" not in s:
                continue
            name = s.get("Name", "?")
            entry = children.setdefault(name, {"rss_peak_kib": 0, "hwm_kib": 0, "seen": 0})
            entry["rss_peak_kib"] = max(entry["rss_peak_kib"], int(s["VmRSS"]))
            entry["hwm_kib"] = max(entry["hwm_kib"], int(s.get("VmHWM", 0)))
            if child not in pids.setdefault(name, set()):
                pids[name].add(child)
                entry["seen"] += 1
            total += int(s["VmRSS"])
        tree_peak = max(tree_peak, total)
        samples += 1
        time.sleep(interval)
    final = status(pid) or {}
    print(json.dumps({"samples": samples, "keel_rss_peak_kib": keel_peak, "keel_hwm_kib": int(final.get("VmHWM", 0)),
                      "keel_rss_end_kib": int(final.get("VmRSS", 0)), "tree_rss_peak_kib": tree_peak, "children": children}))


if __name__ == "__main__":
    main()
