"""Hooks the jobs of several stages share."""

import dagster as dg

from mlops_assets.lib import io


@dg.success_hook(name="release_memory")
def _release_after_success(_context: dg.HookContext) -> None:
    io.release_memory()


# After every successful step of the jobs that move the most data (lib/io.release_memory).
# Only after success: a failure hook beside it logged a HOOK_SKIPPED event on every step that
# succeeded, and a failed run ends its process anyway.
RELEASE_MEMORY = {_release_after_success}
