/*
 * prepare_spec.c — alloy_prepare's options as people write them (alloy/data.h): sources from
 * NAME=PATH items, mix weights from "NAME:W,NAME:W", dedup methods, document formats and
 * normal forms by name. The errors name the option ("mix", "dedup", "format", "normalize") at
 * their start, so a command can put its flag syntax in front.
 */
#include "alloy/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The default name of a source: the file or folder name without its extension. */
static void default_name(const char *path, char *out, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    const char *b = path;
    for (size_t i = 0; i < n; i++)
        if (path[i] == '/') b = path + i + 1;
    size_t len = (size_t)(path + n - b);
    const char *dot = memchr(b, '.', len);
    if (dot && dot > b) len = (size_t)(dot - b);
    if (len >= cap) len = cap - 1;
    memcpy(out, b, len);
    out[len] = '\0';
}

/* Item arg's source name into name (cap bytes) and its path. */
static const char *split_item(const char *arg, char *name, size_t cap) {
    const char *eq = strchr(arg, '=');
    if (eq && eq > arg && (size_t)(eq - arg) < cap && !memchr(arg, '/', (size_t)(eq - arg))) {
        memcpy(name, arg, (size_t)(eq - arg));
        name[eq - arg] = '\0';
        return eq + 1;
    }
    default_name(arg, name, cap);
    return arg;
}

static int find_source(const alloy_prepare_sources *s, const char *name) {
    for (int k = 0; k < s->n; k++)
        if (!strcmp(s->v[k].name, name)) return k;
    return -1;
}

void alloy_prepare_sources_free(alloy_prepare_sources *s) {
    alloy_free(s->v);
    alloy_free(s->names);
    alloy_free(s->paths);
    memset(s, 0, sizeof *s);
}

alloy_status alloy_prepare_sources_parse(alloy_prepare_sources *s, const char *const *items, int n) {
    memset(s, 0, sizeof *s);
    size_t N = n > 0 ? (size_t)n : 1;
    s->v = alloy_calloc(N, sizeof *s->v);
    s->names = alloy_calloc(N, sizeof *s->names);
    s->paths = alloy_calloc(N, sizeof *s->paths);
    int *which = alloy_malloc(sizeof(int) * N);
    if (!s->v || !s->names || !s->paths || !which) {
        alloy_free(which);
        alloy_prepare_sources_free(s);
        return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for %d sources", n);
    }
    for (int i = 0; i < n; i++) { // each item's source, counting the paths of each
        char name[sizeof *s->names];
        split_item(items[i], name, sizeof name);
        int k = find_source(s, name);
        if (k < 0) {
            k = s->n++;
            strcpy(s->names[k], name);
            s->v[k].name = s->names[k];
        }
        which[i] = k;
        s->v[k].n_paths++;
    }
    int at = 0; // each source's paths next to each other, in the order given
    for (int k = 0; k < s->n; k++) {
        s->v[k].paths = s->paths + at;
        for (int i = 0; i < n; i++) {
            char name[sizeof *s->names];
            if (which[i] == k) s->paths[at++] = split_item(items[i], name, sizeof name);
        }
    }
    alloy_free(which);
    return ALLOY_STATUS_OK;
}

alloy_status alloy_prepare_mix_parse(alloy_prepare_sources *s, const char *spec) {
    for (const char *p = spec; *p;) {
        const char *colon = strchr(p, ':'), *comma = strchr(p, ',');
        if (!colon || (comma && comma < colon))
            return alloy_fail(ALLOY_STATUS_USAGE, "mix expects NAME:WEIGHT,NAME:WEIGHT (got '%s')", spec);
        char name[sizeof *s->names];
        size_t nl = (size_t)(colon - p);
        if (nl >= sizeof name) nl = sizeof name - 1;
        memcpy(name, p, nl);
        name[nl] = '\0';
        char *end;
        double w = strtod(colon + 1, &end);
        if (end == colon + 1 || (*end && *end != ',') || !(w >= 0) || !isfinite(w))
            return alloy_fail(ALLOY_STATUS_USAGE, "mix: weight of %s is not a number >= 0", name);
        int k = find_source(s, name);
        if (k < 0) return alloy_fail(ALLOY_STATUS_USAGE, "mix names %s, which is not a source (NAME=PATH in --input)", name);
        s->v[k].weight = w;
        p = *end ? end + 1 : end;
    }
    double total = 0;
    for (int k = 0; k < s->n; k++) total += s->v[k].weight;
    if (!(total > 0)) return alloy_fail(ALLOY_STATUS_USAGE, "mix: the weights add up to 0");
    return ALLOY_STATUS_OK;
}

alloy_status alloy_prepare_dedup_parse(alloy_prepare_options *o, const char *spec) {
    o->dedup_exact = o->dedup_minhash = false;
    if (!strcmp(spec, "none")) return ALLOY_STATUS_OK;
    for (const char *p = spec; *p;) {
        size_t l = strcspn(p, ",");
        if (l == 5 && !strncmp(p, "exact", 5)) o->dedup_exact = true;
        else if (l == 7 && !strncmp(p, "minhash", 7)) o->dedup_minhash = true;
        else return alloy_fail(ALLOY_STATUS_USAGE, "dedup takes exact, minhash, both (exact,minhash) or none");
        p += l + (p[l] == ',');
    }
    return ALLOY_STATUS_OK;
}

alloy_status alloy_doc_format_parse(const char *name, alloy_doc_format *out) {
    static const char *const names[] = {"auto", "text", "jsonl", "json"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, names[i])) {
            *out = (alloy_doc_format)i;
            return ALLOY_STATUS_OK;
        }
    return alloy_fail(ALLOY_STATUS_USAGE, "format must be auto, text, jsonl or json");
}

alloy_status alloy_norm_form_parse(const char *name, alloy_norm_form *out) {
    if (!strcmp(name, "nfc")) *out = ALLOY_NORM_NFC;
    else if (!strcmp(name, "nfkc")) *out = ALLOY_NORM_NFKC;
    else if (!strcmp(name, "none")) *out = ALLOY_NORM_NONE;
    else return alloy_fail(ALLOY_STATUS_USAGE, "normalize must be nfc, nfkc or none");
    return ALLOY_STATUS_OK;
}
