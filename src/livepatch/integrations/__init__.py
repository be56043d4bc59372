"""Zero-code integration: live patching for servers built on the standard library's frameworks.

`livepatch run` (cli/run.py, runner.py) and `install()` patch socketserver, http.server, asyncio and
concurrent.futures so that an unmodified server gets managed threads, quiescence points between requests,
and idle waits that never hold a patch (docs/integrations.md). `import livepatch` does not import this
package; importing this package does not patch anything: `install()` does.
"""

from __future__ import annotations

from livepatch.integrations.install import FRAMEWORKS, install, install_frameworks
from livepatch.integrations.refused import IntegrationRefused

__all__ = ["FRAMEWORKS", "IntegrationRefused", "install", "install_frameworks"]
