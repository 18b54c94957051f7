/*
 * BLAS and LAPACK for Spark ALS: dspr, daxpy and dppsv written for the small sizes ALS passes, every other routine
 * taken from the system's libblas.so.3 and liblapack.so.3 (OpenBLAS), which this library links to.
 *
 * Why: Spark's ALS (ALS.NormalEquation.add in spark-mllib 4.1) makes one dspr and one daxpy call through
 * dev.ludovic.netlib's JNIBLAS for every rating, with vectors of the model's rank (10 to 200). OpenBLAS's dspr
 * runs, for n < 100, one axpy kernel call per column (interface/spr.c), so at rank 32 a dspr costs about
 * 300 ns where the arithmetic is 528 multiply-adds. The loops below are plain C that the compiler vectorises,
 * compiled once per CPU level (AVX2+FMA, AVX-512, baseline x86-64) and chosen at load time; the results equal
 * the reference BLAS up to floating-point rounding (fused multiply-adds). Measured: see models/als_blas.py.
 *
 * Then, once per user and per item of every half-iteration, ALS solves its normal equations with LAPACK's dppsv
 * (CholeskySolver). OpenBLAS runs the reference LAPACK there: dpptrf makes one dtpsv and one ddot call per column,
 * about 8 us at rank 32. dppsv below unpacks the matrix, factors it four pivot rows at a time (the update of each
 * later row is one vectorised pass per four pivots) and solves with multiplications by the inverted diagonal:
 * through JNI 4.5 instead of 9.7 us at rank 32 (2.2x-2.4x faster at ranks 16-64, 1.6x-1.7x at 128-200, on a 2-core
 * AVX2 EPYC); the results differ from the reference only by rounding.
 *
 * Loaded by netlib with -Ddev.ludovic.netlib.blas.nativeLibPath=<this .so> and
 * -Ddev.ludovic.netlib.lapack.nativeLibPath=<this .so>; it needs libblas.so.3 and liblapack.so.3 beside it
 * (netlib looks every other routine up through this library's dependencies). Built by `make als-blas`.
 *
 * Semantics follow the reference BLAS (netlib LAPACK 3.x, dspr.f and daxpy.f): column-major packed storage,
 * negative increments walk the vector backwards, alpha == 0 and n <= 0 return at once. Arguments are not
 * checked here: netlib's Java side checks them before the call (and a Fortran caller would get xerbla).
 */
#define _GNU_SOURCE  /* RTLD_NEXT */
#include <dlfcn.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

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

/* ---------------------------------------------------------------------------------------------- dppsv */

/* Right-looking Cholesky of the n x n matrix in w (row-major, upper triangle read; below it is scratch), four
   pivot rows at a time so that each later row is read and written once per four pivots instead of once per pivot.
   On return row k holds U(k, k..n-1) with A = U'U, and inv_diag[k] = 1 / U(k, k). Returns 0, or k + 1 when the
   leading minor of order k + 1 is not positive definite (LAPACK's INFO). */
CPU_CLONES static int cholesky_rows(int n, double *restrict w, double *restrict inv_diag) {
    for (int kb = 0; kb < n; kb += 4) {
        const int ke = kb + 4 < n ? kb + 4 : n;
        for (int k = kb; k < ke; k++) {  /* the block's own rows, one pivot at a time */
            double *restrict rk = w + (ptrdiff_t)k * n;
            const double d = rk[k];
            if (!(d > 0.0)) return k + 1;  /* also NaN */
            const double r = sqrt(d), inv = 1.0 / r;
            rk[k] = r;
            inv_diag[k] = inv;
            for (int j = k + 1; j < n; j++) rk[j] *= inv;
            for (int i = k + 1; i < ke; i++) {
                double *restrict ri = w + (ptrdiff_t)i * n;
                const double t = rk[i];
                for (int j = i; j < n; j++) ri[j] -= t * rk[j];
            }
        }
        if (ke - kb == 4) {  /* every later row minus the block's four pivot rows, in one pass */
            const double *restrict r0 = w + (ptrdiff_t)kb * n, *restrict r1 = r0 + n, *restrict r2 = r1 + n,
                         *restrict r3 = r2 + n;
            for (int i = ke; i < n; i++) {
                double *restrict ri = w + (ptrdiff_t)i * n;
                const double t0 = r0[i], t1 = r1[i], t2 = r2[i], t3 = r3[i];
                for (int j = i; j < n; j++) ri[j] -= (t0 * r0[j] + t1 * r1[j]) + (t2 * r2[j] + t3 * r3[j]);
            }
        } else {  /* the last, partial block: nothing comes after it */
            for (int k = kb; k < ke; k++) {
                const double *restrict rk = w + (ptrdiff_t)k * n;
                for (int i = ke; i < n; i++) {
                    double *restrict ri = w + (ptrdiff_t)i * n;
                    const double t = rk[i];
                    for (int j = i; j < n; j++) ri[j] -= t * rk[j];
                }
            }
        }
    }
    return 0;
}

/* U'U x = b with U in the rows of w (from cholesky_rows); b is overwritten with x. */
CPU_CLONES static void solve_rows(int n, const double *restrict w, const double *restrict inv_diag,
                                  double *restrict b) {
    for (int k = 0; k < n; k++) {  /* U'y = b: y_k is known, then row k of U leaves the later equations */
        const double *restrict rk = w + (ptrdiff_t)k * n;
        const double y = b[k] * inv_diag[k];
        b[k] = y;
        for (int j = k + 1; j < n; j++) b[j] -= y * rk[j];
    }
    for (int i = n - 1; i >= 0; i--) {  /* U x = y: dot products with four partial sums */
        const double *restrict ri = w + (ptrdiff_t)i * n;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        int j = i + 1;
        for (; j + 3 < n; j += 4) {
            s0 += ri[j] * b[j];
            s1 += ri[j + 1] * b[j + 1];
            s2 += ri[j + 2] * b[j + 2];
            s3 += ri[j + 3] * b[j + 3];
        }
        for (; j < n; j++) s0 += ri[j] * b[j];
        b[i] = (b[i] - ((s0 + s1) + (s2 + s3))) * inv_diag[i];
    }
}

#define STACK_ORDER 64  /* up to this order the work matrix lives on the stack (33 KB), beyond it on the heap */

/* LAPACK: SUBROUTINE DPPSV(UPLO, N, NRHS, AP, B, LDB, INFO). Solves A X = B for a symmetric positive definite A
   in packed storage; on success AP holds the Cholesky factor (U'U for 'U', LL' for 'L') and B the solution X.
   INFO: 0 on success, -i when argument i is illegal (nothing is touched; netlib's Java side checks the
   arguments before the call, so this is a second guard, without xerbla), k when the leading minor of order k is
   not positive definite (then neither AP nor B is changed: the reference leaves a partial factor in AP, which
   no caller may use). */
void dppsv_(const char *uplo, const int *n_, const int *nrhs_, double *ap, double *b, const int *ldb_, int *info) {
    const int n = *n_, nrhs = *nrhs_, ldb = *ldb_;
    const int upper = (*uplo == 'U' || *uplo == 'u');
    if (!upper && *uplo != 'L' && *uplo != 'l') { *info = -1; return; }
    if (n < 0) { *info = -2; return; }
    if (nrhs < 0) { *info = -3; return; }
    if (ldb < (n > 1 ? n : 1)) { *info = -6; return; }
    *info = 0;
    if (n == 0) return;
    double stack[STACK_ORDER * STACK_ORDER + STACK_ORDER];
    double *w = n <= STACK_ORDER ? stack : malloc(sizeof(double) * ((size_t)n * n + n));
    if (w == NULL) {  /* no memory for the work matrix: the system LAPACK's dppsv works in place */
        typedef void dppsv_fn(const char *, const int *, const int *, double *, double *, const int *, int *);
        dppsv_fn *system_dppsv = (dppsv_fn *)dlsym(RTLD_NEXT, "dppsv_");
        if (system_dppsv != NULL) system_dppsv(uplo, n_, nrhs_, ap, b, ldb_, info);
        else *info = n;  /* cannot happen while liblapack.so.3 is linked; a failure rather than a wrong result */
        return;
    }
    double *inv_diag = w + (size_t)n * n;
    /* A into w's upper triangle, row by row: the upper packed column j (A(0..j, j)) is scattered down column j;
       the lower packed column j (A(j..n-1, j)) is row j of the upper triangle, copied as it is */
    if (upper) {
        const double *col = ap;
        for (int j = 0; j < n; j++, col += j) for (int i = 0; i <= j; i++) w[(ptrdiff_t)i * n + j] = col[i];
    } else {
        const double *col = ap;
        for (int j = 0; j < n; col += n - j, j++) for (int i = j; i < n; i++) w[(ptrdiff_t)j * n + i] = col[i - j];
    }
    *info = cholesky_rows(n, w, inv_diag);
    if (*info == 0) {
        if (upper) {  /* U back into the packed columns; for 'L', L = U' in packed column j is row j of U */
            double *col = ap;
            for (int j = 0; j < n; j++, col += j) for (int i = 0; i <= j; i++) col[i] = w[(ptrdiff_t)i * n + j];
        } else {
            double *col = ap;
            for (int j = 0; j < n; col += n - j, j++) for (int i = j; i < n; i++) col[i - j] = w[(ptrdiff_t)j * n + i];
        }
        for (int r = 0; r < nrhs; r++) solve_rows(n, w, inv_diag, b + (ptrdiff_t)r * ldb);
    }
    if (w != stack) free(w);
}
