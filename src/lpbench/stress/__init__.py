"""`livepatch stress`: apply and revert a patch many times under load and check every reply against the
code version that served it (the hot-patch stress test of Azure SQL, shared/papers/001).

    check.py   what counts as a wrong-version reply and a lost write (the definitions)
    common.py  StressConfig, and the StressTarget/StressClient a server plugs in
    kv.py      kvserver's stress patch and client
    run.py     one run: server, client threads, the patch loop, the final write check
    cli.py     the click command
"""
