from tasb_ray.pipeline.cache import stage_key
from tasb_ray.pipeline.pairs import candidates_key
from tasb_ray.training.config import CandidatesConfig


def test_candidates_key_is_unchanged_while_the_later_options_are_unset():
    # The key of every pairs stage built before positive_grade / max_pairs_per_query existed.
    before = {"sources": ["bm25"], "depth": 100, "negatives_per_query": 16, "max_positives": None, "seed": 0}
    assert candidates_key(CandidatesConfig()) == before
    assert stage_key(candidates_key(CandidatesConfig())) == stage_key(before)
    keyed = candidates_key(CandidatesConfig(positive_grade="max", max_pairs_per_query=64))
    assert keyed == {**before, "positive_grade": "max", "max_pairs_per_query": 64}
