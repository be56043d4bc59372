"""A server that starts itself and makes itself live-patchable with one line,
`livepatch.integrations.install(...)`: a threaded line server that computes each reply in a
concurrent.futures thread pool (`python -m poolapp PORT AGENT_SOCKET TRUSTED_KEY`)."""
