"""A forking socketserver server: livepatch run must refuse it (`python forking_server.py PORT`)."""

import socketserver
import sys


class Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line)


with socketserver.ForkingTCPServer(("127.0.0.1", int(sys.argv[1])), Echo) as server:
    print("READY", flush=True)
    server.serve_forever()
