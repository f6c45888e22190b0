"""/evaluate_zip from gradio_client: a real 4-location zip in, metrics out; zip-slip is one sentence."""

import zipfile

import pytest
from gradio_client import Client, handle_file
from test_archive import sample_zip

pytest_plugins = ["app_fixtures"]


def test_evaluate_zip_from_python(app_server, sample_dir, tmp_path):
    from geodemo.checkpoint import DEFAULT_CHECKPOINT

    client = Client(app_server.url, verbose=False)
    archive = sample_zip(sample_dir, tmp_path / "four.zip", n=4)
    result = client.predict(str(DEFAULT_CHECKPOINT), handle_file(str(archive)), 0, api_name="/evaluate_zip")
    assert result["count"] == 4 and 0 < result["mean_km"] < 500 and result["median_km"] > 0
    uploads = app_server.settings.uploads_dir
    assert result["dataset"].startswith(str(uploads)) and (uploads / result["dataset"]).is_dir()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("data.csv", "uuid,latitude,longitude\n")
        zf.writestr("../../outside.txt", "x")
    with pytest.raises(Exception, match="zip-slip"):
        client.predict(str(DEFAULT_CHECKPOINT), handle_file(str(evil)), 0, api_name="/evaluate_zip")
    assert not (uploads.parent / "outside.txt").exists() and not (uploads / "outside.txt").exists()
