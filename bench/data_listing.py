"""How long kd.data.load_image_folder takes to list a large folder tree.

Creates N empty ``.jpg`` files (default 100,000) in C class folders (default
1,000; a tenth of them inside one sub-folder level, plus a few hidden and
non-image files) in a temporary directory, then times, each best of 3
(the page cache is warm after the first):

  list       kd.data.folders.list_image_folder (os.scandir, no stat per file)
  load       kd.data.load_image_folder: listing + the class-disjoint split
             + the tf.data-ready Split objects (no image is decoded)
  os.walk    a plain os.walk + extension filter, for comparison

    python bench/data_listing.py                 # 100k files
    python bench/data_listing.py --files 20000 --classes 200
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_tree(root, files, classes):
    per = files // classes
    for c in range(classes):
        d = os.path.join(root, f"class_{c:04d}")
        sub = os.path.join(d, "more")
        os.makedirs(sub)
        for i in range(per):
            where = sub if i % 10 == 0 else d
            open(os.path.join(where, f"{i:05d}.jpg"), "wb").close()
        if c % 100 == 0:
            open(os.path.join(d, ".DS_Store"), "wb").close()
            open(os.path.join(d, "notes.txt"), "wb").close()
    return per * classes


def timed(fn, repeats=3):
    best = float("inf")
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--classes", type=int, default=1000)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras_dml as kd
    from keras_dml.data import folders
    root = tempfile.mkdtemp(prefix="kd_listing_")
    try:
        t = time.perf_counter()
        n = make_tree(root, args.files, args.classes)
        made = time.perf_counter() - t
        rows = []
        s, tree = timed(lambda: folders.list_image_folder(root))
        rows.append(("list (os.scandir)", s, sum(map(len, tree["all"].values()))))
        s, data = timed(lambda: kd.data.load_image_folder(root))
        rows.append(("load_image_folder", s, len(data.train) + len(data.test)))

        def walk():
            count = 0
            for _, _, names in os.walk(root):
                count += sum(os.path.splitext(x)[1].lower() in folders.IMAGE_EXTENSIONS
                             for x in names)
            return count
        s, count = timed(walk)
        rows.append(("os.walk + filter", s, count))
        print(f"{n:,} files in {args.classes:,} class folders (created in {made:.1f} s); "
              "best of 3:")
        print(f"{'what':<20} {'seconds':>8} {'files/s':>12} {'found':>8}")
        for what, sec, found in rows:
            print(f"{what:<20} {sec:>8.2f} {found / sec:>12,.0f} {found:>8,}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
