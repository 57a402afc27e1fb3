"""Frank-Wolfe Merging (arXiv 2503.12649) as a mergekit merge method, and a Python API.

Importing this package registers `merge_method: frank_wolfe` with mergekit (now, or when
mergekit is imported). After `pip install`, a `.pth` hook does the same for the stock
`mergekit-yaml`, so no import is needed there. `frank_wolfe_merge` (api.py) merges any
torch module; it is imported on first use, so `import mergekit_fw` stays light.
"""

__version__ = "0.1.0"
__all__ = ["frank_wolfe_merge"]

import _mergekit_fw_hook

_mergekit_fw_hook.install(force=True)


def __getattr__(name: str):
    if name == "frank_wolfe_merge":
        from mergekit_fw.api import frank_wolfe_merge

        return frank_wolfe_merge
    raise AttributeError(f"module 'mergekit_fw' has no attribute {name!r}")
