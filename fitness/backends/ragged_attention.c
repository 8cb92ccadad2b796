/* Decode-step attention over ragged rows, one call per layer (fitness/backends/ragged_attention.py).
 *
 * Each row has one new token: its query heads (``group`` per key head) attend to at
 * most two column segments of the KV caches, read where they lie (no copy, no
 * padding read):
 *   - its own columns: mask columns [own_first, width) of the step's mask, found in
 *     cache ``own_source`` at row ``own_row``, column = mask column - ``own_offset``;
 *     columns whose mask is 0 (padding) are skipped;
 *   - a shared prefix (if ``prefix_source`` >= 0): columns [prefix_start, prefix_end)
 *     of cache ``prefix_source`` at row ``prefix_row`` (one row's copy serves every
 *     row that shares it; it stays in the core's cache between those rows).
 * One softmax over both segments (no log-sum-exp merge). Scores and sums in float32,
 * keys/values/queries/output in bf16 (``dtype`` 1) or float32 (``dtype`` 0).
 *
 * Layouts: q and out [rows, kv_heads, group, dim] contiguous; caches [rows, kv_heads,
 * columns, dim] with columns contiguous of ``dim`` values each (row and head strides
 * per source, in elements); mask int64 [rows, width] contiguous; table int64
 * [rows, 7] = own_source, own_row, own_first, own_offset, prefix_source, prefix_row,
 * prefix_start, and a second int64 [rows] of prefix_end.
 *
 * Work is split between ``threads`` POSIX threads by (row, key head) units of about
 * equal column counts. Returns 0, or -1 when a thread could not be started (the
 * caller then falls back). */

#include <math.h>
#include <pthread.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512BF16__) && defined(__AVX512F__) && defined(__AVX512DQ__)
#include <immintrin.h>
#define HAVE_BF16_UNITS 1
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_GROUP 16
#define MAX_DIM 256
/* The bf16 path prefetches keys this many columns ahead, and each column's values for
 * the second pass: a (row, key head) reads only ~100-200 columns (~15 KB of keys, as
 * much of values) before jumping to another row's, too short a run for the hardware
 * prefetcher; with it a layer's call read ~30 GB/s instead of ~15 (this machine streams
 * ~46), same results bit for bit. 4 measured alike, 16 and 32 slower. */
#define PREFETCH_COLUMNS 8

typedef struct {
    const void *q;
    void *out;
    const int64_t *k_ptrs, *v_ptrs, *row_strides, *head_strides;
    const int64_t *mask, *table, *prefix_end;
    int64_t rows, kv_heads, group, dim, width;
    float scale;
    int dtype;
    int64_t first_unit, last_unit;
    int failed;
} Job;

static inline float bf16_to_float(uint16_t x) {
    uint32_t bits = (uint32_t)x << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t float_to_bf16(float f) { /* round to nearest even, as torch does */
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u); /* NaN stays NaN */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static inline void load_row(const void *base, int64_t index, int64_t dim, int dtype, float *dst) {
    if (dtype) {
        const uint16_t *src = (const uint16_t *)base + index;
        for (int64_t d = 0; d < dim; d++) dst[d] = bf16_to_float(src[d]);
    } else {
        memcpy(dst, (const float *)base + index, (size_t)dim * sizeof(float));
    }
}

/* score[g] = q[g] . key for every query g of the group; key given as bf16 or float */
static inline void scores_bf16(const float *q, const uint16_t *key, int64_t group, int64_t dim, float *score) {
    float k[MAX_DIM];
    for (int64_t d = 0; d < dim; d++) k[d] = bf16_to_float(key[d]);
    for (int64_t g = 0; g < group; g++) {
        const float *qg = q + g * dim;
        float s = 0.0f;
        for (int64_t d = 0; d < dim; d++) s += qg[d] * k[d];
        score[g] = s;
    }
}

static inline void scores_f32(const float *q, const float *key, int64_t group, int64_t dim, float *score) {
    for (int64_t g = 0; g < group; g++) {
        const float *qg = q + g * dim;
        float s = 0.0f;
        for (int64_t d = 0; d < dim; d++) s += qg[d] * key[d];
        score[g] = s;
    }
}

static inline void accumulate(float *acc, const float *p, const void *value_base, int64_t index, int64_t group,
                              int64_t dim, int dtype) {
    float v[MAX_DIM];
    load_row(value_base, index, dim, dtype, v);
    for (int64_t g = 0; g < group; g++) {
        float weight = p[g];
        float *a = acc + g * dim;
        for (int64_t d = 0; d < dim; d++) a[d] += weight * v[d];
    }
}

/* The columns one unit reads, in order: calls visit(column's element index in its source, source) */
typedef struct {
    int64_t source, row, first, last; /* in source columns; own columns also check the mask */
    const int64_t *mask_row;
    int64_t mask_shift; /* mask column = source column + shift (own segment only) */
} Segment;

static int unit_segments(const Job *job, int64_t row, Segment *segments) {
    const int64_t *t = job->table + row * 7;
    int n = 0;
    if (t[4] >= 0 && job->prefix_end[row] > t[6]) {
        segments[n++] = (Segment){t[4], t[5], t[6], job->prefix_end[row], NULL, 0};
    }
    int64_t own_first = t[2], offset = t[3];
    if (own_first < job->width) {
        segments[n++] = (Segment){t[0], t[1], own_first - offset, job->width - offset, job->mask + row * job->width,
                                  offset};
    }
    return n;
}

static int64_t unit_columns(const Job *job, int64_t row) {
    Segment segments[2];
    int n = unit_segments(job, row, segments);
    int64_t columns = 0;
    for (int i = 0; i < n; i++) columns += segments[i].last - segments[i].first;
    return columns;
}


#ifdef HAVE_BF16_UNITS
/* The lane sums of four vectors, as one vector [sum(a), sum(b), sum(c), sum(d)]: a
 * quarter of the shuffles of four separate reductions. */
static inline __m128 sums_of_four(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b)); /* per 128 bits: a02 b02 a13 b13 */
    __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    __m512 all = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xEE)); /* a b c d */
    __m256 half = _mm256_add_ps(_mm512_castps512_ps256(all), _mm512_extractf32x8_ps(all, 1));
    return _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
}

/* scores[g * columns + 0..3] = q[g] . keys[0..3] for every query g */
static inline void scores_of_four(__m512bh qv[][2], const uint16_t *const *keys, int64_t group, float *scores,
                                  int64_t columns) {
    __m512bh k[4][2];
    for (int j = 0; j < 4; j++) {
        k[j][0] = (__m512bh)_mm512_loadu_si512((const void *)keys[j]);
        k[j][1] = (__m512bh)_mm512_loadu_si512((const void *)(keys[j] + 32));
    }
    for (int64_t g = 0; g < group; g++) {
        __m512 sum[4];
        for (int j = 0; j < 4; j++)
            sum[j] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(_mm512_setzero_ps(), qv[g][0], k[j][0]), qv[g][1], k[j][1]);
        _mm_storeu_ps(scores + g * columns, sums_of_four(sum[0], sum[1], sum[2], sum[3]));
    }
}

/* bf16, dim 64: scores by the CPU's bf16 dot products (float32 sums), values summed in
 * float32 registers. Same arithmetic as the generic path up to summation order. */
static int64_t unit_bf16_dim64(const Job *job, const Segment *segments, int n, int64_t head, const uint16_t *q,
                               int64_t columns, float *scores, float *top, float *total, float *acc) {
    const int64_t group = job->group;
    __m512bh qv[MAX_GROUP][2];
    for (int64_t g = 0; g < group; g++) {
        qv[g][0] = (__m512bh)_mm512_loadu_si512((const void *)(q + g * 64));
        qv[g][1] = (__m512bh)_mm512_loadu_si512((const void *)(q + g * 64 + 32));
    }
    int64_t count = 0;
    const uint16_t *pending[4]; /* visible key columns, scored four at a time */
    int waiting = 0;
    for (int i = 0; i < n; i++) {
        const Segment *s = &segments[i];
        const uint16_t *keys = (const uint16_t *)(uintptr_t)job->k_ptrs[s->source] + s->row * job->row_strides[s->source]
                               + head * job->head_strides[s->source];
        const uint16_t *values = (const uint16_t *)(uintptr_t)job->v_ptrs[s->source] + s->row * job->row_strides[s->source]
                                 + head * job->head_strides[s->source];
        for (int64_t c = s->first; c < s->first + PREFETCH_COLUMNS && c < s->last; c++) {
            _mm_prefetch((const char *)(keys + c * 64), _MM_HINT_T0);
            _mm_prefetch((const char *)(keys + c * 64 + 32), _MM_HINT_T0);
        }
        for (int64_t c = s->first; c < s->last; c++) { /* keys ahead into L1, values into L2 */
            _mm_prefetch((const char *)(keys + (c + PREFETCH_COLUMNS) * 64), _MM_HINT_T0);
            _mm_prefetch((const char *)(keys + (c + PREFETCH_COLUMNS) * 64 + 32), _MM_HINT_T0);
            _mm_prefetch((const char *)(values + c * 64), _MM_HINT_T1);
            _mm_prefetch((const char *)(values + c * 64 + 32), _MM_HINT_T1);
            if (s->mask_row && !s->mask_row[c + s->mask_shift]) continue;
            pending[waiting++] = keys + c * 64;
            if (waiting == 4) {
                scores_of_four(qv, pending, group, scores + count, columns);
                count += 4;
                waiting = 0;
            }
        }
    }
    for (int j = 0; j < waiting; j++, count++) {
        __m512bh k0 = (__m512bh)_mm512_loadu_si512((const void *)pending[j]);
        __m512bh k1 = (__m512bh)_mm512_loadu_si512((const void *)(pending[j] + 32));
        for (int64_t g = 0; g < group; g++) {
            __m512 sum = _mm512_dpbf16_ps(_mm512_setzero_ps(), qv[g][0], k0);
            scores[g * columns + count] = _mm512_reduce_add_ps(_mm512_dpbf16_ps(sum, qv[g][1], k1));
        }
    }
    /* softmax weights, one query at a time (a loop the compiler vectorises, exp included) */
    for (int64_t g = 0; g < group; g++) {
        float *score = scores + g * columns, best = -3.0e38f, sum = 0.0f;
        for (int64_t i = 0; i < count; i++) {
            score[i] *= job->scale;
            best = score[i] > best ? score[i] : best;
        }
        for (int64_t i = 0; i < count; i++) {
            score[i] = expf(score[i] - best);
            sum += score[i];
        }
        top[g] = best;
        total[g] = sum;
    }
    __m512 a[MAX_GROUP][4];
    for (int64_t g = 0; g < group; g++)
        for (int j = 0; j < 4; j++) a[g][j] = _mm512_setzero_ps();
    int64_t index = 0;
    for (int i = 0; i < n; i++) {
        const Segment *s = &segments[i];
        const uint16_t *values = (const uint16_t *)(uintptr_t)job->v_ptrs[s->source]
                                 + s->row * job->row_strides[s->source] + head * job->head_strides[s->source];
        for (int64_t c = s->first; c < s->last; c++) {
            if (s->mask_row && !s->mask_row[c + s->mask_shift]) continue;
            __m512 v[4];
            for (int j = 0; j < 4; j++) {
                __m256i half = _mm256_loadu_si256((const __m256i *)(values + c * 64 + 16 * j));
                v[j] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
            }
            for (int64_t g = 0; g < group; g++) {
                __m512 weight = _mm512_set1_ps(scores[g * columns + index]);
                for (int j = 0; j < 4; j++) a[g][j] = _mm512_fmadd_ps(weight, v[j], a[g][j]);
            }
            index++;
        }
    }
    for (int64_t g = 0; g < group; g++)
        for (int j = 0; j < 4; j++) _mm512_storeu_ps(acc + g * 64 + 16 * j, a[g][j]);
    return count;
}
#endif

static void *run_units(void *arg) {
    Job *job = (Job *)arg;
    const int64_t group = job->group, dim = job->dim;
    float *scores = NULL;
    int64_t capacity = 0;
    float q[MAX_GROUP * MAX_DIM], acc[MAX_GROUP * MAX_DIM], top[MAX_GROUP], total[MAX_GROUP], p[MAX_GROUP];
    for (int64_t unit = job->first_unit; unit < job->last_unit; unit++) {
        int64_t row = unit / job->kv_heads, head = unit % job->kv_heads;
        Segment segments[2];
        int n = unit_segments(job, row, segments);
        int64_t columns = 0;
        for (int i = 0; i < n; i++) columns += segments[i].last - segments[i].first;
        if (columns * group > capacity) {
            free(scores);
            capacity = columns * group;
            scores = (float *)malloc((size_t)capacity * sizeof(float));
            if (!scores) {
                job->failed = 1;
                return NULL;
            }
        }
        int64_t q_index = (row * job->kv_heads + head) * group * dim;
        int64_t count = 0;
#ifdef HAVE_BF16_UNITS
        if (job->dtype && dim == 64 && group <= 4) {
            for (int64_t g = 0; g < group; g++) {
                top[g] = -3.0e38f;
                total[g] = 0.0f;
            }
            count = unit_bf16_dim64(job, segments, n, head, (const uint16_t *)job->q + q_index, columns, scores, top,
                                    total, acc);
            goto store;
        }
#endif
        for (int64_t g = 0; g < group; g++) {
            load_row(job->q, q_index + g * dim, dim, job->dtype, q + g * dim);
            for (int64_t d = 0; d < dim; d++) q[g * dim + d] *= job->scale;
            top[g] = -3.0e38f;
            total[g] = 0.0f;
        }
        /* pass 1: scores of every visible column, and their maximum per query */
        for (int i = 0; i < n; i++) {
            const Segment *s = &segments[i];
            int64_t base = s->row * job->row_strides[s->source] + head * job->head_strides[s->source];
            for (int64_t c = s->first; c < s->last; c++) {
                if (s->mask_row && !s->mask_row[c + s->mask_shift]) continue;
                float *score = scores + count * group;
                if (job->dtype)
                    scores_bf16(q, (const uint16_t *)(uintptr_t)job->k_ptrs[s->source] + base + c * dim, group, dim,
                                score);
                else
                    scores_f32(q, (const float *)(uintptr_t)job->k_ptrs[s->source] + base + c * dim, group, dim, score);
                for (int64_t g = 0; g < group; g++) top[g] = score[g] > top[g] ? score[g] : top[g];
                count++;
            }
        }
        /* pass 2: softmax weights, then the weighted sum of the same columns' values */
        memset(acc, 0, (size_t)(group * dim) * sizeof(float));
        count = 0;
        for (int i = 0; i < n; i++) {
            const Segment *s = &segments[i];
            int64_t base = s->row * job->row_strides[s->source] + head * job->head_strides[s->source];
            const void *values = (const void *)(uintptr_t)job->v_ptrs[s->source];
            for (int64_t c = s->first; c < s->last; c++) {
                if (s->mask_row && !s->mask_row[c + s->mask_shift]) continue;
                const float *score = scores + count * group;
                for (int64_t g = 0; g < group; g++) {
                    p[g] = expf(score[g] - top[g]);
                    total[g] += p[g];
                }
                accumulate(acc, p, values, base + c * dim, group, dim, job->dtype);
                count++;
            }
        }
#ifdef HAVE_BF16_UNITS
    store:
#endif
        for (int64_t g = 0; g < group; g++) {
            float inverse = count ? 1.0f / total[g] : 0.0f;
            for (int64_t d = 0; d < dim; d++) {
                float value = acc[g * dim + d] * inverse;
                int64_t index = q_index + g * dim + d;
                if (job->dtype)
                    ((uint16_t *)job->out)[index] = float_to_bf16(value);
                else
                    ((float *)job->out)[index] = value;
            }
        }
    }
    free(scores);
    return NULL;
}

int ragged_decode_attention(const void *q, void *out, const int64_t *k_ptrs, const int64_t *v_ptrs,
                            const int64_t *row_strides, const int64_t *head_strides, const int64_t *mask,
                            const int64_t *table, const int64_t *prefix_end, int64_t rows, int64_t kv_heads,
                            int64_t group, int64_t dim, int64_t width, float scale, int dtype, int threads) {
    if (group > MAX_GROUP || dim > MAX_DIM) return -2;
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    Job jobs[64];
    Job base = {q, out, k_ptrs, v_ptrs, row_strides, head_strides, mask, table, prefix_end,
                rows, kv_heads, group, dim, width, scale, dtype, 0, 0, 0};
    int64_t units = rows * kv_heads, total = 0;
    for (int64_t row = 0; row < rows; row++) total += unit_columns(&base, row) * kv_heads + kv_heads;
    /* contiguous ranges of units with about equal column counts (each unit also costs a little alone) */
    int64_t unit = 0, done = 0;
    for (int t = 0; t < threads; t++) {
        jobs[t] = base;
        jobs[t].first_unit = unit;
        int64_t goal = total * (t + 1) / threads;
        while (unit < units && (t == threads - 1 || done < goal)) {
            done += unit_columns(&base, unit / kv_heads) + 1;
            unit++;
        }
        jobs[t].last_unit = unit;
    }
    int failed = 0;
#ifdef _OPENMP
    /* torch's own OpenMP runtime (libgomp.so.1 is loaded already): its threads, not a second set
     * competing with them for the cores */
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num();
        if (t < threads && jobs[t].first_unit < jobs[t].last_unit) run_units(&jobs[t]);
    }
    for (int t = 0; t < threads; t++) failed |= jobs[t].failed;
#else
    pthread_t workers[64];
    int started[64] = {0};
    for (int t = 1; t < threads; t++) {
        if (jobs[t].first_unit < jobs[t].last_unit)
            started[t] = pthread_create(&workers[t], NULL, run_units, &jobs[t]) == 0;
        if (jobs[t].first_unit < jobs[t].last_unit && !started[t]) run_units(&jobs[t]); /* no thread: do it here */
    }
    run_units(&jobs[0]);
    failed = jobs[0].failed;
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(workers[t], NULL);
        failed |= jobs[t].failed;
    }
#endif
    return failed ? -1 : 0;
}
