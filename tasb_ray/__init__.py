"""tasb-ray: TAS-Balanced dense retriever training, orchestrated with Ray and tracked in MLflow."""

import logging

__version__ = "0.1.0"

# faiss logs its CPU-feature probing at INFO when it is imported; a command that configured logging first would
# print nine lines of it before its own output (and a one-line error would no longer be one line).
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
