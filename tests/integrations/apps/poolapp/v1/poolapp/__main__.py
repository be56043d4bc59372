import socketserver
import sys
from concurrent.futures import ThreadPoolExecutor

import livepatch.integrations
from poolapp import work

livepatch.integrations.install(sys.argv[2], trusted_keys=[sys.argv[3]])  # the one line

POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="work")


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            answer = POOL.submit(work.reply, line.decode().strip()).result()
            self.wfile.write(answer.encode() + b"\n")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main() -> None:
    port = int(sys.argv[1])
    with Server(("127.0.0.1", port), Handler) as server:
        print(f"READY {port}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
