"""specrnn benchmarks: `python -m benchmarks [--quick]`; results in benchmarks/RESULTS.md."""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spin-waiting on the shared cores
# numpy's OpenBLAS spinning on 2 threads made librosa's mel product 8x slower beside other jobs (14 vs 1.8 ms per
# FSDD clip, measured here): the baselines get their best setting, one BLAS thread
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
