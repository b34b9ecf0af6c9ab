"""The search service behind ``keras-dml serve``: an ASGI app (Starlette,
run by uvicorn) with a JSON API and a web page. Needs the ``[serve]`` extra
(``pip install keras_dml[serve]``: starlette, uvicorn, python-multipart).

    app = kd.serving.create_app("runs/x/saved_model", "runs/x/index", threshold=0.8)
    # mount it in a larger ASGI application, or: uvicorn.run(app, host="127.0.0.1")

``app.py``: endpoints, limits and errors; ``batching.py``: the request
batcher; ``page.py``: the page at ``/``; ``fingerprint.py``: which model
made an index.
"""

from keras_dml.serving.fingerprint import (  # noqa: F401
    ModelMismatchError, check_model, model_fingerprint, record_model, recorded_model)


def create_app(model_dir, index_dir, **kwargs):
    """The search service's ASGI app (see ``keras_dml.serving.app.create_app``)."""
    try:
        from keras_dml.serving.app import create_app as _create_app
    except ImportError as error:
        raise ImportError("kd.serving.create_app needs the [serve] extra: pip install "
                          "'keras_dml[serve]' (starlette, uvicorn, python-multipart).") \
            from error
    return _create_app(model_dir, index_dir, **kwargs)


def write_threshold(index_dir, threshold):
    """Save a match threshold with an index (``serve`` then uses it)."""
    from keras_dml.serving.app import write_threshold as _write
    return _write(index_dir, threshold)
