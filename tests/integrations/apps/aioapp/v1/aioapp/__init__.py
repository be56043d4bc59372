"""An aiohttp app, as a third party writes it: no livepatch in it (`python -m aioapp PORT`)."""
