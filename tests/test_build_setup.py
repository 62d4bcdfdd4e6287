"""setup.py's CUDA decision, run in isolation against simulated toolkits.

A fake CUDA_HOME holds an ``nvcc`` shell script that reports a chosen version (and the archs it
compiles), with or without the headers torch's CUDA headers include. No CUDA torch and no real
toolkit are needed: ``cuda_plan`` takes torch's CUDA version and arch list as arguments.
scripts/check_degraded_build.sh runs one real ``pip install`` the same way.
"""

from __future__ import annotations

import pathlib
import runpy

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SETUP = runpy.run_path(str(ROOT / "setup.py"), run_name="ifm_setup_under_test")
cuda_plan = SETUP["cuda_plan"]
CudaUnavailable = SETUP["CudaUnavailable"]
TORCH_ARCHS = "sm_75 sm_80 sm_86 sm_90 sm_100 sm_120"


def fake_toolkit(
    root: pathlib.Path, release="13.0", headers=True, archs=(75, 80, 86, 90, 100), top=None
):
    """A CUDA_HOME whose bin/nvcc reports ``release`` and knows ``archs``; ``headers``: True
    (all), "toolkit" (nvcc's own only) or False; ``top``: the toolkit nvcc says it runs from."""
    (root / "bin").mkdir(parents=True)
    nvcc = root / "bin" / "nvcc"
    listing = "\\n".join(f"compute_{a}" for a in archs)
    dryrun = ""
    if top:
        dryrun = f'if [ "$1" = "--dryrun" ]; then echo "#$ TOP={top}/bin/.."; exit 0; fi\n'
    nvcc.write_text(
        "#!/bin/sh\n"
        + dryrun
        + f'if [ "$1" = "--list-gpu-arch" ]; then printf "{listing}\\n"; exit 0; fi\n'
        "echo 'nvcc: NVIDIA (R) Cuda compiler driver'\n"
        f"echo 'Cuda compilation tools, release {release}, V{release}.1'\n"
    )
    nvcc.chmod(0o755)
    (root / "include").mkdir()
    if headers:
        libs = SETUP["LIBRARY_HEADERS"] if headers is True else ()
        for h in SETUP["TOOLKIT_HEADERS"] + libs:
            (root / "include" / h).parent.mkdir(parents=True, exist_ok=True)
            (root / "include" / h).write_text("")
    return str(root)


def plan(tmp_path, env=None, torch_cuda="13.0", search_paths=(), **toolkit):
    home = fake_toolkit(tmp_path / "cuda", **toolkit) if toolkit.get("release", "") else None
    return cuda_plan(env or {}, torch_cuda, home, TORCH_ARCHS, list(search_paths))


def test_matching_toolkit_builds_cuda_for_torchs_archs_with_ptx_of_the_highest(tmp_path):
    p = plan(tmp_path, release="13.0")
    assert p["cuda"] and p["reason"] is None and p["nvcc"] == "13.0"
    # torch's archs that this nvcc knows (no 120 here), PTX of the highest
    assert p["arch_list"] == "7.5;8.0;8.6;9.0;10.0+PTX"


def test_torch_cuda_arch_list_wins(tmp_path):
    p = plan(tmp_path, env={"TORCH_CUDA_ARCH_LIST": "8.9"}, release="13.0")
    assert p["arch_list"] == "8.9"


@pytest.mark.parametrize("case", ["other major", "headers missing", "no nvcc"])
def test_degraded_build_says_why_and_forced_build_fails(tmp_path, case):
    kw = {
        "other major": dict(release="12.4"),
        "headers missing": dict(release="13.0", headers=False),
        "no nvcc": dict(release=""),
    }[case]
    expected = {
        "other major": "CUDA 12.4 but torch was built with CUDA 13.0",
        "headers missing": "CUDA headers not found: cuda_runtime_api.h",
        "no nvcc": "no nvcc found",
    }[case]
    p = plan(tmp_path, **kw)
    assert not p["cuda"] and expected in p["reason"]
    with pytest.raises(CudaUnavailable, match="IFM_FORCE_CUDA=1 but the CUDA kernels cannot"):
        cuda_plan(
            {"IFM_FORCE_CUDA": "1"},
            "13.0",
            str(tmp_path / "cuda") if kw["release"] else None,
            TORCH_ARCHS,
            [],
        )


@pytest.mark.parametrize("layout", ["nvidia/cu13/include", "nvidia/{lib}/include"])
def test_headers_of_pip_cuda_12_and_13_wheels_are_found(tmp_path, layout):
    site = tmp_path / "site"
    libs = {"cublas_v2.h": "cublas", "cusparse.h": "cusparse", "cusolverDn.h": "cusolver"}
    for header, lib in libs.items():
        d = site / layout.format(lib=lib)
        d.mkdir(parents=True, exist_ok=True)
        (d / header).write_text("")
    p = plan(tmp_path, release="13.0", headers="toolkit", search_paths=[str(site)])
    assert p["cuda"], p["reason"]
    assert {pathlib.Path(d) for d in p["include_dirs"]} == {
        site / layout.format(lib=lib) for lib in libs.values()
    }


def test_cpu_torch_needs_no_toolkit_unless_cuda_is_forced():
    p = cuda_plan({}, None, None, "", [])
    assert not p["cuda"] and p["reason"] is None
    with pytest.raises(CudaUnavailable, match="CPU build"):
        cuda_plan({"IFM_FORCE_CUDA": "1"}, None, None, "", [])
    assert cuda_plan({"IFM_FORCE_CPU": "1"}, "13.0", None, TORCH_ARCHS, [])["cuda"] is False


def test_gencode_flags_summary():
    flags = [
        "-gencode=arch=compute_75,code=sm_75",
        "-gencode=arch=compute_120,code=sm_120",
        "-gencode=arch=compute_120,code=compute_120",
    ]
    assert SETUP["arch_flags_summary"](flags) == (["sm_75", "sm_120"], ["compute_120"])


def test_toolkit_behind_a_wrapper_nvcc_is_found(tmp_path):
    """nvcc on PATH may be a script that runs another toolkit's nvcc (torch then guesses the
    script's parent): the toolkit is the one nvcc reports as TOP."""
    real = fake_toolkit(tmp_path / "cuda-13.0", release="13.0")
    wrapper = fake_toolkit(tmp_path / "usr", release="13.0", headers=False, top=real)
    p = cuda_plan({}, "13.0", wrapper, TORCH_ARCHS, [])
    assert p["cuda"] and p["cuda_home"] == real, p
