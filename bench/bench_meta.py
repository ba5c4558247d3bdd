#!/usr/bin/env python3
"""bench_meta.py — where a benchmark table's numbers come from, for compare.py's --json-out.

The neatml commit (and whether the tree was modified), its build type and C compiler (read
from the CMakeCache.txt beside the bench binary), the oneDNN neatml loads (dnnl_version() of
the library ldd finds), and a torch's version, install path, BLAS and oneDNN (parsed from
torch.__config__.show()).
"""
import ctypes
import os
import re
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def git_commit():
    """Short commit of the tree this script is in, '+modified' when it has local changes."""
    def git(*a):
        return subprocess.run(["git", "-C", HERE] + list(a), capture_output=True,
                              text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return commit + ("+modified" if dirty else "")


def build_info(bench):
    """CMAKE_BUILD_TYPE and the C compiler of the build that holds the bench binary."""
    info = {}
    cache = os.path.join(os.path.dirname(os.path.abspath(bench)), "CMakeCache.txt")
    try:
        with open(cache) as f:
            for line in f:
                m = re.match(r"(CMAKE_BUILD_TYPE|CMAKE_C_COMPILER):[A-Z]+=(.*)", line.strip())
                if m:
                    info[m.group(1)] = m.group(2)
    except OSError:
        return {"build_type": None, "cc": None}
    cc = info.get("CMAKE_C_COMPILER")
    version = None
    if cc:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
        version = out.splitlines()[0] if out else cc
    return {"build_type": info.get("CMAKE_BUILD_TYPE") or None, "cc": version}


def onednn_version(bench):
    """dnnl_version() of the oneDNN that neatml_bench loads (ldd finds it), or None."""
    out = subprocess.run(["ldd", bench], capture_output=True, text=True).stdout
    m = re.search(r"(libdnnl\.so\S*) => (\S+)", out)
    if not m:
        return None

    class Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                    ("hash", ctypes.c_char_p)]
    try:
        lib = ctypes.CDLL(m.group(2))
        lib.dnnl_version.restype = ctypes.POINTER(Version)
        v = lib.dnnl_version().contents
        return f"{v.major}.{v.minor}.{v.patch} ({m.group(2)})"
    except (OSError, AttributeError):
        return m.group(2)


def torch_info(torch):
    """Version, install path, BLAS and oneDNN of a torch (from torch.__config__.show())."""
    cfg = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", cfg)
    mkl = re.search(r"Math Kernel Library Version ([^\s]+)", cfg)
    dnnl = re.search(r"(?:MKL-DNN|oneDNN)[^v]*v([0-9.]+)", cfg)
    return {"torch": torch.__version__, "torch_path": os.path.dirname(torch.__file__),
            "torch_blas": (blas.group(1) if blas else "unknown")
            + (f" (MKL {mkl.group(1)})" if mkl else ""),
            "torch_onednn": (dnnl.group(1) if dnnl else None)
            if torch.backends.mkldnn.is_available() else "off"}
