/*
 * moe_prompts.c — the hidden router's prompts file (alloy_moe_prompts_read of alloy/moe.h): one
 * prompt per line, EXPERT<TAB>TEXT, encoded with the experts' tokenizer into alloy_moe_prompt
 * records for alloy_moe_build.
 */
#include "alloy/moe.h"

#include <stdlib.h>
#include <string.h>

void alloy_moe_prompts_free(alloy_moe_prompt_set *p) {
    for (int i = 0; p->ids && i < p->n; i++) alloy_ids_free(&p->ids[i]);
    alloy_free(p->ids);
    alloy_free(p->v);
    memset(p, 0, sizeof *p);
}

/* One line (NUL-terminated, no line end) of the file: a prompt added to p, or nothing for a
 * blank line or a comment. */
static alloy_status read_line(alloy_moe_prompt_set *p, char *line, const alloy_tokenizer *tok, int n_experts,
                              const char *path, int line_no) {
    size_t len = strlen(line);
    if (len && line[len - 1] == '\r') line[--len] = '\0';
    if (!len || line[0] == '#') return ALLOY_STATUS_OK;
    char *tab = strchr(line, '\t'), *end;
    long e = tab ? strtol(line, &end, 10) : -1;
    if (!tab || end != tab || end == line)
        return alloy_fail(ALLOY_STATUS_USAGE, "%s:%d: expected EXPERT<TAB>TEXT (EXPERT a number)", path, line_no);
    if (e < 0 || e >= n_experts)
        return alloy_fail(ALLOY_STATUS_USAGE, "%s:%d: expert %ld is outside [0, %d] (the --experts given)", path, line_no, e,
                          n_experts - 1);
    if (!tab[1]) return alloy_fail(ALLOY_STATUS_USAGE, "%s:%d: the prompt is empty", path, line_no);
    alloy_ids *ids = &p->ids[p->n];
    alloy_status s = alloy_tokenizer_encode(tok, tab + 1, strlen(tab + 1), 0, ids);
    if (!s && ids->n == 0) {
        alloy_ids_free(ids);
        s = alloy_fail(ALLOY_STATUS_USAGE, "%s:%d: the prompt has no tokens", path, line_no);
    }
    if (s) return s;
    p->v[p->n++] = (alloy_moe_prompt){.expert = (int)e, .tokens = ids->data, .n = (int)ids->n};
    return ALLOY_STATUS_OK;
}

alloy_status alloy_moe_prompts_read(alloy_moe_prompt_set *p, const char *path, const alloy_tokenizer *tok, int n_experts) {
    memset(p, 0, sizeof *p);
    char *text;
    size_t size;
    alloy_status s = alloy_file_read_all(path, &text, &size);
    if (s) return s;
    int cap = 1;
    for (size_t i = 0; i < size; i++) cap += text[i] == '\n';
    p->ids = alloy_calloc((size_t)cap, sizeof *p->ids);
    p->v = alloy_calloc((size_t)cap, sizeof *p->v);
    if (!p->ids || !p->v) s = alloy_fail(ALLOY_STATUS_NOMEM, "%s: out of memory for %d prompts", path, cap);
    int line_no = 0;
    for (char *line = text, *next; !s && line && *line; line = next) {
        line_no++;
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        s = read_line(p, line, tok, n_experts, path, line_no);
    }
    if (!s && p->n == 0) s = alloy_fail(ALLOY_STATUS_USAGE, "%s: no prompts", path);
    alloy_free(text);
    if (s) alloy_moe_prompts_free(p);
    return s;
}
