"""`/load_folder` through gradio_client walks a folder most-uncertain first and shows the number."""

import re

from gradio_client import Client

from geodemo.ui.settings import EXAMPLES_DIR

pytest_plugins = ["app_fixtures"]


def test_load_folder_in_uncertainty_order(app_server):
    client = Client(app_server.url, verbose=False)
    plain = client.predict(str(EXAMPLES_DIR), False, api_name="/load_folder")[-1]
    assert "expected error" not in plain
    first = client.predict(str(EXAMPLES_DIR), True, api_name="/load_folder")[-1]
    found = re.search(r"expected error \*\*(\d+) (km|nats)", first)
    assert found and "Location **1 / 3**" in first
