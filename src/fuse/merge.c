/*
 * merge.c — the merge engine: runs a recipe (recipe.c) over model folders without loading them.
 *
 * Three steps. Open and plan (merge_plan.c): the models' headers are read and the output's
 * tensors listed with every parameter resolved; nothing is written until the plan stands.
 * Write: the safetensors header (all sizes are known; io's streaming writer), then per tensor
 * and per chunk of 2^20 entries: view (aligned F32) or convert (F16, BF16) the inputs' chunk,
 * merge it into one chunk buffer (merge_methods.c), append that to the temporary file, and drop
 * the chunk's mapped pages from this process (MADV_DONTNEED: they stay in the page cache, not in
 * our resident set). Then config.json and the chosen tokenizer.json beside the weights.
 */
#include "merge_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* ==== writing ================================================================================= */

/* Whether reading this tensor needs a conversion buffer (not F32, or not aligned in the map). */
static bool needs_buffer(const held_tensor *h) {
    return h->t->dtype != ALLOY_DTYPE_F32 || ((uintptr_t)h->t->data % sizeof(float)) != 0;
}

/* Working memory, sized once from the plan: one chunk of output and, per source slot that ever
 * reads a tensor needing conversion, one chunk of conversion. */
typedef struct work {
    float *out;          /* (MERGE_CHUNK) */
    float **conv;        /* (max_sources) each NULL or (MERGE_CHUNK) */
    int n;               /* max_sources */
    size_t bytes;        /* the buffers plus the largest set of masks a tensor needs */
} work;

/* Frees the working buffers. */
static void work_release(work *w) {
    for (int j = 0; w->conv && j < w->n; j++) alloy_free(w->conv[j]);
    alloy_free(w->conv);
    alloy_free(w->out);
    memset(w, 0, sizeof *w);
}

/* Allocates the chunk buffers; w->bytes gets their total with the largest masks included. */
static alloy_status work_init(work *w, const plan *p) {
    memset(w, 0, sizeof *w);
    w->n = p->max_sources;
    w->conv = alloy_calloc((size_t)w->n, sizeof *w->conv);
    if (!w->conv) return ALLOY_STATUS_NOMEM;
    bool sparse = p->r->method == ALLOY_MERGE_METHOD_TIES || p->r->method == ALLOY_MERGE_METHOD_DARE_LINEAR ||
                  p->r->method == ALLOY_MERGE_METHOD_DARE_TIES;
    size_t max_masks = 0, chunk = MERGE_CHUNK * sizeof(float);
    bool ok = (w->out = alloy_malloc(chunk)) != NULL;
    w->bytes = chunk;
    for (int i = 0; i < p->n_out && ok; i++) {
        const out_tensor *o = &p->out[i];
        const plan_slice *sl = &p->slices[o->slice];
        size_t masked = 0;
        for (int j = 0; j < sl->n && ok; j++) {
            if (needs_buffer(o->in[j]) && !w->conv[j]) {
                ok = (w->conv[j] = alloy_malloc(chunk)) != NULL;
                w->bytes += chunk;
            }
            masked += sparse && j != sl->base && o->density[j] < 1.0;
        }
        size_t bytes = masked * ((o->numel + 63) / 64) * sizeof(uint64_t);
        if (bytes > max_masks) max_masks = bytes;
    }
    if (!ok) {
        work_release(w);
        return alloy_fail(ALLOY_STATUS_NOMEM, "merge: cannot allocate the working buffers");
    }
    w->bytes += max_masks;
    return ALLOY_STATUS_OK;
}

/* Merges one output tensor into the sink (the output file). */
static alloy_status merge_tensor(const plan *p, const out_tensor *o, work *w, sink *k) {
    const alloy_merge_recipe *r = p->r;
    const plan_slice *sl = &p->slices[o->slice];
    int n = sl->n, b = sl->base;
    size_t count = o->numel;
    source_set s;
    alloy_status st;
    if (r->method == ALLOY_MERGE_METHOD_SLERP) { // inputs in the order (base, other)
        const held_tensor *held[2] = {o->in[b], o->in[1 - b]};
        float *buf[2] = {w->conv[b], w->conv[1 - b]};
        if ((st = merge_sources_init(&s, 2, NULL, held, buf))) return st;
        st = merge_do_slerp(k, &s, o->t, count);
        merge_sources_free(&s);
        return st;
    }
    if ((st = merge_sources_init(&s, n, NULL, o->in, w->conv))) return st;
    alloy_merge_delta_options opt = {.normalize = o->normalize, .rescale = o->rescale, .lambda = o->lambda};
    double wsum = 0.0;
    switch (r->method) {
    case ALLOY_MERGE_METHOD_LINEAR:
        for (int j = 0; j < n; j++) wsum += o->weight[j];
        st = merge_do_linear(k, &s, o->weight, count, o->normalize ? wsum : 1.0);
        break;
    case ALLOY_MERGE_METHOD_PASSTHROUGH:
        st = merge_do_copy(k, &s, 0, o->scale[0], count);
        break;
    default:
        if (n == 1) { // only the base: nothing to add
            st = merge_do_copy(k, &s, b, NAN, count);
        } else if (r->method == ALLOY_MERGE_METHOD_TASK_ARITHMETIC || r->method == ALLOY_MERGE_METHOD_TIES) {
            bool ties = r->method == ALLOY_MERGE_METHOD_TIES;
            st = merge_do_deltas(k, &s, b, o->weight, o->density, count, ties ? 1 : 0, ties, &opt, NULL);
        } else {
            // DARE: one generator per tensor, seeded from the recipe's seed and the tensor's name,
            // so a tensor's masks do not depend on the order or the number of the others
            uint64_t key = alloy_fnv64(ALLOY_FNV64_INIT, o->name, strlen(o->name));
            uint8_t seed[8];
            for (int i = 0; i < 8; i++) seed[i] = (uint8_t)(r->seed >> (8 * i));
            key = alloy_fnv64(key, seed, sizeof seed);
            alloy_rng rng;
            alloy_rng_seed(&rng, key);
            st = merge_do_deltas(k, &s, b, o->weight, o->density, count, 2, r->method == ALLOY_MERGE_METHOD_DARE_TIES, &opt, &rng);
        }
    }
    merge_sources_free(&s);
    return st;
}

/* The output's tensors as safetensors entries (F32, data streamed later), with the metadata. */
static alloy_status open_output(const plan *p, const char *path, alloy_safetensors_writer **out) {
    alloy_st_entry *e = alloy_calloc((size_t)(p->n_out ? p->n_out : 1), sizeof *e);
    if (!e) return ALLOY_STATUS_NOMEM;
    for (int i = 0; i < p->n_out; i++) {
        const out_tensor *o = &p->out[i];
        e[i].name = o->name;
        e[i].dtype = ALLOY_DTYPE_F32;
        e[i].ndim = o->ndim;
        memcpy(e[i].shape, o->shape, sizeof e[i].shape);
    }
    const char *meta[] = {"format", "pt", "producer", "alloy merge", "merge_method",
                          alloy_merge_method_name(p->r->method), NULL};
    alloy_status s = alloy_safetensors_writer_open(out, path, e, p->n_out, meta);
    alloy_free(e);
    return s;
}

/* Streams every output tensor into dir/model.safetensors. */
static alloy_status write_weights(const plan *p, const char *dir, alloy_progress *progress, size_t *out_bytes,
                                  size_t *buffer_bytes) {
    work w;
    alloy_status s = work_init(&w, p);
    if (s) return s;
    *buffer_bytes = w.bytes;
    char *path = alloy_path_join(dir, "model.safetensors");
    alloy_safetensors_writer *f = NULL;
    s = path ? open_output(p, path, &f) : ALLOY_STATUS_NOMEM;
    if (!s) {
        size_t written = alloy_safetensors_writer_bytes(f);
        double start = alloy_time_now();
        sink k = {.buf = w.out, .file = f};
        for (int i = 0; i < p->n_out && !s; i++) {
            const out_tensor *o = &p->out[i];
            s = merge_tensor(p, o, &w, &k);
            if (s) alloy_error_prefix("%s: tensor \"%s\"", p->r->path, o->name);
            written += o->numel * sizeof(float);
            if (progress)
                alloy_progress_update(progress, "merge: %d/%d tensors, %.1f MB written, %.0fs", i + 1, p->n_out,
                                      (double)written / 1e6, alloy_time_now() - start);
        }
        if (!s) s = alloy_safetensors_writer_commit(f);
        else alloy_safetensors_writer_abort(f);
        *out_bytes = written;
    }
    alloy_free(path);
    work_release(&w);
    return s;
}

/* Copies the chosen tokenizer.json beside the weights (atomically). */
static alloy_status copy_tokenizer(const merge_model *m, const char *dir) {
    if (!m->tokenizer_json) return ALLOY_STATUS_OK;
    char *text, *dst = alloy_path_join(dir, "tokenizer.json");
    size_t n;
    alloy_status s = dst ? alloy_file_read_all(m->tokenizer_json, &text, &n) : ALLOY_STATUS_NOMEM;
    if (!s) {
        s = alloy_write_file_atomic(dst, text, n);
        alloy_free(text);
    }
    alloy_free(dst);
    return s;
}

/* The peak resident set of this process so far (Linux reports ru_maxrss in KiB). */
static size_t peak_rss_bytes(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (size_t)ru.ru_maxrss * 1024 : 0;
}

alloy_status alloy_merge_run(const alloy_merge_recipe *r, const char *out_dir, alloy_progress *progress,
                             alloy_merge_report *report) {
    double start = alloy_time_now();
    if (report) memset(report, 0, sizeof *report);
    plan p;
    alloy_status s = merge_plan_build(&p, r);
    alloy_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if (!s) {
        cfg = p.models[p.config_from].config;
        cfg.n_layer = p.n_layer;
        if (p.tokenizer_from >= 0) memcpy(cfg.tokenizer, p.models[p.tokenizer_from].config.tokenizer, sizeof cfg.tokenizer);
        s = alloy_config_validate(&cfg, "the merged model");
    }
    if (!s && alloy_is_dir(out_dir)) { // writing into a folder being read would replace its files
        char *real = realpath(out_dir, NULL);
        for (int i = 0; real && i < p.n_models && !s; i++)
            if (!strcmp(real, p.models[i].path))
                s = alloy_fail(ALLOY_STATUS_USAGE, "%s: the output folder is model \"%s\" of the recipe", out_dir,
                               p.models[i].label);
        free(real);
    }
    size_t out_bytes = 0, buffer_bytes = 0;
    if (!s) s = alloy_mkdir_p(out_dir);
    if (!s) s = write_weights(&p, out_dir, progress, &out_bytes, &buffer_bytes);
    if (!s) {
        char *cpath = alloy_path_join(out_dir, "config.json");
        s = cpath ? alloy_config_save(&cfg, cpath) : ALLOY_STATUS_NOMEM;
        alloy_free(cpath);
    }
    if (!s && p.tokenizer_from >= 0) s = copy_tokenizer(&p.models[p.tokenizer_from], out_dir);
    if (!s && report) {
        report->n_models = p.n_models;
        report->n_tensors = p.n_out;
        report->n_layer = p.n_layer;
        for (int i = 0; i < p.n_out; i++) report->n_params += p.out[i].numel;
        for (int i = 0; i < p.n_models; i++) report->input_bytes += p.models[i].bytes;
        report->output_bytes = out_bytes;
        report->buffer_bytes = buffer_bytes;
        report->peak_rss = peak_rss_bytes();
        report->seconds = alloy_time_now() - start;
        if (p.tokenizer_from >= 0 && p.models[p.tokenizer_from].tokenizer_json)
            snprintf(report->tokenizer_from, sizeof report->tokenizer_from, "%s", p.models[p.tokenizer_from].label);
    }
    if (progress && p.n_out) alloy_progress_done(progress);
    merge_plan_free(&p);
    return s;
}
