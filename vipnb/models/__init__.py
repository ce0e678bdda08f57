"""Backbones the papers need that timm lacks; importing this registers them in timm
(``timm.create_model("resnest50d_aa")``)."""

from vipnb.models import aa_resnest, scaled  # noqa: F401  (they register themselves)
