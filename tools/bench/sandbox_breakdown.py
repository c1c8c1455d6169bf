#!/usr/bin/env python3
"""Where a sandboxed start's time goes, by step: runs sandbox_bench under
`strace -f -T` and sums the kernel time (-T) of each step's system calls over every
sandboxed child (and groved's side of it), against a plain fork+exec child of the same
run. strace slows everything down; the figures are for comparing steps with each other
and before/after a change, not absolute costs (sandbox_bench's JSON gives those).

usage: sandbox_breakdown.py BUILD_DIR [COLD_STARTS]      prints one JSON object
"""
import collections
import json
import re
import subprocess
import sys
import tempfile

def step_of(call, args):
    if call == "clone" and "CLONE_NEWUSER" in args:
        return "clone_namespaces"
    if call in ("clone", "clone3", "fork", "vfork"):
        return "clone_plain"
    if call == "write" and ("uid_map" in args or "gid_map" in args):
        return "id_maps"
    if call in ("mount", "mount_setattr", "pivot_root", "umount2", "chdir", "newfstatat"):
        return {"umount2": "umount_old_root", "pivot_root": "pivot_root"}.get(call, "mounts")
    if call in ("mkdir", "rmdir", "symlink"):
        return "skeleton_and_cgroup_dirs"
    if call == "seccomp":
        return "seccomp_load"
    if call == "execve":
        return "exec"
    if call in ("prctl", "capset", "setresuid", "setresgid", "setgroups", "sethostname"):
        return "credentials_and_caps"
    return None


def main():
    build = sys.argv[1]
    cold = sys.argv[2] if len(sys.argv) > 2 else "10"
    with tempfile.NamedTemporaryFile(prefix="sandbox-strace-") as trace:
        subprocess.run(["strace", "-f", "-T", "-o", trace.name, "-e",
                        "trace=clone,clone3,fork,vfork,mount,mount_setattr,pivot_root,"
                        "umount2,chdir,newfstatat,mkdir,rmdir,symlink,write,seccomp,execve,"
                        "prctl,capset,setresuid,setresgid,setgroups,sethostname,openat",
                        build + "/bin/sandbox_bench", cold],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        text = open(trace.name, encoding="utf-8", errors="replace").read()
    # The sandboxed children: what clone(CLONE_NEWUSER ...) returned. Their own calls are
    # the child's steps; groved's side (cgroups, id maps) is counted wherever it runs.
    boxed = set(re.findall(r"CLONE_NEWUSER[^\n]*= (\d+)", text))
    # Which file each descriptor write goes to: the openat before it in the same pid.
    fd_path = {}
    pending = {}
    totals = collections.defaultdict(float)
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) < 2:
            continue
        pid, rest = parts
        m = re.match(r"(?:<\.\.\. )?(\w+)(?: resumed>)?\(?(.*)<([\d.]+)>$", rest)
        if "<unfinished ...>" in rest:
            pending[pid] = rest
            continue
        if not m:
            continue
        call, args, secs = m.group(1), m.group(2), float(m.group(3))
        if "resumed>" in rest and pid in pending:
            args = pending.pop(pid) + args
        if call == "openat":
            fd = re.search(r"= (\d+)", args)
            path = re.search(r'"([^"]+)"', args)
            if fd and path:
                fd_path[(pid, fd.group(1))] = path.group(1)
            continue
        if call == "write":
            fd = re.match(r"\s*(\d+)", args)
            path = fd_path.get((pid, fd.group(1)), "") if fd else ""
            if path.endswith("cgroup.procs") or path.endswith("/tasks"):
                totals["cgroup_attach"] += secs
            elif path.endswith("_map"):
                totals["id_maps"] += secs
            elif "/sys/fs/cgroup/" in path:
                totals["cgroup_limits"] += secs
            continue
        step = step_of(call, args)
        child_side = step not in (None, "clone_namespaces", "clone_plain", "skeleton_and_cgroup_dirs")
        if child_side and pid not in boxed:
            continue
        if step:
            totals[step] += secs
    clones = len(boxed)
    out = {"benchmark": "sandbox_breakdown", "sandboxed_starts": clones,
           "method": "strace -f -T kernel time per step, summed over the run's sandboxed "
                     "starts, per start (us)"}
    for k, v in sorted(totals.items(), key=lambda kv: -kv[1]):
        out[k + "_us"] = round(v * 1e6 / max(clones, 1), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
