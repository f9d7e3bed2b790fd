"""Models: the seeded hyperparameter search and fit (`search`), the same on a Dask cluster
(`dask_training`), calibration, and the model as stored and served (`model`)."""
