"""Evaluation: Hamming retrieval and top-k precision (`retrieval`)."""

from dtr.evaluate.retrieval import (class_ids_to_bits, hamming_distances, hamming_topk, pack_bits,
                                    precision_at_k, precision_at_k_per_query, unpack_bits)

__all__ = [
    'class_ids_to_bits', 'hamming_distances', 'hamming_topk', 'pack_bits', 'precision_at_k',
    'precision_at_k_per_query', 'unpack_bits',
]
