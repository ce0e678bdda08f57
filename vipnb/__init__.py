"""vipnb: a notebook-first, reproducible companion to four papers on data-efficient image
classification. Everything that computes lives here; the notebooks tell the story."""

import vipnb.models  # noqa: F401  (registers vipnb's models in timm)
from vipnb.errors import VipnbError

__version__ = "0.1.0"

__all__ = ["VipnbError", "__version__"]
