"""The pairs a pair loss compares: within the batch, or against references.

pytorch-metric-learning's pair losses take optional reference embeddings and
labels (``ref_emb``, ``ref_labels``): the anchors are the batch, the pairs
(i, j) run over the references j instead of over the batch. Cross-batch
memory (``keras_dml.layers.CrossBatchMemory``) is such a reference set,
with two extras: slots not yet filled, and each example's own copy, which
must not count as its positive. ``References`` carries the three, and
``pair_masks`` turns labels and references into the positive / negative
masks that every pair loss (contrastive, multi-similarity, triplet,
circle) takes; each loss then states only its formula.
"""

from typing import Any, NamedTuple, Optional, Tuple

from keras import ops as kops

from keras_dml import _backend, ops
from keras_dml._types import Tensor


class References(NamedTuple):
    """The references a batch of B anchors is compared with.

    Attributes:
      embeddings: [M, D] reference embeddings (PML ``ref_emb``); no gradient
        is implied either way, the caller decides (memory: stopped).
      labels: [M] int class ids (PML ``ref_labels``).
      valid: optional [M] bool, the slots that hold an example (an unfilled
        memory slot pairs with nothing). None: all.
      self_index: optional [B] int, the reference column that holds anchor
        i's own copy (memory: where the batch was enqueued); that pair is
        removed from the positives, as PML's ``remove_self_comparisons``.
        None: no anchor is among the references.
    """
    embeddings: Any
    labels: Any
    valid: Optional[Any] = None
    self_index: Optional[Any] = None


def check_references(references: Optional[References], embeddings: Tensor) -> Optional[References]:
    """Validated ``References`` (int32 labels/indices) for ``embeddings`` [B, D]."""
    if references is None:
        return None
    if not isinstance(references, References):
        raise TypeError(f"references must be a keras_dml.losses.References; "
                        f"got {type(references).__name__}.")
    ref = kops.convert_to_tensor(references.embeddings)
    if len(ref.shape) != 2:
        raise ValueError(f"reference embeddings must be [M, D]; got {ref.shape}.")
    dim, ref_dim = embeddings.shape[-1], ref.shape[-1]
    if dim is not None and ref_dim is not None and dim != ref_dim:
        raise ValueError(f"reference embeddings have dimension {ref_dim}, "
                         f"the batch {dim}.")
    labels = ops.flatten_labels(references.labels, "reference labels")
    if labels.shape[0] is not None and ref.shape[0] is not None \
            and labels.shape[0] != ref.shape[0]:
        raise ValueError(f"{labels.shape[0]} reference labels for "
                         f"{ref.shape[0]} reference embeddings.")
    _backend.check_finite(ref, "reference embeddings")
    valid = (None if references.valid is None
             else kops.cast(references.valid, "bool"))
    self_index = (None if references.self_index is None
                  else kops.cast(references.self_index, "int32"))
    return References(kops.cast(ref, embeddings.dtype), labels, valid, self_index)


def pair_masks(labels: Tensor, references: Optional[References] = None,
               include_self: bool = False) -> Tuple[Tensor, Tensor]:
    """Boolean (positive, negative) masks of the pairs, [B, N].

    Without references: the batch against itself, N = B, positives exclude
    i == j (``keras_dml.ops.label_masks``). With references: N = M, both
    masks limited to the valid slots, and the positives exclude each
    anchor's own copy unless ``include_self`` (PML's miners run before the
    self-comparisons are removed, so they see it).
    """
    if references is None:
        return ops.label_masks(labels)
    positive, negative = ops.label_masks(labels, references.labels)
    if references.valid is not None:
        valid = kops.expand_dims(references.valid, 0)
        positive = kops.logical_and(positive, valid)
        negative = kops.logical_and(negative, valid)
    if references.self_index is not None and not include_self:
        columns = kops.arange(kops.shape(references.labels)[0], dtype="int32")
        own = kops.equal(kops.expand_dims(references.self_index, 1),
                         kops.expand_dims(columns, 0))
        positive = kops.logical_and(positive, kops.logical_not(own))
    return positive, negative


def pair_similarities(embeddings: Tensor, references: Optional[References]) -> Tensor:
    """Cosine similarities s[i, j] = <x_i, r_j> / (|x_i| |r_j|) of the anchors
    with what they are compared with, [B, N]: the references' rows (N = M),
    or the batch's own (N = B) without references."""
    return ops.cosine_similarity(
        embeddings, None if references is None else references.embeddings)


def pair_distances(embeddings: Tensor, references: Optional[References]) -> Tensor:
    """Euclidean distances d[i, j] = |x_i/|x_i| - r_j/|r_j|| of the normalised
    anchors and comparands, [B, N] (as ``pair_similarities``)."""
    ref = None if references is None else ops.l2_normalize(references.embeddings)
    return ops.pairwise_distances(ops.l2_normalize(embeddings), ref)


def too_few_pairs(positive: Tensor, negative: Tensor) -> Tensor:
    """PML ``GenericPairLoss`` returns 0 when each index list (positive
    pairs, negative pairs) has at most one element; True there."""
    num_pos = kops.sum(kops.cast(positive, "int32"))
    num_neg = kops.sum(kops.cast(negative, "int32"))
    return kops.logical_and(num_pos <= 1, num_neg <= 1)
