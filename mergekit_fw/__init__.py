"""Frank-Wolfe Merging (arXiv 2503.12649) as a mergekit merge method.

Importing this package registers `merge_method: frank_wolfe` with mergekit (now, or when
mergekit is imported). After `pip install`, a `.pth` hook does the same for the stock
`mergekit-yaml`, so no import is needed there.
"""

__version__ = "0.1.0"

import _mergekit_fw_hook

_mergekit_fw_hook.install(force=True)
