"""Build of the `ifm` package and its C++/CUDA extension `ifm._C`.

Install torch first, then `pip install --no-build-isolation -e .` (pip must not fetch torch into an
isolated build env).

* The C++ extension (csrc/ops.cpp, csrc/value_checks.cpp, csrc/cpu/*.cpp; OpenMP) is always
  built.
* The CUDA sources (csrc/cuda/) are added when the installed torch is a CUDA build and a matching
  CUDA toolkit is found. When they cannot be built (no nvcc, nvcc's CUDA major version differs
  from torch's, headers missing) the build goes on without them and prints one warning with the
  reason and the fix; `IFM_FORCE_CUDA=1` turns that warning into an error, `IFM_FORCE_CPU=1`
  skips the CUDA sources.
* CUDA archs: `TORCH_CUDA_ARCH_LIST` when set (e.g. "8.0;9.0+PTX"); otherwise the archs the
  installed torch was built for (that this nvcc can compile), with PTX of the highest so newer
  GPUs JIT-compile it.
* What the build holds (CUDA or not, the archs, why CUDA was skipped) is written to the generated
  module python/ifm/_build_info.py, which `ifm._cuda_arch` reads at run time.
"""

import glob
import os
import re
import subprocess
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"
BUILD_INFO = os.path.join(HERE, "python", "ifm", "_build_info.py")
# Headers the CUDA sources need: nvcc's own (from the toolkit) and, through torch's
# ATen/cuda/CUDAContext.h, the CUDA libraries' (from the toolkit or torch's pip wheels).
TOOLKIT_HEADERS = ("cuda_runtime_api.h", "crt/host_defines.h")
LIBRARY_HEADERS = ("cublas_v2.h", "cusparse.h", "cusolverDn.h")
FIX = (
    "install the CUDA toolkit whose major version matches torch.version.cuda (or a torch "
    "build for your toolkit) and set CUDA_HOME, then rebuild with "
    "`pip install --no-build-isolation -e .`"
)


class CudaUnavailable(Exception):
    """The CUDA part cannot be built here; the message says why."""


def nvcc_path(cuda_home):
    """The nvcc of the toolkit at ``cuda_home``, or None."""
    if not cuda_home:
        return None
    path = os.path.join(cuda_home, "bin", "nvcc")
    return path if os.access(path, os.X_OK) else None


def nvcc_version(nvcc):
    """``(major, minor)`` of ``nvcc --version`` ("release 13.0")."""
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"release (\d+)\.(\d+)", out)
    if not m:
        raise CudaUnavailable(f"cannot read the CUDA version from `{nvcc} --version`")
    return int(m.group(1)), int(m.group(2))


def toolkit_root(nvcc):
    """The toolkit directory nvcc runs from (``TOP=`` of ``nvcc --dryrun``), or None. Differs
    from the parent of ``nvcc``'s directory when nvcc on PATH is a wrapper script."""
    out = subprocess.run(
        [nvcc, "--dryrun", "-E", "-x", "cu", os.devnull],
        capture_output=True,
        text=True,
        check=False,
    )
    m = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.M)
    return os.path.realpath(m.group(1).strip()) if m else None


def nvcc_archs(nvcc):
    """Real archs (e.g. 75, 90) that ``nvcc --list-gpu-arch`` can compile; empty if unknown."""
    out = subprocess.run(
        [nvcc, "--list-gpu-arch"], capture_output=True, text=True, check=False
    ).stdout
    return sorted({int(m) for m in re.findall(r"compute_(\d+)\b", out)})


def cuda_header_dirs(cuda_home, search_paths):
    """Directories to add for the CUDA headers the toolkit lacks.

    pip's CUDA builds of torch ship them in site-packages: ``nvidia/cu13/include`` (CUDA 13
    wheels) or one ``nvidia/<library>/include`` per library (CUDA 12 wheels). Raises
    CudaUnavailable naming the headers found nowhere.
    """
    toolkit = [os.path.join(cuda_home, "include")]
    toolkit += glob.glob(os.path.join(cuda_home, "targets", "*", "include"))
    missing = [
        h for h in TOOLKIT_HEADERS if not any(os.path.isfile(os.path.join(d, h)) for d in toolkit)
    ]
    candidates = []
    for entry in search_paths:
        candidates += sorted(glob.glob(os.path.join(entry, "nvidia", "cu[0-9]*", "include")))
        candidates += sorted(glob.glob(os.path.join(entry, "nvidia", "*", "include")))
    extra = []
    for header in LIBRARY_HEADERS:
        if any(os.path.isfile(os.path.join(d, header)) for d in toolkit + extra):
            continue
        found = next((d for d in candidates if os.path.isfile(os.path.join(d, header))), None)
        if found is None:
            missing.append(header)
        else:
            extra.append(found)
    if missing:
        raise CudaUnavailable(
            f"CUDA headers not found: {', '.join(missing)} (looked in {cuda_home}/include and "
            "site-packages/nvidia/*/include); install the full CUDA toolkit or torch's "
            "nvidia-* header wheels"
        )
    return extra


def default_arch_list(torch_arch_flags, compilable):
    """TORCH_CUDA_ARCH_LIST for the archs torch was built for (``"sm_80 sm_90 ..."``) that nvcc
    can compile, the highest with +PTX."""
    archs = sorted({int(a) for a in re.findall(r"sm_(\d+)", torch_arch_flags or "")})
    if compilable:
        archs = [a for a in archs if a in compilable]
    if not archs:
        raise CudaUnavailable(
            f"none of torch's CUDA archs ({torch_arch_flags!r}) can be compiled by this nvcc "
            f"(it knows {compilable}); set TORCH_CUDA_ARCH_LIST"
        )
    names = [f"{a // 10}.{a % 10}" for a in archs]
    names[-1] += "+PTX"
    return ";".join(names)


def arch_flags_summary(gencode_flags):
    """``(sass, ptx)`` named by ``-gencode=arch=compute_X,code=Y`` flags, e.g. (['sm_90'], [])."""
    sass, ptx = [], []
    for flag in gencode_flags:
        m = re.search(r",code=\[?([\w,]+)\]?", flag)
        for code in m.group(1).split(",") if m else []:
            (sass if code.startswith("sm_") else ptx).append(code)
    return sass, ptx


def cuda_plan(env, torch_cuda, cuda_home, torch_arch_flags, search_paths):
    """What to build: ``dict(cuda=bool, reason=str|None, include_dirs, arch_list, nvcc)``.

    ``reason`` says why CUDA is skipped (None when built, or when torch is a CPU build and
    nobody asked for CUDA). Raises CudaUnavailable when IFM_FORCE_CUDA=1 and it cannot be built.
    """
    plan = dict(
        cuda=False, reason=None, include_dirs=[], arch_list=None, nvcc=None, cuda_home=cuda_home
    )
    if env.get("IFM_FORCE_CPU") == "1":
        plan["reason"] = "IFM_FORCE_CPU=1"
        return plan
    force = env.get("IFM_FORCE_CUDA") == "1"
    try:
        if torch_cuda is None:
            if force:
                raise CudaUnavailable(
                    "the installed torch is a CPU build (torch.version.cuda is "
                    "None); install a CUDA build of torch"
                )
            return plan
        nvcc = nvcc_path(cuda_home)
        if nvcc is None:
            raise CudaUnavailable(
                f"no nvcc found (CUDA_HOME={cuda_home or 'unset'}, nvcc not on "
                f"PATH) for torch's CUDA {torch_cuda}"
            )
        top = toolkit_root(nvcc)
        if top and not env.get("CUDA_HOME") and top != os.path.realpath(cuda_home):
            cuda_home, nvcc = top, nvcc_path(top) or nvcc  # torch guessed from a wrapper
        plan["cuda_home"] = cuda_home
        major, minor = nvcc_version(nvcc)
        torch_major = int(str(torch_cuda).split(".")[0])
        if major != torch_major:
            raise CudaUnavailable(
                f"nvcc at {nvcc} is CUDA {major}.{minor} but torch was built "
                f"with CUDA {torch_cuda} (the major versions must match)"
            )
        plan["include_dirs"] = cuda_header_dirs(cuda_home, search_paths)
        plan["arch_list"] = env.get("TORCH_CUDA_ARCH_LIST") or default_arch_list(
            torch_arch_flags, nvcc_archs(nvcc)
        )
        plan.update(cuda=True, nvcc=f"{major}.{minor}")
        return plan
    except CudaUnavailable as exc:
        if force:
            raise CudaUnavailable(
                f"IFM_FORCE_CUDA=1 but the CUDA kernels cannot be built: {exc}. Fix: {FIX}"
            ) from None
        plan["reason"] = str(exc)
        return plan


def write_build_info(info):
    """Record ``info`` for this Python's extension suffix in python/ifm/_build_info.py (other
    interpreters' entries, built in place from the same tree, are kept)."""
    import ast

    builds = {}
    if os.path.isfile(BUILD_INFO):
        with open(BUILD_INFO) as f:
            m = re.search(r"^BUILDS = (.*)$", f.read(), re.S | re.M)
        try:
            builds = ast.literal_eval(m.group(1)) if m else {}
        except (ValueError, SyntaxError):
            builds = {}
    builds[sysconfig.get_config_var("EXT_SUFFIX")] = info
    with open(BUILD_INFO, "w") as f:
        f.write(
            '"""What the compiled extension ifm._C holds, per extension suffix.\n\n'
            'Generated by setup.py at build time; read by ifm._cuda_arch.\n"""\n\n'
        )
        f.write(f"BUILDS = {builds!r}\n")


def _extension():
    import torch
    from torch.utils import cpp_extension

    sources = [os.path.join(CSRC, "ops.cpp"), os.path.join(CSRC, "value_checks.cpp")]
    sources += sorted(glob.glob(os.path.join(CSRC, "cpu", "*.cpp")))
    cxx = ["-O3", "-fopenmp", "-fno-math-errno"]
    link = ["-fopenmp"]
    flags_of = getattr(torch._C, "_cuda_getArchFlags", None)
    plan = cuda_plan(
        os.environ,
        torch.version.cuda,
        cpp_extension.CUDA_HOME,
        flags_of() if flags_of and torch.version.cuda else "",
        sys.path,
    )
    info = dict(
        cuda=plan["cuda"],
        cuda_skipped=plan["reason"],
        sass=[],
        ptx=[],
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        nvcc=plan["nvcc"],
    )
    if not plan["cuda"]:
        if plan["reason"] and plan["reason"] != "IFM_FORCE_CPU=1":
            print(
                f"\nWARNING: ifm-kernels is built WITHOUT its CUDA kernels: {plan['reason']}. "
                f"Fix: {FIX}. (IFM_FORCE_CUDA=1 makes this an error; IFM_FORCE_CPU=1 skips "
                "CUDA silently.)\n",
                file=sys.stderr,
                flush=True,
            )
        write_build_info(info)
        return cpp_extension.CppExtension(
            "ifm._C",
            sources,
            include_dirs=[os.path.join(HERE, CSRC)],
            extra_compile_args={"cxx": cxx},
            extra_link_args=link,
        )
    if plan["cuda_home"] != cpp_extension.CUDA_HOME:
        print(
            f"ifm-kernels: CUDA toolkit at {plan['cuda_home']} (nvcc's TOP), not "
            f"{cpp_extension.CUDA_HOME}",
            flush=True,
        )
        cpp_extension.CUDA_HOME = os.environ["CUDA_HOME"] = plan["cuda_home"]
    # torch turns TORCH_CUDA_ARCH_LIST into the -gencode flags (no flag naming an arch here,
    # or torch would drop its own).
    os.environ["TORCH_CUDA_ARCH_LIST"] = plan["arch_list"]
    info["sass"], info["ptx"] = arch_flags_summary(cpp_extension._get_cuda_arch_flags())
    print(
        f"ifm-kernels: CUDA {plan['nvcc']} kernels for TORCH_CUDA_ARCH_LIST="
        f"{plan['arch_list']} (SASS {info['sass']}, PTX {info['ptx']})",
        flush=True,
    )
    write_build_info(info)
    sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
    sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cpp")))
    return cpp_extension.CUDAExtension(
        "ifm._C",
        sources,
        include_dirs=[os.path.join(HERE, CSRC)] + plan["include_dirs"],
        extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
        extra_link_args=link,
    )


if __name__ == "__main__":
    from setuptools import setup
    from torch.utils.cpp_extension import BuildExtension

    try:
        ext = _extension()
    except CudaUnavailable as exc:
        sys.exit(f"ERROR: ifm-kernels: {exc}")
    setup(
        packages=["ifm", "ifm_kernels"],
        package_dir={"ifm": "python/ifm", "ifm_kernels": "ifm_kernels"},
        ext_modules=[ext],
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    )
