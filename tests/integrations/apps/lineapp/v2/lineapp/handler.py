import socketserver

from lineapp import replies


class LineHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            line = self.rfile.readline(65536)
            if not line:
                return
            self.wfile.write(replies.reply(line.decode().strip()).encode() + b"\n")
