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
    _declare_dppsv(library)
    return library


def _declare_dppsv(library) -> None:
    double_p = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
    int_p = ctypes.POINTER(ctypes.c_int)
    library.dppsv_.argtypes = [ctypes.c_char_p, int_p, int_p, double_p, double_p, int_p, int_p]


@pytest.fixture(scope="module")
def system_lapack():
    """The system's liblapack.so.3 (OpenBLAS's reference LAPACK), which the library's dppsv replaces."""
    library = ctypes.CDLL("liblapack.so.3")
    _declare_dppsv(library)
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


def _packed(full: np.ndarray, uplo: str) -> np.ndarray:
    """Column-major packed storage of the upper ('U') or lower ('L') triangle of ``full``."""
    n = len(full)
    if uplo.upper() == "U":
        return np.concatenate([full[: j + 1, j] for j in range(n)]) if n else np.zeros(0)
    return np.concatenate([full[j:, j] for j in range(n)]) if n else np.zeros(0)


def _dppsv(library, uplo: str, ap: np.ndarray, b: np.ndarray, n: int, nrhs: int, ldb: int) -> int:
    info = ctypes.c_int(99)
    library.dppsv_(uplo.encode(), _int(n), _int(nrhs), ap, b, _int(ldb), ctypes.byref(info))
    return info.value


def _normal_equation(rng, n: int) -> np.ndarray:
    """A positive definite matrix as ALS builds one: a sum of x x' over rated items plus a ridge on the diagonal."""
    x = rng.standard_normal((n + 3, n))
    return x.T @ x + 0.1 * np.eye(n)


@pytest.mark.parametrize("uplo", ["U", "L", "u", "l"])
def test_dppsv_solves_and_factors_as_lapack_does(lib, system_lapack, uplo):
    rng = np.random.default_rng(ord(uplo))
    for n in (1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 64, 65, 100):
        for nrhs, ldb in ((1, n), (3, n + 2)):
            a = _normal_equation(rng, n)
            b = np.zeros((nrhs, ldb))  # column-major n x nrhs with leading dimension ldb: row r of this array
            b[:, :n] = rng.standard_normal((nrhs, n))
            padding = b[:, n:].copy()
            ap, x = _packed(a, uplo), b.copy().ravel()
            want_ap, want_x = ap.copy(), b.copy().ravel()
            assert _dppsv(lib, uplo, ap, x, n, nrhs, ldb) == 0
            assert _dppsv(system_lapack, uplo, want_ap, want_x, n, nrhs, ldb) == 0
            x = x.reshape(nrhs, ldb)
            np.testing.assert_allclose(a @ x[:, :n].T, b[:, :n].T, rtol=1e-9, atol=1e-9, err_msg=f"n={n}")
            np.testing.assert_allclose(x.ravel(), want_x, rtol=1e-10, atol=1e-12, err_msg=f"n={n} nrhs={nrhs}")
            np.testing.assert_allclose(ap, want_ap, rtol=1e-12, atol=1e-12, err_msg=f"factor n={n}")
            np.testing.assert_array_equal(x[:, n:], padding)  # rows beyond n of each column are not touched


@pytest.mark.parametrize("uplo", ["U", "L"])
def test_dppsv_reports_the_first_non_positive_minor_as_lapack_does_and_changes_nothing(lib, system_lapack, uplo):
    rng = np.random.default_rng(3)
    for n, bad in ((1, 0), (6, 0), (6, 3), (40, 17), (40, 39), (70, 66)):
        a = _normal_equation(rng, n)
        a[bad, bad] = -1.0 if bad == 0 else a[bad, :bad] @ np.linalg.solve(a[:bad, :bad], a[:bad, bad]) - 1e-3
        ap, b = _packed(a, uplo), rng.standard_normal(n)
        given_ap, given_b = ap.copy(), b.copy()
        want = _dppsv(system_lapack, uplo, ap.copy(), b.copy(), n, 1, n)
        assert want == bad + 1  # the leading minor of order bad + 1 is the first that is not positive definite
        assert _dppsv(lib, uplo, ap, b, n, 1, n) == want
        np.testing.assert_array_equal(ap, given_ap)
        np.testing.assert_array_equal(b, given_b)
    nan = _packed(_normal_equation(rng, 5), uplo)
    nan[0] = np.nan
    assert _dppsv(lib, uplo, nan, np.ones(5), 5, 1, 5) == 1


def test_dppsv_rejects_illegal_arguments_with_lapacks_codes(lib):
    ap, b = _packed(np.eye(3) * 2.0, "U"), np.ones(3)
    assert _dppsv(lib, "X", ap, b, 3, 1, 3) == -1
    assert _dppsv(lib, "U", ap, b, -1, 1, 3) == -2
    assert _dppsv(lib, "U", ap, b, 3, -1, 3) == -3
    assert _dppsv(lib, "U", ap, b, 3, 1, 2) == -6
    np.testing.assert_array_equal(b, np.ones(3))
    assert _dppsv(lib, "U", ap, b, 0, 1, 1) == 0
    assert _dppsv(lib, "U", ap, b, 3, 0, 3) == 0
    np.testing.assert_array_equal(b, np.ones(3))


def test_library_links_every_other_routine_from_the_system_blas(lib):
    assert lib.dgemm_ and lib.dnrm2_  # found through this library's handle, as netlib's dlsym finds them
    assert lib.dgesv_ and lib.dpotrf_  # LAPACK too: netlib's JNILAPACK looks its routines up the same way
    out = subprocess.run(["readelf", "-d", str(als_blas.DEFAULT_LIBRARY)], capture_output=True, text=True).stdout
    assert "libblas.so.3" in out and "liblapack.so.3" in out  # the dependencies those lookups go through


def test_java_options_are_added_unless_netlib_is_chosen_already(tmp_path):
    path = tmp_path / als_blas.LIBRARY_NAME
    option = f"-Ddev.ludovic.netlib.blas.nativeLibPath={path} -Ddev.ludovic.netlib.lapack.nativeLibPath={path}"
    added = als_blas.add_java_options({"spark.driver.extraJavaOptions": "-Xss4m"}, path)
    assert added["spark.driver.extraJavaOptions"] == f"-Xss4m {option}"
    assert added["spark.executor.extraJavaOptions"] == option
    for choice in ("-Ddev.ludovic.netlib.blas.nativeLib=none.so", "-Ddev.ludovic.netlib.lapack.nativeLib=x.so",
                   "-Ddev.ludovic.netlib.lapack.nativeLibPath=/opt/lapack.so"):
        chosen = {"spark.driver.extraJavaOptions": choice}
        assert als_blas.add_java_options(chosen, path)["spark.driver.extraJavaOptions"] == choice
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


def test_the_session_jvm_loads_the_library_and_it_agrees_with_netlibs_java_blas_and_lapack(spark, lib):
    from models.als import blas_implementation

    assert als_blas.loaded_library(spark) == str(als_blas.DEFAULT_LIBRARY)
    assert als_blas.loaded_lapack_library(spark) == str(als_blas.DEFAULT_LIBRARY)
    assert blas_implementation(spark).endswith("JNIBLAS")
    assert spark._jvm.dev.ludovic.netlib.lapack.LAPACK.getInstance().getClass().getName().endswith("JNILAPACK")
    assert als_blas.check_against_java(spark) < 1e-12
