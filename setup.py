"""Build of the `ifm` package and its C++/CUDA extension `ifm._C`.

Install torch first (the CPU build: `pip install torch==2.13.0`), then
`pip install --no-build-isolation -e .` (pip must not fetch torch into an isolated build env).

* The C++ extension (csrc/ops.cpp, csrc/value_checks.cpp, csrc/cpu/*.cpp; OpenMP) is always
  built.
* CUDA sources (csrc/cuda/*.cu, csrc/cuda/*.cpp) are added when the installed torch has CUDA and a
  CUDA toolkit is found, or when IFM_FORCE_CUDA=1; IFM_FORCE_CPU=1 skips them.
"""
import glob
import os
import sys

from setuptools import setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("csrc")


def _want_cuda() -> bool:
    if os.environ.get("IFM_FORCE_CPU") == "1":
        return False
    if os.environ.get("IFM_FORCE_CUDA") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def _cuda_include_dirs():
    # pip's CUDA builds of torch ship the CUDA headers they need under nvidia/cu13/include.
    dirs = []
    for entry in sys.path:
        cand = os.path.join(entry, "nvidia", "cu13", "include")
        if os.path.isdir(cand):
            dirs.append(cand)
    return dirs[:1]


def _extension():
    sources = [os.path.join(CSRC, "ops.cpp"), os.path.join(CSRC, "value_checks.cpp")]
    sources += sorted(glob.glob(os.path.join(CSRC, "cpu", "*.cpp")))
    cxx = ["-O3", "-fopenmp", "-fno-math-errno"]
    link = ["-fopenmp"]
    if not _want_cuda():
        return CppExtension("ifm._C", sources, include_dirs=[os.path.join(HERE, CSRC)],
                            extra_compile_args={"cxx": cxx}, extra_link_args=link)
    sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
    sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cpp")))
    nvcc = ["-O3", "-DIFM_WITH_CUDA",
            "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"]
    return CUDAExtension("ifm._C", sources,
                         include_dirs=[os.path.join(HERE, CSRC)] + _cuda_include_dirs(),
                         define_macros=[("IFM_WITH_CUDA", None)],
                         extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=link)


setup(
    packages=["ifm", "ifm_kernels"],
    package_dir={"ifm": "python/ifm", "ifm_kernels": "ifm_kernels"},
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
