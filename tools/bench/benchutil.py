"""Helpers shared by the Python benchmarks: reading a child's output with a deadline,
stopping it cleanly, the default image's PKI and polling groved's status."""

import os
import select
import signal
import subprocess
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class line_reader:
    """Reads lines from a pipe with a deadline. select() on the raw descriptor plus
    os.read, because a buffered readline() may hold lines select() cannot see."""

    def __init__(self, f):
        self.fd = f.fileno()
        self.buf = b""

    def readline(self, deadline):
        """The next line (bytes); b"" at EOF; None on timeout."""
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                line, self.buf = self.buf, b""
                return line
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"


def stop(proc):
    """SIGINT, then SIGKILL if it does not exit within 10 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ensure_default_pki(write_dir):
    """Makes the local group PKI the default image's message_manager needs
    (<write_dir>/plugins/message_manager/pki), as tools/run does; nothing if it exists."""
    pki = os.path.join(write_dir, "plugins", "message_manager", "pki")
    res = subprocess.run([os.path.join(REPO, "tools", "grove-certs"), "ensure-default", pki],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=60)
    if res.returncode != 0:
        raise RuntimeError("grove-certs ensure-default %s failed (%d): %s"
                           % (pki, res.returncode, res.stderr.decode(errors="replace").strip()))
    return pki


def task_files(pid, *names):
    """(tid, [text of /proc/PID/task/TID/<name> for each name]) for every thread of `pid`;
    a thread that ends meanwhile (or hides a file) is left out; nothing once `pid` is gone."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return
    for tid in tids:
        texts = []
        try:
            for name in names:
                with open("/proc/%d/task/%s/%s" % (pid, tid, name)) as f:
                    texts.append(f.read())
        except OSError:
            continue
        yield int(tid), texts


def children(pid):
    """Pids of the direct children of `pid` (all its threads'), [] once it is gone."""
    kids = []
    for _, (text,) in task_files(pid, "children"):
        kids.extend(int(x) for x in text.split())
    return sorted(set(kids))


def process_name(pid):
    """/proc/PID/comm, or None once the process is gone."""
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def wait_gone(pids, timeout_s=10.0):
    """Waits until none of `pids` is alive any more (a stopped groved takes its broker
    down; the next start needs its port). Raises if one outlives the deadline."""
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        while True:
            try:
                with open("/proc/%d/stat" % pid) as f:
                    state = f.read().rsplit(")", 1)[-1].split()[0]
            except OSError:
                break  # gone
            if state == "Z":
                break  # exited, only not reaped yet
            if time.monotonic() > deadline:
                raise RuntimeError("process %d still running %.0f s after groved stopped"
                                   % (pid, timeout_s))
            time.sleep(0.02)


def grove_status(grovectl, socket_path):
    """`grovectl status` of the groved behind `socket_path` as text; "" if it cannot answer."""
    env = dict(os.environ, GROVE_CONTROL_SOCKET=socket_path)
    try:
        res = subprocess.run([grovectl, "--timeout", "5", "status"], env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=10)
    except subprocess.TimeoutExpired:
        return ""
    return res.stdout.decode(errors="replace") if res.returncode == 0 else ""


def wait_status(proc, grovectl, socket_path, needles, timeout_s=20.0):
    """Polls `grovectl status` until every string in `needles` appears in it; returns the
    status text. Raises if groved exits or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    text = ""
    while True:
        if proc.poll() is not None:
            raise RuntimeError("groved exited (%s) while waiting for its status" % proc.returncode)
        text = grove_status(grovectl, socket_path)
        if all(n in text for n in needles):
            return text
        if time.monotonic() > deadline:
            missing = [n for n in needles if n not in text]
            raise RuntimeError("groved status lacks %s after %.0f s; last status:\n%s"
                               % (missing, timeout_s, text.strip()))
        time.sleep(0.1)


def drain(fd):
    """Reads and discards until EOF."""
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass


def wait_ready(proc, timeout_s=10.0, keep_draining=True):
    """Reads groved's stderr until its 'ready:' line. Returns (line, perf_counter_ns when
    it was read). With keep_draining, a thread then discards the rest of stderr (groved
    logs on, e.g. its broker's lines; a full pipe would block it)."""
    deadline = time.monotonic() + timeout_s
    reader = line_reader(proc.stderr)
    seen = []
    while True:
        line = reader.readline(deadline)
        if line is None:
            raise RuntimeError("groved: no 'ready:' line within %.0f s: %s"
                               % (timeout_s, "".join(seen[-5:])))
        if not line:
            raise RuntimeError("groved exited (%s) before 'ready:': %s"
                               % (proc.wait(), "".join(seen[-5:])))
        text = line.decode(errors="replace")
        seen.append(text)
        if "ready:" in text:
            at = time.perf_counter_ns()
            if keep_draining:
                threading.Thread(target=drain, args=(proc.stderr.fileno(),),
                                 daemon=True).start()
            return text.strip(), at


def start_deployment_api(build, work, key, secret, entry="", config=""):
    """groved (of `build`) running the deployment plugin alone, its API over TLS on a free
    port with a fresh PKI (work/pki) and one credential (`key`, `secret`, no rate limit);
    `entry` and `config` add lines to the plugin's profile entry and to its config.
    Returns (proc, port, ca file, write dir) once the API listens."""
    from device_bench import free_port  # device_bench imports this module
    pki = os.path.join(work, "pki")
    env = dict(os.environ, GROVE_CA_DIR=os.path.join(work, "ca"))
    certs = os.path.join(REPO, "tools", "grove-certs")
    for cmd in (["init", pki, "--days", "2"],
                ["server", pki, "--host", "localhost", "--ip", "127.0.0.1", "--days", "2"]):
        subprocess.run([certs] + cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    ca, crt, crt_key = (os.path.join(pki, n) for n in ("ca.crt", "server.crt", "server.key"))
    port = free_port()
    profile = os.path.join(work, "grove.yaml")
    with open(profile, "w") as f:
        f.write("plugins:\n  - name: deployment\n" + entry + "    config:\n" + config
                + "      api: {port: %d, cert_file: %s, key_file: %s}\n"
                "      credentials: [{access_key_id: %s, secret_access_key: %s,"
                " requests_per_second: 0}]\n" % (port, crt, crt_key, key, secret))
    write_dir = os.path.join(work, "var")
    with open(os.path.join(work, "groved.log"), "wb") as log:
        proc = subprocess.Popen([os.path.join(build, "bin", "groved"), "--config", profile,
                                 "--write-dir", write_dir],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_status(proc, os.path.join(build, "bin", "grovectl"),
                    os.path.join(write_dir, "run", "control.sock"),
                    ["deployment.api: https://127.0.0.1:%d" % port])
    except BaseException:
        stop(proc)
        raise
    return proc, port, ca, write_dir
