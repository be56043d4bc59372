"""The naive instrumentation of a keep-alive HTTP server (what NOT to do; docs/runtime.md recipe): the
connection thread is managed and passes a quiescence point per request, but it waits for the next
request of an idle keep-alive connection while active, so a global patch can never park it.

Run: python naive_keepalive_server.py HTTP_PORT AGENT_SOCKET TRUSTED_KEY.pub
"""

import http.server
import signal
import sys
import threading

import livepatch


def greeting(name: str) -> str:
    return f"hello {name}"


class NaiveHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60

    def handle(self) -> None:
        with livepatch.managed_thread(role="http-connection"):
            self.close_connection = False
            while not self.close_connection:
                livepatch.quiescence_point()
                self.handle_one_request()  # blocks in readline() while the connection is idle

    def do_GET(self) -> None:
        body = greeting(self.path.lstrip("/")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    http_port, agent_socket, trusted_key = sys.argv[1:4]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(http_port)), NaiveHandler)
    agent = livepatch.Agent(agent_socket, trusted_keys=[trusted_key])
    agent.start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("READY", flush=True)
    stop.wait()
    server.shutdown()
    agent.stop()


if __name__ == "__main__":
    main()
