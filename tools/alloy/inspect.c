/*
 * inspect.c — `alloy inspect`: what is in a safetensors file, a token shard, a checkpoint
 * folder, a run folder or a dataset folder, printed for a person.
 */
#include "cli.h"
#include "alloy/data.h"

#include <cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: alloy inspect PATH\n"
    "\n"
    "Prints the header and tensor table of PATH, which may be:\n"
    "  a .safetensors file       metadata, then name, dtype, shape, bytes of every tensor\n"
    "  a token shard (.bin)      header fields (validated: size, checksum, token range)\n"
    "  a checkpoint folder       config.json, the tensor table, the trainer state\n"
    "  a run folder              its latest checkpoint\n"
    "  a dataset folder          its manifest and shards\n";

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

int cmd_inspect(int argc, char **argv) {
    cli_list pos = {0};
    int r = cli_parse("inspect", argc, argv, NULL, 0, help, &pos);
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
            s = shard ? inspect_shard(path) : inspect_safetensors(path);
        }
    }
    return s ? cli_fail("inspect", s) : 0;
}
