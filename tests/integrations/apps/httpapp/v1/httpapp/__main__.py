import sys
from http.server import ThreadingHTTPServer

from httpapp.handler import Handler


def main() -> None:
    port = int(sys.argv[1])
    with ThreadingHTTPServer(("127.0.0.1", port), Handler) as server:
        print(f"READY {port}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
