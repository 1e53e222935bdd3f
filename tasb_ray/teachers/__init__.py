"""Teachers for Margin-MSE distillation: cross-encoder, ColBERT, bi-encoder, BM25, ensembles, score files.

The model-backed classes live in their own modules (imported on demand, so that using a score file
or BM25 does not load torch):

    tasb_ray.teachers.cross_encoder.CrossEncoderTeacher   kind "cross-encoder"
    tasb_ray.teachers.colbert.ColBERTTeacher              kind "colbert"
    tasb_ray.teachers.bi_encoder.BiEncoderTeacher         kind "bi-encoder"
    tasb_ray.teachers.bm25.BM25Teacher                    kind "bm25"
    tasb_ray.teachers.ensemble.EnsembleTeacher            kind "ensemble"
    tasb_ray.teachers.precomputed.FileTeacher                    kind "file"
"""

from tasb_ray.teachers.base import Teacher, cross_product_frame
from tasb_ray.teachers.config import KINDS, TeacherConfig
from tasb_ray.teachers.factory import TeacherActor, build_teacher, build_teacher_from_paths

__all__ = ["KINDS", "Teacher", "TeacherActor", "TeacherConfig", "build_teacher", "build_teacher_from_paths",
           "cross_product_frame"]
