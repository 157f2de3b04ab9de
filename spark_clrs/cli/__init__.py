"""Command-line scaffolding shared by the ``python -m spark_clrs.*`` entry points."""
