"""Post-import hook that lets the stock `mergekit-yaml` run `merge_method: frank_wolfe`.

mergekit 0.1.5 has no plugin discovery, so `mergekit_fw.pth` imports this module at
interpreter start. It must stay import-light (no torch, no mergekit): it only waits for
mergekit's own modules to finish importing, then lets mergekit_fw wrap `run_merge`
(`mergekit.merge`). The wrapper registers `frank_wolfe` with mergekit's method registry for
the duration of a frank_wolfe run only (mergekit_fw/mergekit/method.py, `registered`).

Set MERGEKIT_FW_DISABLE=1 to switch the automatic hook off.
"""

from __future__ import annotations

import os
import sys

# module name -> dotted path of the function to call once that module has executed
_TARGETS = {
    "mergekit.merge": "mergekit_fw.mergekit.errors:patch_run_merge",
}


def _call(target: str) -> None:
    module_name, _, attr = target.partition(":")
    try:
        module = __import__(module_name, fromlist=[attr])
        if getattr(module.__spec__, "_initializing", False) and not hasattr(module, attr):
            return  # our module is mid-import; it installs itself when it finishes
        getattr(module, attr)()
    except Exception as error:  # never break mergekit itself
        import warnings

        warnings.warn(f"mergekit-fw could not install itself ({target}): {error!r}", stacklevel=2)


class _PostImportFinder:
    """Wraps the loader of each target module so our code runs after it executes."""

    def __init__(self) -> None:
        self.pending: dict[str, str] = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.pending:
            return None
        hook = self.pending.pop(fullname)
        if not self.pending and self in sys.meta_path:
            sys.meta_path.remove(self)
        import importlib.util

        # Find the real spec with this finder out of the way.
        saved = list(sys.meta_path)
        sys.meta_path[:] = [f for f in saved if f is not self]
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path[:] = saved
        if spec is None or spec.loader is None:
            return spec
        inner = spec.loader.exec_module

        def exec_module(module):
            inner(module)
            _call(hook)

        spec.loader.exec_module = exec_module
        return spec


def install(force: bool = False) -> None:
    """Arrange for mergekit_fw to hook into mergekit, now or when mergekit is imported."""
    if os.environ.get("MERGEKIT_FW_DISABLE") and not force:
        return
    finder = next((f for f in sys.meta_path if isinstance(f, _PostImportFinder)), None)
    for module_name, hook in _TARGETS.items():
        module = sys.modules.get(module_name)
        if module is None:
            if finder is None:
                finder = _PostImportFinder()
                sys.meta_path.insert(0, finder)
            finder.pending[module_name] = hook
        elif not getattr(getattr(module, "__spec__", None), "_initializing", False):
            _call(hook)  # already imported: hook in now (idempotent)
            if finder is not None:
                finder.pending.pop(module_name, None)
    if finder is not None and not finder.pending and finder in sys.meta_path:
        sys.meta_path.remove(finder)
