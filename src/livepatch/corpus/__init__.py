"""`livepatch corpus`: how much of a real git history the differ can turn into live patches.

Theory of operation. The history is the first-parent chain of a revision range (what a release branch
ships, one step per merged change). For each commit, `history` lists the files it changes against its
first parent; a commit is examined only when it changes the package's code (a `.py` file below the
package directory that is not a test module, `history.is_test_module`). Both versions of the package are
materialised with `git archive` into temporary directories (never the user's checkout; bare repositories
work), read with the differ's own package reader, and diffed through the differ's public entry point
(`livepatch.patch.package.build_patch`, what `livepatch diff` calls) in a forked child process with a
time and an address-space limit (`classify`). Each commit gets one outcome (`classify.Outcome`), and
`summary` turns the outcomes into the figures docs/patchability.md reports.

The corpus never changes what the differ decides: it only measures it.
"""
