"""Backbones the papers need that timm lacks; importing this registers them in timm
(``timm.create_model("resnest50d_aa")``, ``timm.create_model("dsk_resnext50_32x4d")``)."""

from vipnb.models import aa_resnest, dsk, scaled  # noqa: F401  (they register themselves)
