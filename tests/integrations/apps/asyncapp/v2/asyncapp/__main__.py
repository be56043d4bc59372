import asyncio
import sys

from asyncapp import replies


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    while line := await reader.readline():
        words = line.decode().split()
        if words[:1] == ["pool"]:
            answer = await loop.run_in_executor(None, replies.reply, " ".join(words[1:]))
        else:
            answer = replies.reply(" ".join(words))
        writer.write(answer.encode() + b"\n")
        await writer.drain()
    writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"READY {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
