"""An asyncio line server, as a third party writes it: no livepatch in it (`python -m asyncapp PORT`).

A line `NAME` is answered on the event loop; a line `pool NAME` in the loop's default thread pool."""
