"""spark_clrs: SPARK factor-scoped LLM architecture search inside DeepMind's CLRS."""

__version__ = "0.1.0"
