"""Progress bars that suit where the code runs: widgets in JupyterLab, text in a terminal and
under `vipnb run` (papermill streams a cell's text output to the terminal, not widgets)."""

from __future__ import annotations

import os
import sys

#: Set by `vipnb run` for the kernels it starts: papermill shows their text, not widgets.
TEXT_PROGRESS_ENV_VAR = "VIPNB_TEXT_PROGRESS"


def progress_bar(iterable=None, **options):
    """A tqdm bar over `iterable` (options as tqdm's); text bars go to stdout."""
    if _in_jupyter() and TEXT_PROGRESS_ENV_VAR not in os.environ:
        from tqdm.notebook import tqdm

        options.pop("file", None)
        options.pop("ncols", None)
        return tqdm(iterable, **options)
    from tqdm import tqdm

    return tqdm(iterable, **{"file": sys.stdout, "ascii": True, **options})


def _in_jupyter() -> bool:
    shell = sys.modules.get("IPython")
    ipython = shell.get_ipython() if shell and hasattr(shell, "get_ipython") else None
    return type(ipython).__name__ == "ZMQInteractiveShell"
