#!/usr/bin/env python3
"""Where a process's memory goes: its /proc/PID/smaps summed per library (file-backed, with
the anonymous .bss that follows a library's data counted to it), per thread stack (a
thread's stack is the mapping that holds the stack pointer in /proc/PID/task/TID/syscall),
the main stack, the brk heap and the remaining anonymous memory (the allocator's arenas:
jemalloc in groved). Figures are PSS in kB; the categories add up to smaps_rollup's Pss.

PSS divides a page among all the processes that map it, so it moves with whatever else
runs (on a shared build machine libstdc++ or libcaf_core drops to a fraction). With
`alone=` (needs root: page frame numbers from /proc/PID/pagemap) every figure is also given
as if only the listed processes ran ("alone_kb"): a page counts 1/k, k being how many of
them map it. That is the "nothing else running" figure, reproducible on a busy machine.

Usage: smaps_breakdown.py PID...   (one JSON object per PID; "alone" over all the PIDs)
"""

import json
import os
import struct
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import task_files  # noqa: E402

# Per-mapping smaps has no Pss_Anon/Pss_File: "Anonymous" (the copied-on-write pages of a
# private file mapping: relocations, .data) splits a library into file and anonymous. Such
# pages are private to the process here (groved and its broker exec, they do not fork).
FIELDS = ("Rss", "Pss", "Anonymous", "Private_Clean", "Private_Dirty")


# The C and C++ runtimes: on a device every other C/C++ process maps them too, so a share
# of them is all a process really costs. Reported apart ("system_libraries_pss_kb").
SYSTEM_LIBRARIES = {"libc.so", "libm.so", "libstdc++.so", "libgcc_s.so", "ld-linux-x86-64.so",
                    "libpthread.so", "libdl.so", "librt.so"}


def read_smaps(pid):
    """The mappings of `pid`: dicts with start, end, perms, path ("" if anonymous) and the
    kB fields above."""
    maps = []
    cur = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if "-" in parts[0] and not parts[0].endswith(":"):
                lo, hi = parts[0].split("-")
                cur = {"start": int(lo, 16), "end": int(hi, 16), "perms": parts[1],
                       "path": " ".join(parts[5:]) if len(parts) > 5 else ""}
                for k in FIELDS:
                    cur[k] = 0
                maps.append(cur)
            elif cur is not None and parts[0].rstrip(":") in FIELDS and parts[-1] == "kB":
                cur[parts[0].rstrip(":")] = int(parts[1])
    return maps


def page_frames(pid, maps):
    """Adds "pfns" (the frame numbers of its resident pages) to every mapping of `pid` with
    Rss. Returns False if the kernel hides frame numbers (not root)."""
    page = os.sysconf("SC_PAGE_SIZE")
    seen_any = False
    with open("/proc/%d/pagemap" % pid, "rb") as f:
        for m in maps:
            m["pfns"] = []
            if m["Rss"] == 0:
                continue
            n = (m["end"] - m["start"]) // page
            f.seek(m["start"] // page * 8)
            data = f.read(n * 8)
            for (entry,) in struct.iter_unpack("<Q", data):
                if entry >> 63 & 1:  # present
                    pfn = entry & ((1 << 55) - 1)
                    if pfn:
                        seen_any = True
                        m["pfns"].append(pfn)
    return seen_any


def add_alone(all_maps):
    """Sets m["Alone"] (kB) on every mapping of every process in `all_maps` (a list of
    mapping lists): each resident page counts 1/k, k = processes in the list mapping it."""
    counts = Counter()
    for maps in all_maps:
        counts.update({pfn for m in maps for pfn in m["pfns"]})
    kb = os.sysconf("SC_PAGE_SIZE") // 1024
    for maps in all_maps:
        for m in maps:
            m["Alone"] = sum(kb / counts[pfn] for pfn in m["pfns"])


def thread_stacks(pid):
    """{tid: (name, stack pointer or None)} for every thread of `pid`. The stack pointer is
    the second-to-last field of /proc/PID/task/TID/syscall (None while running)."""
    result = {}
    for tid, (comm, syscall) in task_files(pid, "comm", "syscall"):
        fields = syscall.split()
        try:
            sp = int(fields[-2], 16) if len(fields) >= 3 else None
        except ValueError:
            sp = None
        result[tid] = (comm.strip(), sp)
    return result


def short_name(path):
    """libfoo.so.1.2 -> libfoo.so; other paths keep their basename."""
    base = os.path.basename(path)
    i = base.find(".so")
    return base[:i + 3] if i >= 0 else base


def breakdown(pid, maps=None, field="Pss"):
    """The breakdown of `pid` as a dict (see the module's doc), summing `field` of each
    mapping ("Pss", or "Alone" after add_alone)."""
    maps = read_smaps(pid) if maps is None else maps
    threads = thread_stacks(pid)
    sp_owner = {}
    for tid, (name, sp) in threads.items():
        if sp is None:
            continue
        for m in maps:
            if m["start"] <= sp < m["end"]:
                sp_owner[id(m)] = (tid, name)
                break
    libs = {}
    stacks = []
    cats = {"libraries_file": 0, "libraries_anon": 0, "main_stack": 0, "thread_stacks": 0,
            "brk_heap": 0, "anon_other": 0, "other": 0}
    prev = None
    for m in maps:
        pss = round(m[field])
        path = m["path"]
        if id(m) in sp_owner and path != "[stack]":
            tid, name = sp_owner[id(m)]
            stacks.append({"tid": tid, "name": name, "pss_kb": pss,
                           "size_kb": (m["end"] - m["start"]) // 1024})
            cats["thread_stacks"] += pss
        elif path.startswith("/") and not path.startswith("/dev/") \
                and not path.startswith("/memfd:"):
            lib = libs.setdefault(short_name(path), {"pss_kb": 0, "pss_file_kb": 0,
                                                     "pss_anon_kb": 0, "private_dirty_kb": 0})
            lib["pss_kb"] += pss
            anon = min(m["Anonymous"], pss)
            lib["pss_file_kb"] += pss - anon
            lib["pss_anon_kb"] += anon  # copied relocations and .data
            lib["private_dirty_kb"] += m["Private_Dirty"]
            cats["libraries_file"] += pss - anon
            cats["libraries_anon"] += anon
        elif path == "" and prev is not None and prev["path"].startswith("/") \
                and prev["end"] == m["start"] and prev["perms"].startswith("rw") \
                and m["perms"].startswith("rw"):
            # A library's .bss: the anonymous tail right after its writable data.
            lib = libs[short_name(prev["path"])]
            lib["pss_kb"] += pss
            lib["pss_anon_kb"] += pss
            lib["private_dirty_kb"] += m["Private_Dirty"]
            cats["libraries_anon"] += pss
        elif path == "[stack]":
            cats["main_stack"] += pss
        elif path == "[heap]":
            cats["brk_heap"] += pss
        elif path == "":
            cats["anon_other"] += pss
        else:
            cats["other"] += pss  # [vdso], [vvar], /dev/..., memfd
        prev = m
    top = sorted(libs.items(), key=lambda kv: -kv[1]["pss_kb"])
    file_kb = cats["libraries_file"] + cats["other"]
    return {
        "pid": pid,
        "pss_kb": sum(cats.values()),
        "rss_kb": sum(m["Rss"] for m in maps),
        "threads": len(threads),
        # Clean file pages (code, read-only data) can be dropped and read back by the
        # kernel under memory pressure; the anonymous rest stays until freed (or swapped).
        "file_backed_pss_kb": file_kb,
        "system_libraries_pss_kb": sum(v["pss_kb"] for k, v in libs.items()
                                       if k in SYSTEM_LIBRARIES),
        "anonymous_pss_kb": sum(cats.values()) - file_kb,
        "categories_pss_kb": cats,
        "libraries": [dict(name=k, **v) for k, v in top],
        "thread_stacks": sorted(stacks, key=lambda s: -s["pss_kb"]),
    }


def breakdowns(pids):
    """{pid: breakdown} for `pids`, each with "alone" (the same breakdown as if only these
    processes ran) when frame numbers are readable."""
    maps = {pid: read_smaps(pid) for pid in pids}
    result = {pid: breakdown(pid, maps[pid]) for pid in pids}
    try:
        readable = all([page_frames(pid, maps[pid]) for pid in pids])
    except OSError:
        readable = False
    if readable:
        add_alone(list(maps.values()))
        for pid in pids:
            result[pid]["alone"] = breakdown(pid, maps[pid], "Alone")
    return result


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    for b in breakdowns([int(p) for p in sys.argv[1:]]).values():
        print(json.dumps(b))
    return 0


if __name__ == "__main__":
    sys.exit(main())
