import os

# Keep XLA on the CI machine's two cores predictable.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
