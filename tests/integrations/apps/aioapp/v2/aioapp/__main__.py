import asyncio
import sys

from aiohttp import web

from aioapp import views


async def serve(port: int) -> None:
    app = web.Application()
    app.router.add_get("/{name}", views.greet)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"READY {port}", flush=True)
    await asyncio.Event().wait()  # serve until killed


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
