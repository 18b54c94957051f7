"""Spark ALS's BLAS library (models/native/als_blas.c): its results against a numpy reference, and how the JVMs load it."""
from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from models import als_blas


def _buildable() -> bool:
    """A C compiler and libblas.so.3: then `make setup` must have built the library (a missing one is a failure)."""
    if shutil.which("cc") is None:
        return False
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    return "libblas.so.3 " in cache


@pytest.fixture(scope="module")
def lib():
    if not als_blas.DEFAULT_LIBRARY.is_file():
        if _buildable():
            pytest.fail(f"{als_blas.DEFAULT_LIBRARY} is missing although cc and libblas.so.3 are here: `make als-blas`")
        pytest.skip("no C compiler or libblas.so.3 on this machine: the library cannot be built")
    library = ctypes.CDLL(str(als_blas.DEFAULT_LIBRARY))
    double_p = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
    int_p, double_1 = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_double)
    library.dspr_.argtypes = [ctypes.c_char_p, int_p, double_1, double_p, int_p, double_p]
    library.daxpy_.argtypes = [int_p, double_1, double_p, int_p, double_p, int_p]
    return library


def _int(v):
    return ctypes.byref(ctypes.c_int(v))


def _double(v):
    return ctypes.byref(ctypes.c_double(v))


def _logical(buffer: np.ndarray, n: int, inc: int) -> np.ndarray:
    """The n-vector a BLAS routine sees in ``buffer`` with increment ``inc`` (negative: walked backwards)."""
    idx = np.arange(n) * abs(inc)
    return buffer[idx] if inc > 0 else buffer[idx[::-1]]


def _spr_reference(uplo: str, n: int, alpha: float, x: np.ndarray, ap: np.ndarray) -> np.ndarray:
    full = np.zeros((n, n))
    rows, cols = np.triu_indices(n) if uplo == "U" else np.tril_indices(n)
    order = np.lexsort((rows, cols))  # column-major packed storage: column by column
    rows, cols = rows[order], cols[order]
    full[rows, cols] = ap
    full += alpha * np.outer(x, x)
    return full[rows, cols]


@pytest.mark.parametrize("uplo", ["U", "L", "u"])
@pytest.mark.parametrize("inc", [1, 2, -1, -3])
def test_dspr_equals_the_reference(lib, uplo, inc):
    rng = np.random.default_rng(abs(inc) * 10 + len(uplo))
    for n in (1, 2, 3, 7, 8, 9, 31, 32, 33, 64, 100, 150):
        x = rng.standard_normal(n)
        x[rng.random(n) < 0.2] = 0.0  # the reference skips columns whose x is 0: same result either way
        buffer = np.zeros(max(1, (n - 1) * abs(inc) + 1))
        buffer[np.arange(n) * abs(inc)] = x if inc > 0 else x[::-1]
        ap = rng.standard_normal(n * (n + 1) // 2)
        want = _spr_reference(uplo.upper(), n, 0.37, _logical(buffer, n, inc), ap)
        lib.dspr_(uplo.encode(), _int(n), _double(0.37), buffer, _int(inc), ap)
        np.testing.assert_allclose(ap, want, rtol=1e-13, atol=1e-13, err_msg=f"n={n} uplo={uplo} inc={inc}")


def test_dspr_leaves_the_matrix_alone_for_zero_alpha_or_size(lib):
    ap = np.arange(6, dtype=np.float64)
    lib.dspr_(b"U", _int(3), _double(0.0), np.ones(3), _int(1), ap)
    lib.dspr_(b"U", _int(0), _double(2.0), np.ones(3), _int(1), ap)
    np.testing.assert_array_equal(ap, np.arange(6, dtype=np.float64))


@pytest.mark.parametrize("incx,incy", [(1, 1), (2, 1), (1, 3), (-1, 1), (2, -2)])
def test_daxpy_equals_the_reference(lib, incx, incy):
    rng = np.random.default_rng(abs(incx * 7 + incy))
    for n in (1, 5, 32, 33, 200):
        xbuf = rng.standard_normal((n - 1) * abs(incx) + 1)
        ybuf = rng.standard_normal((n - 1) * abs(incy) + 1)
        want = ybuf.copy()
        positions = np.arange(n) * abs(incy)
        positions = positions if incy > 0 else positions[::-1]
        want[positions] += -1.5 * _logical(xbuf, n, incx)
        lib.daxpy_(_int(n), _double(-1.5), xbuf, _int(incx), ybuf, _int(incy))
        np.testing.assert_allclose(ybuf, want, rtol=1e-13, atol=1e-13, err_msg=f"n={n} incx={incx} incy={incy}")


def test_library_links_every_other_routine_from_the_system_blas(lib):
    assert lib.dgemm_ and lib.dnrm2_  # found through this library's handle, as netlib's dlsym finds them
    out = subprocess.run(["readelf", "-d", str(als_blas.DEFAULT_LIBRARY)], capture_output=True, text=True).stdout
    assert "libblas.so.3" in out  # netlib looks up dgemm, dgemv, ... through this dependency


def test_java_options_are_added_unless_netlib_is_chosen_already(tmp_path):
    path = tmp_path / als_blas.LIBRARY_NAME
    option = f"-D{als_blas.NETLIB_LIBRARY_PATH}={path}"
    added = als_blas.add_java_options({"spark.driver.extraJavaOptions": "-Xss4m"}, path)
    assert added["spark.driver.extraJavaOptions"] == f"-Xss4m {option}"
    assert added["spark.executor.extraJavaOptions"] == option
    chosen = {"spark.driver.extraJavaOptions": "-Ddev.ludovic.netlib.blas.nativeLib=none.so"}
    assert als_blas.add_java_options(chosen, path)["spark.driver.extraJavaOptions"] == chosen["spark.driver.extraJavaOptions"]
    assert als_blas.add_java_options(chosen, None) == chosen


def test_library_choice_from_the_environment(tmp_path):
    built = tmp_path / als_blas.LIBRARY_NAME
    built.write_bytes(b"")
    assert als_blas.library_path({als_blas.LIBRARY_ENV: str(built)}) == built.resolve()
    assert als_blas.library_path({als_blas.LIBRARY_ENV: "system"}) is None
    with pytest.raises(als_blas.AlsBlasError, match="no such file.*make als-blas"):
        als_blas.library_path({als_blas.LIBRARY_ENV: str(tmp_path / "missing.so")})
    default = als_blas.library_path({})
    assert default == (als_blas.DEFAULT_LIBRARY if als_blas.DEFAULT_LIBRARY.is_file() else None)


def test_the_session_jvm_loads_the_library_and_it_agrees_with_netlibs_java_blas(spark, lib):
    from models.als import blas_implementation

    assert als_blas.loaded_library(spark) == str(als_blas.DEFAULT_LIBRARY)
    assert blas_implementation(spark).endswith("JNIBLAS")
    assert als_blas.check_against_java(spark) < 1e-12
