"""The model zoo: pinned downloads, conversion to ``HookedTransformer``, and ``load_model``."""

from circuits.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DEFAULT_MODEL": "pins",
        "ZOO": "pins",
        "list_zoo": "pins",
        "ZooModel": "model",
        "load_model": "load",
        "resolve_model": "names",
        "tiny_config": "tiny",
        "tiny_model": "tiny",
        "ByteTokenizer": "tokenizers",
    },
)
