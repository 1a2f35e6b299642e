"""Study files, sweeps over Optuna storage (SQLite or PostgreSQL), repeats, resume, and the
``cxrlab study`` main job."""
