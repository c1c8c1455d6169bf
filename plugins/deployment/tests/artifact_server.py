#!/usr/bin/python3
"""A small HTTPS file server for the deployment tests' artifacts.

Usage: artifact_server.py DIR CERT KEY PORT_FILE
Serves DIR over TLS (the group PKI's server certificate) on a free port of 127.0.0.1,
which it writes to PORT_FILE once listening. A file whose name contains "slow" is sent
100 bytes every half second, so a test can kill groved in the middle of a download. A
file whose name contains "nolength" is sent without Content-Length (the body ends when
the connection closes), so a client's size limit must hold while the body streams.
"""
import functools
import http.server
import ssl
import sys
import time

ROOT, CERT, KEY, PORT_FILE = sys.argv[1:5]


class Handler(http.server.SimpleHTTPRequestHandler):
    def send_header(self, keyword, value):
        if keyword.lower() == "content-length" and "nolength" in self.path:
            return  # HTTP/1.0: the connection closes after the body
        super().send_header(keyword, value)

    def copyfile(self, source, outputfile):
        if "slow" not in self.path:
            return super().copyfile(source, outputfile)
        while True:
            chunk = source.read(100)
            if not chunk:
                return
            outputfile.write(chunk)
            outputfile.flush()
            time.sleep(0.5)

    def log_message(self, fmt, *args):
        sys.stderr.write("artifact_server: " + (fmt % args) + "\n")


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                         functools.partial(Handler, directory=ROOT))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os  # noqa: E402
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
