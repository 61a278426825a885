/*
 * inspect.c — `alloy inspect`: what is in a safetensors file, a token shard, a checkpoint
 * folder, a run folder, a dataset folder or a file or folder of alignment data, printed for a
 * person.
 */
#include "cli.h"
#include "alloy/data.h"

#include <cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: alloy inspect PATH [--layout NAME] [--prompt-field NAME ...]\n"
    "\n"
    "Prints what PATH holds, which may be:\n"
    "  a .safetensors file       metadata, then name, dtype, shape, bytes of every tensor\n"
    "  a token shard (.bin)      header fields (validated: size, checksum, token range)\n"
    "  a checkpoint folder       config.json, the tensor table, the trainer state\n"
    "  a run folder              its latest checkpoint\n"
    "  a dataset folder          its manifest and shards\n"
    "  a data file or folder     JSONL or a JSON array of records (gzip, zstd; a folder of them): the\n"
    "                            records' layout and number, the verbs that read every record (sft,\n"
    "                            reward, dpo, ppo --prompts, score) and the first problem record.\n"
    "                            The layout flags are those of sft (docs/alignment.md):\n"
    CLI_DATA_FIELDS_HELP;

static void print_shape(const int64_t *shape, int ndim) {
    char buf[128];
    size_t k = (size_t)snprintf(buf, sizeof buf, "[");
    for (int d = 0; d < ndim && k + 24 < sizeof buf; d++)
        k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    snprintf(buf + k, sizeof buf - k, "]");
    printf("%-20s", buf);
}

static alloy_status inspect_safetensors(const char *path) {
    alloy_safetensors *st;
    alloy_status s = alloy_safetensors_open(&st, path);
    if (s) return s;
    printf("%s: safetensors, header %zu bytes, %d tensors, %zu bytes\n", path, st->header_size, st->n_tensors, st->map.size);
    if (st->metadata) {
        for (cJSON *kv = st->metadata->child; kv; kv = kv->next) printf("  metadata %s = %s\n", kv->string, kv->valuestring);
    }
    size_t total = 0;
    for (int i = 0; i < st->n_tensors; i++) {
        const alloy_st_tensor *t = &st->tensors[i];
        printf("  %-56s %-5s ", t->name, alloy_dtype_name(t->dtype));
        print_shape(t->shape, t->ndim);
        printf(" %12zu bytes\n", t->nbytes);
        total += t->numel;
    }
    printf("  total: %zu elements\n", total);
    alloy_safetensors_close(st);
    return ALLOY_STATUS_OK;
}

static alloy_status inspect_shard(const char *path) {
    alloy_shard *sh;
    alloy_status s = alloy_shard_open(&sh, path);
    if (s) return s;
    printf("%s: token shard v%d, %llu tokens of %d bytes (uint%d), vocabulary %u, checksum %016llx (verified)\n", path,
           ALLOY_SHARD_VERSION, (unsigned long long)sh->count, sh->width, sh->width * 8, sh->vocab_size,
           (unsigned long long)sh->checksum);
    printf("  first tokens:");
    for (uint64_t i = 0; i < sh->count && i < 16; i++) printf(" %u", alloy_shard_token(sh, i));
    printf("\n");
    alloy_shard_close(sh);
    return ALLOY_STATUS_OK;
}

static alloy_status inspect_checkpoint(const char *dir) {
    char *cp = alloy_path_join(dir, "config.json");
    alloy_config cfg;
    alloy_status s = cp ? alloy_config_load(&cfg, cp) : ALLOY_STATUS_NOMEM;
    alloy_free(cp);
    if (s) return s;
    printf("%s: checkpoint, %s family: L=%d C=%d H=%d KV=%d F=%d V=%d max T=%d eps=%g%s%s, tokenizer %s\n", dir,
           alloy_family_name(cfg.family), cfg.n_layer, cfg.d_model, cfg.n_head, cfg.n_kv_head, cfg.d_ff, cfg.vocab_size,
           cfg.max_seq_len, cfg.norm_eps, cfg.family == ALLOY_FAMILY_LLAMA ? ", rope theta " : "",
           cfg.family == ALLOY_FAMILY_LLAMA ? (cfg.tie_embeddings ? "(tied)" : "(untied)") : "",
           cfg.tokenizer[0] ? cfg.tokenizer : "(none)");
    char *wp = alloy_path_join(dir, "model.safetensors");
    s = wp ? inspect_safetensors(wp) : ALLOY_STATUS_NOMEM;
    alloy_free(wp);
    if (s) return s;
    char *sp = alloy_path_join(dir, "trainer_state.json");
    if (sp && alloy_path_exists(sp)) {
        cJSON *j;
        s = alloy_json_read_file(sp, &j);
        if (!s) {
            char *text = cJSON_Print(j);
            printf("trainer_state.json:\n%s\n", text ? text : "");
            cJSON_free(text);
            cJSON_Delete(j);
        }
    }
    alloy_free(sp);
    return s;
}

static alloy_status inspect_dataset(const char *dir) {
    char *mp = alloy_path_join(dir, "manifest.json");
    if (mp && alloy_path_exists(mp)) {
        cJSON *j;
        alloy_status s = alloy_json_read_file(mp, &j);
        if (s) {
            alloy_free(mp);
            return s;
        }
        const char *keys[] = {"tokenizer", "vocab_size", "files", "skipped_files", "bytes", "train_tokens", "val_tokens", "val_fraction"};
        printf("%s: dataset\n", dir);
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[i]);
            if (cJSON_IsString(v)) printf("  %s: %s\n", keys[i], v->valuestring);
            else if (cJSON_IsNumber(v)) printf("  %s: %.15g\n", keys[i], v->valuedouble);
        }
        cJSON_Delete(j);
    }
    alloy_free(mp);
    alloy_dataset *ds;
    alloy_status s = alloy_dataset_open(&ds, dir, 0.05);
    if (s) return s;
    for (int k = 0; k < 2; k++) {
        alloy_shard **sh = k ? ds->val : ds->train;
        int n = k ? ds->n_val : ds->n_train;
        for (int i = 0; i < n; i++)
            printf("  %-40s %12llu tokens  vocab %u  checksum %016llx\n", sh[i]->path, (unsigned long long)sh[i]->count,
                   sh[i]->vocab_size, (unsigned long long)sh[i]->checksum);
    }
    alloy_dataset_close(ds);
    return ALLOY_STATUS_OK;
}

/* Whether a file holds JSON records: named .jsonl or .json (perhaps .gz or .zst after it), or,
 * after decompression, text whose first byte other than white space (after a byte-order mark)
 * is '{' or '['. */
static bool is_data_file(const char *path) {
    static const char *const names[] = {".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst"};
    size_t n = strlen(path);
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
        if (n > strlen(names[k]) && !strcmp(path + n - strlen(names[k]), names[k])) return true;
    alloy_stream *st = NULL;
    char buf[ALLOY_SNIFF_BYTES];
    size_t got = 0, i = 0;
    bool data = !alloy_stream_open(&st, path) && !alloy_stream_read(st, buf, sizeof buf, &got) && !alloy_bytes_look_binary(buf, got);
    alloy_stream_close(st);
    if (got >= 3 && !memcmp(buf, "\xef\xbb\xbf", 3)) i = 3;
    while (i < got && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n')) i++;
    return data && i < got && (buf[i] == '{' || buf[i] == '[');
}

/* Whether a folder without a manifest holds data files. */
static bool is_data_folder(const char *dir) {
    char *mp = alloy_path_join(dir, "manifest.json");
    bool manifest = !mp || alloy_path_exists(mp), data = false;
    alloy_free(mp);
    alloy_file_list l = {0};
    if (!manifest && !alloy_file_list_add(&l, dir))
        for (size_t i = 0; i < l.n && !data; i++) data = is_data_file(l.paths[i]);
    alloy_file_list_free(&l);
    return data;
}

/* Alignment data: its layout, records, the verbs that read it, its first problem. */
static alloy_status inspect_data(const char *path, const alloy_data_fields *fields) {
    alloy_data_report rep;
    alloy_status s = alloy_align_data_check(path, fields, ALLOY_CHAT_TEMPLATE_CHATML, &rep);
    if (s) return s;
    printf("%s: alignment data, %lld record%s", path, (long long)rep.records, rep.records == 1 ? "" : "s");
    if (rep.files > 1) printf(" in %llu files", (unsigned long long)rep.files);
    if (rep.layouts) {
        printf(", %s layout", alloy_data_layout_name(rep.layout));
        for (int l = ALLOY_LAYOUT_ALLOY; l <= ALLOY_LAYOUT_HH_RLHF; l++)
            if ((rep.layouts & (1u << l)) && l != (int)rep.layout) printf(" (and %s in some files)", alloy_data_layout_name(l));
    }
    static const char *const verbs[] = {"sft", "reward", "dpo", "score", "ppo --prompts"};
    static const alloy_align_kind order[] = {ALLOY_ALIGN_SFT, ALLOY_ALIGN_REWARD, ALLOY_ALIGN_DPO, ALLOY_ALIGN_PROMPT,
                                             ALLOY_ALIGN_SCORE};
    printf("\n  verbs:");
    int n = 0;
    for (int i = 0; i < 5; i++)
        if (rep.kinds & (1u << order[i])) printf("%s %s", n++ ? "," : "", verbs[order[i]]);
    printf("%s\n  first problem: %s\n", n ? "" : " none", rep.problem[0] ? rep.problem : rep.records ? "none" : "no records");
    return ALLOY_STATUS_OK;
}

int cmd_inspect(int argc, char **argv) {
    cli_list pos = {0};
    alloy_data_fields fields = {0};
    cli_flag flags[8];
    int nf = 0;
    cli_schema_flags(alloy_data_fields_schema(), &fields, flags, &nf, 8);
    int r = cli_parse("inspect", argc, argv, flags, nf, help, &pos);
    if (r) {
        free(pos.items);
        return r == 1 ? 0 : r;
    }
    if (pos.n != 1) {
        free(pos.items);
        return cli_usage("inspect", "expects one PATH");
    }
    const char *path = pos.items[0];
    free(pos.items);
    alloy_status s;
    if (alloy_is_dir(path)) {
        char *wp = alloy_path_join(path, "model.safetensors");
        char *lp = alloy_path_join(path, "latest");
        if (wp && alloy_path_exists(wp)) {
            s = inspect_checkpoint(path);
        } else if (lp && alloy_path_exists(lp)) {
            char *ck;
            s = alloy_run_latest(path, &ck);
            if (!s) {
                printf("%s: run folder, latest checkpoint %s\n", path, ck);
                s = inspect_checkpoint(ck);
                alloy_free(ck);
            }
        } else if (is_data_folder(path)) {
            s = inspect_data(path, &fields);
        } else {
            s = inspect_dataset(path);
        }
        alloy_free(wp);
        alloy_free(lp);
    } else {
        alloy_file_map map;
        s = alloy_file_map_open(&map, path);
        if (!s) {
            // by content first; a .bin name means a shard even when its magic is damaged
            size_t n = strlen(path);
            bool st_name = n >= 12 && !strcmp(path + n - 12, ".safetensors");
            bool shard = !st_name && ((map.size >= 8 && !memcmp(map.data, ALLOY_SHARD_MAGIC, 8)) ||
                                      (n >= 4 && !strcmp(path + n - 4, ".bin")));
            alloy_file_map_close(&map);
            if (!shard && !st_name && is_data_file(path)) s = inspect_data(path, &fields);
            else s = shard ? inspect_shard(path) : inspect_safetensors(path);
        }
    }
    return s ? cli_fail("inspect", s) : 0;
}
