import socketserver
import sys

from lineapp.handler import LineHandler


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main() -> None:
    port = int(sys.argv[1])
    with Server(("127.0.0.1", port), LineHandler) as server:
        print(f"READY {port}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
