from aiohttp import web

from aioapp import texts


async def greet(request: web.Request) -> web.Response:
    return web.Response(text=texts.greeting(request.match_info["name"]))
