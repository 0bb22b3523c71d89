"""The live P0 patching panel (``circuits.explore``): an anywidget over ``PatchSession``."""

from circuits.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "explore": "widget",
        "ExplorePanel": "widget",
        "PatchSession": "session",
        "HeadPattern": "session",
    },
)
