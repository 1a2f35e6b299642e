"""Study files, sweeps over Optuna storage (SQLite or PostgreSQL), repeats, resume, the
shipped studies, and the ``cxrlab study`` main job."""
