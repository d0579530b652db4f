"""Sequential pipelines, in process and on real worker processes over Redis."""
