#!/usr/bin/python3
"""Who components run as, and the `bootstrap` step, with boto3 (issue 15).

Usage: runwith_test.py first|restarted ENDPOINT CA_BUNDLE WRITE_DIR LOCAL_DIR
groved runs as root with default_posix_user: nobody and artifacts_file_dir LOCAL_DIR
(tool.sh, data.txt, secret.txt there).
`first`: e2e.Who (no runWith) runs as nobody, e2e.Root (runWith.posixUser root) as root;
e2e.Arts (nobody) runs its artifact tool.sh (Permission Execute OWNER) through
{artifacts:path}, reads data.txt (no Permission: Greengrass' Read OWNER) and lists the
directory, but cannot read e2e.Root's secret.txt (by its {artifacts:path} nor in the
store), nor list the write directory; the same through {artifacts:decompressedPath} for
the entries of pack.zip (Unarchive: ZIP: run.sh, executable in the archive, and info.txt)
against those of e2e.Root's rootpack.zip; e2e.Boot 1.0.0's bootstrap runs before its install,
2.0.0's asks for a restart of groved (exit 100: COMPLETED, noted in the reason), 3.0.0's for
a reboot (exit 101: FAILED, ROLLBACK_COMPLETE, its install never run, 2.0.0's bootstrap
run again in the rollback: BootstrapOnRollback), then 2.0.0 runs again.
`restarted` (after kill -9): e2e.Boot 2.0.0 and e2e.Who run again, no bootstrap or install
ran again. Prints PASS/FAIL lines; exits 1 on any failure.
"""
import grp
import hashlib
import os
import pwd
import sys

import support
from support import alive, check, client, pid_in, read, thing_arn, wait

PHASE, ENDPOINT, CA, WRITE, LOCAL = sys.argv[1:6]
THING = thing_arn("core-1")
STATE = f"{WRITE}/plugins/deployment"
WORKDIR = f"{STATE}/components/work"
ARTS = f"{STATE}/components/packages/artifacts"
UNZ = f"{STATE}/components/packages/artifacts-unarchived"
NOBODY = pwd.getpwnam("nobody")
gg = client("greengrassv2", ENDPOINT, CA)
with open(f"{LOCAL}/secret.txt", "rb") as _f:
    SECRET_STORED = f"{STATE}/artifacts/sha256/{hashlib.sha256(_f.read()).hexdigest()}"
with open(f"{LOCAL}/rootpack.zip", "rb") as _f:
    ROOTPACK_STORED = f"{STATE}/artifacts/unarchived/{hashlib.sha256(_f.read()).hexdigest()}"


def installed():
    return support.installed(gg)


def work(name, file):
    return read(f"{WORKDIR}/{name}/{file}")


def state(name):
    return installed().get(name, {}).get("lifecycleState")


def deploy(components):
    did = gg.create_deployment(targetArn=THING, components=components)["deploymentId"]
    d = support.settle(gg, did)
    return d.get("deploymentStatus"), support.effective(gg, did).get("reason", "")


def boot(version, bootstrap, on_rollback=False):
    support.component(gg, "e2e.Boot", f"""Manifests:
  - Platform: {{os: linux}}
    Lifecycle:
      bootstrap:
        BootstrapOnRollback: {"true" if on_rollback else "false"}
        Script: {bootstrap}
      install: echo install-{version[0]} >> {{work:path}}/steps
      run: echo $$ > {{work:path}}/pid; exec sleep 300
""", version)


ONE = {"componentVersion": "1.0.0"}
BASE = {"e2e.Who": ONE, "e2e.Root": {"componentVersion": "1.0.0", "runWith": {"posixUser": "root"}},
        "e2e.Arts": ONE}

if PHASE == "first":
    support.component(gg, "e2e.Who", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      run: |
        id -u > {work:path}/uid
        /usr/bin/python3 -c 'import os, socket; socket.socket(socket.AF_UNIX).connect(os.environ["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"]); print("connected")' > {work:path}/ipc 2>&1
        echo $$ > {work:path}/pid; exec sleep 300
""")
    support.component(gg, "e2e.Root", f"""Manifests:
  - Platform: {{os: linux}}
    Artifacts:
      - Uri: file://{LOCAL}/secret.txt
      - Uri: file://{LOCAL}/rootpack.zip
        Unarchive: ZIP
    Lifecycle:
      run: id -u > {{work:path}}/uid; echo $$ > {{work:path}}/pid; exec sleep 300
""")
    support.component(gg, "e2e.Arts", f"""Manifests:
  - Platform: {{os: linux}}
    Artifacts:
      - Uri: file://{LOCAL}/tool.sh
        Permission: {{Read: OWNER, Execute: OWNER}}
      - Uri: file://{LOCAL}/data.txt
      - Uri: file://{LOCAL}/pack.zip
        Unarchive: ZIP
    Lifecycle:
      run: |
        cd {{work:path}}
        {{artifacts:path}}/tool.sh {{work:path}}/tool.out
        cat {{artifacts:path}}/data.txt > data.out
        ls {{artifacts:path}} > ls.out
        cat {ARTS}/e2e.Root/1.0.0/secret.txt > secret.out 2>&1 || echo refused >> secret.out
        cat {SECRET_STORED} > stored.out 2>&1 || echo refused >> stored.out
        ls {WRITE} > write.out 2>&1 || echo refused >> write.out
        {{artifacts:decompressedPath}}/pack/pack/run.sh {{work:path}}/unz_tool.out
        cat {{artifacts:decompressedPath}}/pack/pack/info.txt > unz_data.out
        cat {UNZ}/e2e.Root/1.0.0/rootpack/hidden.txt > unz_secret.out 2>&1 || echo refused >> unz_secret.out
        cat {ROOTPACK_STORED}/hidden.txt > unz_stored.out 2>&1 || echo refused >> unz_stored.out
        echo $$ > pid
        exec sleep 300
""")
    for name in ("e2e.Root", "e2e.Arts"):
        arn = f"arn:aws:greengrass:us-east-1:123456789012:components:{name}:versions:1.0.0"
        ready = wait(lambda: gg.describe_component(arn=arn)["status"]["componentState"]
                     not in ("REQUESTED", "INITIATED")
                     and gg.describe_component(arn=arn)["status"]["componentState"], 60)
        check(f"{name}'s file:// artifacts fetched -> DEPLOYABLE", ready == "DEPLOYABLE", ready)
    status, reason = deploy(BASE)
    check("e2e.Who, e2e.Root and e2e.Arts -> COMPLETED", status == "COMPLETED", (status, reason))

    # default_posix_user
    check("e2e.Who (no runWith.posixUser) runs as default_posix_user nobody",
          wait(lambda: work("e2e.Who", "uid")).strip() == str(NOBODY.pw_uid), work("e2e.Who", "uid"))
    check("e2e.Who (nobody) reaches the Greengrass IPC socket (traversal-only directories)",
          wait(lambda: work("e2e.Who", "ipc")).strip() == "connected", work("e2e.Who", "ipc"))
    check("e2e.Root (runWith.posixUser root, asked explicitly) runs as root",
          wait(lambda: work("e2e.Root", "uid")).strip() == "0", work("e2e.Root", "uid"))

    # {artifacts:path} reachable by its own user only
    check("e2e.Arts (nobody) ran its artifact through {artifacts:path} (Execute OWNER)",
          wait(lambda: work("e2e.Arts", "tool.out")) == "tool ran\n", work("e2e.Arts", "tool.out"))
    check("... read its artifact without Permission (Greengrass' default Read OWNER)",
          wait(lambda: work("e2e.Arts", "data.out")) == "data of e2e.Arts\n", work("e2e.Arts", "data.out"))
    check("... and listed {artifacts:path}",
          wait(lambda: work("e2e.Arts", "ls.out")).split() == ["data.txt", "pack.zip", "tool.sh"],
          work("e2e.Arts", "ls.out"))
    pid = wait(lambda: pid_in(WORKDIR, "e2e.Arts"))
    check("... but not e2e.Root's secret.txt through its {artifacts:path}",
          "refused" in work("e2e.Arts", "secret.out") and "secret of" not in work("e2e.Arts", "secret.out"),
          work("e2e.Arts", "secret.out"))
    check("... nor in the artifact store",
          "refused" in work("e2e.Arts", "stored.out") and "secret of" not in work("e2e.Arts", "stored.out"),
          work("e2e.Arts", "stored.out"))
    check("... nor list the write directory (traversal only)",
          "refused" in work("e2e.Arts", "write.out"), work("e2e.Arts", "write.out"))
    st = os.stat(f"{ARTS}/e2e.Arts/1.0.0/data.txt")
    check("... data.txt is a 0440 copy, groved's user and nobody's group",
          (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o440, os.getuid(), NOBODY.pw_gid),
          (oct(st.st_mode), st.st_uid, st.st_gid))

    # {artifacts:decompressedPath} likewise
    check("e2e.Arts (nobody) ran an unpacked entry the archive marks executable through "
          "{artifacts:decompressedPath}",
          wait(lambda: work("e2e.Arts", "unz_tool.out")) == "unpacked tool ran\n",
          work("e2e.Arts", "unz_tool.out"))
    check("... and read an unpacked entry",
          wait(lambda: work("e2e.Arts", "unz_data.out")) == "info of e2e.Arts\n",
          work("e2e.Arts", "unz_data.out"))
    for out, where in (("unz_secret.out", "through its {artifacts:decompressedPath}"),
                       ("unz_stored.out", "in the store's unarchived/")):
        text = wait(lambda: work("e2e.Arts", out))
        check(f"... but not e2e.Root's unpacked hidden.txt {where}",
              "refused" in text and "secret of" not in text, text)
    modes = {f: os.stat(f"{UNZ}/e2e.Arts/1.0.0/pack/pack/{f}") for f in ("run.sh", "info.txt")}
    check("... its entries are copies, groved's user and nobody's group, 0550 and 0440",
          [(s.st_mode & 0o7777, s.st_uid, s.st_gid) for s in modes.values()]
          == [(0o550, os.getuid(), NOBODY.pw_gid), (0o440, os.getuid(), NOBODY.pw_gid)],
          {f: (oct(s.st_mode), s.st_uid, s.st_gid) for f, s in modes.items()})
    ust = os.stat(f"{UNZ}/e2e.Root")
    check("e2e.Root's unpacked directory stays groved's alone (0700)",
          ust.st_mode & 0o777 == 0o700, oct(ust.st_mode))
    wst = os.stat(WRITE)
    check("the write directory is traversal-only for others (no read bit)",
          wst.st_mode & 0o007 == 0o001, oct(wst.st_mode))
    rst = os.stat(f"{ARTS}/e2e.Root")
    check("e2e.Root's artifact directory stays groved's alone (0700)",
          rst.st_mode & 0o777 == 0o700, oct(rst.st_mode))
    wk = os.stat(f"{WORKDIR}/e2e.Who")
    check("e2e.Who's work directory is nobody's own, 0700",
          (wk.st_mode & 0o777, wk.st_uid) == (0o700, NOBODY.pw_uid), (oct(wk.st_mode), wk.st_uid))

    # bootstrap
    boot("1.0.0", "echo boot-1 >> {work:path}/steps")
    boot("2.0.0", "echo boot-2 >> {work:path}/steps; exit 100", on_rollback=True)
    boot("3.0.0", "echo boot-3 >> {work:path}/steps; exit 101")
    status, reason = deploy({**BASE, "e2e.Boot": ONE})
    check("e2e.Boot 1.0.0 -> COMPLETED", status == "COMPLETED", (status, reason))
    check("... its bootstrap ran before its install",
          work("e2e.Boot", "steps") == "boot-1\ninstall-1\n", work("e2e.Boot", "steps"))
    status, reason = deploy({**BASE, "e2e.Boot": {"componentVersion": "2.0.0"}})
    check("e2e.Boot 2.0.0, whose bootstrap exits 100 (restart groved) -> COMPLETED, noted",
          status == "COMPLETED" and "exit 100" in reason, (status, reason))
    check("... 2.0.0's bootstrap, then its install",
          work("e2e.Boot", "steps") == "boot-1\ninstall-1\nboot-2\ninstall-2\n", work("e2e.Boot", "steps"))
    status, reason = deploy({**BASE, "e2e.Boot": {"componentVersion": "3.0.0"}})
    check("e2e.Boot 3.0.0, whose bootstrap exits 101 (reboot) -> FAILED, ROLLBACK_COMPLETE",
          status == "FAILED" and "exit 101" in reason and "ROLLBACK_COMPLETE" in reason,
          (status, reason))
    back = wait(lambda: installed().get("e2e.Boot", {}).get("componentVersion") == "2.0.0"
                and state("e2e.Boot") == "RUNNING", 30)
    check("... 2.0.0 runs again", back, installed().get("e2e.Boot"))
    check("... 3.0.0's install never ran; 2.0.0's bootstrap ran again (BootstrapOnRollback), "
          "then its install",
          work("e2e.Boot", "steps")
          == "boot-1\ninstall-1\nboot-2\ninstall-2\nboot-3\nboot-2\ninstall-2\n",
          work("e2e.Boot", "steps"))
    with open(f"{LOCAL}/boot.pid", "w") as f:  # for `restarted`
        f.write(str(pid_in(WORKDIR, "e2e.Boot")))

elif PHASE == "restarted":
    before = int(read(f"{LOCAL}/boot.pid") or 0)
    again = wait(lambda: state("e2e.Boot") == "RUNNING" and pid_in(WORKDIR, "e2e.Boot") != before
                 and alive(pid_in(WORKDIR, "e2e.Boot")), 30)
    check("after kill -9: e2e.Boot 2.0.0 RUNNING again (a new process)", again, installed())
    check("... neither its bootstrap nor its install ran again (journaled)",
          work("e2e.Boot", "steps")
          == "boot-1\ninstall-1\nboot-2\ninstall-2\nboot-3\nboot-2\ninstall-2\n",
          work("e2e.Boot", "steps"))
    check("... e2e.Who runs again as nobody",
          wait(lambda: state("e2e.Who") == "RUNNING", 30)
          and work("e2e.Who", "uid").strip() == str(NOBODY.pw_uid), work("e2e.Who", "uid"))

support.finish()
