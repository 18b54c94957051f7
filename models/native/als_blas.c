/*
 * BLAS for Spark ALS: dspr and daxpy written for the small vectors ALS passes, every other BLAS routine taken
 * from the system's libblas.so.3 (OpenBLAS), which this library links to.
 *
 * Why: Spark's ALS (ALS.NormalEquation.add in spark-mllib 4.1) makes one dspr and one daxpy call through
 * dev.ludovic.netlib's JNIBLAS for every rating, with vectors of the model's rank (10 to 200). OpenBLAS's dspr
 * runs, for n < 100, one axpy kernel call per column (interface/spr.c), so at rank 32 a dspr costs about
 * 300 ns where the arithmetic is 528 multiply-adds. The loops below are plain C that the compiler vectorises,
 * compiled once per CPU level (AVX2+FMA, AVX-512, baseline x86-64) and chosen at load time; the results equal
 * the reference BLAS up to floating-point rounding (fused multiply-adds). Measured: see models/als_blas.py.
 *
 * Loaded by netlib with -Ddev.ludovic.netlib.blas.nativeLibPath=<this .so>; it needs libblas.so.3 beside it
 * (netlib looks every other routine up through this library's dependencies). Built by `make als-blas`.
 *
 * Semantics follow the reference BLAS (netlib LAPACK 3.x, dspr.f and daxpy.f): column-major packed storage,
 * negative increments walk the vector backwards, alpha == 0 and n <= 0 return at once. Arguments are not
 * checked here: netlib's Java side checks them before the call (and a Fortran caller would get xerbla).
 */
#include <stddef.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CPU_CLONES
#endif

/* ap += alpha * x * x' on the upper triangle, unit stride. */
CPU_CLONES static void spr_upper_unit(int n, double alpha, const double *restrict x, double *restrict ap) {
    for (int j = 0; j < n; j++) {
        if (x[j] != 0.0) {
            const double t = alpha * x[j];
            for (int i = 0; i <= j; i++) ap[i] += t * x[i];
        }
        ap += j + 1;
    }
}

/* ap += alpha * x * x' on the lower triangle, unit stride. */
CPU_CLONES static void spr_lower_unit(int n, double alpha, const double *restrict x, double *restrict ap) {
    for (int j = 0; j < n; j++) {
        if (x[j] != 0.0) {
            const double t = alpha * x[j];
            for (int i = j; i < n; i++) ap[i - j] += t * x[i];
        }
        ap += n - j;
    }
}

static void spr_strided(int upper, int n, double alpha, const double *x, int incx, double *ap) {
    const double *x0 = incx > 0 ? x : x - (ptrdiff_t)(n - 1) * incx;  /* element 0 of the logical vector */
    for (int j = 0; j < n; j++) {
        const double xj = x0[(ptrdiff_t)j * incx];
        if (upper) {
            if (xj != 0.0) {
                const double t = alpha * xj;
                for (int i = 0; i <= j; i++) ap[i] += t * x0[(ptrdiff_t)i * incx];
            }
            ap += j + 1;
        } else {
            if (xj != 0.0) {
                const double t = alpha * xj;
                for (int i = j; i < n; i++) ap[i - j] += t * x0[(ptrdiff_t)i * incx];
            }
            ap += n - j;
        }
    }
}

/* Fortran BLAS: SUBROUTINE DSPR(UPLO, N, ALPHA, X, INCX, AP). The hidden length of UPLO is not needed. */
void dspr_(const char *uplo, const int *n, const double *alpha, const double *x, const int *incx, double *ap) {
    if (*n <= 0 || *alpha == 0.0) return;
    const int upper = (*uplo == 'U' || *uplo == 'u');
    if (*incx == 1) {
        if (upper) spr_upper_unit(*n, *alpha, x, ap);
        else spr_lower_unit(*n, *alpha, x, ap);
    } else {
        spr_strided(upper, *n, *alpha, x, *incx, ap);
    }
}

CPU_CLONES static void axpy_unit(int n, double a, const double *restrict x, double *restrict y) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

/* Fortran BLAS: SUBROUTINE DAXPY(N, DA, DX, INCX, DY, INCY). */
void daxpy_(const int *n, const double *da, const double *dx, const int *incx, double *dy, const int *incy) {
    if (*n <= 0 || *da == 0.0) return;
    if (*incx == 1 && *incy == 1) {
        axpy_unit(*n, *da, dx, dy);
        return;
    }
    const int nn = *n, ix = *incx, iy = *incy;
    const double *x0 = ix >= 0 ? dx : dx - (ptrdiff_t)(nn - 1) * ix;
    double *y0 = iy >= 0 ? dy : dy - (ptrdiff_t)(nn - 1) * iy;
    for (int i = 0; i < nn; i++) y0[(ptrdiff_t)i * iy] += *da * x0[(ptrdiff_t)i * ix];
}
