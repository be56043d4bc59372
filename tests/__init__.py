"""livepatch's tests, one package per area (agent, runtime, patch, kvserver, sqlserver, mve, ...).

Shared helpers have one home, tests/support.py: `free_port`, `require_tool`, and ServerProcess, the one
way a test runs a server process (built on lpbench's ManagedProcess, which the harness uses too). Area
helpers live beside their tests (tests/agent/agent_helpers.py, tests/runtime/runtime_helpers.py, ...)
and are imported by their package path: `from tests.agent.agent_helpers import cli`.
"""
