/* onebit_pack.h - v0.1 - the 16 MB artifact: bit packing, ternary packing, FP8/BF16 storage,
 * Brotli (and LZMA where liblzma is present), with a roundtrip gap of zero.  MIT licence (see onebit.h).
 *
 * DO THIS in exactly one C or C++ file:
 *     #define ONEBIT_IMPLEMENTATION
 *     #include "onebit_pack.h"         (includes onebit.h)
 * and link -lbrotlienc -lbrotlidec (and -llzma unless ONEBIT_NO_LZMA is defined).
 *
 * By task:
 *   ob_artifact_pack       model -> artifact bytes (the forward's exact weights, compressed)
 *   ob_artifact_write      ... to a file, atomically
 *   ob_artifact_load       file or bytes -> a model ready for the CPU path (and the GPU path)
 *   ob_artifact_report     payload by part, code bytes (raw and compressed), total vs 16,000,000
 *   ob_pack_bits / ob_unpack_bits, ob_pack_trits / ob_unpack_trits: the bit and trit layouts
 *
 * Zero gap by construction: with cfg.storage_exact (onebit's default) the forward already uses the
 * stored precisions -- signs and bf16 (or fp8) group scales, fp8 embeddings and projections (the
 * tied head included), bf16 vectors -- so the artifact holds the forward's own weights and a model
 * loaded from it computes bit-identical logits. A model trained with the seeds' forward
 * (storage_exact = 0) packs its small tensors in float32 instead; only its head's raw E differs.
 *
 * FORMAT (version 1; little-endian; every offset checked on load)
 *   bytes 0..3    magic "OB1A"
 *   4..7          u32 format version (1)
 *   8             u8 codec of the payload: 0 none, 1 Brotli (quality 11, window 24), 2 LZMA (xz, preset 9e)
 *   9..15         reserved, zero
 *   16..23        u64 header length H
 *   24..31        u64 payload length as stored P
 *   32..39        u64 payload length uncompressed U
 *   40..47        u64 FNV-1a 64 of the uncompressed payload
 *   48..55        u64 FNV-1a 64 of bytes 0..47 and the header text
 *   56..56+H      header: UTF-8 text, one "key=value" per line: every ob_config field (the names of
 *                 ob_config_set), tokenizer_vocab, tokenizer_hash (16 hex digits, FNV-1a 64 of the
 *                 .model file; 0 for bytes), n_tensors, then per stored tensor
 *                 "tensor=<name> <encoding> <rows> <cols> <offset> <bytes>" (offset into the payload)
 *   56+H..        the payload (P bytes, codec as above)
 * Encodings of a tensor's bytes within the uncompressed payload:
 *   binary_bf16 / binary_fp8   rows*cols sign bits then rows*cols/g group scales (bf16 or e4m3fn codes,
 *                              group-major in row-major order). Sign bits: element i (row-major) is
 *                              bit (i % 8) of byte (i / 8), least significant first; 1 means w >= 0
 *                              (+alpha), so sign(0) = +1; the tail of the last byte is zero.
 *   ternary_bf16 / ternary_fp8 trits, five per byte: byte = t0 + 3 t1 + 9 t2 + 27 t3 + 81 t4 with
 *                              t = q + 1 in {0, 1, 2} (q = -1, 0, +1), tail t = 1 (q = 0); then the scales.
 *                              1.6 bits per weight before compression.
 *   fp8 / bf16 / f32           the values as e4m3fn codes, bf16 codes or float32, row-major.
 * Tensors the forward never reads (a tied lm_head, the XNOR seed's vocab_bias, unused gates) are
 * not stored and load as zeros.
 */
#ifndef ONEBIT_PACK_H
#define ONEBIT_PACK_H

#include "onebit.h"

#ifdef __cplusplus
extern "C" {
#endif

#define OB_ARTIFACT_VERSION 1
#define OB_ARTIFACT_BUDGET 16000000
/* The largest model an artifact may describe: a crafted header cannot make the loader allocate more.
 * 2^28 parameters is twice the largest seed; define it larger before including this header for
 * bigger models. */
#ifndef OB_ARTIFACT_MAX_PARAMS
#define OB_ARTIFACT_MAX_PARAMS (1ull << 28)
#endif

typedef enum ob_encoding {        /* append only */
    OB_ENC_BINARY_BF16 = 0,
    OB_ENC_BINARY_FP8 = 1,
    OB_ENC_TERNARY_BF16 = 2,
    OB_ENC_TERNARY_FP8 = 3,
    OB_ENC_FP8 = 4,
    OB_ENC_BF16 = 5,
    OB_ENC_F32 = 6
} ob_encoding;

typedef enum ob_codec { OB_CODEC_NONE = 0, OB_CODEC_BROTLI = 1, OB_CODEC_LZMA = 2 } ob_codec;

typedef struct ob_pack_options {
    int try_lzma;                 /* also compress with LZMA (if compiled in) and keep the smaller */
    int brotli_quality;           /* 11 */
    int brotli_window;            /* 24 */
    int codec;                    /* -1: choose the smallest; else force OB_CODEC_* */
} ob_pack_options;
OB_DEF void ob_pack_options_default(ob_pack_options *o);

typedef struct ob_artifact_part { const char *what; size_t raw_bytes; size_t count; } ob_artifact_part;
typedef struct ob_artifact_info {
    size_t bytes;                 /* the whole artifact */
    size_t payload_raw, payload_stored;
    int codec;
    size_t brotli_bytes, lzma_bytes;   /* each codec's payload size (0 = not tried) */
    ob_artifact_part parts[8];    /* sign bits, trits, scales, fp8, bf16, f32 */
    int n_parts;
    size_t binary_weights;        /* weights stored as signs (or trits) */
} ob_artifact_info;

/* Packs the model's forward weights (ob_model_quantize is run if needed). tok may be NULL (bytes).
 * *out is malloc'd. */
OB_DEF int ob_artifact_pack(ob_model *m, const ob_tokenizer *tok, const ob_pack_options *opt, uint8_t **out, size_t *n_out,
                            ob_artifact_info *info);
OB_DEF int ob_artifact_write(const char *path, const uint8_t *bytes, size_t n);
/* Builds *m (initialised here) from an artifact. name is used in messages. Every failure -- short
 * file, wrong magic or version, bad checksum, a header that does not parse or disagrees with the
 * payload -- is OB_ERR_FORMAT naming the file and the problem; nothing is half-loaded. */
OB_DEF int ob_artifact_load_bytes(ob_model *m, const uint8_t *bytes, size_t n, const char *name, uint64_t *tokenizer_hash);
OB_DEF int ob_artifact_load(ob_model *m, const char *path, uint64_t *tokenizer_hash);
/* Prints the challenge accounting: payload by part, the code files raw and Brotli-compressed,
 * totals against 16,000,000 and FITS / OVER for each way of counting the code. */
OB_DEF void ob_artifact_report(FILE *f, const ob_artifact_info *info, const char *const *code_files, int n_code);

/* The layouts (see FORMAT): n sign bits of w into ceil(n / 8) bytes; back to +-1. */
OB_DEF void ob_pack_bits(const float *w, size_t n, uint8_t *out);
OB_DEF void ob_unpack_bits(const uint8_t *in, size_t n, float *signs);
/* n trits q in {-1, 0, 1} (as floats) into ceil(n / 5) bytes; back. Returns 0 on a byte > 242. */
OB_DEF void ob_pack_trits(const float *q, size_t n, uint8_t *out);
OB_DEF int ob_unpack_trits(const uint8_t *in, size_t n, float *q);
OB_DEF uint64_t ob_fnv1a64(const void *data, size_t n, uint64_t h);

#ifdef ONEBIT_MUON_H
/* The end of a training run (needs onebit_muon.h included first): the final validation, the
 * artifact (written to out_dir/<run_id>.ob1, reported against the budget with the given code files),
 * its reload into the backend and the roundtrip validation (checked equal), the temperature search
 * on training tokens, the sliding-window evaluation, and a generated sample -- printing the seeds'
 * final lines (val_bpb, final_xnor_roundtrip, temp_scaling, final_sliding, artifact, budget). */
OB_DEF int ob_run_finish(ob_run *r, const char *const *code_files, int n_code);
#endif

#ifdef __cplusplus
}
#endif
#endif /* ONEBIT_PACK_H */

/* ================================================================================================
 * Implementation
 * ============================================================================================== */
#if defined(ONEBIT_IMPLEMENTATION) && !defined(ONEBIT_PACK_IMPLEMENTATION_DONE)
#define ONEBIT_PACK_IMPLEMENTATION_DONE

#include <brotli/decode.h>
#include <brotli/encode.h>
#ifndef ONEBIT_NO_LZMA
#include <lzma.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

OB_DEF void ob_pack_options_default(ob_pack_options *o) {
    o->try_lzma = 1;
    o->brotli_quality = 11;
    o->brotli_window = 24;
    o->codec = -1;
}

OB_DEF uint64_t ob_fnv1a64(const void *data, size_t n, uint64_t h) {
    const uint8_t *p = (const uint8_t *)data;
    if (!h) h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ull; }
    return h;
}

OB_DEF void ob_pack_bits(const float *w, size_t n, uint8_t *out) {
    memset(out, 0, (n + 7) / 8);
    for (size_t i = 0; i < n; i++)
        if (w[i] >= 0.0f) out[i >> 3] |= (uint8_t)(1u << (i & 7));
}
OB_DEF void ob_unpack_bits(const uint8_t *in, size_t n, float *signs) {
    for (size_t i = 0; i < n; i++) signs[i] = (in[i >> 3] >> (i & 7)) & 1 ? 1.0f : -1.0f;
}
OB_DEF void ob_pack_trits(const float *q, size_t n, uint8_t *out) {
    for (size_t b = 0; b < (n + 4) / 5; b++) {
        unsigned v = 0, mul = 1;
        for (int k = 0; k < 5; k++, mul *= 3) {
            size_t i = b * 5 + (size_t)k;
            unsigned t = i < n ? (unsigned)((int)q[i] + 1) : 1u;
            v += t * mul;
        }
        out[b] = (uint8_t)v;
    }
}
OB_DEF int ob_unpack_trits(const uint8_t *in, size_t n, float *q) {
    for (size_t b = 0; b < (n + 4) / 5; b++) {
        unsigned v = in[b];
        if (v > 242) return 0;
        for (int k = 0; k < 5; k++, v /= 3) {
            size_t i = b * 5 + (size_t)k;
            if (i < n) q[i] = (float)((int)(v % 3) - 1);
        }
    }
    return 1;
}

static const char *ob__enc_name(int e) {
    static const char *names[] = {"binary_bf16", "binary_fp8", "ternary_bf16", "ternary_fp8", "fp8", "bf16", "f32"};
    return e >= 0 && e <= OB_ENC_F32 ? names[e] : "?";
}
static int ob__enc_from_name(const char *s) {
    for (int e = 0; e <= OB_ENC_F32; e++) if (!strcmp(s, ob__enc_name(e))) return e;
    return -1;
}

/* The encoding of a tensor under a configuration: -1 when it is not stored. */
static int ob__tensor_encoding(const ob_config *c, const ob_tensor_info *t) {
    if (!t->has_grad) return -1; /* never read by the forward */
    if (t->kind == OB_PARAM_QUANT) {
        int tern = c->weight_quant == OB_WEIGHTS_TERNARY;
        return c->scale_fp8 ? (tern ? OB_ENC_TERNARY_FP8 : OB_ENC_BINARY_FP8) : (tern ? OB_ENC_TERNARY_BF16 : OB_ENC_BINARY_BF16);
    }
    if (t->kind == OB_PARAM_EMBED || t->kind == OB_PARAM_FLOAT_MATRIX) {
        if (c->fp8_qat) return OB_ENC_FP8;
        return c->storage_exact ? OB_ENC_BF16 : OB_ENC_F32;
    }
    return c->storage_exact ? OB_ENC_BF16 : OB_ENC_F32;
}

static size_t ob__enc_bytes(int e, size_t numel, int g) {
    size_t groups = numel / (size_t)g;
    switch (e) {
    case OB_ENC_BINARY_BF16: return (numel + 7) / 8 + 2 * groups;
    case OB_ENC_BINARY_FP8: return (numel + 7) / 8 + groups;
    case OB_ENC_TERNARY_BF16: return (numel + 4) / 5 + 2 * groups;
    case OB_ENC_TERNARY_FP8: return (numel + 4) / 5 + groups;
    case OB_ENC_FP8: return numel;
    case OB_ENC_BF16: return 2 * numel;
    default: return 4 * numel;
    }
}

/* Encodes one tensor's forward values (qparams, and qalpha for quantised matrices). */
static void ob__encode_tensor(const ob_model *m, const ob_tensor_info *t, int e, uint8_t *out) {
    const float *q = m->qparams + t->offset;
    int g = m->cfg.group_size;
    size_t groups = t->numel / (size_t)g;
    if (e <= OB_ENC_TERNARY_FP8) {
        const float *al = m->qalpha + t->alpha_offset;
        size_t sign_bytes;
        if (e == OB_ENC_BINARY_BF16 || e == OB_ENC_BINARY_FP8) {
            ob_pack_bits(q, t->numel, out);
            sign_bytes = (t->numel + 7) / 8;
        } else {
            float *trits = (float *)malloc(t->numel * sizeof(float));
            for (size_t k = 0; k < t->numel; k++) trits[k] = q[k] > 0.0f ? 1.0f : q[k] < 0.0f ? -1.0f : 0.0f;
            ob_pack_trits(trits, t->numel, out);
            free(trits);
            sign_bytes = (t->numel + 4) / 5;
        }
        uint8_t *sc = out + sign_bytes;
        for (size_t gi = 0; gi < groups; gi++) {
            if (e == OB_ENC_BINARY_FP8 || e == OB_ENC_TERNARY_FP8) sc[gi] = ob_fp8_from_f32(al[gi]);
            else { uint16_t h = ob_bf16_from_f32(al[gi]); sc[2 * gi] = (uint8_t)h; sc[2 * gi + 1] = (uint8_t)(h >> 8); }
        }
        return;
    }
    for (size_t k = 0; k < t->numel; k++) {
        if (e == OB_ENC_FP8) out[k] = ob_fp8_from_f32(q[k]);
        else if (e == OB_ENC_BF16) { uint16_t h = ob_bf16_from_f32(q[k]); out[2 * k] = (uint8_t)h; out[2 * k + 1] = (uint8_t)(h >> 8); }
        else memcpy(out + 4 * k, q + k, 4);
    }
}

/* Decodes into latent weights from which ob_model_quantize reproduces the stored values exactly:
 * alpha * s for binary (the group mean of |alpha s| is alpha), q alpha / mean|q| for ternary (the
 * seeds' shrinkage fix: the group mean is again alpha), the values themselves otherwise. */
static int ob__decode_tensor(ob_model *m, const ob_tensor_info *t, int e, const uint8_t *in) {
    float *w = m->params + t->offset;
    int g = m->cfg.group_size;
    size_t groups = t->numel / (size_t)g;
    if (e <= OB_ENC_TERNARY_FP8) {
        size_t sign_bytes;
        if (e == OB_ENC_BINARY_BF16 || e == OB_ENC_BINARY_FP8) {
            ob_unpack_bits(in, t->numel, w);
            sign_bytes = (t->numel + 7) / 8;
        } else {
            if (!ob_unpack_trits(in, t->numel, w)) return ob_set_error(OB_ERR_FORMAT, "tensor %s: a trit byte exceeds 242", t->name);
            sign_bytes = (t->numel + 4) / 5;
        }
        const uint8_t *sc = in + sign_bytes;
        for (size_t gi = 0; gi < groups; gi++) {
            float a = (e == OB_ENC_BINARY_FP8 || e == OB_ENC_TERNARY_FP8) ? ob_f32_from_fp8(sc[gi])
                                                                          : ob_f32_from_bf16((uint16_t)(sc[2 * gi] | sc[2 * gi + 1] << 8));
            if (!(a > 0.0f) || !isfinite(a)) return ob_set_error(OB_ERR_FORMAT, "tensor %s: group scale %zu is %g (must be finite and > 0)", t->name, gi, (double)a);
            float *wg = w + gi * (size_t)g;
            if (e == OB_ENC_TERNARY_BF16 || e == OB_ENC_TERNARY_FP8) {
                int nz = 0;
                for (int k = 0; k < g; k++) nz += wg[k] != 0.0f;
                float mean = nz ? (float)nz / (float)g : 1.0f;
                for (int k = 0; k < g; k++) wg[k] = wg[k] * a / mean;
            } else {
                for (int k = 0; k < g; k++) wg[k] *= a;
            }
        }
        return OB_OK;
    }
    for (size_t k = 0; k < t->numel; k++) {
        if (e == OB_ENC_FP8) w[k] = ob_f32_from_fp8(in[k]);
        else if (e == OB_ENC_BF16) w[k] = ob_f32_from_bf16((uint16_t)(in[2 * k] | in[2 * k + 1] << 8));
        else memcpy(w + k, in + 4 * k, 4);
        if (!isfinite(w[k])) return ob_set_error(OB_ERR_FORMAT, "tensor %s: element %zu is not finite", t->name, k);
    }
    return OB_OK;
}

/* The header text: the configuration under ob_config_set's names, the tokenizer, the tensor table. */
static char *ob__artifact_header(const ob_model *m, const ob_tokenizer *tok, const size_t *offs, size_t *len) {
    const ob_config *c = &m->cfg;
    size_t cap = 4096 + (size_t)m->n_tensors * 160, n = 0;
    char *h = (char *)malloc(cap);
    if (!h) return NULL;
#define OB__P(...) (n += (size_t)snprintf(h + n, cap - n, __VA_ARGS__))
    OB__P("vocab_size=%d\nnum_layers=%d\nrecurrence=%d\nmodel_dim=%d\nnum_heads=%d\nnum_kv_heads=%d\nmlp_mult=%d\nembed_dim=%d\n",
          c->vocab_size, c->num_layers, c->recurrence, c->model_dim, c->num_heads, c->num_kv_heads, c->mlp_mult, c->embed_dim);
    OB__P("tie_embeddings=%d\nactivation=%s\ngroup_size=%d\nbinarize_act=%d\nweight_quant=%s\nfp_storage=%d\nscale_fp8=%d\nvocab_bias=%d\n",
          c->tie_embeddings, ob_activation_name(c->activation), c->group_size, c->binarize_act,
          c->weight_quant == OB_WEIGHTS_TERNARY ? "ternary" : "binary", c->fp8_qat, c->scale_fp8, c->vocab_bias);
    OB__P("softcap_type=%s\nlogit_softcap=%.9g\nrope_type=%s\nrope_base=%.9g\nyarn_max_len=%d\ntrain_seq_len=%d\nqk_gain_init=%.9g\n",
          c->softcap_type == OB_SOFTCAP_TANH ? "tanh" : c->softcap_type == OB_SOFTCAP_NONE ? "none" : "poly", (double)c->logit_softcap,
          c->rope_type == OB_ROPE_YARN ? "yarn" : "rope", (double)c->rope_base, c->yarn_max_len, c->train_seq_len, (double)c->qk_gain_init);
    OB__P("qk_norm=%d\nnormed_proj=%d\nsmear=%d\nattn_res=%d\ntied_embed_init_std=%.9g\nz_loss=%.9g\nstorage_exact=%d\n",
          c->qk_norm, c->normed_proj, c->smear, c->attn_res, (double)c->tied_embed_init_std, (double)c->z_loss, c->storage_exact);
    OB__P("tokenizer_vocab=%d\ntokenizer_hash=%016llx\n", tok ? tok->vocab_size : 256, (unsigned long long)(tok ? tok->hash : 0));
    int stored = 0;
    for (int i = 0; i < m->n_tensors; i++) stored += ob__tensor_encoding(c, &m->tensors[i]) >= 0;
    OB__P("n_tensors=%d\n", stored);
    for (int i = 0; i < m->n_tensors; i++) {
        const ob_tensor_info *t = &m->tensors[i];
        int e = ob__tensor_encoding(c, t);
        if (e < 0) continue;
        OB__P("tensor=%s %s %d %d %zu %zu\n", t->name, ob__enc_name(e), t->shape[0], t->shape[1], offs[i], ob__enc_bytes(e, t->numel, c->group_size));
    }
#undef OB__P
    *len = n;
    return h;
}

static void ob__put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint64_t ob__get64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = (v << 8) | p[i]; return v; }

OB_DEF int ob_artifact_pack(ob_model *m, const ob_tokenizer *tok, const ob_pack_options *opt_in, uint8_t **out, size_t *n_out,
                            ob_artifact_info *info) {
    ob_pack_options opt;
    if (opt_in) opt = *opt_in; else ob_pack_options_default(&opt);
    memset(info, 0, sizeof *info);
    if (!m->quantized) ob_model_quantize(m);
    const ob_config *c = &m->cfg;
    size_t *offs = (size_t *)calloc((size_t)m->n_tensors + 1, sizeof(size_t));
    if (!offs) return ob_set_error(OB_ERR_NOMEM, "pack: out of memory");
    size_t U = 0;
    size_t part_bytes[4] = {0, 0, 0, 0}; /* signs/trits, scales, fp8, bf16+f32 */
    for (int i = 0; i < m->n_tensors; i++) {
        const ob_tensor_info *t = &m->tensors[i];
        int e = ob__tensor_encoding(c, t);
        offs[i] = U;
        if (e < 0) continue;
        size_t b = ob__enc_bytes(e, t->numel, c->group_size);
        if (e <= OB_ENC_TERNARY_FP8) {
            size_t sb = e <= OB_ENC_BINARY_FP8 ? (t->numel + 7) / 8 : (t->numel + 4) / 5;
            part_bytes[0] += sb;
            part_bytes[1] += b - sb;
            info->binary_weights += t->numel;
        } else if (e == OB_ENC_FP8) part_bytes[2] += b;
        else part_bytes[3] += b;
        U += b;
    }
    uint8_t *raw = (uint8_t *)malloc(U ? U : 1);
    if (!raw) { free(offs); return ob_set_error(OB_ERR_NOMEM, "pack: out of memory for a %zu-byte payload", U); }
    for (int i = 0; i < m->n_tensors; i++) {
        int e = ob__tensor_encoding(c, &m->tensors[i]);
        if (e >= 0) ob__encode_tensor(m, &m->tensors[i], e, raw + offs[i]);
    }
    size_t hlen;
    char *hdr = ob__artifact_header(m, tok, offs, &hlen);
    free(offs);
    if (!hdr) { free(raw); return ob_set_error(OB_ERR_NOMEM, "pack: out of memory"); }
    /* compress: Brotli always, LZMA when built in; keep the smaller */
    size_t bcap = BrotliEncoderMaxCompressedSize(U) ? BrotliEncoderMaxCompressedSize(U) : U + 1024, blen = bcap;
    uint8_t *bbuf = (uint8_t *)malloc(bcap), *best = raw;
    size_t best_len = U;
    int codec = OB_CODEC_NONE;
    if (bbuf && (opt.codec < 0 || opt.codec == OB_CODEC_BROTLI) &&
        BrotliEncoderCompress(opt.brotli_quality, opt.brotli_window, BROTLI_MODE_GENERIC, U, raw, &blen, bbuf)) {
        info->brotli_bytes = blen;
        if (blen < best_len || opt.codec == OB_CODEC_BROTLI) { best = bbuf; best_len = blen; codec = OB_CODEC_BROTLI; }
    }
    uint8_t *lbuf = NULL;
#ifndef ONEBIT_NO_LZMA
    if (opt.try_lzma && (opt.codec < 0 || opt.codec == OB_CODEC_LZMA)) {
        size_t lcap = U + U / 2 + 65536, lpos = 0;
        lbuf = (uint8_t *)malloc(lcap);
        if (lbuf && lzma_easy_buffer_encode(9 | LZMA_PRESET_EXTREME, LZMA_CHECK_NONE, NULL, raw, U, lbuf, &lpos, lcap) == LZMA_OK) {
            info->lzma_bytes = lpos;
            if (lpos < best_len || opt.codec == OB_CODEC_LZMA) { best = lbuf; best_len = lpos; codec = OB_CODEC_LZMA; }
        }
    }
#endif
    size_t total = 56 + hlen + best_len;
    uint8_t *a = (uint8_t *)malloc(total);
    int r = OB_OK;
    if (!a) r = ob_set_error(OB_ERR_NOMEM, "pack: out of memory");
    else {
        memset(a, 0, 56);
        memcpy(a, "OB1A", 4);
        a[4] = OB_ARTIFACT_VERSION;
        a[8] = (uint8_t)codec;
        ob__put64(a + 16, hlen);
        ob__put64(a + 24, best_len);
        ob__put64(a + 32, U);
        ob__put64(a + 40, ob_fnv1a64(raw, U, 0));
        memcpy(a + 56, hdr, hlen);
        ob__put64(a + 48, ob_fnv1a64(hdr, hlen, ob_fnv1a64(a, 48, 0)));
        memcpy(a + 56 + hlen, best, best_len);
        *out = a;
        *n_out = total;
        info->bytes = total;
        info->payload_raw = U;
        info->payload_stored = best_len;
        info->codec = codec;
        static const char *what[4] = {"weight signs / trits", "group scales", "fp8 tensors", "bf16 / f32 tensors"};
        for (int k = 0; k < 4; k++) {
            if (!part_bytes[k]) continue;
            info->parts[info->n_parts].what = what[k];
            info->parts[info->n_parts].raw_bytes = part_bytes[k];
            info->n_parts++;
        }
    }
    free(hdr); free(raw); free(bbuf); free(lbuf);
    return r;
}

OB_DEF int ob_artifact_write(const char *path, const uint8_t *bytes, size_t n) {
    const void *parts[1] = {bytes};
    size_t sizes[1] = {n};
    return ob__write_file_atomic(path, parts, sizes, 1);
}

/* Reads "key=value" lines; returns the next line's key and value (NUL-terminated in place). */
static char *ob__next_line(char **cursor, char *end, char **value) {
    char *s = *cursor;
    if (s >= end) return NULL;
    char *nl = (char *)memchr(s, '\n', (size_t)(end - s));
    if (!nl) return NULL;
    *nl = 0;
    *cursor = nl + 1;
    char *eq = strchr(s, '=');
    if (!eq) return NULL;
    *eq = 0;
    *value = eq + 1;
    return s;
}

OB_DEF int ob_artifact_load_bytes(ob_model *m, const uint8_t *a, size_t n, const char *name, uint64_t *tokenizer_hash) {
    memset(m, 0, sizeof *m);
    if (!name) name = "<artifact>";
    if (n < 56) return ob_set_error(OB_ERR_FORMAT, "%s: %zu bytes, shorter than an artifact header (56)", name, n);
    if (memcmp(a, "OB1A", 4)) return ob_set_error(OB_ERR_FORMAT, "%s: not a onebit artifact (magic %02x%02x%02x%02x)", name, a[0], a[1], a[2], a[3]);
    uint32_t version = (uint32_t)a[4] | (uint32_t)a[5] << 8 | (uint32_t)a[6] << 16 | (uint32_t)a[7] << 24;
    if (version != OB_ARTIFACT_VERSION) return ob_set_error(OB_ERR_FORMAT, "%s: artifact format version %u, this build reads %d", name, version, OB_ARTIFACT_VERSION);
    int codec = a[8];
    uint64_t H = ob__get64(a + 16), P = ob__get64(a + 24), U = ob__get64(a + 32), hpay = ob__get64(a + 40), hhdr = ob__get64(a + 48);
    if (H > n - 56 || P != n - 56 - H) return ob_set_error(OB_ERR_FORMAT, "%s: truncated or padded: header %llu + payload %llu bytes, the file has %zu after the fixed part",
                                                       name, (unsigned long long)H, (unsigned long long)P, n - 56);
    if (ob_fnv1a64(a + 56, (size_t)H, ob_fnv1a64(a, 48, 0)) != hhdr) return ob_set_error(OB_ERR_FORMAT, "%s: header checksum mismatch (corrupted)", name);
    if (U > ((uint64_t)1 << 36)) return ob_set_error(OB_ERR_FORMAT, "%s: payload of %llu bytes is implausible", name, (unsigned long long)U);
    /* parse the header into a configuration */
    char *hdr = (char *)malloc((size_t)H + 1), *cur = hdr, *end, *key, *val;
    if (!hdr) return ob_set_error(OB_ERR_NOMEM, "%s: out of memory", name);
    memcpy(hdr, a + 56, (size_t)H);
    hdr[H] = 0;
    end = hdr + H;
    ob_config cfg;
    ob_config_default(&cfg);
    uint64_t thash = 0;
    int r = OB_OK, n_tensors = -1;
    char *table = NULL;
    while ((key = ob__next_line(&cur, end, &val))) {
        if (!strcmp(key, "tokenizer_vocab")) continue;
        if (!strcmp(key, "tokenizer_hash")) { thash = strtoull(val, NULL, 16); continue; }
        if (!strcmp(key, "n_tensors")) { n_tensors = atoi(val); table = cur; break; }
        if (!strcmp(key, "scale_fp8")) { cfg.scale_fp8 = atoi(val) != 0; continue; }
        if (!strcmp(key, "binarize_act")) { cfg.binarize_act = atoi(val); continue; }
        if ((r = ob_config_set(&cfg, key, val))) { r = ob_set_error(OB_ERR_FORMAT, "%s: header: %s", name, ob_last_error()); break; }
    }
    if (!r && (n_tensors < 0 || !table)) r = ob_set_error(OB_ERR_FORMAT, "%s: header has no tensor table", name);
    if (!r && ob_config_validate(&cfg)) r = ob_set_error(OB_ERR_FORMAT, "%s: header configuration: %s", name, ob_last_error());
    /* a crafted header must not make us allocate without bound: the model's size is checked first,
     * and the raw payload can be no larger than its tensors at 4 bytes per value plus their scales */
    if (!r) {
        size_t np = ob_config_param_count(&cfg);
        if (np > (size_t)OB_ARTIFACT_MAX_PARAMS)
            r = ob_set_error(OB_ERR_FORMAT, "%s: the header describes a model of %zu parameters, more than this build loads (OB_ARTIFACT_MAX_PARAMS = %llu)",
                             name, np, (unsigned long long)OB_ARTIFACT_MAX_PARAMS);
        else if (U > 4 * (uint64_t)np + 4 * (uint64_t)(np / (size_t)cfg.group_size) + 65536)
            r = ob_set_error(OB_ERR_FORMAT, "%s: a raw payload of %llu bytes is more than the header's %zu-parameter model can hold", name,
                             (unsigned long long)U, np);
    }
    if (!r) r = ob_model_init(m, &cfg);
    /* the payload */
    uint8_t *raw = NULL;
    if (!r) {
        raw = (uint8_t *)malloc(U ? (size_t)U : 1);
        if (!raw) r = ob_set_error(OB_ERR_NOMEM, "%s: out of memory for a %llu-byte payload", name, (unsigned long long)U);
    }
    const uint8_t *pay = a + 56 + H;
    if (!r) {
        if (codec == OB_CODEC_NONE) {
            if (P != U) r = ob_set_error(OB_ERR_FORMAT, "%s: uncompressed payload of %llu bytes, header says %llu", name, (unsigned long long)P, (unsigned long long)U);
            else memcpy(raw, pay, (size_t)U);
        } else if (codec == OB_CODEC_BROTLI) {
            size_t dn = (size_t)U;
            if (BrotliDecoderDecompress((size_t)P, pay, &dn, raw) != BROTLI_DECODER_RESULT_SUCCESS || dn != U)
                r = ob_set_error(OB_ERR_FORMAT, "%s: the Brotli payload does not decompress to %llu bytes (corrupted)", name, (unsigned long long)U);
        } else if (codec == OB_CODEC_LZMA) {
#ifndef ONEBIT_NO_LZMA
            uint64_t memlimit = (uint64_t)1 << 31;
            size_t in_pos = 0, out_pos = 0;
            if (lzma_stream_buffer_decode(&memlimit, 0, NULL, pay, &in_pos, (size_t)P, raw, &out_pos, (size_t)U) != LZMA_OK || out_pos != U)
                r = ob_set_error(OB_ERR_FORMAT, "%s: the LZMA payload does not decompress to %llu bytes (corrupted)", name, (unsigned long long)U);
#else
            r = ob_set_error(OB_ERR_UNSUPPORTED, "%s: LZMA payload, but this build has no liblzma (ONEBIT_NO_LZMA)", name);
#endif
        } else r = ob_set_error(OB_ERR_FORMAT, "%s: unknown payload codec %d", name, codec);
    }
    if (!r && ob_fnv1a64(raw, (size_t)U, 0) != hpay) r = ob_set_error(OB_ERR_FORMAT, "%s: payload checksum mismatch (corrupted)", name);
    /* the tensor table must be the model's, tensor for tensor */
    int seen = 0;
    for (int i = 0; !r && i < m->n_tensors; i++) {
        const ob_tensor_info *t = &m->tensors[i];
        int e = ob__tensor_encoding(&m->cfg, t);
        if (e < 0) continue;
        if (!(key = ob__next_line(&cur, end, &val)) || strcmp(key, "tensor")) { r = ob_set_error(OB_ERR_FORMAT, "%s: the tensor table ends before %s", name, t->name); break; }
        char tname[96], ename[32];
        int rows, cols;
        unsigned long long off, bytes;
        if (sscanf(val, "%95s %31s %d %d %llu %llu", tname, ename, &rows, &cols, &off, &bytes) != 6) { r = ob_set_error(OB_ERR_FORMAT, "%s: bad tensor line '%.80s'", name, val); break; }
        if (strcmp(tname, t->name) || ob__enc_from_name(ename) != e || rows != t->shape[0] || cols != t->shape[1] ||
            bytes != ob__enc_bytes(e, t->numel, m->cfg.group_size) || off > U || bytes > U - off) {
            r = ob_set_error(OB_ERR_FORMAT, "%s: tensor '%s' (%s [%d, %d] at %llu, %llu bytes) does not match the configuration's %s (%s [%d, %d])",
                             name, tname, ename, rows, cols, off, bytes, t->name, ob__enc_name(e), t->shape[0], t->shape[1]);
            break;
        }
        r = ob__decode_tensor(m, t, e, raw + off);
        if (r) r = ob_set_error(OB_ERR_FORMAT, "%s: %s", name, ob_last_error());
        seen++;
    }
    if (!r && seen != n_tensors) r = ob_set_error(OB_ERR_FORMAT, "%s: header lists %d tensors, the configuration stores %d", name, n_tensors, seen);
    free(raw);
    free(hdr);
    if (r) { ob_model_free(m); return r; }
    ob_model_quantize(m);
    if (tokenizer_hash) *tokenizer_hash = thash;
    return OB_OK;
}

OB_DEF int ob_artifact_load(ob_model *m, const char *path, uint64_t *tokenizer_hash) {
    size_t n;
    memset(m, 0, sizeof *m);
    uint8_t *a = ob__read_file(path, &n);
    if (!a) return OB_ERR_IO;
    int r = ob_artifact_load_bytes(m, a, n, path, tokenizer_hash);
    free(a);
    return r;
}

OB_DEF void ob_artifact_report(FILE *f, const ob_artifact_info *info, const char *const *code_files, int n_code) {
    fprintf(f, "artifact: %zu bytes = 56 fixed + header + payload %zu (%s; raw %zu", info->bytes, info->payload_stored,
            info->codec == OB_CODEC_BROTLI ? "brotli" : info->codec == OB_CODEC_LZMA ? "lzma" : "uncompressed", info->payload_raw);
    if (info->brotli_bytes) fprintf(f, ", brotli %zu", info->brotli_bytes);
    if (info->lzma_bytes) fprintf(f, ", lzma %zu", info->lzma_bytes);
    fprintf(f, ")\n");
    for (int i = 0; i < info->n_parts; i++) fprintf(f, "  %-22s %12zu bytes raw\n", info->parts[i].what, info->parts[i].raw_bytes);
    fprintf(f, "  binary weights: %zu\n", info->binary_weights);
    size_t code_raw = 0, code_br = 0;
    for (int i = 0; i < n_code; i++) {
        size_t n;
        uint8_t *src = ob__read_file(code_files[i], &n);
        if (!src) { fprintf(f, "  code %s: unreadable (%s)\n", code_files[i], ob_last_error()); continue; }
        size_t cap = BrotliEncoderMaxCompressedSize(n) + 16, bl = cap;
        uint8_t *b = (uint8_t *)malloc(cap);
        if (!b || !BrotliEncoderCompress(11, 24, BROTLI_MODE_TEXT, n, src, &bl, b)) bl = n;
        fprintf(f, "  code %-32s %9zu bytes raw, %8zu brotli\n", code_files[i], n, bl);
        code_raw += n;
        code_br += bl;
        free(b);
        free(src);
    }
    size_t t_raw = info->bytes + code_raw, t_br = info->bytes + code_br;
    fprintf(f, "budget: artifact %zu + code %zu raw = %zu / %d %s; with the code compressed (%zu) = %zu %s\n", info->bytes, code_raw, t_raw,
            OB_ARTIFACT_BUDGET, t_raw <= OB_ARTIFACT_BUDGET ? "FITS" : "OVER", code_br, t_br, t_br <= OB_ARTIFACT_BUDGET ? "FITS" : "OVER");
}

#ifdef ONEBIT_MUON_H
OB_DEF int ob_run_finish(ob_run *r, const char *const *code_files, int n_code) {
    const ob_run_options *o = &r->opt;
    int T = o->model.train_seq_len, e;
    ob_eval_result pre, rt;
    double t;
    /* 1. the trained model, as the loop left it */
    if ((e = ob_run_eval(r, 1.0f, &pre))) return e;
    ob_run_log(r, "step:%lld/%d val_loss:%.4f val_bpb:%.4f train_time:%.0fms", (long long)r->step, o->sched.iterations, pre.val_loss, pre.bpb, r->elapsed_ms);
    /* 2. the artifact: in a data-parallel run every rank packs the same bytes (its weights are rank
     * 0's), rank 0 alone writes the file */
    if ((e = r->be.pull(&r->be, 0))) return e;
    ob_model_quantize(&r->model);
    uint8_t *art = NULL;
    size_t n;
    ob_artifact_info info;
    t = ob_now_ms();
    if ((e = ob_artifact_pack(&r->model, &r->data.tok, NULL, &art, &n, &info))) return e;
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.ob1", o->out_dir, o->run_id);
    if (r->rank == 0) e = ob_artifact_write(path, art, n);
    if (r->world > 1) { /* the others learn whether rank 0's write worked, rather than wait for it at the next reduction */
        double v = e ? 1.0 : 0.0;
        int e2 = r->be.allreduce(&r->be, &v, 1, OB_REDUCE_MAX);
        if (!e && e2) e = e2;
        else if (!e && v > 0.0) e = ob_set_error(OB_ERR_IO, "rank %d: rank 0 could not write the artifact %s (its log says why)", r->rank, path);
    }
    if (e) { free(art); return e; }
    if (r->rank == 0) {
        ob_run_log(r, "artifact %s packed in %.0f ms", path, ob_now_ms() - t);
        ob_artifact_report(stdout, &info, code_files, n_code);
        if (r->log) ob_artifact_report(r->log, &info, code_files, n_code);
    }
    /* 3. reload: a fresh model from the file (the other ranks: from the same bytes in memory, so no
     * shared file system is needed), its weights into the backend, and the same evaluation */
    ob_model loaded;
    uint64_t th;
    e = r->rank == 0 ? ob_artifact_load(&loaded, path, &th) : ob_artifact_load_bytes(&loaded, art, n, path, &th);
    free(art);
    if (e) return e;
    if (th != r->data.tok.hash) { ob_model_free(&loaded); return ob_set_error(OB_ERR_FORMAT, "%s: written for another tokenizer", path); }
    int same = loaded.n_params == r->model.n_params && !memcmp(loaded.qparams, r->model.qparams, loaded.n_params * sizeof(float));
    memcpy(r->model.params, loaded.params, loaded.n_params * sizeof(float));
    ob_model_free(&loaded);
    ob_model_quantize(&r->model);
    if ((e = r->be.push(&r->be, 0))) return e;
    if ((e = ob_run_eval(r, 1.0f, &rt))) return e;
    ob_run_log(r, "final_xnor_roundtrip val_loss:%.4f val_bpb:%.4f (%s the pre-pack %.4f; forward weights %s)", rt.val_loss, rt.bpb,
               rt.val_loss == pre.val_loss ? "identical to" : "differs from", pre.bpb, same ? "bit-identical" : "differ");
    /* 4. temperature on the next training tokens (never validation) */
    float temp = 1.0f;
    if (o->temp_scaling) {
        size_t nc = o->data_path[0] ? 65536 : 8192;
        int32_t *calib = (int32_t *)malloc(nc * sizeof(int32_t));
        t = ob_now_ms();
        e = ob_token_stream_take(&r->data.train, calib, nc);
        /* data-parallel: every rank searches the same tokens with the same weights (not split: 6 small
         * evaluations); the maximum over ranks only guards the sliding evaluation's consistency */
        if (!e) e = ob_find_temperature(r->be.score, r->be.ctx, calib, nc, &r->data.bpb, T, o->val_batch_seqs, o->model.z_loss, &temp);
        free(calib);
        if (r->world > 1) { /* every rank takes part, a failed one too, so none waits for it */
            double v[2] = {e ? 0.0 : temp, e ? 1.0 : 0.0};
            int e2 = r->be.allreduce(&r->be, v, 2, OB_REDUCE_MAX);
            if (!e && e2) e = e2;
            else if (!e && v[1] > 0.0) e = ob_set_error(OB_ERR_ARG, "rank %d: the temperature search failed on another rank", r->rank);
            else if (!e) temp = (float)v[0];
        }
        if (e) return e;
        ob_run_log(r, "temp_scaling optimal_T:%.2f time:%.0fms", temp, ob_now_ms() - t);
    }
    /* 5. sliding window */
    if (o->sliding_eval) {
        ob_eval_result sw;
        t = ob_now_ms();
        e = ob_eval_sliding(r->be.score, r->be.ctx, &r->data.val, &r->data.bpb, T, o->sliding_stride, o->sliding_batch, temp, 0,
                            r->world > 1 ? r->rank : 0, r->world > 1 ? r->world : 1, &sw);
        if ((e = ob_run_reduce_eval(r, &sw, e))) return e; /* the starts dealt round-robin to ranks, their sums added */
        ob_run_log(r, "final_sliding val_loss:%.4f val_bpb:%.4f (stride=%d, T=%.2f) time:%.0fms", sw.val_loss, sw.bpb, o->sliding_stride, temp, ob_now_ms() - t);
    }
    /* 6. a sample, continuing the start of the validation text */
    if (o->generate_tokens > 0 && r->rank == 0) {
        int np = 32, ng = o->generate_tokens;
        int32_t *ids = (int32_t *)malloc((size_t)(np + ng) * sizeof(int32_t));
        char *text = NULL;
        e = ob_val_read(&r->data.val, 0, (size_t)np, ids);
        if (r->be.next_logits) /* on the backend's device (the GPU's forward when training there) */
            e = e ? e : ob_generate(r->be.next_logits, r->be.ctx, r->model.cfg.vocab_size, T, ids, np, ng, 0.8f, 40, o->seed, ids);
        else {
            if (!e) e = r->be.pull(&r->be, 0);
            if (!e) e = ob_model_generate(&r->model, ids, np, ng, 0.8f, 40, o->seed, ids);
        }
        if (!e) e = ob_tokenizer_decode(&r->data.tok, ids, (size_t)(np + ng), &text, NULL);
        if (!e) ob_run_log(r, "sample (temperature 0.8, top-k 40; the first %d tokens are the prompt):\n%s", np, text);
        free(text);
        free(ids);
        if (e) return e;
    }
    return ob_run_plot(r);
}
#endif

#endif /* ONEBIT_PACK_IMPLEMENTATION */
