"""The Python twin of tests/escape_function.cpp (runtime: python3, GreengrassContainer,
inputPayloadEncodingType: binary): each payload "<attempt> [argument]" tries one way out
of the sandbox and answers "denied: <why>" when it failed, "REACHED: <what>" when it got
through. Attempts the seccomp filter stops never answer: the runtime names the call."""

import ctypes
import errno
import os
import signal
import socket


def _denied(what, e):
    return "denied: %s: %s" % (what, os.strerror(e.errno))


def _read(path):
    try:
        with open(path, "rb") as f:
            return "REACHED: read %d bytes of %s" % (len(f.read(256)), path)
    except OSError as e:
        return _denied("open " + path, e)


def _write(path):
    try:
        with open(path, "wb") as f:
            f.write(b"x")
        return "REACHED: wrote " + path
    except OSError as e:
        return _denied("open " + path + " for writing", e)


def _list(path):
    try:
        os.listdir(path)
        return "REACHED: opened " + path
    except OSError as e:
        return _denied("open " + path, e)


def _connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return "REACHED: connected to " + path
    except OSError as e:
        return _denied("connect " + path, e)
    finally:
        s.close()


def _setuid(_):
    try:
        os.setuid(0)
        return "REACHED: uid 0"
    except OSError as e:
        return _denied("setuid(0)", e)


def _libc_call(name, *args):
    # The call itself, through libc: seccomp ends the instance before it returns.
    libc = ctypes.CDLL(None, use_errno=True)
    rc = getattr(libc, name)(*args)
    if rc != 0:
        return "denied: %s: %s" % (name, os.strerror(ctypes.get_errno()))
    return "REACHED: " + name


def _ptrace(pid):
    return _libc_call("ptrace", ctypes.c_long(16), ctypes.c_long(int(pid)), None, None)


def _mount(_):
    return _libc_call("mount", b"none", b"/tmp", b"tmpfs", ctypes.c_ulong(0), None)


def _whoami(_):
    return "uid=%d gid=%d pid=%d host=%s" % (os.getuid(), os.getgid(), os.getpid(),
                                             socket.gethostname())


def _fork_bomb(_):
    # Children that stay (paused) until the pids limit refuses the next fork.
    for n in range(100000):
        try:
            pid = os.fork()
        except OSError as e:
            return "stopped after %d forks: %s" % (n, os.strerror(e.errno))
        if pid == 0:
            while True:
                signal.pause()
    return "REACHED: 100000 forks"


def _memory_hog(_):
    # Written, not only allocated (a zeroed bytearray may stay unbacked), until the
    # cgroup's OOM killer ends the instance.
    kept = []
    for mib in range(1 << 16):
        kept.append(bytes([mib & 0xff]) * (1 << 20))
    return "REACHED: 64 GiB"


_ATTEMPTS = {"read": _read, "write": _write, "list": _list, "connect": _connect,
             "setuid": _setuid, "ptrace": _ptrace, "mount": _mount, "whoami": _whoami,
             "fork_bomb": _fork_bomb, "memory_hog": _memory_hog}


def attempt(event, context):
    what, _, arg = bytes(event).decode().partition(" ")
    f = _ATTEMPTS.get(what)
    return (f(arg.strip()) if f else "unknown attempt '%s'" % what).encode()
