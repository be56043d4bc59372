"""An asyncio echo server whose connection handler is itself the code a patch changes
(`python -m coroapp PORT`)."""
