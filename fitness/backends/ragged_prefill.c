/* Prefill attention over left-padded rows, one call per layer (fitness/backends/ragged_attention.py,
 * ``prefill_attend``). Built into the same library as ragged_attention.c.
 *
 * Why: torch's CPU flash kernel runs a prefill's attention (head dim 64, a few hundred
 * columns, bf16) at ~120 GFLOP/s on the real workload, a third of every batched prefill:
 * its tiles are small matrix products with an inner dimension of 64. Here each (row, key
 * head) packs its keys and values once into the layout of the CPU's bf16 dot-product
 * instruction (two bf16 values per 32-bit lane) and runs register-tiled products: 12
 * queries (the query heads of a key head over a few tokens) against 16 columns at a time.
 *
 * Semantics, as ``lean_llama._attention_mask``: the mask ``[rows, width]`` (int64, 1 =
 * a real token) covers every column; its last ``new`` columns are the new tokens. A
 * query at column ``past + i`` sees the row's real columns up to its own. A query on
 * padding gets zeros (its output is never read; the flash path gives it its own value).
 *
 * Numerics, as torch's flash kernel: scores in float32 from bf16 products, softmax in
 * float32, the weights rounded to bf16 for the value products (float32 sums), the
 * output divided by the float32 sum of the unrounded weights and rounded to bf16 once.
 *
 * Layouts (strides in elements): q (row, head, token, d) at q[row * qs_row + head *
 * qs_head + token * qs_token + d]; out [rows, new, heads, dim] contiguous; keys and values
 * [rows, kv_heads, columns, dim], columns contiguous of ``dim`` values, strides kv_row and
 * kv_head (the same for both). bf16 only, dim 64, heads / kv_heads <= 12.
 * Returns 0; -2 for what it does not serve (built without bf16 units included); -1 when
 * scratch memory could not be had. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#define PREFILL_BF16_UNITS 1
#endif

#define SLOTS 12 /* queries per tile: 12 accumulators, one key vector, broadcasts: within 32 registers */
#define DIM 64
#define PAIRS (DIM / 2)

static const uint16_t ZEROS[DIM]; /* a column or query that is not there */

int ragged_prefill_available(void) {
#ifdef PREFILL_BF16_UNITS
    return 1;
#else
    return 0;
#endif
}

#ifdef PREFILL_BF16_UNITS
typedef struct {
    uint32_t *keys;   /* [tiles of 16 columns][32 pairs of d][16 lanes]: lane = column */
    uint32_t *values; /* [column pairs][64 d]: (value of column 2p at d, of column 2p + 1 at d) */
    float *scores;    /* [SLOTS][padded columns] */
    uint16_t *weights; /* [SLOTS][padded columns], bf16 */
    int64_t *columns; /* real columns of the row, in order */
    int64_t capacity;
} Scratch;

static void scratch_free(Scratch *s) {
    free(s->keys), free(s->values), free(s->scores), free(s->weights), free(s->columns);
}

static int scratch_fit(Scratch *s, int64_t width) {
    if (width <= s->capacity) return 0;
    int64_t padded = (width + 15) / 16 * 16;
    scratch_free(s);
    s->keys = (uint32_t *)aligned_alloc(64, (size_t)padded * PAIRS * 4);
    s->values = (uint32_t *)aligned_alloc(64, (size_t)(padded / 2) * DIM * 4);
    s->scores = (float *)aligned_alloc(64, (size_t)SLOTS * padded * 4);
    s->weights = (uint16_t *)aligned_alloc(64, (size_t)SLOTS * padded * 2);
    s->columns = (int64_t *)malloc((size_t)padded * 8);
    s->capacity = (s->keys && s->values && s->scores && s->weights && s->columns) ? padded : 0;
    return s->capacity ? 0 : -1;
}

static inline uint32_t pair_of(const uint16_t *lo, const uint16_t *hi, int64_t d) {
    return (uint32_t)lo[d] | ((uint32_t)hi[d] << 16);
}

/* Keys and values of a row's real columns (``count`` of them) in the dot-product layouts;
 * columns past ``count`` up to the padded length are zeros. */
static void pack(Scratch *s, const uint16_t *keys, const uint16_t *values, int64_t count) {
    int64_t padded = (count + 15) / 16 * 16;
    for (int64_t tile = 0; tile < padded / 16; tile++) {
        uint32_t *dst = s->keys + tile * PAIRS * 16;
        for (int lane = 0; lane < 16; lane++) {
            int64_t c = tile * 16 + lane;
            const uint32_t *src = (const uint32_t *)(c < count ? keys + s->columns[c] * DIM : ZEROS);
            for (int p = 0; p < PAIRS; p++) dst[p * 16 + lane] = src[p];
        }
    }
    for (int64_t pair = 0; pair < padded / 2; pair++) {
        int64_t c = 2 * pair;
        const uint16_t *a = c < count ? values + s->columns[c] * DIM : ZEROS;
        const uint16_t *b = c + 1 < count ? values + s->columns[c + 1] * DIM : ZEROS;
        uint32_t *dst = s->values + pair * DIM;
        for (int64_t d = 0; d < DIM; d++) dst[d] = pair_of(a, b, d);
    }
}

/* scores[slot][0 .. tiles*16) = q[slot] . key for the first ``tiles`` tiles of packed keys */
static void score_tiles(const Scratch *s, const uint16_t *const *q, int64_t tiles, int64_t stride) {
    for (int64_t tile = 0; tile < tiles; tile++) {
        __m512 acc[SLOTS];
        for (int k = 0; k < SLOTS; k++) acc[k] = _mm512_setzero_ps();
        const uint32_t *keys = s->keys + tile * PAIRS * 16;
        for (int p = 0; p < PAIRS; p++) {
            __m512bh column_pairs = (__m512bh)_mm512_load_si512((const void *)(keys + p * 16));
            for (int k = 0; k < SLOTS; k++) {
                uint32_t qp;
                memcpy(&qp, q[k] + 2 * p, 4);
                acc[k] = _mm512_dpbf16_ps(acc[k], (__m512bh)_mm512_set1_epi32((int)qp), column_pairs);
            }
        }
        for (int k = 0; k < SLOTS; k++) _mm512_store_ps(s->scores + k * stride + tile * 16, acc[k]);
    }
}

/* out[slot] = sum over column pairs of weights . values, one 16-wide quarter of d at a time */
static void weigh_values(const Scratch *s, int64_t pairs, int64_t stride, __m512 sums[][4]) {
    for (int quarter = 0; quarter < 4; quarter++) {
        __m512 acc[SLOTS];
        for (int k = 0; k < SLOTS; k++) acc[k] = _mm512_setzero_ps();
        for (int64_t pair = 0; pair < pairs; pair++) {
            __m512bh v = (__m512bh)_mm512_load_si512((const void *)(s->values + pair * DIM + quarter * 16));
            for (int k = 0; k < SLOTS; k++) {
                uint32_t wp;
                memcpy(&wp, s->weights + k * stride + 2 * pair, 4);
                acc[k] = _mm512_dpbf16_ps(acc[k], (__m512bh)_mm512_set1_epi32((int)wp), v);
            }
        }
        for (int k = 0; k < SLOTS; k++) sums[k][quarter] = acc[k];
    }
}

typedef struct {
    const uint16_t *q;
    uint16_t *out;
    const uint16_t *keys, *values;
    const int64_t *mask;
    int64_t heads, kv_heads, new_tokens, width, qs_row, qs_head, qs_token, kv_row, kv_head;
    float scale;
} Prefill;

/* One (row, key head): its query heads over every new token, tile by tile. */
static void prefill_unit(const Prefill *job, Scratch *s, int64_t row, int64_t head) {
    const int64_t group = job->heads / job->kv_heads, per_tile = SLOTS / group, past = job->width - job->new_tokens;
    const int64_t *mask = job->mask + row * job->width;
    int64_t count = 0;
    for (int64_t c = 0; c < job->width; c++)
        if (mask[c]) s->columns[count++] = c;
    const uint16_t *keys = job->keys + row * job->kv_row + head * job->kv_head;
    const uint16_t *values = job->values + row * job->kv_row + head * job->kv_head;
    pack(s, keys, values, count);
    const int64_t stride = s->capacity;
    /* a real new token sees the row's real columns up to its own: a prefix of the packed columns */
    int64_t seen = 0, before_new = 0;
    for (int64_t c = 0; c < past; c++) before_new += mask[c] != 0;
    for (int64_t first = 0; first < job->new_tokens; first += per_tile) {
        const uint16_t *q[SLOTS];
        int64_t visible[SLOTS], most = 0;
        for (int k = 0; k < SLOTS; k++) {
            int64_t token = first + k / group, g = k % group;
            visible[k] = 0;
            q[k] = ZEROS;
            if (k < per_tile * group && token < job->new_tokens)
                q[k] = job->q + row * job->qs_row + (head * group + g) * job->qs_head + token * job->qs_token;
        }
        for (int64_t t = 0; t < per_tile && first + t < job->new_tokens; t++) {
            int real = mask[past + first + t] != 0;
            seen += real;
            for (int64_t g = 0; g < group; g++) visible[t * group + g] = real ? before_new + seen : 0;
        }
        for (int k = 0; k < SLOTS; k++) most = visible[k] > most ? visible[k] : most;
        int64_t tiles = (most + 15) / 16;
        if (tiles) score_tiles(s, q, tiles, stride);
        float total[SLOTS];
        for (int k = 0; k < SLOTS; k++) {
            float *score = s->scores + k * stride, best = -3.0e38f, sum = 0.0f;
            uint16_t *weight = s->weights + k * stride;
            int64_t n = visible[k];
            for (int64_t i = 0; i < n; i++) best = score[i] > best ? score[i] : best;
            for (int64_t i = 0; i < n; i++) {
                score[i] = expf((score[i] - best) * job->scale);
                sum += score[i];
            }
            for (int64_t i = 0; i < tiles * 16; i += 16) /* rounded to nearest even, 16 at a time */
                _mm256_store_si256((__m256i *)(weight + i), (__m256i)_mm512_cvtneps_pbh(_mm512_load_ps(score + i)));
            for (int64_t i = n; i < tiles * 16; i++) weight[i] = 0;
            total[k] = sum;
        }
        __m512 sums[SLOTS][4];
        weigh_values(s, tiles * 8, stride, sums);
        for (int k = 0; k < SLOTS; k++) {
            int64_t token = first + k / group, g = k % group;
            if (k >= per_tile * group || token >= job->new_tokens) continue;
            uint16_t *out = job->out + ((row * job->new_tokens + token) * job->heads + head * group + g) * DIM;
            __m512 inverse = _mm512_set1_ps(visible[k] ? 1.0f / total[k] : 0.0f);
            for (int quarter = 0; quarter < 4; quarter++)
                _mm256_storeu_si256((__m256i *)(out + quarter * 16),
                                    (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(sums[k][quarter], inverse)));
        }
    }
}
#endif

int ragged_prefill_attention(const void *q, void *out, const void *keys, const void *values, const int64_t *mask,
                             int64_t rows, int64_t heads, int64_t kv_heads, int64_t new_tokens, int64_t width,
                             int64_t dim, int64_t qs_row, int64_t qs_head, int64_t qs_token, int64_t kv_row,
                             int64_t kv_head, float scale, int threads) {
#ifdef PREFILL_BF16_UNITS
    if (dim != DIM || kv_heads < 1 || heads % kv_heads || heads / kv_heads > SLOTS) return -2;
    Prefill job = {(const uint16_t *)q, (uint16_t *)out, (const uint16_t *)keys, (const uint16_t *)values, mask,
                   heads, kv_heads, new_tokens, width, qs_row, qs_head, qs_token, kv_row, kv_head, scale};
    int failed = 0;
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        Scratch s = {0};
        int ready = scratch_fit(&s, width) == 0;
        failed |= !ready;
#pragma omp for schedule(dynamic, 1)
        for (int64_t unit = 0; unit < rows * kv_heads; unit++) /* every thread meets the loop: no lost barrier */
            if (ready) prefill_unit(&job, &s, unit / kv_heads, unit % kv_heads);
        scratch_free(&s);
    }
    return failed ? -1 : 0;
#else
    (void)q, (void)out, (void)keys, (void)values, (void)mask, (void)rows, (void)heads, (void)kv_heads;
    (void)new_tokens, (void)width, (void)dim, (void)qs_row, (void)qs_head, (void)qs_token, (void)kv_row;
    (void)kv_head, (void)scale, (void)threads;
    return -2;
#endif
}
