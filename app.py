"""Run the geodemo app: `python app.py`.

Host and port come from Gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (so it runs unchanged as a
Hugging Face Space); GEODEMO_* variables choose the checkpoint and folders (see geodemo/ui/settings.py).
"""

from geodemo.ui import build_app, launch

demo = build_app()

if __name__ == "__main__":
    launch(demo)
