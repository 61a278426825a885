/*
 * prepare.c — the front of the pipeline: sources of documents in, token shards out.
 *
 *   pass 1, per source:  read -> normalise -> dedup (against every source) -> held-out split
 *                        -> tokenize -> temporary token files (one per source and split)
 *   pass 2 (mix.c):      interleave the sources' documents by weight into shards
 *
 * The held-out rule: a document goes whole to one side, chosen by a hash of its text and the
 * seed (so a duplicate can never sit on both sides); a document of 64 KiB or more gives the
 * tail `val_fraction` of its bytes, cut at a line end, to the held-out side and the rest to
 * training, so that a source made of a few large files still has held-out text.
 */
#include "alloy/options.h"
#include "prepare_internal.h"

#include <cJSON.h>
#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LARGE_DOC (64u * 1024u)
#define MIX_UNIT (64u * 1024u)

alloy_prepare_options alloy_prepare_defaults(void) {
    alloy_prepare_options o;
    memset(&o, 0, sizeof o);
    o.norm = ALLOY_NORM_NFC;
    o.dedup = alloy_dedup_defaults();
    o.val_fraction = 0.05;
    o.seed = 1337;
    o.shard_tokens = 100000000ULL;
    o.eot = true;
    return o;
}

/* ---- temporary token files ---- */

static alloy_status tokfile_open(tokfile *f, const char *dir, int source, const char *split) {
    char name[64];
    snprintf(name, sizeof name, "%d.%s.tokens", source, split);
    f->path = alloy_path_join(dir, name);
    if (!f->path) return ALLOY_STATUS_NOMEM;
    f->fp = fopen(f->path, "w+b");
    if (!f->fp) return alloy_fail(ALLOY_STATUS_IO, "%s: cannot create a temporary file", f->path);
    return ALLOY_STATUS_OK;
}

static alloy_status tokfile_add_doc(tokfile *f, const int32_t *ids, size_t n) {
    if (n == 0) return ALLOY_STATUS_OK;
    if (fwrite(ids, sizeof(int32_t), n, f->fp) != n) return alloy_fail(ALLOY_STATUS_IO, "%s: write failed (disk full?)", f->path);
    if (f->n_docs == f->cap_docs) {
        size_t nc = f->cap_docs ? 2 * f->cap_docs : 1024;
        uint64_t *p = alloy_realloc(f->doc_end, f->cap_docs * sizeof(uint64_t), nc * sizeof(uint64_t));
        if (!p) return ALLOY_STATUS_NOMEM;
        f->doc_end = p;
        f->cap_docs = nc;
    }
    f->tokens += n;
    f->doc_end[f->n_docs++] = f->tokens;
    return ALLOY_STATUS_OK;
}

void prep_tokfile_close(tokfile *f) {
    if (f->fp) fclose(f->fp);
    if (f->path) unlink(f->path);
    alloy_free(f->path);
    alloy_free(f->doc_end);
    memset(f, 0, sizeof *f);
}

/* ---- pass 1 ---- */

typedef struct pass1 {
    const alloy_prepare_options *opt;
    alloy_encoder *enc;
    int32_t eot;          /* -1: none */
    alloy_dedup *dedup;   /* NULL: no dedup */
    uint64_t next_id;     /* document ids for the dedup */
    FILE *log;            /* dedup log or NULL */
    alloy_map64 where_of; /* doc id -> offset in wheres (kept documents, for the log) */
    char *wheres;
    size_t wheres_n, wheres_cap;
    alloy_ids ids;
    alloy_progress prog;
    double t0, last_draw;
    uint64_t bytes_done;
} pass1;

static bool goes_to_val(const pass1 *p, const char *text, size_t n) {
    uint64_t h = alloy_fnv64(alloy_fnv64(ALLOY_FNV64_INIT, &p->opt->seed, sizeof p->opt->seed), text, n);
    return (double)(h >> 11) * 0x1.0p-53 < p->opt->val_fraction;
}

/* Tokenizes a document into f, as units of about MIX_UNIT bytes (the mix takes whole units,
 * so a source made of one large file can still be mixed at any share); the end-of-text token
 * follows the last unit. */
static alloy_status encode_to(pass1 *p, tokfile *f, const char *text, size_t n) {
    size_t off = 0;
    while (off < n) {
        size_t end = n - off > 2 * MIX_UNIT ? alloy_tokenizer_safe_cut(text, n, off + MIX_UNIT) : n;
        p->ids.n = 0;
        alloy_status s = alloy_encoder_encode(p->enc, text + off, end - off, 0, &p->ids);
        if (!s && end == n && p->eot >= 0) s = alloy_ids_push(&p->ids, p->eot);
        if (!s) s = tokfile_add_doc(f, p->ids.data, p->ids.n);
        if (s) return s;
        off = end;
    }
    return ALLOY_STATUS_OK;
}

static alloy_status remember_where(pass1 *p, uint64_t id, const char *where) {
    size_t len = strlen(where) + 1;
    if (p->wheres_n + len > p->wheres_cap) {
        size_t nc = p->wheres_cap ? 2 * p->wheres_cap : 1 << 16;
        while (nc < p->wheres_n + len) nc *= 2;
        char *w = alloy_realloc(p->wheres, p->wheres_cap, nc);
        if (!w) return ALLOY_STATUS_NOMEM;
        p->wheres = w;
        p->wheres_cap = nc;
    }
    memcpy(p->wheres + p->wheres_n, where, len);
    alloy_status s = alloy_map64_put(&p->where_of, id, p->wheres_n);
    p->wheres_n += len;
    return s;
}

static void log_drop(pass1 *p, const source_state *ss, const char *where, const alloy_dedup_verdict *v) {
    uint64_t off;
    const char *of = alloy_map64_get(&p->where_of, v->match_id, &off) ? p->wheres + off : "?";
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "source", ss->src->name);
    cJSON_AddStringToObject(j, "doc", where);
    cJSON_AddStringToObject(j, "kind", v->kind == ALLOY_DEDUP_EXACT ? "exact" : "near");
    cJSON_AddStringToObject(j, "duplicate_of", of);
    cJSON_AddNumberToObject(j, "jaccard", round(v->jaccard * 1e4) / 1e4);
    char *line = cJSON_PrintUnformatted(j);
    if (line) fprintf(p->log, "%s\n", line);
    cJSON_free(line);
    cJSON_Delete(j);
}

/* Whether the caller asked to stop. */
static bool stopped(const alloy_prepare_options *o) { return o->stop && *o->stop; }

/* The progress line: redrawn on a terminal (5 times a second), else a line every
 * progress_seconds (default 5). */
static void draw(pass1 *p, const source_state *ss, const alloy_reader *r, int k, int n_sources) {
    double now = alloy_time_now(), every = p->prog.tty ? 0.2 : p->opt->progress_seconds > 0 ? p->opt->progress_seconds : 5.0;
    if (p->opt->quiet || now - p->last_draw < every) return;
    p->last_draw = now;
    alloy_progress_update(&p->prog, "prepare: source %d/%d %s: %llu docs, %.1f MB (%.1f MB/s) | dropped %llu exact, %llu near",
                          k + 1, n_sources, ss->src->name, (unsigned long long)alloy_reader_get_stats(r)->docs, p->bytes_done / 1e6,
                          p->bytes_done / 1e6 / (now - p->t0 + 1e-9), (unsigned long long)ss->dropped_exact,
                          (unsigned long long)ss->dropped_near);
}

/* Reads one source through normalisation, dedup, split and tokenizing into its token files. */
static alloy_status read_source(pass1 *p, source_state *ss, int k, int n_sources) {
    const alloy_prepare_options *o = p->opt;
    alloy_reader *r;
    alloy_status s = alloy_reader_open(&r, ss->src->paths, ss->src->n_paths, &o->reader);
    if (s) {
        alloy_error_prefix("source %s", ss->src->name);
        return s;
    }
    for (;;) {
        const char *raw;
        size_t raw_n;
        bool end;
        if (stopped(o) || (s = alloy_reader_next(r, &raw, &raw_n, &end)) || end) break;
        p->bytes_done += raw_n;
        char *text;
        size_t n;
        alloy_norm_stats ns;
        if ((s = alloy_normalize(raw, raw_n, o->norm, &text, &n, &ns))) break;
        ss->norm.invalid_replaced += ns.invalid_replaced;
        ss->norm.controls_removed += ns.controls_removed;
        ss->norm.line_ends_converted += ns.line_ends_converted;
        size_t lead = 0;
        while (lead < n && (text[lead] == ' ' || text[lead] == '\n' || text[lead] == '\t')) lead++;
        if (o->reader.separator && lead < n) { // pieces cut at a separator lose the blank space around it
            size_t last = n;
            while (last > lead && (text[last - 1] == ' ' || text[last - 1] == '\n' || text[last - 1] == '\t')) last--;
            memmove(text, text + lead, last - lead);
            n = last - lead;
            text[n] = '\0';
            lead = 0;
        }
        if (lead == n) { // nothing but whitespace
            ss->dropped_empty++;
            alloy_free(text);
            continue;
        }
        if (p->dedup) {
            alloy_dedup_verdict v;
            uint64_t id = p->next_id++;
            if ((s = alloy_dedup_check(p->dedup, text, n, id, &v))) {
                alloy_free(text);
                break;
            }
            if (v.kind != ALLOY_DEDUP_KEEP) {
                if (v.kind == ALLOY_DEDUP_EXACT) ss->dropped_exact++;
                else ss->dropped_near++;
                if (p->log) log_drop(p, ss, alloy_reader_where(r), &v);
                alloy_free(text);
                draw(p, ss, r, k, n_sources);
                continue;
            }
            if (p->log && (s = remember_where(p, id, alloy_reader_where(r)))) {
                alloy_free(text);
                break;
            }
        }
        if (n >= LARGE_DOC && o->val_fraction > 0) {
            size_t cut = n - (size_t)((double)n * o->val_fraction);
            while (cut < n && text[cut - 1] != '\n') cut++; // the held-out tail starts at a line
            s = encode_to(p, &ss->split[SPLIT_TRAIN], text, cut);
            if (!s && cut < n) s = encode_to(p, &ss->split[SPLIT_VAL], text + cut, n - cut);
        } else {
            s = encode_to(p, &ss->split[goes_to_val(p, text, n) ? SPLIT_VAL : SPLIT_TRAIN], text, n);
        }
        alloy_free(text);
        if (s) break;
        draw(p, ss, r, k, n_sources);
    }
    if (s && s != ALLOY_STATUS_NOMEM) alloy_error_prefix("source %s (%s)", ss->src->name, alloy_reader_where(r));
    ss->rs = *alloy_reader_get_stats(r);
    alloy_reader_close(r);
    return s;
}

/* ---- the manifest ---- */

static cJSON *shard_list(const split_out *so) { return cJSON_Duplicate(so->shards, true); }

static alloy_status write_manifest(const alloy_prepare_options *o, const alloy_tokenizer *tok, int32_t eot,
                                   const source_state *ss, const split_out *tr, const split_out *va, const mix_plan *plan) {
    cJSON *m = cJSON_CreateObject();
    char hex[32];
    cJSON_AddStringToObject(m, "format", "alloy-token-shards");
    cJSON_AddNumberToObject(m, "version", ALLOY_SHARD_VERSION);
    cJSON_AddStringToObject(m, "tokenizer", alloy_tokenizer_name(tok));
    snprintf(hex, sizeof hex, "%016" PRIx64, alloy_tokenizer_hash(tok));
    cJSON_AddStringToObject(m, "tokenizer_hash", hex);
    if (!strcmp(alloy_tokenizer_name(tok), "bpe")) cJSON_AddStringToObject(m, "tokenizer_file", "tokenizer.json");
    cJSON_AddNumberToObject(m, "vocab_size", alloy_tokenizer_vocab_size(tok));
    if (eot >= 0) cJSON_AddNumberToObject(m, "eot", eot);
    else cJSON_AddNullToObject(m, "eot");
    static const char *forms[] = {"none", "nfc", "nfkc"};
    cJSON_AddStringToObject(m, "normalization", forms[o->norm]);
    cJSON *d = cJSON_AddObjectToObject(m, "dedup");
    cJSON_AddBoolToObject(d, "exact", o->dedup_exact);
    if (o->dedup_minhash) {
        cJSON *mh = cJSON_AddObjectToObject(d, "minhash");
        cJSON_AddNumberToObject(mh, "shingle_words", o->dedup.shingle);
        cJSON_AddNumberToObject(mh, "permutations", o->dedup.permutations);
        cJSON_AddNumberToObject(mh, "bands", o->dedup.bands);
        cJSON_AddNumberToObject(mh, "rows", o->dedup.rows);
        cJSON_AddNumberToObject(mh, "threshold", o->dedup.threshold);
    } else {
        cJSON_AddNullToObject(d, "minhash");
    }
    cJSON_AddNumberToObject(m, "val_fraction", o->val_fraction);
    char seed[24];
    snprintf(seed, sizeof seed, "%" PRIu64, o->seed);
    cJSON_AddStringToObject(m, "seed", seed);
    cJSON_AddBoolToObject(m, "mixed_by_weight", o->mix);
    uint64_t files = 0, docs = 0;
    cJSON *srcs = cJSON_AddArrayToObject(m, "sources");
    for (int k = 0; k < o->n_sources; k++) {
        const source_state *x = &ss[k];
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "name", x->src->name);
        cJSON *paths = cJSON_AddArrayToObject(j, "paths");
        for (int i = 0; i < x->src->n_paths; i++) cJSON_AddItemToArray(paths, cJSON_CreateString(x->src->paths[i]));
        cJSON_AddNumberToObject(j, "weight", plan->weight[k]);
        cJSON_AddNumberToObject(j, "files", (double)x->rs.files);
        cJSON_AddNumberToObject(j, "skipped_binary_files", (double)x->rs.skipped_binary);
        cJSON_AddNumberToObject(j, "documents", (double)x->rs.docs);
        cJSON_AddNumberToObject(j, "bytes", (double)x->rs.bytes);
        cJSON_AddNumberToObject(j, "skipped_malformed", (double)x->rs.malformed);
        cJSON_AddNumberToObject(j, "skipped_missing_field", (double)x->rs.missing_field);
        if (x->rs.first_bad[0]) cJSON_AddStringToObject(j, "first_skipped", x->rs.first_bad);
        cJSON_AddNumberToObject(j, "invalid_utf8_replaced", (double)x->norm.invalid_replaced);
        cJSON_AddNumberToObject(j, "control_chars_removed", (double)x->norm.controls_removed);
        cJSON_AddNumberToObject(j, "dropped_empty", (double)x->dropped_empty);
        cJSON_AddNumberToObject(j, "dropped_exact_duplicates", (double)x->dropped_exact);
        cJSON_AddNumberToObject(j, "dropped_near_duplicates", (double)x->dropped_near);
        for (int sp = 0; sp < 2; sp++) {
            cJSON *o2 = cJSON_AddObjectToObject(j, sp ? "val" : "train");
            cJSON_AddNumberToObject(o2, "documents", (double)x->split[sp].n_docs);
            cJSON_AddNumberToObject(o2, "tokens", (double)x->split[sp].tokens);
            cJSON_AddNumberToObject(o2, "tokens_written", (double)plan->written[sp][k]);
            cJSON_AddNumberToObject(o2, "epochs", x->split[sp].tokens ? (double)plan->written[sp][k] / (double)x->split[sp].tokens : 0.0);
        }
        cJSON_AddItemToArray(srcs, j);
        files += x->rs.files;
        docs += x->rs.docs;
    }
    cJSON_AddNumberToObject(m, "files", (double)files);
    cJSON_AddNumberToObject(m, "documents", (double)docs);
    cJSON_AddNumberToObject(m, "train_tokens", (double)tr->tokens);
    cJSON_AddNumberToObject(m, "val_tokens", (double)va->tokens);
    cJSON_AddItemToObject(m, "train_shards", shard_list(tr));
    cJSON_AddItemToObject(m, "val_shards", shard_list(va));
    char *p = alloy_path_join(o->out_dir, "manifest.json");
    alloy_status s = p ? alloy_json_write_file(p, m) : ALLOY_STATUS_NOMEM;
    alloy_free(p);
    cJSON_Delete(m);
    return s;
}

/* Refuses to mix with an earlier prepare's output; removes an interrupted run's leftovers. */
static alloy_status check_out_dir(const char *dir, const char *tmp) {
    if (alloy_is_dir(tmp)) {
        DIR *d = opendir(tmp);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            char *f = alloy_path_join(tmp, e->d_name);
            if (f && e->d_name[0] != '.') unlink(f);
            alloy_free(f);
        }
        if (d) closedir(d);
        rmdir(tmp);
    }
    DIR *d = opendir(dir);
    if (!d) return ALLOY_STATUS_OK;
    struct dirent *e;
    alloy_status s = ALLOY_STATUS_OK;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (!strcmp(e->d_name, "manifest.json") || (n > 4 && !strcmp(e->d_name + n - 4, ".bin"))) {
            s = alloy_fail(ALLOY_STATUS_USAGE, "%s: already holds token shards (%s); choose an empty folder", dir, e->d_name);
            break;
        }
    }
    closedir(d);
    return s;
}

static alloy_status check_options(const alloy_prepare_options *o) {
    if (o->n_sources < 1) return alloy_fail(ALLOY_STATUS_USAGE, "no input");
    if (!(o->val_fraction >= 0.0 && o->val_fraction < 1.0))
        return alloy_fail_option(ALLOY_STATUS_USAGE, "val_fraction", "must lie in [0, 1), got %g", o->val_fraction);
    if (o->shard_tokens < 1024) return alloy_fail_option(ALLOY_STATUS_USAGE, "shard_tokens", "must be at least 1024");
    for (int k = 0; k < o->n_sources; k++) {
        if (o->sources[k].n_paths < 1) return alloy_fail(ALLOY_STATUS_USAGE, "source %s has no path", o->sources[k].name);
        if (o->mix && !(o->sources[k].weight >= 0.0 && isfinite(o->sources[k].weight)))
            return alloy_fail_option(ALLOY_STATUS_USAGE, "mix", ": weight of %s must be >= 0", o->sources[k].name);
        for (int j = 0; j < k; j++)
            if (!strcmp(o->sources[j].name, o->sources[k].name))
                return alloy_fail(ALLOY_STATUS_USAGE, "two sources are named %s", o->sources[k].name);
    }
    return ALLOY_STATUS_OK;
}

/* Removes the shards of one split written so far (after a failure or a stop). */
static void remove_shards(const split_out *so) {
    char name[64];
    for (int i = 0; i < so->n_shards; i++) {
        snprintf(name, sizeof name, "%s-%05d.bin", so->prefix, i);
        char *f = alloy_path_join(so->dir, name);
        if (f) unlink(f);
        alloy_free(f);
    }
}

/* Pass 2 and what ends it: the mix into shards, tokenizer.json, the manifest; nothing when the
 * caller stops (*halted then says so). */
static alloy_status write_outputs(const alloy_prepare_options *o, const alloy_tokenizer *tok, int32_t eot, source_state *ss,
                                  split_out *tr, split_out *va, mix_plan *plan, bool *halted) {
    alloy_status s = ALLOY_STATUS_OK;
    if (!(*halted = stopped(o))) s = prep_mix(o, ss, tr, va, plan);
    if (!s && !(*halted = stopped(o)) && !strcmp(alloy_tokenizer_name(tok), "bpe")) {
        char *tj = alloy_path_join(o->out_dir, "tokenizer.json");
        s = tj ? alloy_tokenizer_save(tok, tj) : ALLOY_STATUS_NOMEM;
        alloy_free(tj);
    }
    if (!s && !(*halted = stopped(o))) s = write_manifest(o, tok, eot, ss, tr, va, plan);
    return s;
}

alloy_status alloy_prepare(const alloy_prepare_options *o, const alloy_tokenizer *tok, alloy_prepare_report *rep) {
    memset(rep, 0, sizeof *rep);
    double t_start = alloy_time_now();
    alloy_status s = check_options(o);
    if (s) return s;
    char *tmp = alloy_path_join(o->out_dir, ".prepare-tmp");
    if (!tmp) return ALLOY_STATUS_NOMEM;
    bool made_out = !alloy_is_dir(o->out_dir);
    if ((s = check_out_dir(o->out_dir, tmp)) || (s = alloy_mkdir_p(tmp))) {
        alloy_free(tmp);
        return s;
    }
    pass1 p;
    memset(&p, 0, sizeof p);
    p.opt = o;
    p.eot = o->eot ? alloy_tokenizer_special_id(tok, "<|endoftext|>") : -1;
    alloy_progress_init(&p.prog, stderr, 1);
    p.t0 = p.last_draw = alloy_time_now();
    source_state *ss = alloy_calloc((size_t)o->n_sources, sizeof *ss);
    split_out tr = {o->out_dir, "train", (uint32_t)alloy_tokenizer_vocab_size(tok), o->shard_tokens, .shards = cJSON_CreateArray()};
    split_out va = {o->out_dir, "val", (uint32_t)alloy_tokenizer_vocab_size(tok), o->shard_tokens, .shards = cJSON_CreateArray()};
    mix_plan plan;
    memset(&plan, 0, sizeof plan);
    if (!ss) s = ALLOY_STATUS_NOMEM;
    if (!s) s = alloy_encoder_create(&p.enc, tok);
    if (!s && (o->dedup_exact || o->dedup_minhash)) {
        alloy_dedup_options d = o->dedup;
        d.exact = o->dedup_exact;
        d.minhash = o->dedup_minhash;
        s = alloy_dedup_create(&p.dedup, &d);
    }
    if (!s && o->dedup_log) {
        p.log = fopen(o->dedup_log, "w");
        if (!p.log) s = alloy_fail(ALLOY_STATUS_IO, "%s: cannot create the dedup log", o->dedup_log);
        else s = alloy_map64_init(&p.where_of, 1024);
    }
    for (int k = 0; k < o->n_sources && !s; k++) {
        ss[k].src = &o->sources[k];
        s = tokfile_open(&ss[k].split[SPLIT_TRAIN], tmp, k, "train");
        if (!s) s = tokfile_open(&ss[k].split[SPLIT_VAL], tmp, k, "val");
        if (!s) s = read_source(&p, &ss[k], k, o->n_sources);
    }
    if (!o->quiet) alloy_progress_done(&p.prog);
    if (p.log) fclose(p.log);
    uint64_t total = 0;
    for (int k = 0; k < o->n_sources && !s; k++) total += ss[k].split[SPLIT_TRAIN].tokens;
    if (!s && total == 0 && !stopped(o))
        s = alloy_fail(ALLOY_STATUS_USAGE, "no text left to train on (inputs empty, binary, or all dropped)");
    if (!s) s = write_outputs(o, tok, p.eot, ss, &tr, &va, &plan, &rep->stopped);
    for (int k = 0; ss && k < o->n_sources; k++) {
        rep->files += ss[k].rs.files;
        rep->skipped_files += ss[k].rs.skipped_binary;
        rep->docs += ss[k].rs.docs;
        rep->bytes += ss[k].rs.bytes;
        rep->malformed += ss[k].rs.malformed + ss[k].rs.missing_field;
        rep->dropped_empty += ss[k].dropped_empty;
        rep->dropped_exact += ss[k].dropped_exact;
        rep->dropped_near += ss[k].dropped_near;
        prep_tokfile_close(&ss[k].split[0]);
        prep_tokfile_close(&ss[k].split[1]);
    }
    rmdir(tmp);
    if (s || rep->stopped) { // nothing of a failed or stopped prepare stays
        if (tr.open) alloy_shard_writer_abort(&tr.w);
        if (va.open) alloy_shard_writer_abort(&va.w);
        remove_shards(&tr);
        remove_shards(&va);
        if (made_out) rmdir(o->out_dir);
    }
    rep->train_tokens = tr.tokens;
    rep->val_tokens = va.tokens;
    rep->train_shards = tr.n_shards;
    rep->val_shards = va.n_shards;
    rep->seconds = alloy_time_now() - t_start;
    cJSON_Delete(tr.shards);
    cJSON_Delete(va.shards);
    prep_mix_plan_free(&plan);
    alloy_free(ss);
    alloy_free(tmp);
    alloy_free(p.wheres);
    alloy_map64_free(&p.where_of);
    alloy_ids_free(&p.ids);
    alloy_dedup_destroy(p.dedup);
    alloy_encoder_destroy(p.enc);
    return s;
}
