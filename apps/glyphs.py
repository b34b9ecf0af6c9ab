"""``python -m apps.glyphs``: the glyph benchmark, as ``keras-dml glyphs`` (``--help``: flags)."""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
