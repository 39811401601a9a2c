/* Compiled kernels of the truly sparse backend (float32, one thread), loaded by native.py.
 *
 * A sparse weight W (rows x cols) is CSR: row pointers `crow` (rows + 1) and column indices
 * `col` (one per active entry, sorted within a row), values `v` in that order, or `v[perm[k]]`
 * when the arrays describe W's transpose and `perm` maps its order to W's. Dense operands are
 * transposed, feature-major: x_t is (features x batch), row-major, so that every inner loop
 * runs over the batch, contiguous and vectorised (the layout of SparseProp, Nikdan et al. 2023).
 *
 * GCC/Clang vector extensions keep this portable: a 16-float vector is one AVX-512 register,
 * two AVX2 ones or four SSE ones, whatever -march the loader compiled for. Batches are split by
 * rows over `threads` OpenMP threads (where compiled with OpenMP); each row is computed by one
 * thread in one order, so results do not depend on the number of threads.
 *
 * The products can apply an activation to their results, or the gradient of one, and sum their
 * rows (a bias gradient) as they store them; stack_forward_f32/stack_backward_f32 run a whole
 * chain of layers per call (fused.py), so a network pass costs one call from Python.
 */
#include <stdint.h>
#include <string.h>

typedef float vf __attribute__((vector_size(64), aligned(4))); /* aligned(4): unaligned loads */
typedef int32_t vi __attribute__((vector_size(64)));
#define L 16 /* floats per vector */

static inline vf load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vf v) { memcpy(p, &v, sizeof v); }

static inline float hsum(vf a) { /* halving tree: four shuffles and adds */
    a += __builtin_shuffle(a, (vi){8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
    a += __builtin_shuffle(a, (vi){4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3});
    a += __builtin_shuffle(a, (vi){2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1});
    a += __builtin_shuffle(a, (vi){1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0});
    return a[0];
}

/* Activations fused into the products, exactly as PyTorch computes them and their gradients.
 * Forward: LeakyReLU (slope > 0) y = x > 0 ? x : x * slope; ReLU (slope 0) gives +0 below zero
 * and keeps NaN. Backward, from the activated output y (y > 0 exactly where the input was):
 * LeakyReLU g' = y > 0 ? g : g * slope; ReLU g' = y <= 0 ? 0 : g. */
static inline float act_s(float a, float slope) { return a > 0 ? a : (slope != 0 ? a * slope : (a != a ? a : 0.0f)); }

static inline vf act_v(vf a, float slope) {
    const vi keep = a > 0;
    const vf below = slope != 0 ? a * slope : (vf)((vi)a & (a != a)); /* ReLU: +0, NaN kept */
    return (vf)((keep & (vi)a) | (~keep & (vi)below));
}

static inline float gate_s(float g, float y, float slope) {
    return slope != 0 ? (y > 0 ? g : g * slope) : (y <= 0 ? 0.0f : g);
}

static inline vf gate_v(vf g, vf y, float slope) {
    if (slope == 0) return (vf)(~(y <= 0) & (vi)g);
    const vi keep = y > 0;
    return (vf)((keep & (vi)g) | (~keep & (vi)(g * slope)));
}

/* What a product does to each result before storing it: the forward activation (activate), or
 * the gradient of the activation whose output is `gate` (gate non-NULL); then, where `sums` is
 * given, sums[r] = the row's total over the batch (a bias gradient). */
#define FINISH_V(a, r, j) (activate ? act_v(a, slope) : gate ? gate_v(a, load(gate + (r) * batch + (j)), slope) : (a))
#define FINISH_S(a, r, j) (activate ? act_s(a, slope) : gate ? gate_s(a, gate[(r) * batch + (j)], slope) : (a))

/* y_t[r, :] = finish(bias[r] + sum over r's entries k of W(k) * x_t[col[k], :])   (bias may be NULL).
 * Forward (W, perm NULL) and grad_x (W's transpose, perm given; x_t = grad_y_t). A block of 64
 * batch columns of the output row stays in four vector registers across the row's entries:
 * one load and one fused multiply-add per input element, no stores until the row is done. */
void csr_times_f32(int64_t rows, int64_t batch, const int32_t *restrict crow, const int32_t *restrict col,
                   const float *restrict v, const int32_t *restrict perm, const float *restrict x_t,
                   const float *restrict bias, float *restrict y_t, int32_t activate, float slope,
                   const float *restrict gate, float *restrict sums, int32_t threads) {
#define W(k) (perm ? v[perm[k]] : v[k])
    if (batch == 1) { /* acting: a matrix-vector product, eight chains to hide the FMA latency */
        for (int64_t r = 0; r < rows; r++) {
            float a[8] = {0};
            int32_t k = crow[r];
            for (; k + 8 <= crow[r + 1]; k += 8)
                for (int i = 0; i < 8; i++) a[i] += W(k + i) * x_t[col[k + i]];
            for (int i = 0; k < crow[r + 1]; k++, i++) a[i] += W(k) * x_t[col[k]];
            const float y = (bias ? bias[r] : 0.0f) + (((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])));
            y_t[r] = FINISH_S(y, r, 0);
            if (sums) sums[r] = y_t[r];
        }
        return;
    }
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t r = 0; r < rows; r++) {
        const int32_t start = crow[r], end = crow[r + 1];
        const float b = bias ? bias[r] : 0.0f;
        float *restrict y = y_t + r * batch;
        vf total = {0};
        float tail = 0.0f;
        int64_t j0 = 0;
        for (; j0 + 4 * L <= batch; j0 += 4 * L) {
            vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            a0 += b, a1 += b, a2 += b, a3 += b;
            for (int32_t k = start; k < end; k++) {
                const float w = W(k);
                const float *x = x_t + (int64_t)col[k] * batch + j0;
                a0 += w * load(x), a1 += w * load(x + L), a2 += w * load(x + 2 * L), a3 += w * load(x + 3 * L);
            }
            a0 = FINISH_V(a0, r, j0), a1 = FINISH_V(a1, r, j0 + L);
            a2 = FINISH_V(a2, r, j0 + 2 * L), a3 = FINISH_V(a3, r, j0 + 3 * L);
            store(y + j0, a0), store(y + j0 + L, a1), store(y + j0 + 2 * L, a2), store(y + j0 + 3 * L, a3);
            total += (a0 + a1) + (a2 + a3);
        }
        for (; j0 + L <= batch; j0 += L) {
            vf a = {0};
            a += b;
            for (int32_t k = start; k < end; k++) a += W(k) * load(x_t + (int64_t)col[k] * batch + j0);
            a = FINISH_V(a, r, j0);
            store(y + j0, a);
            total += a;
        }
        for (int64_t j = j0; j < batch; j++) { /* the last batch % 16 columns */
            float a = b;
            for (int32_t k = start; k < end; k++) a += W(k) * x_t[(int64_t)col[k] * batch + j];
            y[j] = FINISH_S(a, r, j);
            tail += y[j];
        }
        if (sums) sums[r] = hsum(total) + tail;
    }
#undef W
}

/* out[k] = dot(gy_t[r, :], x_t[col[k], :]) for each active entry k = (r, col[k]): grad_values,
 * grad_y.T @ x at the active entries only. Four entries of a row at a time share gy's loads
 * and give four independent accumulation chains. */
void csr_sampled_dot_f32(int64_t rows, int64_t batch, const int32_t *restrict crow, const int32_t *restrict col,
                         const float *restrict gy_t, const float *restrict x_t, float *restrict out, int32_t threads) {
    const int64_t vectorised = batch - batch % L;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t r = 0; r < rows; r++) {
        const float *gy = gy_t + r * batch;
        int32_t k = crow[r];
        const int32_t end = crow[r + 1];
        for (; k + 4 <= end; k += 4) {
            const float *x0 = x_t + (int64_t)col[k] * batch, *x1 = x_t + (int64_t)col[k + 1] * batch;
            const float *x2 = x_t + (int64_t)col[k + 2] * batch, *x3 = x_t + (int64_t)col[k + 3] * batch;
            vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int64_t j = 0; j < vectorised; j += L) {
                const vf g = load(gy + j);
                a0 += g * load(x0 + j), a1 += g * load(x1 + j), a2 += g * load(x2 + j), a3 += g * load(x3 + j);
            }
            float s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
            for (int64_t j = vectorised; j < batch; j++) {
                s0 += gy[j] * x0[j], s1 += gy[j] * x1[j], s2 += gy[j] * x2[j], s3 += gy[j] * x3[j];
            }
            out[k] = s0, out[k + 1] = s1, out[k + 2] = s2, out[k + 3] = s3;
        }
        for (; k < end; k++) {
            const float *x = x_t + (int64_t)col[k] * batch;
            vf a = {0};
            for (int64_t j = 0; j < vectorised; j += L) a += load(gy + j) * load(x + j);
            float s = hsum(a);
            for (int64_t j = vectorised; j < batch; j++) s += gy[j] * x[j];
            out[k] = s;
        }
    }
}

/* out = the gradient before a fused activation, from the gradient g after it and the activated
 * output y, both (rows x batch); where `sums` is given, sums[r] = row r's total (a bias gradient).
 * out may be g (in place). */
void act_grad_f32(int64_t rows, int64_t batch, const float *g, const float *restrict y, float slope, float *out,
                  float *restrict sums) {
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = g + r * batch, *yr = y + r * batch;
        float *o = out + r * batch;
        vf total = {0};
        float tail = 0.0f;
        int64_t j = 0;
        for (; j + L <= batch; j += L) {
            const vf a = gate_v(load(gr + j), load(yr + j), slope);
            store(o + j, a);
            total += a;
        }
        for (; j < batch; j++) tail += (o[j] = gate_s(gr[j], yr[j], slope));
        if (sums) sums[r] = hsum(total) + tail;
    }
}

/* dst = src.T for a row-major (rows x cols) src: between the batch-major layout of PyTorch's
 * tensors and the feature-major one of these kernels, in 16 x 16 tiles (PyTorch's own copy of a
 * transposed 256 x 23 tensor is several times slower). */
void transpose_f32(int64_t rows, int64_t cols, const float *restrict src, float *restrict dst) {
    for (int64_t r0 = 0; r0 < rows; r0 += L)
        for (int64_t c0 = 0; c0 < cols; c0 += L) {
            const int64_t r1 = r0 + L < rows ? r0 + L : rows, c1 = c0 + L < cols ? c0 + L : cols;
            for (int64_t c = c0; c < c1; c++)
                for (int64_t r = r0; r < r1; r++) dst[c * rows + r] = src[r * cols + c];
        }
}

/* A chain of layers (a network's stack, see fused.py) run by one call from Python: per layer
 * its CSR arrays (W's; W.T's and the permutation for the backward), values, bias (or NULL) and
 * the ReLU/LeakyReLU after it (activate, slope). Products of fewer multiply-adds than
 * `parallel_min` run on one thread, the others on `threads`. */
typedef struct {
    int64_t rows, cols;
    const int32_t *crow, *col, *ccol, *row, *perm;
    const float *values, *bias;
    int32_t activate;
    float slope;
} layer_t;

static int32_t threads_for(int64_t work, int32_t threads, int64_t parallel_min) {
    return work >= parallel_min ? threads : 1;
}

/* outputs[i] = layer i's activated (rows x batch) result, from the feature-major input x_t. */
void stack_forward_f32(int32_t n, const layer_t *layers, int64_t batch, const float *x_t, float **outputs,
                       int32_t threads, int64_t parallel_min) {
    for (int32_t i = 0; i < n; i++) {
        const layer_t *l = layers + i;
        const int32_t t = threads_for((int64_t)l->crow[l->rows] * batch, threads, parallel_min);
        csr_times_f32(l->rows, batch, l->crow, l->col, l->values, NULL, i ? outputs[i - 1] : x_t, l->bias, outputs[i],
                      l->activate, l->slope, NULL, NULL, t);
    }
}

/* The backward of stack_forward_f32 from grad_t, the gradient before the last layer's activation
 * (rows x batch; overwritten), down to layer `stop`: grad_values[i] and grad_bias[i] where not
 * NULL (grad_bias[n - 1] is the caller's), grad_x (the input's, cols x batch) where not NULL, and a
 * copy of the gradient at layer i's output into outputs_grad[i] where not NULL (RigL's scores).
 * grad_t and scratch hold (largest layer size x batch) floats each. */
void stack_backward_f32(int32_t n, const layer_t *layers, int64_t batch, const float *x_t, float *const *outputs,
                        float *grad_t, float **grad_values, float **grad_bias, float *grad_x, int32_t stop,
                        int32_t threads, int64_t parallel_min, float *scratch, float **outputs_grad) {
    float *g = grad_t;
    for (int32_t i = n - 1; i >= stop; i--) {
        const layer_t *l = layers + i;
        const int64_t work = (int64_t)l->crow[l->rows] * batch;
        const int32_t t = threads_for(work, threads, parallel_min);
        const float *input = i ? outputs[i - 1] : x_t;
        if (outputs_grad[i]) memcpy(outputs_grad[i], g, sizeof(float) * l->rows * batch);
        if (grad_values[i]) csr_sampled_dot_f32(l->rows, batch, l->crow, l->col, g, input, grad_values[i], t);
        if (i == stop && (i > 0 || !grad_x)) break; /* nothing below wants a gradient */
        /* The gradient at the layer's input, through the activation below (its output is `input`). */
        float *below = i ? (g == scratch ? grad_t : scratch) : grad_x; /* two buffers in turn */
        const layer_t *b = i ? layers + i - 1 : NULL;
        csr_times_f32(l->cols, batch, l->ccol, l->row, l->values, l->perm, g, NULL, below, 0, b ? b->slope : 0.0f,
                      b && b->activate ? input : NULL, i ? grad_bias[i - 1] : NULL, t);
        g = below;
    }
}
