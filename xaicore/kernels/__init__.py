"""Hot loops of perturbation scoring, twice: numba for the CPU, torch for the GPU, behind one dispatch.

Both backends compute region relevance in float64 and order regions with a stable sort, so they rank ties
identically and agree bit for bit on the perturbed inputs (a test holds them together).
"""

from xaicore.kernels.dispatch import BACKENDS, Backend, get_backend, region_grid

__all__ = ["BACKENDS", "Backend", "get_backend", "region_grid"]
