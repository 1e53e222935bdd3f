"""tasb-ray: TAS-Balanced dense retriever training, orchestrated with Ray and tracked in MLflow."""

__version__ = "0.1.0"
