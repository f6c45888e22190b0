"""The Gradio app (the only part of geodemo that imports gradio)."""

from geodemo.ui.app import build_app, launch, launch_kwargs

__all__ = ["build_app", "launch", "launch_kwargs"]
