"""Beyond one process: an archive batch on Dask (`distributed_batch`).

Dask comes with the ``dask`` extra and is imported only when used.
"""
