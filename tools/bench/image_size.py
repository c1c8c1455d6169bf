#!/usr/bin/env python3
"""Image size per profile and part: tools/grove-image builds configs/images/minimal.yaml,
default.yaml and full.yaml (or --profiles) from the build tree into temporary trees and
.tar.gz files; prints one JSON object on stdout. Not a test: it reports figures.

Per profile (ELF files stripped, grove-image's default): bytes per part (kernel, grovectl, runtime libraries, each plugin with its
files, configuration, tools), the tree's total, the .tar.gz's size, the tree's size unstripped (--no-strip), and the Debian
libraries the tree's ELF files load that are not in the tree (ldd: what the device's
root file system must hold besides, e.g. OpenCV for ml_inference; shared by several
images, so reported apart). Peer: the minimal image in the same run; each profile's
`ratio_to_minimal` (tree and system libraries).

usage: tools/bench/image_size.py [--build-dir DIR] [--profiles minimal default full]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def elf_files(root):
    for d, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(d, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    yield p


def system_libraries(root):
    """{path: bytes} of the libraries outside `root` its ELF files load (ldd)."""
    libs = {}
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(root, "lib"))
    for f in elf_files(root):
        out = subprocess.run(["ldd", f], capture_output=True, text=True, env=env).stdout
        for m in re.finditer(r"=> (/\S+)", out):
            path = os.path.realpath(m.group(1))
            if not path.startswith(os.path.realpath(root)) and os.path.exists(path):
                libs[path] = os.path.getsize(path)
    return libs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.environ.get("GROVE_BUILD_DIR",
                                                         os.path.join(REPO, "build")))
    ap.add_argument("--profiles", nargs="+", default=["minimal", "default", "full"])
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="image_size.")
    result = {"benchmark": "image_size", "build_dir": args.build_dir, "profiles": {}}
    try:
        for name in args.profiles:
            tree = os.path.join(tmp, name)
            tar = os.path.join(tmp, name + ".tar.gz")
            report = os.path.join(tmp, name + ".json")
            profile = os.path.join(REPO, "configs/images", name + ".yaml")
            unstripped = os.path.join(tmp, name + "-unstripped")
            for out, extra in ((tree, ["--report", report]), (tar, []),
                               (unstripped, ["--no-strip"])):
                r = subprocess.run([sys.executable, os.path.join(REPO, "tools/grove-image"),
                                    "build", profile, "--out", out, "--build-dir",
                                    args.build_dir, *extra],
                                   capture_output=True, text=True, cwd=REPO)
                if r.returncode != 0:
                    sys.exit(f"image_size: {name}: {r.stderr.strip()}")
            with open(report) as f:
                rep = json.load(f)
            sys_libs = system_libraries(tree)
            result["profiles"][name] = {
                "plugins": rep["plugins"],
                "parts_bytes": {p["part"]: p["bytes"] for p in rep["parts"]},
                "tree_bytes": rep["total_bytes"],
                "tar_gz_bytes": os.path.getsize(tar),
                "unstripped_tree_bytes": sum(os.path.getsize(os.path.join(d, f))
                                             for d, _, fs in os.walk(unstripped) for f in fs
                                             if d != os.path.join(unstripped, "share/grove")),
                "system_libraries": len(sys_libs),
                "system_libraries_bytes": sum(sys_libs.values()),
            }
        base = result["profiles"].get("minimal")
        if base:
            for p in result["profiles"].values():
                p["ratio_to_minimal"] = {
                    "tree": round(p["tree_bytes"] / base["tree_bytes"], 3),
                    "tar_gz": round(p["tar_gz_bytes"] / base["tar_gz_bytes"], 3),
                    "system_libraries": round(p["system_libraries_bytes"]
                                              / max(1, base["system_libraries_bytes"]), 3),
                }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
