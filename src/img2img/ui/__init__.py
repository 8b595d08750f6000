"""The browser UI (Gradio). Served by `img2img serve` at /, or inline in a notebook with launch().

Importing this package imports nothing heavy; gradio loads when the UI is built.
"""

from __future__ import annotations


def launch(model: str | list[str] | None = None, *, device: str | None = None, dtype: str | None = None,
           history_dir: str | None = None, **launch_kwargs):
    """Run the UI in this process (inline in Jupyter/Colab): `img2img.ui.launch(model="sd-turbo")`.

    It uses its own job queue and the same history folder as `img2img serve`. Extra keyword arguments go to
    gradio's Blocks.launch (server_port, share, ...).
    """
    from ..history import History
    from ..server.config import ServerConfig
    from ..server.service import Service
    from .blocks import build_ui, launch_options

    models = [model] if isinstance(model, str) else list(model or [])
    service = Service(ServerConfig(models=models, device=device, dtype=dtype).validate())
    history = History(history_dir)
    blocks = build_ui(service, history)
    options = launch_options(history)
    options.update(launch_kwargs)
    blocks.launch(**options)
    return blocks  # blocks.close() stops it
