"""Run the geodemo app: `python app.py` (the Hugging Face Space's entry point; `geodemo app` is the same).

Host and port come from Gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; GEODEMO_* variables choose the
checkpoint and folders (see geodemo/ui/settings.py); GEODEMO_THREADS sets the threads of each model call.
"""

from geodemo.ui import launch
from geodemo.ui.serve import build_demo

demo = build_demo()

if __name__ == "__main__":
    launch(demo)
