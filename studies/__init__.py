"""Studies: the papers' claims measured on real offline data (tables + plots).

    python -m studies.proxy_anchor --output_dir=DIR [--quick]
    python -m studies.log_ratio --output_dir=DIR [--quick]

Each study is a grid of (configuration, seed) runs of ``kd.training.run``;
``studies.common`` holds the grid loop (resumable: a configuration whose row
is in ``DIR/results.json`` is skipped), the mean ± std tables and the plots.
"""
