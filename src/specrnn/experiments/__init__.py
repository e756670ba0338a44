"""Jobs made of many trainings: `train` with seeds (seeds.py), cross-validation (cv.py), hyperparameter search
(tune.py). They sit above the single-run jobs (specrnn.jobs) and call them through the Python API."""
