"""feature_store: a serverless feature store for real-time BNPL credit decisions.

Layers: ``domain`` (catalog and pure computations), ``stores`` (PostgreSQL, Redis, BigQuery),
``services`` (use cases over stores), ``transports`` (HTTP and CloudEvent edges).
Entry points live in ``functions/<name>/main.py`` and stay thin.
"""

__version__ = "0.1.0"
