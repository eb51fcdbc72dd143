/* broadcast.c — NumPy-style broadcasting helpers shared by the binary ops:
 * the broadcast shape of two tensors, the strides that read an input as the
 * broadcast shape, and sum-to-shape (the backward of a broadcast). Calls
 * tensor/ and kernels/ only. Every shape is padded on the left to 4 dims. */
#include <string.h>

#include "autograd/autograd_internal.h"
#include "kernels/kernels.h"

/* Left-pads (n, s) with ones to 4 dims. */
static void pad4(int n, const int64_t *s, int64_t out[4]) {
    for (int i = 0; i < 4; i++) out[i] = 1;
    for (int i = 0; i < n; i++) out[4 - n + i] = s[i];
}

bool bg_broadcast_shapes(int na, const int64_t *sa, int nb, const int64_t *sb, int *nout,
                         int64_t *out) {
    int64_t pa[4], pb[4];
    pad4(na, sa, pa);
    pad4(nb, sb, pb);
    int n = na > nb ? na : nb;
    for (int i = 4 - n; i < 4; i++) {
        // A dim of 1 stretches to the other; 0 only pairs with 0 or 1.
        if (pa[i] != pb[i] && pa[i] != 1 && pb[i] != 1) return false;
        out[i - (4 - n)] = pa[i] == 1 ? pb[i] : pa[i];
    }
    *nout = n;
    return true;
}

void bg_broadcast_strides(const bg_tensor *t, int nout, const int64_t *out, int64_t stride[4]) {
    int64_t po[4];
    pad4(nout, out, po);
    for (int i = 0; i < 4; i++) stride[i] = 0;
    for (int j = 0; j < t->ndim; j++) {
        int i = 4 - t->ndim + j;
        stride[i] = (t->shape[j] == 1 && po[i] != 1) ? 0 : t->stride[j];
    }
}

bool bg_is_row_broadcast(int nb, const int64_t *sb, int ny, const int64_t *sy) {
    // Strip b's leading ones; what is left must be y's trailing dims.
    int first = 0;
    while (first < nb && sb[first] == 1) first++;
    int k = nb - first;
    if (k > ny) return false;
    for (int j = 0; j < k; j++)
        if (sb[first + j] != sy[ny - k + j]) return false;
    return true;
}

void bg_sum_to_shape(float *dst, int nd, const int64_t *dshape, const float *src, int ns,
                     const int64_t *sshape, float alpha) {
    const bg_kernels *k = bg_kernels_get();
    int64_t pd[4], ps[4];
    pad4(nd, dshape, pd);
    pad4(ns, sshape, ps);
    int64_t nsrc = ps[0] * ps[1] * ps[2] * ps[3], ndst = pd[0] * pd[1] * pd[2] * pd[3];
    if (nsrc == 0 || ndst == 0) return;
    if (nsrc == ndst) {  // same shape up to leading ones: no reduction
        if (alpha == 1.0f)
            k->add(dst, dst, src, nsrc);
        else
            k->axpy(dst, src, alpha, nsrc);
        return;
    }
    if (alpha == 1.0f && bg_is_row_broadcast(nd, dshape, ns, sshape)) {
        // src viewed as [rows, ndst], dst[c] += sum_r src[r, c]: the bias case.
        k->col_sum(dst, src, nsrc / ndst, ndst);
        return;
    }
    // Generic: walk src in order; dst's stride is 0 along the summed dims.
    int64_t ds[4], s = 1;
    for (int i = 3; i >= 0; i--) {
        ds[i] = (pd[i] == 1 && ps[i] != 1) ? 0 : s;
        s *= pd[i];
    }
    const float *p = src;
    for (int64_t i0 = 0; i0 < ps[0]; i0++)
        for (int64_t i1 = 0; i1 < ps[1]; i1++)
            for (int64_t i2 = 0; i2 < ps[2]; i2++) {
                float *d = dst + i0 * ds[0] + i1 * ds[1] + i2 * ds[2];
                if (ds[3] == 0) {
                    double acc = 0.0;
                    for (int64_t i3 = 0; i3 < ps[3]; i3++) acc += p[i3];
                    d[0] += alpha * (float)acc;
                } else {
                    for (int64_t i3 = 0; i3 < ps[3]; i3++) d[i3] += alpha * p[i3];
                }
                p += ps[3];
            }
}
