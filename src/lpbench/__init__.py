"""lpbench: measure and draw what clients feel while a server's code is updated.

The pieces, each in its own module:
    workloads     what the clients send (Workload protocol + registry: get, set, mixed)
    codec         the wire codec the driver uses (kvserver.resp when present)
    driver        one load-driver process: many nonblocking connections, open or closed loop
    pool          several driver processes started together, their recordings merged
    recording     every request (start, latency, connection, status) and every reconnect
    stats         the arithmetic: percentiles, throughput bins, windows around updates
    servers       start/stop/populate/restart a server under test (Server protocol + registry)
    agent         talk to the livepatch agent of a running server (apply, revert, history)
    patches       the built-in patches, made at run time from the installed kvserver source
    updates       how an update is triggered (UpdateMethod protocol + registry)
    runner        one run end to end; experiments: sweeps over patch size and state size
    plots         the five figures; report: progress bar and summary table
    cli           `livepatch bench` and `livepatch demo`
"""

from lpbench.recording import Recording
from lpbench.stats import percentile, summarize_latencies, throughput_bins

__all__ = ["Recording", "percentile", "summarize_latencies", "throughput_bins"]
