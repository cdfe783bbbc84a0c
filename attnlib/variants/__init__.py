"""One module per attention variant; importing this package registers them all in `attnlib.VARIANTS`,
in the order tables list them."""

# isort: off
from . import baseline, sdpa, flash, cudnn, flex, gqa, mla, sliding_window, linear, lsh, kv_heads  # noqa: F401
