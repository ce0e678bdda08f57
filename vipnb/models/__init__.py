"""Backbones the papers need that timm lacks; importing this registers them in timm
(``timm.create_model("resnest50d_aa")``)."""

from vipnb.models import aa_resnest  # noqa: F401  (registers the resnest*_aa models)
