"""Column names shared by every table in the project.

They are ir-measures' names, so qrels and run DataFrames go to it unchanged.
All ids are strings.
"""

QUERY_ID = "query_id"
DOC_ID = "doc_id"
TEXT = "text"
RELEVANCE = "relevance"
SCORE = "score"

CORPUS_COLUMNS = (DOC_ID, TEXT)
QUERIES_COLUMNS = (QUERY_ID, TEXT)
QRELS_COLUMNS = (QUERY_ID, DOC_ID, RELEVANCE)
RUN_COLUMNS = (QUERY_ID, DOC_ID, SCORE)
# Training pairs / teacher scores, as the core issue defines them (one row per (query, pos, neg)).
PAIRS_COLUMNS = ("qid", "pos_pid", "neg_pid", "pos_score", "neg_score")
