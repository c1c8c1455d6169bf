"""free_port(): a loopback TCP port nobody uses right now, for a test's server.

Chosen at random below the kernel's ephemeral range (ip_local_port_range) and bound once
without SO_REUSEADDR to see that it is free. A port the kernel hands out (bind to 0) is
one it may also give any client's outgoing connection while the test runs, and the
server's later bind then fails (EADDRINUSE): with many tests running at once that
happened. Run as a script it prints one port.
"""

import random
import socket


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    low = _ephemeral_low()
    if low > 12000:
        for _ in range(200):
            port = random.randrange(10000, low)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:  # no room below the range: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    print(free_port())
