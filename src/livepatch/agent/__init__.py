"""The in-server agent: control socket, patcher thread, verification, metrics (public: `Agent`)."""

from livepatch.agent.agent import Agent

__all__ = ["Agent"]
