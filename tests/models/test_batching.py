"""Length-sorted batches: every index once, longest first, stable among equal lengths."""

import numpy as np

from tasb_ray.models.batching import length_sorted_batches


def test_length_sorted_batches():
    lengths = [3, 9, 1, 9, 5, 3, 7]
    batches = list(length_sorted_batches(lengths, 3))
    assert [len(b) for b in batches] == [3, 3, 1]
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert flat.tolist()[:2] == [1, 3] and flat.tolist()[4:6] == [0, 5]   # ties keep input order
    assert list(length_sorted_batches([], 4)) == []
