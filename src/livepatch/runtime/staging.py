"""Staging: turn a PatchSpec into ready-to-swap code, before anything pauses (contract; to be implemented).

CONTRACT (used by runtime.patcher; implemented here):

    stage(spec: PatchSpec) -> StagedPatch
        Runs on the patcher thread with nothing paused. Compiles every module's new source, resolves every
        live target through module and class namespaces (no heap walk), verifies each live code object's
        fingerprint against `old_fingerprint` and prepares everything the swap needs. Raises
        livepatch.errors.PatchRefused (naming the first problem and how to fix it) and changes nothing
        when anything does not fit.

    class StagedPatch:
        patch_id: str
        replaced_codes: frozenset[CodeType]   # live code objects that stop being current (activeness check)
        function_count: int                   # functions swapped (benchmarks: swap time vs patch size)
        source_bytes: int                     # bytes of new source involved
        def swap_in(self) -> None             # direct swap; all or nothing; O(number of targets)
        def swap_out(self) -> None            # exact inverse: restores the very same previous objects
        def begin_dispatch(self, use_new: Callable[[], bool],
                           on_error: Callable[[BaseException], None] | None = None) -> None
            # every target now calls the new implementation when use_new() is true for the calling thread
            # and the old one otherwise; on_error (if given) sees each exception escaping the new code.
        def end_dispatch(self, keep_new: bool) -> None
            # remove the dispatchers, leaving the new code (keep_new) or exactly the old code in place.
        def reversed(self) -> StagedPatch     # the revert of this patch, to go through the same quiescence
"""
