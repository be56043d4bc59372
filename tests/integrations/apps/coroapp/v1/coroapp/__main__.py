import asyncio
import sys

from coroapp import handlers


async def serve(port: int) -> None:
    server = await asyncio.start_server(handlers.handle, "127.0.0.1", port)
    print(f"READY {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
