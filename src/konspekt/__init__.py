"""konspekt: lecture videos in, PDF study notes out.

This package runs inside the task images (and the local runner). It never imports
Airflow: the DAG bundle in ``dags/`` only wires these stage commands together.
"""

__version__ = "0.1.0"
